"""A strided transposed convolution as one stride-1 convolution per output phase (sub-pixel split).

The transpose of a conv with stride s writes input position j from every output i and tap t with
i * s + t * d - pad = j. Along one dim, the positions j = m * s + phase see only the taps t with
(phase + pad - t * d) divisible by s, and read y at m + (phase + pad - t * d) / s: for each phase,
a plain stride-1 conv of y with those taps (in reverse order, dilation d / gcd(s, d)). The s^k
phase convs do exactly the transpose's multiply-adds, with no col2im scatter of k*k overlapping
column blocks; im2col.conv_transpose runs them where they go to the direct kernels (all cores,
nothing copied), writing each phase's output to x[..., phase::s].

Geometry only: it plans windows and index sets, and knows nothing of the arrays' module.

    >>> from tensora.kernels.windows import Window
    >>> win = Window((4,), (2,), (3,), (2,), (1,), (1,))  # conv 4 -> 2, k3 s2 p1
    >>> [(p.phase, p.taps, p.window.pad, p.window.kernel) for p in plan(win)]
    [((0,), ((1,),), (0,), (1,)), ((1,), ((2, 0),), (0,), (2,))]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import NamedTuple

from .windows import Window


class Phase(NamedTuple):
    phase: tuple[int, ...]          # first position of x this conv writes, per dim (then every s-th)
    taps: tuple[tuple[int, ...], ...]  # kernel taps it uses, per dim, in its own kernel's order
    skip: tuple[int, ...]           # leading positions of y it never reads, per dim (slice them off)
    window: Window                  # the stride-1 conv from y[..., skip:] to x[..., phase::s]


def _dim(size: int, out: int, k: int, s: int, p: int, d: int, phase: int) -> tuple:
    """(taps, skip, window fields) of one phase along one dim; taps empty if none reach it."""
    taps = tuple(t for t in range(k - 1, -1, -1) if (phase + p - t * d) % s == 0)
    count = -(-(size - phase) // s)  # positions phase, phase + s, ... below size
    if not taps:
        return taps, 0, (out, count, 0, 1, 0)
    first = (phase + p - taps[0] * d) // s  # where the first (last-in-w) tap reads y, relative to m
    skip = max(first, 0)
    return taps, skip, (max(out - skip, 0), count, len(taps), d // math.gcd(s, d), max(-first, 0))


def plan(win: Window) -> list[Phase]:
    """The phase convs of conv_transpose over `win` (the forward conv's window: x is win.in_size,
    y win.out_size). A phase that no tap reaches has an empty kernel (its x is only the bias)."""
    per_dim = [[_dim(size, out, k, s, p, d, ph) for ph in range(min(s, size))]
               for size, out, k, s, p, d in zip(win.in_size, win.out_size, win.kernel, win.stride, win.pad,
                                                 win.dilation)]
    phases = []
    for combo in itertools.product(*[range(len(dim)) for dim in per_dim]):
        parts = [per_dim[i][ph] for i, ph in enumerate(combo)]
        fields = [part[2] for part in parts]
        window = dataclasses.replace(win, in_size=tuple(f[0] for f in fields), out_size=tuple(f[1] for f in fields),
                                     kernel=tuple(f[2] for f in fields), stride=(1,) * len(fields),
                                     dilation=tuple(f[3] for f in fields), pad=tuple(f[4] for f in fields))
        phases.append(Phase(tuple(combo), tuple(part[0] for part in parts), tuple(part[1] for part in parts),
                            window))
    return phases
