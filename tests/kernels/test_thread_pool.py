"""The native kernels' persistent thread pool (csrc/parallel.h): concurrent callers and forked children."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

from tensora.backend import native
from tensora.quant import quantize_tensor

pytestmark = pytest.mark.skipif(native.load() is None, reason="needs the native extension")


def _case(seed: int):
    rng = np.random.default_rng(seed)
    w = quantize_tensor(rng.standard_normal((4096, 512)).astype(np.float32), "q4_0")  # big enough to split
    x = rng.standard_normal((1, 512)).astype(np.float32)
    import tensora

    return tensora.tensor(x), w


def test_concurrent_callers_get_their_own_results():
    cases = [_case(s) for s in range(4)]
    expected = [(x @ w.T).numpy().copy() for x, w in cases]
    errors = []

    def worker(i: int) -> None:
        x, w = cases[i % 4]
        for _ in range(200):
            if not np.array_equal((x @ w.T).numpy(), expected[i % 4]):
                errors.append(i)
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs fork")
def test_a_forked_child_has_a_working_pool():
    x, w = _case(0)
    expected = (x @ w.T).numpy().copy()  # the parent's pool exists now
    pid = os.fork()
    if pid == 0:  # the child: its copy of the pool has no threads; it must build its own, not hang
        ok = np.array_equal((x @ w.T).numpy(), expected)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
