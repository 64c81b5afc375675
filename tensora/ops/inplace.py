"""In-place writes (x[k] = v, fill_, copy_, zero_, and the x.op_() family).

Without recording, the write goes straight into x's array. While recording,
the op runs out of place on a snapshot of x and x's history is rebased onto
the result (x.grad_fn becomes the new node), so gradients stay right; its
version counter is bumped either way, which turns a later backward through a
stale saved copy into a clear error. Writes into a view of a tensor that is
part of a graph are refused rather than silently giving wrong gradients.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..autograd.function import Op
from ..autograd.grad_mode import STATE
from ..errors import AutogradError, fmt_shape
from ..tensor import Tensor
from .index import check_index_shape
from .registry import register


def _recording(x: Tensor, others: tuple) -> bool:
    return STATE.enabled and (x._requires_grad or any(isinstance(o, Tensor) and o._requires_grad for o in others))


def _snapshot(x: Tensor) -> Tensor:
    """A copy of x's values that keeps x's place in the graph."""
    s = Tensor(x._data.copy(), device=x.device)
    s.grad_fn, s._output_nr, s._requires_grad = x.grad_fn, x._output_nr, x._requires_grad
    return s


def update_inplace(x: Tensor, compute: Callable[[Tensor], Tensor], others: tuple = (),
                   direct: Callable[[Any], None] | None = None) -> Tensor:
    """Make x hold compute(x). `direct(array)` is the no-graph fast path that writes x's array itself."""
    x._check_inplace()
    if not _recording(x, others):
        if direct is not None:
            direct(x._data)
        else:
            y = compute(x)
            x._data[...] = y._data if y.dtype is x.dtype else y._data.astype(x.dtype.np_dtype)
        x._bump_version()
        return x
    if x._base is not None:
        # The base would not see the new history (its gradient would silently miss the write).
        raise AutogradError(f"in-place write into a view (shape {fmt_shape(x.shape)}) that records a gradient "
                            "is not supported; use out-of-place ops, or write into the base tensor itself")
    y = compute(_snapshot(x))
    if y.dtype is not x.dtype:
        y = y.to(x.dtype)
    x._data[...] = y._data
    x.grad_fn, x._output_nr, x._requires_grad = y.grad_fn, y._output_nr, y._requires_grad
    x._bump_version()
    return x


class IndexPut(Op, name="index_put"):
    """out = x with out[key] = v (v broadcast): the out-of-place form of x[key] = v."""

    @staticmethod
    def forward(ctx, x, v, key):
        ctx.key, ctx.v_shape = key, v.shape
        out = x.copy()
        out[key] = v
        return out

    @staticmethod
    def backward(ctx, g):
        gx = IndexPut.apply(g, Tensor(ctx.xp.zeros((), dtype=g._data.dtype), device=g.device), key=ctx.key) if ctx.needs_input_grad[0] else None
        gv = None
        if ctx.needs_input_grad[1]:
            from .shape import sum_to
            gk = g[ctx.key]
            lead = len(ctx.v_shape) - gk.ndim
            if lead > 0:  # v may carry extra leading 1s that NumPy's assignment drops
                gk = gk.reshape((1,) * lead + tuple(gk.shape))
            gv = sum_to(gk, ctx.v_shape)
        return gx, gv


def _value_array(x: Tensor, value: Any) -> Any:
    if isinstance(value, Tensor):
        arr = value._data if value.device == x.device else value.to(x.device)._data
    else:
        arr = np.asarray(value)
    return arr if arr.dtype == x.dtype.np_dtype else arr.astype(x.dtype.np_dtype)


def assign_at(x: Tensor, key: tuple, value: Any) -> None:
    varr = _value_array(x, value)
    try:
        target_shape = x._data[key].shape
    except IndexError as exc:
        raise IndexError(f"{exc} (indexing a tensor of shape {fmt_shape(x.shape)})") from None
    check_index_shape(varr.shape, target_shape)

    def direct(a: Any) -> None:
        a[key] = varr

    if isinstance(value, Tensor) and (value.dtype is not x.dtype or value.device != x.device):
        value = value.to(x.device, x.dtype)
    v = value if isinstance(value, Tensor) else Tensor(varr, device=x.device)
    update_inplace(x, lambda s: IndexPut.apply(s, v, key=key), (v,), direct)


@register(function=False)
def fill_(x: Tensor, value: Any) -> Tensor:
    """Set every element to `value` (a number or a 0-d tensor)."""
    assign_at(x, (Ellipsis,), value)
    return x


@register(function=False)
def zero_(x: Tensor) -> Tensor:
    return fill_(x, 0)


@register(function=False)
def copy_(x: Tensor, src: Any) -> Tensor:
    """Copy src (broadcast, cast to x's dtype) into x; gradients flow to src."""
    assign_at(x, (Ellipsis,), src)
    return x
