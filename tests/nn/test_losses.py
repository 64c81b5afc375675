"""Losses (tensora.nn.functional and nn.modules.loss) against NumPy float64 references written
from PyTorch's documented formulas; gradients by gradcheck/gradgradcheck; PyTorch's edge cases
(ignored targets, label smoothing with weights, probability targets, extra dims, clamps)."""

import numpy as np
import pytest
from optest import check_op

import tensora
import tensora.nn.functional as F
from tensora import nn
from tensora.autograd import gradcheck, gradgradcheck
from tensora.errors import DTypeError, ShapeError

REDUCTIONS = ["mean", "sum", "none"]


def reduce(loss, reduction):
    return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.mean()


def np_log_softmax(a, axis=1):
    z = a - a.max(axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis, keepdims=True))


def np_nll(logp, t, weight=None, ignore_index=-100, reduction="mean"):
    c = logp.shape[1]
    w = np.ones(c) if weight is None else weight
    valid = t != ignore_index
    tc = np.where(valid, t, 0)
    wt = w[tc] * valid
    loss = -wt * np.take_along_axis(logp, tc[:, None], 1)[:, 0]
    if reduction == "mean":
        return loss.sum() / wt.sum()
    return reduce(loss, reduction)


def np_cross_entropy(x, t, weight=None, ignore_index=-100, reduction="mean", smoothing=0.0):
    """PyTorch's cross_entropy_loss_label_smoothing, step by step."""
    logp = np_log_softmax(x, 1)
    nll = np_nll(logp, t, weight, ignore_index, reduction)
    if not smoothing:
        return nll
    c = x.shape[1]
    valid = t != ignore_index
    w = np.ones(c) if weight is None else weight
    smooth = -(logp * w.reshape((1, c) + (1,) * (x.ndim - 2))).sum(1) * valid
    if reduction == "mean":
        denom = w[t[valid]].sum() if weight is not None else valid.sum()
        smooth = smooth.sum() / denom
    else:
        smooth = reduce(smooth, reduction)
    return (1 - smoothing) * nll + smooth * (smoothing / c)


def targets(rng, shape, c, ignore=None):
    t = rng.integers(0, c, shape)
    if ignore is not None:
        t[rng.random(shape) < 0.3] = ignore
    return t


CE_CASES = {
    "plain": dict(shape=(6, 5)),
    "weight_ignore": dict(shape=(8, 4), weight=True, ignore_index=-1),
    "smoothing": dict(shape=(6, 5), smoothing=0.2),
    "smoothing_weight_ignore": dict(shape=(8, 5), weight=True, ignore_index=1, smoothing=0.3),
    "extra_dims": dict(shape=(2, 4, 3, 2), weight=True, ignore_index=0, smoothing=0.1),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", list(CE_CASES))
def test_cross_entropy_and_nll_vs_numpy(case, reduction):
    cfg = CE_CASES[case]
    rng = np.random.default_rng(0)
    shape = cfg["shape"]
    c = shape[1]
    x = rng.standard_normal(shape) * 2
    t = targets(rng, (shape[0],) + shape[2:], c, cfg.get("ignore_index"))
    w = rng.uniform(0.2, 2.0, c) if cfg.get("weight") else None
    ii = cfg.get("ignore_index", -100)
    s = cfg.get("smoothing", 0.0)
    tw = None if w is None else tensora.tensor(w)
    check_op(lambda a: F.cross_entropy(a, tensora.tensor(t), tw, ignore_index=ii, reduction=reduction,
                                       label_smoothing=s),
             lambda a: np_cross_entropy(a, t, w, ii, reduction, s), [x], gradgrad=True, atol=1e-12, rtol=1e-10)
    check_op(lambda a: F.nll_loss(a, tensora.tensor(t), tw, ignore_index=ii, reduction=reduction),
             lambda a: np_nll(a, t, w, ii, reduction), [x], gradgrad=True, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_probability_targets(reduction):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 2))
    p = np.exp(rng.standard_normal((3, 4, 2)))
    p /= p.sum(1, keepdims=True)
    w = rng.uniform(0.5, 1.5, 4)

    def ref(a, q, smoothing=0.0, weight=None):
        q = q * (1 - smoothing) + smoothing / 4
        q = q if weight is None else q * weight.reshape(1, 4, 1)
        loss = -(np_log_softmax(a, 1) * q).sum(1)
        return loss.sum() / (a.size / 4) if reduction == "mean" else reduce(loss, reduction)

    check_op(lambda a, q: F.cross_entropy(a, q, reduction=reduction), ref, [x, p], gradgrad=True)
    check_op(lambda a, q: F.cross_entropy(a, q, tensora.tensor(w), reduction=reduction, label_smoothing=0.2),
             lambda a, q: ref(a, q, 0.2, w), [x, p])


