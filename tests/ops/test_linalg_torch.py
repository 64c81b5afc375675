"""matmul / mm / bmm / linear / einsum against PyTorch: forward values and input gradients."""

import numpy as np
import pytest

import tensora

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

TOL = {"float64": 1e-10, "float32": 2e-4}


def compare(fn_ours, fn_torch, shapes, dtype, seed=0):
    """Same random inputs and output gradient through both libraries; values and grads must agree."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ours = [tensora.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, ref = fn_ours(*ours), fn_torch(*theirs)
    assert tuple(out.shape) == tuple(ref.shape)
    assert out.dtype.name == str(ref.dtype).removeprefix("torch.")
    tol = TOL[dtype]
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=tol, atol=tol)
    g = rng.standard_normal(tuple(ref.shape)).astype(dtype)
    out.backward(tensora.tensor(g))
    ref.backward(torch.tensor(g))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sa,sb", [((3,), (3,)), ((4, 3), (3,)), ((3,), (3, 5)), ((4, 3), (3, 5)),
                                   ((2, 4, 3), (3, 5)), ((2, 4, 3), (1, 3, 5)), ((4, 3), (2, 3, 5)),
                                   ((2, 1, 4, 3), (3, 3, 5))])
def test_matmul(sa, sb, dtype):
    compare(lambda a, b: a @ b, lambda a, b: a @ b, [sa, sb], dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mm_bmm_outer_dot(dtype):
    compare(tensora.mm, torch.mm, [(4, 3), (3, 5)], dtype)
    compare(tensora.bmm, torch.bmm, [(2, 4, 3), (2, 3, 5)], dtype)
    compare(tensora.outer, torch.outer, [(4,), (5,)], dtype)
    compare(tensora.dot, torch.dot, [(6,), (6,)], dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sx", [(7,), (5, 7), (2, 3, 7)])
def test_linear(sx, dtype):
    f = torch.nn.functional.linear
    compare(lambda x, w, b: tensora.linear(x, w, b), lambda x, w, b: f(x, w, b), [sx, (4, 7), (4,)], dtype)
    compare(lambda x, w: tensora.linear(x, w), lambda x, w: f(x, w), [sx, (4, 7)], dtype)


def test_linear_bfloat16_close_to_torch():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((8, 32)).astype(np.float32), rng.standard_normal((16, 32)).astype(np.float32)
    ours = tensora.linear(tensora.tensor(x).bfloat16(), tensora.tensor(w).bfloat16()).float().numpy()
    ref = torch.nn.functional.linear(torch.tensor(x).bfloat16(), torch.tensor(w).bfloat16()).float().numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-2, atol=5e-2)


EINSUM = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ("bhqk,bhkd->bhqd", [(2, 3, 4, 6), (2, 3, 6, 5)]),
    ("i,i->", [(5,), (5,)]),
    ("ij->ji", [(3, 4)]),
    ("ii->i", [(4, 4)]),
    ("ii", [(4, 4)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (4, 5)]),
    ("...ij->...ji", [(2, 3, 4)]),
    ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
    ("i,j->ij", [(3,), (4,)]),
    ("ij,ij->", [(3, 4), (3, 4)]),
    ("iij,jk->ik", [(3, 3, 4), (4, 2)]),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("eq,shapes", EINSUM, ids=[e[0] for e in EINSUM])
def test_einsum(eq, shapes, dtype):
    compare(lambda *xs: tensora.einsum(eq, *xs), lambda *xs: torch.einsum(eq, *xs), shapes, dtype)
