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
from ..amp.autocast_mode import ACTIVE, autocast_inputs
from ..backend import get_backend
from ..device import CPU
from ..errors import AutogradError, DeviceError, ShapeError, TensoraError, fmt_shape
from ..kernels.cast import float32_to_bfloat16
from ..tensor import Tensor, make_tensor
from .grad_mode import STATE, no_grad
from .graph import VIEW_DETACHED, Context, Node, check_view_current, grad_accumulator, pack_saved, refresh_view

OPS: dict[str, type["Op"]] = {}


def _edge(t: Any) -> tuple[tuple, tuple]:
    """(where t's gradient goes: (node, output index), the (shape, dtype) it must have), for one
    input of a recorded node; (None, 0) and (None, None) for an input that needs no gradient.

    A view that records nothing while its base requires grad (taken before an in-place write gave the
    base a history) was already brought up to date (refresh_view) where the caller decided to record,
    so its _requires_grad is current here."""
    if isinstance(t, Tensor) and t._requires_grad:
        fn = t.grad_fn
        if fn is None:
            acc = t._accumulator
            return (acc if acc is not None else grad_accumulator(t), 0), (t._data.shape, t.dtype)
        if t._base is not None:
            check_view_current(t)  # may regenerate a stale view's grad_fn
            fn = t.grad_fn
        return (fn, t._output_nr), (t._data.shape, t.dtype)
    return _NO_GRAD


_NO_GRAD = ((None, 0), (None, None))


class Op:
    """Base of built-in ops: subclass, set the name, write forward(ctx, *arrays) and backward(ctx, *grads)."""

    name: str = ""
    view: bool = False       # the output may share storage with the first input
    promote: bool = False    # cast floating/int inputs to their result_type first
    # With `promote`: a float16/bfloat16 result's scalar operand (a Python number, or a 0-d tensor of
    # another dtype as second operand) reaches forward as float32, not rounded to 16 bits, and apply
    # rounds forward's (float32) result once to the 16-bit dtype: torch's CPU mul and div keep such a
    # "CPU scalar" in float32 (their opmath type). Such an op must not save its output.
    opmath_scalar: bool = False

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
        if ACTIVE.regions:  # some thread is inside autocast: cast as tensora.amp.POLICY says
            inputs = autocast_inputs(cls, inputs)
        # The lean path, most calls on small tensors: one or two CPU tensors of one dtype, or a
        # tensor and a number. It skips the general path's device and promotion bookkeeping;
        # what it runs (forward, error wrapping, output wrapping, recording) is the same.
        # Spelt out per arity, in locals: every branch, lookup and call here is paid by each op.
        n = len(inputs)
        x = inputs[0] if n else None
        if n > 2 or not isinstance(x, Tensor) or x.device is not CPU:
            return _apply(cls, inputs, params)
        ctx = Context()
        needs = ()  # needs_input_grad, left empty unless this call records
        if n == 1:
            if x._requires_grad:
                if STATE.enabled:
                    needs = ctx.needs_input_grad = _GRAD_1
            elif x._base is not None and x._base._requires_grad and STATE.enabled and refresh_view(x):
                needs = ctx.needs_input_grad = _GRAD_1  # a view taken before its base got a history
            try:  # plain calls: each is ~0.1 us cheaper than forward(ctx, *arrays, **params)
                out = cls.forward(ctx, x._data, **params) if params else cls.forward(ctx, x._data)
            except ValueError as exc:
                raise _shape_error(cls, exc, inputs) from None
        else:
            y = inputs[1]
            low = None  # the 16-bit dtype to round forward's result to (opmath_scalar ops only)
            if isinstance(y, Tensor):
                if y.device is not CPU or y.dtype is not x.dtype:
                    return _apply(cls, inputs, params)
                rx = x._requires_grad
                if not rx and x._base is not None and x._base._requires_grad and STATE.enabled:
                    rx = refresh_view(x)  # a view taken before its base got a history
                ry = y._requires_grad
                if not ry and y._base is not None and y._base._requires_grad and STATE.enabled:
                    ry = refresh_view(y)
                if (rx or ry) and STATE.enabled:
                    needs = ctx.needs_input_grad = (rx, ry)
                a1 = y._data
            else:
                if not cls.promote:
                    a1 = y
                else:
                    # A Python number of no higher category than x's dtype: a NumPy scalar of
                    # that dtype (what _promoted makes of it); others take the general path.
                    category = _SCALAR_CATEGORY.get(y.__class__)
                    if category is None or category > x.dtype.category:
                        return _apply(cls, inputs, params)
                    if cls.opmath_scalar and x.dtype in _HALF:
                        a1 = _F32(y)
                        low = x.dtype
                    else:
                        a1 = x.dtype.np_dtype.type(y)
                if x._requires_grad:
                    if STATE.enabled:
                        needs = ctx.needs_input_grad = _GRAD_1_OF_2
                elif x._base is not None and x._base._requires_grad and STATE.enabled and refresh_view(x):
                    needs = ctx.needs_input_grad = _GRAD_1_OF_2
            try:
                out = cls.forward(ctx, x._data, a1, **params) if params else cls.forward(ctx, x._data, a1)
            except ValueError as exc:
                raise _shape_error(cls, exc, inputs) from None
            if low is not None:
                out = _rounded(out, low)
        if needs:
            return _record(cls, ctx, inputs, out, CPU, x if cls.view else None, _NP)
        if out.__class__ is not _ndarray:
            return _wrap_outputs(out, CPU, x if cls.view else None, _NP)
        return _wrap_untracked(out, CPU, x) if cls.view else make_tensor(out, CPU)


