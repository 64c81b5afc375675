"""View ops (tensora/ops/shape.py) against NumPy float64; gradients by gradcheck; views share storage."""

import numpy as np
import pytest
from optest import check_op

import tensora
from tensora import ShapeError


def _t(a, **kw):
    return tensora.tensor(np.asarray(a), **kw)


def _shares(view, base):
    return np.shares_memory(view.detach().numpy(), base.detach().numpy())


# -- reshape / view ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 4), (-1,), (2, -1, 3), (4, 3, 2, 1), (24,)])
def test_reshape(shape):
    check_op(lambda x: x.reshape(shape), lambda x: x.reshape(shape), [(2, 3, 4)], gradgrad=True)
    check_op(lambda x: tensora.reshape(x, *shape), lambda x: x.reshape(shape), [(2, 3, 4)])


def test_reshape_view_or_copy():
    x = tensora.arange(12.0).reshape(3, 4)
    v = x.view(4, 3)
    assert _shares(v, x) and v._base is x._base  # views always point at the root storage owner
    copied = x.T.reshape(12)  # not expressible with strides: a copy, still correct
    assert copied.tolist() == np.arange(12.0).reshape(3, 4).T.ravel().tolist()
    check_op(lambda x: x.T.reshape(-1), lambda x: x.T.reshape(-1), [(3, 4)], gradgrad=True)
    assert tensora.ones(1).reshape(()).shape == ()
    assert tensora.ones(0, 3).reshape(3, 0, 5).shape == (3, 0, 5)


def test_view_failure_names_shape_and_strides():
    x = tensora.arange(12.0).reshape(3, 4).T
    with pytest.raises(ShapeError, match=r"view size \[12\] is not compatible .*shape \[4, 3\], "
                                         r"strides \(1, 4\).*use \.reshape"):
        x.view(12)


@pytest.mark.parametrize("shape,msg", [((5,), r"shape \[5\] is invalid for input of size 24"),
                                       ((-1, -1), "only one dimension can be inferred"),
                                       ((7, -1), r"shape \[7, -1\] is invalid for input of size 24"),
                                       ((-2, 12), "invalid shape dimension")])
def test_reshape_errors(shape, msg):
    with pytest.raises(ShapeError, match=msg):
        tensora.ones(2, 3, 4).reshape(shape)


def test_reshape_of_empty_and_of_borrowed_memory():
    # NumPy would accept these shapes; PyTorch (and so tensora) refuses -1 next to a 0 and any
    # negative size but -1, whatever the input size.
    assert tensora.zeros(0).reshape(-1).shape == (0,)
    with pytest.raises(ShapeError, match=r"shape \[0, -1\] is invalid for input of size 0"):
        tensora.zeros(0).reshape(0, -1)
    with pytest.raises(ShapeError, match="invalid shape dimension"):
        tensora.zeros(0).reshape(-2, 0)
    # A tensor over memory NumPy does not own (frombuffer): view() still knows it got a view.
    x = tensora.from_numpy(np.frombuffer(bytearray(64), dtype=np.float32))
    v = x.view(4, 4)
    assert _shares(v, x) and v._base is x
    with pytest.raises(ShapeError, match="not compatible"):
        x.view(4, 4).T.view(16)


def test_view_as_dtype():
    x = tensora.tensor([1.0], dtype=tensora.float32)
    assert x.view(tensora.int32).item() == np.float32(1.0).view(np.int32)


# -- transpose / permute / T / mT / movedim ---------------------------------------------------------

@pytest.mark.parametrize("d0,d1", [(0, 1), (0, 2), (-1, -2), (1, 1)])
def test_transpose(d0, d1):
    check_op(lambda x: x.transpose(d0, d1), lambda x: np.swapaxes(x, d0, d1), [(2, 3, 4)], gradgrad=True)


