"""Arithmetic (tensora/ops/elementwise.py) against NumPy float64 references, gradients by gradcheck.

Forward values come from NumPy on float64 copies; gradients from central
differences (gradcheck, gradgradcheck). Dtype results follow PyTorch's
promotion (checked against the table in tensora/dtypes.py); torch itself is
compared in test_elementwise_torch.py.
"""

import numpy as np
import pytest
from optest import check_op

import tensora
from tensora.autograd import gradcheck

BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
    "pow": (lambda a, b: a ** b, np.power),
}
# Broadcasting, 0-d against a matrix, and an empty tensor.
SHAPES = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 4)), ((), (2, 3)), ((0, 3), (3,))]


@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_forward_and_gradients(name, shapes):
    fn, ref = BINARY[name]
    # pow needs a positive base for d/d(exponent) = a^b log a.
    low, high = (0.5, 2.0) if name in ("pow", "div") else (None, None)
    check_op(fn, ref, list(shapes), low=low, high=high, gradgrad=name in ("pow", "div", "mul") and
             shapes == SHAPES[1])


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_with_python_scalars_on_both_sides(name):
    fn, ref = BINARY[name]
    check_op(lambda a: fn(a, 1.5), lambda a: ref(a, 1.5), [(2, 3)], low=0.5, high=2.0)
    check_op(lambda a: fn(1.5, a), lambda a: ref(1.5, a), [(2, 3)], low=0.5, high=2.0)


def test_binary_on_non_contiguous_inputs():
    check_op(lambda a, b: a.T * b[:, ::2], lambda a, b: a.T * b[:, ::2], [(4, 3), (3, 8)])
    check_op(lambda a, b: a.T / b[1:], lambda a, b: a.T / b[1:], [(4, 3), (4, 4)], low=0.5, high=2)


@pytest.mark.parametrize("name", ["neg", "exp", "log", "sqrt"])
def test_unary_forward_and_gradients(name):
    ref = {"neg": np.negative, "exp": np.exp, "log": np.log, "sqrt": np.sqrt}[name]
    fn = getattr(tensora, name)
    check_op(fn, ref, [(3, 4)], low=0.2, high=3.0, gradgrad=True)
    check_op(fn, ref, [()], low=0.2, high=3.0)
    check_op(lambda x: fn(x.T[::2]), lambda a: ref(a.T[::2]), [(3, 4)], low=0.2, high=3.0)
    assert getattr(tensora.ones(0, 2), name)().shape == (0, 2)


def test_alpha_of_add_and_sub():
    check_op(lambda a, b: tensora.add(a, b, alpha=2.5), lambda a, b: a + 2.5 * b, [(2, 3), (3,)])
    check_op(lambda a, b: a.sub(b, alpha=-2), lambda a, b: a + 2 * b, [(2, 3), (2, 3)])


# -- dtypes -------------------------------------------------------------------------

def test_promotion_follows_torch():
    i, f16 = tensora.tensor([1, 2]), tensora.tensor([1.0, 2.0], dtype=tensora.float16)
    assert (i + 1).dtype is tensora.int64 and (i + 1.5).dtype is tensora.float32
    assert (2.5 - i).dtype is tensora.float32 and (2.5 * f16).dtype is tensora.float16
    assert (i / i).dtype is tensora.float32 and (i / i).tolist() == [1.0, 1.0]
    assert (f16 * tensora.tensor(2.0, dtype=tensora.float64)).dtype is tensora.float16
    assert (i ** 2).dtype is tensora.int64 and (i ** 2).tolist() == [1, 4]
    assert (i ** -1.0).tolist() == [1.0, 0.5]
    with pytest.raises(tensora.DTypeError, match="negative integer powers"):
        i ** -1


@pytest.mark.parametrize("name", ["exp", "log", "sqrt"])
def test_transcendental_of_int_is_default_float(name):
    out = getattr(tensora, name)(tensora.tensor([1, 2, 4]))
    assert out.dtype is tensora.float32
    np.testing.assert_allclose(out.numpy(), getattr(np, name)(np.array([1.0, 2.0, 4.0])), rtol=1e-6)
    assert tensora.exp(tensora.tensor([True, False])).dtype is tensora.float32


