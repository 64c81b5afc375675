"""Layer-by-layer execution: a model's weights live in a MemoryManager and come up one stage at a time.

A *stage* is a block the model calls as one unit: each element of a ModuleList (a decoder
layer), and every other module that holds weights itself (embedding, final norm,
lm_head). While stage i computes, its arrays are pinned in host RAM and a background
thread brings up the next `prefetch` stages of the recorded call order. Between uses a
weight's place in the model holds a zero-byte placeholder (a broadcast view of one zero),
so the manager's buffers are the only references to the bytes and eviction really frees
(or reuses) them.

The model is the manager's Schedule: a forward pass calls the stages in a cycle, and for a
cycle LRU evicts exactly the stage needed soonest. Knowing the order, the manager instead
evicts the array needed furthest ahead (Belady), and the prefetch thread evicts only
arrays needed later than the stage it brings in, so it never undoes its own work. What
stays resident across passes is then a fixed set that no pass reads again. A weight used
by several stages (an embedding tied to lm_head) is kept in host RAM when it fits beside
the stages streaming through: evicted between its uses it would be read twice per pass.

An embedding stage (a plain float Embedding) is not brought up at all: its forward runs on
the placeholder and its output is replaced by the rows the ids ask for, read alone from
the table's disk copy (MemoryManager.read_rows). Streaming the whole table for one row a
token cost a stage's read with next to no compute to hide it behind, right after lm_head,
which has little compute either: most of the waiting of a pass under a tight budget.

While a pass runs (and through all the passes of a generate() call, see `streaming`), the
interpreter's switch interval is lowered and BLAS leaves a core to the prefetch thread
(cpu_share.py); both are restored afterwards. A stage the prefetch thread has not reached
when it is called is read by the caller as one batch.

This works through Module forward pre/post hooks: the architectures are untouched, and the
fused quantized kernels run on the resident buffers exactly as on an in-RAM model.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..autograd.grad_mode import is_grad_enabled
from ..errors import TensoraError
from ..nn import Embedding, Module, ModuleList, Parameter
from ..tensor import Tensor
from ..quant import QuantizedTensor
from .cpu_share import CpuShare
from .errors import MemoryBudgetError
from .handle import Handle
from .manager import MemoryManager
from .mapped import MappedFiles
from .sizes import format_size


@dataclass
class Binding:
    """One array of the model: its handle and how to put an array (or the placeholder) in its place."""

    handle: Handle
    install: Callable[[np.ndarray], None]
    placeholder: np.ndarray

    def clear(self) -> None:
        self.install(self.placeholder)


@dataclass
class Stage:
    name: str
    module: Module
    bindings: list[Binding]

    @property
    def nbytes(self) -> int:
        return sum(b.handle.nbytes for b in self.bindings)


class TieredModel:
    """The weights of `model` owned by `manager`, streamed stage by stage (see the module docstring).

    Build it before the weights are assigned, call `own_module(name)` as each module gets its
    weights (so the whole model is never in RAM at once), then `start()`.
    """

    def __init__(self, model: Module, manager: MemoryManager, prefetch: int = 2) -> None:
        self.model = model
        self.manager = manager
        self.prefetch_depth = prefetch
        self.stages: list[Stage] = []
        self._bindings: dict[int, list[Binding]] = {}  # id(module) -> its own (not its children's) arrays
        self._by_owner: dict[tuple[int, str], Binding] = {}  # (id(Parameter or QuantizedTensor), part) -> binding
        self._keep: list[Any] = []  # the owners, so their ids stay unique
        self._next: list[int] = []
        self._stages_of: dict[int, list[int]] = {}  # handle id -> the stages that use it
        self._kept: set[int] = set()  # handle ids kept in host RAM (see _plan_kept)
        self._streamed: list[list[Handle]] = []  # stage -> its handles that are not kept
        self._sizable: list[bool] = []  # stage -> more than an eighth of the mean stage (see _window)
        self._lookups: set[int] = set()  # embedding stages: rows read on use, the table never brought up
        self._ahead: list[float] = []  # stage -> calls until it runs, counted from the current stage
        self._ahead_cache: dict[int, list[float]] = {}
        self._last_stage: int | None = None
        self._pass_first: int | None = None  # the stage the running pass started with
        self._cpu = CpuShare()  # switch interval and BLAS threads while a pass streams
        self._entered: float = 0.0
        self._hooks: list[Any] = []
        self._prefetcher: _Prefetcher | None = None

    # -- ownership --------------------------------------------------------------------------

    def own_module(self, name: str) -> None:
        """Hand the arrays that module `name` holds itself to the manager and leave placeholders in their place."""
        module = self.model.get_submodule(name) if name else self.model
        maps = MappedFiles()
        bindings = []
        for pname, p in module._parameters.items():
            if p is not None:
                bindings.append(self._bind(p, "_data", p._data, f"{name}.{pname}" if name else pname, _setter(p),
                                           maps))
        for attr, value in vars(module).items():
            if isinstance(value, QuantizedTensor):
                for part, arr in value._parts.items():
                    bindings.append(self._bind(value, part, arr, f"{name}.{attr}.{part}".lstrip("."),
                                               _part_setter(value._parts, part), maps, value))
        self._bindings[id(module)] = bindings

    def _bind(self, owner: Any, key: str, arr: np.ndarray, name: str, install: Callable[[np.ndarray], None],
              maps: MappedFiles, qt: QuantizedTensor | None = None) -> Binding:
        existing = self._by_owner.get((id(owner), key))
        if existing is not None:  # a tied weight: one handle, bound in two modules
            return existing
        full = arr.size * 4 if arr.dtype.kind == "f" else arr.nbytes  # float32 counts as full precision
        if qt is not None:
            full = qt.numel() * 4 * arr.nbytes // max(qt.nbytes, 1)
        where = maps.locate(arr)
        if where is not None:
            # nothing has read these pages, so none is resident: the file stays the only copy
            h = self.manager.own_file(where[0], where[1], arr.shape, arr.dtype, name=name, full_precision_bytes=full)
        else:
            h = self.manager.own(arr, name=name, kind="weight", full_precision_bytes=full, copy=True)
        binding = Binding(h, install, np.broadcast_to(np.zeros((), arr.dtype), arr.shape))
        binding.clear()
        self._by_owner[(id(owner), key)] = binding
        self._keep.append(owner)
        return binding

    # -- execution --------------------------------------------------------------------------

    def start(self) -> None:
        """Find the stages, check the budget can hold the largest one, install the hooks, start prefetching."""
        self.stages = []
        self._find_stages(self.model, "")
        staged = {id(b) for s in self.stages for b in s.bindings}
        stray = [b.handle.name for bs in self._bindings.values() for b in bs if id(b) not in staged]
        if stray:  # never brought up: forward would run on the zero placeholders and answer wrong
            raise TensoraError(f"{type(self.model).__name__}: weights held by the root module itself cannot be "
                               f"tiered ({', '.join(stray)}): only submodules are streamed stage by stage; move "
                               "them into a submodule or load the model without memory_budget")
        if not self.stages:
            return
        host = self.manager.budgets["host"]
        self._lookups = {i for i, s in enumerate(self.stages) if _looks_up_rows(s)}
        largest = max(self.stages, key=lambda s: s.nbytes)
        if largest.nbytes > host:
            raise MemoryBudgetError(f"stage {largest.name} needs {format_size(largest.nbytes)} in host RAM at once, more "
                                    f"than the {format_size(host)} budget")
        self._next = [(i + 1) % len(self.stages) for i in range(len(self.stages))]
        for i, stage in enumerate(self.stages):
            for b in stage.bindings:
                self._stages_of.setdefault(b.handle.id, []).append(i)
        self._kept = self._plan_kept(host)
        self._streamed = [[b.handle for b in s.bindings if b.handle.id not in self._kept and i not in self._lookups]
                          for i, s in enumerate(self.stages)]
        mean = sum(s.nbytes for s in self.stages) / len(self.stages)
        self._sizable = [s.nbytes * 8 > mean for s in self.stages]
        self._set_cursor(0)
        self.manager.schedule = self
        for i, stage in enumerate(self.stages):
            self._hooks.append(stage.module.register_forward_pre_hook(_weak_hook(self, "_enter", i)))
            self._hooks.append(stage.module.register_forward_hook(_weak_hook(self, "_exit", i), always_call=True))
            if i in self._lookups:
                self._hooks.append(stage.module.register_forward_hook(_rows_hook(self, stage.bindings[0].handle)))
        # A call of the whole model is one pass, however it ends: if a stage raises, the cycle never closes
        # and the lowered switch interval and BLAS threads would outlive the call (cpu_share.py).
        self._hooks.append(self.model.register_forward_hook(_weak_hook(self, "_end_pass", None), always_call=True))
        _trim_heap()
        if self.prefetch_depth > 0:
            self._prefetcher = _Prefetcher(self.manager)
            weakref.finalize(self, self._prefetcher.stop)

    def _plan_kept(self, host: int) -> set[int]:
        """Handles used by more than one stage that stay in host RAM: each one, largest first, if the kept
        ones plus a window of 1 + prefetch stages (the largest stage, repeated) still fit the budget."""
        shared = sorted((self._handle(hid) for hid, st in self._stages_of.items() if len(set(st)) > 1),
                        key=lambda h: -h.nbytes)
        kept: set[int] = set()
        kept_bytes = 0
        for h in shared:
            streamed = max(sum(b.handle.nbytes for b in s.bindings if b.handle.id not in kept | {h.id})
                           for s in self.stages)
            if kept_bytes + h.nbytes + (1 + self.prefetch_depth) * streamed <= host:
                kept.add(h.id)
                kept_bytes += h.nbytes
        return kept

    def _handle(self, hid: int) -> Handle:
        return next(b.handle for b in self.stages[self._stages_of[hid][0]].bindings if b.handle.id == hid)

    # -- the schedule -----------------------------------------------------------------------

    def next_use(self, handle: Handle) -> float:
        """Stage calls until `handle` is used (0: now, or kept resident); inf for arrays not of this model."""
        stages = self._stages_of.get(handle.id)
        if stages is None:
            return math.inf
        if handle.id in self._kept:
            return 0.0
        ahead = self._ahead  # replaced whole by the compute thread, read here under the manager's lock
        if len(stages) == 1:
            return ahead[stages[0]]
        return min(ahead[s] for s in stages)

    def _set_cursor(self, i: int) -> None:
        ahead = self._ahead_cache.get(i)
        if ahead is None:
            ahead = [math.inf] * len(self.stages)
            j = i
            for step in range(len(self.stages)):
                if ahead[j] != math.inf:
                    break  # the recorded order closes a shorter cycle: stages outside it are not coming
                ahead[j] = float(step)
                j = self._next[j]
            self._ahead_cache[i] = ahead
        self._ahead = ahead

    def _window(self, i: int) -> list[list[Handle]]:
        """The handles to bring up for stage i and the stages after it, one list per stage, until `prefetch`
        more stages that this pass reads (so not those still resident from an earlier pass: they need no
        time to bring up) and that are more than an eighth of the mean stage (a final norm gives no time).
        Read without the manager's lock: a stale answer only shifts where the window ends."""
        prefetched = self.manager._prefetched
        groups, j, counted = [], i, -1
        for _ in range(len(self.stages)):
            group = self._streamed[j]
            missing = [h for h in group if h.tier != "host"]
            if missing:
                groups.append(missing)
            if self._sizable[j] and (missing or any(h.id in prefetched for h in group)):
                counted += 1
            j = self._next[j]
            if counted >= self.prefetch_depth or j == i:
                break
        return groups

    def _find_stages(self, module: Module, prefix: str) -> None:
        for cname, child in module._modules.items():
            if child is None:
                continue
            name = f"{prefix}.{cname}" if prefix else cname
            if isinstance(module, ModuleList) or self._bindings.get(id(child)):
                bindings = {id(b): b for m in child.modules() for b in self._bindings.get(id(m), ())}
                if bindings:
                    self.stages.append(Stage(name, child, list(bindings.values())))
            else:
                self._find_stages(child, name)

    def _enter(self, i: int) -> None:
        if self._last_stage is not None and self._next[self._last_stage] != i:
            self._next[self._last_stage] = i  # learn the call order: prefetch follows what really runs next
            self._ahead_cache.clear()
        self._set_cursor(i)
        if self._pass_first is None and self._prefetcher is not None:
            self._pass_first = i
            self._cpu.begin()
        if i not in self._lookups:
            bindings = self.stages[i].bindings
            arrays = self.manager._acquire_all([b.handle for b in bindings], pin=True)
            with self.manager._lock:  # pinned: installing cannot race another thread's _exit of this stage
                for b, array in zip(bindings, arrays):
                    b.install(array)
        self._entered = time.perf_counter()

    def _exit(self, i: int) -> None:
        self.manager.tracker.compute_s += time.perf_counter() - self._entered
        with self.manager._lock:  # the check, the placeholder and the unpin at once: another thread may be
            for b in () if i in self._lookups else self.stages[i].bindings:  # entering this stage
                if b.handle.pinned_count == 1:
                    b.clear()
                self.manager._unpin(b.handle)
        self._last_stage = i
        if self._next[i] == self._pass_first:
            self._end_pass()
        # Stage i is done until the next pass: from here on the next stage is the nearest, and the
        # prefetch thread may put the stages after it where stage i was.
        self._set_cursor(self._next[i])
        if self._prefetcher is not None:
            window = self._window(self._next[i])
            if window:
                self._prefetcher.request(window)

    def _end_pass(self) -> None:
        if self._pass_first is not None:
            self._pass_first = None
            self._cpu.end()

    @contextlib.contextmanager
    def streaming(self) -> Iterator[None]:
        """Keep the CPU shared with the prefetch thread (cpu_share.py) across the passes run inside, not
        pass by pass: between two passes of generate() the prefetch thread brings up the next pass's
        first stages while the caller samples in Python, and with the default 5 ms switch interval it
        waited that long for the GIL there (stages 1-3 of a pass were the ones waited for most)."""
        if self._prefetcher is None:
            yield
            return
        self._cpu.begin()
        try:
            yield
        finally:
            self._cpu.end()

    def close(self) -> None:
        self._end_pass()
        for hook in self._hooks:
            hook.remove()
        if self._prefetcher is not None:
            self._prefetcher.stop()
        if self.manager.schedule is self:
            self.manager.schedule = None


