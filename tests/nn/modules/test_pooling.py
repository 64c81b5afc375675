"""Pooling modules against NumPy sliding-window max/mean, and torch's reprs."""

import numpy as np
import pytest

import tensora
from tensora import nn
from numpy.lib.stride_tricks import sliding_window_view


def _np(t):
    return t.detach().numpy()


def _windows(a, k, s, nd):
    w = sliding_window_view(a, k, axis=tuple(range(2, 2 + nd)))
    return w[(slice(None), slice(None)) + tuple(slice(None, None, st) for st in s)]


@pytest.mark.parametrize("cls,nd", [(nn.MaxPool1d, 1), (nn.MaxPool2d, 2), (nn.MaxPool3d, 3)])
def test_max_pool(cls, nd):
    x = tensora.randn(2, 3, *([7] * nd), dtype=tensora.float64)
    ref = _windows(_np(x), (3,) * nd, (2,) * nd, nd).max(axis=tuple(range(-nd, 0)))
    np.testing.assert_array_equal(_np(cls(3, stride=2)(x)), ref)
    out, idx = cls(3, stride=2, return_indices=True)(x)
    np.testing.assert_array_equal(_np(out), ref)
    assert idx.dtype is tensora.int64


@pytest.mark.parametrize("cls,nd", [(nn.AvgPool1d, 1), (nn.AvgPool2d, 2), (nn.AvgPool3d, 3)])
def test_avg_pool(cls, nd):
    x = tensora.randn(2, 3, *([6] * nd), dtype=tensora.float64)
    ref = _windows(_np(x), (2,) * nd, (2,) * nd, nd).mean(axis=tuple(range(-nd, 0)))
    np.testing.assert_allclose(_np(cls(2)(x)), ref, rtol=1e-12)
    # Zero padding counted in the divisor (count_include_pad=True) or not.
    padded = np.pad(_np(x), ((0, 0), (0, 0)) + ((1, 1),) * nd)
    ref_pad = _windows(padded, (2,) * nd, (2,) * nd, nd).mean(axis=tuple(range(-nd, 0)))
    np.testing.assert_allclose(_np(cls(2, padding=1)(x)), ref_pad, rtol=1e-12)
    ones = np.pad(np.ones(_np(x).shape), ((0, 0), (0, 0)) + ((1, 1),) * nd)
    counts = _windows(ones, (2,) * nd, (2,) * nd, nd).sum(axis=tuple(range(-nd, 0)))
    np.testing.assert_allclose(_np(cls(2, padding=1, count_include_pad=False)(x)), ref_pad * 2 ** nd / counts,
                               rtol=1e-12)


def test_avg_pool2d_divisor_override():
    x = tensora.ones(1, 1, 4, 4, dtype=tensora.float64)
    np.testing.assert_allclose(_np(nn.AvgPool2d(2, divisor_override=2)(x)), np.full((1, 1, 2, 2), 2.0))


@pytest.mark.parametrize("cls,nd", [(nn.AdaptiveAvgPool1d, 1), (nn.AdaptiveAvgPool2d, 2), (nn.AdaptiveAvgPool3d, 3)])
def test_adaptive_avg_pool(cls, nd):
    x = tensora.randn(2, 3, *([6] * nd), dtype=tensora.float64)
    ref = _windows(_np(x), (3,) * nd, (3,) * nd, nd).mean(axis=tuple(range(-nd, 0)))
    np.testing.assert_allclose(_np(cls(2)(x)), ref, rtol=1e-12)
    np.testing.assert_allclose(_np(cls(1)(x)).reshape(2, 3), _np(x).reshape(2, 3, -1).mean(-1), rtol=1e-12)


def test_pool_gradcheck(module_gradcheck):
    x = tensora.randn(1, 2, 5, 5, dtype=tensora.float64, requires_grad=True)
    for m in (nn.MaxPool2d(2, stride=1), nn.AvgPool2d(3, stride=2, padding=1), nn.AdaptiveAvgPool2d((2, 3))):
        assert module_gradcheck(m, x)


def test_pool_reprs():
    assert repr(nn.MaxPool2d(3, stride=2)) == \
        "MaxPool2d(kernel_size=3, stride=2, padding=0, dilation=1, ceil_mode=False)"
    assert repr(nn.MaxPool1d((2,))) == "MaxPool1d(kernel_size=(2,), stride=(2,), padding=0, dilation=1, ceil_mode=False)"
    assert repr(nn.AvgPool1d(3)) == "AvgPool1d(kernel_size=(3,), stride=(3,), padding=(0,))"
    assert repr(nn.AvgPool2d(3, stride=1, padding=1)) == "AvgPool2d(kernel_size=3, stride=1, padding=1)"
    assert repr(nn.AdaptiveAvgPool2d((5, None))) == "AdaptiveAvgPool2d(output_size=(5, None))"
