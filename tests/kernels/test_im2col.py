"""Sliding-window kernels (tensora/kernels/im2col.py): geometry, adjoint pairs and tables, against NumPy."""

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
]


@pytest.mark.parametrize("win", WINDOWS)
def test_im2col_reads_the_defined_positions(win):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3) + win.in_size)
    cols = k.im2col(np, x, win)
    assert cols.shape == (2, 1, 3 * win.taps, int(np.prod(win.out_size)))
    cols = cols.reshape((2, 3) + win.kernel + win.out_size)
    for tap in itertools.product(*[range(t) for t in win.kernel]):
        for pos in itertools.product(*[range(o) for o in win.out_size]):
            at = tuple(o * s + t * d - p for o, s, t, d, p in zip(pos, win.stride, tap, win.dilation, win.pad))
            inside = all(0 <= a < n for a, n in zip(at, win.in_size))
            expected = x[(Ellipsis,) + at] if inside else 0.0
            np.testing.assert_array_equal(cols[(Ellipsis,) + tap + pos], expected)


@pytest.mark.parametrize("win", WINDOWS)
def test_col2im_is_the_adjoint_of_im2col(win):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3) + win.in_size)
    c = rng.standard_normal((2, 3) + win.kernel + win.out_size)
    lhs = np.vdot(k.im2col(np, x, win), c.reshape(2, 1, -1, int(np.prod(win.out_size))))
    rhs = np.vdot(x, k.col2im(np, c, win))
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


def test_im2col_groups_dtype_and_ones_row():
    win = WINDOWS[0]
    x = np.random.default_rng(5).standard_normal((2, 4) + win.in_size)
    cols = k.im2col(np, x, win, groups=2, dtype=np.float32, ones_row=True)
    assert cols.shape == (2, 2, 2 * win.taps + 1, int(np.prod(win.out_size))) and cols.dtype == np.float32
    np.testing.assert_array_equal(cols[:, :, -1], 1)
    np.testing.assert_allclose(cols[:, :, :-1].reshape(2, 4 * win.taps, -1), k.im2col(np, x, win)[:, 0], rtol=1e-6)


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


def test_resample_and_transposed_table_are_adjoint():
    rng = np.random.default_rng(3)
    index = rng.integers(0, 5, (7, 2))
    weight = rng.standard_normal((7, 2))
    weight[3, 1] = 0.0                                     # zero weights drop out of the transpose
    tindex, tweight = k.transpose_table(index, weight, 5)
    assert tindex.shape[0] == 5
    x = rng.standard_normal((2, 5, 3))
    g = rng.standard_normal((2, 7, 3))
    lhs = np.vdot(k.resample(np, x, 1, index, weight), g)
    rhs = np.vdot(x, k.resample(np, g, 1, tindex, tweight))
    assert np.isclose(lhs, rhs)
    dense = np.zeros((7, 5))
    np.add.at(dense, (np.repeat(np.arange(7), 2), index.ravel()), weight.ravel())
    np.testing.assert_allclose(k.resample(np, x, 1, index, weight), np.einsum("oi,bic->boc", dense, x))


@pytest.mark.parametrize("win", WINDOWS + [_window((6, 5), (3, 2), (1, 1), (2, 0), (1, 2))])
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
