"""Training beyond memory: saved activations and optimizer state owned by the memory manager,
and activation checkpointing by policy.

Training needs three kinds of bytes besides the weights: the activations forward saves for
backward, the gradients, and the optimizer state (Adam: two buffers the size of the
weights). Two of them can live in a lower tier without changing a single number:

- `offload_activations()` routes every activation an op saves (a tensor with a grad_fn)
  into the manager as kind="activation": the budget decides, by LRU, which stay in RAM and
  which are spilled to disk (tier="disk" spills each one at once); backward brings them back.
  The array is adopted, not copied, so an activation still in use by forward costs nothing
  extra; once forward drops it, the manager's handle is its only owner.
- `StreamedOptimizer(optimizer)` keeps each parameter's state (kind="optimizer") in the
  manager between steps and brings it up, pinned, only for that parameter's update, while
  the next parameter's state is prefetched.

Both are exact: the same arrays are used, only where they wait changes (tests compare
gradients and weights bit for bit). `checkpoint_policy(model, every=2)` trades compute
instead: every second block keeps only its input and recomputes the rest in backward
(tensora.utils.checkpoint), also exact.

Parameters, buffers and op-internal constants (masks) are not offloaded: they have no
grad_fn, and their arrays are owned elsewhere, so a spill would not free them.

    >>> import tensora
    >>> from tensora.memory import budget
    >>> w = tensora.randn(64, 64, requires_grad=True)
    >>> with budget(host="1MiB") as mm, offload_activations(min_bytes=0):
    ...     loss = (tensora.randn(8, 64) @ w).tanh().sum()
    ...     loss.backward()
    >>> tuple(w.grad.shape)
    (64, 64)
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Iterator
from typing import Any, Callable

import numpy as np

from ..autograd.grad_mode import enable_grad, no_grad
from ..autograd.graph import saved_tensors_hooks
from ..nn import Module, ModuleList
from ..optim import Optimizer
from ..tensor import Tensor
from ..utils.checkpoint import checkpoint
from .handle import Handle
from .manager import MemoryManager, current_manager

TIERS = ("host", "disk")


def _manager(manager: MemoryManager | None) -> MemoryManager:
    mm = manager if manager is not None else current_manager()
    if mm is None:
        raise RuntimeError("no memory manager: call this inside `with tensora.memory.budget(...)` or pass manager=")
    return mm


class _SavedActivation:
    """One saved array in the manager; shared by every op that saved it, freed when the last one lets go."""

    __slots__ = ("handle", "__weakref__")

    def __init__(self, handle: Handle) -> None:
        self.handle = handle
        weakref.finalize(self, _free_quietly, handle)


def _free_quietly(h: Handle) -> None:
    if not h.freed:  # the budget block may have closed (and freed everything) first
        h.free()


@contextlib.contextmanager
def offload_activations(tier: str = "host", *, manager: MemoryManager | None = None,
                        min_bytes: int = 1 << 16) -> Iterator[None]:
    """Inside the block, activations saved for backward are owned by the memory manager.

    tier="host": placed in RAM under the host budget, spilled LRU-first when it is full;
    tier="disk": spilled at once (RAM holds only what forward and backward are using).
    Arrays under min_bytes stay where they are (a handle costs more than it saves).
    Gradients are identical to running without it.
    """
    if tier not in TIERS:
        raise ValueError(f"offload_activations: tier must be one of {TIERS}, got {tier!r}")
    mm = _manager(manager)
    shared: dict[int, tuple[weakref.ref, weakref.ref]] = {}  # id(array) -> (array, its _SavedActivation)

    def pack(t: Tensor) -> Any:
        data = t._data
        if t.grad_fn is None or not isinstance(data, np.ndarray) or data.nbytes < min_bytes:
            return t
        seen = shared.get(id(data))
        if seen is not None and seen[0]() is data and seen[1]() is not None:
            return seen[1]()  # the same activation saved by another op: one handle
        saved = _SavedActivation(mm.own(data, name=t.grad_fn.name(), kind="activation"))
        if tier == "disk":
            saved.handle.evict()  # now, not only under pressure: backward is far away
        shared[id(data)] = (weakref.ref(data), weakref.ref(saved))
        return saved

    def unpack(packed: Any) -> Any:
        return packed.handle.get() if isinstance(packed, _SavedActivation) else packed

    with saved_tensors_hooks(pack, unpack):
        yield


class StreamedOptimizer:
    """An optimizer whose per-parameter state lives in the memory manager, brought up one parameter at a time.

    Wraps any tensora Optimizer written as init_single/apply_single (SGD, Adam, AdamW,
    Adam8bit, ...). Between steps the optimizer's state keeps only 0-d entries (the step
    counter); the arrays are Handles of kind="optimizer". A step brings each parameter's
    arrays up pinned, runs the rule on them in place, unpins them, and prefetches the next
    parameter's meanwhile. Results are identical to the plain optimizer.

    >>> import tensora
    >>> from tensora.memory import budget
    >>> w = tensora.ones(1000, requires_grad=True)
    >>> with budget(host="8KiB") as mm:  # Adam's 8 kB of state cannot all stay in RAM
    ...     opt = StreamedOptimizer(tensora.optim.Adam([w], lr=0.1))
    ...     w.sum().backward()
    ...     opt.step()
    ...     round(float(w[0]), 4), opt.handles(w)["exp_avg"].kind
    (0.9, 'optimizer')
    """

    def __init__(self, optimizer: Optimizer, *, manager: MemoryManager | None = None) -> None:
        self.optimizer = optimizer
        self.manager = _manager(manager)
        self._handles: dict[int, dict[str, Handle]] = {}

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def handles(self, p: Tensor) -> dict[str, Handle]:
        """The manager handles of p's state arrays (empty before its first step)."""
        return self._handles.get(id(p), {})

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter with a .grad, as optimizer.step, streaming state per parameter."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        opt = self.optimizer
        work = [(p, group) for group in opt.param_groups for p in group["params"] if p.grad is not None]
        with no_grad():
            for i, (p, group) in enumerate(work):
                if i + 1 < len(work):
                    self.manager.prefetch(self.handles(work[i + 1][0]).values())
                state = opt.state.get(p)
                if state is None:
                    state = opt.init_single(p, group)
                    if state:
                        opt.state[p] = state
                with self._resident(p, state):
                    opt.apply_single(p, p.grad, state, group)
                p._bump_version()
        return loss

    @contextlib.contextmanager
    def _resident(self, p: Tensor, state: dict[str, Any]) -> Iterator[None]:
        """p's state arrays in `state` as Tensors over pinned handle memory; into the manager after."""
        handles = self._handles.setdefault(id(p), {})
        with contextlib.ExitStack() as stack:
            pinned = {name: stack.enter_context(h.pinned()) for name, h in handles.items()}
            state.update((name, Tensor(array)) for name, array in pinned.items())
            yield
        for name, h in handles.items():
            if state[name]._data is not pinned[name]:  # the rule replaced the array instead of writing into it
                h.update(state[name]._data)
        for name, value in list(state.items()):
            if name not in handles and isinstance(value, Tensor) and value.ndim > 0:  # first step: new state
                handles[name] = self.manager.own(value._data, name=f"optimizer.{name}", kind="optimizer")
            if name in handles:
                del state[name]

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state_dict with every array brought back (copied) from the manager."""
        sd = self.optimizer.state_dict()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        for index, p in enumerate(params):
            if id(p) in self._handles and index in sd["state"]:
                sd["state"][index] = dict(sd["state"][index], **{name: Tensor(h.get().copy())
                                                               for name, h in self._handles[id(p)].items()})
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load as the wrapped optimizer does; the arrays move into the manager at the next step."""
        for handles in self._handles.values():
            for h in handles.values():
                h.free()
        self._handles.clear()
        self.optimizer.load_state_dict(state_dict)


