"""The small-input softmax kernel (tensora/kernels/softmax.py, csrc/softmax.cpp).

The reference body against a float64 formula; the native body against the reference
within 1e-6 relative (float32) / 1e-13 (float64), log-softmax within that much absolute; -inf rows, NaN and +inf as NumPy gives
them; and the softmax ops route small last-axis inputs here and agree with the NumPy
path they take otherwise. Bad inputs raise, never crash. Native tests skip when
TENSORA_NO_NATIVE disables the extension and fail when it is missing for another reason.
"""

from __future__ import annotations

import numpy as np
import pytest

import tensora
from tensora.kernels import softmax as sk


def _formula(x: np.ndarray, log: bool) -> np.ndarray:
    x = x.astype(np.float64)
    z = x - x.max(-1, keepdims=True)
    lse = np.log(np.exp(z).sum(-1, keepdims=True))
    return z - lse if log else np.exp(z - lse)


@pytest.mark.parametrize("shape", [(1,), (16,), (3, 7), (2, 3, 33)])
@pytest.mark.parametrize("log", [False, True])
def test_reference_matches_float64(shape, log):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32) * 4
    got = sk.softmax_rows.reference(x, np.empty_like(x), log)
    np.testing.assert_allclose(got, _formula(x, log), rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 1e-6), (np.float64, 1e-13)])
@pytest.mark.parametrize("shape", [(1,), (16,), (5, 9), (2, 4, 64), (1, 1024)])
@pytest.mark.parametrize("log", [False, True])
def test_native_matches_reference(lib, dtype, rtol, shape, log):
    x = (np.random.default_rng(2).standard_normal(shape) * 6).astype(dtype)
    want = sk.softmax_rows.reference(x, np.empty_like(x), log)
    got = sk.softmax_rows.run_native(x, np.empty_like(x), log)
    # log-softmax: the row's log-sum (summed in another order) shifts every value alike
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol if log else rtol * 0.1)


@pytest.mark.parametrize("log", [False, True])
def test_native_special_values_as_numpy(lib, log):
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, np.nan, 1.0], [np.inf, 0.0, 1.0], [0.0, -np.inf, 0.0]],
                 np.float32)
    with np.errstate(invalid="ignore"):
        want = sk.softmax_rows.reference(x, np.empty_like(x), log)
    got = sk.softmax_rows.run_native(x, np.empty_like(x), log)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[3], want[3])


def test_native_rejects_bad_arrays(lib):
    x = np.ones((2, 3), np.float32)
    with pytest.raises(TypeError):
        lib.softmax_rows(x.astype(np.int32), np.empty((2, 3), np.int32), False)
    with pytest.raises(ValueError, match="shape and dtype"):
        lib.softmax_rows(x, np.empty((3, 2), np.float32), False)
    with pytest.raises(ValueError, match="shape and dtype"):
        lib.softmax_rows(x, np.empty((2, 3), np.float64), False)
    with pytest.raises(ValueError, match="overlap"):
        lib.softmax_rows(x, x, False)
    with pytest.raises(ValueError, match="C-contiguous"):
        lib.softmax_rows(np.ones((3, 2), np.float32).T, np.empty((2, 3), np.float32), False)
    with pytest.raises(ValueError, match="at least one"):
        lib.softmax_rows(np.ones((2, 0), np.float32), np.empty((2, 0), np.float32), False)
    with pytest.raises(ValueError, match="at least one"):
        lib.softmax_rows(np.float32(1.0).reshape(()), np.empty((), np.float32), False)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_ops_agree_on_both_sides_of_the_small_input_route(op):
    """A last-axis input of SMALL elements takes the kernel; one element more, or another
    axis, takes the NumPy path: both equal the float64 formula."""
    rng = np.random.default_rng(3)
    for shape, dim in [((sk.SMALL // 32, 32), -1), ((sk.SMALL // 32 + 1, 32), -1), ((32, 16), 0), ((16,), 0)]:
        x = rng.standard_normal(shape).astype(np.float32)
        got = getattr(tensora.tensor(x), op)(dim).numpy()
        want = _formula(np.moveaxis(x, dim, -1), op == "log_softmax")
        np.testing.assert_allclose(got, np.moveaxis(want, -1, dim), rtol=2e-6, atol=2e-7)
