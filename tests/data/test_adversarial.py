"""Adversarial checks of tensora.data: the DataLoader with workers against num_workers=0 and PyTorch, and the
failure paths: big tasks and big replies at once (a deadlock), the main process killed while a worker sends,
batches the shared-memory path cannot carry (object arrays, unpicklable leaves), block names left in
/dev/shm, and interpreter-exit noise from spawned workers."""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import select
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest

import tensora
from tensora.data import DataLoader, DataLoaderError, Dataset, IterableDataset, TensorDataset, default_collate

torch = pytest.importorskip("torch")
tud = torch.utils.data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUARD_S = 20
Point = collections.namedtuple("Point", "x y")


def shm_names():
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"tsr{os.getpid():x}_"))


@pytest.fixture(autouse=True)
def _no_leftovers():
    gc.collect()
    yield
    gc.collect()
    deadline = time.monotonic() + 5
    while shm_names() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert shm_names() == []


def plain(b):
    """A batch as nested plain Python: comparable across loaders and libraries."""
    if isinstance(b, (tensora.Tensor, torch.Tensor)):
        return ("T", str(b.dtype).rsplit(".", 1)[-1], b.numpy().tolist())
    if isinstance(b, np.ndarray):
        return ("A", b.dtype.str, b.tolist())
    if isinstance(b, dict):
        return (type(b).__name__, {k: plain(v) for k, v in b.items()})
    if isinstance(b, (list, tuple)):
        return (type(b).__name__, [plain(v) for v in b])
    return (type(b).__name__, b)


class Rich(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"x": np.full(3, i, np.float32), "i": i, "f": i / 2, "s": f"s{i}", "p": Point(i, np.int64(i)),
                "t": (np.float64(i), [i, i + 1])}


def _run_script(body: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `body` in a fresh interpreter in its own session; on timeout the whole session (its workers too,
    which would otherwise hold the output pipes open) is killed and the test fails instead of hanging."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(body)], env=env, stdout=out, stderr=err,
                                text=True, start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"the script did not finish in {timeout} s (a hang)")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # workers it left behind
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


# -- the same batches as num_workers=0 and as PyTorch --------------------------------------------

@pytest.mark.parametrize("n, batch_size, drop_last", [(10, 3, False), (10, 3, True), (2, 5, False), (2, 5, True),
                                                      (0, 3, False), (7, 7, True)])
def test_workers_and_pytorch_give_the_same_batches(n, batch_size, drop_last):
    ref = [plain(b) for b in tud.DataLoader(Rich(n), batch_size=batch_size, drop_last=drop_last)]
    for workers in (0, 2):
        loader = DataLoader(Rich(n), batch_size=batch_size, drop_last=drop_last, num_workers=workers,
                            timeout=GUARD_S if workers else 0)
        assert len(loader) == len(ref)
        assert [plain(b) for b in loader] == ref


def test_seeded_shuffle_repeats_whatever_num_workers_and_iterating_twice():
    def order(workers):
        loader = DataLoader(TensorDataset(tensora.arange(23)), batch_size=4, shuffle=True, num_workers=workers,
                            generator=tensora.Generator().manual_seed(7), timeout=GUARD_S if workers else 0)
        return [[b.tolist() for (b,) in loader] for _ in range(2)]
    first = order(0)
    assert first == order(2)
    assert first[0] != first[1]  # a new permutation per pass
    assert sorted(sum(first[0], [])) == list(range(23))


