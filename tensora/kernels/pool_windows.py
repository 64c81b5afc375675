"""Pooling kernels on the sliding windows of im2col.py: max (with the argmax tap), its select and
scatter transposes, and window sums (average pooling) with theirs.

Like im2col.py, they take the array module `xp` and arrays laid out (N, C, *spatial), and
loop over the kernel's taps, never over pixels. Float32 2-D max pooling of NumPy arrays runs on
native kernels where the extension is loaded (``max_pool2d``, ``max_pool2d_scatter``; csrc/
conv_pool.cpp): one pass over the windows instead of a dozen NumPy passes over tap views, the
maxima 2.4x and the gradient's scatter 2.6-3.8x faster on the digits CNN's pools. Their reference
bodies are the NumPy code below.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .registry import kernel
from .windows import Window, acc_dtype, crop_from_span, empty_output, pad_to_span, taps, windows


def lowest(dtype: Any) -> Any:
    """The fill value a max never picks: -inf for floats, the minimum for ints."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    return -np.inf


def disjoint(win: Window) -> bool:
    """True when no two windows share an input position (stride past each window's extent in every dim).

    Scatters can then assign each tap's slice instead of adding into it.
    """
    return all(s > (k - 1) * d for k, s, d in zip(win.kernel, win.stride, win.dilation))


def _native_2d(x: Any, win: Window) -> bool:
    """A float32 NumPy (N, C, H, W) array pooled over 2-D windows of at most 256 taps, and the
    native body present to run it."""
    return (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 4 and len(win.kernel) == 2
            and win.taps <= 256 and max_pool2d.body_for(x) == "native")


def window_max(xp: Any, x: Any, win: Window, with_taps: bool = True) -> tuple[Any, Any]:
    """(max over each window, tap number of the max or None): first max wins, NaN propagates (as PyTorch)."""
    if _native_2d(x, win):
        best, idx = max_pool2d(x, win)
        return best, idx if with_taps else None
    return _window_max(xp, x, win, with_taps)


def _window_max(xp: Any, x: Any, win: Window, with_taps: bool) -> tuple[Any, Any]:
    """window_max in NumPy (or CuPy) passes over tap views.

    With taps, disjoint windows (pooling with stride = kernel) first copy their taps into contiguous
    planes: the max and the tap search are several passes per tap, and NumPy runs each on a strided
    tap view (runs of out_last elements) 5-10x slower than on a plane, where one copy of all the
    planes costs about one strided pass (30% off the whole). The max alone is one pass per tap, and
    overlapping windows would copy the input several times over: those read the tap views in place.
    """
    xs = pad_to_span(xp, x, win, lowest(x.dtype))
    shape = x.shape[:x.ndim - len(win.in_size)] + win.out_size
    tap_dtype = np.uint8 if win.taps <= 256 else np.int32
    if empty_output(win):
        return xp.empty(shape, dtype=x.dtype), xp.zeros(shape, dtype=tap_dtype)
    if with_taps and disjoint(win):
        views = _tap_planes(xp, xs, win)
    else:
        views = [xs[(Ellipsis, *sl)] for _, _, sl in taps(win)]
    best = views[0].copy()  # a fresh array: maximum() writes into it, and views[0] may be the input
    for v in views[1:]:
        xp.maximum(best, v, out=best)  # propagates NaN
    if not with_taps:
        return best, None
    idx = xp.zeros(shape, dtype=tap_dtype)
    found = views[0] == best
    for flat in range(1, len(views)):
        hit = views[flat] == best
        xp.greater(hit, found, out=hit)  # hit and not found: only the first tap holding the max
        found |= hit
        idx += hit * tap_dtype(flat)  # bool arithmetic: far faster than copyto(where=)
    if best.dtype.kind not in "iub":
        nan = xp.isnan(best)
        if nan.any():  # PyTorch keeps the last NaN it meets
            for flat in range(len(views)):
                xp.copyto(idx, tap_dtype(flat), where=xp.isnan(views[flat]))
    return best, idx


def _tap_planes(xp: Any, xs: Any, win: Window) -> Any:
    """Every tap's view of a span-sized xs (..., *span) copied to one contiguous (taps, ..., *out) array."""
    nd = len(win.kernel)
    view = windows(xp, xs, win)  # (..., *kernel, *out)
    lead = view.ndim - 2 * nd
    axes = tuple(range(lead, lead + nd)) + tuple(range(lead)) + tuple(range(lead + nd, view.ndim))
    return xp.ascontiguousarray(view.transpose(axes)).reshape((win.taps,) + view.shape[:lead] + win.out_size)


def window_select(xp: Any, x: Any, win: Window, idx: Any) -> Any:
    """out[..., o] = the input value at tap idx[..., o] of window o (gather by tap number)."""
    xs = pad_to_span(xp, x, win)
    out = xp.zeros(idx.shape, dtype=x.dtype)
    for flat, _, sl in taps(win):
        xp.copyto(out, xs[(Ellipsis, *sl)], where=idx == flat)
    return out


