"""Handle: one array owned by a MemoryManager, wherever its bytes are right now."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .disk import DiskLocation
    from .manager import MemoryManager

KINDS = ("weight", "activation", "optimizer")
_ids = itertools.count()


class Handle:
    """An owned array: `get()` brings it to host RAM, `pinned()` keeps it there, `update()`, `free()`.

    Weights (kind="weight") are read-only: `get()` returns a read-only array, and a weight
    keeps its copy on disk (its checkpoint file, or the spill file written when it was
    first evicted) so evicting it again costs nothing. Other kinds are writable and have
    their bytes in exactly one tier: bringing one up from disk deletes its spill file.
    """

    __slots__ = ("_mm", "id", "name", "kind", "evictable", "full_precision_bytes", "shape", "dtype", "nbytes",
                 "tier", "_array", "_buffer", "_backing", "_pins", "_loading", "_freed", "__weakref__")

    def __init__(self, mm: MemoryManager, name: str, kind: str, evictable: bool, shape: tuple[int, ...],
                 dtype: np.dtype, full_precision_bytes: int | None) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self._mm = mm
        self.id = next(_ids)
        self.name = name
        self.kind = kind
        self.evictable = evictable
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.full_precision_bytes = self.nbytes if full_precision_bytes is None else int(full_precision_bytes)
        self.tier = "host"
        self._array: np.ndarray | None = None  # the host copy, while tier == "host"
        self._buffer: np.ndarray | None = None  # the manager's uint8 buffer behind _array (None if adopted)
        self._backing: DiskLocation | None = None  # a clean copy on disk (weights) or the spilled bytes
        self._pins = 0
        self._loading = False
        self._freed = False

    def get(self) -> np.ndarray:
        """The array in host RAM, brought up from disk if needed (may evict other LRU handles); marks use.

        Do not keep the result past the next manager call unless pinned: once evicted, its
        buffer may be reused for other bytes only if nothing else refers to it, so holding
        it keeps the memory alive outside the budget's accounting.
        """
        return self._mm._acquire(self, pin=False)

    @contextlib.contextmanager
    def pinned(self) -> Iterator[np.ndarray]:
        """Like get(), and the handle cannot be evicted until the block exits."""
        array = self._mm._acquire(self, pin=True)
        try:
            yield array
        finally:
            self._mm._unpin(self)

    def update(self, array: Any) -> None:
        """Replace the bytes (shape, dtype and size may change); the budget is checked again."""
        self._mm._update(self, array)

    def free(self) -> None:
        """Release the bytes in every tier; the handle cannot be used afterwards."""
        self._mm._free(self)

    def evict(self) -> bool:
        """Move the bytes down to disk now, not only under budget pressure (e.g. activations saved
        for a backward pass that is far away). False if it cannot move now: pinned, not evictable,
        being loaded, or not in host RAM."""
        return self._mm._evict_now(self)

    @property
    def freed(self) -> bool:
        return self._freed

    @property
    def pinned_count(self) -> int:
        return self._pins

    def __repr__(self) -> str:
        return (f"Handle({self.name!r}, kind={self.kind}, tier={self.tier}, shape={list(self.shape)}, "
                f"dtype={self.dtype}, nbytes={self.nbytes})")
