"""Direct 2-D convolution and its weight gradient (float32, native), without columns.

im2col.py turns a conv into a GEMM over columns of C/G * kh * kw rows. For a first layer
(3 channels, 3x3: 27 rows) or a depthwise conv (9 rows) that GEMM is too thin for BLAS to
run near peak, and the columns copy the input nine times over before it starts. The native
bodies (csrc/conv.cpp) keep each output tile in registers across all of its taps instead,
reading a zero-padded copy of the input; on a CIFAR stem (32x3x32x32 -> 64) the forward is
~1.8x faster than im2col and GEMM on one core, and on maps at least 8 wide they beat it with
many rows too (see DIRECT_MAX_ROWS), on every core, where the column copies run on one.

Maps narrower than a vector with 16+ output channels per group run on channel tiles instead
(csrc/conv_channels.cpp), which vectorise over output channels rather than positions.

- ``conv2d_direct(x, w, b, win, groups)``: y (N, O, *out) = conv2d of x (N, C, H, W) with
  w (O, C/G, kh, kw) plus b (O,) or None;
- ``conv2d_weight_direct(x, g, win, groups)``: dw (O, C/G, kh, kw), the weight gradient
  for the output gradient g (N, O, *out).

Both take float32 arrays and a 2-D `Window` (any stride, padding, dilation). The reference bodies
sum tap by tap in float32; the native ones sum in another order and agree within 1e-5
relative to the size of the sums (float32 rounding).

    >>> from tensora.kernels.windows import Window
    >>> win = Window((3, 3), (3, 3), (3, 3), (1, 1), (1, 1), (1, 1))
    >>> conv2d_direct(np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 3, 3), np.float32), None, win, 1)[0, 0]
    array([[4., 6., 4.],
           [6., 9., 6.],
           [4., 6., 4.]], dtype=float32)
"""

from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np

from .registry import kernel

from .windows import Window

# When im2col.py hands a conv here (measured on one core of a Zen 4, float32): whenever rows
# (C/G * kh * kw) are few, where the forward is 1.7x and the weight gradient 1.8x faster than
# im2col + GEMM on a 3-channel 32x32 first layer, or the output is at least a vector (8) wide, where
# the forward still wins with many rows (1.5x at 64 channels on 16x16, 1.4x at 32 on 8x8) and the
# weight gradient breaks even with patch rows + GEMM on one core, but runs on every core where the
# patch-row copy runs on one. Narrower outputs with at least CHANNEL_MIN output channels per group
# run on channel tiles (csrc/conv_channels.cpp: 16 channels per vector pair, so no lane idles on a
# 4x4 map): on the digits CNN's 32 -> 64 conv on 4x4 maps (Zen 4, 2 cores, best runs) the forward
# is 1.7x / 2.2x and the weight gradient 1.3x / 1.6x faster than patch rows + GEMM with BLAS on 2 /
# 1 threads, and no BLAS threads are left spinning against the extension's pool. Only narrow maps
# with few channels per group are left to GEMM.
DIRECT_MAX_ROWS = 64
DIRECT_MIN_WIDTH = 8
CHANNEL_MIN = 16


def _native_2d(x: np.ndarray, win: Window) -> bool:
    """A float32 NumPy 2-D conv, and the native body present to run it (the
    reference bodies are the definition, slower than im2col + GEMM)."""
    return (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 4
            and conv2d_direct.body_for(x) == "native")


def applies(x: np.ndarray, w_shape: tuple, win: Window) -> bool:
    """Whether im2col.py should run conv2d_direct / conv2d_weight_direct for input x and a weight of
    w_shape (see above); an output gradient must be float32 too."""
    if not _native_2d(x, win):
        return False
    groups = x.shape[1] // w_shape[1] if w_shape[1] else 1
    return (w_shape[1] * win.taps <= DIRECT_MAX_ROWS or win.out_size[1] >= DIRECT_MIN_WIDTH
            or w_shape[0] >= CHANNEL_MIN * groups)