def test_persistent_workers_survive_an_early_break_and_a_dataset_error():
    class Flaky(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            if i == 5:
                raise KeyError(i)
            return i
    loader = DataLoader(Flaky(), batch_size=2, num_workers=2, persistent_workers=True, timeout=GUARD_S)
    for _ in loader:
        break
    got = []
    it = iter(loader)
    while True:
        try:
            got.append(next(it).tolist())
        except StopIteration:
            break
        except KeyError as exc:
            assert "Caught KeyError in DataLoader worker process 0" in str(exc) and "__getitem__" in str(exc)
            got.append("error")
    assert got == [[0, 1], [2, 3], "error", [6, 7]]
    del it, loader


# -- what the shared-memory path cannot carry ----------------------------------------------------

class Names(Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        return f"item{i}"


def _object_arrays(batch):
    return np.array(batch, dtype=object), np.array(batch), np.arange(len(batch))


def test_object_arrays_in_a_batch_come_through_workers():
    ref = [plain(b) for b in DataLoader(Names(), batch_size=4, collate_fn=_object_arrays)]
    got = [plain(b) for b in DataLoader(Names(), batch_size=4, num_workers=2, collate_fn=_object_arrays,
                                        timeout=GUARD_S)]
    assert got == ref
    assert ref[0][1][0] == ("A", "|O", ["item0", "item1", "item2", "item3"])


def _unpicklable_sometimes(batch):
    return {"x": np.full(100, batch[0], np.float64), "f": (lambda: 1) if batch[0] % 4 == 0 else None}


def test_a_batch_that_cannot_be_sent_leaves_no_block_name_behind():
    it = iter(DataLoader(Names(), batch_size=2, num_workers=2, collate_fn=lambda b: _unpicklable_sometimes(
        [int(s[4:]) for s in b]), multiprocessing_context="fork", timeout=GUARD_S))
    got = []
    while True:
        try:
            got.append(float(next(it)["x"][0]))
        except StopIteration:
            break
        except Exception as exc:  # noqa: BLE001 - the pickling error, raised here with the worker's traceback
            got.append(type(exc).__name__)
    assert got[1] == 2.0 and isinstance(got[0], str) and isinstance(got[2], str)
    del it  # the autouse fixture checks that no tsr* name is left in /dev/shm


# -- hangs and orphans ---------------------------------------------------------------------------

def test_big_tasks_and_big_replies_do_not_deadlock():
    # A task (a list of 150k indices) bigger than the pipe's buffer, sent while the worker is sending a reply
    # (150k strings) bigger than it too: each side waited for the other to read.
    out = _run_script("""
        from tensora.data import DataLoader, Dataset
        class Strings(Dataset):
            def __len__(self): return 600_000
            def __getitem__(self, i): return "s%d" % i
        if __name__ == "__main__":
            n = sum(len(b) for b in DataLoader(Strings(), batch_size=150_000, num_workers=1))
            print("ok", n)
        """, timeout=40)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok", "600000"]


def test_workers_exit_when_the_main_process_is_killed_while_they_send():
    out = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import os, signal, time
        from tensora.data import DataLoader, Dataset
        class Strings(Dataset):
            def __len__(self): return 10**6
            def __getitem__(self, i): return "s%d" % i
        if __name__ == "__main__":
            it = iter(DataLoader(Strings(), batch_size=100_000, num_workers=2))
            next(it)
            print(" ".join(map(str, it._pool.pids)), flush=True)
            time.sleep(1.0)  # the workers block sending replies nobody reads
            os.kill(os.getpid(), signal.SIGKILL)
        """)], env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE, text=True, start_new_session=True)
    ready, _, _ = select.select([out.stdout], [], [], 30)
    if not ready:  # stuck before its first batch
        os.killpg(out.pid, signal.SIGKILL)
        out.wait()
        pytest.fail("the loader did not produce its first batch in 30 s")
    pids = [int(p) for p in out.stdout.readline().split()]
    try:
        out.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(out.pid, signal.SIGKILL)
        out.wait()
        pytest.fail("the main process did not kill itself")
    out.stdout.close()
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in pids if _alive(p)]
    for p in alive:
        os.kill(p, signal.SIGKILL)
    assert not alive, "workers outlived their main process"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_spawned_workers_exit_quietly():
    out = _run_script("""
        import tensora
        from tensora.data import DataLoader, TensorDataset
        if __name__ == "__main__":
            ds = TensorDataset(tensora.arange(20).float())
            loader = DataLoader(ds, batch_size=10, num_workers=1, multiprocessing_context="spawn", timeout=20)
            print("ok", sum(len(b) for (b,) in loader))
        """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "20"]
    assert "Exception ignored" not in out.stderr, out.stderr


def test_a_timeout_is_an_error_and_the_workers_go():
    class Slow(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            time.sleep(5)
            return i
    it = iter(DataLoader(Slow(), num_workers=1, timeout=0.3))
    pids = it._pool.pids
    t0 = time.monotonic()
    with pytest.raises(DataLoaderError, match="timed out after 0.3 seconds"):
        next(it)
    assert time.monotonic() - t0 < 4
    assert not any(_alive(p) for p in pids)


# -- collation against PyTorch -------------------------------------------------------------------

@pytest.mark.parametrize("batch", [
    [1, 2], [1.0, 2.5], [True, False], ["a", "b"], [b"a", b"b"], [np.float32(1), np.float32(2)],
    [np.int8(1), np.int8(-2)], [np.bool_(True), np.bool_(False)], [np.array(1.0), np.array(2.0)],
    [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}], [(1, 2.0), (3, 4.0)], [Point(1, 2.0), Point(3, 4.0)],
    [{"a": [1, (2, np.float64(3))]}, {"a": [4, (5, np.float64(6))]}], [[1, 2], [3, 4]],
    [collections.OrderedDict(a=1), collections.OrderedDict(a=2)], [np.zeros((0, 3))] * 2])
def test_default_collate_matches_pytorch(batch):
    assert plain(default_collate(batch)) == plain(tud.default_collate(batch))


@pytest.mark.parametrize("batch", [[None, None], [[1, 2], [3]], [object(), object()], [np.array(["a"])] * 2])
def test_default_collate_refuses_what_pytorch_refuses(batch):
    with pytest.raises((TypeError, RuntimeError)):
        tud.default_collate(batch)
    with pytest.raises((TypeError, RuntimeError)):
        default_collate(batch)


def test_iterable_dataset_with_workers_matches_pytorch():
    class Stream(IterableDataset):
        def __iter__(self):
            from tensora.data import get_worker_info
            info = get_worker_info()
            lo, step = (0, 1) if info is None else (info.id, info.num_workers)
            return iter(range(lo, 11, step))

    class TorchStream(tud.IterableDataset):
        def __iter__(self):
            info = tud.get_worker_info()
            lo, step = (0, 1) if info is None else (info.id, info.num_workers)
            return iter(range(lo, 11, step))
    for drop_last in (False, True):
        ref = [b.tolist() for b in tud.DataLoader(TorchStream(), batch_size=3, num_workers=2, drop_last=drop_last)]
        got = [b.tolist() for b in DataLoader(Stream(), batch_size=3, num_workers=2, drop_last=drop_last,
                                              timeout=GUARD_S)]
        assert got == ref
