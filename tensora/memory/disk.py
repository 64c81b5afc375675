"""The disk tier: a spill directory of this process's own, and reads into caller-owned buffers.

A spill directory is named `tensora-spill-<pid>-<start time>-<random>`; it is removed when
its manager is closed or collected or the interpreter exits, and any directory of that shape
whose process is gone (a crash, kill -9) is removed by the next manager that starts in the
same parent directory. The start time guards against a recycled pid; the directory's lock
file, held (flock) for the manager's lifetime, against a pid this process cannot see (another
pid namespace, container or host sharing the directory).

Reads never map files: `read_many` uses os.preadv straight into a preallocated buffer, so
the bytes count once, in the buffer the host tier accounts for. (Touched pages of an mmap
would count in RSS as well, unaccounted, until the kernel felt like dropping them.)
Weights that are unmodified tensors of their checkpoint are read back from the checkpoint
file itself (`DiskLocation` with `spilled=False`): no copy, no spill space. Its descriptor is
opened when the weight is taken (`FileReader.pin`) and kept, so a checkpoint saved again
under the same name later (a new file) does not change the weights being read.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DiskTierError, MemoryBudgetError
from .sizes import format_size

PREFIX = "tensora-spill-"
LOCK_NAME = ".lock"
_NAME = re.compile(rf"^{PREFIX}(\d+)-(\d+)-\w+$")
IOV_MAX = 1024  # Linux's limit on buffers per preadv
FREE_SPACE_RESERVE = 64 * 2**20  # never fill a disk to the last byte: other programs need it too


@dataclass(frozen=True)
class DiskLocation:
    """`nbytes` at `offset` of `path`; `spilled` when the file is ours (counts against the disk budget)."""

    path: str
    offset: int
    nbytes: int
    spilled: bool


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (/proc/<pid>/stat field 22); None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # fields after "(comm)" start at field 3


def remove_stale(parent: Path) -> list[Path]:
    """Delete spill directories in `parent` left by processes that no longer run; return them."""
    removed = []
    for entry in parent.glob(PREFIX + "*"):
        m = _NAME.match(entry.name)
        if m is None or not entry.is_dir():
            continue
        pid, started = int(m.group(1)), int(m.group(2))
        if _start_time(pid) != started and not _locked(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _locked(directory: Path) -> bool:
    """Whether a live manager holds `directory`'s lock (False without a lock file)."""
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the lock if it was taken
    return False


def new_spill_dir(disk_dir: str | os.PathLike | None) -> tuple[Path, int]:
    """A fresh spill directory under `disk_dir` (default: the system temp dir), after cleaning stale
    ones, and the descriptor of its lock file, locked: keep it open while the directory is in use."""
    parent = Path(disk_dir) if disk_dir is not None else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale(parent)
    pid = os.getpid()
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{pid}-{_start_time(pid) or 0}-", dir=parent))
    lock = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    return path, lock


def release(reader: FileReader, spill: list) -> None:
    """Close `reader`'s descriptors, then remove the spill directory `spill` holds ([path, lock fd],
    emptied here) and unlock it: a manager's close and finalizer."""
    reader.close()
    if spill:
        path, lock = spill
        spill.clear()
        shutil.rmtree(path, ignore_errors=True)
        os.close(lock)


