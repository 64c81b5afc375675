"""Convolutions (tensora/ops/conv.py) against direct NumPy float64 loops, gradients by gradcheck."""

import itertools

import numpy as np
import pytest
from optest import check_op

import tensora
from tensora import DTypeError, ShapeError
from tensora.autograd import gradcheck, gradgradcheck


# -- NumPy references: the definitions, written as loops over output positions ----------

def conv_ref(x, w, b=None, stride=1, pad=0, dilation=1, groups=1, pad_hi=None):
    """y[n, o, p] = b[o] + sum_{c, t} w[o, c, t] * xpad[n, group(o) * Cg + c, p * stride + t * dilation]."""
    nd = x.ndim - 2
    tup = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd  # noqa: E731
    stride, pad, dilation = tup(stride), tup(pad), tup(dilation)
    pad_hi = pad if pad_hi is None else tup(pad_hi)
    xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(pad, pad_hi)))
    n, c = x.shape[:2]
    o, cg = w.shape[:2]
    og = o // groups
    kernel = w.shape[2:]
    out_size = tuple((xp.shape[2 + i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(nd))
    y = np.zeros((n, o) + out_size)
    for pos in itertools.product(*[range(s) for s in out_size]):
        for oc in range(o):
            gi = oc // og
            window = xp[(slice(None), slice(gi * cg, (gi + 1) * cg)) + tuple(
                slice(p * s, p * s + d * (kk - 1) + 1, d) for p, s, d, kk in zip(pos, stride, dilation, kernel))]
            y[(slice(None), oc) + pos] = np.tensordot(window, w[oc], axes=nd + 1)
    if b is not None:
        y += b.reshape((1, -1) + (1,) * nd)
    return y


def conv_transpose_ref(y, w, b=None, stride=1, pad=0, output_padding=0, groups=1, dilation=1):
    """x[n, c, p * stride + t * dilation - pad] += y[n, o, p] * w[o, c_local, t]: the scatter definition."""
    nd = y.ndim - 2
    tup = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd  # noqa: E731
    stride, pad, op, dilation = tup(stride), tup(pad), tup(output_padding), tup(dilation)
    n, cin = y.shape[:2]
    cg = w.shape[1]
    og = cin // groups
    kernel = w.shape[2:]
    in_size = y.shape[2:]
    full = tuple((i - 1) * s + d * (kk - 1) + 1 + o for i, s, d, kk, o in zip(in_size, stride, dilation, kernel, op))
    x = np.zeros((n, cg * groups) + full)
    for pos in itertools.product(*[range(s) for s in in_size]):
        for oc in range(cin):
            gi = oc // og
            for tap in itertools.product(*[range(kk) for kk in kernel]):
                at = tuple(p * s + t * d for p, s, t, d in zip(pos, stride, tap, dilation))
                x[(slice(None), slice(gi * cg, (gi + 1) * cg)) + at] += \
                    y[(slice(None), oc) + pos][:, None] * w[(oc, slice(None)) + tap]
    x = x[(Ellipsis,) + tuple(slice(p, f - p) for p, f in zip(pad, full))]
    if b is not None:
        x = x + b.reshape((1, -1) + (1,) * nd)
    return x


# -- conv1d / conv2d / conv3d ------------------------------------------------------------

CONV2D = [
    dict(),
    dict(stride=2),
    dict(stride=(2, 1), padding=(1, 2)),
    dict(padding=1, dilation=2),
    dict(stride=(1, 3), padding=(0, 2), dilation=(2, 1)),
    dict(groups=2, padding=1),
    dict(groups=4, stride=2, padding=1),   # depthwise: one channel per group
]


@pytest.mark.parametrize("kw", CONV2D)
def test_conv2d_matches_loops_and_gradcheck(kw):
    groups = kw.get("groups", 1)
    shapes = [(2, 4, 6, 5), (4, 4 // groups, 3, 2), (4,)]
    check_op(lambda x, w, b: tensora.conv2d(x, w, b, **kw),
             lambda x, w, b: conv_ref(x, w, b, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                                      groups), shapes)


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(dilation=3, padding=2, groups=3)])
def test_conv1d_matches_loops_and_gradcheck(kw):
    groups = kw.get("groups", 1)
    check_op(lambda x, w, b: tensora.conv1d(x, w, b, **kw),
             lambda x, w, b: conv_ref(x, w, b, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                                      groups), [(2, 3, 9), (6, 3 // groups, 3), (6,)])


def test_conv3d_matches_loops_and_gradcheck():
    kw = dict(stride=(1, 2, 1), padding=(1, 0, 1), dilation=(1, 1, 2), groups=2)
    check_op(lambda x, w: tensora.conv3d(x, w, **kw),
             lambda x, w: conv_ref(x, w, None, (1, 2, 1), (1, 0, 1), (1, 1, 2), 2),
             [(1, 2, 3, 4, 4), (2, 1, 2, 2, 2)])


def test_conv2d_double_backward():
    rng = np.random.default_rng(3)
    x = tensora.tensor(rng.standard_normal((2, 2, 4, 4)), requires_grad=True)
    w = tensora.tensor(rng.standard_normal((3, 2, 2, 2)), requires_grad=True)
    b = tensora.tensor(rng.standard_normal(3), requires_grad=True)
    assert gradgradcheck(lambda x, w, b: tensora.conv2d(x, w, b, stride=2, padding=1), [x, w, b])
    wg = tensora.tensor(rng.standard_normal((4, 1, 3, 2)), requires_grad=True)
    assert gradgradcheck(lambda x, w: tensora.conv2d(x, w, padding=(1, 0), dilation=(1, 2), groups=2), [x, wg])


@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_on_patch_rows_matches_loops_and_double_backward(stride):
    # 6 input channels x 3 taps per kernel row: the patch-row path (stride 1: its transpose is the
    # flipped conv; stride 2: row2im).
    rng = np.random.default_rng(4)
    x = tensora.tensor(rng.standard_normal((2, 6, 5, 4)), requires_grad=True)
    w = tensora.tensor(rng.standard_normal((3, 6, 3, 3)), requires_grad=True)
    b = tensora.tensor(rng.standard_normal(3), requires_grad=True)
    y = tensora.conv2d(x, w, b, stride=stride, padding=1)
    ref = conv_ref(*(t.detach().numpy() for t in (x, w, b)), stride, 1)
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-10, atol=1e-10)
    assert gradgradcheck(lambda x, w, b: tensora.conv2d(x, w, b, stride=stride, padding=1), [x, w, b])


@pytest.mark.parametrize("blas_min", [0, 1 << 20])  # BLAS's matrix-vector products, NumPy's row sums
def test_bias_gradient_is_the_channel_sum(blas_min, monkeypatch):
    from tensora.ops import conv
    from tensora.ops.conv import ChannelSum
    monkeypatch.setattr(conv, "BLAS_MIN_SIZE", blas_min)
    g = np.random.default_rng(5).standard_normal((3, 4, 5, 2))
    for dtype in (tensora.float64, tensora.float32, tensora.float16, tensora.bfloat16):
        low = tensora.tensor(g, dtype=dtype)
        got = ChannelSum.apply(low)
        assert got.dtype is dtype
        # Accumulated in float32 at least, rounded once: as exact as the rounded inputs allow.
        want = low.to(tensora.float64).numpy().sum(axis=(0, 2, 3))
        np.testing.assert_allclose(got.to(tensora.float64).numpy(), want, rtol=2 ** -7, atol=1e-6)
    assert gradgradcheck(ChannelSum.apply, [tensora.tensor(g, requires_grad=True)])


@pytest.mark.parametrize("kernel,dilation", [((3, 3), 1), ((4, 2), 1), ((2, 3), (2, 3)), ((1, 4), 1)])
def test_conv2d_same_padding_puts_the_odd_element_after(kernel, dilation):
    d = (dilation,) * 2 if isinstance(dilation, int) else dilation
    total = [dd * (k - 1) for dd, k in zip(d, kernel)]
    lo, hi = [t // 2 for t in total], [t - t // 2 for t in total]
    check_op(lambda x, w: tensora.conv2d(x, w, padding="same", dilation=dilation),
             lambda x, w: conv_ref(x, w, None, 1, lo, d, 1, pad_hi=hi), [(1, 2, 5, 6), (2, 2) + kernel])
    out = tensora.conv2d(tensora.ones(1, 2, 5, 6), tensora.ones((2, 2) + kernel), padding="same", dilation=dilation)
    assert out.shape == (1, 2, 5, 6)


def test_conv_valid_padding_and_unbatched_input():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((3, 6, 6)), rng.standard_normal((2, 3, 3, 3))
    out = tensora.conv2d(tensora.tensor(x), tensora.tensor(w), padding="valid")
    np.testing.assert_allclose(out.numpy(), conv_ref(x[None], w)[0], atol=1e-12)
    assert out.shape == (2, 4, 4)
    check_op(lambda x, w: tensora.conv1d(x, w, padding=1), lambda x, w: conv_ref(x[None], w, pad=1)[0],
             [(2, 7), (3, 2, 3)])


def test_conv_non_contiguous_inputs():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 5, 2, 2))   # permuted to (2, 2, 5, 5): no unit stride anywhere
    w = rng.standard_normal((3, 3, 2, 3))   # transposed to (2, 3, 3, 3)... then sliced
    check_op(lambda x, w: tensora.conv2d(x.permute(2, 3, 0, 1), w.permute(2, 0, 1, 3)[:, :2, :, ::2], padding=1),
             lambda x, w: conv_ref(x.transpose(2, 3, 0, 1), w.transpose(2, 0, 1, 3)[:, :2, :, ::2], pad=1),
             [x, w])


def test_conv_empty_batch_and_strides_past_the_input():
    x = tensora.zeros(0, 3, 5, 5, requires_grad=True)
    w = tensora.ones(4, 3, 3, 3, requires_grad=True)
    b = tensora.ones(4, requires_grad=True)
    y = tensora.conv2d(x, w, b, padding=1)
    assert y.shape == (0, 4, 5, 5)
    y.sum().backward()
    assert x.grad.shape == (0, 3, 5, 5)
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros((4, 3, 3, 3)))
    np.testing.assert_array_equal(b.grad.numpy(), np.zeros(4))
    # A stride that skips the tail of the input: those positions get zero gradient.
    check_op(lambda x, w: tensora.conv2d(x, w, stride=3), lambda x, w: conv_ref(x, w, stride=3),
             [(1, 1, 7, 8), (1, 1, 2, 2)])


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float16", 1e-2), ("bfloat16", 4e-2)])
def test_conv_keeps_floating_dtype(dtype, tol):
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)) / 3, rng.standard_normal(4)
    cast = lambda a: tensora.tensor(a).to(dtype).requires_grad_()  # noqa: E731
    tx, tw, tb = cast(x), cast(w), cast(b)
    y = tensora.conv2d(tx, tw, tb, padding=1)
    assert y.dtype.name == dtype
    xr = [tensora.tensor(a).to(dtype).double().numpy() for a in (x, w, b)]
    np.testing.assert_allclose(y.double().detach().numpy(), conv_ref(*xr, pad=1), rtol=tol, atol=tol * 4)
    y.sum().backward()
    assert tx.grad.dtype.name == dtype and tw.grad.dtype.name == dtype and tb.grad.dtype.name == dtype


