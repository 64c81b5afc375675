"""MemoryManager: arrays in a host tier and a disk tier under hard budgets, LRU eviction, promotion on use.

Host budget = bytes of host-resident arrays + the manager's free reusable buffers. Placing
or bringing up an array that would exceed it first drops free buffers, then evicts
evictable, unpinned handles to disk (writing them to the spill directory unless a clean
copy is already there): the least recently used ones, or, when a `Schedule` knows when
each handle is needed next (layered.py: a model runs its stages in a cycle, for which LRU
is the worst policy), the one needed furthest in the future (Belady's rule), and a
prefetch never evicts a handle needed no later than the one it brings in (Cao et al.'s
"do no harm" rule for integrated prefetching and caching, SIGMETRICS 1995), nor anything
at all if that would not make enough room. Bringing an array up from disk reads it
into a reusable buffer of the same size when one is free, so steady streaming allocates
nothing. Disk budget = bytes in spill files. Every check happens before bytes move, so a
budget that cannot be met raises MemoryBudgetError with nothing lost.

Thread safety: one lock guards the bookkeeping; disk reads run outside it (os.preadv
releases the GIL), so a prefetch thread reads layer i+1 while the caller computes layer i.
A handle being read is "loading": it is neither evictable nor usable until the read ends,
and a caller that needs it waits (that time is the tracker's wait_s).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import sys
import threading
import time
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import DeviceError
from .disk import DiskLocation, FileReader, check_free_space, new_spill_dir, release, write_file
from .errors import MemoryBudgetError
from .handle import Handle
from .sizes import format_size, parse_size
from .tracker import Tracker

_state = threading.local()
_last_summary: list[Any] = []  # budgets and tracker of the most recent manager, kept for report()


class Schedule(Protocol):
    """Knows when handles are needed next; a manager with one evicts by it instead of by LRU."""

    def next_use(self, handle: Handle) -> float:
        """How far ahead (in any monotone unit: steps, seconds) `handle` is needed next; math.inf if never
        known. Called with the manager's lock held, from any thread: it must be quick and must not block."""
        ...


