"""gather/scatter, index_select/index_add, masked ops, embedding, one_hot, sort, topk
(tensora/ops/gather.py) against NumPy float64 references; gradients by gradcheck."""

import numpy as np
import pytest
from optest import check_op

import tensora
from tensora import DTypeError, ShapeError


def _t(a, **kw):
    return tensora.tensor(np.asarray(a), **kw)


def _np_gather(x, dim, index):
    key = list(np.indices(index.shape, sparse=True))
    key[dim] = index
    return x[tuple(key)]


def _np_scatter_add(x, dim, index, src):
    out = x.copy()
    key = list(np.indices(index.shape, sparse=True))
    key[dim] = index
    np.add.at(out, tuple(key), src[tuple(slice(0, s) for s in index.shape)])
    return out


IDX = np.array([[0, 2, 2, 1], [1, 1, 0, 0]])  # repeats on purpose: gradients must accumulate


# -- gather / scatter --------------------------------------------------------------------

@pytest.mark.parametrize("dim,xshape,index", [(1, (2, 3), IDX), (0, (2, 4), IDX[:, :3] % 2), (-1, (3, 5), IDX),
                                              (1, (3, 4, 2), np.array([[[0], [3]], [[1], [1]]]))])
def test_gather(dim, xshape, index):
    check_op(lambda x: x.gather(dim, _t(index)), lambda x: _np_gather(x, dim, index), [xshape], gradgrad=True)


def test_gather_non_contiguous_ints_and_0d():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 2))
    check_op(lambda x: tensora.gather(x.T, 1, _t(IDX)), lambda x: _np_gather(x.T, 1, IDX), [a])
    ints = tensora.arange(6).reshape(2, 3)
    assert ints.gather(1, _t([[2], [0]])).tolist() == [[2], [3]]
    assert tensora.tensor(3.0).gather(0, tensora.tensor(0)).item() == 3.0


@pytest.mark.parametrize("index,err,msg", [
    (np.array([[3]]), IndexError, "index 3 is out of bounds for dimension of size 3"),
    (np.array([[-1]]), IndexError, "index -1 is out of bounds"),
    (np.array([0, 1]), ShapeError, r"input \[2, 3\], index \[2\]"),
    (np.array([[0.0]]), DTypeError, "must be an integer tensor"),
    (np.zeros((3, 1), int), ShapeError, r"no larger than input"),
])
def test_gather_errors(index, err, msg):
    with pytest.raises(err, match=msg):
        tensora.ones(2, 3).gather(1, _t(index))


@pytest.mark.parametrize("dim", [0, 1])
def test_scatter_add(dim):
    index = IDX[:, :3] if dim == 1 else IDX[:, :3] % 2
    check_op(lambda x, s: x.scatter_add(dim, _t(index), s), lambda x, s: _np_scatter_add(x, dim, index, s),
             [(2, 3), (2, 4)], gradgrad=True)  # src larger than index: only its leading block is read


def test_scatter_tensor_and_value():
    index = np.array([[0, 2], [1, 0]])  # no repeats: the written values are well defined

    def ref(x, s):
        out = x.copy()
        out[[[0], [1]], index] = s[:, :2]
        return out

    check_op(lambda x, s: tensora.scatter(x, 1, _t(index), s), ref, [(2, 3), (2, 3)], gradgrad=True)
    check_op(lambda x: x.scatter(1, _t(index), 2.5), lambda x: ref(x, np.full((2, 2), 2.5)), [(2, 3)])
    check_op(lambda x: x.scatter(1, _t(index), value=-1.0), lambda x: ref(x, -np.ones((2, 2))), [(2, 3)])
    check_op(lambda x, s: x.scatter(1, _t(IDX), s, reduce="add"), lambda x, s: _np_scatter_add(x, 1, IDX, s),
             [(2, 3), (2, 4)])
    out = tensora.zeros(2, 3).scatter(1, _t(IDX), 1.0, reduce="add")
    np.testing.assert_array_equal(out.numpy(), _np_scatter_add(np.zeros((2, 3)), 1, IDX, np.ones((2, 4))))
    with pytest.raises(ValueError, match="reduce must be None or 'add'"):
        tensora.zeros(2, 3).scatter(1, _t(IDX), 1.0, reduce="multiply")
    with pytest.raises(TypeError, match="pass src"):
        tensora.zeros(2, 3).scatter(1, _t(IDX))


