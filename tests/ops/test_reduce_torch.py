"""Reductions and softmax family against PyTorch: forward values and gradients, float64 and float32."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

import tensora  # noqa: E402

INF = float("inf")

# name -> (function of a tensor for either library, input shape, input kind)
CASES = {
    "sum": (lambda m, x: m.sum(x, (0, 2), keepdim=True), (3, 4, 5), "normal"),
    "sum_all": (lambda m, x: x.sum(), (3, 4, 5), "normal"),
    "mean": (lambda m, x: x.mean(-1), (3, 4, 5), "normal"),
    "mean_tuple": (lambda m, x: m.mean(x, (0, -1)), (3, 4, 5), "normal"),
    "var": (lambda m, x: x.var(1), (3, 4, 5), "normal"),
    "var_corr0": (lambda m, x: m.var(x, (0, 2), correction=0, keepdim=True), (3, 4, 5), "normal"),
    "var_legacy": (lambda m, x: x.var(0, False), (3, 4), "normal"),
    "std": (lambda m, x: x.std(), (3, 4, 5), "normal"),
    "std_dim": (lambda m, x: m.std(x, -1, correction=2, keepdim=True), (3, 4, 5), "normal"),
    "prod": (lambda m, x: x.prod(1), (3, 4, 5), "normal"),
    "prod_all": (lambda m, x: x.prod(), (2, 4), "normal"),
    "prod_zeros": (lambda m, x: x.prod(1), (4, 5), "zeros"),
    "max": (lambda m, x: x.max(), (3, 4, 5), "ties"),
    "max_dim": (lambda m, x: x.max(1).values, (3, 4, 5), "ties"),
    "max_dim_keep": (lambda m, x: m.max(x, -1, keepdim=True)[0], (3, 4, 5), "normal"),
    "min": (lambda m, x: x.min(), (3, 4, 5), "ties"),
    "min_dim": (lambda m, x: x.min(dim=0).values, (3, 4, 5), "ties"),
    "max_binary": (lambda m, x: m.max(x, x[:1] * 0 + 0.25), (3, 4), "ties"),
    "amax": (lambda m, x: m.amax(x, (0, 2)), (3, 4, 5), "ties"),
    "amin": (lambda m, x: x.amin(-1, keepdim=True), (3, 4, 5), "ties"),
    "logsumexp": (lambda m, x: m.logsumexp(x, 1), (3, 4, 5), "normal"),
    "logsumexp_tuple": (lambda m, x: x.logsumexp((0, 2), keepdim=True), (3, 4, 5), "big"),
    "softmax": (lambda m, x: m.softmax(x, -1), (3, 4, 5), "normal"),
    "softmax_dim0": (lambda m, x: x.softmax(0), (3, 4, 5), "big"),
    "log_softmax": (lambda m, x: m.log_softmax(x, 1), (3, 4, 5), "normal"),
    "log_softmax_last": (lambda m, x: x.log_softmax(-1), (3, 4, 5), "big"),
    "cumsum": (lambda m, x: m.cumsum(x, 1), (3, 4, 5), "normal"),
    "cumsum_last": (lambda m, x: x.cumsum(-1), (3, 4, 5), "normal"),
    "norm": (lambda m, x: x.norm(), (3, 4, 5), "normal"),
    "norm_dim": (lambda m, x: m.norm(x, 2, (0, 2), keepdim=True), (3, 4, 5), "normal"),
    "norm_1": (lambda m, x: x.norm(1, 1), (3, 4, 5), "normal"),
    "norm_3": (lambda m, x: x.norm(3, -1), (3, 4, 5), "normal"),
    "norm_1.5": (lambda m, x: x.norm(1.5), (3, 4, 5), "zeros"),
    "norm_0.5": (lambda m, x: x.norm(0.5, 1), (4, 5), "zeros"),
    "norm_inf": (lambda m, x: x.norm(INF, 1), (3, 4, 5), "ties"),
    "norm_-inf": (lambda m, x: x.norm(-INF), (3, 4, 5), "ties"),
    "norm_0": (lambda m, x: x.norm(0, 0), (3, 4, 5), "zeros"),
    "norm_zero_rows": (lambda m, x: x.norm(2, 1), (3, 4), "zero_rows"),
    "t_mean": (lambda m, x: x.transpose(0, 2).mean(0), (3, 4, 5), "normal"),
    "slice_softmax": (lambda m, x: x[:, 1:].softmax(1), (3, 4, 5), "normal"),
}


def _input(shape, kind, rng):
    if kind == "ties":  # few distinct values: many ties for max/min/amax/norm(inf)
        return rng.integers(-2, 3, shape).astype(np.float64) / 2
    a = rng.standard_normal(shape)
    if kind == "big":
        return a * 300
    if kind == "zeros":
        a.reshape(-1)[::4] = 0.0  # one zero per reduced line at most in prod_zeros' rows of 5
        return a
    if kind == "zero_rows":
        a[1] = 0.0
    return a


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name, dtype):
    fn, shape, kind = CASES[name]
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    a = _input(shape, kind, rng).astype(dtype)
    tx = torch.tensor(a, requires_grad=True)
    x = tensora.tensor(a, requires_grad=True)
    t_out, out = fn(torch, tx), fn(tensora, x)
    assert tuple(out.shape) == tuple(t_out.shape) and out.dtype.name == str(t_out.dtype).split(".")[1]
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(out.detach().numpy(), t_out.detach().numpy(), **tol)
    w = rng.standard_normal(tuple(t_out.shape)).astype(dtype)
    (t_out * torch.tensor(w)).sum().backward()
    (out * tensora.tensor(w)).sum().backward()
    want = tx.grad.numpy() if tx.grad is not None else np.zeros_like(a)  # torch leaves norm(p=0)'s as None
    np.testing.assert_allclose(x.grad.numpy(), want, **tol)


@pytest.mark.parametrize("name,dim", [("max", 1), ("min", 0), ("argmax", None), ("argmin", -1),
                                      ("argmax", 2), ("all", (0, 2)), ("any", 1), ("all", None)])
def test_indices_and_logical_match_torch(name, dim):
    a = np.random.default_rng(3).integers(-2, 3, (3, 4, 5)).astype(np.float32)
    args = () if dim is None else (dim,)
    t_out, out = getattr(torch.tensor(a), name)(*args), getattr(tensora.tensor(a), name)(*args)
    if name in ("max", "min"):
        np.testing.assert_array_equal(out.indices.numpy(), t_out.indices.numpy())
        t_out, out = t_out.values, out.values
    assert out.dtype.name == str(t_out.dtype).split(".")[1].replace("bool", "bool")
    np.testing.assert_array_equal(out.numpy(), t_out.numpy())


@pytest.mark.parametrize("name", ["sum", "mean", "var", "std", "prod", "cumsum", "softmax", "log_softmax",
                                  "logsumexp", "norm", "amax"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_matches_torch(name, dtype):
    a = np.random.default_rng(4).uniform(0.9, 1.1, (8, 300)).astype(np.float32)
    args = {"sum": (), "mean": (1,), "var": (1,), "std": (), "prod": (0,), "cumsum": (1,), "softmax": (1,),
            "log_softmax": (0,), "logsumexp": (1,), "norm": (), "amax": (1,)}[name]
    tx = torch.tensor(a).to(getattr(torch, dtype))
    x = tensora.tensor(a).to(dtype)
    t_out, out = getattr(tx, name)(*args), getattr(x, name)(*args)
    assert out.dtype.name == dtype
    if name == "prod":
        # torch multiplies in the low-precision type; tensora in float32, so compare with the exact product.
        t_out = tx.double().prod(*args)
    np.testing.assert_allclose(out.float().numpy(), t_out.float().numpy(), rtol=1e-2, atol=1e-3)


def test_int_reductions_match_torch():
    a = np.random.default_rng(5).integers(-3, 4, (3, 4)).astype(np.int32)
    for name, args in [("sum", ()), ("sum", (0,)), ("prod", (1,)), ("cumsum", (1,)), ("amax", (0,)),
                       ("max", ()), ("argmin", (1,)), ("logsumexp", (1,))]:
        t_out, out = getattr(torch.tensor(a), name)(*args), getattr(tensora.tensor(a), name)(*args)
        assert out.dtype.name == str(t_out.dtype).split(".")[1], name
        np.testing.assert_allclose(out.numpy(), t_out.numpy(), rtol=1e-6)


@pytest.mark.filterwarnings("ignore:var.*degrees of freedom:UserWarning")
def test_edge_values_match_torch():
    cases = [lambda m: m.zeros(0, 3).mean(0), lambda m: m.zeros(0, 3).sum(), lambda m: m.tensor([3.0]).var(),
             lambda m: m.tensor([[0.0, -INF], [-INF, -INF]]).softmax(1),
             lambda m: m.tensor([[0.0, -INF], [-INF, -INF]]).logsumexp(1),
             lambda m: m.tensor([1.0, float("nan"), 2.0]).max(), lambda m: m.zeros(3, 0).norm(),
             lambda m: m.tensor(2.5).softmax(0), lambda m: m.tensor(-2.5).norm(), lambda m: m.tensor(2.5).cumsum(0)]
    for case in cases:
        np.testing.assert_array_equal(case(tensora).numpy(), case(torch).numpy())
