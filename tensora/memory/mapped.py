"""Which file region a NumPy array views, when it views a memory-mapped file (Linux /proc/self/maps).

The loaders hand out zero-copy views of mapped checkpoints (tensora.io); the tiered loader
asks here where such a view's bytes live in its file, so the checkpoint itself can be the
weight's disk tier: read back with preadv into a reusable buffer, never copied to a spill
file. Mappings are private (copy-on-write) and the loaders never write to them, so the
file holds exactly the view's bytes.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class _Region:
    start: int
    end: int
    offset: int
    path: str


class MappedFiles:
    """A snapshot of this process's file mappings; `locate(array)` -> (path, file offset) or None."""

    def __init__(self) -> None:
        regions = []
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
                for line in f:
                    parts = line.split(maxsplit=5)
                    if len(parts) == 6 and parts[5].startswith("/"):
                        lo, hi = (int(x, 16) for x in parts[0].split("-"))
                        regions.append(_Region(lo, hi, int(parts[2], 16), parts[5].rstrip("\n")))
        except OSError:  # not Linux: every array is treated as anonymous memory (spilled when evicted)
            pass
        regions.sort(key=lambda r: r.start)
        self._regions = regions
        self._starts = [r.start for r in regions]

    def locate(self, array: np.ndarray) -> tuple[str, int] | None:
        """(path, offset) of a C-contiguous array lying inside one file mapping, else None."""
        if not array.flags.c_contiguous or array.nbytes == 0:
            return None
        address = array.__array_interface__["data"][0]
        i = bisect.bisect_right(self._starts, address) - 1
        if i < 0:
            return None
        r = self._regions[i]
        if address + array.nbytes > r.end or r.path.endswith(" (deleted)") or not os.path.isfile(r.path):
            return None
        return r.path, r.offset + address - r.start
