"""Pooling (tensora/ops/pool.py) against direct NumPy float64 loops, gradients by gradcheck."""

import itertools
import math

import numpy as np
import pytest
from optest import check_op

import tensora
from tensora import DTypeError, ShapeError
from tensora.autograd import gradgradcheck


# -- NumPy references: loops over output positions ---------------------------------------

def _tup(v, nd):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd


def out_len(size, k, s, p, d, ceil):
    """torch's pooling_output_shape."""
    num = size + 2 * p - d * (k - 1) - 1
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def max_pool_ref(x, kernel, stride=None, pad=0, dilation=1, ceil=False):
    """(max over the real input positions of each window, flat index of the first maximum)."""
    nd = x.ndim - 2
    k, p, d = _tup(kernel, nd), _tup(pad, nd), _tup(dilation, nd)
    s = k if stride is None else _tup(stride, nd)
    size = x.shape[2:]
    outs = tuple(out_len(*a, ceil) for a in zip(size, k, s, p, d))
    val = np.zeros(x.shape[:2] + outs)
    idx = np.zeros(x.shape[:2] + outs, dtype=np.int64)
    for n, c in np.ndindex(*x.shape[:2]):
        for pos in itertools.product(*[range(o) for o in outs]):
            best, at = -np.inf, None
            for tap in itertools.product(*[range(kk) for kk in k]):
                q = tuple(o * ss - pp + t * dd for o, ss, pp, t, dd in zip(pos, s, p, tap, d))
                if all(0 <= qi < si for qi, si in zip(q, size)) and (at is None or x[(n, c) + q] > best):
                    best, at = x[(n, c) + q], q
            val[(n, c) + pos] = best
            idx[(n, c) + pos] = np.ravel_multi_index(at, size)
    return val, idx


def avg_pool_ref(x, kernel, stride=None, pad=0, ceil=False, count_include_pad=True, divisor_override=None):
    nd = x.ndim - 2
    k, p = _tup(kernel, nd), _tup(pad, nd)
    s = k if stride is None else _tup(stride, nd)
    size = x.shape[2:]
    outs = tuple(out_len(si, kk, ss, pp, 1, ceil) for si, kk, ss, pp in zip(size, k, s, p))
    y = np.zeros(x.shape[:2] + outs)
    for pos in itertools.product(*[range(o) for o in outs]):
        start = [o * ss - pp for o, ss, pp in zip(pos, s, p)]
        end = [min(st + kk, si + pp) for st, kk, si, pp in zip(start, k, size, p)]
        padded_count = math.prod(e - st for st, e in zip(start, end))
        lo = [max(st, 0) for st in start]
        hi = [min(e, si) for e, si in zip(end, size)]
        window = x[(Ellipsis,) + tuple(slice(a, b) for a, b in zip(lo, hi))]
        div = divisor_override or (padded_count if count_include_pad else math.prod(b - a for a, b in zip(lo, hi)))
        y[(Ellipsis,) + pos] = window.sum(axis=tuple(range(2, 2 + nd))) / div
    return y


def adaptive_ref(x, out):
    nd = x.ndim - 2
    size = x.shape[2:]
    out = tuple(si if o is None else o for si, o in zip(size, _tup(out, nd)))
    y = np.zeros(x.shape[:2] + out)
    for pos in itertools.product(*[range(o) for o in out]):
        sl = tuple(slice(j * si // o, -(-(j + 1) * si // o)) for j, si, o in zip(pos, size, out))
        y[(Ellipsis,) + pos] = x[(Ellipsis,) + sl].mean(axis=tuple(range(2, 2 + nd)))
    return y


# -- max pooling -------------------------------------------------------------------------

MAX2D = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), dilation=(2, 1)),
    dict(kernel_size=2, stride=3, ceil_mode=True),
]


def _max_ref(x, kw):
    return max_pool_ref(x, kw["kernel_size"], kw.get("stride"), kw.get("padding", 0), kw.get("dilation", 1),
                        kw.get("ceil_mode", False))


@pytest.mark.parametrize("kw", MAX2D)
def test_max_pool2d_matches_loops_and_gradcheck(kw):
    check_op(lambda x: tensora.max_pool2d(x, **kw), lambda x: _max_ref(x, kw)[0], [(2, 2, 7, 8)])
    x = np.random.default_rng(0).standard_normal((2, 2, 7, 8))
    out, idx = tensora.max_pool2d(tensora.tensor(x), return_indices=True, **kw)
    ref, ref_idx = _max_ref(x, kw)
    np.testing.assert_array_equal(out.numpy(), ref)
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    assert idx.dtype.name == "int64" and not idx.requires_grad


@pytest.mark.parametrize("kw", [dict(kernel_size=3), dict(kernel_size=4, stride=2, padding=2, dilation=2),
                                dict(kernel_size=2, ceil_mode=True)])
def test_max_pool1d_matches_loops_and_gradcheck(kw):
    check_op(lambda x: tensora.max_pool1d(x, **kw), lambda x: _max_ref(x, kw)[0], [(2, 3, 11)])
    x = np.random.default_rng(1).standard_normal((2, 3, 11))
    _, idx = tensora.max_pool1d(tensora.tensor(x), return_indices=True, **kw)
    np.testing.assert_array_equal(idx.numpy(), _max_ref(x, kw)[1])