def test_conv_integer_input_is_exact():
    rng = np.random.default_rng(7)
    x, w = rng.integers(-5, 5, (2, 2, 5, 5)), rng.integers(-3, 3, (3, 2, 2, 2))
    y = tensora.conv2d(tensora.tensor(x), tensora.tensor(w), stride=2, padding=1)
    assert y.dtype.name == "int64"
    np.testing.assert_array_equal(y.numpy(), conv_ref(x, w, stride=2, pad=1).astype(np.int64))


# -- conv_transpose ---------------------------------------------------------------------

CONV_T2D = [
    dict(),
    dict(stride=2),
    dict(stride=2, padding=1, output_padding=1),
    dict(stride=(2, 3), padding=(1, 0), output_padding=(0, 2), dilation=(1, 2)),
    dict(padding=1, output_padding=1, dilation=2),   # output_padding < dilation, stride 1
    dict(stride=2, groups=2, padding=1),
]


@pytest.mark.parametrize("kw", CONV_T2D)
def test_conv_transpose2d_matches_scatter_and_gradcheck(kw):
    groups = kw.get("groups", 1)
    check_op(lambda y, w, b: tensora.conv_transpose2d(y, w, b, **kw),
             lambda y, w, b: conv_transpose_ref(y, w, b, kw.get("stride", 1), kw.get("padding", 0),
                                                kw.get("output_padding", 0), groups, kw.get("dilation", 1)),
             [(2, 4, 3, 4), (4, 3, 3, 2), (3 * groups,)])


