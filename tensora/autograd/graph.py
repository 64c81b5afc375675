"""The recorded graph: nodes, saved tensors, gradient accumulators and hooks.

A Node is one recorded op. It holds the op's backward rule, the context its
forward filled (saved tensors and attributes), and one edge per input pointing
at the node that produced that input (or the leaf's AccumulateGrad).

Saved tensors are checked against the storage's version counter when unpacked,
so an in-place write to something backward needs is an error, not a wrong
gradient. A saved *output* is kept as its array plus (weak ref to the node,
index), not as the Tensor, so that node -> ctx -> output -> node is never a
reference cycle (which only the cycle collector could free).

`saved_tensors_hooks(pack, unpack)` (as torch.autograd.graph's) lets the caller keep
saved tensors elsewhere: pack(tensor) runs when forward saves one and its result is
all the graph keeps of the bytes; unpack(packed) runs when backward needs them again
(tensora.memory.offload_activations moves activations to host or disk this way).
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy

from ..errors import AutogradError, fmt_shape
from ..tensor import Tensor, VersionCounter, make_tensor
from .grad_mode import STATE, enable_grad

_INPUT, _OUTPUT, _CONST, _VALUE, _HOOKED = range(5)


class _SavedHooks(threading.local):
    """The (pack, unpack) pairs in force on this thread, innermost last (per thread, as grad mode)."""

    stack: tuple = ()


_SAVED_HOOKS = _SavedHooks()


@contextmanager
def saved_tensors_hooks(pack_hook: Callable[[Tensor], Any],
                        unpack_hook: Callable[[Any], Any]) -> Iterator[None]:
    """Inside the block, every tensor an op saves for backward goes through pack_hook; backward
    calls unpack_hook(packed) for it and uses the Tensor (or array) that returns.

    As torch.autograd.graph.saved_tensors_hooks: the innermost pair wins; pack_hook gets a
    Tensor it must not modify in place; unpack_hook must give back the same values (shape
    and dtype), or gradients are wrong. Version checks still apply: an in-place write to a
    saved input after it was packed is an error at backward, hooks or not. A saved output
    reaches pack_hook with its grad_fn (as in torch), so a hook that keeps that Tensor makes
    a reference cycle node -> saved -> tensor -> node; keep its array instead.

    >>> import tensora
    >>> x = tensora.randn(3, requires_grad=True)
    >>> seen = []
    >>> with saved_tensors_hooks(lambda t: seen.append(t.shape) or t.detach().numpy().copy(), lambda a: a):
    ...     y = (x.detach().requires_grad_() * x).sum()
    >>> len(seen)
    2
    """
    previous = _SAVED_HOOKS.stack
    _SAVED_HOOKS.stack = previous + ((pack_hook, unpack_hook),)
    try:
        yield
    finally:
        _SAVED_HOOKS.stack = previous


class Context:
    """What an op's forward passes to its backward: saved values plus free attributes.

    Built as a bare `Context()`: every field has a class-level default, so an op that records
    nothing on the CPU pays for no attribute write; Op.apply sets `xp` for other devices and
    `needs_input_grad` when it records.
    """

    xp: Any = numpy  # the array module forward computes with (CuPy for CUDA tensors)
    needs_input_grad: tuple[bool, ...] = ()  # per input; empty when nothing is recorded
    _raw: tuple = ()        # what forward saved, until pack_saved turns it into _packed
    _packed: list | tuple | None = ()  # None once backward has freed it
    non_differentiable: frozenset | set = frozenset()
    materialize_grads: bool = True
    base_fn: Any = False  # view ops: the base's grad_fn when the view was taken (False: not a view op)
    dirty: frozenset = frozenset()  # custom Functions: ids of inputs forward wrote in place (mark_dirty)

    def save(self, *items: Any) -> None:
        """Keep arrays (or other values) for backward; inputs and outputs come back as Tensors.

        A no-op when nothing records (needs_input_grad is empty): no backward will ask."""
        if self.needs_input_grad:
            self._raw = items

    save_for_backward = save

    def set_materialize_grads(self, value: bool) -> None:
        """Custom Functions: pass None (not zeros) to backward for outputs that got no gradient."""
        self.materialize_grads = bool(value)

    def mark_non_differentiable(self, *outputs: Any) -> None:
        self.non_differentiable = set(self.non_differentiable) | {id(o) for o in outputs}

    def mark_dirty(self, *tensors: Any) -> None:
        """Custom Functions: these inputs were modified in place by forward (and are returned)."""
        self.dirty = frozenset(id(t) for t in tensors)

    @property
    def saved(self) -> tuple:
        if self._packed is None:
            raise AutogradError("trying to backward through the graph a second time (or directly access "
                                "saved tensors after they have already been freed); specify "
                                "retain_graph=True on the first backward call if you need to")
        return tuple(_unpack(p) for p in self._packed)

    saved_tensors = saved


def pack_saved(ctx: Context, node: "Node", inputs: tuple, outputs: tuple) -> None:
    """Turn what forward saved (arrays) into references to input/output tensors or constants."""
    packed = []
    hooks = _SAVED_HOOKS.stack
    for item in ctx._raw:
        one = _pack_one(item, node, inputs, outputs)
        packed.append(_pack_hooked(one, *hooks[-1]) if hooks and one[0] != _VALUE else one)
    ctx._raw = ()
    ctx._packed = packed


def _pack_one(item: Any, node: "Node", inputs: tuple, outputs: tuple) -> tuple:
    i = 0
    for t in outputs:
        if item is t._data or item is t:
            vc = t._vc_or_none  # shared with the tensor unpacking makes, so later in-place writes show
            if vc is None:
                vc = t._vc_or_none = VersionCounter()
            return (_OUTPUT, (t._data, t.device, weakref.ref(node), i, vc, t._base, t._requires_grad), vc.value)
        i += 1
    for t in inputs:
        if isinstance(t, Tensor) and (item is t._data or item is t):
            vc = t._vc_or_none  # Tensor._version, without a property call
            return (_INPUT, t, 0 if vc is None else vc.value)
    if hasattr(item, "shape") and hasattr(item, "dtype"):
        return (_CONST, (item, outputs[0].device), None)
    return (_VALUE, item, None)


def _pack_hooked(one: tuple, pack: Callable, unpack: Callable) -> tuple:
    """A packed entry whose bytes went through pack(): only what rebuilds the tensor around them is kept."""
    kind, payload, version = one
    t = _unpack(one)  # what backward would see: an output carries its grad_fn, so hooks can tell activations
    if kind != _INPUT:
        return (_HOOKED, (kind, pack(t), unpack, payload[1:]), version)
    # an input is rebuilt in backward: same version counter, graph position and leaf accumulator
    acc = grad_accumulator(t) if t._requires_grad and t.grad_fn is None else None
    meta = (t.device, t._vc, t.grad_fn, t._output_nr, t._requires_grad, acc)
    return (_HOOKED, (kind, pack(t), unpack, meta), version)


def _unpack_hooked(payload: tuple) -> tuple:
    """(kind, payload) of the plain entry a hooked one stands for, its bytes back from unpack()."""
    kind, packed, unpack, meta = payload
    data = unpack(packed)
    data = data._data if isinstance(data, Tensor) else data
    if kind != _INPUT:
        return kind, (data, *meta)
    device, vc, grad_fn, output_nr, requires_grad, acc = meta
    t = Tensor(data, device=device)
    t._vc = vc
    t._requires_grad, t.grad_fn, t._output_nr, t._accumulator = requires_grad, grad_fn, output_nr, acc
    return kind, t


def _unpack(p: tuple) -> Any:
    kind, payload, version = p
    if kind == _VALUE:
        return payload
    if kind == _HOOKED:
        kind, payload = _unpack_hooked(payload)
    if kind == _CONST:
        return make_tensor(*payload)
    if kind == _INPUT:
        t = payload
        vc = t._vc
    else:
        data, device, node_ref, index, vc, base, differentiable = payload
        node = node_ref()
        if node is None:  # only reachable through a ctx kept alive past its node
            raise AutogradError("saved output is no longer available: its graph has been freed")
        t = Tensor(data, device=device, _base=base)
        t._vc = vc
        if differentiable:  # integer outputs (indices) and marked ones stay off the graph
            t._requires_grad = True
            t.grad_fn = node
            t._output_nr = index
    if vc.value != version:
        raise AutogradError(f"one of the tensors needed for gradient computation has been modified by an "
                            f"in-place operation: tensor of shape {fmt_shape(t.shape)} is at version "
                            f"{vc.value}; expected version {version} instead")
    return t


class Node:
    """One recorded op: backward rule, context, edges to the nodes of its inputs."""

    __slots__ = ("op", "ctx", "next_edges", "n_outputs", "input_meta", "pre_hooks", "__weakref__")

    def __init__(self, op: Any, ctx: Context, next_edges: tuple, n_outputs: int, input_meta: tuple) -> None:
        self.op = op
        self.ctx = ctx
        self.next_edges = next_edges
        self.n_outputs = n_outputs
        self.input_meta = input_meta  # (shape, dtype) of each input, to check and cast gradients
        self.pre_hooks: dict[int, list[Callable]] | None = None

    def name(self) -> str:
        return f"{self.op.__name__}Backward"

    @property
    def next_functions(self) -> tuple:
        return self.next_edges

    def apply(self, grads: list, retain_graph: bool) -> tuple:
        out = self.op.backward(self.ctx, *grads)
        if not isinstance(out, tuple):
            out = (out,)
        if not retain_graph:
            self.ctx._packed = None
        n_in = len(self.next_edges)
        if len(out) != n_in and (len(out) < n_in or any(g is not None for g in out[n_in:])):
            raise AutogradError(f"{self.name()} returned {len(out)} gradients for {n_in} inputs")
        result = []
        for g, edge, meta in zip(out, self.next_edges, self.input_meta):
            if g is None or edge[0] is None:
                result.append(None)
                continue
            if not isinstance(g, Tensor):
                g = Tensor(g) if hasattr(g, "shape") else None
                if g is None:
                    raise AutogradError(f"{self.name()} returned a non-tensor gradient")
            shape, dtype = meta
            if g._data.shape != shape:
                raise AutogradError(f"{self.name()} returned a gradient of shape {fmt_shape(g.shape)} "
                                    f"for an input of shape {fmt_shape(shape)}")
            if g.dtype is not dtype:
                g = g.to(dtype)
            result.append(g)
        return tuple(result)

    def register_prehook(self, index: int, hook: Callable) -> "RemovableHandle":
        if self.pre_hooks is None:
            self.pre_hooks = {}
        hooks = self.pre_hooks.setdefault(index, [])
        if hooks and getattr(hooks[-1], "retains_grad", False):
            hooks.insert(len(hooks) - 1, hook)  # retain_grad stores the grad after all other hooks, as torch
        else:
            hooks.append(hook)
        return RemovableHandle(hooks, hook)

    def __repr__(self) -> str:
        return f"<{self.name()}>"


class AccumulateGrad:
    """The sink for a leaf tensor: adds incoming gradients into leaf.grad.

    The leaf owns its accumulator; the accumulator refers back weakly, so a
    leaf and its accumulator never form a reference cycle.
    """

    __slots__ = ("_variable", "pre_hooks", "post_hooks", "__weakref__")
    next_edges = ()
    n_outputs = 1

    def __init__(self, variable: Tensor) -> None:
        self._variable = weakref.ref(variable)
        self.pre_hooks: dict[int, list[Callable]] | None = None
        self.post_hooks: list[Callable] | None = None  # hook(leaf) after .grad is updated

    @property
    def variable(self) -> Tensor | None:
        return self._variable()

    def name(self) -> str:
        return "AccumulateGrad"

    register_prehook = Node.register_prehook

    def accumulate(self, grad: Tensor, create_graph: bool) -> None:
        var = self._variable()
        if var is None:
            return
        if grad.dtype is not var.dtype:
            grad = grad.to(var.dtype)
        if not create_graph:
            # A fresh, writable, contiguous copy: optimizers update .grad in place, and an
            # incoming gradient may be a broadcast view or shared with another leaf.
            grad = Tensor(grad._data.copy(), device=grad.device) if var.grad is None else grad.detach()
        if var.grad is None:
            var.grad = grad
        elif create_graph:
            var.grad = var.grad + grad
        else:
            var.grad._data += grad._data
            var.grad._bump_version()
        if self.post_hooks:
            for hook in list(self.post_hooks):
                hook(var)

    def __repr__(self) -> str:
        return "<AccumulateGrad>"


# Set by tensora.ops.inplace: regenerate_view(t) -> bool gives a stale view the history "its elements
# of its base as the base is now" (torch's AsStridedBackward), False when it cannot.
REGENERATE_VIEW: Callable[[Tensor], bool] | None = None


def check_view_current(t: Tensor) -> None:
    """Regenerate (or else refuse) a view whose base got a new history (an in-place write) after the view
    was taken: its recorded node still points at the base's old history, so its gradient would silently be
    wrong. torch regenerates the view's grad_fn the same way.
    """
    fn = t.grad_fn
    expected = fn.ctx.base_fn if isinstance(fn, Node) else False
    if expected is not False and t._base.grad_fn is not expected:
        if REGENERATE_VIEW is not None and REGENERATE_VIEW(t):
            return
        raise AutogradError(f"a view of shape {fmt_shape(t.shape)} was taken before its base (shape "
                            f"{fmt_shape(t._base.shape)}) was modified by an in-place operation; its gradient "
                            "would be stale: take the view again after the in-place write")


# Tensor._view_origin, read on views only: how a view that records no history was made, which decides
# what becomes of it once its base gets a history (an in-place write of values that require grad), as
# torch's CreationMeta does:
#   None           taken in grad mode: regenerated as "its elements of the base as the base is now"
#   VIEW_DETACHED  a detach() alias (torch: not a view at all), a view of one, or a non-differentiable
#                  output of a view op: never regenerated, never requires grad through its base
#   n >= 0         taken under no_grad while its storage was at version n: once the storage moved on,
#                  using it where a gradient could be recorded is an error (torch refuses it too)
VIEW_DETACHED = -1


def refresh_view(t: Tensor, report: bool = False) -> bool:
    """t.requires_grad after bringing t up to date, for a view that records no history (t._base is not None,
    not t._requires_grad) whose base requires grad: a view taken before its base got a history by an
    in-place write. torch rebuilds such a view's grad_fn (AsStridedBackward of the base's new history) when it
    is next asked for; so does this, with grad mode on or off. Views of a leaf that requires grad are left
    alone (the base has no history to view), as are detach() aliases and non-floating views.

    A view taken under no_grad whose storage has been written since: an AutogradError (torch's "A view was
    created in no_grad mode ..."), or with `report` (the requires_grad property) True without changing t,
    as torch reports it.

    Callers check the cheap part first (t._base is not None and t._base._requires_grad): the hot paths pay
    two attribute reads for a tensor that needs no gradient."""
    origin = t._view_origin
    root = t._base
    if origin == VIEW_DETACHED or root.grad_fn is None or not t.dtype.is_floating_point:
        return False
    if origin is not None:
        if t._vc.value == origin:
            return False
        if report:
            return True
        raise AutogradError(f"a view (shape {fmt_shape(t.shape)}) was created in no_grad mode and its base or "
                            "another view of its base has been modified inplace with grad mode enabled; this "
                            "is ambiguous and not allowed: take the view and make the in-place write either "
                            "both inside the no_grad block (the write is not tracked) or both outside it")
    if STATE.enabled:
        done = REGENERATE_VIEW is not None and REGENERATE_VIEW(t)
    else:
        with enable_grad():
            done = REGENERATE_VIEW is not None and REGENERATE_VIEW(t)
    if not done:
        raise AutogradError(f"a view of shape {fmt_shape(t.shape)} was taken before its base (shape "
                            f"{fmt_shape(root.shape)}) got a history from an in-place write, and its elements' "
                            "positions in the base are unknown; take the view again after the in-place write")
    return True


def grad_accumulator(t: Tensor) -> AccumulateGrad:
    if t._accumulator is None:
        t._accumulator = AccumulateGrad(t)
    return t._accumulator


class RemovableHandle:
    """Returned by register_hook; .remove() takes the hook off again."""

    def __init__(self, hooks: list, hook: Callable) -> None:
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def register_tensor_hook(t: Tensor, hook: Callable) -> RemovableHandle:
    if not t.requires_grad:
        raise AutogradError("cannot register a hook on a tensor that doesn't require gradient")
    if t.grad_fn is not None:
        return t.grad_fn.register_prehook(t._output_nr, hook)
    return grad_accumulator(t).register_prehook(0, hook)


def register_post_accumulate_grad_hook(t: Tensor, hook: Callable) -> RemovableHandle:
    """Call hook(t) each time backward has accumulated into leaf t's .grad (DDP starts all-reduces here)."""
    if not t.requires_grad:
        raise AutogradError("cannot register a hook on a tensor that doesn't require gradient")
    if t.grad_fn is not None:
        raise AutogradError("post accumulate grad hooks cannot be registered on non-leaf tensors")
    acc = grad_accumulator(t)
    if acc.post_hooks is None:
        acc.post_hooks = []
    acc.post_hooks.append(hook)
    return RemovableHandle(acc.post_hooks, hook)


def move_retain_grad(t: Tensor, old_fn: Any, old_nr: int) -> None:
    """After an in-place write gave t a new grad_fn: t.grad is the gradient of t's new value, as torch
    moves retain_grad to the new history (hooks from register_hook stay with the old value, as torch)."""
    if not t._retains_grad:
        return
    hooks = old_fn.pre_hooks.get(old_nr) if isinstance(old_fn, Node) and old_fn.pre_hooks else None
    if hooks:
        hooks[:] = [h for h in hooks if not getattr(h, "retains_grad", False)]
    t._retains_grad = False
    retain_grad(t)


def retain_grad(t: Tensor) -> None:
    if t._base is not None and not t._requires_grad:
        t.requires_grad  # noqa: B018 - regenerates a view taken before its base got a history
    if t.grad_fn is None:
        return  # leaves keep their grad anyway
    if t._retains_grad:
        return
    ref = weakref.ref(t)

    def _store(grad: Tensor) -> None:
        owner = ref()
        if owner is not None:
            owner.grad = grad.detach() if owner.grad is None else owner.grad + grad.detach()

    _store.retains_grad = True
    t.grad_fn.register_prehook(t._output_nr, _store)
    t._retains_grad = True