def _check(x: np.ndarray, w_shape: tuple, out_shape: tuple, win: Window, groups: int, fn: str) -> None:
    """The kernels' contract, checked before the native body touches memory (it checks again)."""
    if x.dtype != np.float32 or x.ndim != 4 or len(w_shape) != 4:
        raise TypeError(f"{fn}: expected a float32 (N, C, H, W) input and a 4-D weight, got {x.dtype} "
                        f"{x.shape} and {w_shape}")
    n, c = x.shape[:2]
    if groups < 1 or c % groups or w_shape[0] % groups or w_shape[1] * groups != c \
            or tuple(x.shape[2:]) != win.in_size or tuple(w_shape[2:]) != win.kernel \
            or tuple(out_shape) != (n, w_shape[0]) + win.out_size:
        raise ValueError(f"{fn}: shapes do not fit: input {x.shape}, weight {w_shape}, groups {groups}, "
                         f"window in {win.in_size} kernel {win.kernel} -> output {out_shape}")


def _grouped_taps(x: np.ndarray, win: Window, groups: int) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """((ky, kx), view (N, G, C/G, *out) of what that tap reads) of x zero-padded to the window's span;
    nothing for an empty output."""
    if 0 in win.out_size:
        return
    after = [(max(0, s - i - p)) for s, i, p in zip(win.span, win.in_size, win.pad)]
    xs = np.pad(x, ((0, 0), (0, 0)) + tuple(zip(win.pad, after)))[(Ellipsis, *(slice(0, s) for s in win.span))]
    xs = xs.reshape((x.shape[0], groups, x.shape[1] // groups) + xs.shape[2:])
    for offs in itertools.product(*(range(k) for k in win.kernel)):
        yield offs, xs[(Ellipsis, *(slice(t * d, t * d + (o - 1) * s + 1, s) for t, o, s, d in
                                    zip(offs, win.out_size, win.stride, win.dilation)))]


@kernel("conv2d_direct")
def conv2d_direct(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, win: Window, groups: int) -> np.ndarray:
    """y (N, O, *out) = sum over taps and the group's input channels of w * windows of x, plus b."""
    n, o = x.shape[0], w.shape[0]
    _check(x, w.shape, (n, o) + win.out_size, win, groups, "conv2d_direct")
    wg = w.reshape((groups, o // groups) + w.shape[1:])
    y = np.zeros((n, groups, o // groups) + win.out_size, np.float32)
    for (i, j), view in _grouped_taps(x, win, groups):
        y += np.einsum("gpc,ngcuv->ngpuv", wg[..., i, j], view)
    if b is not None:
        y += b.reshape(1, groups, o // groups, 1, 1)
    return y.reshape((n, o) + win.out_size)


@conv2d_direct.native_body
def _conv2d_direct_native(lib, x, w, b, win, groups):
    n, o = x.shape[0], w.shape[0]
    _check(x, w.shape, (n, o) + win.out_size, win, groups, "conv2d_direct")
    y = np.empty((n, o) + win.out_size, np.float32)
    bias = np.empty(0, np.float32) if b is None else np.ascontiguousarray(b)
    lib.conv2d_direct(np.ascontiguousarray(x), np.ascontiguousarray(w), bias, y, win.stride, win.pad, win.dilation,
                      groups)
    return y


@kernel("conv2d_weight_direct")
def conv2d_weight_direct(x: np.ndarray, g: np.ndarray, win: Window, groups: int) -> np.ndarray:
    """dw (O, C/G, kh, kw) = sum over batch and positions of g * windows of x, per tap."""
    n, c = x.shape[:2]
    o = g.shape[1]
    w_shape = (o, c // groups) + win.kernel
    _check(x, w_shape, g.shape, win, groups, "conv2d_weight_direct")
    gg = g.reshape((n, groups, o // groups) + win.out_size)
    dw = np.zeros((groups, o // groups, c // groups) + win.kernel, np.float32)
    for (i, j), view in _grouped_taps(x, win, groups):
        dw[..., i, j] = np.einsum("ngpuv,ngcuv->gpc", gg, view)
    return dw.reshape(w_shape)


@conv2d_weight_direct.native_body
def _conv2d_weight_direct_native(lib, x, g, win, groups):
    n, c = x.shape[:2]
    o = g.shape[1]
    w_shape = (o, c // groups) + win.kernel
    _check(x, w_shape, g.shape, win, groups, "conv2d_weight_direct")
    dw = np.empty(w_shape, np.float32)
    lib.conv2d_weight_direct(np.ascontiguousarray(x), np.ascontiguousarray(g), dw, win.stride, win.pad,
                             win.dilation, groups)
    return dw