def test_conv_transpose1d_and_3d():
    check_op(lambda y, w: tensora.conv_transpose1d(y, w, stride=3, padding=2, output_padding=1),
             lambda y, w: conv_transpose_ref(y, w, None, 3, 2, 1), [(2, 3, 4), (3, 2, 4)])
    check_op(lambda y, w: tensora.conv_transpose3d(y, w, stride=(2, 1, 1), padding=(0, 1, 0)),
             lambda y, w: conv_transpose_ref(y, w, None, (2, 1, 1), (0, 1, 0)), [(1, 2, 2, 3, 2), (2, 1, 2, 2, 2)])


def test_conv_transpose_is_the_input_gradient_of_conv():
    rng = np.random.default_rng(8)
    x = tensora.tensor(rng.standard_normal((2, 3, 7, 7)), requires_grad=True)
    w = tensora.tensor(rng.standard_normal((4, 3, 3, 2)))
    y = tensora.conv2d(x, w, stride=2, padding=1)
    g = tensora.tensor(rng.standard_normal(tuple(y.shape)))
    y.backward(g)
    gt = tensora.conv_transpose2d(g, w, stride=2, padding=1, output_padding=(0, 1))
    np.testing.assert_allclose(x.grad.numpy(), gt.numpy(), atol=1e-12)