def test_max_pool3d_matches_loops_and_gradcheck():
    kw = dict(kernel_size=(2, 2, 3), stride=(1, 2, 2), padding=(0, 1, 1))
    check_op(lambda x: tensora.max_pool3d(x, **kw), lambda x: _max_ref(x, kw)[0], [(1, 2, 3, 4, 5)])


def test_max_pool_double_backward():
    x = tensora.tensor(np.random.default_rng(2).standard_normal((1, 2, 5, 5)), requires_grad=True)
    assert gradgradcheck(lambda x: tensora.max_pool2d(x, 3, stride=1, padding=1), [x])   # overlapping windows
    assert gradgradcheck(lambda x: tensora.max_pool2d(x, 2), [x])                          # disjoint windows


def test_max_pool_ties_pick_the_first_and_nan_propagates():
    x = tensora.ones(1, 1, 4, 4, requires_grad=True)
    out, idx = tensora.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(idx.numpy(), [[[[0, 2], [8, 10]]]])
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    a = np.arange(8.0).reshape(1, 1, 8)
    a[0, 0, 1] = np.nan
    a[0, 0, 5] = np.nan
    out, idx = tensora.max_pool1d(tensora.tensor(a), 4, return_indices=True)
    assert np.isnan(out.numpy()).all()
    np.testing.assert_array_equal(idx.numpy(), [[[1, 5]]])


def test_max_pool_overlapping_windows_sum_their_gradients():
    x = tensora.tensor([[[0.0, 5.0, 1.0, 2.0]]], requires_grad=True)
    tensora.max_pool1d(x, 3, stride=1).sum().backward()   # both windows pick x[1]
    np.testing.assert_array_equal(x.grad.numpy(), [[[0, 2, 0, 0]]])
    np.testing.assert_array_equal(x.detach().numpy(), [[[0, 5, 1, 2]]])   # the input is never written


def test_max_pool_unbatched_empty_and_non_contiguous():
    x = np.random.default_rng(3).standard_normal((6, 5, 3))
    out, idx = tensora.max_pool2d(tensora.tensor(x).permute(2, 0, 1), 2, return_indices=True)
    ref, ref_idx = max_pool_ref(x.transpose(2, 0, 1)[None], 2)
    np.testing.assert_array_equal(out.numpy(), ref[0])
    np.testing.assert_array_equal(idx.numpy(), ref_idx[0])
    check_op(lambda x: tensora.max_pool2d(x[:, ::2].transpose(-1, -2), 2),
             lambda x: max_pool_ref(x[:, ::2].swapaxes(-1, -2), 2)[0], [(2, 4, 5, 6)])
    e = tensora.zeros(0, 3, 4, 4, requires_grad=True)
    y = tensora.max_pool2d(e, 2)
    assert y.shape == (0, 3, 2, 2)
    y.sum().backward()
    assert e.grad.shape == (0, 3, 4, 4)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "int64", "int32"])
def test_max_pool_keeps_dtype_and_is_exact(dtype):
    x = np.random.default_rng(4).integers(-50, 50, (2, 3, 6, 7)).astype(np.float64)
    out, idx = tensora.max_pool2d(tensora.tensor(x).to(dtype), 3, 2, 1, return_indices=True)
    ref, ref_idx = max_pool_ref(x, 3, 2, 1)
    assert out.dtype.name == dtype
    np.testing.assert_array_equal(out.double().numpy(), ref)
    np.testing.assert_array_equal(idx.numpy(), ref_idx)


# -- average pooling ---------------------------------------------------------------------

AVG2D = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(2, 4), stride=(3, 1), padding=(1, 2), divisor_override=5),
    dict(kernel_size=2, stride=3, ceil_mode=True, count_include_pad=False),
]


def _avg_ref(x, kw):
    return avg_pool_ref(x, kw["kernel_size"], kw.get("stride"), kw.get("padding", 0), kw.get("ceil_mode", False),
                        kw.get("count_include_pad", True), kw.get("divisor_override"))


@pytest.mark.parametrize("kw", AVG2D)
def test_avg_pool2d_matches_loops_and_gradcheck(kw):
    check_op(lambda x: tensora.avg_pool2d(x, **kw), lambda x: _avg_ref(x, kw), [(2, 2, 7, 8)], atol=1e-12)


@pytest.mark.parametrize("kw", [dict(kernel_size=3), dict(kernel_size=4, stride=3, padding=2, ceil_mode=True,
                                                            count_include_pad=False)])
def test_avg_pool1d_and_3d(kw):
    check_op(lambda x: tensora.avg_pool1d(x, **kw), lambda x: _avg_ref(x, kw), [(2, 3, 11)], atol=1e-12)
    check_op(lambda x: tensora.avg_pool3d(x, **kw), lambda x: _avg_ref(x, kw), [(1, 2, 5, 4, 6)], atol=1e-12)


