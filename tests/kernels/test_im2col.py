"""Sliding-window kernels (tensora/kernels/im2col.py): geometry and adjoint pairs, against NumPy."""

import itertools

import numpy as np
import pytest

from tensora.kernels import im2col as k
from tensora.kernels.im2col import Window


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


@pytest.mark.parametrize("win", WINDOWS)
def test_im2col_reads_the_defined_positions(win):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3) + win.in_size)
    grid = k.col_grid(win)
    if grid != win.out_size:  # the padded plane: full span in the middle dims, the last wider than out
        assert all(s == 1 for s in win.stride) and len(grid) > 1
        assert grid[:-1] == (win.out_size[0],) + win.span[1:-1] and grid[-1] > win.out_size[-1]
    cols = k.cols_per_sample(k.im2col(np, x, win), win, 2)
    assert cols.shape == (2, 1, 3 * win.taps, int(np.prod(grid)))
    cols = cols.reshape((2, 3) + win.kernel + grid)
    for tap in itertools.product(*[range(t) for t in win.kernel]):
        for pos in _outputs(win):
            at = tuple(o * s + t * d - p for o, s, t, d, p in zip(pos, win.stride, tap, win.dilation, win.pad))
            inside = all(0 <= a < n for a, n in zip(at, win.in_size))
            expected = x[(Ellipsis,) + at] if inside else 0.0
            np.testing.assert_array_equal(cols[(Ellipsis,) + tap + pos], expected)


@pytest.mark.parametrize("win", WINDOWS)
def test_col2im_is_the_adjoint_of_im2col(win):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3) + win.in_size)
    grid = k.col_grid(win)
    c = np.zeros((2, 3) + win.kernel + grid)
    outputs = (Ellipsis,) + tuple(slice(0, o) for o in win.out_size)
    c[outputs] = rng.standard_normal((2, 3) + win.kernel + win.out_size)  # zeros off the output positions
    c = c.reshape(2, 1, 3 * win.taps, -1)
    cols = k.im2col(np, x, win)
    laid_out = np.zeros_like(cols)  # c in the columns' own layout
    k.cols_per_sample(laid_out, win, 2)[...] = c
    lhs = np.vdot(cols, laid_out)
    rhs = np.vdot(x, k.col2im(np, laid_out, win, 2))
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


def test_im2col_groups_dtype_and_ones_row():
    win = WINDOWS[0]
    x = np.random.default_rng(5).standard_normal((2, 4) + win.in_size)
    cols = k.im2col(np, x, win, groups=2, dtype=np.float32, ones_row=True)
    length = int(np.prod(k.col_grid(win)))
    assert cols.shape == (2, 2 * win.taps + 1, 2 * length) and cols.dtype == np.float32  # batch inside
    cols = k.cols_per_sample(cols, win, 2)
    assert cols.shape == (2, 2, 2 * win.taps + 1, length)
    np.testing.assert_array_equal(cols[:, :, -1], 1)
    ungrouped = k.cols_per_sample(k.im2col(np, x, win), win, 2)[:, 0]
    np.testing.assert_allclose(cols[:, :, :-1].reshape(2, 4 * win.taps, -1), ungrouped, rtol=1e-6)


def test_wide_outputs_and_strides_use_the_output_grid(monkeypatch):
    # Stride 1 on a narrow map: the padded plane (rows sharing one zero gap); wide or strided: the output.
    narrow = _window((8, 8), (3, 3), (1, 1), (1, 1), (1, 1))
    assert k.col_grid(narrow) == (8, 9)
    assert k.col_grid(_window((8, 40), (3, 3), (1, 1), (1, 1), (1, 1))) == (8, 40)
    assert k.col_grid(_window((8, 8), (3, 3), (2, 2), (1, 1), (1, 1))) == (4, 4)
    monkeypatch.setattr(k, "FLAT_MAX_WIDTH", 0)
    assert k.col_grid(narrow) == (8, 8)


@pytest.mark.parametrize("win", WINDOWS)
def test_pooling_pairs_are_adjoint(win):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3) + win.in_size)
    g = rng.standard_normal((2, 3) + win.out_size)
    div = rng.uniform(1, 3, win.out_size)
    assert np.isclose(np.vdot(k.window_sum(np, x, win, div), g), np.vdot(x, k.window_sum_t(np, g, win, div)))
    idx = rng.integers(0, win.taps, (2, 3) + win.out_size).astype(np.uint8)
    assert np.isclose(np.vdot(k.window_select(np, x, win, idx), g), np.vdot(x, k.window_scatter(np, g, win, idx)))


def test_window_max_first_tap_wins_and_leaves_the_input_alone():
    win = _window((6,), (3,), (1,), (0,), (1,))
    x = np.array([[[1.0, 4.0, 4.0, 0.0, 4.0, 2.0]]])
    keep = x.copy()
    best, taps = k.window_max(np, x, win)
    np.testing.assert_array_equal(best, [[[4, 4, 4, 4]]])
    np.testing.assert_array_equal(taps, [[[1, 0, 0, 1]]])
    np.testing.assert_array_equal(x, keep)
    assert k.window_max(np, x, win, with_taps=False)[1] is None


@pytest.mark.parametrize("size,kernel,stride,pad,dilation,ceil,expected", [
    (5, 2, 2, 0, 1, False, 2), (5, 2, 2, 0, 1, True, 3),
    (5, 2, 2, 1, 1, True, 3),      # a 4th window would start in the right padding: dropped
    (6, 3, 2, 1, 1, True, 4),
    (7, 3, 2, 1, 2, False, 3), (1, 1, 1, 0, 1, True, 1),
])
def test_pool_out_size(size, kernel, stride, pad, dilation, ceil, expected):
    assert k.pool_out_size(size, kernel, stride, pad, dilation, ceil) == expected


def test_geometry_helpers():
    win = _window((7, 5), (2, 3), (2, 1), (0, 2), (2, 1))
    assert win.span == tuple((o - 1) * s + (kk - 1) * d + 1 for o, s, kk, d in
                             zip(win.out_size, win.stride, win.kernel, win.dilation))
    assert win.taps == 6
    assert k.disjoint(_window((4, 4), (2, 2), (2, 2), (0, 0), (1, 1)))
    assert not k.disjoint(_window((4, 4), (2, 2), (2, 1), (0, 0), (1, 1)))
    assert k.acc_dtype(np.float16) == np.float32 and k.acc_dtype(np.float64) == np.float64
    assert k.acc_dtype(np.int32) == np.int32


@pytest.mark.parametrize("win", WINDOWS)
@pytest.mark.parametrize("cin,cout,groups", [(4, 2, 2), (2, 6, 1), (3, 3, 3), (4, 4, 1)])
def test_conv_transpose_and_weight_are_adjoints_of_conv(win, cin, cout, groups):
    # Stride-1 windows with C/G >= O/G take the flipped-kernel path, the others col2im; (3, 3, 3)
    # is depthwise. All must be the exact adjoints of conv in x and in w.
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
