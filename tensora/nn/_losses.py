"""Elementwise losses: mse, l1, smooth_l1, huber, binary cross entropy (on probabilities and on
logits), kl_div and cosine_embedding_loss, with torch.nn.functional's signatures.

Each follows PyTorch's formula and gradient conventions: l1's gradient is 0 at
0; smooth_l1/huber switch branch at |d| = beta/delta exactly where PyTorch does;
binary_cross_entropy clamps the logs at -100 and, like PyTorch's kernel, uses
(x - t) / max(x (1 - x), 1e-12) as its input gradient; the logits version is
PyTorch's own composite (1 - t) x - w_pos log_sigmoid(x), stable for any x.
cross_entropy and nll_loss live in _cross_entropy.py.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..autograd.function import Op
from ..errors import ShapeError, fmt_shape
from ..ops.elementwise import float_in, float_out, where
from ..tensor import Tensor
from ._activations import logsigmoid
from ._reduction import legacy_reduction, reduce_loss
from ..amp import autocast_op

_BCE_GRAD_EPS = 1e-12  # PyTorch's EPSILON in binary_cross_entropy_backward


def _broadcast(input: Tensor, target: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """input and target expanded to a common shape; like PyTorch, a differing shape only warns."""
    if tuple(target.shape) == tuple(input.shape):
        return input, target
    warnings.warn(f"{name}: using a target size ({fmt_shape(target.shape)}) that is different to the input "
                  f"size ({fmt_shape(input.shape)}). This will likely lead to incorrect results due to "
                  "broadcasting. Please ensure they have the same size.", stacklevel=3)
    shape = np.broadcast_shapes(tuple(input.shape), tuple(target.shape))
    return input.expand(shape), target.expand(shape)


def _weighted(loss: Tensor, weight: Tensor | None, reduction: str, name: str) -> Tensor:
    """PyTorch's per-element `weight` for mse/l1: 'mean' divides by the summed weight."""
    if weight is None:
        return reduce_loss(loss, reduction)
    if tuple(weight.shape) != tuple(loss.shape):
        raise ValueError(f"{name}: weights and input must have the same size, got {fmt_shape(weight.shape)} "
                         f"and {fmt_shape(loss.shape)}")
    loss = loss * weight
    return loss.sum() / weight.sum() if reduction == "mean" else reduce_loss(loss, reduction)


@autocast_op("mse_loss")
def mse_loss(input: Tensor, target: Tensor, size_average: bool | None = None, reduce: bool | None = None,
             reduction: str = "mean", weight: Tensor | None = None) -> Tensor:
    """(input - target)^2, reduced.

    >>> import tensora
    >>> mse_loss(tensora.tensor([1.0, 2.0]), tensora.tensor([0.0, 0.0])).item()
    2.5
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    input, target = _broadcast(input, target, "mse_loss")
    d = input - target
    return _weighted(d * d, weight, reduction, "mse_loss")


@autocast_op("l1_loss")
def l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None, reduce: bool | None = None,
            reduction: str = "mean", weight: Tensor | None = None) -> Tensor:
    """|input - target|, reduced; the gradient at equality is 0."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    input, target = _broadcast(input, target, "l1_loss")
    return _weighted((input - target).abs(), weight, reduction, "l1_loss")


@autocast_op("smooth_l1_loss")
def smooth_l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None, reduce: bool | None = None,
                   reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (l1_loss when beta = 0)."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, got {beta}")
    if beta == 0:
        return l1_loss(input, target, reduction=reduction)
    input, target = _broadcast(input, target, "smooth_l1_loss")
    d = input - target
    ad = d.abs()
    return reduce_loss(where(ad < beta, d * d * (0.5 / beta), ad - 0.5 * beta), reduction)


