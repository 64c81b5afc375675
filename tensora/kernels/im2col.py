"""Sliding-window kernels for convolution and pooling, on arrays of any array module.

Every op here reads windows laid out by a `Window`: along each spatial dim,
output position `o` and kernel tap `t` read the input at

    i = o * stride + t * dilation - pad

(positions outside [0, in_size) read the fill value). Convolution gathers the
windows into one contiguous column array with a strided view (`im2col`) and
does a single matmul per group; its transposes scatter columns back with one
shifted-slice add per kernel tap (`col2im`), so the Python loops run over the
k*k taps, never over pixels. Pooling reuses the same taps loop.

Arrays are laid out (N, C, *spatial). The functions take the array module
`xp` (NumPy or CuPy) and return arrays; they know nothing of Tensor.
"""

from __future__ import annotations

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

    @property
    def span(self) -> tuple[int, ...]:
        """Padded length the windows cover: (out - 1) * stride + (kernel - 1) * dilation + 1."""
        return tuple(max(0, (o - 1) * s + (k - 1) * d + 1)
                     for o, k, s, d in zip(self.out_size, self.kernel, self.stride, self.dilation))

    @property
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


def pad_to_span(xp: Any, x: Any, win: Window, fill: Any = 0) -> Any:
    """x (..., *in) as (..., *span): `pad` fill values in front, the tail padded or cut to fit."""
    nd = len(win.in_size)
    lead = x.shape[:x.ndim - nd]
    span = win.span
    src, dst = [], []
    for size, lo, length in zip(win.in_size, win.pad, span):
        stop = min(size, length - lo)  # input positions some window reads: [0, stop)
        src.append(slice(0, max(stop, 0)))
        dst.append(slice(lo, lo + max(stop, 0)))
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
    if _empty_out(win):
        return
    for flat, offs in enumerate(itertools.product(*[range(k) for k in win.kernel])):
        yield flat, offs, tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                                for t, o, s, d in zip(offs, win.out_size, win.stride, win.dilation))


def _empty_out(win: Window) -> bool:
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


# -- convolution --------------------------------------------------------------------

