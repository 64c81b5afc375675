"""cross_entropy and nll_loss with class-index targets, as fused ops.

Logits (or log-probabilities) are (N, C, d1, ...) or (C,); targets are class
indices (N, d1, ...), or for cross_entropy also class probabilities shaped like
the input. PyTorch's semantics throughout: `weight` rescales each class,
targets equal to `ignore_index` contribute nothing, 'mean' divides by the summed
weight of the targets that are not ignored (nan when all are), and label
smoothing mixes in (eps / C) * sum_c w_c * -log p_c per sample.

With class indices nothing one-hot is built. Forward is a max-shifted exp, its
sums along the class dim and a gather at the target positions (flat indices
computed once); the probabilities it leaves are what the backward needs.
Writing q_i for sample i's (sparse) target distribution times the weights, the
loss is -sum_c q_ic log p_ic and its gradient is p_i * sum(q_i) - q_i: one dense
pass, a dense per-class term when smoothing, and a subtraction at the target
positions (`CrossEntropyBackward`, whose own backward is tensor ops, so
gradients of gradients work).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import dtypes as dt
from ..autograd.function import Op
from ..errors import DTypeError, ShapeError, fmt_shape
from ..ops.reduce import acc_dtype
from ..ops.softmax import log_softmax, softmax
from ..tensor import Tensor, make_tensor
from ._fastsum import esum
from ._reduction import legacy_reduction, reduce_loss
from ..amp import autocast_op


class _Targets(NamedTuple):
    """What forward learnt about the targets, for the backward passes."""

    pos: Any       # (N, *) flat position of each sample's target in the contiguous (N, C, *) input
    index: Any     # (N, 1, *) class ids, ignored ones replaced by 0 (for gather in double backward)
    valid: Any     # (N, *) bool, target != ignore_index
    wt: Any        # (N, *) weight of each sample's class (0 where ignored)
    weight: Any    # (C,) class weights or None
    total: Any     # (N, *) sum_c q_ic: (1 - eps) w_t + (eps / C) sum_c w_c where the sample counts
    smoothing: float
    reduction: str
    scale: float   # what g is multiplied by: 1 / summed weight for 'mean' (0 if none count), else 1


def _targets(xp: Any, shape: tuple, target: Any, weight: Any, ignore_index: int, smoothing: float,
             reduction: str, acc: Any) -> _Targets:
    valid = target != ignore_index
    index = xp.where(valid, target, 0).astype(xp.int64, copy=False)  # positions below overflow int16 targets
    wt = valid.astype(acc) if weight is None else weight.astype(acc)[index] * valid
    if weight is not None:
        weight = weight.astype(acc, copy=False)
    n, c = shape[0], shape[1]
    inner = index.size // n if n else 1  # prod(d1, ...)
    # Position of x[i, t_i, j] in the flat (N, C, inner) layout: i*C*inner + t_i*inner + j.
    pos = index.reshape(n, inner) * inner
    pos += (xp.arange(n) * (c * inner))[:, None]
    if inner > 1:
        pos += xp.arange(inner)
    total = wt
    if smoothing:
        wsum = c if weight is None else weight.sum()
        total = wt * (1 - smoothing) + valid * (smoothing / c * wsum)
    scale = 1.0
    if reduction == "mean":
        w = float(wt.sum())
        scale = 1.0 / w if w else 0.0  # all ignored: nan loss but zero gradient, as PyTorch
    return _Targets(pos.reshape(index.shape), index[:, None], valid, wt, weight, total, smoothing, reduction,
                    scale)


def _reduce(loss: Any, tg: _Targets) -> Any:
    if tg.reduction == "none":
        return loss
    total = loss.sum()
    if tg.reduction == "sum":
        return total
    return total / tg.wt.sum()  # 0 / 0 = nan when every target is ignored, as PyTorch


def _class_shape(ndim: int) -> tuple:
    """Shape that broadcasts a (C,) vector along dim 1 of an ndim-d input."""
    return (1, -1) + (1,) * (ndim - 2)


class CrossEntropy(Op, name="cross_entropy"):
    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, smoothing, reduction):
        # Only log p at the targets (and its weighted row sum when smoothing) is needed, so the full
        # log-softmax is never formed: z = x - max, p = exp(z) / sum, log p_t = z_t - log(sum).
        # p is kept for the backward, which then needs no second exp (NumPy's exp dominates here).
        xp = ctx.xp
        acc = acc_dtype(x.dtype)
        c = x.shape[1]
        tg = _targets(xp, x.shape, target, weight, ignore_index, smoothing, reduction, acc)
        z = xp.subtract(x, x.max(axis=1, keepdims=True), dtype=acc)
        loss = z.reshape(-1)[tg.pos]                 # z at the targets, (N, *)
        if smoothing:
            if weight is None:
                row, wsum = esum(xp, (1,), z)[:, 0], c
            else:
                row, wsum = xp.einsum("ij...,j->i...", z, tg.weight), tg.weight.sum()
        p = xp.exp(z, out=z)
        total = esum(xp, (1,), p)                    # (N, 1, *)
        lse = xp.log(total)[:, 0]
        loss -= lse
        loss *= -tg.wt
        if smoothing:
            row -= wsum * lse                        # sum_c w_c log p_c
            row *= tg.valid
            loss *= 1 - smoothing
            loss -= (smoothing / c) * row
        p /= total
        ctx.p, ctx.tg = p, tg
        ctx.save(x)
        return _reduce(loss, tg).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return CrossEntropyBackward.apply(x, g, p=ctx.p, tg=ctx.tg), None, None


class CrossEntropyBackward(Op, name="cross_entropy_backward"):
    """dx = (p * sum(q) - q) * r, r the incoming gradient (times 1 / summed weight for 'mean')."""

    @staticmethod
    def forward(ctx, x, g, p, tg):
        xp = ctx.xp
        ctx.tg = tg
        ctx.save(x, g)
        if tg.reduction == "none":
            r = g.astype(p.dtype, copy=False)
        else:
            r = float(g) * tg.scale
        out = xp.multiply(p, (tg.total * r)[:, None])
        if not out.flags.c_contiguous:
            # p follows a strided input's memory order (ufuncs keep it); the flat write below needs
            # the (N, C, *) C order that tg.pos indexes, or it would land in a reshape's copy.
            out = xp.ascontiguousarray(out)
        if tg.smoothing:
            per_class = 1 if tg.weight is None else tg.weight.reshape(_class_shape(x.ndim))
            out -= (tg.valid * (r * tg.smoothing / x.shape[1]))[:, None] * per_class
        flat = out.reshape(-1)
        flat[tg.pos] -= tg.wt * (r * (1 - tg.smoothing))
        return out.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, v):
        x, g = ctx.saved
        tg = ctx.tg
        c = x.shape[1]
        need = ctx.needs_input_grad
        p = softmax(x, 1)

        def const(a: Any) -> Tensor:
            return make_tensor(a.astype(x.dtype.np_dtype, copy=False), x.device)

        total = const(tg.total)
        r = g * tg.scale
        if tg.reduction == "none":
            r = r.unsqueeze(1)
        gx = gg = None
        if need[0]:
            u = v * (total.unsqueeze(1) * r)
            gx = p * (u - (u * p).sum(1, keepdim=True))
        if need[1]:
            index = make_tensor(tg.index, x.device)
            vq = const(tg.wt * (1 - tg.smoothing)) * v.gather(1, index).squeeze(1)
            if tg.smoothing:
                per_class = v if tg.weight is None else v * const(tg.weight.reshape(_class_shape(x.ndim)))
                vq = vq + const(tg.valid * (tg.smoothing / c)) * per_class.sum(1)
            m = (v * p).sum(1) * total - vq
            gg = m if tg.reduction == "none" else m.sum() * tg.scale
        return gx, gg


class NllLoss(Op, name="nll_loss"):
    """-weight[t] * input[t] per sample: input holds log-probabilities."""

    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, reduction):
        xp = ctx.xp
        acc = acc_dtype(x.dtype)
        tg = _targets(xp, x.shape, target, weight, ignore_index, 0.0, reduction, acc)
        flat = x.reshape(-1) if x.flags.c_contiguous else xp.ascontiguousarray(x).reshape(-1)
        loss = flat[tg.pos].astype(acc)
        loss *= -tg.wt
        ctx.tg, ctx.shape = tg, x.shape
        return _reduce(loss, tg).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        tg = ctx.tg
        coef = make_tensor((-tg.wt).astype(g.dtype.np_dtype), g.device) * (g * tg.scale)
        zeros = make_tensor(ctx.xp.zeros(ctx.shape, g.dtype.np_dtype), g.device)
        return zeros.scatter(1, make_tensor(tg.index, g.device), coef.unsqueeze(1)), None, None


def _class_inputs(input: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int,
                  name: str) -> tuple[Tensor, Tensor, bool]:
    """(input as (N, C, *), target as (N, *), whether a (C,) input was given) after PyTorch's checks."""
    if not input.dtype.is_floating_point:
        raise DTypeError(f"{name}: expected a floating point input, got {input.dtype.name}")
    if target.dtype.category != dt.INTEGRAL:
        raise DTypeError(f"{name}: expected class indices of an integer dtype (or, for cross_entropy, class "
                         f"probabilities shaped like the input), got {target.dtype.name} of shape "
                         f"{fmt_shape(target.shape)} for an input of shape {fmt_shape(input.shape)}")
    if input.ndim == 0:
        raise ShapeError(f"{name}: expected an input of shape (C,) or (N, C, *), got a 0-d tensor")
    single = input.ndim == 1
    if single:
        input, target = input.unsqueeze(0), target.unsqueeze(0)
    if tuple(target.shape) != (input.shape[0],) + tuple(input.shape[2:]):
        raise ShapeError(f"{name}: expected target of shape {fmt_shape((input.shape[0],) + tuple(input.shape[2:]))} "
                         f"for an input of shape {fmt_shape(input.shape)}, got {fmt_shape(target.shape)}")
    c = input.shape[1]
    if weight is not None and tuple(weight.shape) != (c,):
        raise ShapeError(f"{name}: expected a weight of shape ({c},) (one per class), got {fmt_shape(weight.shape)}")
    t = target._data
    bad = (t != ignore_index) & ((t < 0) | (t >= c))
    if bad.any():
        raise IndexError(f"{name}: target {int(t[bad][0])} is out of bounds for {c} classes")
    return input, target, single


