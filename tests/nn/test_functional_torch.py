"""tensora.nn.functional and the loss modules against PyTorch: forward values and every input's
gradient, float64 and float32, for each function (several configurations of the losses and norms)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

import tensora  # noqa: E402
import tensora.nn.functional as TF  # noqa: E402
from tensora import nn  # noqa: E402

PF = torch.nn.functional
TOL = {"float64": dict(rtol=1e-9, atol=1e-11), "float32": dict(rtol=2e-4, atol=2e-5)}
# PyTorch's hardsigmoid_backward multiplies by a float32 1/6 even for float64 (3e-8 relative off).
LOOSE = {"hardsigmoid": {"float64": dict(rtol=1e-7, atol=1e-11)}}


# Input specs: how to draw each argument. Differentiable ones get requires_grad in both libraries.
def n(*shape, scale=1.0):
    return ("normal", shape, scale)


def u(lo, hi, *shape):
    return ("uniform", shape, (lo, hi))


def c(*shape):
    return ("const", shape, None)


def kinks(values, *shape, scale=1.0):
    """Normal values with about a third replaced by the given kink points (gradient conventions)."""
    return ("kinks", shape, (tuple(values), scale))


def ids(high, *shape, ignore=None):
    return ("ids", shape, (high, ignore))


def probs(*shape, dim=1):
    return ("probs", shape, dim)


def signs(*shape):
    return ("signs", shape, None)


def draw(spec, rng):
    kind, shape, arg = spec
    if kind in ("normal", "const"):
        return rng.standard_normal(shape) * (arg or 1.0), kind == "normal"
    if kind == "uniform":
        return rng.uniform(arg[0], arg[1], shape), True
    if kind == "kinks":
        values, scale = arg
        a = rng.standard_normal(shape) * scale
        mask = rng.random(shape) < 0.35
        a[mask] = rng.choice(values, int(mask.sum()))
        return a, True
    if kind == "ids":
        high, ignore = arg
        a = rng.integers(0, high, shape)
        if ignore is not None:
            a[rng.random(shape) < 0.3] = ignore
        return a.astype(np.int64), False
    if kind == "probs":
        e = np.exp(rng.standard_normal(shape))
        return e / e.sum(axis=arg, keepdims=True), True
    if kind == "signs":
        return rng.choice([-1.0, 1.0], shape), False
    raise ValueError(kind)


def run_case(fn, specs, dtype, seed=0, tol=None):
    """fn(F, lib, *inputs) in both libraries; compare the output and the gradients of <out, g>."""
    tol = tol or TOL[dtype]
    rng = np.random.default_rng(seed)
    drawn = [draw(s, rng) for s in specs]
    tas, pts = [], []
    for a, diff in drawn:
        a = a.astype(dtype) if a.dtype.kind == "f" else a
        tas.append(tensora.tensor(a, requires_grad=diff))
        pts.append(torch.tensor(a, requires_grad=diff))
    out_ta, out_pt = fn(TF, tensora, *tas), fn(PF, torch, *pts)
    assert tuple(out_ta.shape) == tuple(out_pt.shape)
    assert out_ta.dtype.name == str(out_pt.dtype).replace("torch.", "")
    np.testing.assert_allclose(out_ta.detach().numpy(), out_pt.detach().numpy(), **tol)
    if not out_pt.requires_grad:
        return tas, pts
    g = rng.standard_normal(tuple(out_pt.shape)).astype(str(out_pt.dtype).replace("torch.", ""))
    out_ta.backward(tensora.tensor(g))
    out_pt.backward(torch.tensor(g))
    for i, (t, p) in enumerate(zip(tas, pts)):
        if t.requires_grad:
            assert (t.grad is None) == (p.grad is None), f"input {i}"
            if p.grad is not None:
                np.testing.assert_allclose(t.grad.numpy(), p.grad.numpy(), **tol, err_msg=f"grad of input {i}")
    return tas, pts


ACTIVATIONS = {
    "relu": (lambda F, m, x: F.relu(x), [kinks([0.0], 3, 4, 5)]),
    "relu6": (lambda F, m, x: F.relu6(x), [kinks([0.0, 6.0], 3, 4, 5, scale=4)]),
    "leaky_relu": (lambda F, m, x: F.leaky_relu(x, 0.2), [kinks([0.0], 3, 4, 5)]),
    "elu": (lambda F, m, x: F.elu(x, 0.7), [kinks([0.0], 3, 4, 5)]),
    "selu": (lambda F, m, x: F.selu(x), [kinks([0.0], 3, 4, 5)]),
    "celu": (lambda F, m, x: F.celu(x, 0.5), [kinks([0.0, 100.0], 3, 4, 5)]),
    "gelu": (lambda F, m, x: F.gelu(x), [n(3, 4, 5)]),
    "gelu_tanh": (lambda F, m, x: F.gelu(x, approximate="tanh"), [n(3, 4, 5)]),
    "silu": (lambda F, m, x: F.silu(x), [n(3, 4, 5, scale=3)]),
    "mish": (lambda F, m, x: F.mish(x), [n(3, 4, 5, scale=3)]),
    "softplus": (lambda F, m, x: F.softplus(x, 2.0, 5.0), [n(3, 4, 5, scale=3)]),
    "sigmoid": (lambda F, m, x: F.sigmoid(x), [n(3, 4, 5, scale=3)]),
    "tanh": (lambda F, m, x: F.tanh(x), [n(3, 4, 5)]),
    "hardtanh": (lambda F, m, x: F.hardtanh(x, -0.5, 0.75), [kinks([-0.5, 0.75], 3, 4, 5)]),
    "hardsigmoid": (lambda F, m, x: F.hardsigmoid(x), [kinks([-3.0, 3.0], 3, 4, 5, scale=4)]),
    "hardswish": (lambda F, m, x: F.hardswish(x), [kinks([-3.0, 3.0], 3, 4, 5, scale=4)]),
    "logsigmoid": (lambda F, m, x: F.logsigmoid(x), [kinks([0.0, -200.0, 200.0], 3, 4, 5, scale=10)]),
    "softsign": (lambda F, m, x: F.softsign(x), [kinks([0.0], 3, 4, 5)]),
    "tanhshrink": (lambda F, m, x: F.tanhshrink(x), [n(3, 4, 5)]),
    "hardshrink": (lambda F, m, x: F.hardshrink(x, 0.25), [kinks([-0.25, 0.25], 3, 4, 5)]),
    "softshrink": (lambda F, m, x: F.softshrink(x, 0.25), [kinks([-0.25, 0.25], 3, 4, 5)]),
    "threshold": (lambda F, m, x: F.threshold(x, 0.125, -2.0), [kinks([0.125], 3, 4, 5)]),
    "glu": (lambda F, m, x: F.glu(x, 1), [n(3, 4, 5)]),
    "prelu": (lambda F, m, x, w: F.prelu(x, w), [kinks([0.0], 3, 4, 5), n(4)]),
    "prelu_shared": (lambda F, m, x, w: F.prelu(x, w), [n(3, 4, 5), n(1)]),
    "softmax": (lambda F, m, x: F.softmax(x, 1), [n(3, 4, 5, scale=5)]),
    "softmax_dtype": (lambda F, m, x: F.softmax(x, dim=-1, dtype=m.float64), [n(3, 4, 5)]),
    "log_softmax": (lambda F, m, x: F.log_softmax(x, -1), [n(3, 4, 5, scale=5)]),
    "softmin": (lambda F, m, x: F.softmin(x, 0), [n(3, 4, 5)]),
    # in-place variants, applied to a non-leaf so that gradients flow through the rewrite
    "relu_": (lambda F, m, x: F.relu_(x * 1), [kinks([0.0], 3, 4)]),
    "leaky_relu_": (lambda F, m, x: F.leaky_relu_(x * 1, 0.1), [n(3, 4)]),
    "elu_": (lambda F, m, x: F.elu_(x * 1, 0.5), [n(3, 4)]),
    "hardtanh_": (lambda F, m, x: F.hardtanh_(x * 1, -0.5, 0.5), [kinks([-0.5, 0.5], 3, 4)]),
    "threshold_": (lambda F, m, x: F.threshold_(x * 1, 0.1, 2.0), [n(3, 4)]),
    "selu_inplace": (lambda F, m, x: F.selu(x * 1, inplace=True), [n(3, 4)]),
}

LAYERS = {
    "linear": (lambda F, m, x, w, b: F.linear(x, w, b), [n(2, 3, 4), n(5, 4), n(5)]),
    "bilinear": (lambda F, m, x1, x2, w, b: F.bilinear(x1, x2, w, b), [n(2, 3, 4), n(2, 3, 6), n(5, 4, 6), n(5)]),
    "bilinear_nobias": (lambda F, m, x1, x2, w: F.bilinear(x1, x2, w), [n(7, 4), n(7, 2), n(3, 4, 2)]),
    "embedding": (lambda F, m, i, w: F.embedding(i, w, padding_idx=1), [ids(6, 3, 4), n(6, 5)]),
    "embedding_max_norm": (lambda F, m, i, w: F.embedding(i, w, max_norm=1.5), [ids(6, 3, 4), n(6, 5)]),
    "embedding_freq": (lambda F, m, i, w: F.embedding(i, w, scale_grad_by_freq=True), [ids(6, 3, 4), n(6, 5)]),
    "one_hot": (lambda F, m, i: F.one_hot(i, 7), [ids(7, 3, 4)]),
    "conv1d": (lambda F, m, x, w, b: F.conv1d(x, w, b, 2, 1), [n(2, 3, 9), n(4, 3, 3), n(4)]),
    "conv2d": (lambda F, m, x, w, b: F.conv2d(x, w, b, padding=1, groups=2), [n(2, 4, 6, 5), n(6, 2, 3, 3), n(6)]),
    "conv3d": (lambda F, m, x, w: F.conv3d(x, w, stride=(1, 2, 1)), [n(1, 2, 4, 5, 4), n(3, 2, 2, 2, 2)]),
    "conv_transpose1d": (lambda F, m, x, w, b: F.conv_transpose1d(x, w, b, 2, 1, 1), [n(2, 3, 5), n(3, 4, 3), n(4)]),
    "conv_transpose2d": (lambda F, m, x, w: F.conv_transpose2d(x, w, stride=2), [n(2, 3, 4, 3), n(3, 2, 3, 3)]),
    "conv_transpose3d": (lambda F, m, x, w: F.conv_transpose3d(x, w, padding=1), [n(1, 2, 3, 3, 2), n(2, 2, 3, 2, 2)]),
    "max_pool1d": (lambda F, m, x: F.max_pool1d(x, 3, 2), [n(2, 3, 9)]),
    "max_pool2d": (lambda F, m, x: F.max_pool2d(x, 2), [n(2, 3, 6, 6)]),
    "max_pool3d": (lambda F, m, x: F.max_pool3d(x, 2, padding=1), [n(1, 2, 3, 4, 4)]),
    "avg_pool1d": (lambda F, m, x: F.avg_pool1d(x, 3, 2, 1), [n(2, 3, 9)]),
    "avg_pool2d": (lambda F, m, x: F.avg_pool2d(x, 2, ceil_mode=True), [n(2, 3, 5, 5)]),
    "avg_pool3d": (lambda F, m, x: F.avg_pool3d(x, 2), [n(1, 2, 4, 4, 4)]),
    "adaptive_avg_pool1d": (lambda F, m, x: F.adaptive_avg_pool1d(x, 4), [n(2, 3, 7)]),
    "adaptive_avg_pool2d": (lambda F, m, x: F.adaptive_avg_pool2d(x, (3, 2)), [n(2, 3, 7, 5)]),
    "adaptive_avg_pool3d": (lambda F, m, x: F.adaptive_avg_pool3d(x, 2), [n(1, 2, 5, 4, 3)]),
    "interpolate": (lambda F, m, x: F.interpolate(x, scale_factor=2, mode="bilinear"), [n(1, 2, 3, 4)]),
    "pad": (lambda F, m, x: F.pad(x, (1, 2, 0, 1), value=0.5), [n(2, 3, 4)]),
    "dropout_eval": (lambda F, m, x: F.dropout(x, 0.5, training=False) + F.dropout3d(x, 0.5, training=False),
                     [n(2, 3, 4, 2)]),
    "dropout_p0": (lambda F, m, x: F.dropout1d(x, 0.0) + F.dropout2d(x.unsqueeze(-1), 0.0).squeeze(-1),
                   [n(3, 4, 5)]),
    "sdpa": (lambda F, m, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
             [n(2, 3, 5, 4), n(2, 3, 5, 4), n(2, 3, 5, 4)]),
}

NORMS = {
    "layer_norm": (lambda F, m, x, w, b: F.layer_norm(x, (4, 5), w, b), [n(3, 4, 5, scale=3), n(4, 5), n(4, 5)]),
    "layer_norm_plain": (lambda F, m, x: F.layer_norm(x, [5], eps=1e-3), [n(3, 4, 5)]),
    "layer_norm_weight": (lambda F, m, x, w: F.layer_norm(x, (5,), w), [n(6, 5), n(5)]),
    "group_norm": (lambda F, m, x, w, b: F.group_norm(x, 3, w, b), [n(2, 6, 4, 3), n(6), n(6)]),
    "group_norm_plain": (lambda F, m, x: F.group_norm(x, 2, eps=1e-2), [n(3, 4, 5)]),
    "batch_norm_train": (lambda F, m, x, w, b: F.batch_norm(x, None, None, w, b, True), [n(4, 3, 5, 2), n(3), n(3)]),
    "batch_norm_1d": (lambda F, m, x: F.batch_norm(x, None, None, training=True, eps=1e-3), [n(6, 4)]),
    "batch_norm_eval": (lambda F, m, x, rm, rv, w, b: F.batch_norm(x, rm, rv.abs() + 0.5, w, b),
                        [n(4, 3, 5), c(3), c(3), n(3), n(3)]),
    "rms_norm": (lambda F, m, x, w: F.rms_norm(x, (5,), w), [n(3, 4, 5), n(5)]),
    "rms_norm_eps": (lambda F, m, x: F.rms_norm(x, [4, 5], eps=1e-2), [n(3, 4, 5)]),
    "normalize": (lambda F, m, x: F.normalize(x), [n(3, 4, 5)]),
    "normalize_p1": (lambda F, m, x: F.normalize(x, p=1.0, dim=-1), [n(3, 4, 5)]),
    "cosine_similarity": (lambda F, m, a, b: F.cosine_similarity(a, b), [n(3, 4, 5), n(3, 4, 5)]),
    "cosine_similarity_bcast": (lambda F, m, a, b: F.cosine_similarity(a, b, dim=-1, eps=1e-3),
                                [n(3, 4, 5), n(4, 5, scale=1e-4)]),
    "pairwise_distance": (lambda F, m, a, b: F.pairwise_distance(a, b), [n(6, 5), n(6, 5)]),
    "pairwise_distance_p1": (lambda F, m, a, b: F.pairwise_distance(a, b, 1.0, keepdim=True), [n(6, 5), n(6, 5)]),
}

LOSSES = {
    "mse": (lambda F, m, x, t, r: F.mse_loss(x, t, reduction=r), [n(3, 4), n(3, 4)]),
    "mse_weight": (lambda F, m, x, t, w, r: F.mse_loss(x, t, reduction=r, weight=w.abs()), [n(3, 4), n(3, 4), c(3, 4)]),
    "l1": (lambda F, m, x, t, r: F.l1_loss(x, t.detach() * (x.detach() > 0) + x.detach() * (x.detach() <= 0),
                                           reduction=r), [n(3, 4), c(3, 4)]),
    "l1_weight": (lambda F, m, x, t, w, r: F.l1_loss(x, t, reduction=r, weight=w.abs()), [n(3, 4), n(3, 4), c(3, 4)]),
    "smooth_l1": (lambda F, m, x, t, r: F.smooth_l1_loss(x, t, reduction=r, beta=0.5), [n(3, 4), n(3, 4)]),
    "smooth_l1_beta0": (lambda F, m, x, t, r: F.smooth_l1_loss(x, t, reduction=r, beta=0.0), [n(3, 4), n(3, 4)]),
    "huber": (lambda F, m, x, t, r: F.huber_loss(x, t, reduction=r, delta=0.7), [n(3, 4), n(3, 4)]),
    "huber_weight": (lambda F, m, x, t, w, r: F.huber_loss(x, t, r, 1.5, w), [n(3, 4, scale=2), n(3, 4), c(3, 4)]),
    "ce": (lambda F, m, x, t, r: F.cross_entropy(x, t, reduction=r), [n(6, 5, scale=3), ids(5, 6)]),
    "ce_weight_ignore": (lambda F, m, x, t, w, r: F.cross_entropy(x, t, w.abs(), ignore_index=-1, reduction=r),
                         [n(8, 5), ids(5, 8, ignore=-1), c(5)]),
    "ce_smooth": (lambda F, m, x, t, r: F.cross_entropy(x, t, reduction=r, label_smoothing=0.2),
                  [n(6, 5), ids(5, 6)]),
    "ce_smooth_weight_ignore": (lambda F, m, x, t, w, r: F.cross_entropy(x, t, w.abs(), ignore_index=2, reduction=r,
                                                                        label_smoothing=0.3),
                                [n(8, 5), ids(5, 8), c(5)]),
    "ce_extra_dims": (lambda F, m, x, t, w, r: F.cross_entropy(x, t, w.abs(), ignore_index=0, reduction=r,
                                                              label_smoothing=0.1),
                      [n(2, 4, 3, 5), ids(4, 2, 3, 5), c(4)]),
    "ce_single": (lambda F, m, x, t, r: F.cross_entropy(x, t[0], reduction=r), [n(5), ids(5, 1)]),
    "ce_probs": (lambda F, m, x, t, r: F.cross_entropy(x, t, reduction=r), [n(6, 5), probs(6, 5)]),
    "ce_probs_smooth_weight": (lambda F, m, x, t, w, r: F.cross_entropy(x, t, w.abs(), reduction=r,
                                                                       label_smoothing=0.25),
                               [n(2, 5, 3), probs(2, 5, 3), c(5)]),
    "nll": (lambda F, m, x, t, r: F.nll_loss(x, t, reduction=r), [n(6, 5), ids(5, 6)]),
    "nll_weight_ignore": (lambda F, m, x, t, w, r: F.nll_loss(x, t, w.abs(), ignore_index=3, reduction=r),
                          [n(2, 5, 4), ids(5, 2, 4), c(5)]),
    "bce": (lambda F, m, x, t, r: F.binary_cross_entropy(x, t, reduction=r), [u(0.02, 0.98, 3, 4), u(0, 1, 3, 4)]),
    "bce_weight": (lambda F, m, x, t, w, r: F.binary_cross_entropy(x, t, w, reduction=r),
                   [u(0.02, 0.98, 3, 4), u(0, 1, 3, 4), c(4)]),
    "bce_logits": (lambda F, m, x, t, r: F.binary_cross_entropy_with_logits(x, t, reduction=r),
                   [kinks([0.0, 50.0, -50.0], 3, 4, scale=3), u(0, 1, 3, 4)]),
    "bce_logits_weights": (lambda F, m, x, t, w, pw, r: F.binary_cross_entropy_with_logits(
        x, t, w, reduction=r, pos_weight=pw.abs()), [n(3, 4, scale=3), u(0, 1, 3, 4), c(3, 4), c(4)]),
    "kl_div": (lambda F, m, x, t, r: F.kl_div(x.log_softmax(1), t, reduction=r), [n(3, 4), probs(3, 4)]),
    "kl_div_log_target": (lambda F, m, x, t, r: F.kl_div(x.log_softmax(1), t.log(), reduction=r, log_target=True),
                          [n(3, 4), probs(3, 4)]),
    "cosine_embedding": (lambda F, m, a, b, y, r: F.cosine_embedding_loss(a, b, y, margin=0.2, reduction=r),
                         [n(6, 5), n(6, 5), signs(6)]),
    "cosine_embedding_1d": (lambda F, m, a, b, y, r: F.cosine_embedding_loss(a, b, y[0], reduction=r),
                            [n(5), n(5), signs(1)]),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(ACTIVATIONS) + list(LAYERS) + list(NORMS))
def test_functional(name, dtype):
    fn, specs = {**ACTIVATIONS, **LAYERS, **NORMS}[name]
    run_case(fn, specs, dtype, tol=LOOSE.get(name, {}).get(dtype))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss(name, reduction, dtype):
    fn, specs = LOSSES[name]
    if name.startswith("kl_div"):
        for r in ([reduction, "batchmean"] if reduction == "sum" else [reduction]):
            with pytest.warns(UserWarning) if r == "mean" else _no_warning():
                run_case(lambda F, m, *a: fn(F, m, *a, r), specs, dtype)
        return
    run_case(lambda F, m, *a: fn(F, m, *a, reduction), specs, dtype)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("momentum", [0.1, 0.7])
def test_batch_norm_running_stats(momentum):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 4)) * 2 + 1
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    ta = [tensora.tensor(a) for a in (rm, rv)]
    pt = [torch.tensor(a) for a in (rm, rv)]
    for _ in range(3):
        TF.batch_norm(tensora.tensor(x), *ta, training=True, momentum=momentum)
        PF.batch_norm(torch.tensor(x), *pt, training=True, momentum=momentum)
    for t, p in zip(ta, pt):
        np.testing.assert_allclose(t.numpy(), p.numpy(), rtol=1e-12)


def test_cross_entropy_all_ignored():
    x = np.random.default_rng(0).standard_normal((3, 4))
    for smoothing in (0.0, 0.2):
        t_ta, t_pt = tensora.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        out_ta = TF.cross_entropy(t_ta, tensora.tensor([-100] * 3), label_smoothing=smoothing)
        out_pt = PF.cross_entropy(t_pt, torch.tensor([-100] * 3), label_smoothing=smoothing)
        assert np.isnan(out_ta.item()) and np.isnan(out_pt.item())
        out_ta.backward()
        out_pt.backward()
        np.testing.assert_array_equal(t_ta.grad.numpy(), t_pt.grad.numpy())


@pytest.mark.parametrize("kind", ["indices", "probs"])
def test_cross_entropy_float32_large_logits(kind):
    """Stability: logits of 1e4 give the same finite loss and gradient as PyTorch."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((8, 10)) * 1e4).astype(np.float32)
    t = rng.integers(0, 10, 8) if kind == "indices" else np.eye(10, dtype=np.float32)[rng.integers(0, 10, 8)]
    t_ta, t_pt = tensora.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out_ta, out_pt = TF.cross_entropy(t_ta, tensora.tensor(t)), PF.cross_entropy(t_pt, torch.tensor(t))
    out_ta.backward()
    out_pt.backward()
    np.testing.assert_allclose(out_ta.item(), out_pt.item(), rtol=1e-5)
    np.testing.assert_allclose(t_ta.grad.numpy(), t_pt.grad.numpy(), atol=1e-6)


