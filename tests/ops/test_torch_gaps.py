"""Functions added to close gaps with torch: Tensor.new_*, view_as/reshape_as, nan_to_num, cumprod,
median/nanmedian. Forward against NumPy float64 (np.nan_to_num, np.cumprod, the lower median
from np.sort), gradients by gradcheck (finite differences), and the errors bad input gets.
"""

import warnings

import numpy as np
import pytest

import tensora
from tensora.autograd import gradcheck, gradgradcheck
from tensora.errors import DTypeError, ShapeError

from optest import check_op

NAN, INF = float("nan"), float("inf")


# -- Tensor.new_* -------------------------------------------------------------------------

def test_new_factories_follow_the_source_dtype_and_device():
    x = tensora.ones(2, 3, dtype=tensora.float64)
    z = x.new_zeros(4, 5)
    assert z.dtype is tensora.float64 and z.device == x.device and tuple(z.shape) == (4, 5)
    np.testing.assert_array_equal(z.numpy(), np.zeros((4, 5)))
    np.testing.assert_array_equal(x.new_ones((2,)).numpy(), np.ones(2))
    np.testing.assert_array_equal(x.new_ones([2, 1]).numpy(), np.ones((2, 1)))
    assert tuple(x.new_empty(0, 3).shape) == (0, 3) and x.new_empty(2).dtype is tensora.float64
    f = x.new_full((2, 2), 7)
    assert f.dtype is tensora.float64 and f.tolist() == [[7.0, 7.0], [7.0, 7.0]]
    assert x.new_zeros(2, dtype=tensora.int32).dtype is tensora.int32
    assert x.new_ones(2, device="cpu").device == tensora.device("cpu")


def test_new_factories_make_leaves_that_may_require_grad():
    x = tensora.randn(3, requires_grad=True)
    z = x.new_zeros(3)
    assert not z.requires_grad and z.grad_fn is None
    w = x.new_ones(3, requires_grad=True)
    assert w.requires_grad and w.is_leaf
    (w * 2).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2, 2, 2])
    with pytest.raises(DTypeError, match="floating point"):
        tensora.ones(2, dtype=tensora.int64).new_zeros(2, requires_grad=True)


def test_new_full_and_new_tensor_cast_to_the_source_dtype():
    i = tensora.ones(2, dtype=tensora.int32)
    # The source's dtype wins over what the value would infer (as torch): 3.5 -> 3, 1.7 -> 1.
    assert i.new_full((2,), 3.5).tolist() == [3, 3] and i.new_full((2,), 3.5).dtype is tensora.int32
    t = i.new_tensor([1.7, -2.2])
    assert t.dtype is tensora.int32 and t.tolist() == [1, -2]
    assert i.new_tensor([[1, 2]], dtype=tensora.float64).dtype is tensora.float64
    assert i.new_full((1,), tensora.tensor(4.0)).tolist() == [4]


def test_new_tensor_copies_a_tensor_detached_and_warns():
    src = tensora.randn(3, requires_grad=True)
    with pytest.warns(UserWarning, match="detach"):
        out = src.new_tensor(src)
    assert not out.requires_grad and out.dtype is src.dtype
    out.add_(1)
    assert not np.allclose(out.numpy(), src.detach().numpy())  # a copy, not a view


def test_new_factories_reject_bad_sizes():
    x = tensora.ones(2)
    with pytest.raises(TypeError, match="size"):
        x.new_full(2, 3)
    with pytest.raises(ShapeError, match="negative"):
        x.new_zeros(-1)


# -- view_as, reshape_as ---------------------------------------------------------------------

def test_view_as_and_reshape_as_take_the_other_shape():
    a = np.arange(12.0)
    x = tensora.tensor(a)
    other = tensora.zeros(3, 4, dtype=tensora.int64)
    v = x.view_as(other)
    assert v.dtype is tensora.float64  # other's dtype plays no part
    np.testing.assert_array_equal(v.numpy(), a.reshape(3, 4))
    v[0, 0] = 100.0
    assert x[0].item() == 100.0  # a view shares storage
    check_op(lambda t: t.view_as(tensora.zeros(2, 6)), lambda t: t.reshape(2, 6), [(12,)])
    check_op(lambda t: t.transpose(0, 1).reshape_as(tensora.zeros(12)), lambda t: t.T.reshape(12), [(3, 4)])


