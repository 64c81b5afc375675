"""rotary_embedding against the float64 formula, by finite differences, and against its op-by-op form."""

from __future__ import annotations

import numpy as np
import pytest

import tensora
from tensora.autograd import gradcheck, gradgradcheck
from tensora.errors import ShapeError
from tensora.ops.rotary import rotary_embedding


def _angles(t: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    freqs = np.arange(t)[:, None] * 10000.0 ** (-np.arange(0, d, 2) / d)[None]
    emb = np.concatenate([freqs, freqs], -1)
    return np.cos(emb), np.sin(emb)


def _reference(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return x * cos + np.concatenate([-x[..., half:], x[..., :half]], -1) * sin


def test_forward_matches_float64_formula():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 8))
    cos, sin = _angles(5, 8)
    got = rotary_embedding(tensora.tensor(x), tensora.tensor(cos), tensora.tensor(sin))
    np.testing.assert_allclose(got.numpy(), _reference(x, cos, sin), rtol=1e-14, atol=1e-14)


def test_gradients_by_finite_differences():
    x = tensora.tensor(np.random.default_rng(1).standard_normal((2, 4, 6)), requires_grad=True)
    cos, sin = (tensora.tensor(a) for a in _angles(4, 6))
    assert gradcheck(lambda v: rotary_embedding(v, cos, sin), (x,))
    assert gradgradcheck(lambda v: rotary_embedding(v, cos, sin), (x,))


def test_float32_and_non_contiguous_input():
    x = tensora.randn(5, 2, 8).transpose(0, 1)  # (2, 5, 8), strided
    cos, sin = (tensora.tensor(a.astype(np.float32)) for a in _angles(5, 8))
    got = rotary_embedding(x, cos, sin)
    assert got.dtype is tensora.float32
    np.testing.assert_allclose(got.numpy(), _reference(x.numpy().astype(np.float64), cos.numpy(), sin.numpy()),
                               rtol=1e-5, atol=1e-6)


def test_mismatched_shapes_name_them():
    with pytest.raises(ShapeError, match=r"\[2, 7\]"):
        rotary_embedding(tensora.ones(2, 7), tensora.ones(7), tensora.ones(7))