def test_scatter_casts_src_to_input_dtype():
    out = tensora.zeros(3, dtype=tensora.float32).scatter(0, _t([1]), tensora.ones(1, dtype=tensora.float64))
    assert out.dtype == tensora.float32 and out.tolist() == [0, 1, 0]


def test_scatter_in_place_forms():
    x = tensora.zeros(2, 3)
    x.scatter_(1, _t([[1], [2]]), 1.0)
    assert x.tolist() == [[0, 1, 0], [0, 0, 1]]
    x.scatter_add_(1, _t([[1, 1]]), tensora.ones(1, 2))
    assert x.tolist() == [[0, 3, 0], [0, 0, 1]]
    # on a non-leaf that is part of a graph, the gradient still flows
    w = tensora.ones(2, 3, requires_grad=True)
    y = w * 2
    y.scatter_(1, _t([[0], [1]]), 0.0)
    y.sum().backward()
    assert w.grad.tolist() == [[0, 2, 2], [2, 0, 2]]


# -- index_select / index_add ---------------------------------------------------------------

@pytest.mark.parametrize("dim,index", [(0, [2, 0, 2]), (1, [1]), (-1, [0, 0, 1, 1]), (0, [])])
def test_index_select(dim, index):
    idx = np.array(index, dtype=np.int64)
    check_op(lambda x: x.index_select(dim, _t(idx)), lambda x: np.take(x, idx, axis=dim), [(3, 2)], gradgrad=True)


def test_index_select_0d_index_and_errors():
    x = tensora.arange(6.0).reshape(2, 3)
    assert x.index_select(1, tensora.tensor(2)).tolist() == [[2.0], [5.0]]
    with pytest.raises(ShapeError, match=r"0-d or 1-D, got shape \[1, 1\]"):
        x.index_select(0, _t([[0]]))
    with pytest.raises(IndexError, match="index 3 is out of bounds for dimension of size 3"):
        x.index_select(1, _t([3]))


@pytest.mark.parametrize("alpha", [1, 2.5])
def test_index_add(alpha):
    idx = np.array([0, 2, 0])

    def ref(x, s):
        out = x.copy()
        np.add.at(out, (slice(None), idx), alpha * s)
        return out

    check_op(lambda x, s: x.index_add(1, _t(idx), s, alpha=alpha), ref, [(2, 3), (2, 3)], gradgrad=True)


def test_index_add_in_place_and_error():
    x = tensora.zeros(3)
    x.index_add_(0, _t([1, 1]), tensora.ones(2))
    assert x.tolist() == [0, 2, 0]
    with pytest.raises(ShapeError, match=r"source of shape \[3\] does not fit .* \(need \[2\]\)"):
        x.index_add(0, _t([1, 1]), tensora.ones(3))


# -- masks ------------------------------------------------------------------------------------

MASK = np.array([[True, False, True], [False, False, True]])


def test_masked_fill():
    check_op(lambda x: x.masked_fill(_t(MASK), -2.0), lambda x: np.where(MASK, -2.0, x), [(2, 3)], gradgrad=True)
    check_op(lambda x: x.masked_fill(_t(MASK[0]), 0.0), lambda x: np.where(MASK[0], 0.0, x), [(2, 3)])
    check_op(lambda x: x.masked_fill(_t(MASK), 1.0), lambda x: np.where(MASK, 1.0, x), [(3,)])  # x broadcasts
    # a 0-d tensor value gets the sum of the gradient over the filled positions
    x, v = tensora.ones(2, 3, requires_grad=True), tensora.tensor(5.0, requires_grad=True)
    (x.masked_fill(_t(MASK), v) * _t(np.arange(6.0).reshape(2, 3), dtype=tensora.float32)).sum().backward()
    assert v.grad.item() == 0 + 2 + 5 and x.grad.tolist() == [[0, 1, 0], [3, 4, 0]]
    ints = tensora.arange(3).masked_fill(_t([True, False, False]), 1.7)
    assert ints.dtype == tensora.int64 and ints.tolist() == [1, 1, 2]


