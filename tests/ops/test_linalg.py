"""Matrix products (tensora/ops/linalg.py) against NumPy float64, gradients by gradcheck."""

import numpy as np
import pytest
from optest import check_op

import tensora
from tensora import ShapeError


def _t(a, **kw):
    return tensora.tensor(np.asarray(a), **kw)


# -- matmul ------------------------------------------------------------------------------

@pytest.mark.parametrize("sa,sb", [
    ((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 3), (3, 4)),
    ((5, 2, 3), (3, 4)),          # rows of a batch times one matrix: the flattened GEMM path
    ((5, 2, 3), (1, 3, 4)),       # same, with a broadcast batch dim on b
    ((2, 3), (5, 3, 4)), ((5, 2, 3), (5, 3, 4)), ((2, 1, 2, 3), (5, 3, 2)), ((3,), (2, 3, 4)),
])
def test_matmul_shapes(sa, sb):
    # gradgradcheck probes with grad_outputs of the output's shape, which fails for 0-d outputs.
    check_op(lambda a, b: a @ b, np.matmul, [sa, sb], gradgrad=len(sa) + len(sb) in (3, 4, 5))


def test_matmul_empty():
    check_op(lambda a, b: a @ b, np.matmul, [(0, 3), (3, 2)])
    out = tensora.ones(2, 0) @ tensora.ones(0, 3)
    np.testing.assert_array_equal(out.numpy(), np.zeros((2, 3)))


def test_matmul_non_contiguous():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((5, 4))
    check_op(lambda x, y: x.T @ y.T, lambda x, y: x.T @ y.T, [a, b], gradgrad=True)
    c = rng.standard_normal((2, 6, 3))
    check_op(lambda x, y: x[:, ::2] @ y[:3], lambda x, y: x[:, ::2] @ y[:3], [c, b.T.copy()])


def test_matmul_flattened_weight_gradient_matches_batched_sum():
    rng = np.random.default_rng(1)
    a, b, g = rng.standard_normal((3, 4, 5)), rng.standard_normal((5, 2)), rng.standard_normal((3, 4, 2))
    x, w = _t(a, requires_grad=True), _t(b, requires_grad=True)
    (x @ w).backward(_t(g))
    np.testing.assert_allclose(w.grad.numpy(), np.einsum("btk,btn->kn", a, g), atol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), g @ b.T, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float16", 2e-2), ("bfloat16", 5e-2)])
def test_matmul_keeps_floating_dtype(dtype, tol):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 4, 8)), rng.standard_normal((8, 5))
    out = _t(a).to(dtype) @ _t(b).to(dtype)
    assert out.dtype.name == dtype
    ref = a.astype(np.float32) @ b.astype(np.float32)
    np.testing.assert_allclose(out.float().numpy(), ref, rtol=tol, atol=tol * 4)


def test_matmul_integers_and_promotion():
    a = np.arange(6).reshape(2, 3)
    out = _t(a) @ _t(a.T)
    assert out.dtype == tensora.int64
    np.testing.assert_array_equal(out.numpy(), a @ a.T)
    mixed = tensora.ones(2, 3, dtype=tensora.float32) @ tensora.ones(3, dtype=tensora.float64)
    assert mixed.dtype == tensora.float64


def test_matmul_errors_name_shapes():
    with pytest.raises(ShapeError, match=r"\[2, 3\] and \[4, 5\] cannot be multiplied"):
        tensora.ones(2, 3) @ tensora.ones(4, 5)
    with pytest.raises(ShapeError, match="at least 1 dimension"):
        tensora.matmul(tensora.ones(()), tensora.ones(3))


# -- mm / bmm / dot / outer ----------------------------------------------------------------

def test_mm_and_bmm():
    check_op(tensora.mm, np.matmul, [(2, 3), (3, 4)], gradgrad=True)
    check_op(tensora.bmm, np.matmul, [(2, 2, 3), (2, 3, 4)], gradgrad=True)
    check_op(lambda a, b: a.mm(b.T), lambda a, b: a @ b.T, [(2, 3), (4, 3)])


