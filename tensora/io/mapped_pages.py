"""Handing the pages of a memory-mapped tensor back to the OS once it has been consumed.

Touched pages of a mapped checkpoint count in the process's resident memory for as long
as the mapping lives. A loader that converts weights one at a time (quantizing them, or
casting bf16 to float32) is done with each source tensor right away; releasing its pages
keeps resident memory at "converted model + one source tensor" instead of "converted
model + the whole file". MADV_PAGEOUT reclaims the pages without losing anything (clean
file pages are simply read again if touched later); where the kernel lacks it (before
Linux 5.4) or the array is not a file mapping, nothing happens.
"""

from __future__ import annotations

import mmap
import sys

import numpy as np

MADV_PAGEOUT = 21  # linux/mman.h; Python's mmap module does not name it before 3.13
PAGE = mmap.PAGESIZE


def release_pages(array: np.ndarray) -> bool:
    """Ask the OS to reclaim the pages under `array` if it views a memory-mapped file; True if asked."""
    mm = _mapping_of(array)
    if mm is None or not sys.platform.startswith("linux") or array.nbytes == 0:
        return False
    start = array.__array_interface__["data"][0] - np.frombuffer(mm, np.uint8).__array_interface__["data"][0]
    # Whole pages inside the array only: a page shared with a neighbouring tensor may still be in use.
    first = -(-start // PAGE) * PAGE
    stop = min(start + array.nbytes, len(mm)) // PAGE * PAGE
    if stop <= first:
        return False
    try:
        mm.madvise(MADV_PAGEOUT, first, stop - first)
    except (OSError, ValueError):
        return False
    return True


def _mapping_of(array: np.ndarray) -> mmap.mmap | None:
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
        if isinstance(base, memoryview):
            base = base.obj
    return base
