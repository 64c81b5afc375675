"""The GELU kernels (tensora/kernels/gelu.py, csrc/gelu.cpp).

The reference bodies against float64 formulas (erf from math.erf); the native float32 body,
in both instruction-set variants, against the float64 formulas within 1e-6 absolute + 1e-5
relative (float32 erf/exp approximations of a few ulp); special values as the reference
gives them; the gelu op's float32 gradients, which take the native backward, against the
float64 derivative. Bad inputs raise, never crash. Native tests skip when TENSORA_NO_NATIVE
disables the extension and fail when it is missing for another reason.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import tensora
from tensora.kernels import gelu as gk

np_erf = np.vectorize(math.erf, otypes=[np.float64])
K, C = math.sqrt(2 / math.pi), 0.044715


def _gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(K * (x + C * x ** 3)))
    return 0.5 * x * (1 + np_erf(x / math.sqrt(2)))


def _dgelu(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        t = np.tanh(K * (x + C * x ** 3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * K * (1 + 3 * C * x * x)
    return 0.5 * (1 + np_erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _inputs(n: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 4).astype(dtype)
    return x, rng.standard_normal(n).astype(dtype)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_reference_matches_float64(approximate, dtype, tol):
    x, g = _inputs(1001, dtype)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    np.testing.assert_allclose(gk.gelu_forward.reference(x, approximate), _gelu(x64, approximate), rtol=tol, atol=tol)
    np.testing.assert_allclose(gk.gelu_backward.reference(x, g, approximate), g64 * _dgelu(x64, approximate),
                               rtol=tol, atol=tol * 4)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("n", [1, 7, 8, 33, 100_003])  # the 8-lane tail, and a size split across threads
def test_native_matches_float64(simd, approximate, n):
    x, g = _inputs(n)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    y = gk.gelu_forward.run_native(x, approximate)
    gx = gk.gelu_backward.run_native(x, g, approximate)
    assert y.dtype == gx.dtype == np.float32 and y.shape == gx.shape == x.shape
    np.testing.assert_allclose(y, _gelu(x64, approximate), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, g64 * _dgelu(x64, approximate), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_native_special_values_as_reference(simd, approximate):
    x = np.array([np.inf, -np.inf, np.nan, 100.0, -100.0, -0.0, 0.0, 1e-30, -20.0], np.float32)
    g = np.ones_like(x)
    with np.errstate(invalid="ignore", over="ignore"):
        want_y, want_g = gk.gelu_forward.reference(x, approximate), gk.gelu_backward.reference(x, g, approximate)
    got_y, got_g = gk.gelu_forward.run_native(x, approximate), gk.gelu_backward.run_native(x, g, approximate)
    np.testing.assert_array_equal(got_y, want_y)
    np.testing.assert_array_equal(np.signbit(got_y), np.signbit(want_y))
    np.testing.assert_array_equal(got_g, want_g)


def test_float64_and_strided_inputs_take_the_reference_or_a_copy(lib):
    x, g = _inputs(64, np.float64)
    assert gk.gelu_forward.run_native(x, "none").tolist() == gk.gelu_forward.reference(x, "none").tolist()
    x32 = np.asarray(x, np.float32).reshape(8, 8).T  # not C-contiguous
    np.testing.assert_allclose(gk.gelu_forward.run_native(x32, "tanh"), _gelu(x32.astype(np.float64), "tanh"),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_op_float32_gradient_matches_float64_derivative(approximate):
    """gelu's float32 backward runs the kernel (native where built); its gradient is the derivative."""
    x, g = _inputs(4096)
    t = tensora.tensor(x.reshape(64, 64), requires_grad=True)
    tensora.gelu(t, approximate=approximate).backward(tensora.tensor(g.reshape(64, 64)))
    want = (g.astype(np.float64) * _dgelu(x.astype(np.float64), approximate)).reshape(64, 64)
    np.testing.assert_allclose(t.grad.numpy(), want, rtol=1e-5, atol=1e-5)


def test_native_rejects_bad_arrays(lib):
    x = np.ones((2, 3), np.float32)
    with pytest.raises(TypeError):
        lib.gelu_forward(x.astype(np.float64), np.empty((2, 3)), "none")
    with pytest.raises(ValueError, match="shape"):
        lib.gelu_forward(x, np.empty((3, 2), np.float32), "none")
    with pytest.raises(ValueError, match="overlap"):
        lib.gelu_forward(x, x, "none")
    with pytest.raises(ValueError, match="approximate"):
        lib.gelu_forward(x, np.empty_like(x), "erf")
    with pytest.raises(ValueError, match="C-contiguous"):
        lib.gelu_forward(np.ones((3, 2), np.float32).T, np.empty((2, 3), np.float32), "none")
    with pytest.raises(ValueError, match="g: expected shape"):
        lib.gelu_backward(x, np.ones((3, 2), np.float32), np.empty_like(x), "tanh")
    with pytest.raises(ValueError, match="overlap"):
        lib.gelu_backward(x, np.ones_like(x), x, "tanh")
    with pytest.raises(ValueError, match="approximate"):
        gk.gelu_forward.reference(x, "erf")