def checkpoint_policy(model: Module, every: int = 2, blocks: str | None = None) -> list[Module]:
    """Checkpoint every `every`-th block of `model`'s block list (its first ModuleList, or the one named `blocks`).

    A checkpointed block keeps only its input for backward and recomputes its activations
    there (tensora.utils.checkpoint): saved-activation memory falls by about (every - 1) /
    every of the blocks' share, for one more forward pass of those blocks. Gradients are
    identical. Returns the wrapped blocks; calling it again replaces the policy.

    >>> from tensora import nn
    >>> model = nn.Module()
    >>> model.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(4)])
    >>> len(checkpoint_policy(model, every=2))
    2
    """
    if every < 1:
        raise ValueError(f"checkpoint_policy: every must be >= 1, got {every}")
    layers = _block_list(model, blocks)
    wrapped = []
    for i, block in enumerate(layers):
        block.__dict__.pop("forward", None)  # undo an earlier policy
        if i % every == 0:
            block.__dict__["forward"] = functools.partial(_checkpointed_forward, type(block).forward.__get__(block))
            wrapped.append(block)
    return wrapped


def _checkpointed_forward(forward: Callable, *args: Any, **kwargs: Any) -> Any:
    return checkpoint(forward, *args, **kwargs)


def _block_list(model: Module, name: str | None) -> ModuleList:
    for child_name, child in model.named_modules():
        if isinstance(child, ModuleList) and (name is None or child_name == name):
            return child
    what = f"a ModuleList named {name!r}" if name else "a ModuleList of blocks"
    raise ValueError(f"checkpoint_policy: {type(model).__name__} has no {what}")