@pytest.mark.parametrize("fn,sa,sb,msg", [
    (tensora.mm, (2, 3, 1), (3, 4), r"mm: expected 2-D tensors, got shapes \[2, 3, 1\] and \[3, 4\]"),
    (tensora.mm, (2, 3), (4, 4), r"mm: shapes \[2, 3\] and \[4, 4\] cannot be multiplied \(3 != 4\)"),
    (tensora.bmm, (2, 3), (2, 3), r"bmm: expected 3-D tensors, got shapes \[2, 3\] and \[2, 3\]"),
    (tensora.bmm, (2, 2, 3), (3, 3, 4), r"bmm: shapes \[2, 2, 3\] and \[3, 3, 4\]"),
    (tensora.dot, (3,), (4,), r"dot: expected two 1-D tensors of equal length, got shapes \[3\] and \[4\]"),
    (tensora.outer, (3, 1), (4,), r"outer: expected 1-D tensors, got shapes \[3, 1\] and \[4\]"),
])
def test_strict_product_errors(fn, sa, sb, msg):
    with pytest.raises(ShapeError, match=msg):
        fn(tensora.ones(sa), tensora.ones(sb))


def test_dot_and_outer():
    check_op(lambda a, b: tensora.dot(a, b).reshape(1), lambda a, b: np.dot(a, b).reshape(1), [(5,), (5,)],
             gradgrad=True)
    check_op(tensora.outer, np.outer, [(3,), (4,)], gradgrad=True)
    assert tensora.dot(tensora.ones(3), tensora.ones(3)).shape == ()


# -- linear ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sx", [(4,), (2, 4), (3, 2, 4)])
def test_linear(sx):
    check_op(lambda x, w, b: tensora.linear(x, w, b), lambda x, w, b: x @ w.T + b, [sx, (3, 4), (3,)],
             gradgrad=True)
    check_op(lambda x, w: tensora.linear(x, w), lambda x, w: x @ w.T, [sx, (3, 4)])