def _trim_heap() -> None:
    """Give the heap's free pages back to the OS (glibc malloc_trim; elsewhere nothing).

    Quantize-on-load allocates every packed weight once and frees it after spilling; those
    chunks stay resident in fragmented heaps unless trimmed, and the budget is about RSS."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _setter(p: Parameter) -> Callable[[np.ndarray], None]:
    def install(arr: np.ndarray) -> None:
        p._data = arr
    return install


def _part_setter(parts: dict[str, np.ndarray], key: str) -> Callable[[np.ndarray], None]:
    def install(arr: np.ndarray) -> None:
        parts[key] = arr
    return install


def _weak_hook(tiered: TieredModel, method: str, i: int | None) -> Callable[..., None]:
    """A hook that does not keep `tiered` alive (the model holds the hooks, `tiered` holds the model)."""
    ref = weakref.ref(tiered)

    def hook(module: Module, args: Any, *output: Any) -> None:
        t = ref()
        if t is not None:
            if method == "_enter":
                _refuse_recording(module, args)
            getattr(t, method)(*(() if i is None else (i,)))
    return hook


def _looks_up_rows(stage: Stage) -> bool:
    """Whether the stage is an embedding whose output is weight[ids], nothing else: a float table (one
    binding, its Parameter), no max_norm (which would rescale rows in place), forward not overridden."""
    m = stage.module
    return (isinstance(m, Embedding) and type(m).forward is Embedding.forward and m.max_norm is None
            and isinstance(m.weight, Parameter) and len(stage.bindings) == 1 and m.weight.ndim == 2)


def _rows_hook(tiered: TieredModel, handle: Handle) -> Callable[..., Any]:
    """A forward hook of an embedding stage: its output (computed on the placeholder: zeros) replaced by the
    rows the ids ask for (MemoryManager.read_rows). Does not keep `tiered` alive."""
    ref = weakref.ref(tiered)

    def hook(module: Module, args: Any, output: Any) -> Any:
        t = ref()
        if t is None:
            return None
        ids = args[0].numpy() if isinstance(args[0], Tensor) else np.asarray(args[0])
        rows = t.manager.read_rows(handle, ids)
        return Tensor(rows.reshape(ids.shape + rows.shape[1:]))
    return hook


def _refuse_recording(module: Module, args: Any) -> None:
    """Tiered stages are inference-only: their weights leave host RAM when the stage exits, so a
    backward pass would find them gone. Say so before anything is recorded."""
    if not is_grad_enabled():
        return
    if any(isinstance(a, Tensor) and a.requires_grad for a in args) or any(
            p.requires_grad for p in module.parameters()):
        raise TensoraError(f"{type(module).__name__}: a model loaded with memory_budget= runs inference only "
                           "(use tensora.no_grad()); to train under a budget, train adapters on an untiered "
                           "quantized model with tensora.memory.offload_activations / StreamedOptimizer")


class _Prefetcher:
    """A daemon thread bringing up the stages of the latest request, one batch per stage, in order.

    Only the newest request matters (the older ones are for stages that have run); it is
    looked at between stages, so a new request preempts the rest of an old one."""

    def __init__(self, manager: MemoryManager) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(manager, self._queue), daemon=True,
                                        name="tensora-prefetch")
        self._thread.start()

    def request(self, groups: list[list[Handle]]) -> None:
        self._queue.put(groups)

    def stop(self) -> None:
        self._queue.put(None)

    @staticmethod
    def _run(manager: MemoryManager, q: queue.Queue) -> None:
        item = q.get()
        while item is not None:
            prefetch_window(manager, item, newer=lambda: not q.empty())
            item = q.get()
            while item is not None and not q.empty():
                item = q.get()


def prefetch_window(manager: MemoryManager, groups: list[list[Handle]],
                    newer: Callable[[], bool] | None = None) -> None:
    """Bring up `groups` (stages) in order, one batch each, until one does not fit or `newer()` says a newer
    window is waiting. Errors are left for the caller, who meets them in its own thread on use."""
    for group in groups:
        if newer is not None and newer():
            return
        try:
            if manager.prefetch(group) < len(group):
                return  # no room without evicting what is needed sooner: later stages have none either
        except Exception:  # any kind: an exception would end the thread, and every later prefetch with it
            return


def tier_model(model: Module, memory_budget: int | str, disk_dir: str | None = None, prefetch: int = 2) -> TieredModel:
    """A TieredModel of `model` under a fresh MemoryManager with host budget `memory_budget` (see tensora.models.load)."""
    tiered = TieredModel(model, MemoryManager(memory_budget, disk_dir=disk_dir), prefetch=prefetch)
    model.memory = tiered
    return tiered
