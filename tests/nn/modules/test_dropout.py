"""Dropout modules: identity in eval mode, drop rate and 1/(1-p) scaling in training, channel-wise masks."""

import numpy as np
import pytest

import tensora
from tensora import nn


def _np(t):
    return t.detach().numpy()


def test_dropout_train_and_eval():
    d = nn.Dropout(0.25)
    x = tensora.ones(400, 500)
    y = _np(d(x))
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01 and np.allclose(y[kept], 1 / 0.75)
    d.eval()
    assert d(x) is x
    assert repr(nn.Dropout(0.3, inplace=True)) == "Dropout(p=0.3, inplace=True)"
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


def test_dropout_inplace_keeps_gradients_right():
    x = tensora.randn(50, 40, dtype=tensora.float64, requires_grad=True)
    h = x * 1.0
    y = nn.Dropout(0.5, inplace=True)(h)
    assert y is h
    y.sum().backward()
    mask = _np(h) != 0
    np.testing.assert_allclose(_np(x.grad), mask * 2.0)


@pytest.mark.parametrize("cls,shape", [(nn.Dropout1d, (8, 16, 5)), (nn.Dropout2d, (8, 16, 3, 3)),
                                       (nn.Dropout3d, (8, 16, 2, 2, 2))])
def test_channel_dropout_zeroes_whole_channels(cls, shape):
    y = _np(cls(0.5)(tensora.ones(*shape)))
    flat = y.reshape(shape[0], shape[1], -1)
    assert np.all((flat == 0).all(-1) | (flat == 2.0).all(-1))  # each channel all dropped or all kept
    assert 0.3 < (flat[..., 0] == 0).mean() < 0.7
    assert cls(0.5).eval()(tensora.ones(*shape)).numpy().min() == 1
