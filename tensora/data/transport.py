"""Batches from a worker process to the main process through reused shared-memory blocks.

A worker writes every array of a batch into one shared-memory block and sends only
a small description through its pipe: the block's number and size, and a spec
that mirrors the batch (per array its dtype, shape and offset in the block; the
containers around them; small Python values as they are). The main process wraps
each array as a view of its mapping of the block: nothing is pickled, nothing is
copied on arrival.

Blocks are reused. The first time the main process sees a block it maps it and
unlinks its name (both processes now hold a mapping, /dev/shm no name). Each
batch's arrays view the block through a `_Lease`; when the last of them dies the
lease hands the block number back, and the next task sent to that worker carries
it, so the worker writes a later batch into memory both sides have mapped already.
Fresh shared pages cost a page fault and zeroing each on both sides, and freeing
them costs again: reuse takes that off every batch but the first few. A worker
keeps at most `keep` spare blocks and reports the ones it drops, so the main
process unmaps them too.

    worker                                 main process
    BatchWriter.write(batch) -> reply ---> BatchReader.read(worker, reply) -> batch
    BatchWriter.give_back(numbers)  <----- BatchReader.returned(worker)  (with the next task)
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from ..creation import from_numpy
from ..tensor import Tensor
from . import shm

ALIGN = 64  # every array starts on a cache-line boundary, so any dtype view is aligned


def block_name(prefix: str, worker: int, number: int) -> str:
    return f"{prefix}{worker:x}b{number:x}"


# -- a batch <-> (spec, arrays) ------------------------------------------------------
# Leaves: ("array", offset, dtype, shape) for arrays in the block, ("tensor", offset, dtype,
# shape, requires_grad), ("object", value) for anything else (pickled with the message).
# Containers: ("list", cls, items), ("tuple", cls, items), ("namedtuple", cls, items),
# ("dict", cls, keys, items): subclasses (tensora.Size, a list subclass) come back as such.


def describe(obj: Any, arrays: list, offset: int = 0) -> tuple[tuple, int]:
    """The spec of `obj`, appending (offset, array) for each array; returns (spec, bytes used)."""
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        return ("object", obj), offset  # pointers: meaningless in another process, so pickled with the message
    if isinstance(obj, (Tensor, np.ndarray)):
        kind = "tensor" if isinstance(obj, Tensor) else "array"
        arr = np.asarray(obj)  # a CPU tensor's own array, no copy
        arrays.append((offset, arr))
        spec = (kind, offset, arr.dtype, arr.shape) + ((obj.requires_grad,) if kind == "tensor" else ())
        return spec, offset + -(-arr.nbytes // ALIGN) * ALIGN
    if isinstance(obj, (dict, list, tuple)):
        items = []
        for value in obj.values() if isinstance(obj, dict) else obj:
            spec, offset = describe(value, arrays, offset)
            items.append(spec)
        if isinstance(obj, dict):
            return ("dict", type(obj), list(obj.keys()), items), offset
        if isinstance(obj, list):
            return ("list", type(obj), items), offset
        if hasattr(obj, "_fields"):
            return ("namedtuple", type(obj), items), offset
        return ("tuple", type(obj), items), offset
    return ("object", obj), offset


def rebuild(spec: tuple, flat: np.ndarray | None) -> Any:
    """The batch `spec` describes, its arrays viewing `flat` (the block as uint8)."""
    kind = spec[0]
    if kind in ("tensor", "array"):
        offset, dtype, shape = spec[1:4]
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        arr = flat[offset:offset + size].view(dtype).reshape(shape) if size else np.empty(shape, dtype)
        return from_numpy(arr).requires_grad_(spec[4]) if kind == "tensor" else arr
    if kind == "object":
        return spec[1]
    if kind == "dict":
        _, cls, keys, items = spec
        values = dict(zip(keys, (rebuild(s, flat) for s in items)))
        if cls is dict:
            return values
        try:
            return cls(values)
        except TypeError:  # e.g. defaultdict: its first argument is a factory
            return values
    items = [rebuild(s, flat) for s in spec[-1]]
    cls = spec[1]
    if kind == "namedtuple":
        return cls(*items)
    if cls in (list, tuple):
        return items if cls is list else tuple(items)
    return cls(items)  # a subclass built from its items, as list and tuple are


# -- worker side -------------------------------------------------------------------


class BatchWriter:
    """A worker's blocks: new ones when needed, spare ones reused."""

    def __init__(self, prefix: str, worker: int, keep: int) -> None:
        self.prefix, self.worker, self.keep = prefix, worker, keep
        self.blocks: dict[int, np.ndarray] = {}  # number -> the block as uint8 (this process's mapping)
        self.spare: list[int] = []
        self.dropped: list[int] = []  # to report with the next reply
        self.unsent: set[int] = set()  # created and not yet sent: the name is still in /dev/shm
        self.next_number = 0

    def give_back(self, numbers: list[int]) -> None:
        """Blocks the main process no longer views; beyond `keep` spares the smallest are dropped."""
        self.spare.extend(numbers)
        if len(self.spare) > self.keep:
            self.spare.sort(key=lambda n: self.blocks[n].size, reverse=True)
            for n in self.spare[self.keep:]:
                del self.blocks[n]
                if n in self.unsent:  # never sent, so never mapped over there: unlink here instead
                    self.unsent.discard(n)
                    shm.release(block_name(self.prefix, self.worker, n))
                else:
                    self.dropped.append(n)
            del self.spare[self.keep:]

    def write(self, batch: Any) -> tuple[int | None, int, tuple]:
        """Copy the batch's arrays into a block; returns (block number or None, block size, spec)."""
        arrays: list = []
        spec, nbytes = describe(batch, arrays)
        if not any(arr.nbytes for _, arr in arrays):
            return None, 0, spec
        number = self._acquire(nbytes)
        flat = self.blocks[number]
        try:
            for offset, arr in arrays:
                if arr.nbytes:
                    np.copyto(flat[offset:offset + arr.nbytes].view(arr.dtype).reshape(arr.shape), arr,
                              casting="no")
        except BaseException:
            if number in self.unsent:  # the main process never saw it: no one else would unlink its name
                self.unsent.discard(number)
                del self.blocks[number]
                shm.release(block_name(self.prefix, self.worker, number))
            else:
                self.spare.append(number)
            raise
        return number, flat.size, spec

    def sent(self, number: int | None) -> None:
        """The reply naming block `number` reached the pipe: from now on the main process unlinks its name."""
        self.unsent.discard(number)

    def release_unsent(self) -> None:
        """Unlink the names of blocks made and never sent (the worker is leaving: nobody else knows them)."""
        for number in sorted(self.unsent):
            shm.release(block_name(self.prefix, self.worker, number))
        self.unsent.clear()

    def take_dropped(self) -> list[int]:
        out, self.dropped = self.dropped, []
        return out

    def _acquire(self, nbytes: int) -> int:
        fits = [n for n in self.spare if self.blocks[n].size >= nbytes]
        if fits:
            number = min(fits, key=lambda n: self.blocks[n].size)
            self.spare.remove(number)
            return number
        number = self.next_number
        self.next_number += 1
        self.blocks[number] = np.asarray(shm.create(block_name(self.prefix, self.worker, number), nbytes))
        self.unsent.add(number)
        return number


