"""tensora.nn.functional (activations, layers, norms, distances) against NumPy float64 formulas;
gradients by gradcheck and gradgradcheck; PyTorch's conventions at kinks and for in-place options.
The losses are in test_losses.py; the re-exported op cores are tested in tests/ops."""

import warnings

import numpy as np
import pytest
from optest import check_op

import tensora
import tensora.nn.functional as F
from tensora.autograd import gradcheck, gradgradcheck
from tensora.errors import ShapeError

SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def np_softmax(a, axis):
    e = np.exp(a - a.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


# name -> (tensora function, NumPy reference)
ACTIVATIONS = {
    "hardtanh": (lambda x: F.hardtanh(x, -0.5, 0.8), lambda a: np.clip(a, -0.5, 0.8)),
    "relu6": (lambda x: F.relu6(x * 4), lambda a: np.clip(a * 4, 0, 6)),
    "hardsigmoid": (lambda x: F.hardsigmoid(x * 3), lambda a: np.clip(a * 3 + 3, 0, 6) / 6),
    "hardswish": (lambda x: F.hardswish(x * 3), lambda a: a * 3 * np.clip(a * 3 + 3, 0, 6) / 6),
    "logsigmoid": (lambda x: F.logsigmoid(x * 5), lambda a: -np.log1p(np.exp(-a * 5))),
    "selu": (F.selu, lambda a: SELU_SCALE * np.where(a > 0, a, SELU_ALPHA * np.expm1(a))),
    "celu": (lambda x: F.celu(x, 0.5), lambda a: np.maximum(a, 0) + np.minimum(0, 0.5 * np.expm1(a / 0.5))),
    "threshold": (lambda x: F.threshold(x, 0.1, -2.0), lambda a: np.where(a > 0.1, a, -2.0)),
    "softsign": (F.softsign, lambda a: a / (1 + np.abs(a))),
    "tanhshrink": (F.tanhshrink, lambda a: a - np.tanh(a)),
    "hardshrink": (lambda x: F.hardshrink(x, 0.3), lambda a: np.where(np.abs(a) > 0.3, a, 0)),
    "softshrink": (lambda x: F.softshrink(x, 0.3),
                   lambda a: np.where(a > 0.3, a - 0.3, np.where(a < -0.3, a + 0.3, 0))),
    "softmax": (lambda x: F.softmax(x, 0), lambda a: np_softmax(a, 0)),
    "log_softmax": (lambda x: F.log_softmax(x, -1), lambda a: np.log(np_softmax(a, -1))),
    "softmin": (lambda x: F.softmin(x, 1), lambda a: np_softmax(-a, 1)),
    "glu": (lambda x: F.glu(x, 1), lambda a: a[:, :2] / (1 + np.exp(-a[:, 2:]))),
}
SMOOTH = {"logsigmoid", "selu", "celu", "softsign", "tanhshrink", "softmax", "log_softmax", "softmin", "glu"}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_vs_numpy(name):
    fn, ref = ACTIVATIONS[name]
    check_op(fn, ref, [(3, 4)], low=-3.0, high=3.0, gradgrad=name in SMOOTH, atol=1e-12, rtol=1e-12)


def test_prelu_per_channel_and_shared():
    w = np.array([0.1, -0.5, 2.0])
    check_op(F.prelu, lambda a, b: np.where(a > 0, a, b.reshape(3, 1) * a), [(2, 3, 4), w], gradgrad=True)
    check_op(F.prelu, lambda a, b: np.where(a > 0, a, b * a), [(2, 3), np.array([0.25])])
    with pytest.raises(ValueError, match="prelu"):
        F.prelu(tensora.randn(2, 4), tensora.ones(3))


@pytest.mark.parametrize("fn,kinks,expected", [
    (lambda x: F.hardtanh(x, -0.5, 0.8), [-0.5, 0.8, 0.0], [0.0, 0.0, 1.0]),
    (F.relu6, [0.0, 6.0, 3.0], [0.0, 0.0, 1.0]),
    (F.hardsigmoid, [-3.0, 3.0, 0.0], [0.0, 0.0, 1 / 6]),
    (F.hardswish, [-3.0, 3.0, 0.0], [0.0, 1.0, 0.5]),
    (lambda x: F.threshold(x, 0.5, 9.0), [0.5, 0.6], [0.0, 1.0]),
    (lambda x: F.hardshrink(x, 0.5), [0.5, -0.5, 0.6], [0.0, 0.0, 1.0]),
    (lambda x: F.softshrink(x, 0.5), [0.5, -0.5, -0.6], [0.0, 0.0, 1.0]),
    (F.softsign, [0.0], [1.0]),
])
def test_gradient_at_kinks_follows_pytorch(fn, kinks, expected):
    x = tensora.tensor(kinks, dtype=tensora.float64, requires_grad=True)
    fn(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-15)


def test_logsigmoid_and_celu_tails_are_finite():
    x = tensora.tensor([-1000.0, 1000.0], dtype=tensora.float64, requires_grad=True)
    y = F.logsigmoid(x)
    y.sum().backward()
    np.testing.assert_array_equal(y.detach().numpy(), [-1000.0, 0.0])
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 0.0])
    z = tensora.tensor([1000.0, -1000.0], dtype=tensora.float64, requires_grad=True)
    F.celu(z, 0.01).sum().backward()  # exp(1000 / 0.01) is never evaluated
    np.testing.assert_array_equal(z.grad.numpy(), [1.0, 0.0])