def test_cross_entropy_single_sample_and_empty_batch():
    x = np.array([1.0, -2.0, 0.5])
    check_op(lambda a: F.cross_entropy(a, tensora.tensor(2)), lambda a: -np_log_softmax(a[None])[0, 2], [x])
    out = F.cross_entropy(tensora.tensor(x), tensora.tensor(2), reduction="none")
    assert out.shape == ()
    empty = F.cross_entropy(tensora.zeros(0, 3, requires_grad=True), tensora.zeros(0, dtype=tensora.int64))
    assert np.isnan(empty.item())


def test_cross_entropy_all_targets_ignored():
    x = tensora.randn(3, 4, dtype=tensora.float64, requires_grad=True)
    t = tensora.tensor([-100, -100, -100])
    loss = F.cross_entropy(x, t, label_smoothing=0.1)
    assert np.isnan(loss.item())
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), 0)  # as PyTorch: nan loss, zero gradient
    assert F.cross_entropy(x, t, reduction="sum").item() == 0
    np.testing.assert_array_equal(F.nll_loss(x, t, reduction="none").detach().numpy(), 0)


def test_cross_entropy_is_stable_for_huge_logits():
    x = np.array([[1e4, -1e4, 0.0], [3e4, 3e4, -5.0]], dtype=np.float32)
    out = F.cross_entropy(tensora.tensor(x, requires_grad=True), tensora.tensor([1, 0]), reduction="none")
    np.testing.assert_allclose(out.detach().numpy(), [2e4, np.log(2)], rtol=1e-6)
    ref = np_cross_entropy(x.astype(np.float64), np.array([0, 2]), reduction="sum")
    np.testing.assert_allclose(F.cross_entropy(tensora.tensor(x), tensora.tensor([0, 2]), reduction="sum").item(),
                               ref, rtol=1e-6)


def test_cross_entropy_errors():
    x = tensora.randn(4, 3)
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy(x, tensora.tensor([0, 1, 3, 0]))
    with pytest.raises(IndexError, match="out of bounds"):
        F.nll_loss(x, tensora.tensor([0, -2, 1, 0]))
    F.cross_entropy(x, tensora.tensor([0, 5, 1, 0]), ignore_index=5)  # an ignored id may be out of range
    with pytest.raises(ShapeError, match="target"):
        F.cross_entropy(x, tensora.tensor([0, 1]))
    with pytest.raises(ShapeError, match="probability"):
        F.cross_entropy(x, tensora.rand(4, 2))
    with pytest.raises(ShapeError, match="weight"):
        F.cross_entropy(x, tensora.tensor([0, 1, 2, 0]), tensora.ones(4))
    with pytest.raises(DTypeError):
        F.nll_loss(x, tensora.tensor([True, False, True, True]))
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, tensora.tensor([0, 1, 2, 0]), label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, tensora.tensor([0, 1, 2, 0]), reduction="avg")


# -- elementwise losses ----------------------------------------------------------------------

def np_smooth_l1(d, beta):
    return np.where(np.abs(d) < beta, 0.5 * d * d / beta, np.abs(d) - 0.5 * beta)


def np_huber(d, delta):
    return np.where(np.abs(d) < delta, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta))


def np_bce(x, t):
    return -(t * np.maximum(np.log(x), -100) + (1 - t) * np.maximum(np.log1p(-x), -100))


def np_bce_logits(x, t, pw=1.0):
    log_sig = -np.logaddexp(0, -x)
    log_one_minus = -np.logaddexp(0, x)
    return -(pw * t * log_sig + (1 - t) * log_one_minus)


