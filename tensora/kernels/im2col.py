"""Convolution over sliding windows, on arrays of any array module.

Windows are laid out by a `Window` (windows.py: which input position each output
position and kernel tap read, padding, and the taps loop). Convolution gathers the
windows into one contiguous column array with a strided view (`im2col`) and
does a single matmul per group; its transposes scatter columns back with one
shifted-slice add per kernel tap (`col2im`), so the Python loops run over the
k*k taps, never over pixels. Pooling (pool_windows.py) reuses the same taps loop.
Float32 2-D convs with few rows per output, outputs at least 8 wide or 16+ output
channels per group go to the native direct kernels instead (direct_conv.py), and a strided transpose there runs
as one stride-1 conv per output phase (conv_phases.py).

Arrays are laid out (N, C, *spatial). The functions take the array module
`xp` (NumPy or CuPy) and return arrays; they know nothing of Tensor.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Iterator


from . import conv_phases, direct_conv
from .windows import Window, acc_dtype, crop_from_span, empty_output, pad_to_span, span_slices, taps, windows


# -- convolution --------------------------------------------------------------------
#
# Columns cover a grid of output positions. For stride 1 and a narrow output (small feature maps)
# the grid is the flattened zero-padded input plane, (out_0, span_1, ..., width): each tap then
# reads one contiguous run of the plane, where the output grid reads runs of out_last (8 elements
# on an 8x8 map; NumPy copies in runs that short cost more than the GEMM after them). In the last
# dim, rows share their zero gap (one row's right padding is the next row's left padding), so
# width = in + max(left, right padding). Grid positions past out_i (i >= 1) are computed and
# dropped: 12% more GEMM columns on an 8x8 map, 25% on 4x4, none in 1-D. Wider outputs (whose
# runs are long enough) and other strides use the output grid and a strided view, and so do convs
# with few column rows for their output channels (a 1-channel first layer): the padded grid saves
# copying runs of the input rows, but costs two passes over the output channels (cropping y,
# widening its gradient to the grid).
#
# Columns on the padded-plane grid are laid out (G, rows, N * L), the batch inside: the weight
# gradient and the col2im products are then one GEMM over the whole batch (on small maps a batch
# of per-sample GEMMs and their sum cost up to twice as much). Other columns are (N, G, rows, L):
# on large maps a (G, rows, N * L) product would need a transposing copy of the output.

KEEP_COLS_BYTES = 64 << 20  # ops/conv.py keeps a forward's columns for the weight gradient up to this
FLAT_MAX_WIDTH = 16  # measured: at 32 wide, cropping the extra positions costs more than it saves


def _narrow(win: Window) -> bool:
    """Whether the padded-plane grid suits the window: stride 1 and a narrow (or 1-D) output."""
    return (all(s == 1 for s in win.stride) and not empty_output(win)
            and (len(win.kernel) == 1 or win.out_size[-1] <= FLAT_MAX_WIDTH))


def _flat(win: Window, rows: int, outs: int) -> bool:
    """Whether columns of `rows` rows per group, multiplied into `outs` output channels per group,
    use the padded-plane grid and the batch-inside layout (see above)."""
    return _narrow(win) and rows >= 2 * outs


@functools.lru_cache(maxsize=256)  # a pure function of its (hashable) arguments, asked ~10 times a conv
def col_grid(win: Window, flat: bool) -> tuple[int, ...]:
    """The grid of output positions that columns (and the GEMMs on them) cover; see above."""
    if not flat or len(win.kernel) == 1:
        return win.out_size  # in one dim, the runs are the output itself
    lo, span, size = win.pad[-1], win.span[-1], win.in_size[-1]
    stop = max(min(size, span - lo), 0)  # input positions the windows read in the last dim
    width = max(stop + max(lo, span - lo - stop), win.out_size[-1])
    return (win.out_size[0],) + win.span[1:-1] + (width,)


def cols_per_sample(cols: Any, win: Window, n: int, flat: bool) -> Any:
    """im2col's columns as (N, G, rows, L), a view whatever their layout."""
    if not flat:
        return cols
    return cols.reshape(cols.shape[:2] + (n, math.prod(col_grid(win, flat)))).transpose(2, 0, 1, 3)


