"""The layer-norm row kernels (tensora/kernels/layer_norm.py, csrc/layer_norm.cpp).

The reference bodies against float64 formulas (torch.nn.functional.layer_norm's biased
variance, eps inside the root; dx from the float64 Jacobian-free formula); the native
float32 bodies, in both instruction-set variants, against the reference within 1e-5
relative + 1e-5 absolute (scaled by rstd for dx), with and without weight and bias, rows of
lengths that leave an 8-lane tail; layer_norm's float32 output and gradients, which take
these kernels, against float64. Bad inputs raise, never crash.
"""

from __future__ import annotations

import numpy as np
import pytest

import tensora
import tensora.nn.functional as F
from tensora.kernels.layer_norm import layer_norm_backward, layer_norm_forward


def _formula(x, w, b, eps):
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
    xhat = (x - mean) * rstd
    out = xhat * (1 if w is None else w) + (0 if b is None else b)
    return out, xhat, rstd[:, 0]


def _dx(g, xhat, rstd, w):
    gw = g.astype(np.float64) * (1 if w is None else w)
    return rstd[:, None] * (gw - gw.mean(-1, keepdims=True) - xhat * (gw * xhat).mean(-1, keepdims=True))


def _inputs(rows, n, dtype=np.float32):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((rows, n)) * 3 + 1).astype(dtype)
    return x, rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype), \
        rng.standard_normal((rows, n)).astype(dtype)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
@pytest.mark.parametrize("affine", [True, False])
def test_reference_matches_float64(dtype, tol, affine):
    x, w, b, g = _inputs(9, 37, dtype)
    w, b = (w, b) if affine else (None, None)
    out, xhat, rstd = layer_norm_forward.reference(x, w, b, 1e-5)
    want = _formula(x, w, b, 1e-5)
    np.testing.assert_allclose(out, want[0], rtol=tol, atol=tol)
    np.testing.assert_allclose(xhat, want[1], rtol=tol, atol=tol)
    np.testing.assert_allclose(rstd, want[2], rtol=tol)
    np.testing.assert_allclose(layer_norm_backward.reference(g, xhat, rstd, w), _dx(g, want[1], want[2], w),
                               rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("n", [2, 8, 13, 128, 1000])
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_native_matches_reference(simd, n, affine):
    x, w, b, g = _inputs(33, n)
    w = w if affine in ("both", "weight") else None
    b = b if affine in ("both", "bias") else None
    out, xhat, rstd = layer_norm_forward.run_native(x, w, b, 1e-5)
    r_out, r_xhat, r_rstd = layer_norm_forward.reference(x, w, b, 1e-5)
    assert out.dtype == xhat.dtype == rstd.dtype == np.float32 and rstd.shape == (33,)
    np.testing.assert_allclose(out, r_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xhat, r_xhat, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rstd, r_rstd, rtol=1e-5)
    dx = layer_norm_backward.run_native(g, xhat, rstd, w)
    np.testing.assert_allclose(dx, layer_norm_backward.reference(g, xhat, rstd, w), rtol=1e-5,
                               atol=1e-5 * float(rstd.max()))


@pytest.mark.parametrize("shape,normalized", [((16, 64, 128), (128,)), ((4, 6, 5), (6, 5)), ((3, 7), (7,))])
def test_layer_norm_float32_matches_float64(shape, normalized):
    """F.layer_norm routes float32 trailing-dims norms through these kernels; output and all three
    gradients stay float32-accurate."""
    rng = np.random.default_rng(7)
    x64, g64 = rng.standard_normal(shape) * 2 + 0.5, rng.standard_normal(shape)
    w64, b64 = rng.standard_normal(normalized), rng.standard_normal(normalized)
    ins32 = [tensora.tensor(a.astype(np.float32), requires_grad=True) for a in (x64, w64, b64)]
    ins64 = [tensora.tensor(a, requires_grad=True) for a in (x64, w64, b64)]
    out32, out64 = (F.layer_norm(i[0], normalized, i[1], i[2]) for i in (ins32, ins64))
    out32.backward(tensora.tensor(g64.astype(np.float32)))
    out64.backward(tensora.tensor(g64))
    np.testing.assert_allclose(out32.detach().numpy(), out64.detach().numpy(), rtol=1e-5, atol=1e-5)
    for a, b in zip(ins32, ins64):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_native_rejects_bad_arrays(lib):
    x = np.ones((2, 3), np.float32)
    e = np.empty(0, np.float32)
    out, xhat, rstd = np.empty_like(x), np.empty_like(x), np.empty(2, np.float32)
    with pytest.raises(TypeError):
        lib.layer_norm_forward(x.astype(np.float64), e, e, 1e-5, out, xhat, rstd)
    with pytest.raises(ValueError, match=r"\(rows, n\)"):
        lib.layer_norm_forward(np.ones(3, np.float32), e, e, 1e-5, out, xhat, rstd)
    with pytest.raises(ValueError, match="weight"):
        lib.layer_norm_forward(x, np.ones(4, np.float32), e, 1e-5, out, xhat, rstd)
    with pytest.raises(ValueError, match="rstd"):
        lib.layer_norm_forward(x, e, e, 1e-5, out, xhat, np.empty(3, np.float32))
    with pytest.raises(ValueError, match="out"):
        lib.layer_norm_forward(x, e, e, 1e-5, np.empty((3, 2), np.float32), xhat, rstd)
    with pytest.raises(ValueError, match="overlap"):
        lib.layer_norm_forward(x, e, e, 1e-5, x, xhat, rstd)
    with pytest.raises(ValueError, match="empty"):
        lib.layer_norm_forward(np.ones((2, 0), np.float32), e, e, 1e-5, np.ones((2, 0), np.float32),
                               np.ones((2, 0), np.float32), rstd)
    with pytest.raises(ValueError, match="C-contiguous"):
        lib.layer_norm_forward(np.ones((3, 2), np.float32).T, e, e, 1e-5, out, xhat, rstd)
    with pytest.raises(ValueError, match="xhat"):
        lib.layer_norm_backward(x, np.ones((3, 2), np.float32), rstd, e, out)
    with pytest.raises(ValueError, match="overlap"):
        lib.layer_norm_backward(x, xhat, rstd, e, x)
    with pytest.raises(ValueError, match="threads"):
        lib.layer_norm_backward(x, xhat, rstd, e, out, threads=-1)