@pytest.mark.parametrize("dtype", [tensora.float16, tensora.bfloat16])
@pytest.mark.parametrize("name", ["exp", "log", "sqrt"])
def test_low_precision_math_is_float32_math_rounded_once(name, dtype):
    x = tensora.tensor(np.linspace(0.1, 4, 50), dtype=dtype)
    out = getattr(tensora, name)(x)
    assert out.dtype is dtype
    want = getattr(np, name)(x.float().numpy()).astype(dtype.np_dtype)
    np.testing.assert_array_equal(out.numpy(), want)


def test_neg_of_bool_is_refused():
    with pytest.raises(tensora.DTypeError, match="bool"):
        -tensora.tensor([True])


# -- floor division, remainder, fmod ------------------------------------------------

def test_floor_divide_rounds_like_python():
    a = np.array([7.0, -7.0, 1.0, 5.5, -0.5])
    b = np.array([2.0, 2.0, 0.1, -2.0, 3.0])
    out = tensora.tensor(a, dtype=tensora.float64) // tensora.tensor(b, dtype=tensora.float64)
    assert out.tolist() == [x // y for x, y in zip(a.tolist(), b.tolist())]  # 1 // 0.1 == 9, not 10
    i = tensora.tensor([7, -7, 3])
    assert (i // 2).tolist() == [3, -4, 1] and (7 // i).tolist() == [1, -1, 2]
    assert tensora.floor_divide(i, 2.5).dtype is tensora.float32
    assert tensora.div(i, -2, rounding_mode="trunc").tolist() == [-3, 3, -1]
    f = tensora.tensor([1.0, -1.0]) // 0.0
    assert f.tolist() == [float("inf"), float("-inf")]


@pytest.mark.parametrize("name,ref", [("remainder", np.remainder), ("fmod", np.fmod)])
def test_remainder_and_fmod(name, ref):
    a = np.array([[5.5, -5.5, 3.0], [-3.0, 0.25, 7.0]])
    b = np.array([2.0, -2.0, 0.75])
    fn = getattr(tensora, name)
    out = fn(tensora.tensor(a, dtype=tensora.float64), tensora.tensor(b, dtype=tensora.float64))
    np.testing.assert_array_equal(out.numpy(), ref(a, b))
    i = np.array([-7, 7, -3])
    assert fn(tensora.tensor(i), 3).tolist() == ref(i, 3).tolist()
    assert (tensora.tensor(i) % 3).tolist() == [x % 3 for x in i.tolist()]
    assert (7 % tensora.tensor([2, -3])).tolist() == [1, -2]


@pytest.mark.parametrize("name", ["remainder", "fmod"])
def test_remainder_gradients(name):
    # Away from the jumps: d/da = 1, d/db = -floor(a/b) (remainder) or -trunc(a/b) (fmod).
    a = np.array([[2.3, -2.3, 5.1], [-4.4, 0.7, 3.3]])
    b = np.array([0.9, -1.3, 2.2])
    fn = getattr(tensora, name)
    ta = tensora.tensor(a, dtype=tensora.float64, requires_grad=True)
    tb = tensora.tensor(b, dtype=tensora.float64, requires_grad=True)
    assert gradcheck(fn, [ta, tb])
    fn(ta, tb).sum().backward()
    q = np.floor(a / b) if name == "remainder" else np.trunc(a / b)
    np.testing.assert_allclose(ta.grad.numpy(), np.ones_like(a))
    np.testing.assert_allclose(tb.grad.numpy(), -q.sum(0))


def test_rounded_division_has_zero_gradients_of_the_input_shapes():
    a = tensora.tensor([[1.5, 2.5]], dtype=tensora.float64, requires_grad=True)
    b = tensora.tensor([[0.5], [2.0]], dtype=tensora.float64, requires_grad=True)
    (a // b).sum().backward()
    assert a.grad.shape == (1, 2) and b.grad.shape == (2, 1)
    assert not a.grad.numpy().any() and not b.grad.numpy().any()


def test_integer_division_by_zero_raises():
    for fn in (lambda t: t // 0, lambda t: t % 0, lambda t: tensora.fmod(t, 0),
               lambda t: tensora.div(t, tensora.tensor([1, 0]), rounding_mode="trunc")):
        with pytest.raises(ZeroDivisionError):
            fn(tensora.tensor([1, 2]))


@pytest.mark.parametrize("dtype", [tensora.float16, tensora.bfloat16])
def test_low_precision_floor_divide_and_remainder(dtype):
    a = tensora.tensor([5.5, -5.5, 3.25], dtype=dtype)
    assert (a // 2).dtype is dtype and (a // 2).tolist() == [2.0, -3.0, 1.0]
    assert (a % 2).tolist() == [1.5, 0.5, 1.25]


# -- where ---------------------------------------------------------------------------

def test_where_forward_and_gradients():
    cond = tensora.tensor([[True, False, True]])
    check_op(lambda a, b: tensora.where(cond, a, b), lambda a, b: np.where(cond.numpy(), a, b), [(2, 3), (3,)])
    out = tensora.where(cond, tensora.tensor([1, 2, 3]), 0.5)
    assert out.dtype is tensora.float32 and out.tolist() == [[1.0, 0.5, 3.0]]


def test_where_method_takes_self_as_the_values_where_true():
    # torch's Tensor.where(condition, y) is where(condition, self, y); the function is not a method.
    x = tensora.tensor([1.0, 2.0, 3.0])
    cond = tensora.tensor([True, False, True])
    assert x.where(cond, -1.0).tolist() == [1.0, -1.0, 3.0]
    assert x.where(condition=cond, other=x * 10).tolist() == [1.0, 20.0, 3.0]
    assert tensora.where(cond, x, 0).tolist() == [1.0, 0.0, 3.0]


# -- comparisons ---------------------------------------------------------------------

@pytest.mark.parametrize("op,ref", [("eq", np.equal), ("ne", np.not_equal), ("lt", np.less),
                                    ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal)])
def test_comparisons_give_bool_without_grad(op, ref):
    a = tensora.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    b = tensora.tensor([[2.0], [1.0]])
    out = getattr(a, op)(b)
    assert out.dtype is tensora.bool and not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), ref(a.detach().numpy(), b.numpy()))
    assert getattr(tensora.tensor([1, 2]), op)(1.5).tolist() == ref(np.array([1, 2]), 1.5).tolist()


# -- in place -----------------------------------------------------------------------

def test_in_place_arithmetic_writes_into_the_tensor():
    x = tensora.tensor([4.0, 9.0])
    ptr = x.data_ptr()
    x += 1
    x *= 2
    x -= tensora.tensor([1.0, 1.0])
    x /= 3
    x **= 2
    assert x.data_ptr() == ptr and x.tolist() == pytest.approx([9.0, 361.0 / 9])
    i = tensora.tensor([7, -7])
    i //= 2
    assert i.tolist() == [3, -4]
    i %= 3
    assert i.tolist() == [0, 2] and i.dtype is tensora.int64
    for name in ("exp_", "log_", "sqrt_", "neg_"):
        y = tensora.tensor([2.0])
        getattr(y, name)()
        assert y.item() == pytest.approx(getattr(np, name[:-1].replace("neg", "negative"))(2.0))


def test_in_place_result_of_a_higher_category_is_refused():
    with pytest.raises(tensora.DTypeError, match="float32 can't be cast to the desired output type int64"):
        tensora.tensor([1, 2]).div_(2)
    with pytest.raises(tensora.DTypeError, match="int64"):
        tensora.tensor([1, 2]).exp_()


def test_in_place_in_a_graph_gives_the_right_gradient():
    x = tensora.tensor([0.5, 1.5], dtype=tensora.float64, requires_grad=True)
    y = x * 1
    y.exp_()
    y.mul_(x)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp(x.detach().numpy()) * (x.detach().numpy() + 1))
    with pytest.raises(tensora.AutogradError, match="leaf"):
        x.exp_()


# -- errors ---------------------------------------------------------------------------

def test_broadcast_mismatch_names_the_shapes():
    a, b = tensora.ones(2, 3), tensora.ones(4)
    for fn in (lambda: a + b, lambda: a // b, lambda: tensora.remainder(a, b), lambda: a ** b):
        with pytest.raises(tensora.ShapeError, match=r"\[2, 3\], \[4\]"):
            fn()
    with pytest.raises(ValueError, match="rounding_mode"):
        tensora.div(a, a, rounding_mode="round")
