"""Byte sizes as people write them: 1234, "512MiB", "2GB", "1.5 GiB".

Binary units (KiB, MiB, GiB, TiB) are powers of 1024 and decimal ones (KB, MB, GB, TB)
powers of 1000, as the IEC and SI define them. A bare "2G" or "512M" is refused rather
than guessed: tools disagree on what it means, and a budget off by 7% is a wrong budget.

    >>> parse_size("512MiB") == 512 * 2**20, parse_size("2GB") == 2 * 10**9, parse_size(1234)
    (True, True, 1234)
"""

from __future__ import annotations

import math
import numbers
import re
from fractions import Fraction

import numpy as np

UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")  # ASCII digits only


def parse_size(size: int | str) -> int:
    """Bytes in `size`: a non-negative int, or a number followed by B, KB..TB or KiB..TiB (rounded down to
    whole bytes; a bare or B-suffixed number must be whole)."""
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (numbers.Integral, str)):
        raise TypeError(f"a size is an int or a string like '512MiB', not {type(size).__name__}")
    if isinstance(size, numbers.Integral):  # NumPy integers too (a size computed with np.prod)
        size = int(size)
        if size < 0:
            raise ValueError(f"a size cannot be negative, got {size}")
        return size
    m = _SIZE.match(size)
    unit = m.group(2).upper() if m else None
    if m is None or unit not in UNITS and unit != "":
        raise ValueError(f"cannot read {size!r} as a size; write a number of bytes or a number followed by one "
                         "of B, KB, MB, GB, TB, KiB, MiB, GiB, TiB")
    # Exact decimal arithmetic: through a float, "2.01KB" came out as 2009 bytes.
    n = Fraction(m.group(1)) * UNITS[unit or "B"]
    if n.denominator != 1 and unit in ("", "B"):
        raise ValueError(f"cannot read {size!r} as a size: a number of bytes is a whole number")
    return math.floor(n)  # a fraction of a byte of a larger unit ("1.1GiB") rounds down


def format_size(n: int | float) -> str:
    """`n` bytes in the largest binary unit that keeps it >= 1: '512.0 MiB'."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"