# -- main process side -------------------------------------------------------------


class _Lease:
    """One batch's hold on a block: the NumPy base of its arrays; hands the block back when it dies."""

    __slots__ = ("__array_interface__", "_block", "_number", "_returns")

    def __init__(self, block: shm.Mapping, number: int, returns: deque) -> None:
        self._block, self._number, self._returns = block, number, returns
        self.__array_interface__ = block.__array_interface__

    def __del__(self) -> None:
        self._returns.append(self._number)  # deque.append: safe from a finalizer at any point


class BatchReader:
    """The main process's mappings of every worker's blocks, and the blocks to hand back."""

    def __init__(self, prefix: str, num_workers: int) -> None:
        self.prefix = prefix
        self.blocks: list[dict[int, shm.Mapping]] = [{} for _ in range(num_workers)]
        self.seen: list[set[int]] = [set() for _ in range(num_workers)]
        self.returns: list[deque] = [deque() for _ in range(num_workers)]

    def read(self, worker: int, number: int | None, size: int, spec: tuple) -> Any:
        """The batch a worker wrote (see BatchWriter.write), viewing the block in place."""
        blocks = self.blocks[worker]
        if number is None:
            return rebuild(spec, None)
        block = blocks.get(number)
        if block is None:
            block = blocks[number] = shm.take(block_name(self.prefix, worker, number), size)
            self.seen[worker].add(number)
        return rebuild(spec, np.asarray(_Lease(block, number, self.returns[worker])))

    def drop(self, worker: int, dropped: list[int]) -> None:
        """Unmap the blocks a worker let go of (BatchWriter.take_dropped)."""
        for n in dropped:
            del self.blocks[worker][n]

    def returned(self, worker: int) -> list[int]:
        """Blocks of `worker` whose batches have died since the last call."""
        q = self.returns[worker]
        return [q.popleft() for _ in range(len(q))]

    def close(self) -> None:
        """Forget every block; the ones batches still view stay mapped until those batches die."""
        for blocks in self.blocks:
            blocks.clear()

    def unseen_names(self, worker: int, in_flight: int) -> list[str]:
        """Names the worker may have created that never arrived (each task makes at most one block)."""
        seen = self.seen[worker]
        top = max(seen, default=-1) + in_flight
        return [block_name(self.prefix, worker, n) for n in range(top + 1) if n not in seen]