@pytest.mark.parametrize("name,call", [
    ("relu6", lambda x: F.relu6(x, inplace=True)),
    ("hardtanh_", lambda x: F.hardtanh_(x, -0.2, 0.3)),
    ("threshold_", lambda x: F.threshold_(x, 0.1, 5.0)),
    ("selu", lambda x: F.selu(x, inplace=True)),
    ("celu", lambda x: F.celu(x, 2.0, inplace=True)),
    ("hardsigmoid", lambda x: F.hardsigmoid(x, True)),
    ("hardswish", lambda x: F.hardswish(x, True)),
    ("relu_", lambda x: F.relu_(x)),
])
def test_inplace_variants_write_into_input(name, call):
    a = np.random.default_rng(0).standard_normal((3, 4)) * 4
    out_of_place = {"relu6": lambda x: F.relu6(x), "hardtanh_": lambda x: F.hardtanh(x, -0.2, 0.3),
                    "threshold_": lambda x: F.threshold(x, 0.1, 5.0), "selu": F.selu,
                    "celu": lambda x: F.celu(x, 2.0), "hardsigmoid": F.hardsigmoid, "hardswish": F.hardswish,
                    "relu_": F.relu}[name](tensora.tensor(a))
    x = tensora.tensor(a)
    y = call(x)
    assert y is x
    np.testing.assert_array_equal(x.numpy(), out_of_place.numpy())


def test_softmax_implicit_dim_warns_like_pytorch():
    x = tensora.randn(2, 3)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        y = F.softmax(x)
    np.testing.assert_allclose(y.numpy(), np_softmax(x.numpy(), 1), rtol=1e-6)
    with pytest.warns(UserWarning):
        np.testing.assert_allclose(F.log_softmax(tensora.randn(3)).exp().sum().item(), 1.0, rtol=1e-6)
    assert F.softmax(x, 1, dtype=tensora.float64).dtype is tensora.float64


# -- layers ---------------------------------------------------------------------------------

def test_bilinear_vs_einsum():
    ref = lambda a, b, w, c: np.einsum("...i,oij,...j->...o", a, w, b) + c  # noqa: E731
    check_op(F.bilinear, ref, [(2, 3, 4), (2, 3, 5), (6, 4, 5), (6,)], gradgrad=True, atol=1e-12)
    check_op(lambda a, b, w: F.bilinear(a, b, w), lambda a, b, w: np.einsum("ni,oij,nj->no", a, w, b),
             [(3, 2), (3, 4), (5, 2, 4)])
    with pytest.raises(ShapeError, match="bilinear"):
        F.bilinear(tensora.randn(3, 2), tensora.randn(3, 5), tensora.randn(5, 2, 4))


def test_embedding_padding_max_norm_and_frequency_scaling():
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((6, 4)) * 2
    ids = np.array([[0, 2, 2], [5, 1, 2]])
    w = tensora.tensor(w0, requires_grad=True)
    out = F.embedding(tensora.tensor(ids), w, padding_idx=1, max_norm=1.5, scale_grad_by_freq=True, sparse=True)
    # max_norm renormalises the looked-up rows of the weight itself, in place.
    norms = np.linalg.norm(w0, axis=1, keepdims=True)
    used = np.isin(np.arange(6), ids)[:, None]
    renormed = np.where(used & (norms > 1.5), w0 * 1.5 / (norms + 1e-7), w0)
    np.testing.assert_allclose(w.detach().numpy(), renormed, rtol=1e-12)
    np.testing.assert_allclose(out.detach().numpy(), renormed[ids], rtol=1e-12)
    g = rng.standard_normal(out.shape)
    out.backward(tensora.tensor(g))
    counts = np.bincount(ids.ravel(), minlength=6)
    expected = np.zeros((6, 4))
    np.add.at(expected, ids.ravel(), g.reshape(-1, 4) / counts[ids.ravel()][:, None])
    expected[1] = 0  # padding_idx
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-12)


