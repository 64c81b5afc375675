"""Normalization math: layer_norm, group_norm, batch_norm and rms_norm.

All four are one op, `Normalize`: x-hat = (x - mean) * rstd over some dims
(x * rstd for RMS norm, `centered=False`), rstd = 1 / sqrt(var + eps), then
x-hat * weight + bias, with the moments accumulated in float32 for 16-bit
inputs as PyTorch does. They differ only in which dims are reduced (trailing
ones for layer/RMS norm, (0, 2, 3, ...) for batch norm, per-group ones after a
reshape for group norm) and how the parameters broadcast (`wshape`).

One node forward and one fused backward keep small inputs cheap (the
per-op Python overhead dominates there) and large ones at a few NumPy passes
(sums are einsum, which beats ufunc.reduce). A layer norm proper (float32/64,
trailing dims, no stats) goes to the row kernels of tensora/kernels/layer_norm.py
instead, two reads of each row per direction. Under create_graph the backward
is built instead from differentiable pieces (`Normalize` without affine and
`NormalizeBackward`, whose own backward is tensor ops), so gradients of
gradients work; see `NormalizeBackward.backward` for the algebra.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import ml_dtypes
import numpy as np

from .. import dtypes as dt
from ..autograd import is_grad_enabled, no_grad
from ..autograd.function import Op
from ..errors import ShapeError, fmt_shape
from ..kernels.layer_norm import layer_norm_backward, layer_norm_forward
from ..ops.reduce import acc_dtype, count
from ..tensor import Tensor
from ._fastsum import esum


class Normalize(Op, name="normalize_affine"):
    """(x - mean) * rstd over `dims` (x * rstd when not centered), then * weight + bias, with the
    parameters reshaped to `wshape` to broadcast against x. With `stats`, also returns the mean
    and the biased variance (keepdim shape, float32 for 16-bit inputs), off the graph."""

    @staticmethod
    def forward(ctx, x, weight, bias, dims, eps, centered, wshape, stats):
        xp = ctx.xp
        ctx.row_n = _row_length(x, weight, bias, dims, centered, wshape, stats)
        if ctx.row_n:  # a layer norm: one row kernel (tensora/kernels/layer_norm.py)
            n = ctx.row_n
            out, y, rstd = layer_norm_forward(x.reshape(-1, n), None if weight is None else weight.reshape(n),
                                              None if bias is None else bias.reshape(n), eps)
            ctx.dims, ctx.eps, ctx.centered, ctx.wshape = dims, eps, centered, wshape
            ctx.rstd = rstd.reshape(x.shape[:x.ndim - len(dims)] + (1,) * len(dims))
            ctx.bias_meta = None if bias is None else (bias.shape, bias.dtype)
            y = y.reshape(x.shape)
            ctx.save(x, weight, y)
            return y if weight is None and bias is None else out.reshape(x.shape)  # no affine: out is x-hat
        acc = acc_dtype(x.dtype)
        xa = x.astype(acc, copy=False)
        inv_n = 1.0 / count(x.shape, dims)
        y = xp.empty(x.shape, acc)
        if centered:
            mean = esum(xp, dims, xa) * inv_n
            xp.subtract(xa, mean, out=y)
            var = esum(xp, dims, y, y) * inv_n
        else:
            var = esum(xp, dims, xa, xa) * inv_n
        rstd = 1 / xp.sqrt(var + eps)
        xp.multiply(y if centered else xa, rstd, out=y)  # y is now x-hat
        out = y
        if weight is not None:
            out = xp.multiply(y, weight.reshape(wshape), out=xp.empty(x.shape, acc))
        if bias is not None:
            out = xp.add(out, bias.reshape(wshape), out=xp.empty(x.shape, acc) if out is y else out)
        out = out.astype(x.dtype, copy=False)
        ctx.dims, ctx.eps, ctx.centered, ctx.wshape, ctx.rstd = dims, eps, centered, wshape, rstd
        ctx.bias_meta = None if bias is None else (bias.shape, bias.dtype)
        ctx.save(x, weight, y)  # y is the output itself only when there is no affine part
        if not stats:
            return out
        mean = mean if centered else xp.zeros_like(var)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx, g, *stats_grads):
        x, weight, xhat = ctx.saved
        need, dims, wshape = ctx.needs_input_grad, ctx.dims, ctx.wshape
        bdims = () if wshape is None else tuple(i for i, s in enumerate(wshape) if s == 1)
        if is_grad_enabled():
            # create_graph: build the gradient from differentiable pieces (x-hat recomputed as a
            # function of x), so that it can be differentiated again.
            xhat = Normalize.apply(x, None, None, dims=dims, eps=ctx.eps, centered=ctx.centered, wshape=None,
                                   stats=False)
            gxh = g if weight is None else g * weight.reshape(wshape)
            gx = NormalizeBackward.apply(x, xhat, gxh, rstd=ctx.rstd, dims=dims, eps=ctx.eps,
                                         centered=ctx.centered) if need[0] else None
            gw = (g * xhat).sum(bdims, keepdim=True).reshape(weight.shape) if need[1] else None
            gb = g.sum(bdims, keepdim=True).reshape(ctx.bias_meta[0]) if need[2] else None
            return gx, gw, gb
        xp = ctx.xp
        acc = acc_dtype(x._data.dtype)
        ga, xh = g._data.astype(acc, copy=False), xhat._data
        gw = gb = gx = None
        if need[1]:
            gw = _param_grad(esum(xp, bdims, ga, xh), weight.shape, weight._data.dtype, g)
        if need[2]:
            gb = _param_grad(esum(xp, bdims, ga), *ctx.bias_meta, g)
        if need[0] and ctx.row_n:
            n = ctx.row_n
            gx = layer_norm_backward(ga.reshape(-1, n), xh.reshape(-1, n), ctx.rstd.reshape(-1),
                                     None if weight is None else weight._data.reshape(n))
            gx = Tensor(gx.reshape(ga.shape), device=x.device)
        elif need[0]:
            gxh = ga if weight is None else xp.multiply(ga, weight._data.reshape(wshape), dtype=acc)
            gx = _dx(xp, gxh, xh, ctx.rstd, dims, ctx.centered, x._data.dtype)
            gx = Tensor(gx, device=x.device)
        return gx, gw, gb


def _row_length(x: Any, weight: Any, bias: Any, dims: tuple, centered: bool, wshape: tuple | None,
                stats: bool) -> int:
    """n when this Normalize is a layer norm the row kernel takes: a float32/float64 NumPy x centred
    over its trailing dims (n elements), parameters (if any) of x's dtype shaped like those dims, no
    stats; else 0."""
    if stats or not centered or not isinstance(x, np.ndarray) or x.dtype not in _ROW_DTYPES or not x.size:
        return 0
    if any(p is not None and p.dtype != x.dtype for p in (weight, bias)):
        return 0
    lead = x.ndim - len(dims)
    if tuple(dims) != tuple(range(lead, x.ndim)):
        return 0
    if wshape is not None and tuple(wshape) != (1,) * lead + tuple(x.shape[lead:]):
        return 0
    return count(x.shape, dims)


_ROW_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _param_grad(total: Any, shape: tuple, dtype: Any, g: Tensor) -> Tensor:
    """A weight or bias gradient: the summed array in the parameter's own shape and dtype."""
    return Tensor(total.reshape(shape).astype(dtype, copy=False), device=g.device)


