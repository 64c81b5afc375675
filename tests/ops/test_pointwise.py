"""Pointwise math (tensora/ops/pointwise.py) against NumPy float64 / math.erf, gradients by gradcheck.

Each op: forward against its NumPy formula on float64, gradcheck on broadcast,
0-d, empty and non-contiguous inputs, and gradgradcheck where the second
derivative is not identically zero. Conventions (clamp at the bounds, maximum
on ties, zero gradients of rounding) are checked against closed forms.
"""

import math

import numpy as np
import pytest
from optest import check_op

import tensora
from tensora.autograd import gradcheck, gradgradcheck
from tensora.kernels.erf import erf_array

np_erf = np.vectorize(math.erf, otypes=[np.float64])

# name -> (NumPy reference, input range); ranges keep away from poles and kinks.
UNARY = {
    "abs": (np.abs, (-2.0, 2.0)),
    "log1p": (np.log1p, (-0.8, 3.0)),
    "expm1": (np.expm1, (-3.0, 3.0)),
    "rsqrt": (lambda a: 1 / np.sqrt(a), (0.3, 3.0)),
    "reciprocal": (np.reciprocal, (0.3, 3.0)),
    "sin": (np.sin, (-4.0, 4.0)),
    "cos": (np.cos, (-4.0, 4.0)),
    "erf": (np_erf, (-3.0, 3.0)),
    "square": (np.square, (-2.0, 2.0)),
    "frac": (lambda a: a - np.trunc(a), (-3.0, 3.0)),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_forward_and_gradients(name):
    ref, (low, high) = UNARY[name]
    fn = getattr(tensora, name)
    check_op(fn, ref, [(3, 4)], low=low, high=high, gradgrad=name not in ("abs", "frac"))
    check_op(fn, ref, [()], low=low, high=high)
    check_op(lambda x: getattr(x.T[1:], name)(), lambda a: ref(a.T[1:]), [(4, 3)], low=low, high=high)
    assert fn(tensora.ones(0, 3)).shape == (0, 3)


@pytest.mark.parametrize("name", ["log1p", "expm1", "rsqrt", "reciprocal", "sin", "cos", "erf"])
def test_unary_of_int_is_default_float(name):
    out = getattr(tensora, name)(tensora.tensor([1, 2, 3]))
    assert out.dtype is tensora.float32
    np.testing.assert_allclose(out.numpy(), UNARY[name][0](np.array([1.0, 2.0, 3.0])), rtol=2e-7)


@pytest.mark.parametrize("dtype", [tensora.float16, tensora.bfloat16])
@pytest.mark.parametrize("name", ["log1p", "expm1", "rsqrt", "sin", "erf", "abs", "square", "frac"])
def test_low_precision_is_float32_math_rounded_once(name, dtype):
    x = tensora.tensor(np.linspace(0.1, 2.5, 40), dtype=dtype)
    out = getattr(tensora, name)(x)
    assert out.dtype is dtype
    want = UNARY[name][0](x.float().numpy().astype(np.float64))
    np.testing.assert_allclose(out.float().numpy(), want, rtol=2 ** -7 if dtype is tensora.bfloat16 else 2 ** -10)


# -- erf ---------------------------------------------------------------------------------

def test_erf_is_float64_accurate():
    x = np.concatenate([np.linspace(-7, 7, 20001), np.geomspace(1e-300, 1e-2, 200), [0.0, 1.9999999, 2.0, 6.0]])
    ref = np_erf(x)
    got = erf_array(np, x)
    ulps = np.abs(got - ref) / np.spacing(np.maximum(np.abs(ref), 1e-300))
    assert ulps.max() <= 3
    x32 = x.astype(np.float32)
    got32 = erf_array(np, x32)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, np_erf(x32.astype(np.float64)), rtol=4e-7, atol=1e-37)


def test_erf_special_values_and_shapes():
    out = tensora.erf(tensora.tensor([np.inf, -np.inf, np.nan, -0.0, 0.0, 1e300], dtype=tensora.float64))
    assert out.tolist()[:2] == [1.0, -1.0] and np.isnan(out.tolist()[2]) and out.tolist()[5] == 1.0
    assert math.copysign(1, out.tolist()[3]) == -1.0
    x = tensora.tensor(np.linspace(-3, 3, 12).reshape(3, 4), dtype=tensora.float64)
    np.testing.assert_allclose(tensora.erf(x.T).numpy(), np_erf(x.numpy().T), rtol=1e-15)


# -- sign and rounding ---------------------------------------------------------------------

ROUNDING = {"floor": np.floor, "ceil": np.ceil, "trunc": np.trunc, "round": np.round, "sign": None}