class MemoryManager:
    """Owns arrays under a host budget (bytes) and a disk budget (bytes of spill files).

    Use through `budget(...)` or `tensora.models.load(..., memory_budget=...)`. A device
    tier (CUDA memory) needs CuPy and a GPU; without one, asking for a device budget
    raises DeviceError, and the tier chain is host -> disk.
    """

    def __init__(self, host: int | str, *, device: int | str | None = None, disk_dir: str | None = None,
                 disk: int | str = "50GiB") -> None:
        if device is not None:
            from ..backend.cuda import CUDABackend

            ok, reason = CUDABackend().availability()
            raise DeviceError(f"a device tier needs a CUDA device ({reason})" if not ok else
                              "a device tier is not available in this version: tensora's tiering runs models on "
                              "the CPU; pass device=None")
        self.budgets = {"host": parse_size(host), "disk": parse_size(disk)}
        self.disk_dir = disk_dir
        self.tracker = Tracker()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._host_lru: OrderedDict[int, Handle] = OrderedDict()  # evictable, unpinned, resident
        self._pool: dict[int, list[np.ndarray]] = defaultdict(list)  # nbytes -> free uint8 buffers
        self._pooled = 0
        self._live = 0  # bytes of host-resident (or loading) arrays
        self._fixed = 0  # bytes of non-evictable handles, always resident
        self._loading = 0
        self._handles: dict[int, Handle] = {}
        self._reader = FileReader()
        self._spill: list = []  # [directory, its lock's descriptor] once something is spilled
        # Also when the manager is collected unclosed: descriptors closed, spill directory removed
        self._finalizer = weakref.finalize(self, release, self._reader, self._spill)
        self.schedule: Schedule | None = None  # None: evict the least recently used
        self._prefetched: set[int] = set()  # brought up by prefetch, not used since
        _last_summary[:] = [self.budgets, self.tracker]

    # -- public API -------------------------------------------------------------------------

    def own(self, array: Any, name: str = "", kind: str = "activation", evictable: bool = True,
            full_precision_bytes: int | None = None, copy: bool = False) -> Handle:
        """Take `array` (no copy if C-contiguous) into the host tier, or to disk if the host is all pinned.

        The caller should drop its own references, or the memory stays alive after an
        eviction. copy=True copies the bytes into one of the manager's reusable buffers
        instead (a loader handing over short-lived arrays: their memory goes back to the
        allocator now, not after a later eviction). Raises MemoryBudgetError if it can never fit.
        """
        arr = _contiguous(array)
        h = Handle(self, name, kind, evictable, arr.shape, arr.dtype, full_precision_bytes)
        with self._lock:
            self._check_fits(h)
            self._place(h, arr, copy)
            self._handles[h.id] = h
            self.tracker.own(h.full_precision_bytes)
        return h

    def own_file(self, path: str, offset: int, shape: tuple[int, ...], dtype: Any, name: str = "",
                 full_precision_bytes: int | None = None) -> Handle:
        """A read-only weight whose bytes stay in (a region of) an existing file until used: no copy.
        The file is opened now and read through that descriptor: one saved under its name later is
        another file, and not read. DiskTierError if it cannot be opened."""
        h = Handle(self, name, "weight", True, shape, dtype, full_precision_bytes)
        with self._lock:
            self._check_fits(h)
            h.tier = "disk"
            self._reader.pin(str(path))
            h._backing = DiskLocation(str(path), int(offset), h.nbytes, spilled=False)
            self.tracker.add("disk", h.nbytes)
            self._handles[h.id] = h
            self.tracker.own(h.full_precision_bytes)
        return h

    def prefetch(self, handles: Iterable[Handle]) -> int:
        """Bring `handles` up without evicting any of them nor anything pinned; stops when room runs out.

        With a schedule, only handles needed later than the one coming in may go (do no harm).
        The handles that get room are read as one batch (one system call per run of adjacent
        file regions), so a caller waiting for one of them waits for the batch: pass a
        stage's worth. Returns how many are resident or in flight afterwards. Meant for a
        background thread."""
        handles = list(handles)
        protect = {h.id for h in handles}
        done = 0
        claimed = []
        _state.prefetching = True
        try:
            with self._lock:
                try:
                    for h in handles:
                        got = self._claim(h, pin=False, background=True, protect=protect)
                        if got is False:
                            break
                        if got is not True:
                            claimed.append((h, got))
                        done += 1
                except BaseException:
                    self._unclaim(claimed)  # else they would stay "loading" and their users wait forever
                    raise
            if claimed:
                self._load(claimed, pin=False, background=True)
        finally:
            _state.prefetching = False
        return done

    def read_rows(self, h: Handle, rows: np.ndarray) -> np.ndarray:
        """A new array of h's rows `rows` (indices along its first axis), without bringing h up: indexed in
        host RAM if it is resident, else only those rows read from its disk copy (an embedding lookup needs a
        few rows of a table that would otherwise stream through whole). The read is the caller's own: all
        of it counts as waiting."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        with self._lock:  # held through the read: h's disk copy (a spill file) cannot go meanwhile
            self._check_alive(h)
            while h._loading:
                self._wait_for_change()
            if h.tier == "host":
                return h._array[rows]
            out = np.empty((len(rows),) + h.shape[1:], h.dtype)
            if not len(rows):
                return out
            if rows.min() < -h.shape[0] or rows.max() >= h.shape[0]:
                raise IndexError(f"row index out of range for {h.name or 'an array'} with {h.shape[0]} rows")
            if not out.size:
                return out
            loc, size = h._backing, out.nbytes // len(rows)
            # one array per row, viewing `out`: out[k] of a 1-D array would be a scalar, read into nothing
            views = out.reshape(len(rows), -1)
            t0 = time.perf_counter()
            self._reader.read_many([(DiskLocation(loc.path, loc.offset + int(r % h.shape[0]) * size, size,
                                                  loc.spilled), views[k]) for k, r in enumerate(rows)])
            self.tracker.move("disk", "host", out.nbytes, time.perf_counter() - t0)
            return out

    @property
    def handles(self) -> list[Handle]:
        with self._lock:
            return list(self._handles.values())

    @property
    def spill_dir(self) -> Path | None:
        """The spill directory, once something has been spilled."""
        return self._spill[0] if self._spill else None

    def host_bytes_held(self) -> int:
        """Bytes really held in host RAM by this manager: resident arrays and free buffers, counted afresh."""
        with self._lock:
            resident = sum(h.nbytes for h in self._handles.values() if h.tier == "host" or h._loading)
            return resident + sum(b.nbytes for bufs in self._pool.values() for b in bufs)

    def spill_bytes_held(self) -> int:
        """Bytes in spill files, from the file system."""
        with self._lock:
            if not self._spill:
                return 0
            return sum(p.stat().st_size for p in self._spill[0].iterdir())

    def close(self) -> None:
        """Free every handle and remove the spill directory."""
        for h in self.handles:
            if not h._freed:
                h._pins = 0
                self._free(h)
        with self._lock:
            while self._pooled:
                self._drop_pool_buffer()
        self._finalizer()

    # -- placement --------------------------------------------------------------------------

    def _check_fits(self, h: Handle) -> None:
        host = self.budgets["host"]
        room = host - self._fixed
        if h.nbytes > room:
            what = "whole host budget" if room == host else "host budget left by non-evictable handles"
            raise MemoryBudgetError(f"{h.name or 'array'} needs {format_size(h.nbytes)} in host RAM to be used, more "
                                    f"than the {what} ({format_size(room)} of {format_size(host)})")

    def _place(self, h: Handle, arr: np.ndarray, copy: bool = False) -> None:
        """Put a new array in host (evicting LRU others) or, if evictable and the host is full of pins, on disk."""
        n = h.nbytes
        buf = self._take_buffer(n, protect=()) if copy else None
        if buf is not None:
            held = buf[:n].view(h.dtype).reshape(h.shape)
            held[...] = arr
            self._set_resident(h, held, buf)
            if not h.evictable:
                self._fixed += n
            return
        if not copy and self._make_room(n, protect=()):
            self._live += n
            self.tracker.add("host", n)
            self._set_resident(h, arr, None)
            if not h.evictable:
                self._fixed += n
            return
        if not h.evictable:
            raise MemoryBudgetError(f"{h.name or 'array'} ({format_size(n)}) is not evictable and the host tier is "
                                    f"full of pinned or non-evictable arrays ({format_size(self._live)} of "
                                    f"{format_size(self.budgets['host'])})")
        h._array = arr
        h._backing = self._write_spill(h)
        h._array = None
        h.tier = "disk"
        self.tracker.add("disk", n)

    def _set_resident(self, h: Handle, arr: np.ndarray, buffer: np.ndarray | None) -> None:
        if h.kind == "weight":
            arr = arr.view()
            arr.flags.writeable = False
        h._array, h._buffer, h.tier = arr, buffer, "host"
        if h.evictable and h._pins == 0:
            self._host_lru[h.id] = h
            self._host_lru.move_to_end(h.id)

    def _make_room(self, n: int, protect: Iterable[int]) -> bool:
        """Drop free buffers and evict handles (see _victim) until `n` more bytes fit; False if they cannot."""
        protect = set(protect)
        while self._live + self._pooled + n > self.budgets["host"]:
            if self._pooled:
                self._drop_pool_buffer()
                continue
            victim = self._victim(protect, n)
            if victim is None:
                return False
            self._evict(victim)
        return True

    def _drop_pool_buffer(self) -> None:
        size = max(s for s, bufs in self._pool.items() if bufs)
        self._pool[size].pop()
        self._pooled -= size
        self.tracker.add("host", -size)

    def _take_buffer(self, n: int, protect: Iterable[int], before: float | None = None) -> np.ndarray | None:
        """A uint8 buffer of n bytes counted as live: a free one of that size, or a new one if room can be made.

        before: evict only handles the schedule needs later than this (None: any unpinned one), and
        none at all if they cannot make room (a prefetch gives up rather than evict in vain)."""
        protect = set(protect)
        if before is not None and self._pool.get(n) is None and not self._could_fit(n, protect, before):
            return None
        while True:
            free = self._pool.get(n)
            if free:
                self._pooled -= n
                self._live += n
                return free.pop()
            if self._live + self._pooled + n <= self.budgets["host"]:
                self._live += n
                self.tracker.add("host", n)
                return _new_buffer(n)
            if self._pooled:
                self._drop_pool_buffer()
                continue
            victim = self._victim(protect, n, before)
            if victim is None:
                return None
            self._evict(victim)  # its buffer may be exactly n bytes: the loop takes it from the pool

    def _could_fit(self, n: int, protect: set[int], before: float) -> bool:
        """Whether n bytes fit once free buffers are dropped and every handle needed later than `before` goes."""
        room = self.budgets["host"] - self._live
        if room >= n:
            return True
        for hid, h in self._host_lru.items():
            if hid not in protect and self.schedule.next_use(h) > before:
                room += h.nbytes
                if room >= n:
                    return True
        return False

    def _victim(self, protect: set[int], need: int, before: float | None = None) -> Handle | None:
        """The handle to evict for `need` bytes: the least recently used one without a schedule; with one,
        the one needed furthest ahead and later than `before`, of exactly `need` bytes among equals (its
        buffer is then reused as it is: no unmapping, no fresh pages to fault in), least recent among those."""
        if self.schedule is None:
            for hid, h in self._host_lru.items():
                if hid not in protect:
                    return h
            return None
        next_use = self.schedule.next_use
        limit = -math.inf if before is None else before
        best, best_far, best_exact = None, -math.inf, False
        for hid, h in self._host_lru.items():  # oldest first: strict ">" keeps the least recent of equals
            if hid in protect:
                continue
            far = next_use(h)
            if far <= limit or far < best_far:
                continue
            exact = h.nbytes == need
            if far > best_far or (exact and not best_exact):
                best, best_far, best_exact = h, far, exact
        return best

    def _evict_now(self, h: Handle) -> bool:
        with self._lock:
            self._check_alive(h)
            if h.tier != "host" or h._pins or h._loading or h.id not in self._host_lru:
                return False
            self._evict(h)
            return True

    def _evict(self, h: Handle) -> None:
        """Move a resident, unpinned handle to disk: write it unless a clean copy is there."""
        if h._backing is None:
            h._backing = self._write_spill(h)
        if h.id in self._prefetched:
            self._prefetched.discard(h.id)
            self.tracker.prefetch_wasted += h.nbytes
        del self._host_lru[h.id]
        self._release_host(h)
        h.tier = "disk"
        self.tracker.add("disk", h.nbytes)

    def _release_host(self, h: Handle) -> None:
        """Forget the host copy; its buffer goes to the free pool if nothing outside refers to it."""
        n, buf = h.nbytes, h._buffer
        h._array = h._buffer = None
        self._live -= n
        if buf is not None and sys.getrefcount(buf) == 2:  # `buf` and getrefcount's argument: no user view left
            self._pool[n].append(buf)
            self._pooled += n
        else:
            self.tracker.add("host", -n)

    def _write_spill(self, h: Handle) -> DiskLocation:
        n = h.nbytes
        used, limit = self.tracker.now["spill"], self.budgets["disk"]
        if used + n > limit:
            raise MemoryBudgetError(f"disk tier full: spilling {h.name or 'an array'} ({format_size(n)}) would take the "
                                    f"spill directory to {format_size(used + n)}, over its {format_size(limit)} budget")
        directory = self._spill_directory()
        check_free_space(directory, n)
        path = directory / f"{h.id}.bin"
        t0 = time.perf_counter()
        write_file(path, h._array)
        self.tracker.move("host", "disk", n, time.perf_counter() - t0, by_prefetch=_in_background())
        self.tracker.add("spill", n)
        return DiskLocation(str(path), 0, n, spilled=True)

    def _spill_directory(self) -> Path:
        if not self._spill:
            if not self._finalizer.alive:  # closed, and used again
                self._finalizer = weakref.finalize(self, release, self._reader, self._spill)
            self._spill.extend(new_spill_dir(self.disk_dir))
        return self._spill[0]

    def _delete_spill(self, h: Handle) -> None:
        loc = h._backing
        h._backing = None
        if loc is not None and loc.spilled:
            self._reader.forget(loc.path)
            Path(loc.path).unlink(missing_ok=True)
            self.tracker.add("spill", -loc.nbytes)

    # -- use --------------------------------------------------------------------------------

    def _acquire(self, h: Handle, pin: bool) -> np.ndarray:
        self._bring_up(h, pin=pin)
        return h._array

    def _acquire_all(self, handles: list[Handle], pin: bool) -> list[np.ndarray]:
        """_acquire for a group used together (a stage): those on disk and not in flight are claimed at once
        and read as one batch (one system call per run of adjacent file regions), the rest are waited for
        or brought up one by one. A stage the prefetch thread has not reached then costs one read, not one
        per array (each a return to Python), and the prefetch thread, arriving late, finds it claimed and
        goes on to the next stage instead of racing the caller for this one's arrays."""
        protect = {h.id for h in handles}
        claimed = []
        with self._lock:
            try:
                for h in handles:
                    self._check_alive(h)
                    if h.tier == "host" or h._loading:
                        continue
                    buf = self._take_buffer(h.nbytes, protect)
                    if buf is None:
                        break  # no room for more now: read these, then the rest one by one (waiting or raising)
                    h._loading = True
                    self._loading += 1
                    claimed.append((h, buf))
            except BaseException:
                self._unclaim(claimed)
                raise
        if claimed:
            self._load(claimed, pin, background=False)
        read = {h.id for h, _ in claimed}
        pinned = [h for h, _ in claimed] if pin else []
        try:
            for h in handles:
                if h.id not in read:
                    self._bring_up(h, pin=pin)
                    if pin:
                        pinned.append(h)
        except BaseException:  # all or nothing: a stage that cannot come up whole leaves no pins behind
            for h in pinned:
                self._unpin(h)
            raise
        return [h._array for h in handles]

    def _unclaim(self, claimed: list[tuple[Handle, np.ndarray]]) -> None:
        """(lock held) Undo _claim / _take_buffer for handles that will not be read: not loading, buffers back."""
        for h, buf in claimed:
            h._loading = False
            self._loading -= 1
            self._live -= h.nbytes
            self._pool[h.nbytes].append(buf)
            self._pooled += h.nbytes
        if claimed:
            self._changed.notify_all()

    def _wait_for_change(self) -> None:
        """Block until another thread's transfer ends (lock held); the caller's time counts as waiting."""
        t0 = time.perf_counter()
        self._changed.wait()
        self.tracker.wait_s += time.perf_counter() - t0

    def _bring_up(self, h: Handle, pin: bool) -> None:
        """Make `h` host-resident for the caller (pinning it if asked), reading it or waiting for it.

        Caller time spent on transfers goes to tracker.wait_s: its own reads and writes (tracker.move)
        and its waits for a read in flight in another thread."""
        with self._lock:
            buf = self._claim(h, pin, background=False, protect=())
        if buf is not None:
            self._load([(h, buf)], pin, background=False)

    def _claim(self, h: Handle, pin: bool, background: bool, protect: Iterable[int]) -> np.ndarray | bool | None:
        """(lock held) A buffer for `h` if it must be read: `h` is then "loading" and the caller reads it
        with _load. Otherwise None (foreground: resident now, pinned if asked) or, in the background
        (which neither waits nor raises), True if resident or in flight and False if there is no room."""
        before = None
        if background and self.schedule is not None:
            before = self.schedule.next_use(h)
        while True:
            self._check_alive(h)
            if h.tier == "host" and not h._loading:
                if not background:
                    self._prefetched.discard(h.id)
                if pin:
                    h._pins += 1
                    self._host_lru.pop(h.id, None)
                elif h.id in self._host_lru:
                    self._host_lru.move_to_end(h.id)
                return True if background else None
            if h._loading:
                if background:
                    return True
                self._wait_for_change()
                continue
            buf = self._take_buffer(h.nbytes, set(protect) | {h.id}, before)
            if buf is not None:
                h._loading = True
                self._loading += 1
                return buf
            if background:
                return False
            if self._loading:
                self._wait_for_change()
                continue
            raise MemoryBudgetError(f"cannot bring {h.name or 'an array'} ({format_size(h.nbytes)}) into host RAM: "
                                    f"{format_size(self._live)} of the {format_size(self.budgets['host'])} budget "
                                    f"is pinned, non-evictable or being read")

    def _load(self, claimed: list[tuple[Handle, np.ndarray]], pin: bool, background: bool) -> None:
        """Read claimed handles into their buffers (lock not held; adjacent file regions in one system
        call) and make them resident; if the read fails, none of them is, and their buffers go."""
        arrays = [buf[:h.nbytes].view(h.dtype).reshape(h.shape) for h, buf in claimed]
        t0 = time.perf_counter()
        try:
            self._reader.read_many([(h._backing, arr) for (h, _), arr in zip(claimed, arrays)])
        except BaseException:
            with self._lock:
                for h, _ in claimed:
                    h._loading = False
                    self._loading -= 1
                    self._live -= h.nbytes
                    self.tracker.add("host", -h.nbytes)
                self._changed.notify_all()
            raise
        seconds = time.perf_counter() - t0
        total = sum(h.nbytes for h, _ in claimed) or 1
        with self._lock:
            for (h, buf), arr in zip(claimed, arrays):
                self.tracker.move("disk", "host", h.nbytes, seconds * h.nbytes / total, by_prefetch=background)
                if background:
                    self._prefetched.add(h.id)
                self.tracker.add("disk", -h.nbytes)
                h._loading = False
                self._loading -= 1
                if pin:
                    h._pins += 1
                self._set_resident(h, arr, buf)
                if h.kind != "weight":
                    self._delete_spill(h)  # writable bytes live in exactly one tier
            self._changed.notify_all()

    def _unpin(self, h: Handle) -> None:
        with self._lock:
            if h._pins <= 0:
                raise RuntimeError(f"{h.name or 'handle'} is not pinned")
            h._pins -= 1
            if h._pins == 0 and h.evictable and h.tier == "host" and not h._freed:
                self._host_lru[h.id] = h

    def _update(self, h: Handle, array: Any) -> None:
        arr = _contiguous(array)
        with self._lock:
            self._check_alive(h)
            while h._loading:
                self._wait_for_change()
            if h._pins:
                raise RuntimeError(f"cannot update {h.name or 'a handle'} while it is pinned")
            new = Handle(self, h.name, h.kind, h.evictable, arr.shape, arr.dtype, None)
            old_fixed = 0 if h.evictable else h.nbytes
            self._fixed -= old_fixed  # the old bytes go: the new ones may take their place
            self._host_lru.pop(h.id, None)  # the old bytes must not be evicted (written) while placing
            try:
                self._check_fits(new)
                self._place(new, arr)  # before dropping the old bytes: a failure loses nothing
            except BaseException:
                self._fixed += old_fixed
                if h.tier == "host" and h.evictable:
                    self._host_lru[h.id] = h
                raise
            self._drop(h)
            self._prefetched.discard(h.id)
            self._host_lru.pop(new.id, None)
            h.shape, h.dtype, h.nbytes = new.shape, new.dtype, new.nbytes
            h.tier, h._array, h._buffer, h._backing = new.tier, new._array, new._buffer, new._backing
            if h.tier == "host":
                self._set_resident(h, h._array, h._buffer)
            self.tracker.own(h.nbytes - h.full_precision_bytes)
            h.full_precision_bytes = h.nbytes

    def _free(self, h: Handle) -> None:
        with self._lock:
            self._check_alive(h)
            while h._loading:
                self._wait_for_change()
            if h._pins:
                raise RuntimeError(f"cannot free {h.name or 'a handle'} while it is pinned")
            self._drop(h)
            self._prefetched.discard(h.id)
            if not h.evictable:
                self._fixed -= h.nbytes
            h._freed = True
            self.tracker.own(-h.full_precision_bytes)
            del self._handles[h.id]

    def _drop(self, h: Handle) -> None:
        """Release h's bytes in every tier (lock held, not loading, not pinned)."""
        if h.tier == "host":
            self._host_lru.pop(h.id, None)
            self._release_host(h)
        else:
            self.tracker.add("disk", -h.nbytes)
        self._delete_spill(h)

    def _check_alive(self, h: Handle) -> None:
        if h._freed:
            raise RuntimeError(f"{h.name or 'handle'} was freed")
        if h._mm is not self:
            raise ValueError("the handle belongs to another MemoryManager")