def test_reexported_ops_are_the_tensora_functions():
    for name in ["relu", "gelu", "silu", "mish", "softplus", "elu", "leaky_relu", "sigmoid", "tanh", "linear",
                 "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "max_pool1d", "max_pool2d",
                 "avg_pool1d", "avg_pool2d", "adaptive_avg_pool2d", "interpolate", "pad", "dropout", "dropout1d",
                 "dropout2d", "scaled_dot_product_attention", "one_hot", "relu_", "elu_", "leaky_relu_"]:
        assert getattr(F, name) is getattr(tensora, name), name
    for name in F.__all__:
        assert callable(getattr(F, name)), name


# -- normalization --------------------------------------------------------------------------

def np_norm(a, axes, eps, centered=True):
    mean = a.mean(axes, keepdims=True) if centered else 0.0
    var = ((a - mean) ** 2).mean(axes, keepdims=True)
    return (a - mean) / np.sqrt(var + eps)


NORMS = {
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (3, 4), w, b),
                   lambda a, w, b: np_norm(a, (1, 2), 1e-5) * w + b, [(2, 3, 4), (3, 4), (3, 4)]),
    "layer_norm_plain": (lambda x: F.layer_norm(x, 4, eps=0.1), lambda a: np_norm(a, (-1,), 0.1), [(2, 3, 4)]),
    "rms_norm": (lambda x, w: F.rms_norm(x, [4], w, eps=1e-3),
                 lambda a, w: np_norm(a, (-1,), 1e-3, centered=False) * w, [(2, 3, 4), (4,)]),
    "group_norm": (lambda x, w, b: F.group_norm(x, 2, w, b),
                   lambda a, w, b: np_norm(a.reshape(2, 2, -1), (2,), 1e-5).reshape(a.shape)
                   * w.reshape(4, 1, 1) + b.reshape(4, 1, 1), [(2, 4, 3, 2), (4,), (4,)]),
    "batch_norm": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=1e-3),
                   lambda a, w, b: np_norm(a, (0, 2), 1e-3) * w.reshape(3, 1) + b.reshape(3, 1),
                   [(4, 3, 5), (3,), (3,)]),
}


@pytest.mark.parametrize("name", list(NORMS))
def test_norms_vs_numpy_with_second_derivatives(name):
    fn, ref, specs = NORMS[name]
    check_op(fn, ref, specs, gradgrad=True, atol=1e-12, rtol=1e-10)


def test_norms_on_strided_inputs_and_weight_only():
    check_op(lambda x, w: F.layer_norm(x.transpose(0, 1), (2,), w),
             lambda a, w: np_norm(a.transpose(1, 0, 2), (-1,), 1e-5) * w, [(3, 4, 2), (2,)], gradgrad=True)
    check_op(lambda x, b: F.group_norm(x[:, ::2], 1, None, b),
             lambda a, b: np_norm(a[:, ::2], (1, 2), 1e-5) + b.reshape(2, 1), [(2, 4, 3), (2,)])


def test_rms_norm_default_eps_is_the_dtype_epsilon():
    for dtype in (np.float64, np.float32):
        a = (np.arange(1, 7).reshape(2, 3) * 1e-9).astype(dtype)
        eps = np.finfo(dtype).eps
        expected = a / np.sqrt((a.astype(np.float64) ** 2).mean(-1, keepdims=True) + eps)
        np.testing.assert_allclose(F.rms_norm(tensora.tensor(a), (3,)).numpy(), expected, rtol=1e-5)


def test_batch_norm_running_stats_and_eval():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 3, 5)) * 3 + 1
    rm, rv = tensora.zeros(3, dtype=tensora.float64), tensora.ones(3, dtype=tensora.float64)
    F.batch_norm(tensora.tensor(a), rm, rv, training=True, momentum=0.25)
    np.testing.assert_allclose(rm.numpy(), 0.25 * a.mean((0, 2)), rtol=1e-12)
    np.testing.assert_allclose(rv.numpy(), 0.75 + 0.25 * a.var((0, 2), ddof=1), rtol=1e-12)
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    check_op(lambda x, w_, b_: F.batch_norm(x, rm, rv, w_, b_),
             lambda x, w_, b_: (x - rm.numpy().reshape(3, 1)) / np.sqrt(rv.numpy().reshape(3, 1) + 1e-5)
             * w_.reshape(3, 1) + b_.reshape(3, 1), [a, w, b], gradgrad=True)


def test_norm_errors():
    with pytest.raises(ShapeError, match="normalized_shape"):
        F.layer_norm(tensora.randn(2, 3), (4,))
    with pytest.raises(ShapeError, match="weight"):
        F.layer_norm(tensora.randn(2, 3), (3,), tensora.ones(4))
    with pytest.raises(ValueError, match="divisible"):
        F.group_norm(tensora.randn(2, 6, 3), 4)
    with pytest.raises(ValueError, match="more than 1 value"):
        F.batch_norm(tensora.randn(1, 3), None, None, training=True)
    with pytest.raises(ValueError, match="evaluation"):
        F.batch_norm(tensora.randn(4, 3), None, None)


