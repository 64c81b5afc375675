"""Custom tensora.autograd.Function (tensora/autograd/function.py), as torch.autograd.Function.

Expected gradients are the hand-derived ones for each function; gradcheck
(finite differences, float64) backs them up where the math is less obvious.
"""

import gc
import weakref

import numpy as np
import pytest

import tensora
from tensora import AutogradError
from tensora.autograd import Context, Function, Op, grad, gradcheck, gradgradcheck


def leaf(values, dtype=None):
    return tensora.tensor(values, dtype=dtype, requires_grad=True)


def close(t, expected, **kw):
    np.testing.assert_allclose(np.asarray(t.detach().numpy(), dtype=np.float64), expected, **kw)


class ScaledSquare(Function):
    """k * x**2 with a non-tensor argument k."""

    @staticmethod
    def forward(ctx, x, k):
        ctx.save_for_backward(x)
        ctx.k = k
        ctx.seen_needs = ctx.needs_input_grad
        return x * x * k

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * ctx.k * x * g, None


class Exp(Function):
    """Saves its output, like the built-in exp."""

    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y


class SumAndProduct(Function):
    """Two outputs: a + b and a * b."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a + b, a * b

    @staticmethod
    def backward(ctx, g_sum, g_prod):
        a, b = ctx.saved_tensors
        return g_sum + g_prod * b, g_sum + g_prod * a


def test_forward_backward_and_non_tensor_argument():
    x = leaf([1.0, 2.0])
    y = ScaledSquare.apply(x, 3.0)
    close(y, [3.0, 12.0])
    assert y.grad_fn.name() == "ScaledSquareBackward"
    assert y.requires_grad and not y.is_leaf
    y.sum().backward()
    close(x.grad, [6.0, 12.0])


def test_needs_input_grad():
    x = leaf([1.0])
    c = tensora.tensor([2.0])
    ScaledSquare.apply(x, 3.0)
    y = ScaledSquare.apply(x, 3.0)
    assert y.grad_fn.ctx.seen_needs == (True, False)

    class Mul(Function):
        @staticmethod
        def forward(ctx, a, b, flag):
            ctx.seen = ctx.needs_input_grad
            return a * b

        @staticmethod
        def backward(ctx, g):
            a_needed, b_needed, _ = ctx.needs_input_grad
            return (g * 2 if a_needed else None), (g * 3 if b_needed else None), None

    out = Mul.apply(c, x, "flag")
    assert out.grad_fn.ctx.seen == (False, True, False)
    out.sum().backward()
    close(x.grad, [3.0])


def test_function_under_no_grad_records_nothing():
    x = leaf([1.0])
    with tensora.no_grad():
        y = ScaledSquare.apply(x, 2.0)
    assert not y.requires_grad and y.grad_fn is None


def test_forward_runs_without_recording():
    seen = []

    class Probe(Function):
        @staticmethod
        def forward(ctx, x):
            inner = x * 2
            seen.append((tensora.is_grad_enabled(), inner.requires_grad))
            return inner

        @staticmethod
        def backward(ctx, g):
            return g * 2

    x = leaf([1.0])
    y = Probe.apply(x)
    assert seen == [(False, False)]
    assert y.grad_fn.name() == "ProbeBackward"


def test_saved_output_and_double_backward():
    x = leaf([0.5, -1.0])
    y = Exp.apply(x)
    (g,) = grad(y.sum(), x, create_graph=True)
    close(g, np.exp([0.5, -1.0]))
    (gg,) = grad(g.sum(), x)
    close(gg, np.exp([0.5, -1.0]))
    assert gradcheck(Exp.apply, [tensora.tensor([0.3, -0.7], dtype=tensora.float64, requires_grad=True)])
    assert gradgradcheck(Exp.apply, [tensora.tensor([0.3, -0.7], dtype=tensora.float64, requires_grad=True)])


def test_saved_tensors_are_freed_after_backward():
    x = leaf([1.0])
    y = ScaledSquare.apply(x, 1.0)
    y.sum().backward()
    with pytest.raises(AutogradError, match="retain_graph"):
        y.grad_fn.ctx.saved_tensors


def test_multiple_outputs():
    a = leaf([1.0, 2.0])
    b = leaf([3.0, 4.0])
    s, p = SumAndProduct.apply(a, b)
    assert s.grad_fn is p.grad_fn
    assert (s.output_nr, p.output_nr) == (0, 1)
    (s.sum() + 2 * p.sum()).backward()
    close(a.grad, [1 + 2 * 3.0, 1 + 2 * 4.0])
    close(b.grad, [1 + 2 * 1.0, 1 + 2 * 2.0])


def test_unused_output_gets_a_zero_gradient():
    # torch materializes the gradient of an unused output as zeros (ctx.set_materialize_grads default).
    a = leaf([1.0, 2.0])
    b = leaf([3.0, 4.0])
    s, _ = SumAndProduct.apply(a, b)
    s.sum().backward()
    close(a.grad, [1.0, 1.0])
    close(b.grad, [1.0, 1.0])


def test_mark_non_differentiable():
    class SortWithIndex(Function):
        @staticmethod
        def forward(ctx, x):
            order = np.argsort(x.detach().numpy())
            idx = tensora.tensor(order)
            doubled = x * 2
            flag = x * 0
            ctx.mark_non_differentiable(idx, flag)
            return doubled, idx, flag

        @staticmethod
        def backward(ctx, g, g_idx, g_flag):
            return g * 2

    x = leaf([3.0, 1.0, 2.0])
    doubled, idx, flag = SortWithIndex.apply(x)
    assert doubled.requires_grad
    assert not idx.requires_grad and idx.dtype is tensora.int64
    assert not flag.requires_grad and flag.grad_fn is None
    doubled.sum().backward()
    close(x.grad, [2.0, 2.0, 2.0])


def test_returning_an_input_unchanged_does_not_rewrite_it():
    class Identity(Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, g):
            return g * 3

    x = leaf([1.0, 2.0])
    y = Identity.apply(x)
    assert y is not x and x.is_leaf and x.grad_fn is None
    assert y.data_ptr() == x.data_ptr()
    y.sum().backward()
    close(x.grad, [3.0, 3.0])


def test_keyword_arguments_reach_forward():
    class Scale(Function):
        @staticmethod
        def forward(ctx, x, scale=1.0):
            ctx.scale = scale
            return x * scale

        @staticmethod
        def backward(ctx, g):
            return g * ctx.scale

    x = leaf([1.0, 2.0])
    Scale.apply(x, scale=4.0).sum().backward()
    close(x.grad, [4.0, 4.0])


def test_backward_returning_too_few_gradients_is_an_error():
    class Bad(Function):
        @staticmethod
        def forward(ctx, a, b):
            return a * b

        @staticmethod
        def backward(ctx, g):
            return g

    with pytest.raises(AutogradError, match="1 gradients for 2 inputs"):
        Bad.apply(leaf([1.0]), leaf([2.0])).sum().backward()


def test_backward_returning_too_many_gradients_is_an_error():
    class Bad(Function):
        @staticmethod
        def forward(ctx, a):
            return a * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2, g * 3

    with pytest.raises(AutogradError, match="2 gradients for 1 input"):
        Bad.apply(leaf([1.0])).sum().backward()


def test_backward_returning_a_wrong_shape_is_an_error():
    class Bad(Function):
        @staticmethod
        def forward(ctx, x):
            return x.sum()

        @staticmethod
        def backward(ctx, g):
            return g

    with pytest.raises(AutogradError, match=r"shape \[\] for an input of shape \[2\]"):
        Bad.apply(leaf([1.0, 2.0])).backward()


def test_gradient_of_function_is_cast_to_the_input_dtype():
    class Up(Function):
        @staticmethod
        def forward(ctx, x):
            return x.double() * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2  # float64: the engine casts it back to the input's float16

    x = leaf([1.0, 2.0], dtype=tensora.float16)
    Up.apply(x).sum().backward()
    assert x.grad.dtype is tensora.float16
    close(x.grad, [2.0, 2.0])


def test_function_in_a_larger_graph_with_gradcheck():
    rng = np.random.default_rng(0)
    a = tensora.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    b = tensora.tensor(rng.standard_normal((2, 3)), requires_grad=True)

    def f(a, b):
        s, p = SumAndProduct.apply(a * 2, b)
        return (ScaledSquare.apply(s, 0.5) + p.exp()).sum(1)

    assert gradcheck(f, [a, b])
    assert gradgradcheck(f, [a, b])


def test_saving_an_output_makes_no_reference_cycle():
    enabled = gc.isenabled()
    gc.disable()
    try:
        x = leaf([0.5, 1.0])
        y = Exp.apply(x)
        node = weakref.ref(y.grad_fn)
        del y
        assert node() is None
    finally:
        if enabled:
            gc.enable()


# -- Op.apply: the lean path (1-2 CPU inputs) against the general one ---------------------------

class _Probe(Op):
    """Unregistered (no name): records what forward was given, returns a + b (or a)."""

    @staticmethod
    def forward(ctx, a, b=None, scale=1):
        ctx.seen = (ctx.needs_input_grad, type(b).__name__)
        ctx.save(a)
        return a * scale if b is None else a + b

    @staticmethod
    def backward(ctx, g):
        need = ctx.needs_input_grad
        return (g, g if len(need) > 1 and need[1] else None)[:len(need)]


@pytest.mark.parametrize("a_grad,b_grad", [(True, False), (False, True), (True, True)])
def test_lean_path_needs_input_grad_for_two_tensors(a_grad, b_grad):
    a = tensora.tensor([1.0, 2.0], requires_grad=a_grad)
    b = tensora.tensor([3.0, 4.0], requires_grad=b_grad)
    y = _Probe.apply(a, b)
    assert y.grad_fn.ctx.seen == ((a_grad, b_grad), "ndarray")
    y.sum().backward()
    for t, wanted in ((a, a_grad), (b, b_grad)):
        assert (t.grad is not None) == wanted


def test_lean_path_with_a_number_and_without_recording():
    x = leaf([1.0, 2.0])
    assert _Probe.apply(x, 2.0).grad_fn.ctx.seen == ((True, False), "float")  # passed as it is

    class Promoted(_Probe):
        promote = True  # a Python number becomes a NumPy scalar of the tensor's dtype

    assert Promoted.apply(x, 2.0).grad_fn.ctx.seen == ((True, False), "float32")
    assert Promoted.apply(tensora.tensor([1, 2]), 0.5).dtype is tensora.float32  # a higher category
    with tensora.no_grad():
        z = _Probe.apply(x, scale=3)
    assert z.grad_fn is None and not z.requires_grad and z.tolist() == [3.0, 6.0]
    # Without recording, save() keeps nothing: no array outlives the call through a context.
    ctx = Context()
    ctx.save(np.ones(2))
    assert ctx._raw == ()


def test_lean_path_matches_the_general_path():
    # Reference: the general path (_apply), which the lean path must agree with exactly.
    from tensora.autograd.function import _apply
    from tensora.ops.elementwise import Add, Mul
    from tensora.ops.index import GetItem
    from tensora.ops.reduce import Sum
    from tensora.ops.shape import Reshape

    x = tensora.tensor([[1.0, -2.0], [3.5, 4.0]])
    g = leaf([[0.5, 1.5], [2.5, -1.0]])
    cases = [(Add, (x, g), {}), (Mul, (x, 2), {}), (Mul, (g, True), {}), (Reshape, (g,), {"shape": (4,)}),
             (GetItem, (x,), {"key": (0,)}), (Sum, (g,), {"dims": (0, 1), "keepdim": False,
                                                        "dtype": np.dtype(np.float32)})]
    for op, inputs, params in cases:
        lean, general = op.apply(*inputs, **params), _apply(op, inputs, params)
        assert type(lean._data) is np.ndarray and lean.shape == general.shape
        assert lean.dtype is general.dtype and lean.tolist() == general.tolist()
        assert lean.requires_grad == general.requires_grad
        assert (lean._base is None) == (general._base is None), op.name
        if lean.requires_grad:
            assert lean.grad_fn.next_edges == general.grad_fn.next_edges
            assert lean.grad_fn.input_meta == general.grad_fn.input_meta


def test_lean_path_names_the_op_on_numpy_shape_errors():
    with pytest.raises(tensora.ShapeError, match=r"add: .*input shapes \[2\], \[3\]"):
        tensora.ones(2) + tensora.ones(3)
