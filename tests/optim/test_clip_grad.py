"""Gradient clipping against NumPy float64: total norms of every order, the scaling, and the edge cases."""

import math
import types

import numpy as np
import pytest

import tensora
from tensora.optim import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm


def params_with_grads(rng, shapes=((3, 4), (5,), ()), dtype=np.float64, scale=1.0):
    ps, grads = [], []
    for s in shapes:
        p = tensora.zeros(*s, dtype=tensora.float64 if dtype == np.float64 else tensora.float32, requires_grad=True)
        g = (rng.standard_normal(s) * scale).astype(dtype)
        p.grad = tensora.tensor(g)
        ps.append(p)
        grads.append(g.astype(np.float64))
    return ps, grads


def numpy_vector_norm(flat, p):
    if p == math.inf:
        return np.abs(flat).max()
    if p == -math.inf:
        return np.abs(flat).min()
    if p == 0:
        return float(np.count_nonzero(flat))
    return (np.abs(flat) ** p).sum() ** (1 / p)


def numpy_total_norm(grads, p):
    """The norm of the per-gradient norms, as torch defines it: for p != 0 the norm of all grads concatenated;
    for p = 0 the number of gradients that have a nonzero entry."""
    return numpy_vector_norm(np.array([numpy_vector_norm(g.ravel(), p) for g in grads]), p)


@pytest.mark.parametrize("norm_type", [2.0, 1, 3.5, math.inf, -math.inf, 0])
def test_total_norm_of_every_order(norm_type, rng):
    ps, grads = params_with_grads(rng)
    grads[1][2] = 0.0
    ps[1].grad._data[2] = 0.0
    if norm_type != 0:
        np.testing.assert_allclose(numpy_total_norm(grads, norm_type),
                                   numpy_vector_norm(np.concatenate([g.ravel() for g in grads]), norm_type))
    total = get_total_norm([p.grad for p in ps], norm_type)
    assert total.dtype is tensora.float64 and total.shape == ()
    np.testing.assert_allclose(total.item(), numpy_total_norm(grads, norm_type), rtol=1e-12)


def test_clip_scales_grads_down_to_max_norm(rng):
    ps, grads = params_with_grads(rng, scale=10.0)
    versions = [p.grad._version for p in ps]
    total = clip_grad_norm_(ps, max_norm=1.5)
    expected_norm = numpy_total_norm(grads, 2)
    np.testing.assert_allclose(total.item(), expected_norm, rtol=1e-12)
    coef = 1.5 / (expected_norm + 1e-6)
    for p, g in zip(ps, grads):
        np.testing.assert_allclose(p.grad.numpy(), g * coef, rtol=1e-12)
    np.testing.assert_allclose(numpy_total_norm([p.grad.numpy() for p in ps], 2), 1.5, rtol=1e-6)
    assert [p.grad._version for p in ps] == [v + 1 for v in versions]


def test_clip_leaves_small_grads_alone_and_skips_missing_ones(rng):
    ps, grads = params_with_grads(rng, scale=0.01)
    extra = tensora.zeros(2, requires_grad=True)  # no .grad: ignored
    total = clip_grad_norm_(ps + [extra], max_norm=100.0, norm_type=1)
    np.testing.assert_allclose(total.item(), numpy_total_norm(grads, 1), rtol=1e-12)
    for p, g in zip(ps, grads):
        np.testing.assert_array_equal(p.grad.numpy(), g)
    assert extra.grad is None


def test_clip_single_tensor_and_float32(rng):
    p = tensora.zeros(4, requires_grad=True)
    p.grad = tensora.tensor([3.0, 0.0, 4.0, 0.0])
    total = clip_grad_norm_(p, max_norm=1.0)
    assert total.dtype is tensora.float32 and total.item() == 5.0
    np.testing.assert_allclose(p.grad.tolist(), [0.6, 0.0, 0.8, 0.0], rtol=1e-6)


def test_mixed_dtypes_give_the_promoted_norm(rng):
    a = tensora.zeros(2, requires_grad=True)
    a.grad = tensora.tensor([3.0, 0.0])
    b = tensora.zeros(1, dtype=tensora.float64, requires_grad=True)
    b.grad = tensora.tensor([4.0], dtype=tensora.float64)
    total = clip_grad_norm_([a, b], max_norm=2.5)
    assert total.dtype is tensora.float64 and total.item() == 5.0
    assert a.grad.dtype is tensora.float32
    np.testing.assert_allclose(a.grad.tolist() + b.grad.tolist(), [1.5, 0.0, 2.0], rtol=1e-6)


def test_bfloat16_grads_are_summed_in_float32():
    p = tensora.zeros(300, dtype=tensora.bfloat16, requires_grad=True)
    p.grad = tensora.ones(300, dtype=tensora.bfloat16)
    total = get_total_norm([p.grad], 1)
    assert total.dtype is tensora.bfloat16 and total.item() == 300.0  # a bfloat16 running sum would stall at 256


def test_no_grads_gives_zero_and_empty_generator_warns():
    assert clip_grad_norm_([tensora.zeros(2, requires_grad=True)], 1.0).item() == 0.0
    with pytest.warns(UserWarning, match="empty generator"):
        clip_grad_norm_((p for p in []), 1.0)
    assert isinstance((p for p in []), types.GeneratorType)


def test_non_finite_norm_errors_or_spreads_nan():
    p = tensora.zeros(2, requires_grad=True)
    p.grad = tensora.tensor([float("inf"), 1.0])
    with pytest.raises(RuntimeError, match="total norm of order 2.0 for gradients from `parameters` is non-finite"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert p.grad.tolist()[1] == 1.0  # nothing was scaled
    total = clip_grad_norm_([p], 1.0)  # as torch: inf norm -> coefficient 0 -> inf * 0 = nan, 1 * 0 = 0
    assert math.isinf(total.item())
    assert math.isnan(p.grad.tolist()[0]) and p.grad.tolist()[1] == 0.0


def test_clip_grads_with_a_precomputed_norm(rng):
    ps, grads = params_with_grads(rng)
    norm = tensora.tensor(4.0, dtype=tensora.float64)
    clip_grads_with_norm_(ps, 2.0, norm)
    for p, g in zip(ps, grads):
        np.testing.assert_allclose(p.grad.numpy(), g * (2.0 / (4.0 + 1e-6)), rtol=1e-12)


def test_clip_grad_value(rng):
    ps, grads = params_with_grads(rng, scale=3.0)
    ps[0].grad._data[0, 0] = float("nan")
    clip_grad_value_(ps, 0.5)
    for p, g in zip(ps, grads):
        expected = np.clip(g, -0.5, 0.5)
        if p is ps[0]:
            expected[0, 0] = np.nan
        np.testing.assert_array_equal(p.grad.numpy(), expected)