def _dx(xp: Any, g: Any, xhat: Any, rstd: Any, dims: tuple, centered: bool, dtype: Any) -> Any:
    """rstd * (P(g) - xhat * mean(g * xhat)), P(g) = g - mean(g) when centered: four passes."""
    inv_n = 1.0 / count(g.shape, dims)
    shift = esum(xp, dims, g, xhat) * inv_n
    t = xp.multiply(xhat, shift, out=xp.empty(xhat.shape, xhat.dtype))
    if centered:
        t += esum(xp, dims, g) * inv_n
    xp.subtract(g, t, out=t)
    t *= rstd
    return t.astype(dtype, copy=False)


class NormalizeBackward(Op, name="normalize_backward"):
    """dx = rstd * (P(g) - y * mean(g * y)) for y = Normalize(x) without affine; x only enters
    through rstd. Used where gradients must be differentiable again (create_graph)."""

    @staticmethod
    def forward(ctx, x, y, g, rstd, dims, eps, centered):
        acc = acc_dtype(x.dtype)
        out = _dx(ctx.xp, g.astype(acc, copy=False), y.astype(acc, copy=False), rstd, dims, centered, x.dtype)
        ctx.rstd, ctx.dims, ctx.eps, ctx.centered = rstd, dims, eps, centered
        ctx.save(x, y, g, out)
        return out

    @staticmethod
    def backward(ctx, v):
        # dx(x, y, g) is linear in g (its own operator applied to v), depends on y through y and
        # m2 = mean(g y), and on x only through rstd(x), whose derivative is -rstd^2 y / n:
        #   d/dg = B(v),  d/dy = -rstd (m2 v + g mean(v y)),  d/dx = -rstd mean(v dx) y.
        # The engine then carries d/dy through y = Normalize(x), adding B(d/dy) to x's gradient.
        x, y, g, dx = ctx.saved
        dims, need = ctx.dims, ctx.needs_input_grad
        rstd = _rstd(x, dims, ctx.eps, ctx.centered)
        gx = gy = gg = None
        if need[0]:
            gx = -(rstd * (v * dx).mean(dims, keepdim=True)) * y
        if need[1]:
            gy = -rstd * ((g * y).mean(dims, keepdim=True) * v + g * (v * y).mean(dims, keepdim=True))
        if need[2]:
            gg = NormalizeBackward.apply(x, y, v, rstd=ctx.rstd, dims=dims, eps=ctx.eps, centered=ctx.centered)
        return gx, gy, gg