def test_transpose_is_a_view_and_t():
    x = tensora.arange(6.0).reshape(2, 3)
    y = x.transpose(0, 1)
    assert _shares(y, x) and not y.is_contiguous() and y.stride() == (1, 3)
    check_op(lambda x: x.t(), lambda x: x.T, [(2, 3)])
    check_op(lambda x: tensora.t(x), lambda x: x, [(3,)])
    with pytest.raises(ShapeError, match=r"<= 2 dimensions, got shape \[2, 3, 4\]"):
        tensora.ones(2, 3, 4).t()
    with pytest.raises(IndexError, match=r"dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"):
        x.transpose(0, 2)


@pytest.mark.parametrize("dims", [(2, 0, 1), (0, 1, 2), (-1, 0, 1), (1, 2, 0)])
def test_permute(dims):
    check_op(lambda x: x.permute(*dims), lambda x: np.transpose(x, dims), [(2, 3, 4)], gradgrad=True)
    check_op(lambda x: tensora.permute(x, dims), lambda x: np.transpose(x, dims), [(2, 3, 4)])


def test_permute_errors():
    with pytest.raises(ShapeError, match=r"permute dims \[0, 0, 1\] do not match a tensor of shape \[2, 3, 4\]"):
        tensora.ones(2, 3, 4).permute(0, 0, 1)
    with pytest.raises(ShapeError, match="do not match"):
        tensora.ones(2, 3).permute(0)


def test_T_mT_movedim():
    check_op(lambda x: x.T, lambda x: x.T, [(2, 3, 4)], gradgrad=True)
    check_op(lambda x: x.mT, lambda x: np.swapaxes(x, -1, -2), [(2, 3, 4)], gradgrad=True)
    check_op(lambda x: x.movedim(0, -1), lambda x: np.moveaxis(x, 0, -1), [(2, 3, 4)])
    check_op(lambda x: tensora.movedim(x, (0, 1), (2, 0)), lambda x: np.moveaxis(x, (0, 1), (2, 0)), [(2, 3, 4)])
    with pytest.raises(ShapeError, match=r"mT needs at least 2 dims, got shape \[3\]"):
        tensora.ones(3).mT


# -- expand / broadcast_to ---------------------------------------------------------------------------

@pytest.mark.parametrize("src,sizes,ref", [((3, 1), (3, 4), (3, 4)), ((1, 3), (2, 5, -1), (2, 5, 3)),
                                           ((3,), (2, 3), (2, 3)), ((1,), (0,), (0,))])
def test_expand_and_backward_sums(src, sizes, ref):
    check_op(lambda x: x.expand(*sizes), lambda x: np.broadcast_to(x, ref), [src], gradgrad=True)


def test_expand_view_gradient_value_and_aliases():
    x = tensora.tensor([[1.0], [2.0]], requires_grad=True)
    y = x.expand(2, 3)
    assert y.stride() == (1, 0)
    (y * _t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=tensora.float32)).sum().backward()
    assert x.grad.tolist() == [[6.0], [15.0]]
    other = tensora.ones(4, 2, 3)
    assert x.expand_as(other).shape == (4, 2, 3) and tensora.broadcast_to(x, (2, 2, 3)).shape == (2, 2, 3)
    with pytest.raises(Exception, match="read-only"):
        y.detach()[0, 0] = 5.0


@pytest.mark.parametrize("sizes,msg", [((3,), r"number of sizes \(1\) must be >= the number of dims"),
                                       ((2, 4), r"expanded size 4 must match the existing size 3 at dim 1"),
                                       ((-1, 2, 3), "-1 not allowed for the new leading dim 0")])
def test_expand_errors(sizes, msg):
    with pytest.raises(ShapeError, match=msg):
        tensora.ones(2, 3).expand(*sizes)


# -- narrow / squeeze / unsqueeze / flatten / unflatten ------------------------------------------------

@pytest.mark.parametrize("dim,start,length", [(0, 1, 2), (1, 0, 1), (-1, -3, 2), (1, 4, 0)])
def test_narrow(dim, start, length):
    def ref(x):
        d = dim % x.ndim
        s = start % x.shape[d]
        return np.take(x, np.arange(s, s + length), axis=d)

    check_op(lambda x: x.narrow(dim, start, length), ref, [(3, 4)], gradgrad=True)