def _plane(xp: Any, x: Any, win: Window, dtype: Any = None) -> Any:
    """x (N, C, *in) zero-padded to (N, C, span_0 + 1, *col_grid[1:]), in `dtype` (default x's). The
    extra slice of dim 0 keeps every tap's run (it overshoots by less than a slice) in its plane."""
    out = xp.zeros(x.shape[:2] + (win.span[0] + 1,) + col_grid(win, True)[1:], dtype=dtype or x.dtype)
    src, dst = span_slices(win)
    out[(Ellipsis, *dst)] = x[(Ellipsis, *src)]
    return out


def _plane_runs(xp: Any, plane: Any, win: Window) -> Any:
    """A strided view (N, C, *kernel, L) of a padded plane: tap t's run of the L grid positions starts
    at flat offset sum_i t_i * dilation_i * (elements per step of dim i)."""
    st = plane.strides
    shape = plane.shape[:2] + win.kernel + (math.prod(col_grid(win, True)),)
    strides = st[:2] + tuple(s * d for s, d in zip(st[2:], win.dilation)) + (st[-1],)
    return xp.lib.stride_tricks.as_strided(plane, shape=shape, strides=strides)


def _outputs(win: Window) -> tuple:
    """Index of the output positions within (..., *col_grid)."""
    return (Ellipsis,) + tuple(slice(0, o) for o in win.out_size)


def _to_grid(xp: Any, g: Any, win: Window, dtype: Any, flat: bool, batch_inside: bool = False) -> Any:
    """g (N, O, *out) on the columns' grid in dtype, zeros at the grid's other positions:
    (N, O, *col_grid), or (O, N, *col_grid) with batch_inside."""
    grid = col_grid(win, flat)
    if grid == win.out_size and not batch_inside:
        return g.astype(dtype, copy=False)
    lead = (g.shape[1], g.shape[0]) if batch_inside else g.shape[:2]
    out = xp.empty(lead + grid, dtype=dtype) if grid == win.out_size else xp.zeros(lead + grid, dtype=dtype)
    xp.copyto(out[_outputs(win)], g.swapaxes(0, 1) if batch_inside else g, casting="unsafe")
    return out


def _from_grid(xp: Any, y: Any, win: Window, dtype: Any, flat: bool) -> Any:
    """y (N, O, *col_grid) as a C-contiguous (N, O, *out) array of dtype (y itself if it is one)."""
    if col_grid(win, flat) != win.out_size:
        y = y[_outputs(win)]
    return xp.ascontiguousarray(y.astype(dtype, copy=False))