# name -> (function(reduction), reference(reduction), input specs (all differentiable))
ELEMENTWISE = {
    "mse": (lambda r: lambda x, t: F.mse_loss(x, t, reduction=r),
            lambda r: lambda x, t: reduce((x - t) ** 2, r), [(3, 4), (3, 4)]),
    "l1": (lambda r: lambda x, t: F.l1_loss(x, t, reduction=r),
           lambda r: lambda x, t: reduce(np.abs(x - t), r), [(3, 4), (3, 4)]),
    "smooth_l1": (lambda r: lambda x, t: F.smooth_l1_loss(x, t, reduction=r, beta=0.6),
                  lambda r: lambda x, t: reduce(np_smooth_l1(x - t, 0.6), r), [(3, 4), (3, 4)]),
    "huber": (lambda r: lambda x, t: F.huber_loss(x, t, reduction=r, delta=0.8),
              lambda r: lambda x, t: reduce(np_huber(x - t, 0.8), r), [(3, 4), (3, 4)]),
    "kl_div": (lambda r: lambda x, t: F.kl_div(x, t.abs(), reduction=r),
               lambda r: lambda x, t: reduce(np.abs(t) * (np.log(np.abs(t)) - x), r), [(3, 4), (3, 4)]),
    "kl_div_log_target": (lambda r: lambda x, t: F.kl_div(x, t, reduction=r, log_target=True),
                          lambda r: lambda x, t: reduce(np.exp(t) * (t - x), r), [(3, 4), (3, 4)]),
    "bce_logits": (lambda r: lambda x, t: F.binary_cross_entropy_with_logits(x, t.sigmoid(), reduction=r),
                   lambda r: lambda x, t: reduce(np_bce_logits(x, 1 / (1 + np.exp(-t))), r), [(3, 4), (3, 4)]),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_elementwise_losses_vs_numpy(name, reduction):
    fn, ref, specs = ELEMENTWISE[name]
    if name.startswith("kl_div") and reduction == "mean":
        with pytest.warns(UserWarning, match="batchmean"):
            check_op(fn(reduction), ref(reduction), specs, gradgrad=True)
        return
    check_op(fn(reduction), ref(reduction), specs, gradgrad=True, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_weighted_regression_losses(reduction):
    w = np.random.default_rng(3).uniform(0.1, 2.0, (3, 4))
    tw = tensora.tensor(w)

    def weighted_mean(loss):  # mse/l1: divide by the summed weight; huber: a plain mean
        return (loss * w).sum() / w.sum() if reduction == "mean" else reduce(loss * w, reduction)

    check_op(lambda x, t: F.mse_loss(x, t, reduction=reduction, weight=tw),
             lambda x, t: weighted_mean((x - t) ** 2), [(3, 4), (3, 4)])
    check_op(lambda x, t: F.l1_loss(x, t, reduction=reduction, weight=tw),
             lambda x, t: weighted_mean(np.abs(x - t)), [(3, 4), (3, 4)])
    check_op(lambda x, t: F.huber_loss(x, t, reduction, 0.5, tw),
             lambda x, t: reduce(np_huber(x - t, 0.5) * w, reduction), [(3, 4), (3, 4)])
    with pytest.raises(ValueError, match="same size"):
        F.mse_loss(tensora.randn(3, 4), tensora.randn(3, 4), weight=tensora.ones(4))


def test_regression_gradient_conventions_and_broadcast_warning():
    x = tensora.tensor([0.0, 1.0, -1.0, 2.0], dtype=tensora.float64, requires_grad=True)
    t = tensora.tensor([0.0, 0.0, 0.0, 0.0], dtype=tensora.float64)
    F.l1_loss(x, t, reduction="sum").backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0, -1.0, 1.0])  # sign, 0 at equality
    x.grad = None
    F.smooth_l1_loss(x, t, reduction="sum", beta=1.0).backward()  # |d| = beta takes the linear branch
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0, -1.0, 1.0])
    x.grad = None
    F.huber_loss(x, t, reduction="sum", delta=2.0).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0, -1.0, 2.0])
    np.testing.assert_array_equal(F.smooth_l1_loss(x, t, beta=0.0, reduction="none").detach().numpy(),
                                  [0.0, 1.0, 1.0, 2.0])
    with pytest.warns(UserWarning, match="target size"):
        out = F.mse_loss(tensora.ones(3, 1), tensora.zeros(3, 2), reduction="none")
    assert out.shape == (3, 2)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_vs_numpy(reduction):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.05, 0.95, (3, 4))
    t = rng.uniform(0, 1, (3, 4))
    w = rng.uniform(0.5, 2, 4)
    check_op(lambda a, b: F.binary_cross_entropy(a, b, reduction=reduction),
             lambda a, b: reduce(np_bce(a, b), reduction), [x, t], gradgrad=True)
    check_op(lambda a, b: F.binary_cross_entropy(a, b, tensora.tensor(w), reduction=reduction),
             lambda a, b: reduce(np_bce(a, b) * w, reduction), [x, t], diff=[0])