def check_free_space(directory: Path, nbytes: int) -> None:
    """Raise MemoryBudgetError unless the file system can take `nbytes` more and keep its reserve
    (DiskTierError if `directory` cannot be asked)."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError as e:  # the directory removed under the manager, say
        raise DiskTierError(e.errno, f"cannot use spill directory {directory}: {e.strerror}") from e
    if nbytes + FREE_SPACE_RESERVE > free:
        raise MemoryBudgetError(f"disk tier full: spilling {format_size(nbytes)} to {directory} would leave less "
                                f"than {format_size(FREE_SPACE_RESERVE)} of its {format_size(free)} free")


def write_file(path: Path, data: np.ndarray) -> None:
    """Write `data`'s bytes to a new file at `path` (a spill file: private to this process, never read
    elsewhere); on failure no file is left and DiskTierError names it."""
    view = memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise DiskTierError(e.errno, f"cannot create spill file {path}: {e.strerror}") from e
    try:
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], done)
    except OSError as e:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise DiskTierError(e.errno, f"cannot write spill file {path}: {e.strerror}") from e
    os.close(fd)


class FileReader:
    """preadv into caller-owned buffers, with cached descriptors (thread-safe).

    A read is one system call: every Python-level call made in the prefetch thread has to
    win the GIL back afterwards, which can take a switch interval (5 ms) while the compute
    thread runs Python, so open+read+close per spill file would cost three of them. At most
    MAX_FDS descriptors stay open, least recently used closed first; the manager calls
    `forget` before it deletes a spill file, so a cached descriptor never outlives its file.
    """

    MAX_FDS = 256

    def __init__(self) -> None:
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._pinned: dict[str, int] = {}  # checkpoints: kept open until close
        self._busy: dict[int, int] = {}  # fd -> reads in progress: closed only when none is
        self._closing: set[int] = set()
        self._lock = threading.Lock()

    def read_many(self, items: list[tuple[DiskLocation, np.ndarray]]) -> None:
        """Fill each `out` (C-contiguous, loc.nbytes bytes) from its `loc`; DiskTierError if a file is short.

        One preadv per run of adjacent regions of a file (a checkpoint's tensors of one layer
        usually are one run): fewer system calls, so fewer returns to the GIL."""
        items = sorted(items, key=lambda item: (item[0].path, item[0].offset))
        i = 0
        while i < len(items):
            loc = items[i][0]
            j, end = i + 1, loc.offset + loc.nbytes
            while (j < len(items) and j - i < IOV_MAX and items[j][0].path == loc.path
                   and items[j][0].offset == end):
                end += items[j][0].nbytes
                j += 1
            fd = self._open(loc.path)
            try:
                _read_run(fd, [memoryview(out.reshape(-1).view(np.uint8)) for _, out in items[i:j]], loc.offset,
                          loc.path)
            finally:
                self._done(fd)
            i = j

    def pin(self, path: str) -> None:
        """Open `path` now and read it through this descriptor until `close`: the file the name
        means now, whatever is saved under the name later. DiskTierError if it cannot be opened."""
        with self._lock:
            if path not in self._pinned:
                self._pinned[path] = _open_for_reading(path)

    def _open(self, path: str) -> int:
        with self._lock:
            fd = self._pinned.get(path)
            if fd is None:
                fd = self._cached(path)
            self._busy[fd] = self._busy.get(fd, 0) + 1
            return fd

    def _cached(self, path: str) -> int:
        """The LRU descriptor of `path`, opened if need be (lock held)."""
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = _open_for_reading(path)
            while len(self._fds) > self.MAX_FDS:
                self._retire(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(path)
        return fd

    def _done(self, fd: int) -> None:
        with self._lock:
            self._busy[fd] -= 1
            if not self._busy[fd]:
                del self._busy[fd]
                if fd in self._closing:
                    self._closing.discard(fd)
                    os.close(fd)

    def _retire(self, fd: int) -> None:
        """Close `fd` now, or when its last read in progress ends (lock held)."""
        if fd in self._busy:
            self._closing.add(fd)
        else:
            os.close(fd)

    def forget(self, path: str) -> None:
        """Close the cached descriptor of `path` (about to be deleted or replaced)."""
        with self._lock:
            fd = self._fds.pop(path, None)
            if fd is not None:
                self._retire(fd)

    def close(self) -> None:
        with self._lock:
            for fd in [*self._fds.values(), *self._pinned.values()]:
                self._retire(fd)
            self._fds.clear()
            self._pinned.clear()


def _open_for_reading(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY)
    except OSError as e:
        raise DiskTierError(e.errno, f"cannot open {path} to read a tensor back: {e.strerror}") from e


def _read_run(fd: int, views: list[memoryview], offset: int, path: str) -> None:
    """Fill `views`, in order, from the adjacent bytes of `fd` starting at `offset` (a short read resumes
    where it stopped)."""
    views = [v for v in views if len(v)]
    start, want = offset, sum(len(v) for v in views)
    while views:
        got = os.preadv(fd, views, offset)
        if got == 0:
            raise DiskTierError(f"{path}: expected {want} bytes at offset {start}, the file ends after "
                                f"{offset - start} (cut short since it was written)")
        offset += got
        while views and got >= len(views[0]):
            got -= len(views[0])
            views.pop(0)
        if got:
            views[0] = views[0][got:]
