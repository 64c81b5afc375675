"""Adversarial checks against NumPy float64 and finite differences (gradcheck), no torch needed.

Each test is a case an earlier version got wrong:

- cross_entropy's gradient for logits in a non-C memory order (the usual (N, L, C) -> permute(0, 2, 1)
  of a sequence model) was silently wrong: the target subtraction landed in a reshape's copy;
- pow's gradients were nan at 0 ** 0 and x ** 0 (x = 0), and 0 (not nan) for a negative base's exponent;
- in-place writes into a view of a graph tensor (h[:, 0].mul_(2), F.relu(h[:, :k], inplace=True),
  h.view(-1)[::2] = ...) were refused, and views taken before their base was written in place could not
  be used; both are now recorded as torch's CopySlices / regenerated views do;
- x * 2 (or x / 2, or linear/matmul with a frozen operand) kept x alive for backward, so a later
  in-place write to x was a false "modified by an in-place operation" error;
- retain_grad() stayed on a tensor's old history after an in-place write;
- optimizers refused torch's foreach / fused / capturable keywords, and clip_grad_norm_ over no
  gradients returned float32 whatever the default dtype;
- w.grad = <tensor of another shape> was accepted (and then broadcast by step());
- custom Functions could not use setup_context(ctx, inputs, output) or ctx.mark_dirty.
"""

import numpy as np
import pytest

import tensora
from tensora import AutogradError, nn
from tensora.autograd import gradcheck, gradgradcheck
from tensora.ops.inplace import base_positions

F = nn.functional


