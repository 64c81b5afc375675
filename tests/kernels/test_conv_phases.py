"""Strided transposed convs split into one stride-1 conv per output phase (tensora/kernels/conv_phases.py).

Reference: im2col's column path (matmul + col2im), in float64, itself checked against torch's
conv_transpose in tests/ops/test_conv_torch.py. Strides above the kernel (phases no tap reaches),
dilations sharing a factor with the stride, padding past a tap, groups and depthwise.
"""

from __future__ import annotations

import numpy as np
import pytest

from tensora.kernels import conv_phases, direct_conv, im2col
from tensora.kernels.windows import Window

RNG = np.random.default_rng(0)

# conv input (x) size, y size, kernel, stride, pad, dilation, C, O, groups
CASES = [
    ((16, 16), (8, 8), (3, 3), (2, 2), (1, 1), (1, 1), 4, 6, 1),
    ((17, 13), (5, 7), (3, 2), (3, 2), (0, 1), (2, 1), 6, 4, 2),
    ((12, 12), (6, 6), (1, 1), (2, 2), (0, 0), (1, 1), 4, 4, 1),     # phases no tap reaches
    ((13, 13), (3, 3), (2, 2), (4, 4), (0, 0), (1, 1), 2, 2, 1),     # stride twice the kernel
    ((10, 34), (4, 10), (4, 4), (2, 3), (2, 1), (2, 2), 3, 5, 1),    # dilation 2 with stride 2: d' = 1
    ((17, 17), (9, 9), (3, 3), (2, 2), (1, 1), (1, 1), 8, 8, 8),     # depthwise
    ((9, 20), (9, 10), (3, 3), (1, 2), (1, 1), (1, 1), 3, 4, 1),     # width stride only
    ((7,), (3,), (3,), (3,), (2,), (1,), 2, 3, 1),                    # 1-D, padding past the first tap
]


def _arrays(x_size, y_size, kernel, c, o, groups, dtype):
    y = RNG.standard_normal((2, o) + y_size).astype(dtype)
    w = RNG.standard_normal((o, c // groups) + kernel).astype(dtype)
    b = RNG.standard_normal(c).astype(dtype)
    return y, w, b


@pytest.mark.parametrize("case", CASES)
def test_phases_match_the_column_path(case):
    x_size, y_size, kernel, stride, pad, dilation, c, o, groups = case
    win = Window(x_size, y_size, kernel, stride, pad, dilation)
    y, w, b = _arrays(x_size, y_size, kernel, c, o, groups, np.float64)
    want = im2col._conv_transpose_cols(np, y, w, win, groups) + b.reshape((1, -1) + (1,) * len(x_size))
    got = im2col._conv_transpose_phases(np, y, w, b, win, conv_phases.plan(win), groups)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_every_position_of_x_is_in_exactly_one_phase_and_every_tap_in_one_per_dim(case):
    x_size, y_size, kernel, stride, pad, dilation = case[:6]
    phases = conv_phases.plan(Window(x_size, y_size, kernel, stride, pad, dilation))
    hits = np.zeros(x_size, int)
    for ph in phases:
        hits[tuple(slice(p, None, s) for p, s in zip(ph.phase, stride))] += 1
        assert ph.window.out_size == hits[tuple(slice(p, None, s) for p, s in zip(ph.phase, stride))].shape
    assert (hits == 1).all()
    for dim, k in enumerate(kernel):
        per_phase = {ph.phase[dim]: ph.taps[dim] for ph in phases}
        assert sorted(t for taps in per_phase.values() for t in taps) == list(range(k))


def test_conv_transpose_takes_the_phases_for_float32_with_the_extension(monkeypatch):
    win = Window((16, 16), (8, 8), (3, 3), (2, 2), (1, 1), (1, 1))
    y, w, b = _arrays((16, 16), (8, 8), (3, 3), 4, 6, 1, np.float32)
    if not direct_conv.applies(y, (4, 6, 2, 2), win):
        pytest.skip("the direct kernels need the native extension")
    calls = []
    real = im2col._conv_transpose_phases
    monkeypatch.setattr(im2col, "_conv_transpose_phases", lambda *a: calls.append(1) or real(*a))
    got = im2col.conv_transpose(np, y, w, b, win, 1)
    assert calls
    want = im2col._conv_transpose_cols(np, y.astype(np.float64), w.astype(np.float64), win, 1)
    np.testing.assert_allclose(got, want + b.reshape(1, -1, 1, 1), rtol=0, atol=1e-4)