def test_view_as_refuses_what_needs_a_copy_and_non_tensors():
    t = tensora.randn(3, 4).transpose(0, 1)
    with pytest.raises(ShapeError, match="reshape"):
        t.view_as(tensora.zeros(12))
    assert tuple(t.reshape_as(tensora.zeros(12)).shape) == (12,)
    with pytest.raises(TypeError, match="must be Tensor, not tuple"):
        t.view_as((12,))
    with pytest.raises(TypeError, match="must be Tensor"):
        t.reshape_as(12)
    with pytest.raises(ShapeError, match="invalid"):
        t.reshape_as(tensora.zeros(5))


# -- nan_to_num ------------------------------------------------------------------------------

def _with_nonfinite(shape, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    flat = a.reshape(-1)
    flat[::5], flat[1::7], flat[2::9] = NAN, INF, -INF
    return a


@pytest.mark.parametrize("kw", [{}, {"nan": 1.5}, {"nan": -2.0, "posinf": 10.0, "neginf": -10.0},
                                {"posinf": 3.0}])
def test_nan_to_num_matches_numpy_and_passes_gradients_where_finite(kw):
    a = _with_nonfinite((4, 5))
    check_op(lambda t: tensora.nan_to_num(t, **kw), lambda t: np.nan_to_num(t, **{"nan": 0.0, **kw}), [a])
    x = tensora.tensor(a, requires_grad=True)
    x.nan_to_num(**kw).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.isfinite(a).astype(np.float64))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_nan_to_num_default_bounds_are_the_dtype_limits(dtype):
    import ml_dtypes
    d = getattr(tensora, dtype)
    out = tensora.tensor([NAN, INF, -INF, 1.0], dtype=d).nan_to_num()
    info = ml_dtypes.finfo(d.np_dtype)
    assert out.dtype is d
    np.testing.assert_array_equal(out.numpy().astype(np.float64), [0.0, float(info.max), float(info.min), 1.0])


def test_nan_to_num_casts_replacements_to_the_dtype_and_keeps_integers():
    out = tensora.tensor([NAN, INF], dtype=tensora.float16).nan_to_num(nan=1e6, posinf=1e6)
    assert np.isinf(out.numpy()).all()  # 1e6 overflows float16, as in torch
    i = tensora.tensor([1, 2])
    assert tensora.nan_to_num(i, nan=1.5).tolist() == [1, 2] and tensora.nan_to_num(i).dtype is tensora.int64


def test_nan_to_num_in_place_and_double_backward():
    a = _with_nonfinite((3, 4), seed=1)
    x = tensora.tensor(a)
    assert x.nan_to_num_(nan=7.0) is x
    np.testing.assert_array_equal(x.numpy(), np.nan_to_num(a, nan=7.0))
    y = tensora.tensor(a, requires_grad=True)
    assert gradgradcheck(lambda t: t.nan_to_num() ** 2, [y])
    leaf = tensora.tensor(a, requires_grad=True)
    z = leaf * 2
    z.nan_to_num_()
    z.sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), 2 * np.isfinite(a))


def test_nan_to_num_rejects_non_numbers():
    x = tensora.ones(2)
    with pytest.raises(TypeError, match="'nan' must be a number, not str"):
        x.nan_to_num(nan="a")
    with pytest.raises(TypeError, match="'posinf'"):
        tensora.nan_to_num(x, posinf=[1.0])


# -- cumprod ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cumprod_matches_numpy_with_gradients(dim):
    check_op(lambda t: tensora.cumprod(t, dim), lambda t: np.cumprod(t, axis=dim), [(3, 4, 5)], gradgrad=True)


@pytest.mark.parametrize("values", [
    [2.0, 0.0, 3.0, 4.0],            # one zero
    [0.0, 2.0, 3.0, 0.5],            # a zero first
    [1.5, 2.0, 3.0, 0.0],            # a zero last
    [2.0, 0.0, 3.0, 0.0, 5.0],       # two zeros: the second gets no gradient
    [0.0, 0.0, 0.0],
])
def test_cumprod_gradient_with_zeros_matches_finite_differences(values):
    x = tensora.tensor(np.array(values), requires_grad=True)
    assert gradcheck(lambda t: t.cumprod(0), [x])
    assert gradgradcheck(lambda t: t.cumprod(0), [x])  # the O(n^2) rule, recorded


