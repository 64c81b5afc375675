"""tensora.backend.huge_pages: 2 MiB-aligned buffers on transparent huge pages, and the Arena over one."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pytest

from tensora.backend import huge_pages
from tensora.backend.huge_pages import HUGE_PAGE, Arena

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _anon_huge_bytes(array: np.ndarray) -> int:
    """AnonHugePages of the mapping holding `array`, from /proc/self/smaps."""
    address, inside = array.ctypes.data, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            inside = lo <= address < hi
        elif inside and fields[0] == "AnonHugePages:":
            return int(fields[1]) * 1024
    raise AssertionError("mapping not found in /proc/self/smaps")


@pytest.mark.parametrize("nbytes", [0, 1, 4096, HUGE_PAGE, 3 * HUGE_PAGE + 5])
def test_empty_is_aligned_zeroed_writable_and_exactly_sized(nbytes):
    buf = huge_pages.empty(nbytes)
    assert buf.dtype == np.uint8 and buf.shape == (nbytes,)
    assert buf.ctypes.data % HUGE_PAGE == 0
    assert not buf.any()
    buf[:] = 7
    assert (buf == 7).all()


def test_empty_rejects_a_negative_size():
    with pytest.raises(ValueError, match="nbytes"):
        huge_pages.empty(-1)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not THP.exists() or "[never]" in THP.read_text(),
                    reason="transparent huge pages unavailable or disabled")
def test_touched_buffer_sits_on_huge_pages():
    buf = huge_pages.empty(8 * HUGE_PAGE)
    buf[:] = 1
    assert _anon_huge_bytes(buf) >= HUGE_PAGE  # compaction may not find all eight


@pytest.mark.parametrize("advice", [None, 0x7FFF])  # no MADV_HUGEPAGE (not Linux), or one the kernel refuses
def test_without_huge_pages_the_buffer_is_still_aligned_and_usable(monkeypatch, advice):
    if advice is None:
        monkeypatch.delattr(mmap, "MADV_HUGEPAGE", raising=False)
    else:
        monkeypatch.setattr(mmap, "MADV_HUGEPAGE", advice, raising=False)
    buf = huge_pages.empty(HUGE_PAGE + 3)
    assert buf.ctypes.data % HUGE_PAGE == 0 and buf.nbytes == HUGE_PAGE + 3
    buf[-1] = 9
    assert buf[-1] == 9


def test_arena_takes_disjoint_aligned_arrays_until_full():
    arena = Arena(Arena.room(3 * 5 * 4) + Arena.room(10) + Arena.room(8))
    a = arena.take((3, 5), np.float32)
    b = arena.take((10,), np.uint8)
    c = arena.take((1,), np.float64)
    assert a.shape == (3, 5) and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
    assert [x.ctypes.data % Arena.ALIGN for x in (a, b, c)] == [0, 0, 0]
    a[...], b[...], c[...] = 1.5, 2, 3.0
    assert (a == 1.5).all() and (b == 2).all() and c[0] == 3.0  # no overlap
    assert np.shares_memory(a, arena.buffer) and np.shares_memory(c, arena.buffer)
    with pytest.raises(MemoryError, match="Arena"):
        arena.take((1,), np.uint8)


def test_arena_room_rounds_up_to_a_cache_line():
    assert [Arena.room(n) for n in (0, 1, 64, 65)] == [0, 64, 64, 128]