def test_binary_cross_entropy_clamps_like_pytorch():
    x = tensora.tensor([0.0, 1.0, 0.0, 1e-60], dtype=tensora.float64, requires_grad=True)
    t = tensora.tensor([1.0, 0.0, 0.0, 1.0], dtype=tensora.float64)
    loss = F.binary_cross_entropy(x, t, reduction="none")
    np.testing.assert_array_equal(loss.detach().numpy(), [100.0, 100.0, 0.0, 100.0])
    loss.sum().backward()
    # (x - t) / max(x (1 - x), 1e-12): finite everywhere.
    np.testing.assert_allclose(x.grad.numpy(), [-1e12, 1e12, 0.0, -1e12])
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.binary_cross_entropy(tensora.tensor([1.5]), tensora.tensor([1.0]))
    with pytest.raises(ValueError, match="target size"):
        F.binary_cross_entropy(tensora.rand(3), tensora.rand(3, 1))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_weights_and_tails(reduction):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4)) * 3
    t = rng.uniform(0, 1, (3, 4))
    w, pw = rng.uniform(0.5, 2, (3, 4)), rng.uniform(0.5, 2, 4)
    check_op(lambda a, b: F.binary_cross_entropy_with_logits(a, b, tensora.tensor(w), reduction=reduction,
                                                              pos_weight=tensora.tensor(pw)),
             lambda a, b: reduce(np_bce_logits(a, b, pw) * w, reduction), [x, t], gradgrad=True)
    big = tensora.tensor([1000.0, -1000.0, 1000.0], dtype=tensora.float64, requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(big, tensora.tensor([1.0, 0.0, 0.0], dtype=tensora.float64),
                                              reduction="none")
    np.testing.assert_array_equal(loss.detach().numpy(), [0.0, 0.0, 1000.0])
    loss.sum().backward()
    np.testing.assert_array_equal(big.grad.numpy(), [0.0, 0.0, 1.0])


def test_kl_div_batchmean_and_zero_targets():
    rng = np.random.default_rng(4)
    logq = np_log_softmax(rng.standard_normal((4, 3)))
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.1, 0.1, 0.8]])
    ref = lambda a, b: np.where(b > 0, b * (np.log(np.where(b > 0, b, 1)) - a), -b * a).sum() / 4  # noqa: E731
    # (the target gets no gradcheck: t log t has a kink at the zero targets)
    check_op(lambda a, b: F.kl_div(a, b, reduction="batchmean"), ref, [logq, p], gradgrad=True, diff=[0])
    scalar = F.kl_div(tensora.tensor(-1.0), tensora.tensor(0.5), reduction="batchmean")
    np.testing.assert_allclose(scalar.item(), 0.5 * (np.log(0.5) + 1))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cosine_embedding_loss_vs_numpy(reduction):
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    y = np.array([1, -1, 1, -1, -1, 1])

    def ref(u, v, margin=0.1):
        cos = (u * v).sum(-1) / np.sqrt(((u * u).sum(-1) + 1e-12) * ((v * v).sum(-1) + 1e-12))
        return reduce(np.where(y == 1, 1 - cos, np.maximum(cos - margin, 0)), reduction)

    check_op(lambda u, v: F.cosine_embedding_loss(u, v, tensora.tensor(y), 0.1, reduction=reduction), ref,
             [a, b], gradgrad=True)
    one = F.cosine_embedding_loss(tensora.tensor(a[0]), tensora.tensor(b[0]), tensora.tensor(-1), margin=-0.5,
                                  reduction=reduction)
    cos0 = a[0] @ b[0] / np.sqrt((a[0] @ a[0] + 1e-12) * (b[0] @ b[0] + 1e-12))
    assert one.shape == ()
    np.testing.assert_allclose(one.item(), max(cos0 + 0.5, 0.0), rtol=1e-12)
    with pytest.raises(ShapeError):
        F.cosine_embedding_loss(tensora.randn(3, 4), tensora.randn(3, 5), tensora.ones(3))


