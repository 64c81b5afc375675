"""gradcheck and gradgradcheck themselves (tensora/autograd/gradcheck.py).

They must accept correct backward rules (True) and reject wrong ones (an
AutogradError naming the mismatch, or False with raise_exception=False), as
torch.autograd.gradcheck does.
"""

import numpy as np
import pytest

import tensora
from tensora import AutogradError
from tensora.autograd import Function, gradcheck, gradgradcheck


def f64(shape, seed=0, requires_grad=True):
    data = np.random.default_rng(seed).standard_normal(shape)
    return tensora.tensor(data, dtype=tensora.float64, requires_grad=requires_grad)


class WrongCube(Function):
    """x**3 with a backward off by a factor: 2x^2 instead of 3x^2."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * x * g


class DetachedCube(Function):
    """x**3 with a correct first derivative whose own derivative is lost (backward uses detached x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        xd = x.detach()
        return 3 * xd * xd * g


class WrongSecondInput(Function):
    """a * b whose gradient for b is wrong (and for a right)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g * b, g * b


def test_gradcheck_accepts_correct_ops():
    a, b = f64((3, 4), 0), f64((4, 2), 1)
    assert gradcheck(lambda a, b: a @ b, [a, b])
    assert gradcheck(lambda a: (a.exp() * a).sum(1), [a])
    assert gradcheck(lambda a: a / (1 + a * a), a)  # a single tensor instead of a list


def test_gradcheck_handles_broadcasting_scalars_empty_and_non_contiguous_inputs():
    assert gradcheck(lambda a, b: a * b + b, [f64((2, 3), 0), f64((3,), 1)])
    assert gradcheck(lambda s: s * s, [f64((), 2)])
    assert gradcheck(lambda e: e * 2, [f64((0, 3), 3)])
    t = f64((4, 3), 4).detach().T.requires_grad_()
    assert not t.is_contiguous()
    assert gradcheck(lambda t: (t * t).sum(0), [t])


def test_gradcheck_ignores_non_tensor_and_non_differentiable_inputs():
    a = f64((3,), 0)
    const = f64((3,), 1, requires_grad=False)
    assert gradcheck(lambda a, c, k: a * c * k, [a, const, 2.5])


def test_gradcheck_with_multiple_outputs():
    a = f64((3,), 0)
    assert gradcheck(lambda a: (a * 2, a * a), [a])


def test_gradcheck_does_not_touch_the_callers_tensors():
    a = f64((3,), 0)
    before = a.detach().numpy().copy()
    gradcheck(lambda a: a * a, [a])
    np.testing.assert_array_equal(a.detach().numpy(), before)
    assert a.grad is None


def test_gradcheck_raises_on_a_wrong_backward():
    with pytest.raises(AutogradError, match=r"Jacobian mismatch for output 0 with respect to input 0"):
        gradcheck(WrongCube.apply, [f64((3,), 0)])
    assert gradcheck(WrongCube.apply, [f64((3,), 0)], raise_exception=False) is False


def test_gradcheck_names_the_wrong_input():
    with pytest.raises(AutogradError, match="input 1"):
        gradcheck(WrongSecondInput.apply, [f64((3,), 0), f64((3,), 1)])


def test_gradcheck_needs_float64():
    x = tensora.randn(3, requires_grad=True)
    with pytest.raises(AutogradError, match="float64.*float32"):
        gradcheck(lambda t: t * 2, [x])


def test_tolerances_are_honoured():
    # A 1e-3 relative error in the gradient passes a loose rtol and fails a tight one.
    class SlightlyOff(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2.002

    x = f64((3,), 0)
    assert gradcheck(SlightlyOff.apply, [x], rtol=1e-2, atol=0)
    assert not gradcheck(SlightlyOff.apply, [x], rtol=1e-4, atol=0, raise_exception=False)


def test_gradgradcheck_accepts_correct_double_backward():
    a, b = f64((2, 3), 0), f64((3, 2), 1)
    assert gradgradcheck(lambda a, b: a @ b, [a, b])
    assert gradgradcheck(lambda a: (a.exp() / a.exp().sum(-1, keepdim=True)), [a])
    assert gradgradcheck(lambda a: (a * a * a).sum(), [a])


def test_gradgradcheck_with_given_grad_outputs():
    a = f64((3,), 0)
    go = f64((3,), 5, requires_grad=False)
    assert gradgradcheck(lambda a: a * a * a, [a], [go])


def test_gradgradcheck_rejects_a_non_differentiable_backward():
    x = f64((3,), 0)
    assert gradcheck(DetachedCube.apply, [x])  # first order is right...
    with pytest.raises(AutogradError, match="Jacobian mismatch"):
        gradgradcheck(DetachedCube.apply, [x])  # ...but the second is not
    assert gradgradcheck(DetachedCube.apply, [x], raise_exception=False) is False



def test_gradgradcheck_checks_the_backward_not_the_forward():
    # As in torch: it differentiates the backward function; a wrong but smooth backward is
    # self-consistent at second order (gradcheck is what catches it).
    assert gradgradcheck(WrongCube.apply, [f64((3,), 0)])


def test_zero_dim_inputs_and_outputs_keep_their_shape():
    seen = []

    def fn(s, v):
        seen.append(tuple(s.shape))
        return (s * v).sum()  # a 0-d output

    assert gradcheck(fn, [f64((), 0), f64((3,), 1)])
    assert set(seen) == {()}
    assert gradgradcheck(fn, [f64((), 0), f64((3,), 1)])