@autocast_op("cross_entropy")
def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average: bool | None = None,
                  ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross entropy between logits (N, C, *) and class indices (N, *) or class probabilities (N, C, *).

    torch.nn.functional.cross_entropy: log_softmax over dim 1, then the negative log-likelihood of
    the targets, with class `weight`, `ignore_index` and `label_smoothing`.

    >>> import tensora
    >>> logits = tensora.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> round(cross_entropy(logits, tensora.tensor([0, 1])).item(), 4)
    0.1269
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    if target.dtype.is_floating_point:
        return _cross_entropy_probs(input, target, weight, reduction, label_smoothing)
    x, t, single = _class_inputs(input, target, weight, ignore_index, "cross_entropy")
    out = CrossEntropy.apply(x, t, weight, ignore_index=int(ignore_index), smoothing=float(label_smoothing),
                             reduction=reduction)
    return out.squeeze(0) if single and reduction == "none" else out


def _cross_entropy_probs(input: Tensor, target: Tensor, weight: Tensor | None, reduction: str,
                         smoothing: float) -> Tensor:
    """-sum_c w_c t_c log p_c per sample; 'mean' divides by the number of samples (PyTorch's rule)."""
    if tuple(target.shape) != tuple(input.shape):
        raise ShapeError(f"cross_entropy: probability targets must have the input's shape "
                         f"{fmt_shape(input.shape)}, got {fmt_shape(target.shape)}")
    dim = 0 if input.ndim == 1 else 1
    c = input.shape[dim]
    logp = log_softmax(input, dim)
    if smoothing:
        target = target * (1 - smoothing) + smoothing / c
    if weight is not None:
        if tuple(weight.shape) != (c,):
            raise ShapeError(f"cross_entropy: expected a weight of shape ({c},), got {fmt_shape(weight.shape)}")
        target = target * weight.reshape((-1,) + (1,) * (input.ndim - dim - 1))
    loss = -(logp * target).sum(dim)
    if reduction == "mean":
        return loss.sum() / (input.numel() // c if c else 0)  # 0 / 0 = nan for an empty input, as PyTorch
    return reduce_loss(loss, reduction)


@autocast_op("nll_loss")
def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average: bool | None = None,
             ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class indices (N, *) under log-probabilities (N, C, *).

    'mean' divides by the summed weight of the targets that are not ignored (torch.nn.functional.nll_loss).

    >>> import tensora
    >>> logp = tensora.tensor([[-0.5, -1.0], [-2.0, -0.1]])
    >>> round(nll_loss(logp, tensora.tensor([0, 1])).item(), 4)
    0.3
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    x, t, single = _class_inputs(input, target, weight, ignore_index, "nll_loss")
    out = NllLoss.apply(x, t, weight, ignore_index=int(ignore_index), reduction=reduction)
    return out.squeeze(0) if single and reduction == "none" else out


__all__ = ["cross_entropy", "nll_loss"]