_ndarray = _NP.ndarray
_GRAD_1 = (True,)
_GRAD_1_OF_2 = (True, False)
_SCALAR_CATEGORY = {bool: dt.BOOL, int: dt.INTEGRAL, float: dt.FLOATING}
_FLOATING = dt.FLOATING
_HALF = frozenset((dt.float16, dt.bfloat16))
_F32 = _NP.float32


def _apply(cls: type[Op], inputs: tuple, params: dict) -> Any:
    """Op.apply for what the lean path does not take: other devices, mixed dtypes, 3+ inputs."""
    first = None
    requires = False
    same_dtype = True
    only_tensors = True
    for x in inputs:
        if isinstance(x, Tensor):
            if first is None:
                first = x
            else:
                if x.device is not first.device:
                    _check_same_device(cls, first, x)
                if x.dtype is not first.dtype:
                    same_dtype = False
            if x._requires_grad or (x._base is not None and x._base._requires_grad and STATE.enabled
                                    and refresh_view(x)):
                requires = True
        else:
            only_tensors = False
    device = CPU if first is None else first.device
    xp = _NP if device is CPU else get_backend(device).xp
    record = requires and STATE.enabled
    if cls.promote and not same_dtype and record:
        # Cast through the differentiable Cast op, so saved inputs keep their path to the originals.
        target = dt.result_type(*inputs)
        keep = _opmath_operand(inputs, target) if cls.opmath_scalar else None
        cast = []
        for x in inputs:
            if isinstance(x, Tensor):
                want = dt.float32 if x is keep else target
                if x.dtype is not want:
                    x = x.to(want)
            cast.append(x)
        inputs = tuple(cast)
        first = next(x for x in inputs if isinstance(x, Tensor))
        arrays, low = _promoted(inputs, first, cls.opmath_scalar)
    elif cls.promote and not (same_dtype and only_tensors):  # tensors of one dtype: nothing to promote
        arrays, low = _promoted(inputs, first, cls.opmath_scalar)
    else:
        arrays, low = [x._data if isinstance(x, Tensor) else x for x in inputs], None
    ctx = Context()
    if xp is not _NP:
        ctx.xp = xp
    if record:
        ctx.needs_input_grad = _needs_input_grad(inputs)
    try:
        out = cls.forward(ctx, *arrays, **params)
    except ValueError as exc:
        raise _shape_error(cls, exc, inputs) from None
    if low is not None:
        out = _rounded(out, low)
    base = first if cls.view else None
    if record:
        return _record(cls, ctx, inputs, out, device, base, xp)
    if out.__class__ is xp.ndarray:
        return make_tensor(out, device) if base is None else _wrap_untracked(out, device, base)
    return _wrap_outputs(out, device, base, xp)