MMAP_MIN = 64 * 2**10


def _in_background() -> bool:
    """Whether this thread is inside prefetch(): its transfers are the ones a caller may not wait for."""
    return getattr(_state, "prefetching", False)



def _new_buffer(n: int) -> np.ndarray:
    """n bytes of host memory; large ones as their own anonymous mapping.

    malloc would serve them from heaps and per-thread arenas (the prefetch thread has its
    own) whose freed chunks stay resident when fragmented; an anonymous mapping is handed
    back to the OS the moment the last view of it goes, so RSS follows the budget."""
    if n < MMAP_MIN:
        return np.empty(n, np.uint8)
    return np.frombuffer(mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), np.uint8)


def _contiguous(array: Any) -> np.ndarray:
    """`array` itself if it is a C-contiguous array owning (or equal to) its memory; else a compact copy.

    A view of a bigger array would keep all of it alive while the manager counted only the view.
    TypeError for object arrays: their bytes are pointers, which cannot be spilled and read back."""
    arr = np.asarray(array)
    if arr.dtype.hasobject:
        raise TypeError(f"the memory manager holds arrays of numbers, not of Python objects ({arr.dtype})")
    base = arr.base
    whole = base is None or (isinstance(base, np.ndarray) and base.nbytes == arr.nbytes)
    return arr if arr.flags.c_contiguous and whole else arr.copy(order="C")