def test_conv_transpose2d_double_backward():
    rng = np.random.default_rng(9)
    y = tensora.tensor(rng.standard_normal((1, 2, 3, 3)), requires_grad=True)
    w = tensora.tensor(rng.standard_normal((2, 2, 2, 2)), requires_grad=True)
    assert gradgradcheck(lambda y, w: tensora.conv_transpose2d(y, w, stride=2, padding=1, output_padding=1), [y, w])


def test_conv_transpose_unbatched_and_empty():
    out = tensora.conv_transpose2d(tensora.ones(2, 3, 3), tensora.ones(2, 1, 2, 2), stride=2)
    assert out.shape == (1, 6, 6)
    np.testing.assert_array_equal(out.numpy(), np.full((1, 6, 6), 2.0))
    assert tensora.conv_transpose2d(tensora.ones(0, 2, 3, 3), tensora.ones(2, 1, 2, 2)).shape == (0, 1, 4, 4)


# -- errors ----------------------------------------------------------------------------

def test_conv_errors_name_the_shapes():
    x = tensora.ones(2, 3, 5, 5)
    with pytest.raises(ShapeError, match=r"expected input\[2, 3, 5, 5\] to have 2 channels"):
        tensora.conv2d(x, tensora.ones(4, 2, 3, 3))
    with pytest.raises(ShapeError, match=r"divisible by 2 at dimension 0, but got weight of size \[3, 3, 3, 3\]"):
        tensora.conv2d(tensora.ones(2, 6, 5, 5), tensora.ones(3, 3, 3, 3), groups=2)
    with pytest.raises(ShapeError, match=r"Kernel size: \(6 x 6\)"):
        tensora.conv2d(x, tensora.ones(4, 3, 6, 6))
    with pytest.raises(ShapeError, match=r"expected bias to be 1-dimensional with 4 elements.*\[3\]"):
        tensora.conv2d(x, tensora.ones(4, 3, 3, 3), tensora.ones(3))
    with pytest.raises(ShapeError, match=r"4D \(batched\) input to conv2d.*\[5, 5\]"):
        tensora.conv2d(tensora.ones(5, 5), tensora.ones(4, 3, 3, 3))
    with pytest.raises(ShapeError, match=r"list of 2 values.*stride=\[1, 2, 3\]"):
        tensora.conv2d(x, tensora.ones(4, 3, 3, 3), stride=(1, 2, 3))
    with pytest.raises(ShapeError, match=r"expected a 4-D weight, got weight of size \[4, 3, 3\]"):
        tensora.conv2d(x, tensora.ones(4, 3, 3))
    with pytest.raises(ShapeError, match=r"transposed=1.*input\[2, 3, 5, 5\] to have 4 channels"):
        tensora.conv_transpose2d(x, tensora.ones(4, 3, 3, 3))