@pytest.mark.parametrize("dtype,tol", [(tensora.float32, 1e-5), (tensora.float16, 5e-3), (tensora.bfloat16, 3e-2)])
def test_layer_norm_low_precision_accumulates_in_float32(dtype, tol):
    a = np.random.default_rng(0).standard_normal((4, 64)) * 10 + 50
    x = tensora.tensor(a).to(dtype).requires_grad_()
    y = F.layer_norm(x, (64,))
    assert y.dtype is dtype
    ref = np_norm(x.detach().float().numpy().astype(np.float64), (-1,), 1e-5)
    np.testing.assert_allclose(y.detach().float().numpy(), ref, atol=tol * 4, rtol=tol)
    y.sum().backward()  # d(sum)/dx of a normalisation is 0
    assert x.grad.dtype is dtype
    np.testing.assert_allclose(x.grad.float().numpy(), 0, atol=tol * 4)


def test_fused_norm_backward_matches_create_graph_path():
    """The fused NumPy backward and the differentiable one used under create_graph agree."""
    rng = np.random.default_rng(0)
    x = tensora.tensor(rng.standard_normal((3, 5)), requires_grad=True)
    w = tensora.tensor(rng.standard_normal(5), requires_grad=True)
    b = tensora.tensor(rng.standard_normal(5), requires_grad=True)
    g = tensora.tensor(rng.standard_normal((3, 5)))
    fast = tensora.autograd.grad(F.layer_norm(x, (5,), w, b), [x, w, b], g)
    graph = tensora.autograd.grad(F.layer_norm(x, (5,), w, b), [x, w, b], g, create_graph=True)
    assert len(fast) == len(graph) == 3
    assert graph[0].requires_grad and not fast[0].requires_grad  # the two paths really differ
    for a, c in zip(fast, graph):
        np.testing.assert_allclose(a.numpy(), c.detach().numpy(), rtol=1e-12, atol=1e-14)


# -- distances ------------------------------------------------------------------------------

def test_normalize_vs_numpy():
    def ref(a, p, dim, eps):
        return a / np.maximum((np.abs(a) ** p).sum(dim, keepdims=True) ** (1 / p), eps)
    check_op(F.normalize, lambda a: ref(a, 2, 1, 1e-12), [(3, 4, 2)], gradgrad=True)
    check_op(lambda x: F.normalize(x, p=1.0, dim=-1), lambda a: ref(a, 1, -1, 1e-12), [(3, 4)])
    zero = F.normalize(tensora.zeros(2, 3))
    np.testing.assert_array_equal(zero.numpy(), 0)
    out = tensora.empty(2, 3)
    assert F.normalize(tensora.ones(2, 3), out=out) is out
    np.testing.assert_allclose(out.numpy(), 1 / np.sqrt(3), rtol=1e-6)


def test_cosine_similarity_and_pairwise_distance_vs_numpy():
    def cos(a, b, dim=1, eps=1e-8):
        na = np.maximum(np.sqrt((a * a).sum(dim, keepdims=True)), eps)
        nb = np.maximum(np.sqrt((b * b).sum(dim, keepdims=True)), eps)
        return ((a / na) * (b / nb)).sum(dim)
    check_op(F.cosine_similarity, cos, [(3, 4, 2), (3, 4, 2)], gradgrad=True)
    # Norms below eps: the value is clamped; the gradient deliberately ignores the clamp, as PyTorch's
    # (checked against torch in test_functional_torch.py), so finite differences do not apply.
    check_op(lambda a, b: F.cosine_similarity(a, b, -1, 0.5), lambda a, b: cos(a, b, -1, 0.5),
             [(3, 4), (4,)], low=-0.2, high=0.2, grad=False)
    check_op(F.pairwise_distance, lambda a, b: np.sqrt(((a - b + 1e-6) ** 2).sum(-1)), [(5, 3), (5, 3)],
             gradgrad=True)
    check_op(lambda a, b: F.pairwise_distance(a, b, 3.0, 0.0, True),
             lambda a, b: (np.abs(a - b) ** 3).sum(-1, keepdims=True) ** (1 / 3), [(5, 3), (3,)])


def test_gradchecks_of_layer_functions():
    rng = np.random.default_rng(0)
    w = tensora.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    ids = tensora.tensor([[0, 4, 4], [2, 2, 2]])
    assert gradcheck(lambda t: F.embedding(ids, t), [w])  # (scale_grad_by_freq is not a derivative)
    assert gradgradcheck(lambda t: F.embedding(ids, t, padding_idx=2) ** 2, [w])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warnings from the NumPy internals of the fused ops
        x = tensora.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
        F.group_norm(x, 3).sum().backward()