def im2col(xp: Any, x: Any, win: Window, groups: int = 1, dtype: Any = None, ones_row: bool = False) -> Any:
    """Columns (N, G, C/G * taps [+ 1], L) of a zero-padded x (N, C, *in), in `dtype` (default x's).

    Row (c, *tap) of group g holds what tap `tap` of input channel g * C/G + c reads at each of
    the L output positions. With ones_row, a last row of ones lets a matmul add a bias for free
    (a separate pass over the output costs as much as the whole column copy).
    """
    n, c = x.shape[:2]
    rows = (c // groups) * win.taps
    cols = xp.empty((n, groups, rows + ones_row, math.prod(win.out_size)), dtype=dtype or x.dtype)
    if ones_row:
        cols[:, :, rows] = 1
    # Both views below only split axes, so the copy lands in `cols` itself.
    target = cols[:, :, :rows].reshape((n, groups, c // groups) + win.kernel + win.out_size)
    view = windows(xp, pad_to_span(xp, x, win), win)
    xp.copyto(target, view.reshape((n, groups, c // groups) + view.shape[2:]), casting="unsafe")
    return cols


def col2im(xp: Any, cols: Any, win: Window) -> Any:
    """Sum columns (N, C, *kernel, *out) back to (N, C, *in): the transpose of im2col."""
    nd = len(win.in_size)
    lead = cols.shape[:cols.ndim - 2 * nd]
    buf = xp.zeros(lead + win.span, dtype=cols.dtype)
    for _, offs, sl in taps(win):
        buf[(Ellipsis, *sl)] += cols[(Ellipsis, *offs) + (slice(None),) * nd]
    return crop_from_span(xp, buf, win)


def conv(xp: Any, x: Any, w: Any, b: Any, win: Window, groups: int) -> Any:
    """y (N, O, *out) = sum over taps and input channels of w * windows of x, plus bias b (O,) or None."""
    n, c = x.shape[:2]
    o = w.shape[0]
    acc = acc_dtype(x.dtype)
    cols = im2col(xp, x, win, groups, acc, ones_row=b is not None)
    w2 = w.reshape(groups, o // groups, (c // groups) * win.taps).astype(acc, copy=False)
    if b is not None:  # the bias rides along as one more weight column, against the row of ones
        w2 = xp.concatenate([w2, b.astype(acc, copy=False).reshape(groups, o // groups, 1)], axis=2)
    y = xp.matmul(w2, cols)  # (N, G, O/G, L)
    return y.reshape((n, o) + win.out_size).astype(x.dtype, copy=False)


def conv_transpose(xp: Any, y: Any, w: Any, b: Any, win: Window, groups: int) -> Any:
    """x (N, C, *in) = the transpose of `conv` applied to y (N, O, *out), plus bias b (C,) or None.

    This is both the gradient of conv with respect to its input and conv_transpose.
    """
    n, o = y.shape[:2]
    cg = w.shape[1]
    acc = acc_dtype(y.dtype)
    flipped = _flipped_window(win)
    if flipped is not None and o // groups <= cg:
        # Stride 1: a plain conv of y with the flipped, transposed kernel. Its columns are no wider
        # than col2im's (O/G <= C/G) and it skips col2im's k*k read-add-write passes.
        kernel = w.reshape((groups, o // groups, cg) + win.kernel).swapaxes(1, 2)
        kernel = kernel[(Ellipsis,) + (slice(None, None, -1),) * len(win.kernel)]
        return conv(xp, y, kernel.reshape((groups * cg, o // groups) + win.kernel), b, flipped, groups)
    if _depthwise(w, groups):
        x = _depthwise_transpose(xp, y.astype(acc, copy=False), w.astype(acc, copy=False), win)
        if b is not None:
            x += b.astype(acc, copy=False).reshape((1, o) + (1,) * len(win.in_size))
        return x.astype(y.dtype, copy=False)
    w2 = w.reshape(groups, o // groups, cg * win.taps).astype(acc, copy=False)
    y2 = y.reshape(n, groups, o // groups, math.prod(win.out_size)).astype(acc, copy=False)
    cols = xp.matmul(w2.swapaxes(-1, -2), y2)  # (N, G, C/G * taps, L)
    x = col2im(xp, cols.reshape((n, groups * cg) + win.kernel + win.out_size), win)
    if b is not None:
        x += b.astype(acc, copy=False).reshape((1, groups * cg) + (1,) * len(win.in_size))
    return x.astype(y.dtype, copy=False)


def conv_weight(xp: Any, x: Any, g: Any, win: Window, groups: int) -> Any:
    """dw (O, C/G, *kernel) = sum over batch and positions of g (N, O, *out) * windows of x (N, C, *in)."""
    n, c = x.shape[:2]
    o = g.shape[1]
    acc = acc_dtype(x.dtype)
    if o == groups and c == groups:
        return _depthwise_weight(xp, x.astype(acc, copy=False), g.astype(acc, copy=False), win).astype(x.dtype)
    length = math.prod(win.out_size)
    cols = im2col(xp, x, win, groups, acc)
    g2 = g.reshape(n, groups, o // groups, length).astype(acc, copy=False)
    if n == 1:
        dw = xp.matmul(g2[0], cols[0].swapaxes(-1, -2))
    else:
        # One GEMM per sample, reading the columns transposed in place, then a small sum.
        dw = xp.matmul(g2, cols.swapaxes(-1, -2)).sum(axis=0)
    return dw.reshape((o, c // groups) + win.kernel).astype(x.dtype, copy=False)


def _flipped_window(win: Window) -> Window | None:
    """For stride 1, the window of the conv that equals conv_transpose with flipped taps; else None.

    Output i of the transpose sums y[i + pad - t * dilation] * w[t]; with t' = k - 1 - t that reads
    y at i + t' * dilation - ((k - 1) * dilation - pad): a conv with leading padding (k-1)*d - pad.
    """
    if any(s != 1 for s in win.stride):
        return None
    pad = tuple((k - 1) * d - p for k, d, p in zip(win.kernel, win.dilation, win.pad))
    if any(p < 0 for p in pad):
        return None
    return Window(win.out_size, win.in_size, win.kernel, win.stride, pad, win.dilation)


def _depthwise(w: Any, groups: int) -> bool:
    """One input and one output channel per group: per-tap products beat batches of 1-wide matmuls."""
    return w.shape[1] == 1 and w.shape[0] == groups


def _depthwise_transpose(xp: Any, y: Any, w: Any, win: Window) -> Any:
    nd = len(win.in_size)
    wt = w.reshape(w.shape[0], win.taps)
    buf = xp.zeros(y.shape[:2] + win.span, dtype=y.dtype)
    for flat, _, sl in taps(win):
        buf[(Ellipsis, *sl)] += y * wt[:, flat].reshape((1, wt.shape[0]) + (1,) * nd)
    return crop_from_span(xp, buf, win)


def _depthwise_weight(xp: Any, x: Any, g: Any, win: Window) -> Any:
    if _empty_out(win):
        return xp.zeros((g.shape[1], 1) + win.kernel, dtype=g.dtype)
    xs = pad_to_span(xp, x, win)
    spatial = "uvw"[:len(win.in_size)]
    spec = f"nc{spatial},nc{spatial}->c"
    dw = xp.stack([xp.einsum(spec, g, xs[(Ellipsis, *sl)]) for _, _, sl in taps(win)], axis=1)
    return dw.reshape((g.shape[1], 1) + win.kernel)


# -- pooling ------------------------------------------------------------------------

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


def window_max(xp: Any, x: Any, win: Window, with_taps: bool = True) -> tuple[Any, Any]:
    """(max over each window, tap number of the max or None): first max wins, NaN propagates (as PyTorch)."""
    xs = pad_to_span(xp, x, win, lowest(x.dtype))
    shape = x.shape[:x.ndim - len(win.in_size)] + win.out_size
    tap_dtype = np.uint8 if win.taps <= 256 else np.int32
    if _empty_out(win):
        return xp.empty(shape, dtype=x.dtype), xp.zeros(shape, dtype=tap_dtype)
    views = [xs[(Ellipsis, *sl)] for _, _, sl in taps(win)]
    best = views[0].copy()  # a fresh array: maximum() writes into it, and views[0] may be the input
    for v in views[1:]:
        xp.maximum(best, v, out=best)  # propagates NaN
    if not with_taps:
        return best, None
    idx = xp.zeros(shape, dtype=tap_dtype)
    found = views[0] == best
    for flat in range(1, len(views)):
        hit = (views[flat] == best) & ~found  # only the first tap holding the max
        found |= hit
        idx += hit * tap_dtype(flat)  # bool arithmetic: far faster than copyto(where=)
    if best.dtype.kind not in "iub":
        nan = xp.isnan(best)
        if nan.any():  # PyTorch keeps the last NaN it meets
            for flat in range(len(views)):
                xp.copyto(idx, tap_dtype(flat), where=xp.isnan(views[flat]))
    return best, idx


def window_select(xp: Any, x: Any, win: Window, idx: Any) -> Any:
    """out[..., o] = the input value at tap idx[..., o] of window o (gather by tap number)."""
    xs = pad_to_span(xp, x, win)
    out = xp.zeros(idx.shape, dtype=x.dtype)
    for flat, _, sl in taps(win):
        xp.copyto(out, xs[(Ellipsis, *sl)], where=idx == flat)
    return out


def window_scatter(xp: Any, g: Any, win: Window, idx: Any) -> Any:
    """The transpose of window_select: add g[..., o] into the input position of tap idx[..., o]."""
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


# -- separable resampling (interpolate, adaptive pooling) ---------------------------

DENSE_RESAMPLE_RATIO = 16  # measured: BLAS beats take + multiply + add up to ~16-32 inputs per tap


def resample(xp: Any, x: Any, axis: int, index: Any, weight: Any) -> Any:
    """out[..., j, ...] = sum_t x[..., index[j, t], ...] * weight[j, t] along `axis`.

    `index` and `weight` are small host (NumPy) tables of shape (out, T). Weighted maps over a
    short input dim (at most DENSE_RESAMPLE_RATIO * T) run as one matmul with the dense (out, in)
    matrix; pure gathers (nearest), long dims, and inputs holding inf/NaN (0 * inf would leak
    NaN into every output of the row) run as T gathers.
    """
    acc = acc_dtype(x.dtype)
    xa = x.astype(acc, copy=False)
    in_size = x.shape[axis]
    out_size, t = index.shape
    out_shape = list(x.shape)
    out_shape[axis] = out_size
    if xa.size == 0 or t == 0:
        return xp.zeros(out_shape, dtype=x.dtype)
    gather = bool((weight == 1).all())
    if not gather and in_size <= DENSE_RESAMPLE_RATIO * t and bool(xp.isfinite(xa).all()):
        dense = np.zeros((out_size, in_size))
        np.add.at(dense, (np.repeat(np.arange(out_size), t), index.ravel()), weight.ravel())
        dense = xp.asarray(dense.astype(acc))
        if axis in (-1, x.ndim - 1):
            out = xp.matmul(xa, dense.T)
        else:
            out = xp.moveaxis(xp.matmul(dense, xp.moveaxis(xa, axis, -2)), -2, axis)
        return out.astype(x.dtype, copy=False)
    shape = [1] * x.ndim
    shape[axis] = out_size
    out = None
    for j in range(t):
        part = xp.take(xa, xp.asarray(index[:, j]), axis=axis)
        if not gather:
            part *= xp.asarray(weight[:, j].astype(acc)).reshape(shape)
        if out is None:
            out = part
        else:
            out += part
    return out.astype(x.dtype, copy=False)


def transpose_table(index: np.ndarray, weight: np.ndarray, in_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The (in_size, M) table of the transposed map: which outputs each input feeds, with weights."""
    out_size, t = index.shape
    src = index.ravel()
    dst = np.repeat(np.arange(out_size, dtype=np.int64), t)
    w = weight.ravel()
    keep = w != 0
    src, dst, w = src[keep], dst[keep], w[keep]
    order = np.argsort(src, kind="stable")
    src, dst, w = src[order], dst[order], w[order]
    counts = np.bincount(src, minlength=in_size)
    m = int(counts.max()) if counts.size else 0
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])) if counts.size else counts
    rank = np.arange(src.size) - starts[src]
    tindex = np.zeros((in_size, m), dtype=np.int64)
    tweight = np.zeros((in_size, m), dtype=weight.dtype)
    tindex[src, rank] = dst
    tweight[src, rank] = w
    return tindex, tweight
