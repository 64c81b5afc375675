"""Higher-order gradients: backward rules written in differentiable ops give second derivatives.

References: closed-form second derivatives (tanh, quadratic forms, matmul),
NumPy finite differences of a closed-form gradient (softmax, layer norm) or of
the function itself (a NumPy Hessian), and gradgradcheck.
"""

import numpy as np
import pytest

import tensora
from tensora.autograd import grad, gradgradcheck

EPS = 1e-5


def f64(a, requires_grad=True):
    return tensora.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def hessian(f, x):
    """Full Hessian of scalar f at leaf x by double backward, one row per element."""
    (g,) = grad(f(x), x, create_graph=True)
    g = g.reshape(-1)
    rows = [grad(g[i], x, retain_graph=True)[0].detach().numpy().reshape(-1) for i in range(g.shape[0])]
    return np.stack(rows)


def fd_jacobian(fn, x0, h=1e-6):
    """Central differences of a NumPy vector function (float64)."""
    x0 = np.asarray(x0, dtype=np.float64)
    cols = []
    for j in range(x0.size):
        d = np.zeros_like(x0)
        d.flat[j] = h
        cols.append((np.ravel(fn(x0 + d)) - np.ravel(fn(x0 - d))) / (2 * h))
    return np.stack(cols, axis=1)


def fd_hessian(fn, x0, h=1e-4):
    """Second central differences of a NumPy scalar function (float64)."""
    n = x0.size
    H = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            ei, ej = np.zeros(n), np.zeros(n)
            ei[i], ej[j] = h, h
            H[i, j] = (fn(x0 + ei + ej) - fn(x0 + ei - ej) - fn(x0 - ei + ej) + fn(x0 - ei - ej)) / (4 * h * h)
    return H


# -- elementwise and softmax ---------------------------------------------------------

def test_second_derivative_of_tanh():
    xv = np.linspace(-2, 2, 7)
    x = f64(xv)
    (g,) = grad(tensora.tanh(x).sum(), x, create_graph=True)
    t = np.tanh(xv)
    np.testing.assert_allclose(g.detach().numpy(), 1 - t ** 2, rtol=1e-12)
    (gg,) = grad(g.sum(), x, create_graph=True)
    np.testing.assert_allclose(gg.detach().numpy(), -2 * t * (1 - t ** 2), rtol=1e-10, atol=1e-14)
    (ggg,) = grad(gg.sum(), x)  # third derivative: -2 (1 - t^2)(1 - 3 t^2)
    np.testing.assert_allclose(ggg.numpy(), -2 * (1 - t ** 2) * (1 - 3 * t ** 2), rtol=1e-10, atol=1e-14)
    assert gradgradcheck(tensora.tanh, [f64(randn(3, 2))])


def _softmax_np(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_second_derivative_of_softmax():
    xv, wv = randn(5, seed=1), randn(5, seed=2)

    def f(x):
        return (tensora.softmax(x, dim=-1) * f64(wv, False)).sum()

    def grad_np(x):  # d/dx sum(w * softmax(x)) = s * (w - s.w)
        s = _softmax_np(x)
        return s * (wv - s @ wv)

    x = f64(xv)
    (g,) = grad(f(x), x, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), grad_np(xv), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(hessian(f, x), fd_jacobian(grad_np, xv), rtol=1e-5, atol=1e-8)
    assert gradgradcheck(lambda t: tensora.softmax(t, dim=1), [f64(randn(2, 4, seed=3))])
    assert gradgradcheck(lambda t: tensora.softmax(t, dim=0), [f64(randn(3, 2, seed=4))])


def test_softmax_built_from_exp_and_sum_has_the_same_hessian():
    xv, wv = randn(4, seed=5), randn(4, seed=6)

    def composite(x):
        e = x.exp()
        return (e / e.sum(-1, keepdim=True) * f64(wv, False)).sum()

    def grad_np(x):
        s = _softmax_np(x)
        return s * (wv - s @ wv)

    np.testing.assert_allclose(hessian(composite, f64(xv)), fd_jacobian(grad_np, xv), rtol=1e-5, atol=1e-8)


# -- matmul ------------------------------------------------------------------------

def test_second_derivatives_of_matmul():
    Av, Bv, Vv = randn(3, 4, seed=7), randn(4, 2, seed=8), randn(3, 4, seed=9)
    A, B = f64(Av), f64(Bv)
    loss = ((A @ B) * (A @ B)).sum()  # f = ||AB||^2
    (gA,) = grad(loss, A, create_graph=True)
    np.testing.assert_allclose(gA.detach().numpy(), 2 * Av @ Bv @ Bv.T, rtol=1e-12)
    # Hessian-vector products of f along V in A: d<gA, V>/dA = 2 V B B^T, d<gA, V>/dB = 2 (V^T A + A^T V) B
    hA, hB = grad((gA * f64(Vv, False)).sum(), [A, B])
    np.testing.assert_allclose(hA.numpy(), 2 * Vv @ Bv @ Bv.T, rtol=1e-12)
    np.testing.assert_allclose(hB.numpy(), 2 * (Vv.T @ Av + Av.T @ Vv) @ Bv, rtol=1e-12)


def test_gradgradcheck_of_batched_and_vector_matmul():
    assert gradgradcheck(lambda a, b: a @ b, [f64(randn(2, 3, 4, seed=10)), f64(randn(4, 2, seed=11))])
    assert gradgradcheck(lambda a, b: a @ b, [f64(randn(3, seed=12)), f64(randn(3, 2, seed=13))])
    assert gradgradcheck(lambda a, b: a @ b, [f64(randn(3, seed=14)), f64(randn(3, seed=15))])


# -- a layer-norm-like chain ------------------------------------------------------------

def _layer_norm(x, w, b, var=None):
    m = x.mean(-1, keepdim=True)
    v = ((x - m) ** 2).mean(-1, keepdim=True) if var is None else var(x)
    return (x - m) / (v + EPS).sqrt() * w + b


def _layer_norm_grad_np(xv, wv, rv):
    """d/dx sum(r * LN(x)) for one row, in closed form."""
    mu = xv.mean()
    sig = np.sqrt(((xv - mu) ** 2).mean() + EPS)
    xhat = (xv - mu) / sig
    gh = rv * wv
    return (gh - gh.mean() - xhat * (gh * xhat).mean()) / sig


@pytest.mark.parametrize("use_var", [False, True])
def test_layer_norm_chain_second_derivatives(use_var):
    var = (lambda t: t.var(-1, keepdim=True, correction=0)) if use_var else None
    xv, wv, bv, rv = randn(6, seed=16), randn(6, seed=17), randn(6, seed=18), randn(6, seed=19)
    w, b, r = f64(wv, False), f64(bv, False), f64(rv, False)

    def f(x):
        return (_layer_norm(x, w, b, var) * r).sum()

    x = f64(xv)
    (g,) = grad(f(x), x, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), _layer_norm_grad_np(xv, wv, rv), rtol=1e-9, atol=1e-12)
    H = hessian(f, x)
    np.testing.assert_allclose(H, H.T, atol=1e-10)
    np.testing.assert_allclose(H, fd_jacobian(lambda t: _layer_norm_grad_np(t, wv, rv), xv), rtol=1e-5, atol=1e-7)