def t64(a, grad=True):
    return tensora.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def np_log_softmax(z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


# -- cross_entropy with strided logits ------------------------------------------------------------

@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradient_for_permuted_logits(smoothing, reduction):
    rng = np.random.default_rng(0)
    n, length, c = 2, 5, 4
    logits = rng.standard_normal((n, length, c))            # (N, L, C), contiguous
    target = rng.integers(0, c, (n, length))
    target[0, 1] = -100                                      # one ignored position
    weight = np.array([0.5, 1.0, 2.0, 1.5])
    x = t64(logits)
    loss = F.cross_entropy(x.permute(0, 2, 1), tensora.tensor(target), weight=tensora.tensor(weight),
                           label_smoothing=smoothing, reduction=reduction)
    w_out = rng.standard_normal(tuple(loss.shape))
    (loss * tensora.tensor(w_out)).sum().backward()

    # NumPy reference: per position loss -sum_c q_c log p_c, q = (1-eps) onehot*w_t + eps/C * w
    logp = np_log_softmax(logits, -1)
    valid = target != -100
    t = np.where(valid, target, 0)
    onehot = np.eye(c)[t]
    q = (1 - smoothing) * onehot * weight[t][..., None] + smoothing / c * weight
    q = q * valid[..., None]
    per = -(q * logp).sum(-1)
    if reduction == "none":
        expected, r = per, w_out
    elif reduction == "sum":
        expected, r = per.sum(), np.full(per.shape, float(w_out))
    else:
        total = (weight[t] * valid).sum()
        expected, r = per.sum() / total, np.full(per.shape, float(w_out) / total)
    np.testing.assert_allclose(loss.detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    p = np.exp(logp)
    grad = (p * q.sum(-1, keepdims=True) - q) * r[..., None]
    np.testing.assert_allclose(x.grad.numpy(), grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_gradient_does_not_depend_on_memory_order(dtype):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    target = tensora.tensor(rng.integers(0, 3, (2, 4, 5)))
    layouts = {
        "contiguous": lambda: tensora.tensor(base),
        "reversed": lambda: tensora.tensor(np.ascontiguousarray(base.transpose(3, 2, 1, 0))).permute(3, 2, 1, 0),
        "channels_last": lambda: tensora.tensor(np.ascontiguousarray(base.transpose(0, 2, 3, 1))).permute(0, 3, 1, 2),
    }
    grads = {}
    for name, make in layouts.items():
        x = make().detach().requires_grad_()
        F.cross_entropy(x, target, label_smoothing=0.1, reduction="sum").backward()
        grads[name] = x.grad.numpy()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for name in ("reversed", "channels_last"):
        np.testing.assert_allclose(grads[name], grads["contiguous"], rtol=tol, atol=tol, err_msg=name)


def test_cross_entropy_permuted_logits_gradcheck():
    x = t64(np.random.default_rng(2).standard_normal((2, 3, 3)))
    target = tensora.tensor([[0, 2, 1], [1, 1, 0]])
    assert gradcheck(lambda a: F.cross_entropy(a.permute(0, 2, 1), target, label_smoothing=0.1), [x])


# -- pow at the edges ------------------------------------------------------------------------------

def test_pow_base_gradient_is_zero_where_exponent_is_zero():
    x = t64([0.0, 0.0, 2.0])
    y = t64([0.0, 2.0, 0.0])
    (x ** y).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 0.0])  # was [nan, 0, 0]
    np.testing.assert_array_equal(y.grad.numpy(), [0.0, 0.0, np.log(2.0)])
    z = t64([0.0, 3.0])
    (z ** 0).sum().backward()
    np.testing.assert_array_equal(z.grad.numpy(), [0.0, 0.0])  # was [nan, 0]


def test_pow_exponent_gradient_at_zero_and_negative_bases():
    x = t64([0.0, 0.0, -2.0, 3.0], grad=False)
    y = t64([0.5, -1.0, 2.0, 1.5])
    (x ** y).sum().backward()
    g = y.grad.numpy()
    assert g[0] == 0.0                                  # 0 ** b, b >= 0: defined as 0
    assert np.isnan(g[2])                               # log of a negative base: nan, as torch
    np.testing.assert_allclose(g[3], 3.0 ** 1.5 * np.log(3.0))
    assert not np.isfinite(g[1])                        # 0 ** -1 = inf: the limit is not 0


def test_pow_gradients_of_gradients():
    x = t64([0.5, 2.0, 1.5])
    y = t64([0.0, 1.0, 2.5])
    assert gradcheck(lambda a, b: a ** b, [x, y])
    assert gradgradcheck(lambda a, b: a ** b, [x, y])
    assert gradgradcheck(lambda a: a ** 0, [x])
    assert gradgradcheck(lambda a: 2.0 ** a, [x])


# -- in-place writes into views ---------------------------------------------------------------------

def _grads(fn, *arrays):
    xs = [t64(a) for a in arrays]
    out = fn(*xs)
    w = np.random.default_rng(7).standard_normal(tuple(out.shape))
    (out * tensora.tensor(w)).sum().backward()
    return out.detach().numpy(), [x.grad.numpy() for x in xs]


def _same_as(fn_inplace, fn_functional, *arrays):
    out_a, g_a = _grads(fn_inplace, *arrays)
    out_b, g_b = _grads(fn_functional, *arrays)
    np.testing.assert_allclose(out_a, out_b, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_a, g_b):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


RNG = np.random.default_rng(3)
X34, W3 = RNG.standard_normal((3, 4)), RNG.standard_normal(3)


def test_view_mul_and_add_record_on_the_base():
    def inplace(x, w):
        h = x * 1
        h[:, 1:].mul_(2)
        h.t()[0].add_(w)         # column 0 through a transposed view
        return h * h

    def functional(x, w):
        h = tensora.cat([x[:, :1] + w.reshape(3, 1), x[:, 1:] * 2], 1)
        return h * h

    _same_as(inplace, functional, X34, W3)


def test_relu_inplace_on_a_slice():
    def inplace(x):
        h = x * 3
        F.relu(h[:, :2], inplace=True)
        return h

    def functional(x):
        return tensora.cat([F.relu(x[:, :2] * 3), x[:, 2:] * 3], 1)

    _same_as(inplace, functional, X34)


def test_setitem_through_a_flat_view():
    def inplace(x):
        h = x * 1
        v = h.view(-1)
        v[::2] = v[1::2] * 2     # the right side is computed before the write
        return h.exp()

    def functional(x):
        odd = x.reshape(6, 2)[:, 1]
        return tensora.stack([odd * 2, odd], 1).reshape(3, 4).exp()

    _same_as(inplace, functional, X34)


def test_write_into_a_view_of_a_view_and_a_fortran_ordered_base():
    def inplace(x):
        h = x.t() * 2            # the product keeps x.t()'s (Fortran) memory order
        row = h[1]
        row[1:3].mul_(row[1:3].detach() + 1)
        return h

    def functional(x):
        h = x.t() * 2
        mid = h[1, 1:3] * (h[1, 1:3].detach() + 1)
        return tensora.cat([h[:1], tensora.cat([h[1:2, :1], mid.reshape(1, 2), h[1:2, 3:]], 1), h[2:]], 0)

    _same_as(inplace, functional, RNG.standard_normal((4, 4)))


def test_view_taken_before_the_base_was_written_is_regenerated():
    def inplace(x):
        h = x * 1
        col = h[:, 1]            # taken before both writes below
        h[0].mul_(5)             # a write through another view
        h.add_(1)                # a write to the base itself
        return col * 3 + h.sum(1)

    def functional(x):
        h = tensora.cat([x[:1] * 5, x[1:]], 0) + 1
        return h[:, 1] * 3 + h.sum(1)

    _same_as(inplace, functional, X34)


def test_view_writes_have_gradients_of_gradients():
    def fn(x):
        h = x * 1
        h[1:].mul_(x[:2])
        h[0].copy_(x[2] ** 2)    # (h[2] ** 2 would save a view of h: the write invalidates it, as torch)
        return h

    x = t64([0.5, 1.5, -2.0])
    assert gradcheck(fn, [x])
    assert gradgradcheck(fn, [x])


def test_view_write_bumps_the_version_seen_by_saved_tensors():
    x = t64([1.0, 2.0, 3.0])
    h = x * 2
    z = h * h                    # saves h
    h[0:1].mul_(2)
    with pytest.raises(AutogradError, match="modified by an in-place operation"):
        z.sum().backward()


def test_view_writes_that_stay_refused():
    leaf = t64([1.0, 2.0, 3.0])
    with pytest.raises(AutogradError, match="leaf tensor that requires grad"):
        leaf[:2].mul_(2)
    h = leaf * 2
    with tensora.no_grad():
        v = h[:2]                # made outside the graph
    with pytest.raises(AutogradError, match="outside the graph"):
        v.mul_(t64([1.0, 2.0]))
    with pytest.raises(AutogradError, match="outside the graph"):
        h.detach()[:2].mul_(t64([1.0, 2.0]))
    with tensora.no_grad():      # no recording: a plain write
        h[:2].mul_(0)
    np.testing.assert_array_equal(h.detach().numpy(), [0.0, 0.0, 6.0])


def test_base_positions_of_strided_views():
    base = np.arange(24.0).reshape(4, 6).T.copy().T     # (4, 6) in Fortran order
    for view in (base[1:3, ::2], base.T[::2, 1:], base[:, 3], base[2], base.reshape(-1, order="A")[5:9]):
        pos = base_positions(view, base)
        np.testing.assert_array_equal(base.reshape(-1)[pos], view)
    assert base_positions(base.view(np.int64), base) is None   # another dtype's reinterpretation


# -- saving only what backward needs (torch's mul, div, mm, linear) --------------------------------

@pytest.mark.parametrize("op", [
    lambda h: h * 3, lambda h: h / 4, lambda h: 3 * h,
    lambda h: h @ tensora.ones(3, 2, dtype=tensora.float64),
    lambda h: F.linear(h, tensora.ones(2, 3, dtype=tensora.float64)),
])
def test_writing_an_input_that_backward_does_not_read_is_no_error(op):
    x = t64(np.arange(6.0).reshape(2, 3))
    h = x * 1
    out = op(h)
    h.add_(100)                  # backward of op needs only the constant operand
    out.sum().backward()
    x2 = t64(np.arange(6.0).reshape(2, 3))
    op(x2 * 1).sum().backward()  # the same without the write
    np.testing.assert_array_equal(x.grad.numpy(), x2.grad.numpy())


def test_writing_an_input_that_backward_reads_is_still_caught():
    x = t64([1.0, 2.0])
    w = t64([3.0, 4.0])
    h = x * 1
    out = h * w                  # w's gradient reads h
    h.add_(1)
    with pytest.raises(AutogradError, match="modified by an in-place operation"):
        out.sum().backward()


# -- retain_grad follows the tensor through in-place writes -----------------------------------------

def test_retain_grad_is_the_gradient_of_the_new_value():
    for write in (lambda h: h.mul_(3), lambda h: h[1:].mul_(3)):
        x = t64([1.0, 2.0, 3.0])
        h = x * 2
        h.retain_grad()
        write(h)
        (h * tensora.tensor([1.0, 2.0, 3.0])).sum().backward()
        np.testing.assert_array_equal(h.grad.numpy(), [1.0, 2.0, 3.0])  # was [3, 6, 9] / [1, 6, 9]


# -- optimizers and clipping ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_optimizers_take_torchs_implementation_keywords(name):
    def run(**kw):
        p = tensora.tensor([1.0, -2.0], requires_grad=True)
        opt = getattr(tensora.optim, name)([p], lr=0.1, **kw)
        for _ in range(3):
            p.grad = p.detach() * 2 + 1
            opt.step()
        return p.detach().numpy()

    plain = run()
    for kw in ({"foreach": False}, {"foreach": True}, {"fused": True}, {"capturable": False}):
        np.testing.assert_array_equal(run(**kw), plain)
    with pytest.raises(NotImplementedError, match="differentiable"):
        run(differentiable=True)
    with pytest.raises(RuntimeError, match="fused"):
        run(fused=True, foreach=True)


def test_total_norm_of_no_gradients_has_the_default_dtype():
    tensora.set_default_dtype(tensora.float64)
    try:
        norm = tensora.optim.clip_grad_norm_([tensora.zeros(2, requires_grad=True)], 1.0)
    finally:
        tensora.set_default_dtype(tensora.float32)
    assert norm.dtype is tensora.float64 and norm.item() == 0.0


# -- .grad assignment and custom Functions ----------------------------------------------------------

def test_assigning_a_gradient_of_another_shape_is_refused():
    w = tensora.zeros(2, 3, requires_grad=True)
    opt = tensora.optim.SGD([w], lr=1.0)
    with pytest.raises(tensora.ShapeError, match=r"gradient of size \[\] to a tensor of size \[2, 3\]"):
        w.grad = tensora.tensor(1.0)  # was accepted, then broadcast over w by step()
    with pytest.raises(TypeError):
        w.grad = np.ones((2, 3))
    w.grad = tensora.ones(2, 3)
    opt.step()
    np.testing.assert_array_equal(w.detach().numpy(), -np.ones((2, 3)))
    w.grad = None
    assert w.grad is None


def test_function_with_setup_context():
    class Cube(tensora.autograd.Function):
        @staticmethod
        def forward(x, scale):
            return x * x * x * scale

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, scale = inputs
            ctx.save_for_backward(x)
            ctx.scale = scale

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3 * x * x * ctx.scale, None

    x = t64([1.0, -2.0])
    y = Cube.apply(x, 2.0)
    np.testing.assert_array_equal(y.detach().numpy(), [2.0, -16.0])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, 24.0])


def test_function_mark_dirty_rebases_the_input():
    class AddOne(tensora.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            x.add_(1)
            ctx.mark_dirty(x)
            return x

        @staticmethod
        def backward(ctx, g):
            return g

    x = t64([1.0, 2.0])
    h = x * 3
    out = AddOne.apply(h)
    assert out is h and h.grad_fn is not None
    (h * h).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2 * (3 * np.array([1.0, 2.0]) + 1) * 3)
    with pytest.raises(AutogradError, match="leaf tensor that requires grad"):
        AddOne.apply(t64([1.0]))


@pytest.mark.parametrize("requires_grad", [False, True])
def test_an_inplace_op_that_would_grow_its_tensor_names_both_shapes(requires_grad):
    x = tensora.ones(3, requires_grad=requires_grad).clone()
    with pytest.raises(tensora.ShapeError, match=r"output with shape \[3\] doesn't match the broadcast shape \[2, 3\]"):
        x.add_(tensora.ones(2, 3))
