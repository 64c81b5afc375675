"""median and nanmedian: the lower median, overall or along a dim with its index (torch semantics).

torch's median is not NumPy's: for an even count it returns the lower of the two middle
values, sorted[(n - 1) // 2], never their average, so the result is always an element of
the input (and integer inputs stay integers). median returns nan when there is a nan;
nanmedian takes the median of the non-nan values (nan only when all are nan).

Along a dim, values and indices come back as a named tuple. Indices follow the order
torch's CPU kernel selects in (std::nth_element comparing (value, index) pairs, nan last):
the median value's position in a stable sort, so among equal values the k-th
occurrence; for median, the first nan of a slice that has one. (One case differs: a
nanmedian slice that is all nan gives index 0 here; torch's index there falls out of
nth_element and is unspecified.)

Gradients as torch's derivatives.yaml: without dim, the gradient is shared evenly by
every element equal to the result (evenly_distribute_backward); with dim, it goes to the
selected index alone (value_selecting_reduction_backward).
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np

from ..autograd.function import Op
from ..errors import DTypeError, ShapeError, fmt_shape
from ..tensor import Tensor
from .elementwise import where
from .reduce import keepdim_shape, to_selected_index
from .registry import register

median_result = namedtuple("median", ("values", "indices"))
nanmedian_result = namedtuple("nanmedian", ("values", "indices"))


class MedianAll(Op, name="median_all"):
    """The lower median of all elements, as a 0-d tensor."""

    @staticmethod
    def forward(ctx, x, ignore_nan):
        xp = ctx.xp
        flat = x.reshape(-1)
        floating = not np.issubdtype(x.dtype, np.integer)  # bfloat16 and float8 are not NumPy floating
        if floating:
            nan = xp.isnan(flat)
            if not ignore_nan and nan.any():
                flat = flat[:0]  # the answer is nan
            elif ignore_nan:
                flat = flat[~nan]
        if flat.size == 0:
            if not floating:
                raise ShapeError("median(): an empty integer tensor has no median (torch returns an "
                                 "undefined number here)")
            out = xp.full((), np.nan, x.dtype)
        else:
            k = (flat.size - 1) // 2
            out = xp.asarray(xp.partition(flat, k)[k])  # O(n), no full sort
        ctx.save(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved
        mask = x.isnan() if out.isnan().item() else x == out
        return where(mask, g / mask.sum(), 0)


class MedianDim(Op, name="median_dim"):
    """(values, indices) of the lower median along one dim; the gradient goes to the index."""

    @staticmethod
    def forward(ctx, x, dim, keepdim, ignore_nan):
        xp = ctx.xp
        ctx.in_shape, ctx.dim = x.shape, dim
        if x.ndim == 0:
            ctx.idx = xp.zeros((), np.int64)
            return x.copy(), ctx.idx.copy()
        n = x.shape[dim]
        if n == 0:
            raise ShapeError(f"{'nanmedian' if ignore_nan else 'median'}(): expected reduction dim {dim} to have "
                             f"non-zero size (input shape {fmt_shape(x.shape)})")
        # A stable sort puts nan last and equal values in index order: torch's (value, index) order.
        order = xp.argsort(x, axis=dim, kind="stable")
        kshape = keepdim_shape(x.shape, (dim,))
        if np.issubdtype(x.dtype, np.integer):
            k = xp.full(kshape, (n - 1) // 2, np.int64)
        else:
            nans = xp.isnan(x).sum(axis=dim, keepdims=True)
            if ignore_nan:
                k = xp.maximum((n - nans - 1) // 2, 0)
            else:
                k = xp.where(nans > 0, n - nans, (n - 1) // 2)  # the first nan, by index
        idx = xp.take_along_axis(order, k.astype(np.int64), axis=dim)
        values = xp.take_along_axis(x, idx, axis=dim)
        ctx.idx = idx.copy()  # the returned indices may be edited in place; backward needs these
        if not keepdim:
            values, idx = values.squeeze(dim), idx.squeeze(dim)
        return values, idx

    @staticmethod
    def backward(ctx, g, g_idx):
        return to_selected_index(ctx, g)


def _median(name: str, input: Tensor, dim: Any, keepdim: bool, ignore_nan: bool) -> Any:
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}(): argument 'input' must be Tensor, not {type(input).__name__}")
    if input.dtype.name == "bool":
        raise DTypeError(f"{name}(): bool tensors are not supported (as in torch); convert with .int()")
    if dim is None:
        if keepdim:
            raise TypeError(f"{name}(): keepdim=True needs a dim (the median of all elements is 0-d)")
        return MedianAll.apply(input, ignore_nan=ignore_nan)
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{name}(): argument 'dim' must be int, not {type(dim).__name__}")
    values, indices = MedianDim.apply(input, dim=input._dim(dim), keepdim=keepdim, ignore_nan=ignore_nan)
    return (nanmedian_result if ignore_nan else median_result)(values, indices)


@register()
def median(input: Tensor, dim: int | None = None, keepdim: bool = False) -> Any:
    """Lower median of all elements (0-d; nan if any is nan), or (values, indices) along `dim`.

    >>> import tensora
    >>> tensora.tensor([4.0, 1.0, 3.0, 2.0]).median().item()
    2.0
    >>> tensora.tensor([[1.0, 5.0, 3.0], [2.0, 0.0, 9.0]]).median(1).indices.tolist()
    [2, 0]
    """
    return _median("median", input, dim, keepdim, ignore_nan=False)


@register()
def nanmedian(input: Tensor, dim: int | None = None, keepdim: bool = False) -> Any:
    """median() ignoring nan values: the lower median of the rest (nan only where all are nan).

    >>> import tensora
    >>> tensora.tensor([1.0, float("nan"), 3.0, 2.0]).nanmedian().item()
    2.0
    """
    return _median("nanmedian", input, dim, keepdim, ignore_nan=True)
