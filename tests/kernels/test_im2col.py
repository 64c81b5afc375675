"""Sliding-window kernels (tensora/kernels/im2col.py): geometry and adjoint pairs, against NumPy."""

import itertools

import numpy as np
import pytest

from tensora.kernels import im2col as k
from tensora.kernels import pool_windows as pw
from tensora.kernels import windows
from tensora.kernels.windows import Window


def _window(in_size, kernel, stride, pad, dilation):
    out = tuple((i + 2 * p - d * (kk - 1) - 1) // s + 1
                for i, kk, s, p, d in zip(in_size, kernel, stride, pad, dilation))
    return Window(in_size, out, kernel, stride, pad, dilation)


WINDOWS = [
    _window((5, 6), (3, 3), (1, 1), (1, 1), (1, 1)),
    _window((7, 5), (2, 3), (2, 1), (0, 2), (2, 1)),
    _window((8,), (3,), (3,), (1,), (1,)),          # stride past the tail: input positions nobody reads
    _window((4, 3, 5), (2, 1, 2), (1, 2, 2), (1, 0, 0), (1, 1, 2)),
    _window((6, 5), (3, 2), (1, 1), (2, 0), (1, 2)),  # stride 1 with dilation: the padded-plane grid
    _window((9,), (4,), (1,), (0,), (2,)),
    _window((3, 4, 5), (2, 3, 2), (1, 1, 1), (1, 0, 1), (1, 1, 2)),
]


def _outputs(win):
    """The grid positions that are output positions (the others are computed and dropped)."""
    return itertools.product(*[range(o) for o in win.out_size])


def _layouts():
    """(window, flat) for every window in each column layout it can use."""
    return [(win, flat) for win in WINDOWS for flat in (False, True) if k._narrow(win) or not flat]


def _read(x, win, pos, tap):
    """What tap `tap` of the window at output position `pos` reads in x (..., *in): zero outside."""
    at = tuple(o * s + t * d - p for o, s, t, d, p in zip(pos, win.stride, tap, win.dilation, win.pad))
    inside = all(0 <= a < n for a, n in zip(at, win.in_size))
    return x[(Ellipsis,) + at] if inside else 0.0


@pytest.mark.parametrize("win,flat", _layouts())
def test_im2col_reads_the_defined_positions(win, flat):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3) + win.in_size)
    grid = k.col_grid(win, flat)
    if grid != win.out_size:  # the padded plane: full span in the middle dims, the last wider than out
        assert all(s == 1 for s in win.stride) and len(grid) > 1
        assert grid[:-1] == (win.out_size[0],) + win.span[1:-1] and grid[-1] > win.out_size[-1]
    cols = k.cols_per_sample(k.im2col(np, x, win, flat), win, 2, flat)
    assert cols.shape == (2, 1, 3 * win.taps, int(np.prod(grid)))
    cols = cols.reshape((2, 3) + win.kernel + grid)
    for tap in itertools.product(*[range(t) for t in win.kernel]):
        for pos in _outputs(win):
            np.testing.assert_array_equal(cols[(Ellipsis,) + tap + pos], _read(x, win, pos, tap))


@pytest.mark.parametrize("win,flat", _layouts())
def test_col2im_is_the_adjoint_of_im2col(win, flat):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3) + win.in_size)
    grid = k.col_grid(win, flat)
    c = np.zeros((2, 3) + win.kernel + grid)
    outputs = (Ellipsis,) + tuple(slice(0, o) for o in win.out_size)
    c[outputs] = rng.standard_normal((2, 3) + win.kernel + win.out_size)  # zeros off the output positions
    c = c.reshape(2, 1, 3 * win.taps, -1)
    cols = k.im2col(np, x, win, flat)
    laid_out = np.zeros_like(cols)  # c in the columns' own layout
    k.cols_per_sample(laid_out, win, 2, flat)[...] = c
    lhs = np.vdot(cols, laid_out)
    rhs = np.vdot(x, k.col2im(np, laid_out, win, 2, flat))
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


@pytest.mark.parametrize("flat", [False, True])
def test_im2col_groups_dtype_and_ones_row(flat):
    win = WINDOWS[0]
    x = np.random.default_rng(5).standard_normal((2, 4) + win.in_size)
    cols = k.im2col(np, x, win, flat, groups=2, dtype=np.float32, ones_row=True)
    length = int(np.prod(k.col_grid(win, flat)))
    expected = (2, 2 * win.taps + 1, 2 * length) if flat else (2, 2, 2 * win.taps + 1, length)  # batch inside
    assert cols.shape == expected and cols.dtype == np.float32
    cols = k.cols_per_sample(cols, win, 2, flat)
    assert cols.shape == (2, 2, 2 * win.taps + 1, length)
    np.testing.assert_array_equal(cols[:, :, -1], 1)
    ungrouped = k.cols_per_sample(k.im2col(np, x, win, flat), win, 2, flat)[:, 0]
    np.testing.assert_allclose(cols[:, :, :-1].reshape(2, 4 * win.taps, -1), ungrouped, rtol=1e-6)