def im2col(xp: Any, x: Any, win: Window, flat: bool, groups: int = 1, dtype: Any = None,
           ones_row: bool = False) -> Any:
    """Columns of a zero-padded x (N, C, *in), in `dtype` (default x's): (G, rows, N * L) on the
    padded-plane grid (flat), else (N, G, rows, L), with rows = C/G * taps [+ 1] (see above).

    Row (c, *tap) of group g holds what tap `tap` of input channel g * C/G + c reads at each of
    the L positions of col_grid(win, flat) (sample n's at columns n * L ... in the first layout). With
    ones_row, a last row of ones lets a matmul add a bias for free (a separate pass over the
    output costs as much as the whole column copy).
    """
    n, c = x.shape[:2]
    rows = (c // groups) * win.taps
    length = math.prod(col_grid(win, flat))
    if flat:
        cols = xp.empty((groups, rows + ones_row, n * length), dtype=dtype or x.dtype)
        target = cols[:, :rows]
        view = _plane_runs(xp, _plane(xp, x, win), win)  # (N, C, *kernel, L)
        view = xp.moveaxis(view, 0, -2)  # (C, *kernel, N, L): the runs stay innermost
        split = (groups, c // groups) + view.shape[1:]
    else:
        cols = xp.empty((n, groups, rows + ones_row, length), dtype=dtype or x.dtype)
        target = cols[:, :, :rows]
        view = windows(xp, pad_to_span(xp, x, win), win)  # (N, C, *kernel, *out)
        split = (n, groups, c // groups) + view.shape[2:]
    if ones_row:
        cols[..., rows, :] = 1
    # Both reshapes only split axes, so the copy lands in `cols` itself.
    xp.copyto(target.reshape(split), view.reshape(split), casting="unsafe")
    return cols


def col2im(xp: Any, cols: Any, win: Window, n: int, flat: bool) -> Any:
    """Sum columns laid out as im2col's (without a ones row) back to (N, C, *in): its transpose.
    Columns at grid positions outside the output must hold zeros: they add to other positions."""
    every = (slice(None), slice(None))
    if flat:
        c = cols.shape[0] * cols.shape[1] // win.taps
        grid = col_grid(win, flat)
        per_tap = cols.reshape((c,) + win.kernel + (n, math.prod(grid)))  # (C, *kernel, N, L)
        buf = xp.zeros((n, c, win.span[0] + 1) + grid[1:], dtype=cols.dtype)
        runs = _plane_runs(xp, buf, win)  # (N, C, *kernel, L), each tap's run a view of buf
        for offs in itertools.product(*[range(k) for k in win.kernel]):
            runs[every + offs] += per_tap[(slice(None),) + offs].swapaxes(0, 1)
    else:
        c = cols.shape[1] * cols.shape[2] // win.taps
        per_tap = cols.reshape((n, c) + win.kernel + win.out_size)
        buf = xp.zeros((n, c) + win.span, dtype=cols.dtype)
        for _, offs, sl in taps(win):
            buf[(Ellipsis, *sl)] += per_tap[every + offs]
    src, dst = span_slices(win)
    out = xp.zeros((n, c) + win.in_size, dtype=cols.dtype)
    out[(Ellipsis, *src)] = buf[(Ellipsis, *dst)]
    return out


# -- patch rows -----------------------------------------------------------------------
#
# Ungrouped 2-D and 3-D convs over enough input channels on small maps use patch rows instead of
# columns: x is copied once to a zero-padded channels-last plane (N, *span, C), and row (n, *pos)
# of the (N * L, taps * C) rows holds window pos's taps, each tap's C channels contiguous (and, at
# dilation 1, a kernel row's taps too: runs of k * C, where columns read runs of at most the map's
# width). The rows cover the exact output positions, no padded-plane extras, and every product is
# one GEMM with the N * L positions as its long M dim, the shape OpenBLAS runs fastest: on 8x8 and
# 4x4 maps the forward takes 10-30% less time than with columns, the weight gradient 40%. The
# forward's (N * L, O) product is transposed to (N, O, *out) in the pass that adds the bias. On
# large maps columns read long runs already, while the channels-last copies stride a whole map
# apart (from 4 KiB on, NumPy's transposing copy runs ~8x slower per element): those keep columns,
# and so do 1-D convs, whose columns read whole rows with no padded-plane extras.

ROW_MIN_RUN = 16  # contiguous elements per tap; measured: rows lose to columns at 3-9 (1-3 channels), win at 96
ROW_MAX_MAP = 512  # measured: rows win up to 16x16 maps (256 positions); at 32x32 columns win


def _use_rows(win: Window, c: int, groups: int) -> bool:
    """Whether a conv over c input channels in `groups` groups runs on patch rows (see above)."""
    run = c * (win.kernel[-1] if win.dilation[-1] == 1 else 1)
    small = max(math.prod(win.in_size), math.prod(win.out_size)) <= ROW_MAX_MAP
    return groups == 1 and len(win.kernel) > 1 and run >= ROW_MIN_RUN and small and not empty_output(win)


def _channels_last(a: Any) -> Any:
    """A view (N, *spatial, C) of a (N, C, *spatial) array (a transpose: moveaxis costs ~10x more)."""
    return a.transpose((0,) + tuple(range(2, a.ndim)) + (1,))


def _channels_first(a: Any) -> Any:
    """A view (N, C, *spatial) of a (N, *spatial, C) array: the inverse of _channels_last."""
    return a.transpose((0, a.ndim - 1) + tuple(range(1, a.ndim - 1)))


def _patches(xp: Any, plane: Any, win: Window) -> Any:
    """A strided view (N, *out, *kernel, C) of a channels-last (N, *span, C) array (no copy)."""
    nd = len(win.kernel)
    st = plane.strides
    shape = plane.shape[:1] + win.out_size + win.kernel + plane.shape[-1:]
    strides = (st[:1] + tuple(st[1 + i] * win.stride[i] for i in range(nd))
               + tuple(st[1 + i] * win.dilation[i] for i in range(nd)) + st[-1:])
    return xp.lib.stride_tricks.as_strided(plane, shape=shape, strides=strides)


def im2row(xp: Any, x: Any, win: Window, dtype: Any = None) -> Any:
    """Patch rows (N * L, taps * C) of a zero-padded x (N, C, *in), in `dtype` (default x's).

    Row n * L + (flat output position) holds, for every (tap, channel), what that tap of that
    channel reads in that window of sample n.
    """
    n, c = x.shape[:2]
    plane = xp.zeros((n,) + win.span + (c,), dtype=dtype or x.dtype)
    src, dst = span_slices(win)
    xp.copyto(plane[(slice(None), *dst)], _channels_last(x[(Ellipsis, *src)]), casting="unsafe")
    return xp.ascontiguousarray(_patches(xp, plane, win)).reshape(n * math.prod(win.out_size), -1)


def row2im(xp: Any, rows: Any, win: Window, n: int) -> Any:
    """Sum patch rows (N * L, taps * C) back to (N, C, *in): the transpose of im2row."""
    c = rows.shape[1] // win.taps
    buf = xp.zeros((n,) + win.span + (c,), dtype=rows.dtype)
    per_tap = rows.reshape((n,) + win.out_size + win.kernel + (c,))
    runs = _patches(xp, buf, win)  # each tap's (N, *out, C) positions, a view of buf
    every = (slice(None),) * (1 + len(win.out_size))
    for offs in itertools.product(*[range(k) for k in win.kernel]):
        runs[every + offs] += per_tap[every + offs]
    src, dst = span_slices(win)
    out = xp.zeros((n, c) + win.in_size, dtype=rows.dtype)
    out[(Ellipsis, *src)] = _channels_first(buf[(slice(None), *dst)])
    return out


def _row_weight(xp: Any, w: Any, dtype: Any) -> Any:
    """w (O, C, *kernel) as (O, taps * C), its columns in the rows' (tap, channel) order."""
    return _channels_last(w).reshape(w.shape[0], -1).astype(dtype, copy=False)


def _conv_rows(xp: Any, x: Any, w: Any, b: Any, win: Window) -> tuple[Any, Any]:
    """conv_and_cols on patch rows: (y, the rows)."""
    n, o = x.shape[0], w.shape[0]
    acc = acc_dtype(x.dtype)
    rows = im2row(xp, x, win, acc)
    yt = xp.matmul(rows, _row_weight(xp, w, acc).T).reshape(n, -1, o).swapaxes(1, 2)  # (N, O, L) view
    y = xp.empty((n, o) + win.out_size, dtype=acc)
    if b is None:
        xp.copyto(y.reshape(yt.shape), yt)
    else:
        xp.add(yt, b.astype(acc, copy=False).reshape(1, o, 1), out=y.reshape(yt.shape))
    return y.astype(x.dtype, copy=False), rows


def _rows_by_position(xp: Any, g: Any, dtype: Any) -> Any:
    """g (N, O, *out) as an (O, N * L) array of dtype: the weight gradient's left operand."""
    n, o = g.shape[:2]
    return xp.ascontiguousarray(g.reshape(n, o, -1).swapaxes(0, 1), dtype=dtype).reshape(o, -1)


def _conv_transpose_rows(xp: Any, y: Any, w: Any, win: Window) -> Any:
    """conv_transpose (no bias) of y (N, O, *out) on patch rows, in y's accumulation dtype."""
    n, o = y.shape[:2]
    acc = acc_dtype(y.dtype)
    # One product per sample reads y[n] transposed in place: (L, O) @ (O, taps * C).
    rows = xp.matmul(y.reshape(n, o, -1).astype(acc, copy=False).swapaxes(1, 2), _row_weight(xp, w, acc))
    return row2im(xp, rows.reshape(-1, rows.shape[-1]), win, n)


def _conv_weight_rows(xp: Any, x: Any, g: Any, win: Window, rows: Any) -> Any:
    """conv_weight on patch rows (those of the forward, or built here): (O, C, *kernel) in acc dtype."""
    c = x.shape[1]
    acc = acc_dtype(x.dtype)
    if rows is None:
        rows = im2row(xp, x, win, acc)
    dw = xp.matmul(_rows_by_position(xp, g, acc), rows)  # (O, taps * C)
    return _channels_first(dw.reshape((g.shape[1],) + win.kernel + (c,)))


def conv(xp: Any, x: Any, w: Any, b: Any, win: Window, groups: int) -> Any:
    """y (N, O, *out) = sum over taps and input channels of w * windows of x, plus bias b (O,) or None."""
    return conv_and_cols(xp, x, w, b, win, groups)[0]


def conv_and_cols(xp: Any, x: Any, w: Any, b: Any, win: Window, groups: int) -> tuple[Any, Any]:
    """(conv's output, the columns of x it multiplied, or None for a depthwise conv): conv_weight
    can take the columns instead of building the same ones again."""
    n, c = x.shape[:2]
    o = w.shape[0]
    acc = acc_dtype(x.dtype)
    if direct_conv.applies(x, w.shape, win):
        return direct_conv.conv2d_direct(x, w, b, win, groups), None
    if _depthwise(w, groups):
        return _depthwise_conv(xp, x, w, b, win), None
    if _use_rows(win, c, groups):
        return _conv_rows(xp, x, w, b, win)
    flat = _flat(win, (c // groups) * win.taps, o // groups)
    cols = im2col(xp, x, win, flat, groups, acc, ones_row=b is not None)
    w2 = w.reshape(groups, o // groups, (c // groups) * win.taps).astype(acc, copy=False)
    if b is not None:  # the bias rides along as one more weight column, against the row of ones
        w2 = xp.concatenate([w2, b.astype(acc, copy=False).reshape(groups, o // groups, 1)], axis=2)
    # One product per sample, written straight into (N, G, O/G, L) (BLAS reads a strided view of
    # batch-inside columns as it is): one product over the batch would need a transposing copy.
    y = xp.matmul(w2, cols_per_sample(cols, win, n, flat))
    return _from_grid(xp, y.reshape((n, o) + col_grid(win, flat)), win, x.dtype, flat), cols


def conv_transpose(xp: Any, y: Any, w: Any, b: Any, win: Window, groups: int) -> Any:
    """x (N, C, *in) = the transpose of `conv` applied to y (N, O, *out), plus bias b (C,) or None.

    This is both the gradient of conv with respect to its input and conv_transpose.
    """
    n, o = y.shape[:2]
    cg = w.shape[1]
    acc = acc_dtype(y.dtype)
    flipped = _flipped_window(win)
    direct = flipped is not None and direct_conv.applies(y, (groups * cg, o // groups) + win.kernel, flipped)
    if flipped is not None and (o // groups <= cg or _use_rows(win, cg, groups) or direct):
        # Stride 1: a plain conv of y with the flipped, transposed kernel. It skips col2im's k*k
        # read-add-write passes, and its columns are no wider than col2im's (O/G <= C/G). Where the
        # transpose would run on patch rows it wins even on wider ones: row2im adds runs of only C;
        # so does a direct conv, which builds no columns at all.
        kernel = w.reshape((groups, o // groups, cg) + win.kernel).swapaxes(1, 2)
        kernel = kernel[(Ellipsis,) + (slice(None, None, -1),) * len(win.kernel)]
        return conv(xp, y, kernel.reshape((groups * cg, o // groups) + win.kernel), b, flipped, groups)
    if flipped is None:
        phases = conv_phases.plan(win)
        widest = max(phases, key=lambda ph: math.prod(ph.window.kernel))
        if direct_conv.applies(y, (groups * cg, o // groups) + widest.window.kernel, widest.window):
            return _conv_transpose_phases(xp, y, w, b, win, phases, groups)
    if _depthwise(w, groups):
        x = _depthwise_transpose(xp, y.astype(acc, copy=False), w.astype(acc, copy=False), win)
        if b is not None:
            x += b.astype(acc, copy=False).reshape((1, o) + (1,) * len(win.in_size))
        return x.astype(y.dtype, copy=False)
    if _use_rows(win, cg, groups):
        x = _conv_transpose_rows(xp, y, w, win)
    else:
        x = _conv_transpose_cols(xp, y, w, win, groups)
    if b is not None:
        x += b.astype(acc, copy=False).reshape((1, groups * cg) + (1,) * len(win.in_size))
    return x.astype(y.dtype, copy=False)


def _conv_transpose_phases(xp: Any, y: Any, w: Any, b: Any, win: Window, phases: list, groups: int) -> Any:
    """conv_transpose of a strided conv as one stride-1 conv of y per phase of x (conv_phases.py):
    the direct kernels run those on every core, where col2im's overlapping adds run on one."""
    n, o = y.shape[:2]
    cg = w.shape[1]
    # (C, O/G, *kernel): each group's kernel with its in and out channels swapped, as for `flipped`.
    kernel = w.reshape((groups, o // groups, cg) + win.kernel).swapaxes(1, 2)
    kernel = kernel.reshape((groups * cg, o // groups) + win.kernel)
    x = xp.empty((n, groups * cg) + win.in_size, dtype=y.dtype)
    for ph in phases:
        out = x[(Ellipsis,) + tuple(slice(p, None, s) for p, s in zip(ph.phase, win.stride))]
        if 0 in ph.window.kernel:  # no tap reaches these positions: only the bias
            out[...] = 0 if b is None else b.reshape((1, -1) + (1,) * len(win.kernel))
            continue
        sub = kernel[(slice(None), slice(None)) + xp.ix_(*ph.taps)]
        ys = y[(Ellipsis,) + tuple(slice(k, None) for k in ph.skip)]
        out[...] = conv(xp, ys, sub, b, ph.window, groups)
    return x


def _conv_transpose_cols(xp: Any, y: Any, w: Any, win: Window, groups: int) -> Any:
    """conv_transpose (no bias) of y (N, O, *out) on columns: one matmul per group, then col2im."""
    n, o = y.shape[:2]
    cg = w.shape[1]
    acc = acc_dtype(y.dtype)
    flat = _flat(win, cg * win.taps, o // groups)
    length = math.prod(col_grid(win, flat))
    w2t = w.reshape(groups, o // groups, cg * win.taps).astype(acc, copy=False).swapaxes(-1, -2)
    if flat:  # zeros off the output positions; one GEMM over the batch
        y2 = _to_grid(xp, y, win, acc, flat, batch_inside=True).reshape(groups, o // groups, n * length)
    else:
        y2 = _to_grid(xp, y, win, acc, flat).reshape(n, groups, o // groups, length)
    return col2im(xp, xp.matmul(w2t, y2), win, n, flat)


def conv_weight(xp: Any, x: Any, g: Any, win: Window, groups: int, cols: Any = None) -> Any:
    """dw (O, C/G, *kernel) = sum over batch and positions of g (N, O, *out) * windows of x (N, C, *in).

    cols: the columns conv_and_cols made of this x (a bias row, if any, is skipped), else built here.
    """
    n, c = x.shape[:2]
    o = g.shape[1]
    acc = acc_dtype(x.dtype)
    if direct_conv.applies(x, (o, c // groups) + win.kernel, win) and g.dtype == x.dtype:
        return direct_conv.conv2d_weight_direct(x, g, win, groups)
    if o == groups and c == groups:
        return _depthwise_weight(xp, x, g.astype(acc, copy=False), win).astype(x.dtype)
    if _use_rows(win, c, groups):
        return _conv_weight_rows(xp, x, g, win, cols).astype(x.dtype, copy=False)
    rows = (c // groups) * win.taps
    flat = _flat(win, rows, o // groups)
    if cols is None:
        cols = im2col(xp, x, win, flat, groups, acc)
    length = math.prod(col_grid(win, flat))
    # g is zero at grid positions that are not outputs, so what the columns hold there drops out.
    if flat:  # one GEMM over the whole batch
        g2 = _to_grid(xp, g, win, acc, flat, batch_inside=True).reshape(groups, o // groups, n * length)
        dw = xp.matmul(g2, cols[:, :rows].swapaxes(-1, -2))
    else:
        g2 = _to_grid(xp, g, win, acc, flat).reshape(n, groups, o // groups, length)
        cols = cols[:, :, :rows].swapaxes(-1, -2)  # read transposed in place
        # One GEMM per sample, then a small sum.
        dw = xp.matmul(g2[0], cols[0]) if n == 1 else xp.matmul(g2, cols).sum(axis=0)
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


def _tap_views(xp: Any, x: Any, win: Window, dtype: Any) -> Iterator[tuple[int, Any]]:
    """(flat tap number, view (N, C, *col_grid) of what the tap reads) of a zero-padded x, in dtype.
    The padded-plane grid wherever it fits: one tap's products cost more on short runs than the
    grid's extra positions."""
    if _narrow(win):
        runs = _plane_runs(xp, _plane(xp, x, win, dtype), win)
        shape = x.shape[:2] + col_grid(win, True)
        for flat, offs in enumerate(itertools.product(*[range(k) for k in win.kernel])):
            yield flat, runs[(slice(None), slice(None)) + offs].reshape(shape)
    else:
        xs = pad_to_span(xp, x, win).astype(dtype, copy=False)
        for flat, _, sl in taps(win):
            yield flat, xs[(Ellipsis, *sl)]


def _depthwise_conv(xp: Any, x: Any, w: Any, b: Any, win: Window) -> Any:
    """Depthwise y (N, C, *out): per tap, the shifted input times its channel's weight, summed. Direct,
    no columns: k*k multiply-adds over the output, not N*C one-row matmuls over k*k times the input."""
    n, c = x.shape[:2]
    acc = acc_dtype(x.dtype)
    grid = col_grid(win, _narrow(win))
    wt = w.reshape(c, win.taps).astype(acc, copy=False)
    bcast = (1, c) + (1,) * len(grid)
    y = xp.zeros((n, c) + grid, dtype=acc)
    if b is not None:
        y += b.astype(acc, copy=False).reshape(bcast)
    tmp = xp.empty_like(y)
    for flat, view in _tap_views(xp, x, win, acc):
        xp.multiply(view, wt[:, flat].reshape(bcast), out=tmp)
        y += tmp
    return _from_grid(xp, y, win, x.dtype, _narrow(win))


def _depthwise_transpose(xp: Any, y: Any, w: Any, win: Window) -> Any:
    nd = len(win.in_size)
    wt = w.reshape(w.shape[0], win.taps)
    buf = xp.zeros(y.shape[:2] + win.span, dtype=y.dtype)
    for flat, _, sl in taps(win):
        buf[(Ellipsis, *sl)] += y * wt[:, flat].reshape((1, wt.shape[0]) + (1,) * nd)
    return crop_from_span(xp, buf, win)


def _depthwise_weight(xp: Any, x: Any, g: Any, win: Window) -> Any:
    """dw (C, 1, *kernel): per tap, g times the shifted input summed over batch and positions."""
    c = g.shape[1]
    if empty_output(win):
        return xp.zeros((c, 1) + win.kernel, dtype=g.dtype)
    g = _to_grid(xp, g, win, g.dtype, _narrow(win))  # zeros at the grid's extra positions
    spatial = "uvw"[:g.ndim - 2]
    spec = f"nc{spatial},nc{spatial}->c"
    dw = xp.stack([xp.einsum(spec, g, view) for _, view in _tap_views(xp, x, win, g.dtype)], axis=1)
    return dw.reshape((c, 1) + win.kernel)