@autocast_op("huber_loss")
def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0,
               weight: Tensor | None = None) -> Tensor:
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta); a per-element weight scales it
    before the reduction ('mean' stays a plain mean, as in PyTorch)."""
    reduction = legacy_reduction(None, None, reduction)
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    input, target = _broadcast(input, target, "huber_loss")
    d = input - target
    ad = d.abs()
    loss = where(ad < delta, d * d * 0.5, (ad - 0.5 * delta) * delta)
    if weight is not None:
        if tuple(weight.shape) != tuple(loss.shape):
            raise ValueError(f"huber_loss: weights and input must have the same size, got "
                             f"{fmt_shape(weight.shape)} and {fmt_shape(loss.shape)}")
        loss = loss * weight
    return reduce_loss(loss, reduction)


class BinaryCrossEntropy(Op, name="binary_cross_entropy"):
    """-(t log x + (1 - t) log(1 - x)) with both logs clamped at -100 (PyTorch's kernel)."""

    @staticmethod
    def forward(ctx, x, t):
        xp = ctx.xp
        ctx.save(x, t)
        a, low = float_in(x)
        b = t.astype(a.dtype, copy=False)
        out = (b - 1) * xp.maximum(xp.log1p(-a), -100.0) - b * xp.maximum(xp.log(a), -100.0)
        return float_out(out, low)

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved
        need = ctx.needs_input_grad
        gx = g * (x - t) / (x * (1 - x)).clamp_min(_BCE_GRAD_EPS) if need[0] else None
        # PyTorch's binary_cross_entropy_target_backward: -logit(x).
        gt = -g * (x / (1 - x)).log() if need[1] else None
        return gx, gt


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                         size_average: bool | None = None, reduce: bool | None = None,
                         reduction: str = "mean") -> Tensor:
    """Binary cross entropy of probabilities `input` (in [0, 1]) against `target`, optionally weighted.

    >>> import tensora
    >>> round(binary_cross_entropy(tensora.tensor([0.5]), tensora.tensor([1.0])).item(), 4)
    0.6931
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"binary_cross_entropy: using a target size ({fmt_shape(target.shape)}) that is "
                         f"different to the input size ({fmt_shape(input.shape)}) is not supported; "
                         "please ensure they have the same size")
    x = input._data
    if ((x < 0) | (x > 1)).any():
        raise ValueError("binary_cross_entropy: all elements of input should be between 0 and 1")
    loss = BinaryCrossEntropy.apply(input, target)
    if weight is not None:
        loss = loss * weight
    return reduce_loss(loss, reduction)


@autocast_op("binary_cross_entropy_with_logits")
def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                     size_average: bool | None = None, reduce: bool | None = None,
                                     reduction: str = "mean", pos_weight: Tensor | None = None) -> Tensor:
    """Binary cross entropy of sigmoid(input) against `target`, computed stably from the logits.

    `pos_weight` (broadcast along the last dim) weighs the positive term; `weight` each element.
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"binary_cross_entropy_with_logits: target size ({fmt_shape(target.shape)}) must be "
                         f"the same as input size ({fmt_shape(input.shape)})")
    log_sig = logsigmoid(input)
    if pos_weight is not None:
        log_sig = log_sig * ((pos_weight - 1) * target + 1)
    loss = (1 - target) * input - log_sig
    if weight is not None:
        loss = loss * weight
    return reduce_loss(loss, reduction)


@autocast_op("kl_div")
def kl_div(input: Tensor, target: Tensor, size_average: bool | None = None, reduce: bool | None = None,
           reduction: str = "mean", log_target: bool = False) -> Tensor:
    """KL(target || p) pointwise, for log-probabilities `input`: target (log target - input).

    reduction='batchmean' divides the sum by the batch size (the true KL divergence); 'mean'
    divides by the number of elements (with PyTorch's warning).
    """
    if size_average is None and reduce is None and reduction == "mean":
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support size."
                      "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
                      "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
                      stacklevel=2)
    reduction = legacy_reduction(size_average, reduce, reduction, ("none", "mean", "sum", "batchmean"))
    if log_target:
        loss = target.exp() * (target - input)
    else:
        # xlogy(t, t) - t * input: 0 where t == 0; log only ever sees positive values, so the
        # gradient there is finite too.
        loss = target * where(target > 0, target, 1).log() - target * input
    if reduction == "batchmean":
        total = loss.sum()
        return total / input.shape[0] if input.ndim else total
    return reduce_loss(loss, reduction)


@autocast_op("cosine_embedding_loss")
def cosine_embedding_loss(input1: Tensor, input2: Tensor, target: Tensor, margin: float = 0.0,
                          size_average: bool | None = None, reduce: bool | None = None,
                          reduction: str = "mean") -> Tensor:
    """1 - cos(x1, x2) where target = 1, max(0, cos(x1, x2) - margin) where target = -1.

    Vectors lie along the last dim; the norms get PyTorch's 1e-12 added to their squares.
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    if input1.ndim not in (1, 2) or tuple(input1.shape) != tuple(input2.shape):
        raise ShapeError(f"cosine_embedding_loss: expected two 1-D or 2-D inputs of one shape, got "
                         f"{fmt_shape(input1.shape)} and {fmt_shape(input2.shape)}")
    if target.ndim != input1.ndim - 1:
        raise ShapeError(f"cosine_embedding_loss: expected a {input1.ndim - 1}-D target for {input1.ndim}-D "
                         f"inputs, got shape {fmt_shape(target.shape)}")
    dim = input1.ndim - 1
    eps = 1e-12  # PyTorch's EPSILON
    prod = (input1 * input2).sum(dim)
    mag1 = (input1 * input1).sum(dim) + eps
    mag2 = (input2 * input2).sum(dim) + eps
    cos = prod / (mag1 * mag2).sqrt()
    loss = where(target == 1, 1 - cos, 0) + where(target == -1, (cos - margin).clamp_min(0), 0)
    return reduce_loss(loss, reduction)


__all__ = ["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "kl_div", "cosine_embedding_loss"]
