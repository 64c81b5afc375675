"""Gradient bucketing for DistributedDataParallel: averaged gradients, all-reduced while backward runs.

Parameters are packed into buckets in reverse registration order (roughly the
order backward produces their gradients) of at most `bucket_cap_bytes`, one
dtype per bucket. A post-accumulate-grad hook copies each gradient into its
bucket's flat buffer as soon as autograd has written it; when a bucket is full
its nonblocking all-reduce (AVG) starts, so the transfer of late layers runs
while backward still computes early ones. Buckets start strictly in index order
on every rank: MPI matches nonblocking collectives by issue order, so a rank
that finished bucket 3 before bucket 2 must still issue 2 first.

MPI moves a nonblocking collective forward only inside MPI calls. So each hook
polls the pending transfers, and (when MPI allows calls from several threads)
a progress thread polls them while backward runs NumPy/BLAS kernels, which
release the GIL. One lock serialises every touch of the requests, since MPI
forbids testing one request from two threads at once.
When the last bucket has started, the hook waits for all of them and writes the
averages back into `.grad`, so `loss.backward()` returns with synchronised
gradients, as with torch's DDP.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ..tensor import Tensor
from .errors import DistributedError
from .reduce_op import ReduceOp
from .work import Work

_POLL_S = 2e-4  # the progress thread's pause between polls: frequent enough, and leaves the GIL to backward


@dataclass
class Bucket:
    indices: list[int]          # parameter indices, in the order their slices sit in `flat`
    offsets: list[int]
    flat: np.ndarray
    pending: int = 0
    work: Work | None = field(default=None, repr=False)


def assign_buckets(params: list[Tensor], cap_bytes: int) -> list[list[int]]:
    """Parameter indices grouped into buckets: reverse order, one dtype each, at most cap_bytes (or one param)."""
    buckets: list[list[int]] = []
    open_by_dtype: dict[Any, tuple[list[int], int]] = {}
    for i in reversed(range(len(params))):
        p = params[i]
        nbytes = p._data.nbytes
        current = open_by_dtype.get(p.dtype)
        if current is not None and current[1] + nbytes > cap_bytes:
            current = None
        if current is None:
            current = ([], 0)
            buckets.append(current[0])
        current[0].append(i)
        open_by_dtype[p.dtype] = (current[0], current[1] + nbytes)
    return buckets


class Reducer:
    """Owns the buckets and the per-iteration readiness state of one DistributedDataParallel."""

    def __init__(self, params: list[Tensor], names: list[str], cap_bytes: int, group: Any,
                 find_unused_parameters: bool) -> None:
        self.params, self.names, self.group = params, names, group
        self.find_unused = find_unused_parameters
        self.buckets: list[Bucket] = []
        self.where: list[tuple[int, int]] = [(0, 0)] * len(params)  # param -> (bucket, slot)
        for b, indices in enumerate(assign_buckets(params, cap_bytes)):
            sizes = [params[i]._data.size for i in indices]
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
            self.buckets.append(Bucket(indices, offsets, np.zeros(offsets[-1], dtype=params[indices[0]]._data.dtype)))
            for slot, i in enumerate(indices):
                self.where[i] = (b, slot)
        self.ready = np.zeros(len(params), dtype=bool)
        self.used = np.zeros(len(params), dtype=np.uint8)
        self.armed = False      # a forward that will sync ran; hooks are expected
        self.started = False    # at least one hook fired in this iteration
        self.next_bucket = 0
        self.handles = [p.register_post_accumulate_grad_hook(self._hook(i)) for i, p in enumerate(params)]
        self._lock = threading.Lock()
        self._pending = threading.Event()  # set while started buckets may still be in flight
        self._closed = False
        if group.size > 1 and getattr(group, "threads_ok", False):
            # the thread holds the reducer weakly, so a dropped DDP (and its thread) goes away
            weakref.finalize(self, self._pending.set)
            threading.Thread(target=_progress, args=(weakref.ref(self), self._pending, self._lock),
                             name="tensora-ddp-progress", daemon=True).start()

    def _hook(self, i: int):
        def hook(_param: Tensor) -> None:
            if self.armed:
                self.mark_ready(i, used=True)
        return hook

    # -- one iteration --------------------------------------------------------------------
    def prepare_forward(self) -> None:
        """Refuse to start a new iteration while the previous backward left buckets unreduced."""
        if self.armed and self.started:
            missing = [self.names[i] for i in np.flatnonzero(~self.ready)]
            raise DistributedError(
                "DistributedDataParallel: the previous backward did not produce gradients for all parameters, so "
                f"their all-reduce never finished. Parameters that got no gradient: {', '.join(missing)}. If they "
                "are unused in forward on purpose, pass find_unused_parameters=True; otherwise make sure the loss "
                "depends on every parameter's output")
        self.armed = False

    def prepare_backward(self, outputs: Any) -> None:
        """Arm the hooks for the backward that follows this forward; mark unreachable parameters as ready."""
        self.ready[:] = False
        self.used[:] = 0
        with self._lock:
            for bucket in self.buckets:
                bucket.pending = len(bucket.indices)
                bucket.work = None
            self.next_bucket = 0
            self._pending.clear()
        self.started = False
        self.armed = True
        if self.find_unused:
            reachable = _reachable_leaves(_tensors_in(outputs))
            for i, p in enumerate(self.params):
                if id(p) not in reachable:
                    self.mark_ready(i, used=False)

    def mark_ready(self, i: int, used: bool) -> None:
        if self.ready[i]:
            raise DistributedError(f"DistributedDataParallel: parameter {self.names[i]} got a gradient twice in one "
                                   "iteration (two backwards through one forward need no_sync() on all but the last)")
        self.ready[i] = True
        self.started = self.started or used
        b, slot = self.where[i]
        bucket = self.buckets[b]
        view = bucket.flat[bucket.offsets[slot]:bucket.offsets[slot + 1]]
        grad = self.params[i].grad
        if used and grad is not None:
            view[...] = grad._data.reshape(-1)
            self.used[i] = 1
        else:
            view[...] = 0
        bucket.pending -= 1
        with self._lock:
            while self.next_bucket < len(self.buckets) and self.buckets[self.next_bucket].pending == 0:
                nxt = self.buckets[self.next_bucket]
                nxt.work = self.group.all_reduce(nxt.flat, ReduceOp.AVG, async_op=True)
                self.next_bucket += 1
                self._pending.set()
            for bucket in self.buckets[:self.next_bucket]:
                bucket.work.is_completed()  # lets MPI progress the transfers already started
        if self.next_bucket == len(self.buckets):
            self._finalize()

    def _finalize(self) -> None:
        used_anywhere = self.used
        if self.find_unused:  # a parameter unused here may be used on another rank: it gets the average then
            used_anywhere = self.used.copy()
            self.group.all_reduce(used_anywhere, ReduceOp.MAX)
        with self._lock:
            for bucket in self.buckets:
                bucket.work.wait()
            self._pending.clear()
        for bucket in self.buckets:
            for slot, i in enumerate(bucket.indices):
                if not used_anywhere[i]:
                    continue
                p = self.params[i]
                avg = bucket.flat[bucket.offsets[slot]:bucket.offsets[slot + 1]].reshape(p._data.shape)
                if p.grad is None:
                    p.grad = Tensor(avg.copy(), device=p.device)
                else:
                    p.grad._data[...] = avg
                    p.grad._bump_version()
        self.armed = False

    def remove_hooks(self) -> None:
        """Detach from the parameters and stop the progress thread."""
        for h in self.handles:
            h.remove()
        self._closed = True
        self._pending.set()


def _progress(ref: Any, pending: threading.Event, lock: Any) -> None:
    """The progress thread: poll started buckets while any may be in flight; end with the reducer."""
    while pending.wait():
        reducer = ref()
        if reducer is None or reducer._closed:
            return
        with lock:
            for bucket in reducer.buckets[:reducer.next_bucket]:
                bucket.work.is_completed()
        del reducer
        time.sleep(_POLL_S)


def _tensors_in(obj: Any) -> Iterable[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors_in(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors_in(v)


def _reachable_leaves(outputs: Iterable[Tensor]) -> set[int]:
    """ids of the leaf tensors the recorded graph of `outputs` reaches (those that can get a gradient)."""
    leaves: set[int] = set()
    seen: set[int] = set()
    stack = []
    for t in outputs:
        if t.grad_fn is not None:
            stack.append(t.grad_fn)
        elif t.requires_grad:
            leaves.add(id(t))
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None:
            leaves.add(id(variable))
        for nxt, _ in node.next_edges:
            if nxt is not None:
                stack.append(nxt)
    return leaves
