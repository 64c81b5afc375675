"""Activations (tensora/ops/activation.py) against NumPy float64 formulas, gradients by gradcheck.

References are the formulas PyTorch documents, written in NumPy (erf from
math.erf). Every activation gets gradcheck and gradgradcheck; conventions at
kinks (relu, leaky_relu, elu at 0) and in the tails are checked exactly.
"""

import math

import numpy as np
import pytest
from optest import check_op

import tensora
from tensora.autograd import gradgradcheck

np_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def _softplus(a, beta=1.0, threshold=20.0):
    return np.where(a * beta > threshold, a, np.log1p(np.exp(a * beta)) / beta)


ACTIVATIONS = {
    "sigmoid": (tensora.sigmoid, _sigmoid),
    "tanh": (tensora.tanh, np.tanh),
    "relu": (tensora.relu, lambda a: np.maximum(a, 0)),
    "leaky_relu": (lambda x: tensora.leaky_relu(x, 0.2), lambda a: np.where(a > 0, a, 0.2 * a)),
    "elu": (lambda x: tensora.elu(x, alpha=1.5), lambda a: np.where(a > 0, a, 1.5 * np.expm1(a))),
    "gelu": (tensora.gelu, lambda a: 0.5 * a * (1 + np_erf(a / math.sqrt(2)))),
    "gelu_tanh": (lambda x: tensora.gelu(x, approximate="tanh"),
                  lambda a: 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3)))),
    "silu": (tensora.silu, lambda a: a * _sigmoid(a)),
    "softplus": (lambda x: tensora.softplus(x, beta=2.0, threshold=3.0), lambda a: _softplus(a, 2.0, 3.0)),
    "mish": (tensora.mish, lambda a: a * np.tanh(np.log1p(np.exp(a)))),
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_forward_gradients_and_second_derivatives(name):
    fn, ref = ACTIVATIONS[name]
    check_op(fn, ref, [(3, 4)], low=-3.0, high=3.0, gradgrad=True, atol=1e-12, rtol=1e-12)
    check_op(fn, ref, [()], low=0.3, high=2.0, gradgrad=True)
    check_op(lambda x: fn(x.T[::2]), lambda a: ref(a.T[::2]), [(5, 3)], low=-2.0, high=2.0)
    assert fn(tensora.ones(0, 4)).shape == (0, 4)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [tensora.float32, tensora.float16, tensora.bfloat16])
def test_lower_precision_dtypes(name, dtype):
    fn, ref = ACTIVATIONS[name]
    x = tensora.tensor(np.linspace(-4, 4, 33), dtype=dtype, requires_grad=True)
    out = fn(x)
    assert out.dtype is dtype
    tol = {tensora.float32: 1e-6, tensora.float16: 2 ** -10, tensora.bfloat16: 2 ** -7}[dtype]
    np.testing.assert_allclose(out.detach().float().numpy(), ref(x.detach().float().numpy().astype(np.float64)),
                               rtol=tol, atol=tol)
    out.sum().backward()
    assert x.grad.dtype is dtype and np.isfinite(x.grad.float().numpy()).all()


def test_gradients_at_kinks_follow_torch():
    x = tensora.tensor([-1.0, 0.0, -0.0, 1.0], dtype=tensora.float64, requires_grad=True)
    for fn, want in [(tensora.relu, [0.0, 0.0, 0.0, 1.0]),
                     (lambda t: tensora.leaky_relu(t, 0.1), [0.1, 0.1, 0.1, 1.0]),
                     (lambda t: tensora.elu(t, alpha=2.0), [2 * math.exp(-1), 2.0, 2.0, 1.0])]:
        x.grad = None
        fn(x).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-15)


def test_relu_gradient_drops_non_finite_gradients_where_the_output_is_zero():
    # torch's threshold_backward: 0 wherever y <= 0, whatever g holds there (a product g * mask would give NaN).
    x = tensora.tensor([-1.0, 0.0, 2.0, 3.0, -4.0], requires_grad=True)
    g = tensora.tensor([np.inf, np.nan, np.inf, 1.5, -np.inf])
    tensora.relu(x).backward(g)
    np.testing.assert_array_equal(x.grad.numpy(), np.float32([0.0, 0.0, np.inf, 1.5, 0.0]))
    x.grad = None
    tensora.relu(x).backward(tensora.tensor([2.0, 3.0, 4.0, -5.0, 6.0]))
    np.testing.assert_array_equal(x.grad.numpy(), np.float32([0.0, 0.0, 4.0, -5.0, 0.0]))
    # Its own gradient is itself: relu's second derivative in g, by finite differences.
    xd = tensora.tensor([-1.0, 0.5, 2.0], dtype=tensora.float64, requires_grad=True)
    assert gradgradcheck(tensora.relu, [xd])


