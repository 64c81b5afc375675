"""Indexing: x[key] and x[key] = value.

Ints, slices (positive steps, as in PyTorch), None and Ellipsis give views;
integer tensors/lists and boolean masks give copies (NumPy's advanced indexing,
which PyTorch follows; uint8 tensors are masks, as in PyTorch). The backward
scatters the gradient into zeros: a plain write when no element can be picked
twice, `add.at` (repeats summed) otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd.function import Op
from ..errors import DTypeError, ShapeError, fmt_shape
from ..tensor import Tensor


def normalize_key(key: Any, xp: Any = np) -> tuple:
    """Turn a user index into a tuple NumPy understands, rejecting what PyTorch rejects."""
    cls = key.__class__
    if cls is int or (cls is slice and key.step is None):
        return (key,)  # x[i], x[a:b]: nothing to check or convert
    if not isinstance(key, tuple):
        key = (key,)
    out = []
    for k in key:
        if isinstance(k, Tensor):
            if k.dtype.is_floating_point:
                raise DTypeError(f"tensors used as indices must be long, int, byte or bool, got {k.dtype.name}")
            # uint8 index tensors are masks in PyTorch (NumPy would read them as positions).
            k = k._data.astype(bool) if k.dtype.name == "uint8" else k._data
        elif isinstance(k, list):
            k = np.asarray(k) if k else np.zeros(0, dtype=np.int64)  # [] would be float64
            if k.dtype.kind not in "biu":
                raise DTypeError(f"index lists must hold ints or bools, got {k.dtype}")
        elif isinstance(k, slice) and k.step is not None and k.step <= 0:
            raise ValueError("step must be greater than zero (negative slicing is not supported; use flip)")
        elif isinstance(k, (float, np.floating)):
            raise DTypeError(f"float index {k!r} is not allowed")
        out.append(k)
    return tuple(out)


def hits_once(key: tuple) -> bool:
    """True when no element can be selected twice: basic parts plus at most one boolean mask."""
    advanced = [k for k in key if not (k is None or k is Ellipsis or isinstance(k, (int, np.integer, slice)))]
    return not advanced or (len(advanced) == 1 and getattr(advanced[0], "dtype", None) == np.bool_)


class GetItem(Op, name="getitem"):
    view = True

    @staticmethod
    def forward(ctx, x, key):
        if ctx.needs_input_grad:  # empty unless recording: keep the no-grad path lean
            ctx.shape, ctx.key = x.shape, key
        try:
            out = x[key]
            if out.__class__ is not ctx.xp.ndarray:
                # A 0-d view, not a detached NumPy scalar (x[0] of 1-D x). NumPy returns 0-d arrays
                # for keys holding an Ellipsis, so this key has none.
                out = x[key + (Ellipsis,)]
            return out
        except IndexError as exc:
            raise IndexError(f"{exc} (indexing a tensor of shape {fmt_shape(x.shape)})") from None

    @staticmethod
    def backward(ctx, g):
        return IndexScatter.apply(g, shape=ctx.shape, key=ctx.key)


class IndexScatter(Op, name="index_scatter"):
    """zeros(shape) with g added at `key` (repeats summed): the backward of getitem."""

    @staticmethod
    def forward(ctx, g, shape, key):
        ctx.key = key
        out = ctx.xp.zeros(shape, dtype=g.dtype)
        if hits_once(key):
            out[key] = g  # a plain write; add.at is only needed where indices repeat
        else:
            ctx.xp.add.at(out, key, g)
        return out

    @staticmethod
    def backward(ctx, gg):
        return GetItem.apply(gg, key=ctx.key)


def getitem(x: Tensor, key: Any) -> Tensor:
    return GetItem.apply(x, key=normalize_key(key))


def setitem(x: Tensor, key: Any, value: Any) -> None:
    """x[key] = value, in place; bumps x's version so stale saved tensors are caught."""
    from .inplace import assign_at
    assign_at(x, normalize_key(key), value)


Tensor.__getitem__ = getitem
Tensor.__setitem__ = setitem


def check_index_shape(value_shape: tuple, target_shape: tuple) -> None:
    try:
        np.broadcast_shapes(value_shape, target_shape)
    except ValueError:
        raise ShapeError(f"shape mismatch: value tensor of shape {fmt_shape(value_shape)} cannot be broadcast "
                         f"to indexing result of shape {fmt_shape(target_shape)}") from None
