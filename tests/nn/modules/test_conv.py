"""Conv1d/2d/3d and ConvTranspose1d/2d/3d modules: a NumPy float64 reference convolution,
padding modes, output_size, gradcheck and torch's reprs."""

import itertools

import numpy as np
import pytest

import tensora
from tensora import nn


def _np(t):
    return t.detach().numpy()


def np_conv(x, w, b, stride, dilation, groups):
    """Direct cross-correlation of an already padded (N, C, *S) input: sum over taps and channels."""
    n, c = x.shape[:2]
    o, cg = w.shape[:2]
    k = w.shape[2:]
    out_size = [(s - d * (kk - 1) - 1) // st + 1 for s, d, kk, st in zip(x.shape[2:], dilation, k, stride)]
    y = np.zeros((n, o, *out_size))
    og = o // groups
    for tap in itertools.product(*[range(kk) for kk in k]):
        sl = tuple(slice(t * d, t * d + (size - 1) * st + 1, st) for t, d, size, st in zip(tap, dilation, out_size,
                                                                                           stride))
        patch = x[(slice(None), slice(None)) + sl]  # (N, C, *out)
        for g in range(groups):
            wg = w[(slice(g * og, (g + 1) * og), slice(None)) + tap]  # (og, cg)
            y[:, g * og:(g + 1) * og] += np.einsum("oc,nc...->no...", wg, patch[:, g * cg:(g + 1) * cg])
    if b is not None:
        y += b.reshape((1, -1) + (1,) * len(k))
    return y


@pytest.mark.parametrize("cls,nd", [(nn.Conv1d, 1), (nn.Conv2d, 2), (nn.Conv3d, 3)])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv_matches_numpy(cls, nd, mode):
    m = cls(4, 6, 3, stride=2 if mode == "zeros" else 1, padding=1, dilation=1 if nd == 3 else 2, groups=2,
            padding_mode=mode, dtype=tensora.float64)
    x = tensora.randn(2, 4, *([7] * nd), dtype=tensora.float64)
    widths = ((0, 0), (0, 0)) + ((1, 1),) * nd
    np_mode = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
    xp = np.pad(_np(x), widths, mode=np_mode)
    ref = np_conv(xp, _np(m.weight), _np(m.bias), m.stride, m.dilation, 2)
    np.testing.assert_allclose(_np(m(x)), ref, rtol=1e-10, atol=1e-12)


def test_conv_same_padding_and_unbatched():
    m = nn.Conv2d(2, 3, (3, 4), padding="same", dilation=(1, 2), dtype=tensora.float64)
    x = tensora.randn(2, 5, 9, dtype=tensora.float64)
    y = m(x)
    assert y.shape == (3, 5, 9)
    # 'same' with an even total padding puts the extra column after the input, as torch does.
    xp = np.pad(_np(x)[None], ((0, 0), (0, 0), (1, 1), (3, 3)))
    np.testing.assert_allclose(_np(y), np_conv(xp, _np(m.weight), _np(m.bias), (1, 1), (1, 2), 1)[0], rtol=1e-10)
    r = nn.Conv1d(2, 2, 4, padding="same", padding_mode="reflect", dtype=tensora.float64)
    assert r._reversed_padding_repeated_twice == [1, 2]
    assert r(tensora.randn(1, 2, 6, dtype=tensora.float64)).shape == (1, 2, 6)


def test_conv_gradcheck(module_gradcheck):
    m = nn.Conv2d(2, 2, 2, padding=1, padding_mode="circular", dtype=tensora.float64)
    assert module_gradcheck(m, tensora.randn(1, 2, 3, 3, dtype=tensora.float64, requires_grad=True))


def test_conv_transpose_matches_the_gradient_of_conv():
    """A transposed conv is the input-gradient of the conv with the same weight: check that identity."""
    t = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=1,
                           dtype=tensora.float64)
    y = tensora.randn(2, 4, 5, 5, dtype=tensora.float64)
    out = t(y)
    assert out.shape == (2, 6, 10, 10)
    x = tensora.zeros(2, 6, 10, 10, dtype=tensora.float64, requires_grad=True)
    conv = tensora.conv2d(x, t.weight.detach(), None, stride=2, padding=1, groups=2)
    conv.backward(y)
    np.testing.assert_allclose(_np(out), _np(x.grad) + _np(t.bias).reshape(1, -1, 1, 1), rtol=1e-10)


@pytest.mark.parametrize("cls,nd", [(nn.ConvTranspose1d, 1), (nn.ConvTranspose2d, 2), (nn.ConvTranspose3d, 3)])
def test_conv_transpose_output_size(cls, nd):
    m = cls(2, 3, 3, stride=2, padding=1)
    x = tensora.randn(1, 2, *([4] * nd))
    assert m(x).shape[2:] == (7,) * nd
    assert m(x, output_size=[8] * nd).shape[2:] == (8,) * nd
    assert m(x, output_size=[1, 3] + [8] * nd).shape[2:] == (8,) * nd
    with pytest.raises(ValueError, match="valid sizes range"):
        m(x, output_size=[9] * nd)
    with pytest.raises(ValueError, match="output_size must have"):
        m(x, output_size=[8] * (nd + 1))


def test_conv_errors():
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="divisible"):
        nn.Conv2d(4, 3, 3, groups=2)
    with pytest.raises(ValueError, match="positive"):
        nn.Conv2d(4, 4, 3, groups=0)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(4, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="Invalid padding string"):
        nn.Conv2d(4, 4, 3, padding="full")
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv2d(4, 4, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="zeros"):
        nn.ConvTranspose2d(4, 4, 3, padding_mode="reflect")


def test_conv_reprs():
    assert repr(nn.Conv2d(1, 20, 5)) == "Conv2d(1, 20, kernel_size=(5, 5), stride=(1, 1))"
    assert repr(nn.Conv2d(4, 8, (3, 5), stride=(2, 1), padding=(4, 2), dilation=(3, 1), groups=2, bias=False,
                          padding_mode="reflect")) == (
        "Conv2d(4, 8, kernel_size=(3, 5), stride=(2, 1), padding=(4, 2), dilation=(3, 1), groups=2, bias=False, "
        "padding_mode=reflect)")
    assert repr(nn.Conv1d(2, 2, 3, padding="same")) == "Conv1d(2, 2, kernel_size=(3,), stride=(1,), padding=same)"
    assert repr(nn.ConvTranspose2d(4, 2, 3, stride=2, output_padding=1)) == (
        "ConvTranspose2d(4, 2, kernel_size=(3, 3), stride=(2, 2), output_padding=(1, 1))")
