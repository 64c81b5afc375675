"""POSIX shared-memory blocks: create, map, unlink, with no descriptor kept open.

The primitives under the worker transport (transport.py) and under sending a
dataset to spawned workers (`dumps_shared`).

Why not multiprocessing.shared_memory.SharedMemory (or mmap.mmap): both keep a
file descriptor open per block for as long as it is mapped, and a user who keeps an
epoch of batches would run into the descriptor limit; SharedMemory.close() also
raises BufferError while arrays still view it. This module uses the primitives
SharedMemory is built on (`_posixshmem.shm_open` / `shm_unlink`), maps with libc
directly (a `Mapping` is unmapped when the last NumPy view of it dies), and keeps
SharedMemory's crash safety: each name is registered with multiprocessing's
resource tracker while it exists, so a name left behind by a killed process is
unlinked when the tracker shuts down.

For the 'spawn' start method the worker's setup (the dataset above all) has to be
pickled; tensors are not picklable by design (Tensor.__reduce__ refuses), so
`dumps_shared` moves each tensor's bytes into a block and pickles its name.
"""

from __future__ import annotations

import ctypes
import io
import mmap
import os
import pickle
from multiprocessing import resource_tracker
from typing import Any

import numpy as np

from ..creation import from_numpy
from ..errors import DeviceError
from ..tensor import Tensor

try:
    import _posixshmem  # CPython's shm_open/shm_unlink, the base of multiprocessing.shared_memory
except ImportError:  # Windows: no POSIX shared memory (workers.py reports it)
    _posixshmem = None

_RTYPE = "shared_memory"

available = _posixshmem is not None


if available:
    _libc = ctypes.CDLL(None, use_errno=True)
    _mmap = _libc.mmap
    _mmap.restype = ctypes.c_void_p
    _mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    _munmap = _libc.munmap
    _munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    _MAP_FAILED = ctypes.c_void_p(-1).value
else:
    _munmap = None


class Mapping:
    """A shared mapping that holds no file descriptor; NumPy views it through __array_interface__.

    Python's mmap object keeps a duplicate descriptor open for its whole life
    (until 3.13's trackfd=False). This maps with libc and unmaps in __del__, which
    runs when the last array viewing it dies (NumPy keeps it as the arrays' base).
    """

    __slots__ = ("__array_interface__", "_addr", "_size")

    def __init__(self, fd: int, size: int) -> None:
        addr = _mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == _MAP_FAILED:
            err = ctypes.get_errno()
            raise OSError(err, f"mmap of a {size}-byte shared memory block failed: {os.strerror(err)}")
        self._addr, self._size = addr, size
        self.__array_interface__ = {"shape": (size,), "typestr": "|u1", "data": (addr, False), "version": 3}

    def __del__(self, _munmap: Any = _munmap) -> None:
        # _munmap bound at definition: at interpreter exit the module's globals may be None already, and a
        # mapping that dies then (a worker's dataset, a batch kept to the end) printed a TypeError
        if hasattr(self, "_addr"):  # not when __init__ failed
            _munmap(self._addr, self._size)


def create(name: str, nbytes: int) -> Mapping:
    """Create the block `name` of `nbytes` and map it; the name stays until `release(name)`."""
    fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    try:
        resource_tracker.register(name, _RTYPE)
        if hasattr(os, "posix_fallocate"):
            # Reserve the pages now: a full /dev/shm is then an OSError here, not a SIGBUS on write.
            os.posix_fallocate(fd, 0, nbytes)
        else:
            os.ftruncate(fd, nbytes)
        return Mapping(fd, nbytes)
    except BaseException:
        release(name)
        raise
    finally:
        os.close(fd)


def attach(name: str, nbytes: int) -> Mapping:
    """Map an existing block; its name stays."""
    fd = _posixshmem.shm_open(name, os.O_RDWR, mode=0o600)
    try:
        return Mapping(fd, nbytes)
    finally:
        os.close(fd)


def take(name: str, nbytes: int) -> Mapping:
    """Map a block another process created and registered, and unlink its name at once.

    From then on only the mappings hold the memory; it goes when the last one does.
    """
    try:
        return attach(name, nbytes)
    finally:
        _posixshmem.shm_unlink(name)
        resource_tracker.unregister(name, _RTYPE)


def release(name: str) -> bool:
    """Unlink `name` if it still exists and drop it from the resource tracker; True if it existed.

    Registering first keeps the tracker's books balanced whether or not the creator
    got to register (it keeps a set of names).
    """
    resource_tracker.register(name, _RTYPE)
    try:
        _posixshmem.shm_unlink(name)
        existed = True
    except FileNotFoundError:
        existed = False
    resource_tracker.unregister(name, _RTYPE)
    return existed


# -- pickling a worker's setup for 'spawn' -------------------------------------


class SharingPickler(pickle.Pickler):
    """Pickles tensors as shared-memory block names (for sending datasets to spawned workers).

    The blocks it creates are listed in `names`; the owner releases them once the
    workers are gone. A tensor referenced twice is stored once (pickle's memo).
    """

    def __init__(self, file: io.BytesIO, prefix: str) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.prefix = prefix
        self.names: list[str] = []

    def reducer_override(self, obj: Any) -> Any:
        if not isinstance(obj, Tensor):
            return NotImplemented
        if obj.device.type != "cpu":
            raise DeviceError(f"worker processes started with 'spawn' get the dataset through shared memory, "
                              f"which holds CPU tensors only; got a {obj.device} tensor (move it with .cpu())")
        arr = np.ascontiguousarray(obj.detach().numpy())
        name = f"{self.prefix}d{len(self.names):x}"
        size = max(arr.nbytes, 1)
        block = create(name, size)
        self.names.append(name)
        np.asarray(block)[:arr.nbytes] = arr.reshape(-1).view(np.uint8)
        return _attach_tensor, (name, size, arr.dtype, arr.shape, obj.requires_grad)


def _attach_tensor(name: str, size: int, dtype: np.dtype, shape: tuple, requires_grad: bool) -> Tensor:
    """Unpickle side of SharingPickler: a tensor viewing the shared block (writes are shared too)."""
    count = int(np.prod(shape, dtype=np.int64))
    arr = np.asarray(attach(name, size))[:count * dtype.itemsize].view(dtype).reshape(shape)
    t = from_numpy(arr)
    if requires_grad:
        t.requires_grad_(True)
    return t


def dumps_shared(obj: Any, prefix: str) -> tuple[bytes, list[str]]:
    """Pickle `obj` with tensors in shared memory; returns the bytes and the block names made."""
    buf = io.BytesIO()
    pickler = SharingPickler(buf, prefix)
    try:
        pickler.dump(obj)
    except BaseException:
        for name in pickler.names:
            release(name)
        raise
    return buf.getvalue(), pickler.names