def test_legacy_size_average_and_reduce():
    x, t = tensora.randn(3, 4), tensora.randn(3, 4)
    with pytest.warns(UserWarning, match="deprecated"):
        assert F.l1_loss(x, t, size_average=False).item() == pytest.approx(F.l1_loss(x, t, reduction="sum").item())
    with pytest.warns(UserWarning):
        assert F.l1_loss(x, t, reduce=False).shape == (3, 4)


# -- modules ----------------------------------------------------------------------------------

MODULES = [
    (nn.MSELoss, {}, F.mse_loss, "regression"),
    (nn.L1Loss, {"reduction": "sum"}, F.l1_loss, "regression"),
    (nn.SmoothL1Loss, {"beta": 0.3}, F.smooth_l1_loss, "regression"),
    (nn.HuberLoss, {"delta": 0.4, "reduction": "none"}, F.huber_loss, "regression"),
    (nn.CrossEntropyLoss, {"ignore_index": 1, "label_smoothing": 0.1, "weight": [1.0, 2.0, 0.5]},
     F.cross_entropy, "classes"),
    (nn.NLLLoss, {"weight": [1.0, 2.0, 0.5], "reduction": "sum"}, F.nll_loss, "classes"),
    (nn.BCELoss, {"weight": [0.5, 2.0, 1.0]}, F.binary_cross_entropy, "binary"),
    (nn.BCEWithLogitsLoss, {"pos_weight": [0.5, 2.0, 1.0], "weight": [1.0, 1.0, 3.0]},
     F.binary_cross_entropy_with_logits, "logits"),
    (nn.KLDivLoss, {"reduction": "batchmean", "log_target": True}, F.kl_div, "regression"),
]


@pytest.mark.parametrize("cls,kwargs,fn,kind", MODULES, ids=[m[0].__name__ for m in MODULES])
def test_loss_modules_call_their_functional(cls, kwargs, fn, kind):
    rng = np.random.default_rng(0)
    kw = {k: tensora.tensor(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    module = cls(**kw)
    x = tensora.tensor(rng.standard_normal((4, 3)))
    target = {"regression": tensora.tensor(rng.standard_normal((4, 3))),
              "classes": tensora.tensor(rng.integers(0, 3, 4)),
              "binary": tensora.tensor(rng.uniform(0, 1, (4, 3))),
              "logits": tensora.tensor(rng.uniform(0, 1, (4, 3)))}[kind]
    if kind == "binary":
        x = x.sigmoid()
    expected = fn(x, target, **kw)
    np.testing.assert_array_equal(module(x, target).numpy(), expected.numpy())
    assert module.reduction == kwargs.get("reduction", "mean")
    for name in ("weight", "pos_weight"):
        if name in kwargs:
            assert name in module.state_dict()
            assert module.to(tensora.float32).state_dict()[name].dtype is tensora.float32


def test_cosine_embedding_module_and_buffers_default_to_none():
    m = nn.CosineEmbeddingLoss(margin=0.2, reduction="sum")
    a, b, y = tensora.randn(3, 4), tensora.randn(3, 4), tensora.tensor([1, -1, 1])
    assert m(a, b, y).item() == F.cosine_embedding_loss(a, b, y, 0.2, reduction="sum").item()
    ce = nn.CrossEntropyLoss()
    assert ce.weight is None and list(ce.state_dict()) == []
    assert repr(ce) == "CrossEntropyLoss()"
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="batchmean")
    assert nn.KLDivLoss(reduction="batchmean").reduction == "batchmean"


def test_losses_train_a_linear_model():
    """End to end: cross entropy drives a linear classifier to separate two blobs."""
    rng = np.random.default_rng(0)
    x = tensora.tensor(np.concatenate([rng.normal(-2, 1, (20, 2)), rng.normal(2, 1, (20, 2))]))
    y = tensora.tensor(np.repeat([0, 1], 20))
    w = tensora.zeros(2, 2, dtype=tensora.float64, requires_grad=True)
    for _ in range(50):
        loss = F.cross_entropy(F.linear(x, w), y)
        w.grad = None
        loss.backward()
        with tensora.no_grad():
            w -= 0.5 * w.grad
    assert loss.item() < 0.1
    assert gradcheck(lambda a: F.cross_entropy(F.linear(x, a), y, label_smoothing=0.1), [w.detach().requires_grad_()])
    assert gradgradcheck(lambda a: F.nll_loss(F.log_softmax(F.linear(x[:4], a), 1), y[:4]),
                         [w.detach().requires_grad_()])
