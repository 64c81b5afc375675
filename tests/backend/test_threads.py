"""tensora.set_num_threads / get_num_threads: one cap for the native pool and BLAS."""

from __future__ import annotations

import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import tensora
from tensora.backend import native
from tensora.backend.threads import NATIVE_MAX, usable_cores
from tensora.quant import quantize_tensor


@pytest.fixture(autouse=True)
def _restore():
    yield
    tensora.set_num_threads(None)


def _blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]


def test_the_cap_bounds_native_loops_and_blas():
    before = _blas_threads()
    tensora.set_num_threads(1)
    assert tensora.get_num_threads() == 1
    assert all(n == 1 for n in _blas_threads())
    tensora.set_num_threads(2)
    assert tensora.get_num_threads() == min(2, usable_cores())
    tensora.set_num_threads(None)
    assert tensora.get_num_threads() == min(usable_cores(), NATIVE_MAX)
    assert _blas_threads() == before  # BLAS's own count comes back, not a guess


def test_a_cap_above_the_cores_changes_nothing():
    tensora.set_num_threads(1000)
    assert tensora.get_num_threads() == min(usable_cores(), NATIVE_MAX)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_counts_are_refused(bad):
    with pytest.raises(ValueError, match="positive int"):
        tensora.set_num_threads(bad)


@pytest.mark.skipif(native.load() is None, reason="the native pool is what the cap bounds")
def test_one_thread_runs_every_loop_on_the_caller():
    """With the cap at 1 no worker takes a share: the CPU time of the other threads stays
    near zero while the calling thread runs products the pool would otherwise split."""
    rng = np.random.default_rng(0)
    w = quantize_tensor(rng.standard_normal((4096, 1024)).astype(np.float32), "q4_0")
    x = tensora.tensor(rng.standard_normal((1, 1024)).astype(np.float32))
    expected = (x @ w.T).numpy().copy()
    tensora.set_num_threads(1)
    time.sleep(0.05)  # workers that were spinning after earlier loops go to sleep
    process, thread = time.process_time(), time.thread_time()
    for _ in range(200):
        np.testing.assert_array_equal((x @ w.T).numpy(), expected)
    own = time.thread_time() - thread
    others = time.process_time() - process - own
    assert others < 0.2 * own, (others, own)
