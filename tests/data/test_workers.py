"""DataLoader with worker processes, against the same loader with num_workers=0 as the reference.

Also: batches arrive through shared memory (zero copy, no /dev/shm name or file
descriptor left behind), a dead worker is an error within seconds (each such test
sets the loader's timeout as a hang guard and checks the time), dataset exceptions
come back with the worker's traceback, workers are seeded like PyTorch's, and the
'spawn' start method works with tensors in the dataset.
"""

import collections
import gc
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tensora
from tensora.data import (DataLoader, DataLoaderError, Dataset, IterableDataset, TensorDataset,
                          WorkerDiedError, get_worker_info)
from tensora.data.shm import Mapping
from tensora.data.transport import _Lease

Pair = collections.namedtuple("Pair", ["a", "b"])
GUARD_S = 20  # DataLoader(timeout=...) in the failure tests: a hang becomes an error, not a stuck run


def shm_names():
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"tsr{os.getpid():x}_"))


def open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def _no_leftovers():
    gc.collect()
    before = shm_names()
    yield
    gc.collect()
    assert shm_names() == before == []


class Rich(Dataset):
    """Samples with every leaf kind the shared-memory path carries."""

    def __init__(self, n=37):
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((n, 3, 2)).astype(np.float32)
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {
            "x": tensora.from_numpy(self.x[i]),
            "half": tensora.from_numpy(self.x[i]).to(tensora.bfloat16),
            "np": self.x[i, 0].astype(np.float64),
            "empty": tensora.zeros(0, 2),
            "label": i % 5,
            "name": f"s{i}",
            "pair": Pair(float(i), (i, [i])),
        }


