"""Indexing: x[key] and x[key] = value.

Ints (and 0-d integer tensors), slices (positive steps, as in PyTorch), None and
Ellipsis give views; integer tensors/lists and boolean masks give copies (NumPy's
advanced indexing; uint8 tensors are masks, as in PyTorch). PyTorch departs from
NumPy in one place: it applies ints before the index arrays, where NumPy counts them
among the advanced indices, so when a slice separates an int from an array the two
put the array's dimensions in different places (x[0, :, [0, 1]] is x[0][:, [0, 1]]
in PyTorch). Such keys are applied in two steps, as PyTorch does (`split_ints`).
The backward scatters the gradient into zeros: a plain write when no element can
be picked twice, `add.at` (repeats summed) otherwise.
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
            if k.ndim == 0 and k.dtype.name not in ("bool", "uint8"):
                k = int(k.item())  # an int: a view, as in PyTorch
            # uint8 index tensors are masks in PyTorch (NumPy would read them as positions).
            elif k.dtype.name == "uint8":
                k = k._data.astype(bool)
            else:
                k = k._data
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


def _is_advanced(k: Any) -> bool:
    return not (k is None or k is Ellipsis or isinstance(k, (int, np.integer, slice)))


def _is_int(k: Any) -> bool:
    return isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_))


def hits_once(key: tuple) -> bool:
    """True when no element can be selected twice: basic parts plus at most one boolean mask."""
    advanced = [k for k in key if _is_advanced(k)]
    return not advanced or (len(advanced) == 1 and getattr(advanced[0], "dtype", None) == np.bool_)


def split_ints(key: tuple) -> tuple[tuple, tuple] | None:
    """(basic key, advanced key) applying a normalized key holding both ints and index arrays
    in PyTorch's order: the ints, slices and Nones first (a view), then the arrays over what
    is left; None for any other key (NumPy's one step is PyTorch's result)."""
    if not (any(map(_is_int, key)) and any(map(_is_advanced, key))):
        return None
    basic, advanced = [], []
    for k in key:
        if _is_int(k):
            basic.append(k)
        elif _is_advanced(k):  # keeps its dimensions for the second step (a mask spans k.ndim)
            basic.extend([slice(None)] * (k.ndim if getattr(k, "dtype", None) == np.bool_ else 1))
            advanced.append(k)
        else:
            basic.append(k)
            advanced.append(Ellipsis if k is Ellipsis else slice(None))
    return tuple(basic), tuple(advanced)


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
    key = normalize_key(key)
    steps = split_ints(key)
    if steps is not None:
        return GetItem.apply(GetItem.apply(x, key=steps[0]), key=steps[1])
    return GetItem.apply(x, key=key)


def setitem(x: Tensor, key: Any, value: Any) -> None:
    """x[key] = value, in place; bumps x's version so stale saved tensors are caught."""
    from .inplace import assign_at
    key = normalize_key(key)
    steps = split_ints(key)
    if steps is not None:
        assign_at(GetItem.apply(x, key=steps[0]), steps[1], value)  # through a view of x
    else:
        assign_at(x, key, value)


Tensor.__getitem__ = getitem
Tensor.__setitem__ = setitem


def check_index_shape(value_shape: tuple, target_shape: tuple) -> None:
    try:
        np.broadcast_shapes(value_shape, target_shape)
    except ValueError:
        raise ShapeError(f"shape mismatch: value tensor of shape {fmt_shape(value_shape)} cannot be broadcast "
                         f"to indexing result of shape {fmt_shape(target_shape)}") from None
