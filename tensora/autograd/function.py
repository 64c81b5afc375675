"""Ops and custom Functions: how a forward/backward pair enters the graph.

`Op` is the base of every built-in op. Its forward runs on raw arrays through
the backend's array module (`ctx.xp`); its backward runs on Tensors, written in
differentiable ops, so gradients of gradients come for free. Each subclass
registers itself once by name in `OPS`; its public function and Tensor method
are declared with `tensora.ops.registry.register` / `export`.

`Function` is the user-facing variant (torch.autograd.Function): its forward
takes and returns Tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as _NP

from .. import dtypes as dt
from ..backend import get_backend
from ..device import CPU
from ..errors import DeviceError, ShapeError, TensoraError, fmt_shape
from ..tensor import Tensor, make_tensor
from .grad_mode import STATE, no_grad
from .graph import Context, Node, check_view_current, grad_accumulator, pack_saved

OPS: dict[str, type["Op"]] = {}


def _edge(t: Any) -> tuple:
    if isinstance(t, Tensor) and t._requires_grad:
        if t.grad_fn is None:
            return (grad_accumulator(t), 0)
        if t._base is not None:
            check_view_current(t)
        return (t.grad_fn, t._output_nr)
    return (None, 0)


def _meta(t: Any) -> tuple:
    return (t._data.shape, t.dtype) if isinstance(t, Tensor) else (None, None)


class Op:
    """Base of built-in ops: subclass, set the name, write forward(ctx, *arrays) and backward(ctx, *grads)."""

    name: str = ""
    view: bool = False       # the output may share storage with the first input
    promote: bool = False    # cast floating/int inputs to their result_type first

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is None:
            return
        if name in OPS:
            raise ValueError(f"op {name!r} registered twice ({OPS[name].__qualname__} and {cls.__qualname__})")
        cls.name = name
        OPS[name] = cls


    # Subclasses define:
    #   forward(ctx, *arrays, **params) -> array | tuple of arrays
    #   backward(ctx, *grads: Tensor) -> Tensor | None | tuple, one per positional input

    @classmethod
    def apply(cls, *inputs: Any, **params: Any) -> Any:
        """Run forward on the inputs' arrays, record a node if any input needs a gradient."""
        first = None
        requires = False
        same_dtype = True
        for x in inputs:
            if isinstance(x, Tensor):
                if first is None:
                    first = x
                else:
                    if x.device is not first.device:
                        _check_same_device(cls, first, x)
                    if x.dtype is not first.dtype:
                        same_dtype = False
                if x._requires_grad:
                    requires = True
        device = CPU if first is None else first.device
        xp = _NP if device is CPU else get_backend(device).xp
        if cls.promote and not same_dtype and requires and STATE.enabled:
            # Cast through the differentiable Cast op, so saved inputs keep their path to the originals.
            target = dt.result_type(*inputs)
            inputs = tuple(x.to(target) if isinstance(x, Tensor) and x.dtype is not target else x for x in inputs)
            first = next(x for x in inputs if isinstance(x, Tensor))
            arrays = _promoted(inputs, first)
        elif cls.promote and not (same_dtype and len(inputs) == 2 and isinstance(inputs[0], Tensor)
                                  and isinstance(inputs[1], Tensor)):
            arrays = _promoted(inputs, first)
        else:
            arrays = [x._data if isinstance(x, Tensor) else x for x in inputs]
        record = requires and STATE.enabled
        ctx = Context(xp, tuple(isinstance(x, Tensor) and x._requires_grad for x in inputs) if record else ())
        try:
            out = cls.forward(ctx, *arrays, **params)
        except ValueError as exc:
            if isinstance(exc, TensoraError):
                raise
            # NumPy's own shape complaints (broadcasting, matmul): re-raise naming the op and shapes.
            shapes = ", ".join(fmt_shape(x.shape) for x in inputs if isinstance(x, Tensor))
            raise ShapeError(f"{cls.name}: {exc} (input shapes {shapes})") from None
        base = first if cls.view else None
        multi = type(out) is tuple
        if multi:
            if any(type(a) is not xp.ndarray for a in out):
                out = _as_arrays(ctx, out, xp)
            tensors = tuple(_wrap(a, device, base, xp) for a in out)
        else:
            if type(out) is not xp.ndarray:
                out = _as_arrays(ctx, (out,), xp)[0]
            if base is None:
                tensors = (make_tensor(out, device),)
                if not record:
                    return tensors[0]
            else:
                tensors = (_wrap(out, device, base, xp),)
        if record:
            node = Node(cls, ctx, tuple(_edge(x) for x in inputs), len(tensors), tuple(_meta(x) for x in inputs))
            nondiff = ctx.non_differentiable
            if base is not None:
                root = base._base if base._base is not None else base
                ctx.base_fn = root.grad_fn  # what the view's history assumes its base came from
            for i, t in enumerate(tensors):
                if t.dtype.category == dt.FLOATING and id(t._data) not in nondiff:
                    t._requires_grad = True
                    t.grad_fn = node
                    t._output_nr = i
            pack_saved(ctx, node, inputs, tensors)
        return tensors if multi else tensors[0]


