"""dropout's mask kernel (tensora/kernels/dropout.py, csrc/dropout.cpp) and the words it takes.

The definition is the mask dropout always drew: keep = float32 uniform >= p. The reference
body, fed tensora.random.uint32_words, must give exactly that mask from the same generator
state, and leave the stream where random(float32) leaves it (odd counts and a buffered
half-word included); the native bodies must equal the references bit for bit (out and keep;
the backward's g * keep / (1 - p)), in both instruction-set variants, inf and NaN included. Bad arguments raise, never crash.
"""

from __future__ import annotations

import numpy as np
import pytest

from tensora.kernels.dropout import dropout_apply, dropout_grad, threshold
from tensora.random import uint32_words


def _pair(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    return np.random.Generator(np.random.PCG64(seed)), np.random.Generator(np.random.PCG64(seed))


@pytest.mark.parametrize("first", [0, 1, 3])  # words drawn before: 1 and 3 leave a buffered half-word
@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_words_are_those_random_float32_consumes(first, n):
    a, b = _pair(11)
    a.random(first, dtype=np.float32), b.random(first, dtype=np.float32)
    words = uint32_words(a, n)
    floats = b.random(n, dtype=np.float32)
    assert words.dtype == np.uint32 and words.shape == (n,)
    np.testing.assert_array_equal((words >> 8).astype(np.float32) * np.float32(2 ** -24), floats)
    np.testing.assert_array_equal(a.random(5, dtype=np.float32), b.random(5, dtype=np.float32))


@pytest.mark.parametrize("p", [0.0, 1e-9, 0.1, 0.3, 0.5, 0.9999999, 1.0])
def test_reference_mask_is_uniform_at_least_p(p):
    a, b = _pair(5)
    x = np.random.default_rng(0).standard_normal((64, 33))
    out, keep = dropout_apply.reference(x, uint32_words(a, x.size).reshape(x.shape), p)
    want = b.random(x.shape, dtype=np.float32) >= np.float32(p)
    np.testing.assert_array_equal(keep, want)
    scale = 0.0 if p >= 1 else 1 / (1 - p)
    np.testing.assert_array_equal(out, x * want * scale)
    assert threshold(1.0) == 2 ** 24 and threshold(0.0) == 0


def test_reference_broadcasts_a_per_channel_mask():
    x = np.ones((2, 3, 4, 4), np.float32)
    words = np.array([0, 2 ** 32 - 1, 2 ** 31, 5, 2 ** 30 * 3, 2 ** 29], np.uint32).reshape(2, 3, 1, 1)
    out, keep = dropout_apply(x, words, 0.5)
    assert keep.shape == (2, 3, 1, 1) and out.shape == x.shape
    np.testing.assert_array_equal(out[:, :, 0, 0], np.where(keep[:, :, 0, 0], 2.0, 0.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("shape", [(), (7,), (16, 64, 129)])
def test_native_is_bit_identical_to_reference(simd, dtype, p, shape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    if x.size > 4:
        x.reshape(-1)[:4] = [np.inf, -np.inf, np.nan, -0.0]
    words = rng.integers(0, 2 ** 32, shape, dtype=np.uint32)
    with np.errstate(invalid="ignore"):
        want_out, want_keep = dropout_apply.reference(x, words, p)
    got_out, got_keep = dropout_apply.run_native(x, words, p)
    assert got_out.dtype == dtype and got_out.shape == shape and got_keep.dtype == np.bool_
    np.testing.assert_array_equal(got_keep, want_keep)
    np.testing.assert_array_equal(got_out.reshape(-1).view(np.uint8), want_out.reshape(-1).view(np.uint8))


def test_native_takes_strided_inputs_through_a_copy(lib):
    x = np.random.default_rng(4).standard_normal((30, 20)).T
    words = np.random.default_rng(5).integers(0, 2 ** 32, (30, 20), dtype=np.uint32).T
    got, want = dropout_apply.run_native(x, words, 0.4), dropout_apply.reference(x, words, 0.4)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_native_rejects_bad_arguments(lib):
    x, w = np.ones((2, 3), np.float32), np.zeros((2, 3), np.uint32)
    out, keep = np.empty_like(x), np.empty((2, 3), np.bool_)
    with pytest.raises(ValueError, match="words must have the shape"):
        lib.dropout_apply(x, np.zeros((3, 2), np.uint32), out, keep, 5, 2.0)
    with pytest.raises(ValueError, match="out and keep"):
        lib.dropout_apply(x, w, np.empty((6,), np.float32), keep, 5, 2.0)
    with pytest.raises(TypeError):
        lib.dropout_apply(x, w.astype(np.int32), out, keep, 5, 2.0)
    with pytest.raises(TypeError):
        lib.dropout_apply(x, w, np.empty((2, 3)), keep, 5, 2.0)
    with pytest.raises(TypeError):
        lib.dropout_apply(x.astype(np.float16), w, out.astype(np.float16), keep, 5, 2.0)
    with pytest.raises(ValueError, match="overlap"):
        lib.dropout_apply(x, w, x, keep, 5, 2.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        lib.dropout_apply(np.ones((3, 2), np.float32).T, w, out, keep, 5, 2.0)
    with pytest.raises(ValueError, match="threads"):
        lib.dropout_apply(x, w, out, keep, 5, 2.0, threads=-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.1, 1.0])
@pytest.mark.parametrize("shape", [(), (5,), (16, 64, 129)])
def test_native_grad_is_bit_identical_to_reference(simd, dtype, p, shape):
    rng = np.random.default_rng(6)
    g = rng.standard_normal(shape).astype(dtype)
    if g.size > 3:
        g.reshape(-1)[:3] = [np.inf, np.nan, -0.0]
    keep = rng.random(shape) > 0.3
    with np.errstate(invalid="ignore"):
        want = dropout_grad.reference(g, keep, p)
        np.testing.assert_array_equal(want, g * keep * (0.0 if p >= 1 else dtype(1 / (1 - p))))
    got = dropout_grad.run_native(g, keep, p)
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_array_equal(got.reshape(-1).view(np.uint8), want.reshape(-1).view(np.uint8))


def test_grad_broadcasts_a_per_channel_mask():
    keep = np.array([True, False]).reshape(2, 1)
    np.testing.assert_array_equal(dropout_grad(np.ones((2, 3), np.float32), keep, 0.5), [[2, 2, 2], [0, 0, 0]])


def test_native_grad_rejects_bad_arguments(lib):
    g, k, out = np.ones((2, 3), np.float32), np.ones((2, 3), np.bool_), np.empty((2, 3), np.float32)
    with pytest.raises(ValueError, match="keep and out"):
        lib.dropout_grad(g, np.ones((3, 2), np.bool_), out, 2.0)
    with pytest.raises(TypeError):
        lib.dropout_grad(g, k.astype(np.uint8), out, 2.0)
    with pytest.raises(TypeError):
        lib.dropout_grad(g.astype(np.float16), k, out.astype(np.float16), 2.0)
    with pytest.raises(ValueError, match="overlap"):
        lib.dropout_grad(g, k, g, 2.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        lib.dropout_grad(np.ones((3, 2), np.float32).T, k, out, 2.0)