def test_gradgradcheck_of_layer_norm_chain_in_all_inputs():
    assert gradgradcheck(lambda x, w, b: _layer_norm(x, w, b),
                         [f64(randn(2, 4, seed=20)), f64(randn(4, seed=21)), f64(randn(4, seed=22))])


# -- Hessian-vector products --------------------------------------------------------

def test_hessian_vector_product_of_a_quadratic_form():
    n = 5
    Mv = randn(n, n, seed=23)  # not symmetric: the Hessian of x^T M x / 2 is (M + M^T) / 2
    cv, xv, vv = randn(n, seed=24), randn(n, seed=25), randn(n, seed=26)
    M, c = f64(Mv, False), f64(cv, False)

    def f(x):
        return 0.5 * (x @ (M @ x)) + (c * x).sum()

    x = f64(xv)
    (g,) = grad(f(x), x, create_graph=True)
    H = (Mv + Mv.T) / 2
    np.testing.assert_allclose(g.detach().numpy(), H @ xv + cv, rtol=1e-12)
    (hv,) = grad(g, x, f64(vv, False), retain_graph=True)  # H v by a vector-Jacobian product
    np.testing.assert_allclose(hv.numpy(), H @ vv, rtol=1e-12)
    (hv2,) = grad((g * f64(vv, False)).sum(), x, retain_graph=True)  # the same through a scalar
    np.testing.assert_allclose(hv2.numpy(), H @ vv, rtol=1e-12)
    np.testing.assert_allclose(hessian(f, f64(xv)), H, rtol=1e-12)


def test_hessian_matches_numpy_finite_differences():
    Mv = randn(3, 4, seed=27) * 0.5
    xv = randn(4, seed=28) * 0.5

    def f_np(x):
        return np.exp(Mv @ x).sum() + (x @ x) ** 2 + np.log(1 + x[0] ** 2) * x[1]

    def f(x):
        return ((f64(Mv, False) @ x).exp().sum() + (x * x).sum() ** 2
                + (1 + x[0] * x[0]).log() * x[1])

    np.testing.assert_allclose(hessian(f, f64(xv)), fd_hessian(f_np, xv), rtol=1e-5, atol=1e-6)


def test_hessian_vector_product_via_backward_create_graph():
    xv, vv = randn(3, seed=29), randn(3, seed=30)
    x = f64(xv)
    ((x * x * x).sum()).backward(create_graph=True)  # x.grad = 3 x^2, with history
    g = x.grad
    assert g.requires_grad
    x.grad = None
    (g * f64(vv, False)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * xv * vv, rtol=1e-12)


def test_first_gradient_without_create_graph_has_no_history():
    x = f64([1.0, 2.0])
    (g,) = grad((x * x * x).sum(), x)
    assert not g.requires_grad and g.grad_fn is None