def _as_arrays(ctx: Context, outs: tuple, xp: Any) -> tuple:
    """Outputs as arrays (NumPy returns scalars from full reductions), keeping what forward
    saved or marked pointing at the arrays that the output tensors will hold."""
    fixed = tuple(a if type(a) is xp.ndarray else xp.asarray(a) for a in outs)
    swap = {id(o): f for o, f in zip(outs, fixed) if o is not f}
    if ctx._raw:
        ctx._raw = tuple(swap.get(id(r), r) for r in ctx._raw)
    if ctx.non_differentiable:
        ctx.non_differentiable = {id(swap[i]) if i in swap else i for i in ctx.non_differentiable}
    return fixed


def _check_same_device(op: type, a: Tensor, b: Tensor) -> None:
    if a.device != b.device:
        raise DeviceError(f"{op.name}: expected all tensors on the same device, found {a.device} "
                          f"(shape {fmt_shape(a.shape)}) and {b.device} (shape {fmt_shape(b.shape)})")


def _wrap(array: Any, device: Any, base: Tensor | None, xp: Any) -> Tensor:
    """A Tensor around a forward result; a view of `base` when the array shares its memory."""
    if base is not None:
        owner = array.base
        if owner is not None and (owner is base._data or owner is base._data.base):
            return make_tensor(array, device, base._base if base._base is not None else base)
    return make_tensor(array, device)


def _promoted(inputs: tuple, first: Tensor | None) -> list:
    """Inputs cast to their common result_type (tensors) or made scalars of it (Python numbers)."""
    # Fast paths: tensors of one dtype, or one tensor with a number of no higher category.
    if first is not None:
        d = first.dtype
        fast = True
        for x in inputs:
            if isinstance(x, Tensor):
                if x.dtype is not d:
                    fast = False
                    break
            elif _scalar_category(x) > d.category:
                fast = False
                break
        if fast:
            npd = d.np_dtype
            return [x._data if isinstance(x, Tensor) else npd.type(x) for x in inputs]
    target = dt.result_type(*inputs)
    npd = target.np_dtype
    out = []
    for x in inputs:
        if isinstance(x, Tensor):
            a = x._data
            out.append(a if a.dtype == npd else a.astype(npd))
        else:
            out.append(npd.type(x))
    return out


def _scalar_category(x: Any) -> int:
    if isinstance(x, (bool, _NP.bool_)):
        return dt.BOOL
    if isinstance(x, (int, _NP.integer)):
        return dt.INTEGRAL
    return dt.FLOATING


class Function:
    """A user-defined op with forward(ctx, *args) and backward(ctx, *grads), on Tensors.

    >>> class Square(Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x * x
    ...     @staticmethod
    ...     def backward(ctx, g):
    ...         (x,) = ctx.saved_tensors
    ...         return 2 * x * g
    """

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        tensors_in = [a for a in args if isinstance(a, Tensor)]
        record = STATE.enabled and any(t._requires_grad for t in tensors_in)
        ctx = Context(None, tuple(isinstance(a, Tensor) and a._requires_grad for a in args))
        with no_grad():
            out = cls.forward(ctx, *args, **kwargs)
        multi = isinstance(out, tuple)
        outs = tuple(_fresh_output(o, args) for o in (out if multi else (out,)))
        if record:
            node = Node(_UserBackward(cls), ctx, tuple(_edge(a) for a in args), len(outs),
                        tuple(_meta(a) for a in args))
            for i, t in enumerate(outs):
                if isinstance(t, Tensor) and t.dtype.is_floating_point and id(t) not in ctx.non_differentiable:
                    t._requires_grad = True
                    t.grad_fn = node
                    t._output_nr = i
            ctx.output_meta = tuple((t.shape, t.dtype, t.device) if isinstance(t, Tensor) else None for t in outs)
            # Saved tensors are matched to inputs/outputs by their arrays.
            ctx._raw = tuple(s._data if isinstance(s, Tensor) else s for s in ctx._raw)
            pack_saved(ctx, node, args, tuple(o for o in outs if isinstance(o, Tensor)))
        return outs if multi else outs[0]


def _fresh_output(o: Any, args: tuple) -> Any:
    # An input returned unchanged becomes a new tensor object sharing storage, so
    # giving it this node's history does not rewrite the caller's input.
    if isinstance(o, Tensor) and any(o is a for a in args):
        return Tensor(o._data, device=o.device, _base=o._base if o._base is not None else o)
    return o


class _UserBackward:
    """Adapts a Function subclass to the Node interface (name + backward)."""

    def __init__(self, fn: type[Function]) -> None:
        self.fn = fn
        self.__name__ = fn.__name__

    def backward(self, ctx: Context, *grads: Tensor) -> Any:
        if ctx.materialize_grads and any(g is None for g in grads):
            # Like torch: an output that got no gradient (unused, or non-differentiable) gets zeros.
            from ..creation import zeros
            grads = tuple(zeros(m[0], dtype=m[1], device=m[2]) if g is None and m is not None else g
                          for g, m in zip(grads, ctx.output_meta))
        return self.fn.backward(ctx, *grads)