def window_scatter(xp: Any, g: Any, win: Window, idx: Any) -> Any:
    """The transpose of window_select: add g[..., o] into the input position of tap idx[..., o]."""
    if _native_2d(g, win) and idx.dtype == np.uint8:
        return max_pool2d_scatter(g, win, idx)
    return _window_scatter(xp, g, win, idx)


def _window_scatter(xp: Any, g: Any, win: Window, idx: Any) -> Any:
    """window_scatter in NumPy (or CuPy) passes over tap views."""
    acc = acc_dtype(g.dtype)
    ga = g.astype(acc, copy=False)
    buf = xp.zeros(g.shape[:g.ndim - len(win.in_size)] + win.span, dtype=acc)
    # ga * hit is ~4x faster than where(hit, ga, 0), but inf * False is NaN: non-finite gradients
    # take the exact where() form.
    finite = bool(xp.isfinite(ga).all())
    zero = xp.zeros((), dtype=acc)
    for flat, _, sl in taps(win):
        hit = idx == flat
        target = buf[(Ellipsis, *sl)]
        if disjoint(win) and finite:
            xp.multiply(ga, hit, out=target)
        elif disjoint(win):
            target[...] = xp.where(hit, ga, zero)
        else:
            target += ga * hit if finite else xp.where(hit, ga, zero)
    return crop_from_span(xp, buf, win).astype(g.dtype, copy=False)


def _geometry(win: Window) -> tuple:
    return win.kernel, win.stride, win.pad, win.dilation


@kernel("max_pool2d")
def max_pool2d(x: np.ndarray, win: Window) -> tuple[np.ndarray, np.ndarray]:
    """(maxima (N, C, *out), their uint8 tap numbers) of float32 x (N, C, H, W) over 2-D windows."""
    return _window_max(np, x, win, True)


@max_pool2d.native_body
def _max_pool2d_native(lib, x, win):
    shape = x.shape[:2] + win.out_size
    out, idx = np.empty(shape, np.float32), np.empty(shape, np.uint8)
    lib.max_pool2d(np.ascontiguousarray(x), out, idx, *_geometry(win))
    return out, idx


@kernel("max_pool2d_scatter")
def max_pool2d_scatter(g: np.ndarray, win: Window, idx: np.ndarray) -> np.ndarray:
    """float32 g (N, C, *out) added into the input position (N, C, H, W) of each window's tap idx."""
    return _window_scatter(np, g, win, idx)


@max_pool2d_scatter.native_body
def _max_pool2d_scatter_native(lib, g, win, idx):
    out = np.empty(g.shape[:2] + win.in_size, np.float32)
    lib.max_pool2d_scatter(np.ascontiguousarray(g), np.ascontiguousarray(idx), out, *_geometry(win))
    return out


def window_sum(xp: Any, x: Any, win: Window, divisor: Any) -> Any:
    """Sum of each zero-padded window divided by `divisor` (broadcast to out): average pooling.

    Integer inputs divide with truncation toward zero, as PyTorch's integer avg_pool does.
    """
    acc = acc_dtype(x.dtype)
    xs = pad_to_span(xp, x, win)
    out = xp.zeros(x.shape[:x.ndim - len(win.in_size)] + win.out_size, dtype=acc)
    for _, _, sl in taps(win):
        out += xs[(Ellipsis, *sl)]
    div = xp.asarray(divisor)
    if out.dtype.kind in "iu":
        out = xp.where(out < 0, -(-out // div), out // div)
    else:
        out /= div.astype(acc, copy=False)
    return out.astype(x.dtype, copy=False)


def window_sum_t(xp: Any, g: Any, win: Window, divisor: Any) -> Any:
    """The transpose of window_sum: every position of window o receives g[o] / divisor[o]."""
    acc = acc_dtype(g.dtype)
    ga = g.astype(acc, copy=False) / xp.asarray(divisor).astype(acc, copy=False)
    buf = xp.zeros(g.shape[:g.ndim - len(win.in_size)] + win.span, dtype=acc)
    for _, _, sl in taps(win):
        if disjoint(win):
            buf[(Ellipsis, *sl)] = ga
        else:
            buf[(Ellipsis, *sl)] += ga
    return crop_from_span(xp, buf, win).astype(g.dtype, copy=False)


def flat_input_index(win: Window, idx: Any, xp: Any) -> Any:
    """Tap numbers -> flat index into each (n, c) input plane, as max_pool's return_indices gives."""
    nd = len(win.in_size)
    taps_nd = xp.unravel_index(idx.astype(np.int64), win.kernel)
    flat = xp.zeros(idx.shape, dtype=np.int64)
    for i in range(nd):
        shape = [1] * nd
        shape[i] = win.out_size[i]
        start = (xp.arange(win.out_size[i], dtype=np.int64) * win.stride[i] - win.pad[i]).reshape(shape)
        pos = start + taps_nd[i] * win.dilation[i]
        flat = flat * win.in_size[i] + pos
    return flat