# -- context ---------------------------------------------------------------------------------

@contextlib.contextmanager
def budget(host: int | str, device: int | str | None = None, disk_dir: str | None = None,
           disk: int | str = "50GiB") -> Iterator[MemoryManager]:
    """A MemoryManager with these budgets, current inside the block, closed (spill files removed) after.

    >>> with budget(host="64MiB") as mm:                       # doctest: +SKIP
    ...     h = mm.own(np.zeros(1024), name="x")
    ...     h.get().sum()
    """
    mm = MemoryManager(host, device=device, disk_dir=disk_dir, disk=disk)
    stack = _stack()
    stack.append(mm)
    try:
        yield mm
    finally:
        stack.pop()
        mm.close()


def _stack() -> list[MemoryManager]:
    if not hasattr(_state, "stack"):
        _state.stack = []
    return _state.stack


def current_manager() -> MemoryManager | None:
    """The manager of the innermost `budget()` block of this thread, or None outside one."""
    stack = _stack()
    return stack[-1] if stack else None


def last_summary() -> tuple[dict[str, int], Tracker] | None:
    """(budgets, tracker) of the current manager, else of the most recently created one (even if closed)."""
    mm = current_manager()
    if mm is not None:
        return mm.budgets, mm.tracker
    return (_last_summary[0], _last_summary[1]) if _last_summary else None