def test_linear_non_contiguous_and_float32():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((5, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    # x.T and w.T are transposed views: the GEMM reads them with BLAS transpose flags.
    check_op(lambda x, w, b: tensora.linear(x.T, w.T, b), lambda x, w, b: x.T @ w + b, [x.T.copy(), w, b])
    out = tensora.linear(_t(x, dtype=tensora.float32), _t(w.T, dtype=tensora.float32), _t(b, dtype=tensora.float32))
    assert out.dtype == tensora.float32
    np.testing.assert_allclose(out.numpy(), x @ w + b, rtol=1e-5, atol=1e-5)


def test_linear_half_precision_rounds_once():
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((6, 16)), rng.standard_normal((5, 16)), rng.standard_normal(5)
    out = tensora.linear(_t(x).half(), _t(w).half(), _t(b).half())
    assert out.dtype == tensora.float16
    ref = (x.astype(np.float16).astype(np.float32) @ w.astype(np.float16).astype(np.float32).T
           + b.astype(np.float16).astype(np.float32)).astype(np.float16)
    np.testing.assert_array_equal(out.numpy(), ref)


def test_linear_errors():
    with pytest.raises(ShapeError, match=r"input of shape \[2, 4\] and weight of shape \[3, 5\]"):
        tensora.linear(tensora.ones(2, 4), tensora.ones(3, 5))
    with pytest.raises(ShapeError, match=r"bias of shape \[4\] does not match weight of shape \[3, 4\]"):
        tensora.linear(tensora.ones(2, 4), tensora.ones(3, 4), tensora.ones(4))


# -- einsum ---------------------------------------------------------------------------------

EINSUM_CASES = [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("bij,bjk->bik", [(2, 2, 3), (2, 3, 2)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 2), (1, 2, 4, 2)]),
    ("i,i->", [(4,), (4,)]),
    ("ij->ji", [(2, 3)]),
    ("ii->i", [(3, 3)]),
    ("ii->", [(3, 3)]),
    ("ij->i", [(2, 3)]),
    ("i,j->ij", [(2,), (3,)]),
    ("ij,ij->ij", [(2, 3), (2, 3)]),
    ("ij", [(2, 3)]),                             # implicit: unchanged
    ("ji", [(2, 3)]),                             # implicit output is alphabetical: a transpose
    ("ij,jk", [(2, 3), (3, 2)]),                  # implicit matmul
    ("...ij,...jk->...ik", [(2, 2, 3), (3, 2)]),  # '...' broadcasting
    ("...i,...i->...", [(1, 3), (2, 3)]),
    ("b...,b...->b", [(2, 3, 2), (2, 3, 2)]),
    ("ii,i->i", [(3, 3), (3,)]),
    ("iij->j", [(2, 2, 3)]),
    ("ij,jk,kl->il", [(2, 3), (3, 2), (2, 2)]),
    ("bn,anm,bm->ba", [(2, 3), (2, 3, 2), (2, 2)]),
    ("ij,kl->", [(2, 3), (2, 2)]),
    ("ij,jk->ik", [(2, 1), (3, 4)]),              # size-1 dim broadcasts against the same letter
]


@pytest.mark.parametrize("eq,shapes", EINSUM_CASES, ids=[c[0] for c in EINSUM_CASES])
def test_einsum(eq, shapes):
    def ref(*xs):
        arrays = list(xs)
        if eq == "b...,b...->b":  # NumPy insists on '...' in the output; spell it out
            return np.einsum("bij,bij->b", *arrays)
        if eq == "ij,jk->ik" and shapes[0] == (2, 1):
            arrays[0] = np.broadcast_to(arrays[0], (2, 3))
        return np.einsum(eq, *arrays)

    # 0-d outputs are reshaped to (1,): gradcheck builds its probes from the outputs' shapes.
    check_op(lambda *xs: tensora.einsum(eq, *xs).reshape(-1), lambda *xs: ref(*xs).reshape(-1), shapes,
             gradgrad=True)


def test_einsum_forms_and_views():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    x, y = _t(a), _t(b)
    np.testing.assert_allclose(tensora.einsum("ij,jk->ik", [x, y]).numpy(), a @ b)
    np.testing.assert_allclose(tensora.einsum(x, [0, 1], y, [1, 2], [0, 2]).numpy(), a @ b)
    np.testing.assert_allclose(tensora.einsum(x, [0, 1], y, [1, 2]).numpy(), a @ b)
    np.testing.assert_allclose(tensora.einsum(" i j , j k -> i k ", x, y).numpy(), a @ b)
    t = tensora.einsum("ij->ji", x)  # its own storage, never a view of x
    t[0, 0] = 100.0
    assert x[0, 0].item() == a[0, 0]
    check_op(lambda x, y: tensora.einsum("ji,kj->ik", x.T, y.T), lambda x, y: x @ y, [a, b])


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 5e-2)])
def test_einsum_dtypes(dtype, tol):
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((2, 3, 4, 8)), rng.standard_normal((2, 3, 5, 8))
    out = tensora.einsum("bhqd,bhkd->bhqk", _t(a).to(dtype), _t(b).to(dtype))
    assert out.dtype.name == dtype
    np.testing.assert_allclose(out.float().numpy(), np.einsum("bhqd,bhkd->bhqk", a, b), rtol=tol, atol=8 * tol)
    ints = tensora.einsum("ij,jk->ik", tensora.arange(6).reshape(2, 3), tensora.arange(6).reshape(3, 2))
    np.testing.assert_array_equal(ints.numpy(), np.arange(6).reshape(2, 3) @ np.arange(6).reshape(3, 2))


@pytest.mark.parametrize("eq,shapes,err,msg", [
    ("ij,jk->ik", [(2, 3)], ValueError, "has 2 operand"),
    ("ij->ij", [(2, 3, 4)], ShapeError, r"subscripts 'ij' do not match operand 0 of shape \[2, 3, 4\]"),
    ("ij,jk->ik", [(2, 3), (4, 5)], ShapeError, r"subscript 'j' has size 4 in operand 1 of shape \[4, 5\]"),
    ("ij->k", [(2, 3)], ValueError, "'k' .* does not appear in the inputs"),
    ("ij->ii", [(2, 3)], ValueError, "appears more than once"),
    ("i1->i", [(2, 3)], ValueError, "invalid subscript"),
    ("ii->i", [(2, 3)], ShapeError, "needs equal sizes"),
])
def test_einsum_errors(eq, shapes, err, msg):
    with pytest.raises(err, match=msg):
        tensora.einsum(eq, *[tensora.ones(s) for s in shapes])