def _needs_input_grad(inputs: tuple) -> tuple[bool, ...]:
    needs = []
    for x in inputs:
        needs.append(isinstance(x, Tensor) and x._requires_grad)
    return tuple(needs)


def _record(cls: type[Op], ctx: Context, inputs: tuple, out: Any, device: Any, base: Tensor | None,
            xp: Any) -> Any:
    """Wrap forward's output(s) and record the node that carries their gradient to the inputs."""
    multi = out.__class__ is tuple
    if multi:
        if any(a.__class__ is not xp.ndarray for a in out):
            out = _as_arrays(ctx, out, xp)
        tensors = tuple(_wrap(a, device, base) for a in out)
    else:
        if out.__class__ is not xp.ndarray:
            out = _as_arrays(ctx, (out,), xp)[0]
        tensors = (make_tensor(out, device) if base is None else _wrap(out, device, base),)
    n = len(inputs)  # one or two inputs, most ops: spelt out, no generator to run
    if n == 1:
        e0, m0 = _edge(inputs[0])
        edges, metas = (e0,), (m0,)
    elif n == 2:
        e0, m0 = _edge(inputs[0])
        e1, m1 = _edge(inputs[1])
        edges, metas = (e0, e1), (m0, m1)
    else:
        edges, metas = tuple(zip(*map(_edge, inputs))) or ((), ())
    node = Node(cls, ctx, edges, len(tensors), metas)
    if base is not None:
        root = base._base if base._base is not None else base
        ctx.base_fn = root.grad_fn  # what the view's history assumes its base came from
    nondiff = ctx.non_differentiable
    i = 0
    for t in tensors:
        if t.dtype.category == _FLOATING and (not nondiff or id(t._data) not in nondiff):
            t._requires_grad = True
            t.grad_fn = node
            t._output_nr = i
        elif t._base is not None:
            t._view_origin = VIEW_DETACHED  # a view left off the graph on purpose: never regenerated
        i += 1
    if ctx._raw:
        pack_saved(ctx, node, inputs, tensors)
    return tensors if multi else tensors[0]


def _wrap_outputs(out: Any, device: Any, base: Tensor | None, xp: Any) -> Any:
    """Tensors around a forward's outputs when nothing records: a tuple of arrays, or a scalar."""
    if out.__class__ is tuple:
        return tuple(_wrap_untracked(a if a.__class__ is xp.ndarray else xp.asarray(a), device, base) for a in out)
    return _wrap_untracked(xp.asarray(out), device, base)


def _shape_error(cls: type[Op], exc: ValueError, inputs: tuple) -> Exception:
    """NumPy's own shape complaints (broadcasting, matmul), naming the op and shapes; ours pass as they are."""
    if isinstance(exc, TensoraError):
        return exc
    shapes = ", ".join(fmt_shape(x.shape) for x in inputs if isinstance(x, Tensor))
    return ShapeError(f"{cls.name}: {exc} (input shapes {shapes})")


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


def _wrap(array: Any, device: Any, base: Tensor | None) -> Tensor:
    """A Tensor around a forward result; a view of `base` when the array shares its memory."""
    if base is not None:
        owner = array.base
        if owner is not None and (owner is base._data or owner is base._data.base):
            return make_tensor(array, device, base._base if base._base is not None else base)
    return make_tensor(array, device)


def _wrap_untracked(array: Any, device: Any, base: Tensor | None) -> Tensor:
    """_wrap for a forward that records nothing. A view made under no_grad, or of a detach() alias or of
    such a view, is marked so (Tensor._view_origin, see graph.VIEW_DETACHED): it is not regenerated when
    its base later gets a history. (A recorded view needs no mark: it has a grad_fn.)"""
    if base is not None:
        owner = array.base
        if owner is not None and (owner is base._data or owner is base._data.base):
            root = base._base
            if root is None:
                t = make_tensor(array, device, base)
            else:
                t = make_tensor(array, device, root)
                origin = base._view_origin
                if origin is not None:  # as torch propagates a view's CreationMeta to views of it
                    t._view_origin = origin if origin < 0 else t._vc_or_none.value
                    return t
            if not STATE.enabled:
                t._view_origin = t._vc_or_none.value
            return t
    return make_tensor(array, device)