def test_cumprod_gradient_with_zeros_in_some_rows():
    a = np.random.default_rng(3).standard_normal((4, 5, 3))
    a[0, 2, 1] = a[1, 0, 0] = a[1, 3, 0] = a[3, 4, 2] = 0.0
    for dim in (0, 1, 2):
        check_op(lambda t: t.cumprod(dim), lambda t: np.cumprod(t, axis=dim), [a], gradgrad=dim == 1)


def test_cumprod_hand_derived_gradient_at_zeros():
    # y = [x0, x0 x1, x0 x1 x2, x0 x1 x2 x3] at x = [2, 0, 3, 0]: dy/dx summed over outputs is
    # [1 + 0 + 0 + 0, x0 + x0 x2 + x0 x2 x3, 0, 0] = [1, 2 + 6 + 0, 0, 0].
    x = tensora.tensor([2.0, 0.0, 3.0, 0.0], requires_grad=True)
    x.cumprod(0).sum().backward()
    assert x.grad.tolist() == [1.0, 8.0, 0.0, 0.0]


def test_cumprod_dtypes_scalars_and_in_place():
    assert tensora.tensor([1, 2, 3]).cumprod(0).dtype is tensora.int64
    assert tensora.tensor([True, False, True]).cumprod(0).tolist() == [1, 0, 0]
    h = tensora.tensor([1.0, 2.0, 3.0], dtype=tensora.float16)
    assert h.cumprod(0, dtype=tensora.float64).dtype is tensora.float64
    assert tensora.tensor(3.0).cumprod(0).item() == 3.0 and tensora.tensor(3.0).cumprod(-1).shape == ()
    x = tensora.tensor([1.0, 2.0, 3.0])
    assert x.cumprod_(0) is x and x.tolist() == [1.0, 2.0, 6.0]
    a = np.array([1.0, 0.5, 2.0])
    y = tensora.tensor(a, requires_grad=True)
    assert gradcheck(lambda t: t.cumprod(0, dtype=tensora.float64) * 1.0, [y])


def test_cumprod_rejects_bad_dims():
    x = tensora.ones(2, 3)
    with pytest.raises(IndexError, match="range"):
        x.cumprod(2)
    with pytest.raises(TypeError, match="'dim' must be int, not str"):
        tensora.cumprod(x, "1")
    with pytest.raises(TypeError, match="'dim' must be int, not NoneType"):
        tensora.cumprod(x, None)


# -- median, nanmedian -----------------------------------------------------------------------

