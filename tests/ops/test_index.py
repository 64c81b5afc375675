"""x[key] and x[key] = value (tensora/ops/index.py, inplace.py) against NumPy indexing;
gradients by gradcheck, including repeated indices."""

import numpy as np
import pytest
from optest import check_op

import tensora
from tensora import AutogradError, DTypeError, ShapeError

A = np.arange(60.0).reshape(3, 4, 5)
MASK = A[:, :, 0] % 3 == 0  # (3, 4)


def _t(a, **kw):
    return tensora.tensor(np.asarray(a), **kw)


# Each key is given twice: as tensora sees it and as the NumPy reference reads it.
KEYS = [
    ("int", lambda: 1, 1),
    ("negative int", lambda: (-1, 2), (-1, 2)),
    ("slices", lambda: (slice(0, 2), slice(1, None, 2)), (slice(0, 2), slice(1, None, 2))),
    ("none and ellipsis", lambda: (None, Ellipsis, 0), (None, Ellipsis, 0)),
    ("int tensor", lambda: _t([2, 0]), np.array([2, 0])),
    ("repeated int tensor", lambda: _t([0, 2, 0, 0]), np.array([0, 2, 0, 0])),
    ("2-d int tensor", lambda: _t([[0, 1], [1, 1]]), np.array([[0, 1], [1, 1]])),
    ("int list", lambda: [1, 1, 2], [1, 1, 2]),
    ("bool mask", lambda: _t(MASK), MASK),
    ("bool mask on dim 1", lambda: (slice(None), _t([True, False, True, True])),
     (slice(None), np.array([True, False, True, True]))),
    ("uint8 mask", lambda: _t(MASK.astype(np.uint8)), MASK),
    ("two int tensors", lambda: (_t([0, 2]), _t([3, 3])), (np.array([0, 2]), np.array([3, 3]))),
    ("int tensors around a slice", lambda: (_t([0, 2]), slice(None), _t([1, 1])),
     (np.array([0, 2]), slice(None), np.array([1, 1]))),
    ("int and tensor", lambda: (1, _t([0, 0, 3])), (1, np.array([0, 0, 3]))),
    ("slice then int32 tensor", lambda: (slice(1, 3), _t(np.array([3, 0], np.int32))), (slice(1, 3), np.array([3, 0]))),
    ("0-d int tensor", lambda: _t(2), 2),
    ("empty list", lambda: [], np.array([], dtype=np.int64)),
    ("broadcast int tensors", lambda: (_t([[0], [2]]), _t([1, 3])), (np.array([[0], [2]]), np.array([1, 3]))),
]


@pytest.mark.parametrize("name,key,ref_key", KEYS, ids=[k[0] for k in KEYS])
def test_getitem_forward_and_gradient(name, key, ref_key):
    check_op(lambda x: x[key()], lambda x: x[ref_key], [A.copy()], gradgrad=True)


def test_basic_indexing_gives_views_advanced_gives_copies():
    x = _t(A)
    v = x[1, 1:3]
    c = x[_t([1])]
    x[1, 1, 0] = -5.0
    assert v[0, 0].item() == -5.0 and v._base is x
    assert c[0, 1, 0].item() == A[1, 1, 0]
    flat = tensora.arange(3.0)
    e = flat[1]  # a 0-d view, as in PyTorch, not a detached scalar
    flat[1] = 7.0
    assert e.shape == () and e.item() == 7.0 and e._base is flat


