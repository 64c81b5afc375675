"""What the memory manager did: bytes per tier (now and peak), bytes moved, time waited vs computed.

The tracker is told about every change by the manager (under its lock), so its numbers
are the manager's real holdings, not estimates. `timeline` keeps (seconds since start,
bytes per tier) after each change, for plotting tier usage over time (report.plot_usage).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

TIERS = ("device", "host", "disk")
TIMELINE_POINTS = 4096  # fixed memory (128 KiB): the tracker must not grow with the run it measures


class Timeline:
    """(seconds, device, host, disk bytes) samples in a fixed array; when full, every other one is dropped
    and the spacing between kept samples doubles, so it covers the whole run at falling resolution."""

    def __init__(self, capacity: int = TIMELINE_POINTS) -> None:
        self._points = np.zeros((capacity, 4))
        self._n = 0
        self._spacing = 0.0  # minimum seconds between samples

    def append(self, t: float, device: int, host: int, disk: int) -> None:
        if self._n and t - self._points[self._n - 1, 0] < self._spacing:
            self._points[self._n - 1, 1:] = device, host, disk  # same moment: keep the latest state
            return
        if self._n == len(self._points):
            kept = self._points[::2].copy()
            self._n = len(kept)
            self._points[:self._n] = kept
            self._spacing = max(2 * self._spacing, t / len(self._points))
        self._points[self._n] = t, device, host, disk
        self._n += 1

    def points(self) -> np.ndarray:
        """The samples so far, shape (n, 4): seconds since start, device, host, disk bytes."""
        return self._points[:self._n].copy()

    def __len__(self) -> int:
        return self._n


@dataclass
class Tracker:
    """Counters of one MemoryManager; read them, do not write them.

    now/peak: bytes per tier ("device", "host", "disk"), plus "spill": bytes in spill files
    (a read-only weight resident in host keeps its disk copy, like a page cache keeps a
    file's pages, so "spill" can exceed "disk"). moved: bytes per direction ("disk->host",
    ...). transfer_s: time any thread spent transferring (reads and spill writes), of
    which prefetch_s in the prefetch thread; wait_s: time callers were blocked on
    transfers (their own, and reads in flight in the prefetch thread); compute_s: time
    layer-by-layer execution spent in forward. prefetch_wasted: bytes prefetched and
    evicted again before anyone used them.
    """

    now: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TIERS + ("spill",), 0))
    peak: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TIERS + ("spill",), 0))
    moved: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    transfers: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    wait_s: float = 0.0
    transfer_s: float = 0.0
    prefetch_s: float = 0.0
    compute_s: float = 0.0
    prefetch_wasted: int = 0
    full_precision_bytes: int = 0
    full_precision_peak: int = 0
    timeline: Timeline = field(default_factory=Timeline)
    started: float = field(default_factory=time.perf_counter)

    def add(self, tier: str, nbytes: int) -> None:
        """Count `nbytes` more (or fewer, if negative) in `tier`."""
        value = self.now[tier] + nbytes
        self.now[tier] = value
        if value > self.peak[tier]:
            self.peak[tier] = value
        self.timeline.append(time.perf_counter() - self.started, self.now["device"], self.now["host"],
                             self.now["disk"])

    def move(self, source: str, target: str, nbytes: int, seconds: float, by_prefetch: bool = False) -> None:
        """Record a transfer of `nbytes` from tier `source` to `target` that took `seconds`; a caller's own
        transfer (not by_prefetch) is time it was blocked."""
        self.moved[f"{source}->{target}"] += nbytes
        self.transfers[f"{source}->{target}"] += 1
        self.transfer_s += seconds
        if by_prefetch:
            self.prefetch_s += seconds
        else:
            self.wait_s += seconds

    def reset_time(self) -> None:
        """Zero the time counters (e.g. after a warm-up run); bytes and peaks stay."""
        self.wait_s = self.transfer_s = self.prefetch_s = self.compute_s = 0.0
        self.prefetch_wasted = 0

    @property
    def hidden_fraction(self) -> float:
        """Share of transfer time that did not show up as caller waiting: 1 - wait_s / transfer_s.

        Reads a caller does itself count whole; a prefetch read the caller then waits for
        counts for the part it waited. 1.0 when nothing was transferred."""
        if self.transfer_s <= 0:
            return 1.0
        return min(1.0, max(0.0, 1.0 - self.wait_s / self.transfer_s))

    def own(self, full_precision_bytes: int) -> None:
        """Count full-precision bytes of a tensor taken in (negative: released)."""
        self.full_precision_bytes += full_precision_bytes
        self.full_precision_peak = max(self.full_precision_peak, self.full_precision_bytes)

    def multiplier(self, fastest: str = "host") -> float:
        """The most full-precision bytes owned at once over the peak bytes resident in the fastest tier."""
        peak = self.peak[fastest]
        return self.full_precision_peak / peak if peak else 0.0