def test_narrow_is_a_view_and_errors():
    x = tensora.arange(10.0)
    n = x.narrow(0, 2, 3)
    assert _shares(n, x) and n.storage_offset() == 2
    with pytest.raises(ShapeError, match=r"start 8 \+ length 3 exceeds dim 0 of size 10"):
        x.narrow(0, 8, 3)


@pytest.mark.parametrize("dim", [None, 0, 2, -1, (0, 2), 1])
def test_squeeze(dim):
    def ref(x):
        if dim is None:
            return np.squeeze(x)
        dims = dim if isinstance(dim, tuple) else (dim,)
        return np.squeeze(x, tuple(d for d in dims if x.shape[d] == 1))

    fn = (lambda x: x.squeeze()) if dim is None else (lambda x: x.squeeze(dim))
    check_op(fn, ref, [(1, 3, 1, 2)], gradgrad=True)


@pytest.mark.parametrize("dim", [0, 1, -1, 3, -4])
def test_unsqueeze(dim):
    check_op(lambda x: x.unsqueeze(dim), lambda x: np.expand_dims(x, dim), [(2, 3, 4)], gradgrad=True)


def test_unsqueeze_range_error_and_0d():
    with pytest.raises(IndexError, match=r"\[-3, 2\], but got 3"):
        tensora.ones(2, 3).unsqueeze(3)
    s = tensora.tensor(2.0)
    assert s.unsqueeze(0).shape == (1,) and s.squeeze().shape == () and s.squeeze(0).shape == ()


@pytest.mark.parametrize("start,end", [(0, -1), (1, 2), (0, 1), (2, 2), (-2, -1)])
def test_flatten(start, end):
    def ref(x):
        s, e = start % x.ndim, end % x.ndim
        return x.reshape(x.shape[:s] + (-1,) + x.shape[e + 1:])

    check_op(lambda x: x.flatten(start, end), ref, [(2, 3, 4)], gradgrad=True)


def test_flatten_0d_and_error():
    assert tensora.tensor(3.0).flatten().shape == (1,)
    with pytest.raises(ShapeError, match="start_dim 2 comes after end_dim 1"):
        tensora.ones(2, 3, 4).flatten(2, 1)


@pytest.mark.parametrize("dim,sizes,ref", [(1, (3, 4), (2, 3, 4, 5)), (-1, (5, 1), (2, 12, 5, 1)),
                                           (1, (-1, 2), (2, 6, 2, 5))])
def test_unflatten(dim, sizes, ref):
    check_op(lambda x: x.unflatten(dim, sizes), lambda x: x.reshape(ref), [(2, 12, 5)], gradgrad=True)


def test_unflatten_error():
    with pytest.raises(ShapeError, match=r"shape \[5, 3\] is invalid for input of size 12"):
        tensora.ones(2, 12).unflatten(1, (5, 3))


# -- contiguous / clone --------------------------------------------------------------------------------------

def test_contiguous():
    x = tensora.arange(6.0).reshape(2, 3)
    assert x.contiguous() is x
    c = x.T.contiguous()
    assert c.is_contiguous() and not _shares(c, x) and c.tolist() == [[0, 3], [1, 4], [2, 5]]
    check_op(lambda x: x.T.contiguous(), lambda x: x.T, [(2, 3)], gradgrad=True)


def test_clone():
    x = tensora.arange(4.0)
    c = x.clone()
    c[0] = 9.0
    assert x[0].item() == 0.0 and c.dtype == x.dtype
    check_op(lambda x: tensora.clone(x[:, ::2]), lambda x: x[:, ::2], [(2, 4)], gradgrad=True)
    assert tensora.ones(2, dtype=tensora.bfloat16).clone().dtype == tensora.bfloat16


# -- chains of views keep one base, and in-place writes through them are seen -------------------------------

def test_view_chain_shares_base_and_version():
    x = tensora.zeros(2, 3, 4)
    v = x.permute(2, 0, 1).reshape(4, 6)[1:3].unsqueeze(0)
    assert v._base is x and _shares(v, x)
    before = x._version
    v[0, 0, 0] = 1.0
    assert x._version == before + 1 and x.sum().item() == 1.0