def test_repeated_indices_sum_gradients():
    x = tensora.zeros(4, dtype=tensora.float64, requires_grad=True)
    (x[_t([0, 0, 3, 0])] * _t([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert x.grad.tolist() == [7.0, 0.0, 0.0, 3.0]


def test_gradient_through_non_contiguous_input():
    check_op(lambda x: x.T[_t([0, 0, 2])], lambda x: x.T[[0, 0, 2]], [(4, 3)])
    check_op(lambda x: x[:, ::2][_t(np.array([[True, False], [False, True]]))], lambda x: x[:, ::2][[0, 1], [0, 1]],
             [(2, 4)])


@pytest.mark.parametrize("key,err,msg", [
    ((5,), IndexError, "shape \\[3, 4, 5\\]"),
    ((slice(None, None, -1),), ValueError, "step must be greater than zero"),
    ((1.5,), DTypeError, "float index"),
    ((_t([0.0]),), DTypeError, "must be long, int, byte or bool, got float64"),
    (([0.5],), DTypeError, "index lists must hold ints or bools"),
])
def test_getitem_errors(key, err, msg):
    with pytest.raises(err, match=msg):
        _t(A)[key if len(key) > 1 else key[0]]


# -- setitem ---------------------------------------------------------------------------------

SET_KEYS = [
    ("int", 1, (4, 5)),
    ("slices", (slice(None), slice(1, 3)), (3, 2, 5)),
    ("mask", MASK, (int(MASK.sum()), 5)),
    ("int tensor", np.array([2, 0]), (2, 4, 5)),
    ("two int tensors", (np.array([0, 2]), np.array([3, 1])), (2, 5)),
]


def _tensora_key(k):
    if isinstance(k, tuple):
        return tuple(_t(p) if isinstance(p, np.ndarray) else p for p in k)
    return _t(k) if isinstance(k, np.ndarray) else k


@pytest.mark.parametrize("name,key,vshape", SET_KEYS, ids=[k[0] for k in SET_KEYS])
def test_setitem_forward_and_gradients(name, key, vshape):
    def fn(x, v):
        y = x * 1.0  # a non-leaf in the graph: the write rebases its history
        y[_tensora_key(key)] = v
        return y

    def ref(x, v):
        out = x.copy()
        out[key] = v
        return out

    check_op(fn, ref, [A.copy(), vshape], gradgrad=True)
    check_op(fn, ref, [A.copy(), vshape[-1:]])  # the value broadcasts; its gradient is summed back


def test_setitem_scalar_values_and_dtype_cast():
    x = tensora.zeros(2, 3, dtype=tensora.int32)
    x[0] = 7.9
    x[1, _t([0, 2])] = _t([1.0, 2.0])
    assert x.dtype == tensora.int32 and x.tolist() == [[7, 7, 7], [1, 0, 2]]
    y = tensora.zeros(3)
    y[_t([True, False, True])] = tensora.tensor(4.0)
    assert y.tolist() == [4.0, 0.0, 4.0]


def test_setitem_on_non_leaf_gradient_flows_to_both_sides():
    w = tensora.ones(3, 2, requires_grad=True)
    v = tensora.tensor([5.0, 6.0], requires_grad=True)
    y = w * 2
    y[_t([0, 2])] = v * 3
    assert y.tolist() == [[15, 18], [2, 2], [15, 18]]
    (y * _t(np.arange(6.0).reshape(3, 2), dtype=tensora.float32)).sum().backward()
    assert w.grad.tolist() == [[0, 0], [4, 6], [0, 0]]
    assert v.grad.tolist() == [3 * (0 + 4), 3 * (1 + 5)]


def test_setitem_version_and_autograd_guards():
    leaf = tensora.ones(3, requires_grad=True)
    with pytest.raises(AutogradError, match="leaf tensor that requires grad"):
        leaf[0] = 2.0
    with tensora.no_grad():
        leaf[0] = 2.0
    assert leaf.tolist() == [2.0, 1.0, 1.0]
    base = leaf * 1
    view = base[1:]
    view[0] = 0.0  # recorded on the base, as torch's CopySlices
    assert base.tolist() == [2.0, 0.0, 1.0]
    base.sum().backward()
    assert leaf.grad.tolist() == [1.0, 0.0, 1.0]
    leaf.grad = None
    with pytest.raises(AutogradError, match="leaf tensor that requires grad"):
        leaf[1:][0] = 0.0  # a view of the leaf itself
    x = tensora.ones(3, requires_grad=True)
    y = x * 1
    z = y * y  # saves y
    y[0] = 5.0
    with pytest.raises(AutogradError, match="modified by an in-place operation"):
        z.sum().backward()


def test_setitem_shape_error():
    with pytest.raises(ShapeError, match=r"value tensor of shape \[3\] cannot be broadcast to indexing result "
                                         r"of shape \[2, 2\]"):
        tensora.zeros(2, 2)[...] = tensora.ones(3)
