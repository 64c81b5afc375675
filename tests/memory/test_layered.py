"""Layer-by-layer execution against the unconstrained model: same tokens, fewer bytes moved than LRU, a tied
embedding kept resident; and the manager's schedule rules (Belady eviction, prefetch that does no harm)."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from threadpoolctl import threadpool_info

from tensora.memory import budget
from tensora.backend.threads import usable_cores
from tensora.memory.cpu_share import SWITCH_INTERVAL
from tensora.memory.layered import prefetch_window
from tensora.models import load

from .conftest import write_llama

KB = 1000
PROMPT = [1, 5, 9, 20, 33]


class InlinePrefetcher:
    """The prefetch thread's work done inside request(): a prefetcher that is never late, so bytes moved
    depend on the policy alone, not on thread timing."""

    def __init__(self, model) -> None:
        model.memory._prefetcher.stop()
        self.manager = model.memory.manager

    def request(self, groups) -> None:
        prefetch_window(self.manager, groups)

    def stop(self) -> None:
        pass


def _tiered(path, host, tmp_path, schedule: bool = True):
    model = load(path, memory_budget=host, disk_dir=tmp_path)
    model.memory._prefetcher = InlinePrefetcher(model)
    if not schedule:
        model.memory.manager.schedule = None  # the manager's plain LRU
    return model


def _streamed_per_pass(model, new_tokens: int) -> tuple[list[int], float]:
    """Generate after a warm-up; (tokens, bytes read disk->host per forward pass) of the measured run."""
    model.generate(PROMPT, max_new_tokens=2, temperature=0)
    tracker = model.memory.manager.tracker
    before, passes = tracker.moved["disk->host"], [0]
    model.lm_head.register_forward_hook(lambda module, args, out: passes.__setitem__(0, passes[0] + 1))
    out = model.generate(PROMPT, max_new_tokens=new_tokens, temperature=0)
    return out.token_ids, (tracker.moved["disk->host"] - before) / passes[0]


def test_schedule_streams_fewer_bytes_than_lru_and_generates_the_same_tokens(tmp_path):
    size = write_llama(tmp_path / "m", hidden=64, ffn=128, layers=10, vocab=256)  # 12 stages, layers 148 kB
    expected = load(tmp_path / "m").generate(PROMPT, max_new_tokens=6, temperature=0).token_ids
    host = size // 2
    model = _tiered(tmp_path / "m", host, tmp_path)
    tokens, per_pass = _streamed_per_pass(model, 6)
    assert tokens == expected
    largest = max(s.nbytes for s in model.memory.stages)
    # Belady on a cycle: what stays resident is never read again, the rest once per pass; only the
    # window (the stage computing and 2 prefetched) cannot stay, and one more stage for fragmentation
    # (stages do not divide the budget)
    assert per_pass <= size - (host - 4 * largest)
    assert model.memory.manager.tracker.peak["host"] <= host

    lru = _tiered(tmp_path / "m", host, tmp_path, schedule=False)
    lru_tokens, lru_per_pass = _streamed_per_pass(lru, 6)
    assert lru_tokens == expected
    table = 256 * 64 * 4  # the embedding: its rows are read on use, the table never streams
    assert lru_per_pass >= size - table  # LRU evicts the stage needed soonest: all of the rest, every pass
    assert per_pass < 0.8 * lru_per_pass

    threaded = load(tmp_path / "m", memory_budget=host, disk_dir=tmp_path)  # the real prefetch thread
    assert threaded.generate(PROMPT, max_new_tokens=6, temperature=0).token_ids == expected


def test_an_embedding_is_looked_up_row_by_row_never_brought_up(tmp_path):
    size = write_llama(tmp_path / "m", hidden=64, ffn=128, layers=4, vocab=4096)  # table 1 MiB, layers 148 kB
    expected = load(tmp_path / "m").generate(PROMPT, max_new_tokens=5, temperature=0).token_ids
    table = 4096 * 64 * 4
    host = table + 3 * 150 * KB  # lm_head (as big as the table) and two layers
    model = _tiered(tmp_path / "m", host, tmp_path)
    (handle,) = [b.handle for b in model.memory.stages[0].bindings]
    assert handle.name == "model.embed_tokens.weight"
    tokens, per_pass = _streamed_per_pass(model, 5)
    assert tokens == expected
    assert handle.tier == "disk" and model.memory.manager.tracker.peak["host"] <= host
    assert per_pass <= size - table + len(PROMPT) * 64 * 4  # the rest of the model and at most a prompt's rows


class IdlePrefetcher:
    """A prefetch thread that never gets to run: every stage is the caller's to bring up."""

    def request(self, groups) -> None:
        pass

    def stop(self) -> None:
        pass