def _rstd(x: Tensor, dims: tuple, eps: float, centered: bool) -> Tensor:
    """1 / sqrt(var + eps) (or of mean(x^2) + eps) in tensor ops, differentiable in x."""
    if centered:
        var = x.var(dims, correction=0, keepdim=True)
    else:
        var = (x * x).mean(dims, keepdim=True)
    return (var + eps).rsqrt()


def _trailing_dims(input: Tensor, normalized_shape: Any, name: str) -> tuple[int, ...]:
    shape = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or input.ndim < k or tuple(input.shape[input.ndim - k:]) != shape:
        raise ShapeError(f"{name}: given normalized_shape={list(shape)}, expected input with shape "
                         f"[*, {', '.join(map(str, shape))}], but got input of size {fmt_shape(input.shape)}")
    return tuple(range(input.ndim - k, input.ndim))


def _trailing_wshape(input: Tensor, dims: tuple) -> tuple:
    return tuple(input.shape[i] if i in dims else 1 for i in range(input.ndim))


def _check_param(name: str, what: str, t: Tensor | None, numel: int) -> None:
    if t is not None and t.numel() != numel:
        raise ShapeError(f"{name}: expected {what} with {numel} elements, got shape {fmt_shape(t.shape)}")


def layer_norm(input: Tensor, normalized_shape: Sequence[int] | int, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalize over the trailing `normalized_shape` dims, then scale by weight and shift by bias.

    Matches torch.nn.functional.layer_norm (biased variance, eps inside the square root).

    >>> import tensora
    >>> x = tensora.tensor([[1.0, 2.0, 3.0]])
    >>> [round(v, 4) for v in layer_norm(x, (3,)).tolist()[0]]
    [-1.2247, 0.0, 1.2247]
    """
    dims = _trailing_dims(input, normalized_shape, "layer_norm")
    numel = count(input.shape, dims)
    _check_param("layer_norm", "weight", weight, numel)
    _check_param("layer_norm", "bias", bias, numel)
    return Normalize.apply(input, weight, bias, dims=dims, eps=float(eps), centered=True,
                           wshape=_trailing_wshape(input, dims), stats=False)


def rms_norm(input: Tensor, normalized_shape: Sequence[int] | int, weight: Tensor | None = None,
             eps: float | None = None) -> Tensor:
    """x / sqrt(mean(x^2) + eps) over the trailing dims, times weight (torch.nn.functional.rms_norm).

    eps=None means the machine epsilon of the input's dtype, as in PyTorch.

    >>> import tensora
    >>> [round(v, 4) for v in rms_norm(tensora.tensor([[3.0, 4.0]]), 2, eps=0.0).tolist()[0]]
    [0.8485, 1.1314]
    """
    dims = _trailing_dims(input, normalized_shape, "rms_norm")
    _check_param("rms_norm", "weight", weight, count(input.shape, dims))
    if eps is None:
        eps = float(ml_dtypes.finfo(input.dtype.np_dtype).eps)
    return Normalize.apply(input, weight, None, dims=dims, eps=float(eps), centered=False,
                           wshape=_trailing_wshape(input, dims), stats=False)


def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Normalize (N, C, *) over each group of C // num_groups channels (and all positions),
    then apply a per-channel weight and bias (torch.nn.functional.group_norm)."""
    if input.ndim < 2:
        raise ShapeError(f"group_norm: expected an input of shape (N, C, *), got {fmt_shape(input.shape)}")
    n, c = input.shape[0], input.shape[1]
    if num_groups <= 0 or c % num_groups:
        raise ValueError(f"group_norm: expected the number of channels ({c}) to be divisible by "
                         f"num_groups, got num_groups={num_groups}")
    _check_param("group_norm", "weight", weight, c)
    _check_param("group_norm", "bias", bias, c)
    grouped = input.reshape(n, num_groups, c // num_groups, math.prod(input.shape[2:]))  # (N, G, C/G, prod(*))
    y = Normalize.apply(grouped, weight, bias, dims=(2, 3), eps=float(eps), centered=True,
                        wshape=(1, num_groups, c // num_groups, 1), stats=False)
    return y.reshape(input.shape)


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalize (N, C, *) per channel with the batch's statistics (training) or the running ones.

    In training the running statistics, when given, are updated in place, as PyTorch does:
    running = (1 - momentum) * running + momentum * batch, with the unbiased batch variance.
    """
    if input.ndim < 2:
        raise ShapeError(f"batch_norm: expected an input of shape (N, C, *), got {fmt_shape(input.shape)}")
    c = input.shape[1]
    for what, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        _check_param("batch_norm", what, t, c)
    shape = (c,) + (1,) * (input.ndim - 2)
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: running_mean and running_var must be given in evaluation mode "
                             "(training=False)")
        # PyTorch's eval kernel: alpha = weight / sqrt(var + eps), beta = bias - mean * alpha.
        alpha = (running_var + eps).rsqrt()
        if weight is not None:
            alpha = alpha * weight
        beta = -running_mean * alpha if bias is None else bias - running_mean * alpha
        y = input * alpha.reshape(shape) + beta.reshape(shape)
        # a 16-bit input with float32 statistics stays 16-bit, as in training and in torch's mixed kernel
        return y.to(input.dtype) if input.dtype in (dt.bfloat16, dt.float16) else y
    dims = (0,) + tuple(range(2, input.ndim))
    n = count(input.shape, dims)
    if n <= 1:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input "
                         f"size {fmt_shape(input.shape)}")
    y, mean, var = Normalize.apply(input, weight, bias, dims=dims, eps=float(eps), centered=True,
                                   wshape=(1,) + shape, stats=True)
    with no_grad():
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(mean.reshape(c).to(running_mean.dtype) * momentum)
        if running_var is not None:
            unbiased = var.reshape(c).to(running_var.dtype) * (n / (n - 1))
            running_var.mul_(1 - momentum).add_(unbiased * momentum)
    return y


__all__ = ["layer_norm", "rms_norm", "group_norm", "batch_norm"]