def _promoted(inputs: tuple, first: Tensor | None, opmath: bool = False) -> tuple[list, dt.DType | None]:
    """(inputs cast to their common result_type (tensors) or made scalars of it (Python numbers),
    the 16-bit dtype forward's result must be rounded to, or None).

    opmath (Op.opmath_scalar): for a float16/bfloat16 result, numbers become float32 scalars and
    a 0-d second operand of another dtype a float32 array (see _opmath_operand)."""
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
            half = opmath and d in _HALF
            scalar = _F32 if half else d.np_dtype.type
            low = None
            out = []
            for x in inputs:
                if isinstance(x, Tensor):
                    out.append(x._data)
                else:
                    out.append(scalar(x))
                    low = d if half else None
            return out, low
    target = dt.result_type(*inputs)
    npd = target.np_dtype
    keep = _opmath_operand(inputs, target) if opmath else None
    half = opmath and target in _HALF
    low = target if keep is not None else None
    out = []
    for x in inputs:
        if isinstance(x, Tensor):
            a = x._data
            want = _NP.dtype(_F32) if x is keep else npd
            out.append(a if a.dtype == want else a.astype(want))
        else:
            out.append(_F32(x) if half else npd.type(x))
            low = target if half else None
    return out, low


def _rounded(out: Any, low: dt.DType) -> Any:
    """A float32 forward result rounded once to float16/bfloat16 (see Op.opmath_scalar)."""
    if low is dt.bfloat16 and out.__class__ is _ndarray:
        return float32_to_bfloat16(out)  # the fast (native) rounding, nearest-even as ml_dtypes
    return out.astype(low.np_dtype)


def _opmath_operand(inputs: tuple, target: dt.DType) -> Tensor | None:
    """The second operand when it is a 0-d tensor of another dtype and the result is float16/bfloat16:
    torch's mul/div kernels read such a scalar in float32 (iter.original_scalar_value<opmath_t>(2))."""
    if target in _HALF and len(inputs) == 2:
        y = inputs[1]
        if isinstance(y, Tensor) and y._data.ndim == 0 and y.dtype is not target:
            return y
    return None


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

    As in torch, forward may instead take only the inputs, with a separate
    setup_context(ctx, inputs, output) that saves what backward needs; and an input
    that forward modifies in place and returns is declared with ctx.mark_dirty(x).
    """

    @staticmethod
    def setup_context(ctx: Context, inputs: tuple, output: Any) -> None:
        """Override to split forward(*args) from saving (torch's setup_context style)."""
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        tensors_in = [a for a in args if isinstance(a, Tensor)]
        if STATE.enabled:
            for t in tensors_in:  # views taken before their base got a history: see refresh_view
                if not t._requires_grad and t._base is not None and t._base._requires_grad:
                    refresh_view(t)
        record = STATE.enabled and any(t._requires_grad for t in tensors_in)
        ctx = Context()
        ctx.xp = None
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a._requires_grad for a in args)
        with no_grad():
            if cls.setup_context is Function.setup_context:
                out = cls.forward(ctx, *args, **kwargs)
            else:
                out = cls.forward(*args, **kwargs)
                cls.setup_context(ctx, args, out)
        multi = isinstance(out, tuple)
        dirty = ctx.dirty
        outs = tuple(o if dirty and id(o) in dirty else _fresh_output(o, args) for o in (out if multi else (out,)))
        if record:
            for t in outs:
                if isinstance(t, Tensor) and id(t) in dirty:
                    _check_dirty(cls, t)
            edges, metas = tuple(zip(*map(_edge, args))) or ((), ())
            node = Node(_UserBackward(cls), ctx, edges, len(outs), metas)
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


def _check_dirty(cls: type, t: Tensor) -> None:
    """A mark_dirty input is rebased onto the Function's node, as torch: not a leaf that requires grad
    (its gradient would be lost), not a view (its base would not see the new history)."""
    if t._requires_grad and t.grad_fn is None:
        raise AutogradError(f"{cls.__name__}: a leaf tensor that requires grad is being used in an in-place "
                            "operation (mark_dirty)")
    if t._base is not None:
        raise AutogradError(f"{cls.__name__}: mark_dirty on a view is not supported; write into its base")


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