def test_wide_outputs_strides_and_few_rows_use_the_output_grid(monkeypatch):
    # Stride 1 on a narrow map: the padded plane (rows sharing one zero gap); wide or strided: the output.
    narrow = _window((8, 8), (3, 3), (1, 1), (1, 1), (1, 1))
    assert k._narrow(narrow) and k.col_grid(narrow, True) == (8, 9) and k.col_grid(narrow, False) == (8, 8)
    assert not k._narrow(_window((8, 40), (3, 3), (1, 1), (1, 1), (1, 1)))
    assert not k._narrow(_window((8, 8), (3, 3), (2, 2), (1, 1), (1, 1)))
    # Few column rows per output channel (a 1-channel input, 32 outputs): the output grid.
    assert k._flat(narrow, 8 * 9, 32) and not k._flat(narrow, 9, 32)
    monkeypatch.setattr(k, "FLAT_MAX_WIDTH", 0)
    assert not k._narrow(narrow)


@pytest.mark.parametrize("win", WINDOWS)
def test_im2row_reads_the_defined_positions(win):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3) + win.in_size)
    rows = k.im2row(np, x, win, np.float32)
    assert rows.dtype == np.float32 and rows.shape == (2 * int(np.prod(win.out_size)), win.taps * 3)
    rows = rows.reshape((2,) + win.out_size + win.kernel + (3,))
    for tap in itertools.product(*[range(t) for t in win.kernel]):
        for pos in _outputs(win):
            np.testing.assert_array_equal(rows[(slice(None),) + pos + tap], np.float32(_read(x, win, pos, tap)))


@pytest.mark.parametrize("win", WINDOWS)
def test_row2im_is_the_adjoint_of_im2row(win):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3) + win.in_size)
    rows = k.im2row(np, x, win)
    r = rng.standard_normal(rows.shape)
    lhs = np.vdot(rows, r)
    rhs = np.vdot(x, k.row2im(np, r, win, 2))
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


def test_patch_rows_take_ungrouped_convs_over_enough_channels_on_small_maps():
    win = WINDOWS[0]  # 3 taps per kernel row at dilation 1: runs of 3 * C
    assert k._use_rows(win, 6, 1) and not k._use_rows(win, 5, 1) and not k._use_rows(win, 16, 2)
    dilated = WINDOWS[1]  # dilation 1 in the last dim, 3 taps
    assert k._use_rows(dilated, 6, 1)
    assert not k._use_rows(WINDOWS[4], 15, 1) and k._use_rows(WINDOWS[4], 16, 1)  # dilation 2: runs of C
    # Up to 16x16 maps; larger ones keep columns (their runs are long, channels-last copies slow).
    assert k._use_rows(_window((16, 16), (3, 3), (1, 1), (1, 1), (1, 1)), 64, 1)
    assert not k._use_rows(_window((32, 32), (3, 3), (1, 1), (1, 1), (1, 1)), 64, 1)
    assert not k._use_rows(_window((32, 32), (3, 3), (2, 2), (1, 1), (1, 1)), 64, 1)  # a 16x16 output
    assert not k._use_rows(WINDOWS[2], 64, 1)  # 1-D


@pytest.mark.parametrize("win", WINDOWS)
def test_pooling_pairs_are_adjoint(win):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3) + win.in_size)
    g = rng.standard_normal((2, 3) + win.out_size)
    div = rng.uniform(1, 3, win.out_size)
    assert np.isclose(np.vdot(pw.window_sum(np, x, win, div), g), np.vdot(x, pw.window_sum_t(np, g, win, div)))
    idx = rng.integers(0, win.taps, (2, 3) + win.out_size).astype(np.uint8)
    assert np.isclose(np.vdot(pw.window_select(np, x, win, idx), g), np.vdot(x, pw.window_scatter(np, g, win, idx)))


def test_window_max_first_tap_wins_and_leaves_the_input_alone():
    win = _window((6,), (3,), (1,), (0,), (1,))
    x = np.array([[[1.0, 4.0, 4.0, 0.0, 4.0, 2.0]]])
    keep = x.copy()
    best, taps = pw.window_max(np, x, win)
    np.testing.assert_array_equal(best, [[[4, 4, 4, 4]]])
    np.testing.assert_array_equal(taps, [[[1, 0, 0, 1]]])
    np.testing.assert_array_equal(x, keep)
    assert pw.window_max(np, x, win, with_taps=False)[1] is None