def test_masked_fill_in_place_and_errors():
    x = tensora.zeros(2, 3)
    x.masked_fill_(_t(MASK), 1.0)
    assert x.numpy().tolist() == MASK.astype(float).tolist()
    w = tensora.ones(2, 3, requires_grad=True)
    y = w * 3
    y.masked_fill_(_t(MASK), 0.0)
    y.sum().backward()
    assert w.grad.numpy().tolist() == np.where(MASK, 0.0, 3.0).tolist()
    with pytest.raises(DTypeError, match="mask must be a bool tensor, got int64"):
        x.masked_fill(_t([[1, 0, 1]]), 0.0)
    with pytest.raises(ShapeError, match=r"value must be a number or a 0-d tensor, got shape \[1\]"):
        x.masked_fill(_t(MASK), tensora.ones(1))
    with pytest.raises(ShapeError, match=r"mask of shape \[2, 2, 3\] does not broadcast"):
        x.masked_fill_(_t(np.stack([MASK, MASK])), 0.0)


def test_masked_select():
    check_op(lambda x: x.masked_select(_t(MASK)), lambda x: x[MASK], [(2, 3)], gradgrad=True)
    check_op(lambda x: tensora.masked_select(x, _t(MASK)), lambda x: np.broadcast_to(x, (2, 3))[MASK], [(3,)])
    with pytest.raises(ShapeError, match=r"shapes \[2, 3\], \[4\] cannot be broadcast"):
        tensora.ones(2, 3).masked_select(_t([True, False, True, True]))
    with pytest.raises(ShapeError, match=r"masked_fill: .*input shapes \[2, 3\], \[4\]"):
        tensora.ones(2, 3).masked_fill(_t([True, False, True, True]), 1.0)


# -- embedding / one_hot ---------------------------------------------------------------------------

IDS = np.array([[0, 3, 3], [1, 0, 3]])


def test_embedding_forward_and_accumulating_gradient():
    check_op(lambda w: tensora.embedding(_t(IDS), w), lambda w: w[IDS], [(4, 3)], gradgrad=True)
    w = tensora.randn(4, 3, dtype=tensora.float64, requires_grad=True)
    g = np.random.default_rng(0).standard_normal((2, 3, 3))
    tensora.embedding(_t(IDS), w).backward(_t(g))
    expect = np.zeros((4, 3))
    np.add.at(expect, IDS.ravel(), g.reshape(-1, 3))
    np.testing.assert_allclose(w.grad.numpy(), expect)


@pytest.mark.parametrize("padding_idx", [3, -1])
def test_embedding_padding_row_gets_no_gradient(padding_idx):
    w = tensora.randn(4, 2, requires_grad=True)
    out = tensora.embedding(_t(IDS), w, padding_idx=padding_idx)
    np.testing.assert_array_equal(out.detach().numpy(), w.detach().numpy()[IDS])  # forward still reads the row
    out.sum().backward()
    assert w.grad.tolist() == [[2, 2], [1, 1], [0, 0], [0, 0]]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_embedding_dtypes(dtype):
    w = tensora.ones(5, 4, dtype=dtype, requires_grad=True)
    ids = _t(np.zeros(300, dtype=np.int64))
    tensora.embedding(ids, w).sum().backward()
    assert w.grad.dtype.name == dtype and w.grad[0, 0].item() == 300  # accumulated in float32


def test_embedding_errors():
    with pytest.raises(IndexError, match="index 4 is out of bounds for dimension of size 4"):
        tensora.embedding(_t([4]), tensora.ones(4, 2))
    with pytest.raises(IndexError, match="index -1"):
        tensora.embedding(_t([-1]), tensora.ones(4, 2))
    with pytest.raises(ShapeError, match=r"weight must be 2-D .* got shape \[4\]"):
        tensora.embedding(_t([0]), tensora.ones(4))
    with pytest.raises(IndexError, match="padding_idx 4"):
        tensora.embedding(_t([0]), tensora.ones(4, 2), padding_idx=4)


