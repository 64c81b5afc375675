"""Indexing, gather/scatter, sort/topk, pad and the join/split family against PyTorch:
forward values and input gradients for the same inputs and output gradient."""

import numpy as np
import pytest

import tensora

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

F = torch.nn.functional
TOL = {"float64": 1e-12, "float32": 1e-6}
DTYPES = ["float64", "float32"]


def compare(fn_ours, fn_torch, shapes, dtype, seed=0, pick=lambda out: out):
    """Run both on the same random inputs; compare pick(output) and the inputs' gradients."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ours = [tensora.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, ref = pick(fn_ours(*ours)), pick(fn_torch(*theirs))
    outs, refs = (out, ref) if isinstance(out, (tuple, list)) else ([out], [ref])
    tol = TOL[dtype]
    for o, r in zip(outs, refs):
        assert tuple(o.shape) == tuple(r.shape)
        np.testing.assert_allclose(o.detach().numpy(), r.detach().numpy(), rtol=tol, atol=tol)
    gs = [rng.standard_normal(tuple(r.shape)).astype(dtype) for r in refs]
    tensora.autograd.backward(list(outs), [tensora.tensor(g) for g in gs])
    torch.autograd.backward(list(refs), [torch.tensor(g) for g in gs])
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=tol, atol=tol)


def both(array):
    """The same integer/bool array as a tensora and a torch tensor."""
    return tensora.tensor(array), torch.tensor(array)


# -- getitem / setitem -------------------------------------------------------------------------

MASK = np.array([[True, False, True, True], [False, False, True, False], [True, True, False, False]])
IDX = np.array([2, 0, 2, 2])

KEYS = [
    lambda m: (slice(1, 3), None, Ellipsis, 2),
    lambda m: m(IDX),
    lambda m: (m(IDX), slice(None), m(np.array([1, 1, 0, 4]))),
    lambda m: m(MASK),
    lambda m: (Ellipsis, m(np.array([True, False, True, True, False]))),
    lambda m: (1, m(np.array([[0, 3], [3, 3]]))),
    lambda m: (slice(None, None, 2), -1, m(np.array([4, 4]))),
    # an int, a slice, then an array: PyTorch selects first (NumPy would put the array's dimension first)
    lambda m: (0, slice(None), m(IDX)),
    lambda m: (2, Ellipsis, m(np.array([[4, 0], [1, 1]]))),
    lambda m: (1, None, slice(1, 3), m(np.array([True, False, True, True, False]))),
    lambda m: (m(np.array([2, 0])), slice(None), 3),
    lambda m: (m(np.array(1)), slice(None), m(np.array([0, 2]))),  # a 0-d integer tensor is an int
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", range(len(KEYS)))
def test_getitem(k, dtype):
    compare(lambda x: x[KEYS[k](lambda a: tensora.tensor(a))], lambda x: x[KEYS[k](torch.tensor)], [(3, 4, 5)], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_setitem_on_non_leaf(dtype):
    def run(lib, x, v):
        y = x * 2
        y[lib.tensor(np.array([0, 2]))] = v
        y[1, 1:3] = v[0, :2] * 3
        return y

    compare(lambda x, v: run(tensora, x, v), lambda x, v: run(torch, x, v), [(3, 4), (2, 4)], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_setitem_with_an_int_and_an_array_apart(dtype):
    def run(lib, x, v):
        y = x * 2
        y[1, :, lib.tensor(np.array([0, 3]))] = v  # PyTorch's order: y[1][:, [0, 3]]
        return y

    compare(lambda x, v: run(tensora, x, v), lambda x, v: run(torch, x, v), [(3, 4, 5), (4, 2)], dtype)


def test_a_0d_integer_tensor_index_gives_a_view():
    a = tensora.arange(9.0).reshape(3, 3)
    b = a[tensora.tensor(1)]
    b[0] = -1
    assert a[1, 0].item() == -1


# -- gather family ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_scatter(dtype):
    index = np.array([[0, 2, 2, 1], [1, 1, 0, 0]])
    it, tt = both(index)
    compare(lambda x: x.gather(1, it), lambda x: x.gather(1, tt), [(2, 3)], dtype)
    compare(lambda x, s: x.scatter_add(1, it, s), lambda x, s: x.scatter_add(1, tt, s), [(2, 3), (2, 4)], dtype)
    distinct, dt_ = both(np.array([[0, 2], [1, 0]]))
    compare(lambda x, s: x.scatter(1, distinct, s), lambda x, s: x.scatter(1, dt_, s), [(2, 3), (2, 2)], dtype)
    compare(lambda x: x.scatter(1, distinct, 1.5), lambda x: x.scatter(1, dt_, 1.5), [(2, 3)], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_index_select_index_add_masked(dtype):
    it, tt = both(np.array([2, 0, 2]))
    compare(lambda x: x.index_select(1, it), lambda x: x.index_select(1, tt), [(2, 3)], dtype)
    compare(lambda x, s: x.index_add(1, it, s, alpha=2.0), lambda x, s: x.index_add(1, tt, s, alpha=2.0),
            [(2, 3), (2, 3)], dtype)
    mt, mtt = both(MASK)
    compare(lambda x: x.masked_fill(mt, -1.0), lambda x: x.masked_fill(mtt, -1.0), [(3, 4)], dtype)
    compare(lambda x: x.masked_select(mt), lambda x: x.masked_select(mtt), [(3, 4)], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [None, 1])
def test_embedding(dtype, padding_idx):
    it, tt = both(np.array([[0, 1, 3], [3, 3, 1]]))
    compare(lambda w: tensora.embedding(it, w, padding_idx=padding_idx),
            lambda w: F.embedding(tt, w, padding_idx=padding_idx), [(4, 5)], dtype)


def test_one_hot():
    it, tt = both(np.array([[0, 3], [2, 2]]))
    np.testing.assert_array_equal(tensora.one_hot(it).numpy(), F.one_hot(tt).numpy())
    np.testing.assert_array_equal(tensora.one_hot(it, 6).numpy(), F.one_hot(tt, 6).numpy())


# -- sort / topk ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim,descending", [(-1, False), (0, True), (1, True)])
def test_sort(dim, descending, dtype):
    compare(lambda x: x.sort(dim, descending), lambda x: torch.sort(x, dim, descending), [(3, 5)], dtype,
            pick=lambda out: out[0])
    a = np.random.default_rng(1).standard_normal((3, 5))
    ours, theirs = both(a)
    np.testing.assert_array_equal(ours.sort(dim, descending).indices.numpy(),
                                  theirs.sort(dim=dim, descending=descending).indices.numpy())
    np.testing.assert_array_equal(ours.argsort(dim, descending).numpy(), theirs.argsort(dim, descending).numpy())


def test_sort_stable_with_ties_matches_torch():
    a = np.array([3, 1, 2, 1, 3, 2, 2, float("nan"), 1])
    ours, theirs = both(a)
    for descending in (False, True):
        mine = ours.sort(descending=descending, stable=True)
        ref = theirs.sort(descending=descending, stable=True)
        np.testing.assert_array_equal(mine.indices.numpy(), ref.indices.numpy())
        np.testing.assert_array_equal(mine.values.numpy(), ref.values.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,dim,largest", [(2, -1, True), (3, 0, False), (5, 1, True)])
def test_topk(k, dim, largest, dtype):
    compare(lambda x: x.topk(k, dim, largest), lambda x: x.topk(k, dim, largest), [(4, 5)], dtype,
            pick=lambda out: out[0])
    a = np.random.default_rng(2).standard_normal((4, 5))
    ours, theirs = both(a)
    np.testing.assert_array_equal(ours.topk(k, dim, largest).indices.numpy(),
                                  theirs.topk(k, dim, largest).indices.numpy())


# -- pad and the join/split family ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,shape,pad", [("constant", (2, 3, 4), (1, 2, -1, 1)), ("reflect", (2, 3, 5), (2, 3)),
                                            ("reflect", (1, 2, 4, 5), (1, 2, 3, 0)), ("replicate", (2, 3, 4), (3, 1)),
                                            ("replicate", (1, 2, 3, 4), (1, 0, 2, 2)), ("circular", (2, 3, 4), (2, 3)),
                                            ("circular", (1, 2, 3, 4), (1, 1, 3, 0))])
def test_pad(mode, shape, pad, dtype):
    compare(lambda x: tensora.pad(x, pad, mode=mode), lambda x: F.pad(x, pad, mode=mode), [shape], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_join_split_family(dtype):
    compare(lambda a, b: tensora.cat([a, b], 1), lambda a, b: torch.cat([a, b], 1), [(2, 3), (2, 1)], dtype)
    compare(lambda a, b: tensora.stack([a, b], -1), lambda a, b: torch.stack([a, b], -1), [(2, 3), (2, 3)], dtype)
    compare(lambda x: x.split([1, 3], 1), lambda x: x.split([1, 3], 1), [(2, 4)], dtype)
    compare(lambda x: x.chunk(3, 0), lambda x: x.chunk(3, 0), [(7, 2)], dtype)
    compare(lambda x: x.unbind(1), lambda x: x.unbind(1), [(2, 3)], dtype)
    compare(lambda x: x.flip(0, 2), lambda x: x.flip(0, 2), [(2, 3, 4)], dtype)
    compare(lambda x: x.roll((1, -2), (0, 1)), lambda x: x.roll((1, -2), (0, 1)), [(3, 4)], dtype)
    compare(lambda x: x.roll(5), lambda x: x.roll(5), [(3, 4)], dtype)
    compare(lambda x: x.repeat(2, 1, 3), lambda x: x.repeat(2, 1, 3), [(2, 3)], dtype)
    compare(lambda x: x.tile((2,)), lambda x: x.tile((2,)), [(2, 3)], dtype)
    compare(lambda x: x.tril(-1), lambda x: x.tril(-1), [(2, 4, 4)], dtype)
    compare(lambda x: x.triu(1), lambda x: x.triu(1), [(3, 5)], dtype)
    compare(lambda x: x.diagonal(1, 0, 2), lambda x: x.diagonal(1, 0, 2), [(3, 2, 4)], dtype)
