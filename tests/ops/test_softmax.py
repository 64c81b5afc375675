"""softmax, log_softmax, logsumexp (tensora/ops/softmax.py) against NumPy float64 references.

Gradients and second derivatives by gradcheck / gradgradcheck; stability on
inputs whose naive exp overflows; float16/bfloat16 computed in float32.
"""

import numpy as np
import pytest
from optest import check_op

import tensora
from tensora.autograd import gradgradcheck

SHAPE = (3, 4, 5)


def np_logsumexp(a, axis=None, keepdims=False):
    m = np.max(a, axis=axis, keepdims=True)
    out = np.log(np.exp(a - m).sum(axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def np_log_softmax(a, axis):
    return a - np_logsumexp(a, axis, keepdims=True)


def np_softmax(a, axis):
    return np.exp(np_log_softmax(a, axis))


REFS = {"softmax": np_softmax, "log_softmax": np_log_softmax}


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_family(name, dim):
    check_op(lambda x: getattr(x, name)(dim), lambda a: REFS[name](a, dim), [SHAPE], gradgrad=True)
    check_op(lambda x: getattr(tensora, name)(x.T[1:], dim), lambda a: REFS[name](a.T[1:], dim), [SHAPE])


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_third_derivatives(name):
    # gradgradcheck of x, g -> g . d softmax/dx differentiates the backward op's own backward.
    rng = np.random.default_rng(0)
    x = tensora.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    g = tensora.tensor(rng.standard_normal((2, 3)), requires_grad=True)

    def first(x, g):
        with tensora.enable_grad():  # gradcheck's finite differences run under no_grad
            return tensora.autograd.grad([getattr(x, name)(1)], [x], [g], create_graph=True)[0]

    assert gradgradcheck(first, [x, g])


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_is_stable_for_large_inputs(name):
    a = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1e4, -999.0]])
    for dtype in [tensora.float64, tensora.float32]:
        out = getattr(tensora.tensor(a, dtype=dtype), name)(1).numpy()
        np.testing.assert_allclose(out, REFS[name](a, 1), rtol=1e-5)


def test_softmax_rows_of_minus_inf():
    x = tensora.tensor([[0.0, -np.inf], [-np.inf, -np.inf]])
    out = x.softmax(1).numpy()
    assert out[0].tolist() == [1.0, 0.0] and np.isnan(out[1]).all()
    assert x.log_softmax(1).numpy()[0].tolist() == [0.0, -np.inf]


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", [tensora.float16, tensora.bfloat16])
def test_softmax_low_precision_returns_its_dtype(name, dtype):
    a = np.random.default_rng(2).standard_normal((4, 50)) * 3
    x = tensora.tensor(a, dtype=dtype)
    out = getattr(x, name)(-1)
    assert out.dtype is dtype
    ref = REFS[name](x.float().numpy().astype(np.float64), -1)
    np.testing.assert_allclose(out.float().numpy(), ref, rtol=2e-2, atol=1e-2)
    xg = tensora.tensor(a, dtype=dtype, requires_grad=True)
    getattr(xg, name)(-1).sum().backward()
    assert xg.grad.dtype is dtype


def test_softmax_dtype_argument_and_int_inputs():
    x = tensora.tensor([1, 2, 3])
    out = tensora.softmax(x, 0, dtype=tensora.float64)
    assert out.dtype is tensora.float64
    np.testing.assert_allclose(out.numpy(), np_softmax(np.array([1.0, 2.0, 3.0]), 0))
    y = tensora.tensor([1.0, 2.0], dtype=tensora.float32, requires_grad=True)
    z = y.log_softmax(0, dtype=tensora.float64)
    assert z.dtype is tensora.float64
    z.sum().backward()
    assert y.grad.dtype is tensora.float32
    with pytest.raises(tensora.DTypeError, match=r"softmax.*int64.*\[3\]"):
        x.softmax(0)
    with pytest.raises(IndexError, match=r"\[-1, 0\]"):
        x.softmax(1)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_zero_dim_and_empty(name):
    check_op(lambda x: getattr(x, name)(0), lambda a: REFS[name](a, None), [()])
    assert getattr(tensora.zeros(3, 0), name)(1).shape == (3, 0)
    assert getattr(tensora.zeros(0, 3), name)(1).shape == (0, 3)


# -- logsumexp -----------------------------------------------------------------------

@pytest.mark.parametrize("dim,keepdim", [(0, False), (-1, True), ((0, 2), False), ((), True)])
def test_logsumexp(dim, keepdim):
    npdim = None if dim == () else dim
    check_op(lambda x: x.logsumexp(dim, keepdim), lambda a: np_logsumexp(a, npdim, keepdim), [SHAPE],
             gradgrad=dim != ())
    check_op(lambda x: x.T.logsumexp(dim, keepdim), lambda a: np_logsumexp(a.T, npdim, keepdim), [SHAPE])


def test_logsumexp_stability_and_infinities():
    big = tensora.tensor([1000.0, 1000.0], dtype=tensora.float32)
    np.testing.assert_allclose(big.logsumexp(0).item(), 1000 + np.log(2), rtol=1e-6)
    assert tensora.tensor([-np.inf, -np.inf]).logsumexp(0).item() == -np.inf
    assert tensora.tensor([np.inf, 1.0]).logsumexp(0).item() == np.inf
    assert tensora.zeros(2, 0).logsumexp(1).tolist() == [-np.inf, -np.inf]


def test_logsumexp_dtypes():
    x = tensora.tensor([1, 2])
    assert x.logsumexp(0).dtype is tensora.float32
    np.testing.assert_allclose(x.logsumexp(0).item(), np.log(np.e + np.e ** 2), rtol=1e-6)
    h = tensora.full((1000,), 0.5, dtype=tensora.float16)
    assert h.logsumexp(0).dtype is tensora.float16
    np.testing.assert_allclose(h.logsumexp(0).float().item(), 0.5 + np.log(1000), rtol=1e-3)


def _np_softmax_inplace(a, axis):
    """The hand-written NumPy softmax: max, subtract, exp, sum, divide on one buffer."""
    y = a - a.max(axis=axis, keepdims=True)
    np.exp(y, out=y)
    y /= y.sum(axis=axis, keepdims=True)
    return y


@pytest.mark.slow
@pytest.mark.parametrize("name,dim", [("softmax", 0), ("softmax", -1), ("log_softmax", -1)])
def test_softmax_runs_at_numpy_speed(name, dim):
    # Same passes as the NumPy version, on one buffer; best of three rounds of
    # interleaved timings, so a busy shared machine does not fail it.
    import time
    a = np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32)
    x = tensora.from_numpy(a)
    ref = {"softmax": _np_softmax_inplace, "log_softmax": lambda a, d: a - np_logsumexp(a, d, keepdims=True)}[name]
    best = float("inf")
    for _ in range(3):
        mine, theirs = [], []
        for _ in range(6):
            for f, acc in ((lambda: getattr(x, name)(dim), mine), (lambda: ref(a, dim), theirs)):
                s = time.perf_counter()
                f()
                acc.append(time.perf_counter() - s)
        best = min(best, min(mine) / min(theirs))
        if best < 1.25:
            break
    assert best < 1.25, f"{name}({dim}): {best:.2f}x NumPy's time"