def test_a_stage_the_prefetch_thread_did_not_reach_is_read_as_one_batch(tmp_path, monkeypatch):
    import tensora

    write_llama(tmp_path / "m", hidden=64, ffn=128, layers=3, vocab=256)
    ids = np.array([PROMPT])
    with tensora.no_grad():
        expected = load(tmp_path / "m")(ids).numpy()
        model = load(tmp_path / "m", memory_budget=400 * KB, disk_dir=tmp_path)
        model.memory._prefetcher.stop()
        model.memory._prefetcher = IdlePrefetcher()
        reader, batches = model.memory.manager._reader, []
        read_many = reader.read_many
        monkeypatch.setattr(reader, "read_many", lambda items: batches.append(len(items)) or read_many(items))
        np.testing.assert_allclose(model(ids).numpy(), expected, rtol=1e-6, atol=1e-6)
    # embedding rows, then each decoder layer's 9 arrays in one batch, final norm, lm_head: not 9 reads a layer
    assert batches == [len(PROMPT), 9, 9, 9, 1, 1]


def _tied_llama(root, **shape) -> int:
    size = write_llama(root, **shape)
    tensors = load_file(str(root / "model.safetensors"))
    del tensors["lm_head.weight"]
    save_file(tensors, str(root / "model.safetensors"))
    config = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps(config | {"tie_word_embeddings": True}))
    return size - shape["vocab"] * shape["hidden"] * 4


def test_a_tied_embedding_stays_resident_when_it_fits(tmp_path):
    shape = dict(hidden=64, ffn=128, layers=6, vocab=4096)  # embedding 1 MiB = lm_head, layers 148 kB
    size = _tied_llama(tmp_path / "tied", **shape)
    expected = load(tmp_path / "tied").generate(PROMPT, max_new_tokens=5, temperature=0).token_ids
    embedding = 4096 * 64 * 4
    host = embedding + 4 * 150 * KB
    model = _tiered(tmp_path / "tied", host, tmp_path)
    tiered = model.memory
    (handle,) = [b.handle for b in tiered.stages[0].bindings]
    assert tiered.stages[-1].bindings[0].handle is handle  # lm_head: the same handle, bound twice
    assert handle.id in tiered._kept
    tokens, per_pass = _streamed_per_pass(model, 5)
    assert tokens == expected
    assert per_pass <= size - embedding  # some of the layers; the embedding never again
    assert handle.tier == "host" and tiered.manager.tracker.peak["host"] <= host

    small = load(tmp_path / "tied", memory_budget=embedding + 2 * 150 * KB, disk_dir=tmp_path)
    assert not small.memory._kept  # no room for it beside 1 + 2 streamed stages: it streams too
    assert small.generate(PROMPT, max_new_tokens=5, temperature=0).token_ids == expected


