"""In-place writes (x[k] = v, fill_, copy_, zero_, and the x.op_() family).

Without recording, the write goes straight into x's array. While recording,
the op runs out of place on a snapshot of x and x's history is rebased onto
the result (x.grad_fn becomes the new node), so gradients stay right; its
version counter is bumped either way, which turns a later backward through a
stale saved copy into a clear error.

A write into a recorded view of a graph tensor rebases the view's base, as
PyTorch's CopySlices does: the base's history becomes "the old base with the
view's elements replaced by op(view)", built from the view's element positions
in the base (flat indices, found from the arrays' offsets and strides), and the
view's own history is regenerated as those elements of the new base. Other
views taken earlier are regenerated the same way when next used (see
`regenerate_view`), including views taken in grad mode while the base did not
require grad yet (autograd.graph.refresh_view); a write into such a view gives
the base its first history. Views the positions cannot be found for (another
dtype's reinterpretation, a base with overlapping strides), views of leaves that
require grad, and views made outside the graph (under no_grad, or detach()
aliases) are refused rather than silently giving wrong gradients.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..autograd import graph
from ..autograd.function import Op, _UserBackward
from ..autograd.grad_mode import STATE
from ..errors import AutogradError, ShapeError, fmt_shape
from ..tensor import Tensor, _address
from .index import GetItem, check_index_shape
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
    if x._base is not None and not x._requires_grad and x._base._requires_grad and STATE.enabled:
        graph.refresh_view(x)  # a view taken before its base got a history: regenerate it first
    if not _recording(x, others):
        if direct is not None:
            direct(x._data)
        else:
            y = compute(x)
            _check_fits(x, y)
            x._data[...] = y._data if y.dtype is x.dtype else y._data.astype(x.dtype.np_dtype)
        x._bump_version()
        return x
    if x._base is not None:
        return _update_view(x, compute)
    y = compute(_snapshot(x))
    _check_fits(x, y)
    if y.dtype is not x.dtype:
        y = y.to(x.dtype)
    x._data[...] = y._data
    old = x.grad_fn, x._output_nr
    x.grad_fn, x._output_nr, x._requires_grad = y.grad_fn, y._output_nr, y._requires_grad
    graph.move_retain_grad(x, *old)
    x._bump_version()
    return x


def _check_fits(x: Tensor, y: Tensor) -> None:
    """ShapeError unless op(x)'s result `y` has x's shape (x.add_(other) cannot grow x), as torch words it."""
    if y._data.shape != x._data.shape:
        raise ShapeError(f"output with shape {fmt_shape(x.shape)} doesn't match the broadcast shape "
                         f"{fmt_shape(y.shape)}")


def _refuse_view_write(x: Tensor, why: str) -> AutogradError:
    return AutogradError(f"in-place write into a view (shape {fmt_shape(x.shape)}) that records a gradient is not "
                         f"supported here ({why}); use out-of-place ops, or write into the base tensor itself")


def _xp(t: Tensor) -> Any:
    if t.device.type == "cpu":
        return np
    from ..backend import get_backend
    return get_backend(t.device).xp


def base_positions(view: Any, base: Any) -> np.ndarray | None:
    """For each element of array `view`, its flat (C order) index in array `base`, whose memory it shares;
    None when that cannot be worked out from the two arrays' offsets and strides."""
    size = base.itemsize
    if view.dtype != base.dtype or any(st % size for st in view.strides + base.strides):
        return None
    offset, rem = divmod(_address(view) - _address(base), size)
    if rem or offset < 0:
        return None
    mem = np.full(view.shape, offset, dtype=np.int64)  # each view element's offset from base's first
    for k, (n, st) in enumerate(zip(view.shape, view.strides)):
        if n > 1 and st:
            mem += (np.arange(n, dtype=np.int64) * (st // size)).reshape((-1,) + (1,) * (view.ndim - k - 1))
    if mem.size and mem.min() < 0:  # a negative stride reaching before base's first element
        return None
    # Undo base's layout, largest stride first; every stride must be positive and nested (no overlaps).
    dims = sorted((k for k in range(base.ndim) if base.shape[k] > 1), key=lambda k: -base.strides[k])
    c_strides = np.ones(base.ndim, dtype=np.int64)
    for k in range(base.ndim - 2, -1, -1):
        c_strides[k] = c_strides[k + 1] * base.shape[k + 1]
    flat = np.zeros(view.shape, dtype=np.int64)
    for k in dims:
        st = base.strides[k] // size
        if st <= 0:
            return None
        i = mem // st
        if i.size and (i.max() >= base.shape[k]):
            return None
        mem -= i * st
        flat += i * c_strides[k]
    if mem.any():
        return None
    return flat


def _positions_key(view: Tensor, root: Tensor) -> tuple | None:
    pos = base_positions(view._data, root._data)
    if pos is None:
        return None
    xp = _xp(root)
    return (pos if xp is np else xp.asarray(pos),)


def _alias(root: Tensor) -> Tensor:
    """root's array and place in the graph, as a tensor of its own (views of it are not views of root)."""
    a = Tensor(root._data, device=root.device)
    a.grad_fn, a._output_nr, a._requires_grad = root.grad_fn, root._output_nr, root._requires_grad
    return a


def _rebase_view(t: Tensor, root: Tensor, key: tuple) -> None:
    """Give view t the history 'its elements of root as root is now' (torch's AsStridedBackward)."""
    v = GetItem.apply(_alias(root).reshape(-1), key=key)
    old = t.grad_fn, t._output_nr
    t.grad_fn, t._output_nr, t._requires_grad = v.grad_fn, v._output_nr, v._requires_grad
    graph.move_retain_grad(t, *old)


def regenerate_view(t: Tensor) -> bool:
    """Rebase a view whose base got a new history after it was taken; False if its positions are unknown."""
    root = t._base
    key = _positions_key(t, root)
    if key is None:
        return False
    _rebase_view(t, root, key)
    return True


graph.REGENERATE_VIEW = regenerate_view


def _update_view(x: Tensor, compute: Callable[[Tensor], Tensor]) -> Tensor:
    """x (a view of root) holds compute(x), recorded as root = root with x's elements replaced (CopySlices)."""
    root = x._base
    if root._requires_grad and root.grad_fn is None:
        raise AutogradError(f"a view (shape {fmt_shape(x.shape)}) of a leaf tensor that requires grad is being used "
                            "in an in-place operation; wrap it in tensora.no_grad() or clone() the leaf first")
    if root._requires_grad:
        in_graph = x.grad_fn is not None
    else:  # a view taken in grad mode of a tensor with no history yet: the write gives the base its first one
        in_graph = x.grad_fn is None and x._view_origin is None
    if not in_graph:
        raise _refuse_view_write(x, "the view was made outside the graph: under no_grad or by detach()")
    if isinstance(getattr(x.grad_fn, "op", None), _UserBackward):
        # As torch: rebasing the root would route gradients around the Function's own backward (an input it
        # returned as-is, or a view it made, e.g. what a module with full backward hooks passes on).
        raise AutogradError(f"output {x._output_nr} of {x.grad_fn.op.__name__} is a view and is being modified "
                            "in place; it was created inside a custom Function (or an input was returned as-is), "
                            "whose backward the write would bypass. Clone the output before modifying it")
    key = _positions_key(x, root)
    if key is None:
        raise _refuse_view_write(x, "its elements' positions in its base are unknown")
    flat = _snapshot(root).reshape(-1)
    y = compute(GetItem.apply(flat, key=key))
    if y.dtype is not x.dtype:
        y = y.to(x.dtype)
    new = IndexPut.apply(flat, y, key=key).reshape(root.shape)
    root._data[...] = new._data
    old = root.grad_fn, root._output_nr
    root.grad_fn, root._output_nr, root._requires_grad = new.grad_fn, new._output_nr, new._requires_grad
    graph.move_retain_grad(root, *old)
    _rebase_view(x, root, key)
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
