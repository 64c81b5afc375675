"""Shared timing helpers for the benchmark scripts (not part of the package)."""

from __future__ import annotations

import timeit
from typing import Callable


def per_call_us(fn: Callable[[], object], min_time: float = 0.2, repeat: int = 5) -> float:
    """Best-of-`repeat` microseconds per call, with enough calls to fill `min_time` seconds."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(1, int(number * min_time / 0.2))
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def table(rows: list[tuple], headers: tuple) -> str:
    """Format rows as a fixed-width text table (also valid Markdown)."""
    cells = [tuple(str(c) for c in headers)] + [tuple(_fmt(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(c: object) -> str:
    if isinstance(c, float):
        return f"{c:.2f}"
    return "-" if c is None else str(c)
