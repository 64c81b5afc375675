"""Property: random own/get/pin/update/free/prefetch sequences never exceed a budget and never lose or corrupt
bytes, under LRU eviction and under a schedule (random next-use distances, as a tiered model gives).

The reference is a plain dict of the arrays each handle should hold. After every step the
tracker's counts AND the bytes really held (host arrays and free buffers counted afresh,
spill files sized on disk) must be within budget, and every live handle must read back
exactly its reference bytes.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tensora.memory import MemoryBudgetError, budget

HOST, DISK = 64_000, 200_000

sizes = st.integers(min_value=0, max_value=30_000)
ops = st.lists(st.one_of(
    st.tuples(st.just("own"), sizes, st.sampled_from(["activation", "weight", "optimizer"]), st.booleans()),
    st.tuples(st.just("get"), st.integers(0, 50)),
    st.tuples(st.just("pin"), st.integers(0, 50), st.integers(0, 50)),
    st.tuples(st.just("update"), st.integers(0, 50), sizes),
    st.tuples(st.just("free"), st.integers(0, 50)),
    st.tuples(st.just("prefetch"), st.integers(0, 50), st.integers(0, 50)),
), min_size=1, max_size=40)


class RandomSchedule:
    """A next-use distance per handle, redrawn whenever `shuffle` is called (a model moving on)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.ahead: dict[int, float] = {}

    def next_use(self, handle) -> float:
        return self.ahead.setdefault(handle.id, float(self.rng.integers(0, 8)))

    def shuffle(self) -> None:
        self.ahead.clear()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops, st.booleans())
def test_budgets_hold_and_bytes_survive(tmp_path, steps, scheduled):
    rng = np.random.default_rng(len(steps))
    with budget(host=HOST, disk=DISK, disk_dir=tmp_path) as mm:
        schedule = RandomSchedule(rng) if scheduled else None
        mm.schedule = schedule
        live: list = []  # (handle, expected bytes)

        def fresh(n: int) -> np.ndarray:
            return rng.integers(0, 256, n, dtype=np.uint8)

        for step in steps:
            kind = step[0]
            try:
                if kind == "own":
                    data = fresh(step[1])
                    h = mm.own(data.copy(), kind=step[2], evictable=step[3] or step[1] > 8_000)
                    live.append((h, data))
                elif live and kind == "get":
                    h, data = live[step[1] % len(live)]
                    np.testing.assert_array_equal(h.get(), data)
                elif live and kind == "pin":
                    (h, data), (g, other) = live[step[1] % len(live)], live[step[2] % len(live)]
                    with h.pinned() as a:
                        np.testing.assert_array_equal(g.get(), other)  # may evict others, never h
                        assert h.tier == "host"
                        np.testing.assert_array_equal(a, data)
                elif live and kind == "update":
                    i = step[1] % len(live)
                    data = fresh(step[2])
                    live[i][0].update(data.copy())
                    live[i] = (live[i][0], data)
                elif live and kind == "free":
                    live.pop(step[1] % len(live))[0].free()
                elif live and kind == "prefetch":
                    mm.prefetch([live[step[1] % len(live)][0], live[step[2] % len(live)][0]])
            except MemoryBudgetError:
                pass  # refused: and then nothing may have changed (checked below for every handle)
            if schedule is not None:
                schedule.shuffle()
            t = mm.tracker
            assert t.now["host"] <= HOST and t.peak["host"] <= HOST and mm.host_bytes_held() <= HOST
            assert t.now["host"] == mm.host_bytes_held()
            assert t.now["spill"] <= DISK and mm.spill_bytes_held() == t.now["spill"]
            assert sum(h.nbytes for h, _ in live if h.tier == "disk") == t.now["disk"]
            for h, data in live:
                assert h.tier in ("host", "disk")
                np.testing.assert_array_equal(h.get(), data)