def _blas_threads() -> int:
    return max(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")


def test_switch_interval_and_blas_threads_are_lowered_during_a_pass_and_restored(tmp_path):
    write_llama(tmp_path / "m", hidden=64, ffn=128, layers=3, vocab=256)
    model = load(tmp_path / "m", memory_budget=400 * KB, disk_dir=tmp_path)
    seen = []
    model.model.layers[1].register_forward_hook(
        lambda module, args, out: seen.append((sys.getswitchinterval(), _blas_threads())))
    before, threads = sys.getswitchinterval(), _blas_threads()
    model.generate(PROMPT, max_new_tokens=3, temperature=0)
    # one core stays free for the prefetch thread's reads (never more BLAS threads than before)
    # (the interpreter keeps the interval in whole microseconds: 1e-4 reads back as 9.99...e-05)
    assert seen == [(pytest.approx(min(before, SWITCH_INTERVAL)), min(threads, max(1, usable_cores() - 1)))] * 3
    assert sys.getswitchinterval() == before and _blas_threads() == threads


def test_generate_keeps_the_cpu_shared_between_its_passes(tmp_path, monkeypatch):
    """Between passes the prefetch thread is reading the next pass's first stages: the caller's sampling
    must not hold the GIL for a default switch interval meanwhile. Restored after generate()."""
    from tensora.models import generation

    write_llama(tmp_path / "m", hidden=64, ffn=128, layers=3, vocab=256)
    model = load(tmp_path / "m", memory_budget=400 * KB, disk_dir=tmp_path)
    seen, sample = [], generation.sample
    monkeypatch.setattr(generation, "sample", lambda *a: seen.append(sys.getswitchinterval()) or sample(*a))
    before = sys.getswitchinterval()
    model.generate(PROMPT, max_new_tokens=3, temperature=0)
    assert seen == [pytest.approx(min(before, SWITCH_INTERVAL))] * 3 and sys.getswitchinterval() == before


class DictSchedule:
    """next_use from a dict of handle id -> distance (inf for others)."""

    def __init__(self) -> None:
        self.ahead: dict[int, float] = {}

    def next_use(self, handle) -> float:
        return self.ahead.get(handle.id, math.inf)


def arr(value: float, n: int = 25 * KB) -> np.ndarray:
    return np.full(n // 4, value, np.float32)


def test_belady_eviction_and_prefetch_that_does_no_harm(tmp_path):
    with budget(host=100 * KB, disk_dir=tmp_path) as mm:
        sched = DictSchedule()
        mm.schedule = sched
        a, b, c, d = (mm.own(arr(i), name=n) for i, n in enumerate("abcd"))  # full
        sched.ahead |= {a.id: 3, b.id: 1, c.id: 5, d.id: 2}
        e = mm.own(arr(9), name="e")  # the caller evicts the one needed furthest ahead: c, not the LRU a
        assert (a.tier, b.tier, c.tier, d.tier, e.tier) == ("host", "host", "disk", "host", "host")
        sched.ahead[e.id] = 0.5
        assert mm.prefetch([c]) == 0  # needed at 5: everything resident is needed sooner, so nothing goes
        assert c.tier == "disk" and mm.tracker.moved["disk->host"] == 0
        sched.ahead[c.id] = 1.5  # now needed before a (3) and d (2): a, the furthest, makes room
        waited = mm.tracker.wait_s  # the caller's spill of c
        assert mm.prefetch([c]) == 1
        assert (a.tier, c.tier, d.tier) == ("disk", "host", "host")
        assert mm.tracker.prefetch_s > 0  # a's spill and c's read, in the prefetch's time
        assert float(c.get()[0]) == 2.0 and mm.tracker.wait_s == waited  # prefetched: the caller did not wait


def test_prefetch_evicts_nothing_when_it_cannot_make_enough_room(tmp_path):
    with budget(host=100 * KB, disk_dir=tmp_path) as mm:
        big = mm.own(arr(7, 50 * KB), name="big")
        a, b, c, d = (mm.own(arr(i), name=n) for i, n in enumerate("abcd"))  # LRU: big goes to disk
        assert big.tier == "disk"
        sched = DictSchedule()
        mm.schedule = sched
        sched.ahead |= {big.id: 5, a.id: 6, b.id: 1, c.id: 2, d.id: 3}
        assert mm.prefetch([big]) == 0  # only a (25 kB) is needed later than big (50 kB): evicting it is in vain
        assert [h.tier for h in (a, b, c, d)] == ["host"] * 4 and mm.tracker.moved["host->disk"] == 50 * KB
        sched.ahead[d.id] = 7  # a and d: 50 kB, enough
        assert mm.prefetch([big]) == 1 and (a.tier, d.tier, big.tier) == ("disk", "disk", "host")
        assert float(big.get()[0]) == 7.0


def test_equal_distance_prefers_the_victim_whose_buffer_fits(tmp_path):
    with budget(host=100 * KB, disk_dir=tmp_path) as mm:
        sched = DictSchedule()
        mm.schedule = sched
        small, big, other = mm.own(arr(1, 20 * KB)), mm.own(arr(2, 30 * KB)), mm.own(arr(3, 50 * KB))
        sched.ahead |= {small.id: 7, big.id: 7, other.id: 1}
        new = mm.own(arr(4, 30 * KB))
        assert (small.tier, big.tier, other.tier, new.tier) == ("host", "disk", "host", "host")


def test_hidden_fraction_counts_caller_reads_whole(tmp_path):
    data = np.arange(40 * KB // 4, dtype=np.float32)
    path = tmp_path / "w.bin"
    path.write_bytes(data.tobytes())
    with budget(host=100 * KB, disk_dir=tmp_path) as mm:
        x = mm.own_file(str(path), 0, (10 * KB // 4,), np.float32, name="x")
        y = mm.own_file(str(path), 10 * KB, (10 * KB // 4,), np.float32, name="y")
        x.get()  # the caller reads: all of that transfer is waiting
        t = mm.tracker
        assert t.wait_s == t.transfer_s > 0 and t.hidden_fraction == 0.0
        mm.prefetch([y])  # read as a prefetch; then used without waiting
        np.testing.assert_array_equal(y.get(), data[10 * KB // 4:20 * KB // 4])
        assert t.prefetch_s > 0 and t.transfer_s == pytest.approx(t.wait_s + t.prefetch_s)
        assert t.hidden_fraction == pytest.approx(t.prefetch_s / t.transfer_s)


def test_a_tiered_model_refuses_to_record_a_backward_pass(tmp_path):
    """Its weights leave host RAM after each stage, so backward would find them gone: say so up front."""
    import tensora
    from tensora.errors import TensoraError
    from tensora.nn import add_lora

    write_llama(tmp_path / "m", hidden=64, ffn=128, layers=2, vocab=256)
    model = load(tmp_path / "m", memory_budget=400 * KB, disk_dir=tmp_path)
    ids = np.array([PROMPT])
    expected = model(ids).numpy()  # frozen weights and integer ids: nothing is recorded, so it runs
    add_lora(model, r=2, targets=["q_proj"])
    with pytest.raises(TensoraError, match="inference only"):
        model(ids)
    with tensora.no_grad():
        np.testing.assert_allclose(model(ids).numpy(), expected, rtol=1e-6, atol=1e-6)  # LoRA B starts at 0