@pytest.mark.parametrize("size,kernel,stride,pad,dilation,ceil,expected", [
    (5, 2, 2, 0, 1, False, 2), (5, 2, 2, 0, 1, True, 3),
    (5, 2, 2, 1, 1, True, 3),      # a 4th window would start in the right padding: dropped
    (6, 3, 2, 1, 1, True, 4),
    (7, 3, 2, 1, 2, False, 3), (1, 1, 1, 0, 1, True, 1),
])
def test_pool_out_size(size, kernel, stride, pad, dilation, ceil, expected):
    assert windows.pool_out_size(size, kernel, stride, pad, dilation, ceil) == expected


def test_geometry_helpers():
    win = _window((7, 5), (2, 3), (2, 1), (0, 2), (2, 1))
    assert win.span == tuple((o - 1) * s + (kk - 1) * d + 1 for o, s, kk, d in
                             zip(win.out_size, win.stride, win.kernel, win.dilation))
    assert win.taps == 6
    assert pw.disjoint(_window((4, 4), (2, 2), (2, 2), (0, 0), (1, 1)))
    assert not pw.disjoint(_window((4, 4), (2, 2), (2, 1), (0, 0), (1, 1)))
    assert windows.acc_dtype(np.float16) == np.float32 and windows.acc_dtype(np.float64) == np.float64
    assert windows.acc_dtype(np.int32) == np.int32


@pytest.mark.parametrize("win", WINDOWS)
@pytest.mark.parametrize("cin,cout,groups", [(4, 2, 2), (2, 6, 1), (3, 3, 3), (4, 4, 1), (16, 8, 1), (16, 24, 1)])
def test_conv_transpose_and_weight_are_adjoints_of_conv(win, cin, cout, groups):
    # Stride-1 windows with C/G >= O/G take the flipped-kernel path, the others col2im; (3, 3, 3)
    # is depthwise; 16 input channels run on patch rows (flipped for stride 1 whatever O, else
    # row2im). All must be the exact adjoints of conv in x and in w.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, cin) + win.in_size)
    w = rng.standard_normal((cout, cin // groups) + win.kernel)
    y = rng.standard_normal((2, cout) + win.out_size)
    fwd = np.vdot(k.conv(np, x, w, None, win, groups), y)
    assert np.isclose(fwd, np.vdot(x, k.conv_transpose(np, y, w, None, win, groups)))
    assert np.isclose(fwd, np.vdot(w, k.conv_weight(np, x, y, win, groups)))


@pytest.mark.parametrize("win", WINDOWS)
@pytest.mark.parametrize("bias", [False, True])
def test_conv_weight_from_the_forward_columns_is_bit_identical(win, bias):
    # Reference: conv_weight building its own columns; the forward's (with or without the bias
    # row) must give the very same result.
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4) + win.in_size).astype(np.float32)
    w = rng.standard_normal((6, 2) + win.kernel).astype(np.float32)
    g = rng.standard_normal((3, 6) + win.out_size).astype(np.float32)
    y, cols = k.conv_and_cols(np, x, w, rng.standard_normal(6).astype(np.float32) if bias else None, win, 2)
    assert y.flags.c_contiguous and y.shape == (3, 6) + win.out_size
    np.testing.assert_array_equal(k.conv_weight(np, x, g, win, 2, cols), k.conv_weight(np, x, g, win, 2))
    x = rng.standard_normal((3, 16) + win.in_size).astype(np.float32)  # ungrouped: patch rows (not 1-D)
    w = rng.standard_normal((6, 16) + win.kernel).astype(np.float32)
    y, rows = k.conv_and_cols(np, x, w, rng.standard_normal(6).astype(np.float32) if bias else None, win, 1)
    assert y.flags.c_contiguous and y.shape == (3, 6) + win.out_size
    assert (rows.shape == (3 * int(np.prod(win.out_size)), 16 * win.taps)) == (len(win.kernel) > 1)
    np.testing.assert_array_equal(k.conv_weight(np, x, g, win, 1, rows), k.conv_weight(np, x, g, win, 1))


@pytest.mark.parametrize("win", WINDOWS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_patch_rows_and_columns_agree(win, dtype, monkeypatch):
    # The same conv, weight gradient and transpose on both layouts (ROW_MIN_RUN out of reach: columns).
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 16) + win.in_size).astype(dtype)
    w = rng.standard_normal((5, 16) + win.kernel).astype(dtype)
    b, bt = rng.standard_normal(5).astype(dtype), rng.standard_normal(16).astype(dtype)
    g = rng.standard_normal((2, 5) + win.out_size).astype(dtype)

    def run():
        return k.conv(np, x, w, b, win, 1), k.conv_weight(np, x, g, win, 1), k.conv_transpose(np, g, w, bt, win, 1)

    rows = run()
    monkeypatch.setattr(k, "ROW_MIN_RUN", 1 << 30)
    cols = run()
    for r, c in zip(rows, cols):
        assert r.dtype == dtype and r.shape == c.shape
        tol = 3e-2 if dtype == np.float16 else 1e-4
        np.testing.assert_allclose(r.astype(np.float64), c.astype(np.float64), rtol=tol, atol=tol)