@pytest.mark.parametrize("name", list(ROUNDING))
def test_rounding_and_sign_forward_with_zero_gradient(name):
    a = np.array([[-2.5, -1.5, -0.5, -0.0], [0.5, 1.5, 2.7, -3.2]])
    x = tensora.tensor(a, dtype=tensora.float64, requires_grad=True)
    out = getattr(tensora, name)(x)
    want = np.sign(a) + 0.0 if name == "sign" else ROUNDING[name](a)  # round: half to even
    np.testing.assert_array_equal(out.detach().numpy(), want)
    (out * tensora.tensor(np.arange(8.0).reshape(2, 4))).sum().backward()
    assert x.grad.shape == (2, 4) and not x.grad.numpy().any()


def test_round_decimals_and_sign_of_nan():
    x = tensora.tensor([1234.5678, 0.125, -2.5, 15.0], dtype=tensora.float64)
    np.testing.assert_array_equal(tensora.round(x, decimals=2).numpy(), np.round(x.numpy(), 2))
    np.testing.assert_array_equal(x.round(decimals=-1).numpy(), np.round(x.numpy(), -1))
    s = tensora.sign(tensora.tensor([np.nan, -0.0, -3.0]))
    assert s.tolist() == [0.0, 0.0, -1.0] and math.copysign(1, s.tolist()[1]) == 1  # as PyTorch
    assert tensora.fix(tensora.tensor([-1.7])).tolist() == [-1.0]


def test_integer_and_bool_inputs_of_value_preserving_ops():
    i = tensora.tensor([-3, 0, 4], dtype=tensora.int32)
    for name in ("floor", "ceil", "trunc", "round", "abs", "sign"):
        out = getattr(i, name)()
        assert out.dtype is tensora.int32
    assert i.abs().tolist() == [3, 0, 4] and i.sign().tolist() == [-1, 0, 1] and i.floor().tolist() == [-3, 0, 4]
    assert tensora.tensor([True, False]).sign().tolist() == [True, False]
    assert tensora.square(tensora.tensor([True, False])).dtype is tensora.int64
    assert tensora.square(i).tolist() == [9, 0, 16]
    for fn in (lambda: abs(tensora.tensor([True])), lambda: tensora.floor(tensora.tensor([True])),
               lambda: tensora.frac(i), lambda: tensora.round(i, decimals=1)):
        with pytest.raises(tensora.DTypeError):
            fn()


# -- abs ---------------------------------------------------------------------------------

def test_abs_gradient_at_zero_is_zero_and_dunder():
    x = tensora.tensor([-2.0, 0.0, -0.0, 3.0], dtype=tensora.float64, requires_grad=True)
    abs(x).sum().backward()
    assert x.grad.tolist() == [-1.0, 0.0, 0.0, 1.0]
    assert tensora.absolute(tensora.tensor([-1])).tolist() == [1]


# -- clamp ---------------------------------------------------------------------------------

def test_clamp_scalar_bounds_forward_and_gradient_at_the_bounds():
    a = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    x = tensora.tensor(a, dtype=tensora.float64, requires_grad=True)
    out = x.clamp(-1, 1)
    np.testing.assert_array_equal(out.detach().numpy(), np.clip(a, -1, 1))
    out.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # passes at x == bound, as PyTorch
    check_op(lambda t: tensora.clip(t, min=-0.3), lambda t: np.maximum(t, -0.3), [(3, 4)], gradgrad=True)
    check_op(lambda t: t.clamp(max=0.2), lambda t: np.minimum(t, 0.2), [(3, 4)])
    check_op(lambda t: t.T.clamp_min(0.1), lambda t: np.maximum(t.T, 0.1), [(2, 3)])
    check_op(lambda t: t.clamp_max(0.1), lambda t: np.minimum(t, 0.1), [()])
    assert tensora.ones(0, 2).clamp(0, 1).shape == (0, 2)


def test_clamp_tensor_bounds_gradients_follow_torch():
    x = tensora.tensor([1.0, 2.0, 3.0, -1.0], dtype=tensora.float64, requires_grad=True)
    lo = tensora.tensor([1.0, 3.0, 0.0, 0.0], dtype=tensora.float64, requires_grad=True)
    hi = tensora.tensor([3.0, 2.0, 3.0, 2.0], dtype=tensora.float64, requires_grad=True)
    out = tensora.clamp(x, lo, hi)
    assert out.tolist() == [1.0, 2.0, 3.0, 0.0]  # hi < lo gives hi, as min(max(x, lo), hi)
    out.sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert lo.grad.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert hi.grad.tolist() == [0.0, 1.0, 0.0, 0.0]
    # Broadcast bounds, checked by finite differences away from ties.
    check_op(lambda t, l, h: tensora.clamp(t, l, h), lambda t, l, h: np.minimum(np.maximum(t, l), h),
             [(3, 4), (4,), (3, 1)], gradgrad=True)
    check_op(lambda t, l: tensora.clamp(t, min=l), lambda t, l: np.maximum(t, l), [(2, 3), (2, 3)])


