"""dropout and dropout1d/2d/3d (tensora/ops/dropout.py).

The reference is the definition: out == x * keep / (1 - p) for a bool keep-mask, so
every element is 0 or x / (1 - p); the kept fraction is 1 - p; backward multiplies
by the same mask (d out / d x = out / x); tensora.manual_seed or a Generator
reproduces the mask; channel variants share one draw per (batch, channel).
"""

import numpy as np
import pytest

import tensora
from tensora.autograd import gradcheck, gradgradcheck


def split(out, x, p):
    """The keep-mask implied by out, after checking out is x * keep / (1 - p) exactly."""
    keep = out != 0
    np.testing.assert_allclose(out[keep], x[keep] / (1 - p), rtol=1e-6)
    return keep


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_scales_kept_and_zeroes_the_rest(p):
    x = np.random.default_rng(0).uniform(1, 2, size=(200, 300))
    out = tensora.dropout(tensora.tensor(x), p=p).numpy()
    keep = split(out, x, p)
    assert abs(keep.mean() - (1 - p)) < 0.01


def test_backward_uses_the_forward_mask():
    x = tensora.tensor(np.random.default_rng(1).uniform(1, 2, size=(30, 40)), requires_grad=True)
    out = tensora.dropout(x, p=0.3)
    g = np.random.default_rng(2).standard_normal((30, 40))
    out.backward(tensora.tensor(g))
    keep = out.detach().numpy() != 0
    np.testing.assert_allclose(x.grad.numpy(), g * keep / 0.7, rtol=1e-12)


def test_gradcheck_and_gradgradcheck_with_a_fixed_generator():
    x = tensora.tensor(np.random.default_rng(3).standard_normal((4, 5)), requires_grad=True)

    def f(t):
        return tensora.dropout(t, p=0.4, generator=tensora.Generator().manual_seed(7))

    assert gradcheck(f, [x])
    assert gradgradcheck(f, [x])


def test_seeded_by_manual_seed_and_generators():
    x = tensora.ones(1000)
    tensora.manual_seed(0)
    a = tensora.dropout(x).numpy()
    b = tensora.dropout(x).numpy()
    tensora.manual_seed(0)
    np.testing.assert_array_equal(tensora.dropout(x).numpy(), a)
    assert not np.array_equal(a, b)
    g1, g2 = tensora.Generator().manual_seed(5), tensora.Generator().manual_seed(5)
    np.testing.assert_array_equal(tensora.dropout(x, generator=g1).numpy(), tensora.dropout(x, generator=g2).numpy())


def test_identity_when_not_training_or_p_zero_and_zeros_at_p_one():
    x = tensora.randn(3, 4, requires_grad=True)
    assert tensora.dropout(x, 0.5, training=False) is x
    assert tensora.dropout(x, 0.0) is x
    out = tensora.dropout(x, 1.0)
    np.testing.assert_array_equal(out.detach().numpy(), 0.0)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 0.0)


def test_inplace_writes_into_the_input():
    x = tensora.tensor(np.random.default_rng(4).uniform(1, 2, size=(50, 50)))
    before = x.numpy().copy()
    y = tensora.dropout(x, 0.5, inplace=True)
    assert y is x
    split(x.numpy(), before, 0.5)
    assert (x.numpy() == 0).any()
    leaf = tensora.randn(3, requires_grad=True)
    h = leaf * 1.0
    tensora.dropout(h, 0.5, inplace=True).sum().backward()
    keep = h.detach().numpy() != 0
    np.testing.assert_allclose(leaf.grad.numpy(), keep / 0.5)


@pytest.mark.parametrize("dtype", [tensora.float32, tensora.float16, tensora.bfloat16, tensora.float64])
def test_dtypes_are_kept(dtype):
    x = tensora.ones(64, 64, dtype=dtype, requires_grad=True)
    out = tensora.dropout(x, 0.5)
    assert out.dtype is dtype
    vals = set(np.unique(out.detach().to(tensora.float64).numpy()).tolist())
    assert vals == {0.0, 2.0}
    out.sum().backward()
    assert x.grad.dtype is dtype


def test_non_contiguous_and_empty_inputs():
    base = np.random.default_rng(5).uniform(1, 2, size=(20, 30))
    x = tensora.tensor(base).T[::2]
    split(tensora.dropout(x, 0.5).numpy(), base.T[::2], 0.5)
    assert tensora.dropout(tensora.zeros(0, 3), 0.5).shape == (0, 3)
    assert tensora.dropout(tensora.tensor(3.0), 0.5).shape == ()


@pytest.mark.parametrize("fn,shape,mask_shape", [
    ("dropout1d", (4, 6, 10), (4, 6, 1)),
    ("dropout1d", (6, 10), (6, 1)),
    ("dropout2d", (4, 6, 5, 7), (4, 6, 1, 1)),
    ("dropout2d", (4, 6, 10), (4, 6, 1)),  # torch takes a 3-D input to dropout2d as (N, C, L)
    ("dropout3d", (2, 6, 3, 4, 5), (2, 6, 1, 1, 1)),
    ("dropout3d", (6, 3, 4, 5), (6, 1, 1, 1)),
])
def test_channel_dropout_shares_one_draw_per_channel(fn, shape, mask_shape):
    x = np.random.default_rng(6).uniform(1, 2, size=shape)
    t = tensora.tensor(x, requires_grad=True)
    out = getattr(tensora, fn)(t, p=0.5)
    keep = split(out.detach().numpy(), x, 0.5)
    per_channel = keep.all(axis=tuple(i for i, n in enumerate(mask_shape) if n == 1), keepdims=True)
    np.testing.assert_array_equal(np.broadcast_to(per_channel, shape), keep)
    assert 0 < per_channel.mean() < 1
    out.sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), keep / 0.5)


def test_errors():
    x = tensora.randn(2, 3)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        tensora.dropout(x, 1.5)
    with pytest.raises(ValueError, match="between 0 and 1, but got -0.1"):
        tensora.dropout2d(tensora.randn(1, 2, 3, 4), -0.1)
    with pytest.raises(tensora.DTypeError, match="floating input, got int64"):
        tensora.dropout(tensora.ones(3, dtype=tensora.int64))
    with pytest.raises(tensora.ShapeError, match=r"dropout2d: expected a 3-D or 4-D input, got shape \[2, 3\]"):
        tensora.dropout2d(x)
