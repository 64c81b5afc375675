"""Host buffers on transparent huge pages, for weights that every decode step streams.

A batch-1 decode step reads each weight once, front to back; with 4 KiB pages the
~490 MB of a 110M-parameter float32 Llama span ~120,000 pages, far more than the TLB
holds, so the walk takes a TLB miss every 4 KiB. 2 MiB pages cut the misses 512-fold:
the decoder's float32 step measured +5.5% median tok/s with its weights here
(benchmarks/generate.py). Linux gives an anonymous mapping huge pages where
transparent huge pages are enabled, or, in the common "madvise" mode, where the range
is marked MADV_HUGEPAGE; a 2 MiB page needs a 2 MiB-aligned range, so the mapping is
over-allocated by one huge page and the array starts at the first aligned address.

Where madvise or MADV_HUGEPAGE is unavailable (not Linux, an old kernel) the buffer
is the same aligned anonymous mapping on ordinary pages: slower to walk, never wrong.

    >>> buf = empty(3 << 20)
    >>> buf.ctypes.data % HUGE_PAGE, buf.nbytes
    (0, 3145728)
"""

from __future__ import annotations

import mmap
import numpy as np

HUGE_PAGE = 2 << 20  # x86-64's and aarch64's (4 KiB granule) transparent huge page


def empty(nbytes: int) -> np.ndarray:
    """A writable, zero-filled uint8 array of `nbytes`, 2 MiB-aligned and advised onto huge pages.

    The mapping lives as long as any view of the array does.
    """
    if nbytes < 0:
        raise ValueError(f"huge_pages.empty: nbytes must be >= 0, got {nbytes}")
    span = _round_up(nbytes, HUGE_PAGE)
    mapping = mmap.mmap(-1, span + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    whole = np.frombuffer(mapping, np.uint8)
    offset = -whole.ctypes.data % HUGE_PAGE  # a multiple of the 4 KiB page the mapping starts on
    _advise(mapping, offset, span)
    return whole[offset:offset + nbytes]


class Arena:
    """Arrays taken one after another from one `empty` buffer whose size is fixed up front.

    Each array starts on a multiple of `align` bytes (a cache line by default), so no two
    share a line; `room(nbytes)` is the most one array of `nbytes` takes, for sizing.

        >>> arena = Arena(Arena.room(4 * 6) + Arena.room(8))
        >>> a, b = arena.take((2, 3), np.float32), arena.take((8,), np.uint8)
        >>> a.ctypes.data % HUGE_PAGE, b.ctypes.data - a.ctypes.data
        (0, 64)
    """

    ALIGN = 64

    def __init__(self, nbytes: int) -> None:
        self.buffer = empty(nbytes)
        self.used = 0

    @classmethod
    def room(cls, nbytes: int) -> int:
        return _round_up(nbytes, cls.ALIGN)

    def take(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """A new C-contiguous (zero-filled) array of `shape` and `dtype` from the buffer."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if self.used + nbytes > self.buffer.nbytes:
            raise MemoryError(f"Arena: {nbytes} bytes asked, {self.buffer.nbytes - self.used} of "
                              f"{self.buffer.nbytes} left")
        out = self.buffer[self.used:self.used + nbytes].view(dtype).reshape(shape)
        self.used = min(self.buffer.nbytes, self.used + self.room(nbytes))
        return out


def _advise(mapping: mmap.mmap, offset: int, length: int) -> None:
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is None or length == 0:
        return
    try:
        mapping.madvise(advice, offset, length)
    except OSError:  # THP compiled out (EINVAL) or refused: ordinary pages
        pass


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to
