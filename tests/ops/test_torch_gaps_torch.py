"""new_*, view_as/reshape_as, nan_to_num, cumprod and median/nanmedian against PyTorch: values, dtypes,
indices and gradients (cumprod's with zeros, first and second order), float64 and float32."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

import tensora  # noqa: E402

NAN, INF = float("nan"), float("inf")


def _tol(dtype):
    return dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=2e-5, atol=1e-5)


def _with_nonfinite(shape, seed):
    a = np.random.default_rng(seed).standard_normal(shape)
    flat = a.reshape(-1)
    flat[::5], flat[1::7], flat[2::9] = NAN, INF, -INF
    return a


def _forward_backward(m, fn, a, w_seed=0):
    """fn(m, x) and the gradient of sum(out * w) for x = a in library m (tensora or torch)."""
    x = m.tensor(a, requires_grad=True)
    out = fn(m, x)
    values = out.values if isinstance(out, tuple) else out
    w = np.random.default_rng(w_seed).standard_normal(tuple(values.shape)).astype(a.dtype)
    (values * m.tensor(w)).sum().backward()
    return out, x.grad.numpy()


CASES = {
    "nan_to_num": (lambda m, x: m.nan_to_num(x), "nonfinite"),
    "nan_to_num_args": (lambda m, x: x.nan_to_num(nan=0.5, posinf=2.0, neginf=-3.0), "nonfinite"),
    "cumprod0": (lambda m, x: m.cumprod(x, 0), "normal"),
    "cumprod_last": (lambda m, x: x.cumprod(-1), "normal"),
    "cumprod_zeros": (lambda m, x: x.cumprod(1), "zeros"),
    "cumprod_zeros_dim0": (lambda m, x: m.cumprod(x, 0), "zeros"),
    "median": (lambda m, x: x.median(), "normal"),
    "median_ties": (lambda m, x: m.median(x), "ties"),
    "median_dim": (lambda m, x: x.median(1), "normal"),
    "median_dim_keep": (lambda m, x: m.median(x, 0, keepdim=True), "normal"),
    "median_dim_ties": (lambda m, x: x.median(-1), "ties"),
    "median_nan": (lambda m, x: x.median(1), "nan"),
    "nanmedian": (lambda m, x: x.nanmedian(), "nan"),
    "nanmedian_dim": (lambda m, x: m.nanmedian(x, 1), "nan"),
    "nanmedian_dim_ties": (lambda m, x: x.nanmedian(0, keepdim=True), "ties"),
    "view_as": (lambda m, x: x.view_as(m.zeros(6, 4)), "normal"),
    "reshape_as": (lambda m, x: x.transpose(0, 1).reshape_as(m.zeros(2, 12)), "normal"),
}


def _input(kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "nonfinite":
        return _with_nonfinite((4, 6), seed)
    if kind == "ties":
        return rng.integers(-2, 3, (4, 6)).astype(np.float64) / 2
    a = rng.standard_normal((4, 6))
    if kind == "zeros":
        a[0, 1] = a[0, 4] = a[1, 0] = a[2, 5] = a[3, 2] = 0.0  # rows with two zeros, a zero first, last
    elif kind == "nan":
        a[0, 2] = a[1, 0] = a[1, 3] = NAN
        a[3] = NAN  # a row of nan only
    return a


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name, dtype):
    fn, kind = CASES[name]
    a = _input(kind, len(name)).astype(dtype)
    out, grad = _forward_backward(tensora, fn, a)
    t_out, t_grad = _forward_backward(torch, fn, a)
    keep = slice(None)
    if name == "nanmedian_dim":  # skip the all-nan row: torch's index there is whatever nth_element left
        keep = slice(0, 3)
    if isinstance(t_out, tuple):
        assert type(out).__name__ == type(t_out).__name__ and out._fields == ("values", "indices")
        np.testing.assert_array_equal(out.indices.numpy()[keep], t_out.indices.numpy()[keep])
        out, t_out = out.values, t_out.values
    assert tuple(out.shape) == tuple(t_out.shape) and out.dtype.name == str(t_out.dtype).split(".")[1]
    np.testing.assert_allclose(out.detach().numpy(), t_out.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(grad[keep], t_grad[keep], **_tol(dtype))


@pytest.mark.parametrize("values", [[2.0, 0.0, 3.0, 4.0], [0.0, 2.0, 0.0, 5.0], [1.5, -2.0, 3.0, 0.5],
                                    [3.0, 2.0, 0.0, 0.0, 7.0]])
def test_cumprod_second_derivatives_match_torch(values):
    a = np.array(values)
    w = np.linspace(0.5, 1.5, len(values))
    hess = []
    for m in (tensora, torch):
        x = m.tensor(a, requires_grad=True)
        (g,) = m.autograd.grad((x.cumprod(0) * m.tensor(w)).sum(), x, create_graph=True)
        rows = [m.autograd.grad(g[i], x, retain_graph=True)[0].numpy() for i in range(len(values))]
        hess.append((g.detach().numpy(), np.stack(rows)))
    np.testing.assert_allclose(hess[0][0], hess[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hess[0][1], hess[1][1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_nan_to_num_low_precision_limits_match_torch(dtype):
    a = np.array([NAN, INF, -INF, 1.0, -2.5], dtype=np.float32)
    for kw in ({}, {"nan": 1e10, "posinf": 1e10}, {"neginf": -7.0}):
        ours = tensora.tensor(a).to(dtype).nan_to_num(**kw)
        theirs = torch.tensor(a).to(getattr(torch, dtype)).nan_to_num(**kw)
        assert ours.dtype.name == dtype
        np.testing.assert_array_equal(ours.float().numpy(), theirs.float().numpy())


def test_int_inputs_match_torch():
    a = np.array([[5, 1, 4, 2], [3, 3, 0, 9]], dtype=np.int32)
    for fn in (lambda m, x: x.cumprod(1), lambda m, x: x.median(), lambda m, x: x.median(1).values,
               lambda m, x: x.median(0).indices, lambda m, x: m.nan_to_num(x), lambda m, x: x.bool().cumprod(0)):
        ours, theirs = fn(tensora, tensora.tensor(a)), fn(torch, torch.tensor(a))
        assert ours.dtype.name == str(theirs.dtype).split(".")[1]
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("src_dtype", ["float64", "int32", "float16"])
def test_new_factories_match_torch(src_dtype):
    calls = [lambda x: x.new_zeros(2, 3), lambda x: x.new_ones((4,)), lambda x: x.new_full((2, 2), 3.7),
             lambda x: x.new_tensor([1.9, -2.6]), lambda x: x.new_empty(3, 0),
             lambda x: x.new_ones([2], dtype=None), lambda x: x.new_tensor([[1, 2]], requires_grad=False)]
    for call in calls:
        ours = call(tensora.ones(2).to(src_dtype))
        theirs = call(torch.ones(2).to(getattr(torch, src_dtype)))
        assert ours.dtype.name == str(theirs.dtype).split(".")[1] and tuple(ours.shape) == tuple(theirs.shape)
        if ours.numel():
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_edge_values_match_torch():
    cases = [lambda m: m.tensor([]).median(), lambda m: m.tensor([NAN, 1.0]).median(),
             lambda m: m.tensor([NAN, 1.0, 0.0]).nanmedian(), lambda m: m.tensor(2.5).median(),
             lambda m: m.tensor(2.5).cumprod(0), lambda m: m.zeros(0, 3).cumprod(0),
             lambda m: m.tensor([[1.0, 2.0], [3.0, 4.0]]).median(), lambda m: m.tensor([-0.0, 0.0]).nan_to_num()]
    for case in cases:
        np.testing.assert_array_equal(case(tensora).numpy(), case(torch).numpy())
