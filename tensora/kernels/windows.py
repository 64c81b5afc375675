"""Window geometry shared by the sliding-window kernels: convolution (im2col.py,
direct_conv.py, conv_phases.py), pooling (pool_windows.py) and resampling.

A `Window` says, along each spatial dim, which input position output position `o` and
kernel tap `t` read:

    i = o * stride + t * dilation - pad

(positions outside [0, in_size) read the fill value). The helpers pad an input to the
span the windows cover, view it as windows without copying, walk the kernel taps as
slices (so Python loops run over the k*k taps, never over pixels), and crop a span back.
Arrays are laid out (N, C, *spatial); functions take the array module `xp` (NumPy or
CuPy) and know nothing of Tensor.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np


@dataclass(frozen=True)
class Window:
    """Where each output position of a sliding window reads its input, one entry per spatial dim."""

    in_size: tuple[int, ...]
    out_size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]        # leading padding; the trailing side is whatever the last window needs
    dilation: tuple[int, ...]

    # Cached (in the instance dict, which a frozen dataclass still has): every kernel asks several times.
    @functools.cached_property
    def span(self) -> tuple[int, ...]:
        """Padded length the windows cover: (out - 1) * stride + (kernel - 1) * dilation + 1."""
        return tuple(max(0, (o - 1) * s + (k - 1) * d + 1)
                     for o, k, s, d in zip(self.out_size, self.kernel, self.stride, self.dilation))

    @functools.cached_property
    def taps(self) -> int:
        return math.prod(self.kernel)


def pool_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """Output length of a pooling window (torch's pooling_output_shape, with its ceil_mode rule)."""
    num = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = num // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1  # the last window must start inside the input or the left padding
    return out


def acc_dtype(dtype: Any) -> Any:
    """The dtype arithmetic runs in: float32 for 16- and 8-bit floats (as PyTorch accumulates), else dtype."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iub" or dtype.itemsize >= 4:
        return dtype
    return np.dtype(np.float32)  # float16, and ml_dtypes' bfloat16 / float8 (NumPy kind "V")


def span_slices(win: Window) -> tuple[list[slice], list[slice]]:
    """(slices of the input, slices of the span-sized array) of the input positions some window reads."""
    src, dst = [], []
    for size, lo, length in zip(win.in_size, win.pad, win.span):
        stop = max(min(size, length - lo), 0)  # input positions some window reads: [0, stop)
        src.append(slice(0, stop))
        dst.append(slice(lo, lo + stop))
    return src, dst


def pad_to_span(xp: Any, x: Any, win: Window, fill: Any = 0) -> Any:
    """x (..., *in) as (..., *span): `pad` fill values in front, the tail padded or cut to fit."""
    nd = len(win.in_size)
    lead = x.shape[:x.ndim - nd]
    span = win.span
    src, dst = span_slices(win)
    if all(lo == 0 for lo in win.pad) and all(s.stop == length for s, length in zip(src, span)):
        return x[(Ellipsis, *src)]  # no padding needed: a view
    out = xp.full(lead + span, fill, dtype=x.dtype)
    out[(Ellipsis, *dst)] = x[(Ellipsis, *src)]
    return out


def windows(xp: Any, xs: Any, win: Window) -> Any:
    """A strided view (..., *kernel, *out) of a span-sized array (no copy)."""
    nd = len(win.in_size)
    lead = xs.ndim - nd
    st = xs.strides
    shape = xs.shape[:lead] + win.kernel + win.out_size
    strides = st[:lead] + tuple(st[lead + i] * win.dilation[i] for i in range(nd)) \
        + tuple(st[lead + i] * win.stride[i] for i in range(nd))
    return xp.lib.stride_tricks.as_strided(xs, shape=shape, strides=strides)


def taps(win: Window) -> Iterator[tuple[int, tuple[int, ...], tuple[slice, ...]]]:
    """(flat tap number, tap offsets, slices of the span-sized array it reads) for every kernel tap.

    Nothing when the output is empty (a slice for zero outputs cannot be written as start:stop:step).
    """
    if empty_output(win):
        return
    for flat, offs in enumerate(itertools.product(*[range(k) for k in win.kernel])):
        yield flat, offs, tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                                for t, o, s, d in zip(offs, win.out_size, win.stride, win.dilation))


def empty_output(win: Window) -> bool:
    return any(o == 0 for o in win.out_size)


def crop_from_span(xp: Any, buf: Any, win: Window) -> Any:
    """The inverse of pad_to_span for gradients: buf (..., *span) -> (..., *in), zeros where unread."""
    nd = len(win.in_size)
    lead = buf.shape[:buf.ndim - nd]
    src, dst = [], []
    for size, lo, length in zip(win.in_size, win.pad, win.span):
        stop = max(min(size, length - lo), 0)
        src.append(slice(lo, lo + stop))
        dst.append(slice(0, stop))
    if all(lo == 0 for lo in win.pad) and win.span == win.in_size:
        return buf
    out = xp.zeros(lead + win.in_size, dtype=buf.dtype)
    out[(Ellipsis, *dst)] = buf[(Ellipsis, *src)]
    return out