def test_one_hot():
    out = tensora.one_hot(_t([[0, 2], [1, 1]]))
    assert out.dtype == tensora.int64 and out.numpy().tolist() == np.eye(3, dtype=int)[[[0, 2], [1, 1]]].tolist()
    assert tensora.one_hot(_t([1]), num_classes=4).tolist() == [[0, 1, 0, 0]]
    with pytest.raises(ValueError, match="smaller than num_classes"):
        tensora.one_hot(_t([3]), 3)
    with pytest.raises(ValueError, match="non-negative"):
        tensora.one_hot(_t([-1]))
    with pytest.raises(DTypeError, match="integer tensor"):
        tensora.one_hot(tensora.ones(2))


# -- sort / argsort / topk --------------------------------------------------------------------------

@pytest.mark.parametrize("dim,descending", [(-1, False), (-1, True), (0, False), (0, True)])
def test_sort(dim, descending):
    def ref(x):
        return -np.sort(-x, axis=dim) if descending else np.sort(x, axis=dim)

    check_op(lambda x: x.sort(dim, descending).values, ref, [(3, 4)], gradgrad=True)
    a = np.random.default_rng(1).standard_normal((3, 4))
    idx = tensora.sort(_t(a), dim=dim, descending=descending).indices
    order = np.argsort(-a if descending else a, axis=dim)
    np.testing.assert_array_equal(idx.numpy(), order)
    np.testing.assert_array_equal(tensora.argsort(_t(a), dim, descending).numpy(), order)


def test_sort_stable_ties_nan_and_dtypes():
    x = _t([2.0, 1.0, 2.0, float("nan"), 1.0])
    assert x.sort(stable=True).indices.tolist() == [1, 4, 0, 2, 3]
    assert x.sort(descending=True, stable=True).indices.tolist() == [3, 0, 2, 1, 4]  # NaN is largest
    assert _t([True, False, True]).sort(descending=True, stable=True).indices.tolist() == [0, 2, 1]
    u = _t(np.array([3, 0, 255], dtype=np.uint8)).sort(descending=True)
    assert u.values.tolist() == [255, 3, 0] and u.values.dtype == tensora.uint8
    b = _t([0.5, -1.0, 2.0]).bfloat16().sort()
    assert b.values.dtype == tensora.bfloat16 and b.indices.tolist() == [1, 0, 2]
    v, i = tensora.tensor(4.0).sort()
    assert v.item() == 4.0 and i.item() == 0 and v.shape == ()


def test_sort_non_contiguous_gradient():
    rng = np.random.default_rng(2)
    check_op(lambda x: x.T.sort(1, descending=True)[0], lambda x: -np.sort(-x.T, axis=1), [rng.standard_normal((4, 3))])


@pytest.mark.parametrize("k,dim,largest", [(2, -1, True), (1, 0, False), (4, 1, True), (3, 1, False)])
def test_topk(k, dim, largest):
    def ref(x):
        s = -np.sort(-x, axis=dim) if largest else np.sort(x, axis=dim)
        return np.take(s, np.arange(k), axis=dim)

    check_op(lambda x: x.topk(k, dim, largest).values, ref, [(3, 4)], gradgrad=True)
    a = np.random.default_rng(3).standard_normal((3, 4))
    res = tensora.topk(_t(a), k, dim, largest)
    np.testing.assert_array_equal(np.take_along_axis(a, res.indices.numpy(), dim), res.values.numpy())


def test_topk_unsorted_nan_zero_and_errors():
    x = _t([1.0, float("nan"), 3.0, 2.0])
    assert x.topk(2).indices.tolist() == [1, 2]  # NaN counts as the largest value, as in torch
    assert x.topk(2, largest=False).values.tolist() == [1.0, 2.0]
    unsorted = _t([5.0, 1.0, 4.0, 3.0]).topk(3, sorted=False)
    assert sorted(unsorted.values.tolist()) == [3.0, 4.0, 5.0]
    empty = x.topk(0)
    assert empty.values.shape == (0,) and empty.indices.dtype == tensora.int64
    with pytest.raises(ShapeError, match=r"k \(5\) is out of range for dim 0 of shape \[4\]"):
        x.topk(5)
