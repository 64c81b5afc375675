"""Identity, Linear, Bilinear, Flatten, Unflatten against NumPy float64, gradcheck, reprs."""

import numpy as np
import pytest

import tensora
from tensora import nn


def _np(t):
    return t.detach().numpy()


def test_identity():
    x = tensora.randn(2, 3)
    assert nn.Identity(54, unused="x")(x) is x
    assert repr(nn.Identity()) == "Identity()"


@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward_and_gradcheck(bias, module_gradcheck):
    m = nn.Linear(3, 2, bias=bias, dtype=tensora.float64)
    assert m.weight.shape == (2, 3) and m.weight.dtype is tensora.float64
    x = tensora.randn(4, 5, 3, dtype=tensora.float64, requires_grad=True)
    ref = _np(x) @ _np(m.weight).T + (_np(m.bias) if bias else 0)
    np.testing.assert_allclose(_np(m(x)), ref, rtol=1e-12)
    assert module_gradcheck(m, tensora.randn(2, 3, dtype=tensora.float64, requires_grad=True))
    assert repr(m) == f"Linear(in_features=3, out_features=2, bias={bias})"


def test_linear_reset_parameters_reruns_init():
    m = nn.Linear(50, 40)
    before = _np(m.weight).copy()
    m.reset_parameters()
    assert not np.array_equal(before, _np(m.weight)) and np.abs(_np(m.weight)).max() <= 1 / np.sqrt(50)


def test_bilinear(module_gradcheck):
    m = nn.Bilinear(3, 4, 2, dtype=tensora.float64)
    x1 = tensora.randn(5, 3, dtype=tensora.float64, requires_grad=True)
    x2 = tensora.randn(5, 4, dtype=tensora.float64, requires_grad=True)
    ref = np.einsum("ni,oij,nj->no", _np(x1), _np(m.weight), _np(x2)) + _np(m.bias)
    np.testing.assert_allclose(_np(m(x1, x2)), ref, rtol=1e-12)
    small = nn.Bilinear(2, 2, 2, dtype=tensora.float64)
    assert module_gradcheck(small, tensora.randn(3, 2, dtype=tensora.float64, requires_grad=True),
                            tensora.randn(3, 2, dtype=tensora.float64, requires_grad=True))
    assert repr(nn.Bilinear(3, 4, 2, bias=False)) == \
        "Bilinear(in1_features=3, in2_features=4, out_features=2, bias=False)"
    with pytest.raises(ValueError):
        nn.Bilinear(0, 4, 2)


def test_flatten_unflatten():
    x = tensora.arange(120.0).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(_np(nn.Flatten()(x)), _np(x).reshape(2, 60))
    np.testing.assert_array_equal(_np(nn.Flatten(0, 2)(x)), _np(x).reshape(24, 5))
    y = nn.Unflatten(1, (3, 4))(x.reshape(2, 12, 5))
    np.testing.assert_array_equal(_np(y), _np(x))
    assert repr(nn.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"
    assert repr(nn.Unflatten(1, (2, 5))) == "Unflatten(dim=1, unflattened_size=(2, 5))"
    with pytest.raises(TypeError):
        nn.Unflatten(1, 5)
    with pytest.raises(TypeError):
        nn.Unflatten(1, (2, 2.5))