def _lower_median(a, dim=None, ignore_nan=False):
    """torch's median in NumPy: sorted[(n - 1) // 2] (nan-aware), never the mean of the middle two."""
    if dim is None:
        a = a.reshape(-1)
        dim = 0
    s = np.sort(a, axis=dim)  # nan last
    nans = np.isnan(a).sum(axis=dim, keepdims=True)
    n = a.shape[dim]
    k = np.maximum((n - nans - 1) // 2, 0) if ignore_nan else np.where(nans > 0, n - nans, (n - 1) // 2)
    return np.take_along_axis(s, k, axis=dim).squeeze(dim)


@pytest.mark.parametrize("shape", [(7,), (6,), (3, 4), (2, 3, 5)])
def test_median_of_all_values_is_the_lower_median(shape):
    check_op(lambda t: t.median(), lambda t: _lower_median(t), [shape])
    a = np.arange(1.0, 5.0)
    assert tensora.tensor(a).median().item() == 2.0 != np.median(a)


@pytest.mark.parametrize("dim,keepdim", [(0, False), (1, True), (-1, False), (2, True)])
def test_median_along_a_dim_gives_values_and_indices(dim, keepdim):
    a = np.random.default_rng(1).standard_normal((4, 6, 5))
    out = tensora.median(tensora.tensor(a), dim, keepdim=keepdim)
    assert type(out).__name__ == "median" and out._fields == ("values", "indices")
    expected = _lower_median(a, dim)
    if keepdim:
        expected = np.expand_dims(expected, dim)
    np.testing.assert_array_equal(out.values.numpy(), expected)
    np.testing.assert_array_equal(np.take_along_axis(a, np.asarray(out.indices.numpy()).reshape(
        expected.shape if keepdim else np.expand_dims(expected, dim).shape), axis=dim).reshape(expected.shape),
        expected)
    assert out.indices.dtype is tensora.int64
    check_op(lambda t: t.median(dim, keepdim).values, lambda t: expected, [a])


def test_median_indices_among_ties_and_nans_follow_torchs_order():
    x = tensora.tensor([[1.0, 1.0, 1.0, 0.0], [2.0, 5.0, 2.0, 2.0], [1.0, NAN, 1.0, NAN]])
    values, indices = x.median(1)
    assert indices.tolist() == [0, 2, 1]  # the k-th of equal values in index order; the first nan
    assert values[:2].tolist() == [1.0, 2.0] and np.isnan(values[2].item())
    values, indices = tensora.nanmedian(x, 1)
    assert values.tolist() == [1.0, 2.0, 1.0] and indices.tolist() == [0, 2, 0]


def test_median_gradients():
    # No dim: the gradient is shared by all elements equal to the median (torch's evenly_distribute_backward).
    x = tensora.tensor([1.0, 2.0, 2.0, 3.0], requires_grad=True)
    x.median().backward()
    assert x.grad.tolist() == [0.0, 0.5, 0.5, 0.0]
    # Along a dim: all of it to the selected index.
    y = tensora.tensor([1.0, 2.0, 2.0, 3.0], requires_grad=True)
    y.median(0).values.backward()
    assert y.grad.tolist() == [0.0, 1.0, 0.0, 0.0]
    a = np.random.default_rng(2).standard_normal((3, 5))
    assert gradcheck(lambda t: t.median(), [tensora.tensor(a, requires_grad=True)])
    assert gradcheck(lambda t: t.median(1, keepdim=True).values, [tensora.tensor(a, requires_grad=True)])
    assert gradgradcheck(lambda t: t.median(0).values ** 2, [tensora.tensor(a, requires_grad=True)])


def test_median_and_nanmedian_with_nan():
    a = np.array([[3.0, NAN, 1.0, 2.0], [NAN, NAN, NAN, NAN], [4.0, 0.0, 5.0, 1.0]])
    assert np.isnan(tensora.tensor(a).median().item())
    assert tensora.tensor(a).nanmedian().item() == _lower_median(a, ignore_nan=True) == 2.0
    got = tensora.nanmedian(tensora.tensor(a), 1).values.numpy()
    np.testing.assert_array_equal(got, _lower_median(a, 1, ignore_nan=True))
    np.testing.assert_array_equal(tensora.median(tensora.tensor(a), -1).values.numpy(), _lower_median(a, 1))
    x = tensora.tensor(a[0], requires_grad=True)
    x.median().backward()  # the result is nan: its gradient goes to the nan
    assert x.grad.tolist() == [0.0, 1.0, 0.0, 0.0]
    assert np.isnan(tensora.tensor([NAN, NAN]).nanmedian().item())


def test_median_integers_scalars_and_empty():
    assert tensora.tensor([5, 1, 4, 2]).median().tolist() == 2
    assert tensora.tensor([5, 1, 4, 2]).median(0).values.dtype is tensora.int64
    v, i = tensora.tensor(5.0).median(0)
    assert v.item() == 5.0 and i.item() == 0
    assert np.isnan(tensora.tensor([]).median().item())
    out = tensora.zeros(0, 2).median(1)
    assert tuple(out.values.shape) == (0,) and tuple(out.indices.shape) == (0,)


def test_median_rejects_bad_input():
    x = tensora.randn(2, 3)
    with pytest.raises(ShapeError, match="non-zero size"):
        tensora.zeros(2, 0).median(1)
    with pytest.raises(IndexError, match="range"):
        x.median(2)
    with pytest.raises(TypeError, match="'dim' must be int, not str"):
        x.median("0")
    with pytest.raises(TypeError, match="keepdim"):
        x.median(keepdim=True)
    with pytest.raises(DTypeError, match="bool"):
        tensora.tensor([True, False]).median()
    with pytest.raises(ShapeError, match="empty integer"):
        tensora.tensor([], dtype=tensora.int64).median()
    with pytest.raises(TypeError, match="must be Tensor"):
        tensora.nanmedian([1.0, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensora.tensor([NAN, 1.0]).nanmedian(0)  # no NumPy warnings leak out