LOSS_MODULES = [
    ("MSELoss", {}, [n(3, 4), n(3, 4)]),
    ("L1Loss", {"reduction": "sum"}, [n(3, 4), n(3, 4)]),
    ("SmoothL1Loss", {"beta": 0.3}, [n(3, 4), n(3, 4)]),
    ("HuberLoss", {"delta": 0.4, "reduction": "none"}, [n(3, 4), n(3, 4)]),
    ("CrossEntropyLoss", {"ignore_index": 1, "label_smoothing": 0.1, "weight": [1.0, 2.0, 0.5, 1.5]},
     [n(5, 4), ids(4, 5)]),
    ("NLLLoss", {"weight": [1.0, 2.0, 0.5, 1.5], "reduction": "sum"}, [n(5, 4), ids(4, 5)]),
    ("BCELoss", {"weight": [0.5, 2.0, 1.0]}, [u(0.05, 0.95, 4, 3), u(0, 1, 4, 3)]),
    ("BCEWithLogitsLoss", {"pos_weight": [0.5, 2.0, 1.0]}, [n(4, 3), u(0, 1, 4, 3)]),
    ("KLDivLoss", {"reduction": "batchmean", "log_target": True}, [n(4, 3), n(4, 3)]),
    ("CosineEmbeddingLoss", {"margin": -0.1}, [n(4, 3), n(4, 3), signs(4)]),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,kwargs,specs", LOSS_MODULES, ids=[m[0] for m in LOSS_MODULES])
def test_loss_module(name, kwargs, specs, dtype):
    def build(lib, cls):
        kw = {k: (lib.tensor(v, dtype=getattr(lib, dtype)) if isinstance(v, list) else v) for k, v in kwargs.items()}
        return cls(**kw)

    mod_ta, mod_pt = build(tensora, getattr(nn, name)), build(torch, getattr(torch.nn, name))
    assert repr(mod_ta) == repr(mod_pt)
    assert sorted(mod_ta.state_dict()) == sorted(mod_pt.state_dict())
    assert mod_ta.reduction == mod_pt.reduction
    run_case(lambda F, m, *a: (mod_ta if m is tensora else mod_pt)(*a), specs, dtype)


def test_legacy_reduction_flags():
    x, t = np.random.default_rng(0).standard_normal((2, 3, 4))
    for size_average, reduce in [(False, None), (None, False), (True, True)]:
        with pytest.warns(UserWarning):
            a = TF.mse_loss(tensora.tensor(x), tensora.tensor(t), size_average=size_average, reduce=reduce)
        with pytest.warns(UserWarning):
            b = PF.mse_loss(torch.tensor(x), torch.tensor(t), size_average=size_average, reduce=reduce)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)
        with pytest.warns(UserWarning):
            assert nn.L1Loss(size_average, reduce).reduction == torch.nn.L1Loss(size_average, reduce).reduction


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint8])
def test_cross_entropy_and_nll_with_narrow_integer_targets(dtype):
    # flat positions of 40 x 1000 logits overflowed int16 targets: other entries were read, silently
    x = np.random.default_rng(0).standard_normal((40, 250)).astype(np.float32)
    t = np.random.default_rng(1).integers(0, 250, 40)
    for ours, theirs in ((TF.cross_entropy, torch.nn.functional.cross_entropy),
                         (TF.nll_loss, torch.nn.functional.nll_loss)):
        got = ours(tensora.tensor(x), tensora.tensor(t.astype(dtype))).item()
        np.testing.assert_allclose(got, theirs(torch.tensor(x), torch.tensor(t)).item(), rtol=1e-5)


