"""softmax, log_softmax and logsumexp: the max-shifted exponential reductions.

Each forward subtracts the max along `dim` before exponentiating (so large
inputs do not overflow) and works in place on one buffer: max, subtract, exp,
sum, divide, the same passes a hand-written NumPy softmax makes. float16 and
bfloat16 inputs are computed in float32 and cast back, as PyTorch does.

Small inputs along the last axis (at most kernels.softmax.SMALL elements, float32 or
float64) take the `softmax_rows` kernel instead: one native call for what is otherwise
five ufunc calls whose overhead outweighs their arithmetic.

The backward of softmax and log_softmax is one op each (`SoftmaxBackward`,
`LogSoftmaxBackward`): a single fused pass instead of four recorded ops. Their
own backwards are written in tensor ops, so second derivatives work.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import dtypes as dt
from ..autograd.function import Op
from ..errors import DTypeError, fmt_shape
from ..tensor import Tensor
from ..kernels.softmax import SMALL, softmax_rows
from .elementwise import exp
from .reduce import acc_dtype, count, keepdim_shape, out_shape, reduce_dims
from .registry import register


_MAX_REDUCE, _ADD_REDUCE = np.maximum.reduce, np.add.reduce  # the ufuncs, past ndarray.max/sum wrappers


def _axis(x: Any, dim: int) -> tuple[int | None, bool]:
    """(axis, keepdims) of the reductions along `dim` that broadcast back over x. A vector (or a 0-d
    input, which "reduces" over no axis) reduces whole, to a scalar: NumPy broadcasts that in its
    fast loop, where a keepdims (1,) array takes the general iterator (~0.3 us more per op)."""
    return (dim, True) if x.ndim > 1 else (None, False)


def _small_rows(xp: Any, x: Any, dim: int, dtype: Any) -> bool:
    """Whether softmax_rows takes this input: NumPy, float32/64 kept as is, the last axis,
    contiguous, and small (where ufunc call overhead dominates)."""
    return (xp is np and 0 < x.size <= SMALL and x.dtype is dtype and dim == x.ndim - 1
            and (dtype is _F32 or dtype is _F64) and x.flags.c_contiguous)


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def _shifted(xp: Any, x: Any, axis: int | None, keep: bool, dtype: Any) -> Any:
    """x - max(x, axis) in a fresh accumulation-dtype buffer, the one buffer softmax-style ops
    work in (also keeps 0-d inputs arrays). Rows of -inf give nan, as in PyTorch."""
    if xp is np:  # the ufunc itself: x.max runs NumPy's Python wrapper first (~0.2 us on small inputs)
        top = _MAX_REDUCE(x, axis, None, None, keep)
    else:
        top = x.max(axis=axis, keepdims=keep)
    acc = acc_dtype(dtype)
    if x.dtype is acc and x.ndim:
        return x - top  # the buffer subtract allocates is already the right one
    y = xp.empty(x.shape, acc)
    xp.subtract(x, top, out=y)
    return y


class Softmax(Op, name="softmax"):
    @staticmethod
    def forward(ctx, x, dim, dtype):
        xp = ctx.xp
        axis, keep = _axis(x, dim)
        if ctx.needs_input_grad:  # empty unless recording: keep the no-grad path lean
            ctx.dim = dim
        if x.size == 0:
            out = x.astype(dtype)
        elif _small_rows(xp, x, dim, dtype):
            out = softmax_rows(x, np.empty_like(x), False)
        else:
            y = _shifted(xp, x, axis, keep, dtype)
            xp.exp(y, out=y)
            y /= _ADD_REDUCE(y, axis, None, None, keep) if xp is np else y.sum(axis=axis, keepdims=keep)
            out = y if y.dtype is dtype else y.astype(dtype)
        ctx.save(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return SoftmaxBackward.apply(y, g, dim=ctx.dim)


class SoftmaxBackward(Op, name="softmax_backward"):
    """dx = y * (g - sum(g * y, dim)) for y = softmax(x)."""

    @staticmethod
    def forward(ctx, y, g, dim):
        xp = ctx.xp
        axis, keep = _axis(y, dim)
        ctx.dim = dim
        ctx.save(y, g)
        t = xp.multiply(g, y, out=xp.empty(y.shape, acc_dtype(y.dtype)))
        xp.subtract(g, t.sum(axis=axis, keepdims=keep), out=t)
        t *= y
        return t.astype(y.dtype, copy=False)

    @staticmethod
    def backward(ctx, gg):
        y, g = ctx.saved
        dim = ctx.dim
        need = ctx.needs_input_grad
        gy = gg * (g - (g * y).sum(dim, keepdim=True)) - g * (gg * y).sum(dim, keepdim=True) if need[0] else None
        return gy, (SoftmaxBackward.apply(y, gg, dim=dim) if need[1] else None)


class LogSoftmax(Op, name="log_softmax"):
    @staticmethod
    def forward(ctx, x, dim, dtype):
        xp = ctx.xp
        axis, keep = _axis(x, dim)
        ctx.dim = dim
        if x.size == 0:
            out = x.astype(dtype)
        elif _small_rows(xp, x, dim, dtype):
            out = softmax_rows(x, np.empty_like(x), True)
        else:
            y = _shifted(xp, x, axis, keep, dtype)
            y -= xp.log(xp.exp(y).sum(axis=axis, keepdims=keep))
            out = y.astype(dtype, copy=False)
        ctx.save(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return LogSoftmaxBackward.apply(y, g, dim=ctx.dim)


class LogSoftmaxBackward(Op, name="log_softmax_backward"):
    """dx = g - exp(y) * sum(g, dim) for y = log_softmax(x)."""

    @staticmethod
    def forward(ctx, y, g, dim):
        xp = ctx.xp
        axis, keep = _axis(y, dim)
        acc = acc_dtype(y.dtype)
        ctx.dim = dim
        ctx.save(y, g)
        t = xp.exp(y, out=xp.empty(y.shape, acc))
        t *= g.sum(axis=axis, keepdims=keep, dtype=acc)
        xp.subtract(g, t, out=t)
        return t.astype(y.dtype, copy=False)

    @staticmethod
    def backward(ctx, gg):
        y, g = ctx.saved
        dim = ctx.dim
        need = ctx.needs_input_grad
        p = exp(y)
        gy = -gg * p * g.sum(dim, keepdim=True) if need[0] else None
        gg_ = gg - (gg * p).sum(dim, keepdim=True) if need[1] else None
        return gy, gg_


def _softmax_dtype(x: Tensor, dtype: Any, name: str) -> Any:
    if dtype is not None:
        return dt.get_dtype(dtype).np_dtype
    if x.dtype.category != dt.FLOATING:
        raise DTypeError(f"{name}(): expected a floating point input or dtype=, got {x.dtype.name} "
                         f"(shape {fmt_shape(x.shape)})")
    return x.dtype.np_dtype


@register()
def softmax(x: Tensor, dim: int, *, dtype: Any = None) -> Tensor:
    """exp(x) / sum(exp(x)) along `dim`, computed stably; `dtype` casts the input first.

    >>> import tensora
    >>> tensora.tensor([0.0, 0.0]).softmax(0).tolist()
    [0.5, 0.5]
    """
    return Softmax.apply(x, dim=x._dim(dim), dtype=_softmax_dtype(x, dtype, "softmax"))


@register()
def log_softmax(x: Tensor, dim: int, *, dtype: Any = None) -> Tensor:
    """x - logsumexp(x, dim): log of softmax without its underflow to log(0)."""
    return LogSoftmax.apply(x, dim=x._dim(dim), dtype=_softmax_dtype(x, dtype, "log_softmax"))


class LogSumExp(Op, name="logsumexp"):
    @staticmethod
    def forward(ctx, x, dims, keepdim):
        xp = ctx.xp
        ctx.dims = dims
        if count(x.shape, dims) == 0:
            out = xp.full(out_shape(x.shape, dims, keepdim), -np.inf, x.dtype)
        else:
            top = xp.amax(x, axis=dims, keepdims=True)
            top = xp.where(xp.isfinite(top), top, 0)  # all -inf (or an inf) must not give inf - inf
            e = xp.subtract(x, top, out=xp.empty(x.shape, acc_dtype(x.dtype)))
            xp.exp(e, out=e)
            out = xp.log(e.sum(axis=dims, keepdims=keepdim))
            out = (out + top.reshape(out.shape)).astype(x.dtype, copy=False)
        ctx.save(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved
        kshape = keepdim_shape(x.shape, ctx.dims)
        return g.reshape(kshape) * exp(x - out.reshape(kshape))


@register()
def logsumexp(x: Tensor, dim: Any, keepdim: bool = False) -> Tensor:
    """log(sum(exp(x), dim)) without overflow; int inputs give the default float dtype.

    >>> import tensora
    >>> round(tensora.tensor([1000.0, 1000.0]).logsumexp(0).item(), 3)
    1000.693
    """
    if not x.dtype.is_floating_point:
        x = x.to(dt.get_default_dtype())
    return LogSumExp.apply(x, dims=reduce_dims(x, dim), keepdim=keepdim)