def flatten(batch):
    """A batch as nested Python data with NumPy leaves, for exact comparison."""
    if isinstance(batch, tensora.Tensor):
        a = batch.float() if batch.dtype == tensora.bfloat16 else batch
        return ("T", str(batch.dtype), a.numpy().tolist())
    if isinstance(batch, np.ndarray):
        return ("A", str(batch.dtype), batch.tolist())
    if isinstance(batch, dict):
        return {k: flatten(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return (type(batch).__name__, [flatten(v) for v in batch])
    return batch


def run(loader):
    return [flatten(b) for b in loader]


# -- same batches as num_workers=0 -------------------------------------------------


@pytest.mark.parametrize("num_workers, prefetch", [(1, 1), (2, 2), (3, 1)])
def test_same_batches_as_main_process(num_workers, prefetch):
    ds = Rich()
    ref = run(DataLoader(ds, batch_size=4, shuffle=True, generator=tensora.Generator().manual_seed(1)))
    got = run(DataLoader(ds, batch_size=4, shuffle=True, generator=tensora.Generator().manual_seed(1),
                         num_workers=num_workers, prefetch_factor=prefetch))
    assert got == ref
    assert len(got) == 10


class _Items(list):
    pass


def _typed_batch(batch):
    return {"x": tensora.ones(2, requires_grad=True), "size": tensora.ones(2, 3).shape,
            "items": _Items([tensora.zeros(1)]), "ordered": collections.OrderedDict(a=tensora.ones(1))}


def test_batches_from_workers_keep_container_types_and_requires_grad():
    # as with num_workers=0 (and torch): a Size stays a Size, a list subclass that class
    for workers in (0, 2):
        b = next(iter(DataLoader([0], batch_size=1, num_workers=workers, collate_fn=_typed_batch)))
        assert b["x"].requires_grad and type(b["size"]) is tensora.Size and b["size"] == (2, 3)
        assert type(b["items"]) is _Items and b["items"][0].tolist() == [0.0]
        assert type(b["ordered"]) is collections.OrderedDict


def _deque_batch(batch):
    return {"queue": collections.deque([tensora.ones(2, requires_grad=True), tensora.arange(3)])}


def test_tensors_inside_other_containers_come_from_workers_too():
    # a deque (or a dataclass) is not broken down into shared memory: its tensors are sent by value, as torch does
    for workers in (0, 2):
        b = next(iter(DataLoader([0], batch_size=1, num_workers=workers, collate_fn=_deque_batch)))
        first, second = b["queue"]
        assert type(b["queue"]) is collections.deque and first.requires_grad and first.tolist() == [1.0, 1.0]
        assert second.tolist() == [0, 1, 2] and second.dtype == tensora.int64


def test_same_order_when_workers_finish_out_of_order():
    class Uneven(Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, i):
            time.sleep(0.03 if i % 4 == 0 else 0)  # worker 0's batches are the slow ones
            return i

    got = [b.tolist() for b in DataLoader(Uneven(), batch_size=2, num_workers=2)]
    assert got == [[i, i + 1] for i in range(0, 12, 2)]


def test_unbatched_and_numpy_collate():
    ds = Rich(9)
    ref = run(DataLoader(ds, batch_size=None))
    assert run(DataLoader(ds, batch_size=None, num_workers=2)) == ref

    def to_numpy(samples):
        return [np.stack([s["np"] for s in samples]), [s["name"] for s in samples]]

    ref = run(DataLoader(ds, batch_size=4, collate_fn=to_numpy))
    got = list(DataLoader(ds, batch_size=4, collate_fn=to_numpy, num_workers=2))
    assert [flatten(b) for b in got] == ref
    assert isinstance(got[0][0], np.ndarray)


def test_batches_view_shared_memory_zero_copy():
    ds = TensorDataset(tensora.arange(40).float().reshape(20, 2))
    batches = list(DataLoader(ds, batch_size=5, num_workers=2))
    (x,) = batches[1]
    base = x.numpy()
    while not isinstance(base, _Lease) and getattr(base, "base", None) is not None:
        base = base.base
    assert isinstance(base, _Lease) and isinstance(base._block, Mapping)
    assert x.numpy().flags.writeable
    x[0, 0] = 100.0  # an ordinary writable tensor
    assert x[0, 0].item() == 100.0
    assert shm_names() == []  # names are unlinked on arrival; the mappings live on in the tensors


def test_blocks_are_reused_and_held_batches_stay_intact():
    n = 400
    ds = TensorDataset(tensora.arange(n * 3).float().reshape(n, 3))
    it = iter(DataLoader(ds, batch_size=2, num_workers=2))
    reader = it._pool._state.reader
    held = []
    for k, (x,) in enumerate(it):
        np.testing.assert_array_equal(x.numpy(), np.arange(6 * k, 6 * k + 6).reshape(2, 3))
        if k % 50 == 0:
            held.append((k, x))  # a batch kept alive keeps its block out of the ring
    for k, x in held:
        np.testing.assert_array_equal(x.numpy(), np.arange(6 * k, 6 * k + 6).reshape(2, 3))
    made = sum(len(s) for s in reader.seen)
    assert made <= 2 * (2 + 2 + 2) + len(held)  # per worker: in flight + spares + one in hand, not one per batch


def test_no_descriptor_per_live_batch():
    ds = TensorDataset(tensora.arange(600).float())
    before = open_fds()
    batches = list(DataLoader(ds, batch_size=2, num_workers=2))
    assert len(batches) == 300
    assert open_fds() <= before + 2  # not one per batch
    del batches


def test_iterable_dataset_interleaves_workers_like_pytorch():
    class Count(IterableDataset):
        def __iter__(self):
            return iter(range(5))

    got = [b.tolist() for b in DataLoader(Count(), batch_size=2, num_workers=2)]
    # each worker streams its own copy; batches alternate between the workers
    assert got == [[0, 1], [0, 1], [2, 3], [2, 3], [4], [4]]


def test_iterable_dataset_split_with_worker_info():
    class Sharded(IterableDataset):
        def __iter__(self):
            info = get_worker_info()
            return iter(range(info.id, 20, info.num_workers))

    got = sorted(v for b in DataLoader(Sharded(), batch_size=3, num_workers=2) for v in b.tolist())
    assert got == list(range(20))


# -- persistent workers ------------------------------------------------------------


class Pids(Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        return i, os.getpid()


def test_persistent_workers_keep_processes_and_match_reference():
    kw = dict(batch_size=3, shuffle=True)
    ref_loader = DataLoader(Pids(), generator=tensora.Generator().manual_seed(5), **kw)
    loader = DataLoader(Pids(), generator=tensora.Generator().manual_seed(5), num_workers=2,
                        persistent_workers=True, **kw)
    pids = set()
    for epoch in range(3):
        ref = [b[0].tolist() for b in ref_loader]
        got = list(loader)
        assert [b[0].tolist() for b in got] == ref
        pids |= {p for b in got for p in b[1].tolist()}
    assert len(pids) == 2 and os.getpid() not in pids
    # an epoch stopped early leaves batches in flight; the next epoch still starts clean
    for i, _ in enumerate(loader):
        if i == 1:
            break
    ref_stopped = [b[0].tolist() for b in ref_loader]  # keeps both generators in step
    ref_next = [b[0].tolist() for b in ref_loader]
    assert [b[0].tolist() for b in loader] == ref_next
    assert ref_next != ref_stopped
    worker_pids = loader._iterator._pool.pids
    del loader
    gc.collect()
    assert not any(_alive(pid) for pid in worker_pids)


def test_persistent_workers_restart_iterable_datasets():
    class Count(IterableDataset):
        def __iter__(self):
            info = get_worker_info()
            return iter(range(info.id, 6, info.num_workers))

    loader = DataLoader(Count(), batch_size=2, num_workers=2, persistent_workers=True)
    for _ in range(2):
        assert sorted(v for b in loader for v in b.tolist()) == list(range(6))


# -- failures --------------------------------------------------------------------


class Failing(Dataset):
    def __init__(self, how, at=13):
        self.how, self.at = how, at

    def __len__(self):
        return 40

    def __getitem__(self, i):
        if i == self.at:
            if self.how == "exit":
                os._exit(3)
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.how == "raise":
                raise ValueError(f"bad sample {i}")
            if self.how == "odd":
                raise OddError(1, 2)
            if self.how == "sleep":
                time.sleep(GUARD_S)
        return i


class OddError(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} {b}")


@pytest.mark.parametrize("how, code, text", [("exit", 3, "exited unexpectedly with exit code 3"),
                                             ("kill", -9, "was killed by signal SIGKILL (exit code -9)")])
def test_worker_death_is_a_clear_error_within_seconds(how, code, text):
    loader = DataLoader(Failing(how), batch_size=2, num_workers=2, timeout=GUARD_S)
    it = iter(loader)
    pool = it._pool
    t0 = time.monotonic()
    seen = []
    with pytest.raises(WorkerDiedError) as info:
        for b in it:
            seen.extend(b.tolist())
    assert time.monotonic() - t0 < 5
    err = info.value
    assert err.worker_id == 0 and err.exitcode == code  # sample 13 is in batch 6, worker 0's
    assert f"DataLoader worker 0 (pid {err.pid}) {text}" == str(err)
    assert seen == list(range(len(seen))) and len(seen) <= 12  # in order, up to the lost batch at most
    assert pool.closed and not any(_alive(pid) for pid in pool.pids)
    assert isinstance(err, tensora.TensoraError) and isinstance(err, RuntimeError)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_exception_in_worker_is_reraised_with_its_traceback():
    it = iter(DataLoader(Failing("raise"), batch_size=2, num_workers=2, timeout=GUARD_S))
    assert [next(it).tolist() for _ in range(6)] == [[2 * k, 2 * k + 1] for k in range(6)]
    with pytest.raises(ValueError) as info:
        next(it)
    msg = str(info.value)
    assert msg.startswith("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback")
    assert "in __getitem__" in msg and 'raise ValueError(f"bad sample {i}")' in msg
    assert "ValueError: bad sample 13" in msg
    assert next(it).tolist() == [14, 15]  # the loader goes on, as PyTorch's does


def test_exception_that_cannot_be_rebuilt_becomes_a_loader_error():
    it = iter(DataLoader(Failing("odd", at=0), batch_size=2, num_workers=1, timeout=GUARD_S))
    with pytest.raises(DataLoaderError, match="Caught OddError in DataLoader worker process 0"):
        next(it)


class Holder:
    def __init__(self, t):
        self.t = t


def test_tensors_inside_unknown_objects_come_by_value():
    # not broken down into shared memory like dicts, lists and tuples: the worker's reply pickler sends
    # the tensor's values (Tensor itself still refuses to be pickled anywhere else)
    loader = DataLoader(TensorDataset(tensora.arange(4.0)), batch_size=2, num_workers=1, timeout=GUARD_S,
                        collate_fn=lambda s: Holder(tensora.stack([x[0] for x in s])))
    assert [b.t.tolist() for b in loader] == [[0.0, 1.0], [2.0, 3.0]]
    with pytest.raises(TypeError, match="tensora tensors are not pickled"):
        pickle.dumps(Holder(tensora.zeros(1)))


def test_timeout():
    loader = DataLoader(Failing("sleep", at=0), batch_size=2, num_workers=1, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(DataLoaderError, match="timed out after 0.5 seconds"):
        next(iter(loader))
    assert time.monotonic() - t0 < 3


def test_worker_init_fn_error_is_raised_at_first_batch():
    def bad_init(worker_id):
        raise RuntimeError(f"init failed in {worker_id}")

    loader = DataLoader(TensorDataset(tensora.zeros(4)), batch_size=2, num_workers=1, timeout=GUARD_S,
                        worker_init_fn=bad_init)
    with pytest.raises(RuntimeError, match="init failed in 0"):
        next(iter(loader))


def test_abandoned_iterator_frees_workers_and_blocks():
    it = iter(DataLoader(TensorDataset(tensora.zeros(64, 8)), batch_size=2, num_workers=2, prefetch_factor=4))
    next(it)
    worker_pids = it._pool.pids
    deadline = time.monotonic() + GUARD_S
    while len(shm_names()) < 2 and time.monotonic() < deadline:  # batches made but not yet received
        time.sleep(0.01)
    assert shm_names()
    del it
    gc.collect()
    assert not any(_alive(pid) for pid in worker_pids) and shm_names() == []


# -- seeding and worker info -------------------------------------------------------


class Seeds(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        info = get_worker_info()
        return (info.id, info.num_workers, info.seed, tensora.rand(1).item(), float(np.random.rand()),
                random.random(), os.environ.get("TSR_TEST_INIT"))


def _init(worker_id):
    os.environ["TSR_TEST_INIT"] = f"init {worker_id}"


def test_workers_are_seeded_base_seed_plus_id_and_see_their_info():
    assert get_worker_info() is None
    loader = DataLoader(Seeds(), batch_size=None, num_workers=2, generator=tensora.Generator().manual_seed(8),
                        worker_init_fn=_init)
    got = list(loader)
    base = int(np.random.Generator(np.random.PCG64(8)).integers(0, 2**63))
    for w, sample in enumerate(got):
        seed = base + w
        assert sample[:3] == [w, 2, seed]
        assert sample[3] == tensora.rand(1, generator=tensora.Generator().manual_seed(seed)).item()
        assert sample[4] == np.random.RandomState(seed % 2**32).rand()
        assert sample[5] == random.Random(seed).random()
        assert sample[6] == f"init {w}"
    assert "TSR_TEST_INIT" not in os.environ


# -- start methods and the NumPy fallback ------------------------------------------


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_spawned_workers_get_tensors_through_shared_memory(method):
    rng = np.random.default_rng(3)
    ds = TensorDataset(tensora.from_numpy(rng.standard_normal((30, 4))), tensora.arange(30))
    ref = [(x.numpy().tolist(), y.tolist()) for x, y in DataLoader(ds, batch_size=7)]
    loader = DataLoader(ds, batch_size=7, num_workers=2, multiprocessing_context=method, timeout=GUARD_S)
    assert [(x.numpy().tolist(), y.tolist()) for x, y in loader] == ref


def test_works_without_the_native_extension(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(
        "import tensora\n"
        "from tensora.data import DataLoader, TensorDataset\n"
        "assert not tensora.native_available()[0]\n"
        "ds = TensorDataset(tensora.arange(50).float().reshape(25, 2), tensora.arange(25))\n"
        "ref = [y.tolist() for _, y in DataLoader(ds, batch_size=4, shuffle=True,"
        " generator=tensora.Generator().manual_seed(0))]\n"
        "got = [y.tolist() for _, y in DataLoader(ds, batch_size=4, shuffle=True, num_workers=2,"
        " generator=tensora.Generator().manual_seed(0))]\n"
        "assert got == ref, (got, ref)\n"
        "print('ok', len(got))\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "TENSORA_NO_NATIVE": "1", "PYTHONPATH": root}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok 7"
