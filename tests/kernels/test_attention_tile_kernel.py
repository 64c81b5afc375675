"""The fused one-tile attention (tensora/kernels/attention.py, csrc/attention_tile.cpp).

The reference bodies are the one-tile NumPy path and the blocked backward, which
tests/ops/test_attention.py checks against NumPy float64 and torch. The native body must
agree with them within 1e-5 relative + 1e-5 absolute (float32 exp and sums in another
order): causal or not, with dropout (the same counter-hash mask), p = 1, L above or below
S; scaled_dot_product_attention's float32 output and gradients, which take it, against
float64. Shapes outside its contract fall back to the reference; bad arguments raise.
"""

from __future__ import annotations

import numpy as np
import pytest

import tensora
from tensora.kernels.attention import attention_tile_backward, attention_tile_forward


def _inputs(heads, L, S, E, Ev, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in ((heads, L, E), (heads, S, E), (heads, S, Ev),
                                                                  (heads, L, Ev))]


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("shape", [(64, 64, 64, 32, 32), (3, 10, 16, 8, 24), (2, 40, 24, 16, 8), (1, 1, 8, 8, 8)])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("p", [0.0, 0.25, 1.0])
def test_native_matches_reference(lib, shape, causal, p):
    if lib.simd() != "avx2":
        pytest.skip("the fused tile needs AVX2+FMA")
    q, k, v, g = _inputs(*shape)
    out, lse = attention_tile_forward.run_native(q, k, v, 0.3, causal, p, 1234)
    want_out, want_lse = attention_tile_forward.reference(q, k, v, 0.3, causal, p, 1234)
    _close(out, want_out)
    _close(lse, want_lse)
    got = attention_tile_backward.run_native(q, k, v, want_out, want_lse, g, 0.3, causal, p, 1234)
    want = attention_tile_backward.reference(q, k, v, want_out, want_lse, g, 0.3, causal, p, 1234)
    for a, b in zip(got, want):
        assert a.dtype == np.float32 and a.shape == b.shape
        _close(a, b)


def test_shapes_outside_the_contract_take_the_reference(lib):
    q, k, v, g = _inputs(2, 5, 7, 4, 4)  # S and E not multiples of 8
    got = attention_tile_forward.run_native(q, k, v, 0.5, True, 0.0, 0)
    want = attention_tile_forward.reference(q, k, v, 0.5, True, 0.0, 0)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("causal", [True, False])
def test_sdpa_float32_matches_float64(causal):
    """scaled_dot_product_attention on one tile (no mask, full batch dims) takes the fused kernel
    where it is built; output and gradients stay float32-accurate against float64, with dropout."""
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((2, 4, 24, 16)) for _ in range(3)]
    g = rng.standard_normal((2, 4, 24, 16))
    results = []
    for dtype in (np.float32, np.float64):
        ins = [tensora.tensor(a.astype(dtype), requires_grad=True) for a in arrays]
        tensora.manual_seed(5)
        out = tensora.scaled_dot_product_attention(*ins, dropout_p=0.2, is_causal=causal, backend="efficient")
        out.backward(tensora.tensor(g.astype(dtype)))
        results.append([out.detach().numpy()] + [t.grad.numpy() for t in ins])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_native_rejects_bad_arguments(lib):
    if lib.simd() != "avx2":
        pytest.skip("the fused tile needs AVX2+FMA")
    q, k, v, g = _inputs(2, 8, 8, 8, 8)
    out, lse = np.empty_like(q), np.empty((2, 8), np.float32)
    with pytest.raises(ValueError, match="multiples of 8"):
        lib.attention_tile_forward(q[:, :, :4].copy(), k[:, :, :4].copy(), v, 1.0, True, 0.0, 0, 0, out, lse)
    with pytest.raises(ValueError, match="k: expected shape"):
        lib.attention_tile_forward(q, k[:1].copy(), v, 1.0, True, 0.0, 0, 0, out, lse)
    with pytest.raises(ValueError, match="lse"):
        lib.attention_tile_forward(q, k, v, 1.0, True, 0.0, 0, 0, out, np.empty((2, 7), np.float32))
    with pytest.raises(ValueError, match="overlap"):
        lib.attention_tile_forward(q, k, v, 1.0, True, 0.0, 0, 0, q, lse)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lib.attention_tile_forward(q, k, v, 1.0, True, 1.5, 0, 0, out, lse)
    with pytest.raises(TypeError):
        lib.attention_tile_forward(q.astype(np.float64), k, v, 1.0, True, 0.0, 0, 0, out, lse)
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    with pytest.raises(ValueError, match="overlap"):
        lib.attention_tile_backward(q, k, v, out, lse, g, 1.0, True, 0.0, 0, 0, dq, dq, dv)
    with pytest.raises(ValueError, match="dout"):
        lib.attention_tile_backward(q, k, v, out, lse, g[:1].copy(), 1.0, True, 0.0, 0, 0, dq, dk, dv)