def test_group_norm_of_an_empty_batch():
    assert tuple(TF.group_norm(tensora.zeros(0, 4, 2), 2).shape) == tuple(
        torch.nn.functional.group_norm(torch.zeros(0, 4, 2), 2).shape)


@pytest.mark.parametrize("mode", ["replicate", "circular", "reflect"])
def test_pad_with_negative_amounts_crops_in_every_mode(mode):
    x = np.random.default_rng(3).standard_normal((1, 2, 5, 4))
    ours, theirs = tensora.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, ref = TF.pad(ours, (-1, 2, 2, -1), mode=mode), torch.nn.functional.pad(theirs, (-1, 2, 2, -1), mode=mode)
    g = np.random.default_rng(4).standard_normal(tuple(ref.shape))
    out.backward(tensora.tensor(g))
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy())
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy())


def test_transformer_encoder_takes_torchs_fast_path_flags():
    layer = nn.TransformerEncoderLayer(16, 4, 32)
    assert len(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False, mask_check=False).layers) == 2


@pytest.mark.parametrize("training", [False, True])
def test_batch_norm_of_bfloat16_input_with_float32_statistics_stays_bfloat16(training):
    x = np.random.default_rng(5).random((3, 4), dtype=np.float32)
    v = np.random.default_rng(6).random(4, dtype=np.float32) + 0.5
    ours = TF.batch_norm(tensora.tensor(x).to(tensora.bfloat16), tensora.tensor(v), tensora.tensor(v.copy()),
                         training=training)
    ref = torch.nn.functional.batch_norm(torch.tensor(x).bfloat16(), torch.tensor(v), torch.tensor(v.copy()),
                                         training=training)
    assert ours.dtype == tensora.bfloat16 and ref.dtype == torch.bfloat16
    np.testing.assert_array_equal(ours.float().numpy(), ref.float().numpy())

