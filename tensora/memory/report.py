"""The memory report: a table of tiers, traffic and time, and an optional plot of tier usage over time."""

from __future__ import annotations

import os
from typing import Any

from .manager import MemoryManager, last_summary
from .sizes import format_size
from .tracker import Tracker


def report(manager: MemoryManager | None = None) -> str:
    """The report of `manager`, else of the current (or last created) one, as a printable table.

    >>> print(report())       # doctest: +SKIP
    tier    budget      now       peak
    host    64.0 MiB    ...
    """
    summary = (manager.budgets, manager.tracker) if manager is not None else last_summary()
    if summary is None:
        return "no memory manager has been created"
    budgets, t = summary
    rows = [("tier", "budget", "now", "peak")]
    rows.append(("host", format_size(budgets["host"]), format_size(t.now["host"]), format_size(t.peak["host"])))
    rows.append(("disk", "-", format_size(t.now["disk"]), format_size(t.peak["disk"])))
    rows.append(("  spill files", format_size(budgets["disk"]), format_size(t.now["spill"]),
                 format_size(t.peak["spill"])))
    lines = _table(rows)
    lines.append("")
    # copies (atomic under the GIL): a pass running in another thread (a server's) adds directions meanwhile
    moved, transfers = dict(t.moved), dict(t.transfers)
    for direction in sorted(moved):
        lines.append(f"moved {direction:<11} {format_size(moved[direction]):>11} in {transfers.get(direction, 0)} "
                     "transfers")
    lines.append(f"time transferring {t.transfer_s:8.3f} s (prefetch thread {t.prefetch_s:.3f} s)   "
                 f"caller waiting {t.wait_s:8.3f} s   computing {t.compute_s:8.3f} s")
    lines.append(f"transfer time hidden by prefetch {100 * t.hidden_fraction:5.1f} %  (transfer time the caller did "
                 f"not wait for: its own reads count whole)")
    if t.prefetch_wasted:
        lines.append(f"prefetched and evicted unused {format_size(t.prefetch_wasted)}")
    lines.append(f"full-precision bytes {format_size(t.full_precision_peak)}, peak in host "
                 f"{format_size(t.peak['host'])}: effective multiplier {t.multiplier():.1f}x")
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in rows]


def plot_usage(path: str | os.PathLike, tracker: Tracker | None = None, format: str | None = None) -> Any:
    """Save a plot of bytes per tier over time (matplotlib, imported only here) to `path`, as `format`
    (default: from `path`'s suffix); returns the figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if tracker is None:
        summary = last_summary()
        if summary is None:
            raise RuntimeError("no memory manager has been created, so there is nothing to plot")
        tracker = summary[1]
    points = tracker.timeline.points()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for column, tier in ((2, "host"), (3, "disk")):
        ax.step(points[:, 0], points[:, column] / 2**20, where="post", label=tier)
    ax.set_xlabel("seconds")
    ax.set_ylabel("MiB")
    ax.set_title("tensora memory tiers")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format=format)
    plt.close(fig)
    return fig
