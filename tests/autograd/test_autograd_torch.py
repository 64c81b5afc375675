"""Autograd engine parity with PyTorch: the same programs run on both, gradients compared.

Each case is written once against the shared API (`lib` is tensora or torch), run
on random float64 and float32 inputs, and the .grad / autograd.grad results,
hook calls and retained grads are compared.
"""

import numpy as np
import pytest

import tensora

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

TOL = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=2e-5, atol=1e-6)}


def both(arrays, dtype, requires_grad=True):
    """The same float arrays as tensora and torch leaves."""
    ta = [tensora.tensor(a.astype(dtype), requires_grad=requires_grad) for a in arrays]
    to = [torch.tensor(a.astype(dtype), requires_grad=requires_grad) for a in arrays]
    return ta, to


def same(a, b, dtype):
    if b is None:
        assert a is None
        return
    assert a is not None
    np.testing.assert_allclose(np.asarray(a.detach().numpy(), dtype=np.float64),
                               b.detach().double().numpy(), **TOL[dtype])


def randn(*shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


def diamond(lib, x, w):
    h = x * w
    return (h.exp() * h + h / (1 + h * h)).sum()


def reused(lib, x, w):
    h = (x * x).sum(-1, keepdim=True)
    return (h * w + (h * h) / (x * x + 1)).mean()


def mlp(lib, x, w):
    z = x @ w
    s = 1 / (1 + (-z).exp())  # sigmoid
    return ((s - 0.5) ** 2).sum() + (w * w).sum() * 0.01


def normalize(lib, x, w):
    m = x.mean(-1, keepdim=True)
    v = ((x - m) ** 2).mean(-1, keepdim=True)
    return (((x - m) / (v + 1e-5).sqrt()) * w[0]).sum(0).pow(2).sum()


def with_views(lib, x, w):
    y = x.T.reshape(-1)[1:] * 2
    return (y.unsqueeze(0).expand(3, -1) * w.reshape(-1)[: y.shape[0]]).sum()


CASES = {
    "diamond": (diamond, (2, 3), (2, 3)),
    "reused": (reused, (2, 3), (2, 1)),
    "mlp": (mlp, (4, 3), (3, 2)),
    "normalize": (normalize, (3, 5), (3, 5)),
    "with_views": (with_views, (3, 4), (4, 3)),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_composite_gradients_match_torch(name, dtype):
    fn, sx, sw = CASES[name]
    (tx, tw), (ox, ow) = both([randn(*sx, seed=1), randn(*sw, seed=2) * 0.5], dtype)
    fn(tensora, tx, tw).backward()
    fn(torch, ox, ow).backward()
    same(tx.grad, ox.grad, dtype)
    same(tw.grad, ow.grad, dtype)


@pytest.mark.parametrize("name", sorted(CASES))
def test_second_order_gradients_match_torch(name):
    fn, sx, sw = CASES[name]
    v = randn(*sx, seed=3)
    (tx, tw), (ox, ow) = both([randn(*sx, seed=1), randn(*sw, seed=2) * 0.5], "float64")
    (tg,) = tensora.autograd.grad(fn(tensora, tx, tw), tx, create_graph=True)
    (og,) = torch.autograd.grad(fn(torch, ox, ow), ox, create_graph=True)
    same(tg, og, "float64")
    # Whether a bilinear case "uses" x at second order depends on the graph's shape: compare zeros.
    thx, thw = tensora.autograd.grad((tg * tensora.tensor(v)).sum(), [tx, tw], materialize_grads=True)
    ohx, ohw = torch.autograd.grad((og * torch.tensor(v)).sum(), [ox, ow], materialize_grads=True)
    same(thx, ohx, "float64")
    same(thw, ohw, "float64")


def test_accumulation_and_retain_graph_match_torch():
    (tx,), (ox,) = both([randn(3, seed=4)], "float64")
    results = []
    for lib, x in ((tensora, tx), (torch, ox)):
        loss = (x.exp() * x).sum()
        loss.backward(retain_graph=True)
        loss.backward()
        (x * x).sum().backward()
        results.append(x.grad)
    same(*results, "float64")


def test_backward_inputs_and_grad_allow_unused_match_torch():
    (tx, tw, tu), (ox, ow, ou) = both([randn(3, seed=5), randn(3, seed=6), randn(3, seed=7)], "float64")
    for x, w in ((tx, tw), (ox, ow)):
        (x * w * w).sum().backward(inputs=[w])
    assert tx.grad is None and ox.grad is None
    same(tw.grad, ow.grad, "float64")
    tgs = tensora.autograd.grad((tx * tw).sum(), [tx, tu], allow_unused=True)
    ogs = torch.autograd.grad((ox * ow).sum(), [ox, ou], allow_unused=True)
    same(tgs[0], ogs[0], "float64")
    assert tgs[1] is None and ogs[1] is None
    tgs = tensora.autograd.grad((tx * tw).sum(), [tx, tu], materialize_grads=True)
    ogs = torch.autograd.grad((ox * ow).sum(), [ox, ou], materialize_grads=True)
    same(tgs[1], ogs[1], "float64")


def _hook_program(lib, x):
    """Hooks on a leaf and a non-leaf, retain_grad, a removed hook; returns what was seen."""
    seen = []
    h = x * 2
    h.retain_grad()
    h.register_hook(lambda g: seen.append(("h", g.detach().clone())))
    h.register_hook(lambda g: g * 3)
    gone = h.register_hook(lambda g: g * 100)
    gone.remove()
    x.register_hook(lambda g: seen.append(("x", g.detach().clone())))
    (h * h + h).sum().backward()
    return seen, h.grad, x.grad


def test_hooks_and_retain_grad_match_torch():
    (tx,), (ox,) = both([randn(4, seed=8)], "float64")
    t_seen, t_hgrad, t_xgrad = _hook_program(tensora, tx)
    o_seen, o_hgrad, o_xgrad = _hook_program(torch, ox)
    assert [k for k, _ in t_seen] == [k for k, _ in o_seen]
    for (_, a), (_, b) in zip(t_seen, o_seen):
        same(a, b, "float64")
    same(t_xgrad, o_xgrad, "float64")
    same(t_hgrad, o_hgrad, "float64")  # torch: the retained grad is the one after all hooks


class _Cube:
    """The same custom Function body for both libraries."""

    @staticmethod
    def forward(ctx, x, k):
        ctx.save_for_backward(x)
        ctx.k = k
        return x * x * x * k

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * ctx.k * x * x * g, None


def test_custom_function_matches_torch():
    TCube = type("Cube", (tensora.autograd.Function,), dict(vars(_Cube)))
    OCube = type("Cube", (torch.autograd.Function,), dict(vars(_Cube)))
    (tx,), (ox,) = both([randn(3, seed=9)], "float64")
    (tg,) = tensora.autograd.grad(TCube.apply(tx, 2.0).sum(), tx, create_graph=True)
    (og,) = torch.autograd.grad(OCube.apply(ox, 2.0).sum(), ox, create_graph=True)
    same(tg, og, "float64")
    tg.sum().backward()
    og.sum().backward()
    same(tx.grad, ox.grad, "float64")


@pytest.mark.parametrize("write", ["setitem", "add_", "mul_"])
def test_in_place_on_non_leaf_matches_torch(write):
    (tx, tv), (ox, ov) = both([randn(4, seed=10), randn(2, seed=11)], "float64")
    for x, v in ((tx, tv), (ox, ov)):
        h = x * x
        if write == "setitem":
            h[1:3] = v * 3
        elif write == "add_":
            h.add_(x[0] * v.sum())
        else:
            h.mul_(v.sum())
        (h * h.detach().clone() + h).sum().backward()
    same(tx.grad, ox.grad, "float64")
    same(tv.grad, ov.grad, "float64")


def test_float16_leaf_grad_dtype_matches_torch():
    th = tensora.tensor([1.0, 2.0], dtype=tensora.float16, requires_grad=True)
    oh = torch.tensor([1.0, 2.0], dtype=torch.float16, requires_grad=True)
    (th.float() * tensora.tensor([3.0, 4.0])).sum().backward()
    (oh.float() * torch.tensor([3.0, 4.0])).sum().backward()
    assert th.grad.dtype.name == str(oh.grad.dtype).replace("torch.", "")
    same(th.grad, oh.grad, "float32")
