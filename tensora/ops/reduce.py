"""Reductions: sum and mean over dims (more reductions join this family).

`dim` may be an int, a tuple of ints or None (all dims); negative dims count
from the end; `keepdim` keeps reduced dims as size 1. Backward re-expands the
gradient to the input's shape.
"""

from __future__ import annotations

from typing import Any

from .. import dtypes as dt
from ..autograd.function import Op
from ..tensor import Tensor
from .registry import register


def reduce_dims(x: Tensor, dim: Any) -> tuple[int, ...]:
    """Normalised, sorted dims to reduce over (all of them for None)."""
    if dim is None:
        return tuple(range(x.ndim))
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    out = sorted({x._dim(d) for d in dims})
    return tuple(out) if x.ndim else ()


def keepdim_shape(shape: tuple, dims: tuple) -> tuple:
    return tuple(1 if i in dims else s for i, s in enumerate(shape))


class Sum(Op, name="sum"):
    @staticmethod
    def forward(ctx, x, dims, keepdim, dtype):
        ctx.in_shape, ctx.dims = x.shape, dims
        return x.sum(axis=dims, keepdims=keepdim, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(keepdim_shape(ctx.in_shape, ctx.dims)).expand(ctx.in_shape)


def _sum_dtype(x: Tensor, dtype: Any) -> Any:
    if dtype is not None:
        return dt.get_dtype(dtype).np_dtype
    # Integer and bool sums accumulate in int64, as in PyTorch.
    return dt.int64.np_dtype if x.dtype.category != dt.FLOATING else x.dtype.np_dtype


@register()
def sum(x: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:  # noqa: A001
    """Sum over `dim` (all dims by default)."""
    return Sum.apply(x, dims=reduce_dims(x, dim), keepdim=keepdim, dtype=_sum_dtype(x, dtype))


@register()
def mean(x: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
    """Mean over `dim` (all dims by default); floating inputs only, as in PyTorch."""
    if dtype is None and not x.dtype.is_floating_point:
        raise dt.DTypeError(f"mean() needs a floating input or an explicit dtype, got {x.dtype.name}")
    dims = reduce_dims(x, dim)
    n = 1
    for d in dims:
        n *= x.shape[d]
    s = sum(x if dtype is None else x.to(dtype), dims, keepdim)
    return s / n if n else s * float("nan")