def test_avg_pool_double_backward_and_unbatched():
    x = tensora.tensor(np.random.default_rng(5).standard_normal((2, 5, 5)), requires_grad=True)
    assert gradgradcheck(lambda x: tensora.avg_pool2d(x, 3, 2, 1, count_include_pad=False), [x])
    assert tensora.avg_pool2d(x, 2).shape == (2, 2, 2)


def test_avg_pool_integer_input_truncates_like_torch():
    x = tensora.tensor([[[-5, -4, -3, 3, -9, 9]]])
    out = tensora.avg_pool1d(x, 2, 1)
    assert out.dtype.name == "int64"
    np.testing.assert_array_equal(out.numpy(), [[[-4, -3, 0, -3, 0]]])


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-6), ("float16", 2e-3), ("bfloat16", 1e-2)])
def test_avg_pool_keeps_floating_dtype(dtype, tol):
    x = np.random.default_rng(6).standard_normal((2, 3, 6, 6))
    t = tensora.tensor(x).to(dtype).requires_grad_()
    out = tensora.avg_pool2d(t, 3, 2, 1)
    assert out.dtype.name == dtype
    np.testing.assert_allclose(out.double().detach().numpy(), avg_pool_ref(t.double().detach().numpy(), 3, 2, 1),
                               rtol=tol, atol=tol)
    out.sum().backward()
    assert t.grad.dtype.name == dtype


# -- adaptive average pooling -------------------------------------------------------------

@pytest.mark.parametrize("out", [1, 3, (2, 5), (4, None), (7, 11), (3, 2)])
def test_adaptive_avg_pool2d_any_size(out):
    check_op(lambda x: tensora.adaptive_avg_pool2d(x, out), lambda x: adaptive_ref(x, out), [(2, 2, 7, 5)],
             atol=1e-12)


def test_adaptive_avg_pool1d_3d_and_double_backward():
    check_op(lambda x: tensora.adaptive_avg_pool1d(x, 4), lambda x: adaptive_ref(x, 4), [(2, 3, 10)], atol=1e-12)
    check_op(lambda x: tensora.adaptive_avg_pool3d(x, (2, None, 3)), lambda x: adaptive_ref(x, (2, None, 3)),
             [(1, 2, 3, 4, 5)], atol=1e-12)
    x = tensora.tensor(np.random.default_rng(7).standard_normal((1, 2, 5, 4)), requires_grad=True)
    assert gradgradcheck(lambda x: tensora.adaptive_avg_pool2d(x, 3), [x])


def test_adaptive_avg_pool_identity_is_a_copy():
    x = tensora.ones(1, 2, 3, 3)
    y = tensora.adaptive_avg_pool2d(x, (3, 3))
    y[0, 0, 0, 0] = 5.0
    assert x[0, 0, 0, 0].item() == 1.0


# -- errors ------------------------------------------------------------------------------

def test_pool_errors():
    x = tensora.ones(2, 3, 5, 5)
    with pytest.raises(ValueError, match="pad should be at most half of kernel size"):
        tensora.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="pad should be at most half of kernel size"):
        tensora.avg_pool2d(x, 2, padding=2)
    with pytest.raises(ShapeError, match=r"Given input size: \(3x5x5\). Calculated output size: \(3x0x0\)"):
        tensora.max_pool2d(x, 6)
    with pytest.raises(ShapeError, match="kernel_size must either be a single int, or a tuple of 2 ints"):
        tensora.max_pool2d(x, (3, 3, 3))
    with pytest.raises(ShapeError, match=r"4D \(batch mode\).*\[2, 3, 0, 5\]"):
        tensora.max_pool2d(x[:, :, :0], 1)
    with pytest.raises(ShapeError, match=r"\[5, 5\]"):
        tensora.avg_pool2d(tensora.ones(5, 5), 2)
    with pytest.raises(ValueError, match="greater than zero"):
        tensora.max_pool2d(x, 2, stride=0)
    with pytest.raises(ValueError, match="divisor must be not zero"):
        tensora.avg_pool2d(x, 2, divisor_override=0)
    with pytest.raises(DTypeError, match="int64"):
        tensora.adaptive_avg_pool2d(x.long(), 2)
    with pytest.raises(DTypeError, match="bool"):
        tensora.max_pool2d(x.bool(), 2)
    with pytest.raises(ShapeError, match=r"output_size must be an int or 2 values"):
        tensora.adaptive_avg_pool2d(x, (1, 2, 3))


@pytest.mark.parametrize("stride", [2, 1])   # disjoint and overlapping windows
def test_max_pool_backward_keeps_non_finite_gradients_local(stride):
    x = tensora.tensor([[[0.0, 5.0, 1.0, 2.0, 7.0, 3.0]]], requires_grad=True)
    y = tensora.max_pool1d(x, 2, stride=stride)
    g = np.ones(tuple(y.shape))
    g[0, 0, 0] = np.inf
    y.backward(tensora.tensor(g, dtype=tensora.float32))
    grad = x.grad.numpy()[0, 0]
    assert grad[1] == np.inf and not np.isnan(grad).any()
    assert grad[0] == 0 and grad[2] == 0
