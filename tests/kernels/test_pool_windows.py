"""Native 2-D max pooling (tensora/kernels/pool_windows.py, csrc/conv_pool.cpp) against the NumPy
reference bodies, bit for bit: maxima, their tap numbers (first maximum, last NaN, -inf padding),
and the gradient scattered back. Padding, ceil-mode overhang, strides, dilations, overlapping
windows; bad shapes and arguments must raise, never crash. Native tests skip when
TENSORA_NO_NATIVE disables the extension and fail when it is missing otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

from tensora.kernels import pool_windows as pw
from tensora.kernels.windows import Window, pool_out_size

RNG = np.random.default_rng(0)

# (N, C, H, W), kernel, stride, pad, dilation, ceil_mode
CASES = [
    ((64, 32, 8, 8), (2, 2), (2, 2), (0, 0), (1, 1), False),     # the digits CNN's pools
    ((2, 3, 7, 9), (3, 3), (2, 2), (1, 1), (1, 1), False),       # overlapping windows, padding
    ((2, 2, 7, 8), (2, 3), (2, 2), (1, 0), (1, 1), True),        # ceil mode: the last windows overhang
    ((1, 4, 9, 10), (3, 2), (1, 3), (0, 1), (2, 3), False),      # dilation, stride only in width
    ((3, 1, 5, 5), (5, 5), (1, 1), (2, 2), (1, 1), False),       # windows as big as the map
]


def _window(shape, kernel, stride, pad, dilation, ceil):
    out = tuple(pool_out_size(i, k, s, p, d, ceil) for i, k, s, p, d in zip(shape[2:], kernel, stride, pad, dilation))
    return Window(tuple(shape[2:]), out, kernel, stride, pad, dilation)


def _ties_and_nans(x):
    """x with repeated values (ties within windows), -inf stretches and a few NaNs."""
    x = np.round(x * 2) / 2  # many equal values
    flat = x.reshape(-1)
    flat[RNG.integers(0, flat.size, max(1, flat.size // 50))] = np.nan
    flat[RNG.integers(0, flat.size, max(1, flat.size // 20))] = -np.inf
    return x


@pytest.mark.parametrize("case", CASES)
def test_native_max_and_taps_match_the_reference_bit_for_bit(case, simd):
    win = _window(*case)
    for x in (RNG.standard_normal(case[0]).astype(np.float32),
              _ties_and_nans(RNG.standard_normal(case[0]).astype(np.float32)),
              np.full(case[0], -np.inf, np.float32)):  # all -inf: tap 0, padding or not
        want, want_taps = pw.max_pool2d.reference(x, win)
        got, got_taps = pw.max_pool2d.run_native(x, win)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_taps, want_taps)
        assert got_taps.dtype == np.uint8


@pytest.mark.parametrize("case", CASES)
def test_native_scatter_matches_the_reference(case, lib):
    win = _window(*case)
    x = _ties_and_nans(RNG.standard_normal(case[0]).astype(np.float32))
    _, taps = pw.max_pool2d.reference(x, win)
    g = RNG.standard_normal(taps.shape).astype(np.float32)
    g.reshape(-1)[:3] = [np.inf, -np.inf, np.nan]  # non-finite gradients reach only their own tap
    want = pw.max_pool2d_scatter.reference(g, win, taps)
    # Overlapping windows add in another order: float32 rounding of the sums.
    np.testing.assert_allclose(pw.max_pool2d_scatter.run_native(g, win, taps), want, rtol=1e-6, atol=1e-6)


def test_window_max_and_scatter_route_float32_2d_here_only_with_the_extension(lib):
    win = _window(*CASES[0])
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert pw._native_2d(x, win)
    assert not pw._native_2d(x.astype(np.float64), win)
    best, taps = pw.window_max(np, x, win)
    assert pw.window_max(np, x, win, with_taps=False)[1] is None
    g = RNG.standard_normal(best.shape).astype(np.float32)
    np.testing.assert_array_equal(pw.window_scatter(np, g, win, taps), pw.max_pool2d_scatter.reference(g, win, taps))


def test_bad_arguments_raise(lib):
    x = np.zeros((2, 3, 8, 8), np.float32)
    out, taps = np.empty((2, 3, 4, 4), np.float32), np.empty((2, 3, 4, 4), np.uint8)
    geometry = ((2, 2), (2, 2), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="positive"):
        lib.max_pool2d(x, out, taps, (2, 2), (0, 2), (0, 0), (1, 1))
    with pytest.raises(ValueError, match="at most 256 taps"):
        lib.max_pool2d(x, out, taps, (17, 16), (2, 2), (0, 0), (1, 1))
    with pytest.raises(ValueError, match=r"taps \(2, 3, 4, 3\) do not match"):
        lib.max_pool2d(x, out, taps[..., :3].copy(), *geometry)
    with pytest.raises(ValueError, match=r"expected \(N, C, H, W\)"):
        lib.max_pool2d(x, out[:1], taps[:1], *geometry)
    with pytest.raises(TypeError, match="uint8"):
        lib.max_pool2d(x, out, taps.astype(np.int32), *geometry)
    with pytest.raises(TypeError, match="float32"):
        lib.max_pool2d_scatter(out.astype(np.float64), taps, x, *geometry)
    # Tap numbers past the kernel reach no input position: dropped, nothing written out of bounds.
    got = lib.max_pool2d_scatter(np.ones((2, 3, 4, 4), np.float32), np.full((2, 3, 4, 4), 255, np.uint8), x, *geometry)
    assert got is None and not x.any()