def test_conv_argument_errors():
    x, w = tensora.ones(1, 1, 5, 5), tensora.ones(1, 1, 3, 3)
    with pytest.raises(ValueError, match="not supported for strided convolutions"):
        tensora.conv2d(x, w, stride=2, padding="same")
    with pytest.raises(ValueError, match="Invalid padding string 'full'"):
        tensora.conv2d(x, w, padding="full")
    with pytest.raises(ValueError, match="non-positive stride"):
        tensora.conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match="negative padding"):
        tensora.conv2d(x, w, padding=-1)
    with pytest.raises(ValueError, match="non-positive groups"):
        tensora.conv2d(x, w, groups=0)
    with pytest.raises(ValueError, match="dilation should be greater than zero"):
        tensora.conv2d(x, w, dilation=0)
    with pytest.raises(ValueError, match="output padding must be smaller than either stride or dilation"):
        tensora.conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(TypeError, match="padding"):
        tensora.conv_transpose2d(x, w, padding="same")
    with pytest.raises(DTypeError, match=r"float32.*float64"):
        tensora.conv2d(x, w.double())
    with pytest.raises(DTypeError, match="bool"):
        tensora.conv2d(x.bool(), w.bool())


def test_gradcheck_of_padded_grouped_conv1d_with_all_inputs():
    # A bigger stride than kernel and a group count > 1 at once, all three inputs differentiated.
    rng = np.random.default_rng(10)
    ins = [tensora.tensor(rng.standard_normal(s), requires_grad=True) for s in [(1, 4, 11), (6, 2, 2), (6,)]]
    assert gradcheck(lambda x, w, b: tensora.conv1d(x, w, b, stride=3, padding=2, groups=2), ins)


@pytest.mark.parametrize("shape,kw", [((4, 3, 8, 8), dict(padding=1)), ((2, 4, 20, 20), dict(padding=1)),
                                      ((3, 4, 9, 9), dict(stride=2, groups=2)), ((2, 4, 7), dict(dilation=2))])
def test_weight_gradient_from_the_kept_columns_matches_a_rebuild(shape, kw, monkeypatch):
    # Reference: the same backward with the column cache off (KEEP_COLS_BYTES = 0), which rebuilds the
    # columns from x; the forward's kept columns must give bit-identical gradients, and are let go.
    # float64: float32 2-D convs run on the direct kernels where the extension is loaded, with no columns.
    from tensora.kernels import im2col as k
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((6, shape[1] // kw.get("groups", 1)) + (3,) * (len(shape) - 2))
    conv = tensora.conv2d if len(shape) == 4 else tensora.conv1d

    def grads():
        xt, wt = tensora.tensor(x, requires_grad=True), tensora.tensor(w, requires_grad=True)
        bt = tensora.zeros(6, dtype=tensora.float64, requires_grad=True)
        y = conv(xt, wt, bt, **kw)
        kept = getattr(y.grad_fn.ctx, "cols", None)
        (y * y).sum().backward()
        assert getattr(y.grad_fn.ctx, "cols", None) is None  # used once, then dropped
        return kept, xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()

    kept, *cached = grads()
    assert kept is not None
    monkeypatch.setattr(k, "KEEP_COLS_BYTES", 0)
    nothing, *rebuilt = grads()
    assert nothing is None
    for a, b in zip(cached, rebuilt):
        np.testing.assert_array_equal(a, b)


def test_in_place_edit_of_the_input_after_forward_is_caught():
    # The kept columns are a copy of x at forward time: x is saved too, so its version check still fires.
    x = tensora.randn(2, 3, 5, 5)
    w = tensora.randn(4, 3, 3, 3, requires_grad=True)
    y = tensora.conv2d(x, w, padding=1)
    x.add_(1.0)
    with pytest.raises(tensora.AutogradError, match="modified by an in-place operation"):
        y.sum().backward()
