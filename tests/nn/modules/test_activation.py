"""Activation modules against NumPy float64 formulas, gradcheck away from kinks, torch's reprs."""

import math
import warnings

import numpy as np
import pytest

import tensora
from tensora import nn


def _np(t):
    return t.detach().numpy()


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _erf(x):
    return np.vectorize(math.erf)(x)


SELU_A, SELU_S = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946

CASES = [
    (nn.ReLU(), lambda x: np.maximum(x, 0)),
    (nn.ReLU6(), lambda x: np.clip(x, 0, 6)),
    (nn.Hardtanh(-0.5, 0.8), lambda x: np.clip(x, -0.5, 0.8)),
    (nn.LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    (nn.ELU(0.7), lambda x: np.where(x > 0, x, 0.7 * (np.exp(x) - 1))),
    (nn.CELU(0.5), lambda x: np.maximum(x, 0) + np.minimum(0, 0.5 * (np.exp(x / 0.5) - 1))),
    (nn.SELU(), lambda x: SELU_S * np.where(x > 0, x, SELU_A * (np.exp(x) - 1))),
    (nn.GELU(), lambda x: x * 0.5 * (1 + _erf(x / math.sqrt(2)))),
    (nn.GELU("tanh"), lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    (nn.SiLU(), lambda x: x * _sigmoid(x)),
    (nn.Mish(), lambda x: x * np.tanh(np.log1p(np.exp(x)))),
    (nn.Hardsigmoid(), lambda x: np.clip(x / 6 + 0.5, 0, 1)),
    (nn.Hardswish(), lambda x: x * np.clip(x / 6 + 0.5, 0, 1)),
    (nn.Sigmoid(), _sigmoid),
    (nn.Tanh(), np.tanh),
    (nn.LogSigmoid(), lambda x: np.log(_sigmoid(x))),
    (nn.Softplus(2.0, 3.0), lambda x: np.where(2 * x > 3, x, np.log1p(np.exp(2 * x)) / 2)),
    (nn.Softsign(), lambda x: x / (1 + np.abs(x))),
    (nn.Tanhshrink(), lambda x: x - np.tanh(x)),
    (nn.Softshrink(0.3), lambda x: np.where(x > 0.3, x - 0.3, np.where(x < -0.3, x + 0.3, 0))),
    (nn.Hardshrink(0.3), lambda x: np.where(np.abs(x) > 0.3, x, 0)),
    (nn.Threshold(0.1, 20.0), lambda x: np.where(x > 0.1, x, 20.0)),
    (nn.GLU(), lambda x: x[..., :2] * _sigmoid(x[..., 2:])),
    (nn.Softmax(dim=1), lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
    (nn.Softmin(dim=-1), lambda x: np.exp(-x) / np.exp(-x).sum(-1, keepdims=True)),
    (nn.LogSoftmax(dim=0), lambda x: x - np.log(np.exp(x).sum(0, keepdims=True))),
]


def _input():
    # Values away from every kink (0, +-0.3, +-0.5, 0.1, +-3, 0.8, 1.5) so finite differences are clean.
    x = np.random.default_rng(0).uniform(-4, 4, (3, 4))
    for k in (0.0, 0.1, 0.3, 0.5, 0.8, 1.5, 3.0):
        for s in (1, -1):
            x = np.where(np.abs(x - s * k) < 0.05, x + 0.1, x)
    return x


@pytest.mark.parametrize("module,ref", CASES, ids=[type(m).__name__ + str(i) for i, (m, _) in enumerate(CASES)])
def test_activation_matches_numpy_and_gradcheck(module, ref, module_gradcheck):
    x = _input()
    np.testing.assert_allclose(_np(module(tensora.tensor(x))), ref(x), rtol=1e-10, atol=1e-12)
    assert module_gradcheck(module, tensora.tensor(x, requires_grad=True))


def test_prelu(module_gradcheck):
    m = nn.PReLU(3, init=0.1, dtype=tensora.float64)
    with tensora.no_grad():
        m.weight.copy_(tensora.tensor([0.1, 0.2, 0.3]))
    x = _input()[:2, :3].reshape(2, 3, 1) * np.ones((1, 1, 2))
    np.testing.assert_allclose(_np(m(tensora.tensor(x))), np.where(x > 0, x, np.array([0.1, 0.2, 0.3])[:, None] * x))
    assert module_gradcheck(m, tensora.tensor(x, requires_grad=True))
    assert repr(m) == "PReLU(num_parameters=3)" and nn.PReLU().weight.tolist() == [0.25]


def test_inplace_activations_write_into_the_input():
    for m in (nn.ReLU(inplace=True), nn.Hardtanh(inplace=True), nn.SELU(inplace=True), nn.Threshold(0, 1, True),
              nn.LeakyReLU(inplace=True), nn.ELU(inplace=True), nn.SiLU(inplace=True), nn.Mish(inplace=True),
              nn.Hardswish(True), nn.Hardsigmoid(True), nn.CELU(inplace=True), nn.ReLU6(inplace=True)):
        x = tensora.tensor([-2.0, 0.5, 3.0])
        expected = type(m)()(x.clone()) if not isinstance(m, nn.Threshold) else nn.Threshold(0, 1)(x.clone())
        assert m(x) is x
        np.testing.assert_allclose(_np(x), _np(expected))


def test_softmax_without_dim_uses_legacy_rule_with_warning():
    x = tensora.randn(2, 3)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        y = nn.Softmax()(x)
    np.testing.assert_allclose(_np(y).sum(1), [1, 1], rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = nn.LogSoftmax()(tensora.randn(3))  # 1-D: dim 0
    np.testing.assert_allclose(np.exp(_np(y)).sum(), 1, rtol=1e-6)
    s2 = nn.Softmax2d()(tensora.randn(2, 3, 4, 4))
    np.testing.assert_allclose(_np(s2).sum(1), np.ones((2, 4, 4)), rtol=1e-6)
    with pytest.raises(ValueError):
        nn.Softmax2d()(tensora.randn(3, 4))


def test_activation_errors():
    with pytest.raises(ValueError):
        nn.Hardtanh(1.0, -1.0)
    with pytest.raises(ValueError):
        nn.GLU()(tensora.randn(2, 3))


def test_activation_reprs():
    assert repr(nn.ReLU()) == "ReLU()" and repr(nn.ReLU(inplace=True)) == "ReLU(inplace=True)"
    assert repr(nn.LeakyReLU(0.2, True)) == "LeakyReLU(negative_slope=0.2, inplace=True)"
    assert repr(nn.GELU("tanh")) == "GELU(approximate='tanh')"
    assert repr(nn.ELU()) == "ELU(alpha=1.0)" and repr(nn.CELU(2.0, True)) == "CELU(alpha=2.0, inplace=True)"
    assert repr(nn.Hardtanh()) == "Hardtanh(min_val=-1.0, max_val=1.0)" and repr(nn.ReLU6()) == "ReLU6()"
    assert repr(nn.Softplus()) == "Softplus(beta=1.0, threshold=20.0)"
    assert repr(nn.Softmax(dim=-1)) == "Softmax(dim=-1)" and repr(nn.LogSoftmax()) == "LogSoftmax(dim=None)"
    assert repr(nn.Softshrink()) == "Softshrink(0.5)" and repr(nn.Hardshrink(0.2)) == "Hardshrink(0.2)"
    assert repr(nn.Threshold(0.1, 20)) == "Threshold(threshold=0.1, value=20)"
    assert repr(nn.GLU()) == "GLU(dim=-1)" and repr(nn.SiLU()) == "SiLU()" and repr(nn.Tanh()) == "Tanh()"