def test_tails_do_not_overflow():
    big = tensora.tensor([-1000.0, -50.0, 50.0, 1000.0], dtype=tensora.float64)
    assert tensora.sigmoid(big).tolist() == [0.0, _sigmoid(-50.0), 1.0, 1.0]
    assert tensora.silu(big).tolist()[2:] == [50.0, 1000.0] and tensora.silu(big).tolist()[0] == -0.0
    assert tensora.mish(big).tolist()[2:] == [50.0, 1000.0]
    assert tensora.softplus(big).tolist() == [0.0, _softplus(-50.0), 50.0, 1000.0]
    assert tensora.gelu(big).tolist() == [-0.0, -0.0, 50.0, 1000.0]
    assert tensora.elu(big).tolist()[0] == -1.0 and tensora.tanh(big).tolist() == [-1.0, -1.0, 1.0, 1.0]
    x = tensora.tensor([-1000.0, 1000.0], dtype=tensora.float64, requires_grad=True)
    (tensora.sigmoid(x) + tensora.softplus(x) + tensora.mish(x) + tensora.silu(x)).sum().backward()
    assert x.grad.tolist() == [0.0, 3.0]


def test_softplus_threshold_returns_x_with_unit_gradient():
    x = tensora.tensor([9.0, 11.0], dtype=tensora.float64, requires_grad=True)
    out = tensora.softplus(x, beta=2.0, threshold=20.0)
    assert out.tolist()[1] == 11.0 and out.tolist()[0] == pytest.approx(np.log1p(np.exp(18.0)) / 2, rel=1e-15)
    out.sum().backward()
    assert x.grad.tolist() == [pytest.approx(_sigmoid(18.0), rel=1e-15), 1.0]


def test_relu_keeps_integers_and_refuses_bool():
    assert tensora.relu(tensora.tensor([-2, 3], dtype=tensora.int8)).tolist() == [0, 3]
    assert tensora.relu(tensora.tensor([-2, 3], dtype=tensora.int8)).dtype is tensora.int8
    assert tensora.sigmoid(tensora.tensor([0])).dtype is tensora.float32
    with pytest.raises(tensora.DTypeError, match="bool"):
        tensora.relu(tensora.tensor([True]))
    with pytest.raises(ValueError, match="approximate"):
        tensora.gelu(tensora.ones(2), approximate="erf")


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "elu", "silu", "mish"])
def test_inplace_flag_and_in_place_functions(name):
    fn = getattr(tensora, name)
    a = np.array([-1.5, 0.5, 2.0])
    x = tensora.tensor(a)
    assert fn(x, inplace=True) is x
    np.testing.assert_allclose(x.numpy(), fn(tensora.tensor(a)).numpy())
    # Through a graph: the in-place result keeps the right gradient.
    leaf = tensora.tensor(a, dtype=tensora.float64, requires_grad=True)
    y = leaf * 1
    fn(y, inplace=True).sum().backward()
    ref = tensora.tensor(a, dtype=tensora.float64, requires_grad=True)
    fn(ref).sum().backward()
    np.testing.assert_allclose(leaf.grad.numpy(), ref.grad.numpy())


def test_in_place_methods_and_functions():
    x = tensora.tensor([-1.0, 0.0, 2.0])
    x.relu_()
    assert x.tolist() == [0.0, 0.0, 2.0]
    x.sigmoid_()
    assert x.tolist() == pytest.approx([0.5, 0.5, _sigmoid(2.0)])
    x.tanh_()
    y = tensora.tensor([-1.0, 2.0])
    assert tensora.relu_(y) is y and y.tolist() == [0.0, 2.0]
    z = tensora.tensor([-1.0, 2.0])
    tensora.leaky_relu_(z, 0.5)
    tensora.elu_(z, alpha=1.0)
    assert z.tolist() == pytest.approx([math.expm1(-0.5), 2.0])
    with pytest.raises(tensora.DTypeError, match="can't be cast"):
        tensora.tensor([1, 2]).sigmoid_()
