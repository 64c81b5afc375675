"""Activation checkpointing: trade a second forward pass for not keeping activations.

`checkpoint(fn, *args)` runs fn without recording a graph, so of everything fn
computes only its inputs are kept. When backward reaches the region, fn runs again
with recording on, from the saved inputs and with the random state of the first run
(so dropout draws the same masks), and the gradient is pushed through that
recomputed graph: into the inputs, whose gradients continue through the outer
graph, and into every leaf fn read from outside (a closure's weight, a module's
parameters), which accumulate their .grad directly, as under torch's reentrant
checkpoint. Gradients equal those of fn run plainly.

Limits (all raise or are documented rather than giving wrong numbers):
* create_graph=True through a checkpointed region raises AutogradError;
* a non-leaf tensor fn reads from outside (not as an argument) has its history
  walked, and freed, by the inner backward: right when only the region uses it,
  an AutogradError ("backward through the graph a second time") when the outer
  graph backpropagates through that history too; pass such tensors as arguments;
* tensora.autograd.grad(..., inputs) still sees the gradients of the arguments,
  but leaves fn reads from outside get theirs in .grad, not in the returned tuple;
* fn may return a Tensor or any nesting of tuples, lists and dicts holding Tensors and other
  values (torch's non-reentrant checkpoint takes the same); every Tensor in it gets its gradient;
* only the default generator's state is replayed; pass others in explicitly.

`saved_bytes(*tensors)` measures what a graph keeps for backward, to see the effect.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .. import random as _random
from ..autograd.engine import backward
from ..autograd.function import Function
from ..autograd.grad_mode import STATE, enable_grad
from ..autograd.graph import _CONST, _INPUT, _OUTPUT, AccumulateGrad
from ..errors import AutogradError
from ..tensor import Tensor


class _Checkpoint(Function):
    """The recorded stand-in for a checkpointed region: inputs saved, outputs recomputed in backward."""

    @staticmethod
    def forward(ctx, anchor, *args, fn, kwargs, preserve_rng_state):
        ctx.fn, ctx.kwargs = fn, kwargs
        ctx.rng_state = _random.get_rng_state() if preserve_rng_state else None
        ctx.tensor_at = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        ctx.others = [None if isinstance(a, Tensor) else a for a in args]
        ctx.save_for_backward(*(args[i] for i in ctx.tensor_at))
        return fn(*args, **kwargs)

    @staticmethod
    def backward(ctx, *grads):
        if STATE.enabled:
            raise AutogradError("checkpoint: higher-order gradients (create_graph=True) through a checkpointed "
                                "region are not supported; call the function without checkpoint for those")
        saved = ctx.saved_tensors
        args = list(ctx.others)
        aliases = []
        for i, t in zip(ctx.tensor_at, saved):
            alias = t.detach()  # a leaf: the inner backward stops here and leaves its gradient in .grad
            if t.requires_grad:
                alias.requires_grad_(True)
            args[i] = alias
            aliases.append(alias)
        with _replayed_rng(ctx.rng_state), enable_grad():
            outs = ctx.fn(*args, **ctx.kwargs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        pairs = [(o, g) for o, g in zip(outs, grads)
                 if isinstance(o, Tensor) and o.requires_grad and g is not None]
        if pairs:
            backward([o for o, _ in pairs], [g for _, g in pairs])
        by_arg: list = [None] * len(args)
        for i, alias in zip(ctx.tensor_at, aliases):
            by_arg[i] = alias.grad
        return (None, *by_arg)


@contextmanager
def _replayed_rng(state: dict | None) -> Iterator[None]:
    """Set the default generator to `state` (when given) for the block, then put the current state back."""
    if state is None:
        yield
        return
    current = _random.get_rng_state()
    _random.set_rng_state(state)
    try:
        yield
    finally:
        _random.set_rng_state(current)


def checkpoint(function: Callable, *args: Any, use_reentrant: bool = False, preserve_rng_state: bool = True,
               **kwargs: Any) -> Any:
    """function(*args, **kwargs), keeping only the inputs for backward and recomputing the rest.

    use_reentrant=False (the default) records the region whenever grad mode is on, so the
    parameters of a first layer fed a plain input still get gradients; use_reentrant=True
    records it only when an argument requires grad (torch's old rule) and takes no kwargs.
    preserve_rng_state replays the default generator so dropout masks match.

    >>> import tensora
    >>> w = tensora.randn(4, 4, requires_grad=True)
    >>> x = tensora.randn(2, 4)
    >>> y = checkpoint(lambda h: (h @ w).exp(), x)
    >>> y.sum().backward()
    >>> tuple(w.grad.shape)
    (4, 4)
    """
    if use_reentrant and kwargs:
        raise ValueError("checkpoint: use_reentrant=True takes no keyword arguments for the function, got "
                         + ", ".join(sorted(kwargs)))
    # A leaf that requires grad makes the region recorded even when no argument does: the function may
    # read parameters that only the recomputation can see.
    anchor = Tensor(np.zeros(()), requires_grad=not use_reentrant)
    structure: list = [None]

    def flat(*fargs: Any, **fkwargs: Any) -> Any:
        # The recorded op can only hand out a Tensor or a flat tuple: any other nesting (a list, a dict,
        # a tuple inside the tuple) goes in as a flat tuple of its Tensors and is rebuilt afterwards, so
        # no Tensor in it is silently cut off from the graph.
        out = function(*fargs, **fkwargs)
        if isinstance(out, Tensor) or (type(out) is tuple and not any(isinstance(o, _NESTED) for o in out)):
            structure[0] = None
            return out
        leaves: list[Tensor] = []
        spec = _flatten(out, leaves)
        if not leaves:
            structure[0] = None
            return out
        structure[0] = spec
        return tuple(leaves)

    result = _Checkpoint.apply(anchor, *args, fn=flat, kwargs=kwargs, preserve_rng_state=preserve_rng_state)
    if structure[0] is None:
        return result
    return _unflatten(structure[0], list(result if isinstance(result, tuple) else (result,)))


_NESTED = (list, tuple, dict)


class _Slot:
    """Where the i-th Tensor of a flattened output goes back."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _flatten(value: Any, leaves: list) -> Any:
    if isinstance(value, Tensor):
        leaves.append(value)
        return _Slot(len(leaves) - 1)
    if isinstance(value, dict):
        return type(value)((k, _flatten(v, leaves)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        items = [_flatten(v, leaves) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    return value


def _unflatten(spec: Any, leaves: list) -> Any:
    if isinstance(spec, _Slot):
        return leaves[spec.index]
    if isinstance(spec, dict):
        return type(spec)((k, _unflatten(v, leaves)) for k, v in spec.items())
    if isinstance(spec, (list, tuple)):
        items = [_unflatten(v, leaves) for v in spec]
        return type(spec)(*items) if hasattr(spec, "_fields") else type(spec)(items)
    return spec


def checkpoint_sequential(functions: Sequence[Callable], segments: int, input: Any, use_reentrant: bool = False,
                          preserve_rng_state: bool = True) -> Any:
    """Run `functions` in order, checkpointing all but the last of `segments` equal runs of them.

    >>> import tensora
    >>> layers = [lambda h: h * 2] * 4
    >>> checkpoint_sequential(layers, 2, tensora.ones(3)).tolist()
    [16.0, 16.0, 16.0]
    """
    functions = list(functions)
    if not 1 <= segments <= max(len(functions), 1):
        raise ValueError(f"checkpoint_sequential: segments must be in [1, {len(functions)}], got {segments}")
    size = -(-len(functions) // segments)
    bounds = [(s, min(s + size, len(functions))) for s in range(0, len(functions), size)]

    def run(start: int, end: int) -> Callable:
        def segment(x: Any) -> Any:
            for f in functions[start:end]:
                x = f(x)
            return x
        return segment

    for start, end in bounds[:-1]:
        input = checkpoint(run(start, end), input, use_reentrant=use_reentrant,
                           preserve_rng_state=preserve_rng_state)
    start, end = bounds[-1] if bounds else (0, 0)
    return run(start, end)(input)


def saved_bytes(*tensors: Tensor) -> int:
    """Bytes of the arrays the graph behind `tensors` keeps for backward (each storage counted once).

    A view keeps its whole base alive, so the base's size is what counts.
    """
    owners: dict[int, int] = {}
    seen: set[int] = set()
    stack = [t.grad_fn for t in tensors if isinstance(t, Tensor) and t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen or isinstance(node, AccumulateGrad):
            continue
        seen.add(id(node))
        for kind, payload, _ in node.ctx._packed or ():
            if kind == _INPUT:
                arr = payload._data
            elif kind in (_OUTPUT, _CONST):
                arr = payload[0]
            else:
                continue
            while getattr(arr, "base", None) is not None and hasattr(arr.base, "nbytes"):
                arr = arr.base
            owners[id(arr)] = int(arr.nbytes)
        stack.extend(n for n, _ in node.next_edges)
    return sum(owners.values())