def test_clamp_dtypes_and_errors():
    i = tensora.tensor([1, 5, 9])
    assert i.clamp(2, 6).dtype is tensora.int64 and i.clamp(2, 6).tolist() == [2, 5, 6]
    assert i.clamp(min=1.5).dtype is tensora.float32 and i.clamp(min=1.5).tolist() == [1.5, 5.0, 9.0]
    b = tensora.tensor([0.5, 3.0], dtype=tensora.bfloat16).clamp(0, 1)
    assert b.dtype is tensora.bfloat16 and b.tolist() == [0.5, 1.0]
    assert np.isnan(tensora.tensor([np.nan]).clamp(0, 1).item())
    with pytest.raises(ValueError, match="at least one"):
        i.clamp()
    with pytest.raises(tensora.ShapeError, match=r"\[3\], \[2\]"):
        tensora.ones(3).clamp(tensora.zeros(2))


# -- maximum, minimum ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum(name):
    ref = getattr(np, name)
    check_op(getattr(tensora, name), ref, [(3, 4), (4,)], gradgrad=True)
    check_op(lambda a, b: getattr(a.T, name)(b), lambda a, b: ref(a.T, b), [(4, 3), (3, 4)])
    # Ties split the gradient in half, as in PyTorch.
    a = tensora.tensor([1.0, 2.0, 3.0], dtype=tensora.float64, requires_grad=True)
    b = tensora.tensor([2.0, 2.0, 2.0], dtype=tensora.float64, requires_grad=True)
    getattr(tensora, name)(a, b).sum().backward()
    win = [0.0, 0.5, 1.0] if name == "maximum" else [1.0, 0.5, 0.0]
    assert a.grad.tolist() == win and b.grad.tolist() == [1 - w for w in win]
    out = getattr(tensora, name)(tensora.tensor([1, 5]), tensora.tensor([2.5, 2.5]))
    assert out.dtype is tensora.float32 and np.isnan(getattr(tensora, name)(tensora.tensor([np.nan]), 1.0).item())


# -- lerp ------------------------------------------------------------------------------------

def test_lerp_scalar_and_tensor_weights():
    ref = lambda s, e, w: s + w * (e - s)  # noqa: E731
    for w in (0.25, 0.75):
        check_op(lambda s, e: tensora.lerp(s, e, w), lambda s, e: ref(s, e, w), [(3, 4), (4,)], gradgrad=True)
    check_op(lambda s, e, w: s.lerp(e, w), ref, [(2, 3), (2, 3), (3,)], gradgrad=True)
    check_op(lambda s, e, w: tensora.lerp(s, e, w), ref, [(2, 3), (), ()])
    # weight 1 gives exactly `end` (PyTorch's formula switches to end - (end - start)(1 - w)).
    s, e = tensora.tensor([0.1, 1e8]), tensora.tensor([0.3, -7.0])
    assert tensora.lerp(s, e, 1.0).tolist() == e.tolist()
    assert tensora.lerp(s, e, tensora.ones(2)).tolist() == e.tolist()


# -- in place --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["abs", "log1p", "expm1", "rsqrt", "reciprocal", "sin", "cos", "erf", "sign",
                                  "floor", "ceil", "trunc", "round", "frac", "square"])
def test_in_place_variants(name):
    a = np.array([0.3, -1.7, 2.5])
    x = tensora.tensor(a, dtype=tensora.float64)
    ptr = x.data_ptr()
    assert getattr(x, name + "_")() is x and x.data_ptr() == ptr
    np.testing.assert_allclose(x.numpy(), getattr(tensora, name)(tensora.tensor(a, dtype=tensora.float64)).numpy())


def test_clamp_and_lerp_in_place_with_gradient():
    x = tensora.tensor([-2.0, 0.5, 2.0], dtype=tensora.float64, requires_grad=True)
    y = x * 2
    y.clamp_(-1, 1)
    y.clip_(max=0.5)
    y.lerp_(tensora.zeros(3, dtype=tensora.float64), 0.5)
    y.sum().backward()
    assert y.tolist() == [-0.5, 0.25, 0.25] and x.grad.tolist() == [0.0, 0.0, 0.0]
    z = tensora.tensor([1.0, 2.0])
    z.clamp_min_(1.5)
    z.clamp_max_(1.75)
    assert z.tolist() == [1.5, 1.75]
    with pytest.raises(tensora.DTypeError, match="can't be cast"):
        tensora.tensor([1, 2]).sin_()


def test_gradgradcheck_of_erf_at_wide_range():
    x = tensora.tensor(np.linspace(-4, 4, 9), dtype=tensora.float64, requires_grad=True)
    assert gradcheck(tensora.erf, [x]) and gradgradcheck(tensora.erf, [x])
