"""Direct 2-D convolution kernels (tensora/kernels/direct_conv.py, csrc/conv.cpp).

The reference bodies against the im2col path in float64 (itself checked against torch in
tests/ops/test_conv_torch.py); the native bodies against the reference, in both
instruction-set variants, within float32 rounding of the sums. Odd widths (vector tails),
maps up to 8 wide (tiles of whole rows), channel tiles on narrower maps, strides in either dim, dilations, asymmetric
padding, groups and depthwise convs; bad shapes and arguments must raise, never crash. Native tests
skip when TENSORA_NO_NATIVE disables the extension and fail when it is missing otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

from tensora.kernels import direct_conv as dc
from tensora.kernels import im2col
from tensora.kernels.windows import Window

RNG = np.random.default_rng(0)

# (N, C, H, W), O, (kh, kw), stride, pad, dilation, groups
CASES = [
    ((2, 3, 9, 11), 5, (3, 3), (1, 1), (1, 1), (1, 1), 1),        # tails of 3, a partial block of channels
    ((3, 4, 7, 20), 8, (3, 2), (2, 1), (0, 2), (1, 2), 2),        # height stride, width dilation, groups
    ((2, 6, 5, 5), 6, (3, 3), (1, 1), (1, 1), (1, 1), 6),         # depthwise on a map narrower than a vector
    ((1, 2, 4, 35), 9, (1, 5), (3, 1), (2, 0), (2, 1), 1),        # 1-row kernel, padding only in height
    ((2, 1, 8, 8), 32, (3, 3), (1, 1), (1, 1), (1, 1), 1),        # the digits CNN's first layer
    ((2, 16, 6, 16), 12, (3, 3), (1, 1), (2, 1), (2, 1), 4),      # many taps, 3 channels a group
    ((1, 3, 3, 1), 4, (3, 1), (1, 1), (1, 0), (1, 1), 1),         # one output column
    ((2, 3, 12, 12), 7, (5, 5), (1, 1), (2, 2), (1, 1), 1),       # 'same' 5x5
    ((2, 8, 16, 16), 8, (3, 3), (2, 2), (1, 1), (1, 1), 1),       # stride 2: two column phases
    ((1, 4, 11, 23), 6, (2, 3), (3, 3), (1, 2), (2, 2), 2),       # stride 3 with dilation 2 and groups
    ((2, 3, 9, 40), 4, (3, 4), (1, 2), (0, 3), (1, 3), 1),        # width stride only, wide rows
    # Channel tiles (16+ output channels a group, outputs narrower than a vector):
    ((3, 32, 4, 4), 64, (3, 3), (1, 1), (1, 1), (1, 1), 1),       # the digits CNN's third layer
    ((2, 6, 5, 7), 40, (3, 3), (1, 1), (1, 1), (1, 1), 2),        # 20 a group: a part-filled block; 5-position tail
    ((2, 1, 6, 6), 16, (2, 3), (2, 2), (0, 1), (1, 2), 1),        # strides, dilation, 6 taps: one tap block
    ((1, 3, 7, 9), 17, (3, 2), (1, 3), (1, 0), (2, 1), 1),        # width stride 3 (3 phases), 1 channel past a block
]


def _window(shape, kernel, stride, pad, dilation) -> Window:
    ins = shape[2:]
    out = tuple((i + 2 * p - d * (k - 1) - 1) // s + 1 for i, k, s, p, d in zip(ins, kernel, stride, pad, dilation))
    return Window(tuple(ins), out, tuple(kernel), tuple(stride), tuple(pad), tuple(dilation))


def _case(shape, o, kernel, stride, pad, dilation, groups):
    win = _window(shape, kernel, stride, pad, dilation)
    x = RNG.standard_normal(shape).astype(np.float32)
    w = RNG.standard_normal((o, shape[1] // groups) + kernel).astype(np.float32)
    b = RNG.standard_normal(o).astype(np.float32)
    g = RNG.standard_normal((shape[0], o) + win.out_size).astype(np.float32)
    return x, w, b, g, win


def _close(got, want, scale):
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(scale).max())))


@pytest.mark.parametrize("case", CASES)
def test_reference_matches_the_im2col_path_in_float64(case):
    x, w, b, g, win = _case(*case)
    groups = case[-1]
    want_y = im2col.conv(np, x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), win, groups)
    want_dw = im2col.conv_weight(np, x.astype(np.float64), g.astype(np.float64), win, groups)
    y = dc.conv2d_direct.reference(x, w, b, win, groups)
    dw = dc.conv2d_weight_direct.reference(x, g, win, groups)
    assert y.dtype == dw.dtype == np.float32
    _close(y, want_y, want_y)
    _close(dw, want_dw, want_dw)


@pytest.mark.parametrize("case", CASES)
def test_native_matches_the_reference(case, simd):
    x, w, b, g, win = _case(*case)
    groups = case[-1]
    for bias in (b, None):
        want = dc.conv2d_direct.reference(x, w, bias, win, groups)
        _close(dc.conv2d_direct.run_native(x, w, bias, win, groups), want, want)
    want = dc.conv2d_weight_direct.reference(x, g, win, groups)
    _close(dc.conv2d_weight_direct.run_native(x, g, win, groups), want, want)


def test_native_on_a_large_batch_uses_threads_and_agrees(lib):
    # 32x3x32x32 -> 64: the CIFAR stem, big enough to split over the thread pool.
    x, w, b, g, win = _case((32, 3, 32, 32), 64, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    want = dc.conv2d_direct.reference(x, w, b, win, 1)
    _close(dc.conv2d_direct.run_native(x, w, b, win, 1), want, want)
    want = dc.conv2d_weight_direct.reference(x, g, win, 1)
    np.testing.assert_allclose(dc.conv2d_weight_direct.run_native(x, g, win, 1), want, rtol=1e-4,
                               atol=1e-4 * float(np.abs(want).max()))


def test_empty_batch_and_bias_only_output(lib):
    x, w, b, g, win = _case((0, 3, 5, 5), 4, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    assert dc.conv2d_direct.run_native(x, w, b, win, 1).shape == (0, 4, 5, 5)
    np.testing.assert_array_equal(dc.conv2d_weight_direct.run_native(x, g, win, 1), np.zeros_like(w))
    # A kernel of 1 with padding 2 reads only padding at the edges: those outputs are the bias.
    x, w, b, g, win = _case((1, 2, 1, 1), 3, (1, 1), (1, 1), (2, 2), (1, 1), 1)
    y = dc.conv2d_direct.run_native(x, w, b, win, 1)
    np.testing.assert_allclose(y[0, :, 0, 0], b)
    _close(y[0, :, 2, 2], b + w[:, :, 0, 0] @ x[0, :, 0, 0], b)  # float32 sums in another order


def test_bad_arguments_raise_errors_naming_the_shapes(lib):
    x, w, b, g, win = _case((2, 4, 6, 6), 4, (3, 3), (1, 1), (1, 1), (1, 1), 2)
    with pytest.raises(ValueError, match=r"shapes do not fit: input \(2, 4, 6, 6\), weight \(4, 2, 3, 3\), groups 4"):
        dc.conv2d_direct(x, w, b, win, 4)
    with pytest.raises(TypeError, match="float32"):
        dc.conv2d_direct(x.astype(np.float64), w, b, win, 2)
    with pytest.raises(ValueError, match=r"output \(2, 4, 5, 6\)"):
        dc.conv2d_weight_direct(x, g[:, :, :5], win, 2)
    # The extension checks for itself, whatever the Python side let through.
    y = np.empty((2, 4, 6, 6), np.float32)
    with pytest.raises(ValueError, match=r"shapes do not fit: input \(2, 4, 6, 6\), weight \(4, 2, 3, 3\)"):
        lib.conv2d_direct(x, w, b, y, (1, 1), (1, 1), (1, 1), 3)
    with pytest.raises(ValueError, match=r"bias \(3\)"):
        lib.conv2d_direct(x, w, b[:3].copy(), y, (1, 1), (1, 1), (1, 1), 2)
    with pytest.raises(ValueError, match="positive"):
        lib.conv2d_direct(x, w, b, y, (1, 0), (1, 1), (1, 1), 2)
    with pytest.raises(ValueError, match="positive"):
        lib.conv2d_weight_direct(x, g, np.empty_like(w), (1, 1), (-1, 1), (1, 1), 2)
    with pytest.raises(ValueError, match="C-contiguous"):
        lib.conv2d_direct(x[:, :, :, ::2], w, b, y, (1, 1), (1, 1), (1, 1), 2)
    with pytest.raises(TypeError, match="float32"):
        lib.conv2d_direct(x.astype(np.float64), w, b, y, (1, 1), (1, 1), (1, 1), 2)
    with pytest.raises(ValueError, match="overlap"):
        lib.conv2d_direct(y, w, b, y, (1, 1), (1, 1), (1, 1), 2)


def test_im2col_routes_float32_2d_convs_here_only_with_the_extension(lib):
    x, w, b, g, win = _case((2, 3, 10, 10), 8, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    assert dc.applies(x, w.shape, win)
    assert not dc.applies(x.astype(np.float64), w.shape, win)
    # Many rows on a 4x4 map: GEMM's with few output channels a group, channel tiles' with 16 or more.
    small = Window((4, 4), (4, 4), (3, 3), (1, 1), (1, 1), (1, 1))
    assert not dc.applies(np.zeros((2, 32, 4, 4), np.float32), (8, 32, 3, 3), small)
    assert dc.applies(np.zeros((2, 32, 4, 4), np.float32), (16, 32, 3, 3), small)
    assert not dc.applies(np.zeros((2, 32, 4, 4), np.float32), (16, 16, 3, 3), small)  # 8 a group
    y, cols = im2col.conv_and_cols(np, x, w, b, win, 1)
    assert cols is None  # no columns were built
    want = im2col.conv(np, x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), win, 1)
    _close(y, want, want)
