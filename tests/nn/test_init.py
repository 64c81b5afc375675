"""nn.init: bounds and moments against the formulas (NumPy float64), plus structure checks.

Random streams differ from torch's, so distributions are compared by their support and moments
on large draws (tolerances a few standard errors wide), not element by element.
"""

import math
import warnings

import numpy as np
import pytest

import tensora
from tensora import nn
from tensora.nn import init


def _np(t):
    return t.detach().numpy().astype(np.float64)


def test_calculate_gain():
    assert init.calculate_gain("linear") == 1 and init.calculate_gain("conv2d") == 1
    assert init.calculate_gain("sigmoid") == 1
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(2 / 6))
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError):
        init.calculate_gain("leaky_relu", "x")
    with pytest.raises(ValueError):
        init.calculate_gain("swish")


def test_fans():
    assert init._calculate_fan_in_and_fan_out(tensora.empty(5, 3)) == (3, 5)
    assert init._calculate_fan_in_and_fan_out(tensora.empty(8, 4, 3, 2)) == (24, 48)
    with pytest.raises(ValueError):
        init._calculate_fan_in_and_fan_out(tensora.empty(3))


def test_uniform_and_normal_moments():
    u = _np(init.uniform_(tensora.empty(200_000), -2.0, 3.0))
    assert u.min() >= -2.0 and u.max() < 3.0
    assert abs(u.mean() - 0.5) < 0.02 and abs(u.var() - 25 / 12) < 0.03
    z = _np(init.normal_(tensora.empty(200_000, dtype=tensora.float64), 1.5, 0.5))
    assert abs(z.mean() - 1.5) < 0.01 and abs(z.std() - 0.5) < 0.01


@pytest.mark.parametrize("a,b,mean,std", [(-2.0, 2.0, 0.0, 1.0), (0.5, 1.0, 0.0, 1.0), (-0.1, 0.1, 0.0, 0.02)])
def test_trunc_normal_support_and_moments(a, b, mean, std):
    x = _np(init.trunc_normal_(tensora.empty(100_000, dtype=tensora.float64), mean, std, a, b))
    assert x.min() >= a and x.max() <= b
    al, be = (a - mean) / std, (b - mean) / std
    pdf = lambda t: math.exp(-t * t / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda t: (1 + math.erf(t / math.sqrt(2))) / 2  # noqa: E731
    Z = cdf(be) - cdf(al)
    m = mean + std * (pdf(al) - pdf(be)) / Z
    v = std ** 2 * (1 + (al * pdf(al) - be * pdf(be)) / Z - ((pdf(al) - pdf(be)) / Z) ** 2)
    assert abs(x.mean() - m) < 5 * math.sqrt(v / x.size)
    assert abs(x.var() / v - 1) < 0.03


def test_trunc_normal_warns_far_from_range():
    with pytest.warns(UserWarning, match="more than 2 std"):
        init.trunc_normal_(tensora.empty(10), mean=10.0, std=1.0, a=-1.0, b=1.0)


def test_constant_ones_zeros_eye():
    t = tensora.empty(3, 4)
    np.testing.assert_array_equal(_np(init.constant_(t, 2.5)), np.full((3, 4), 2.5))
    np.testing.assert_array_equal(_np(init.ones_(t)), np.ones((3, 4)))
    np.testing.assert_array_equal(_np(init.zeros_(t)), np.zeros((3, 4)))
    np.testing.assert_array_equal(_np(init.eye_(t)), np.eye(3, 4))
    with pytest.raises(ValueError):
        init.eye_(tensora.empty(2, 2, 2))


@pytest.mark.parametrize("groups", [1, 2])
def test_dirac_is_the_identity_convolution(groups):
    w = init.dirac_(tensora.empty(4, 4 // groups, 3, 3), groups=groups)
    x = tensora.randn(1, 4, 5, 5)
    y = tensora.conv2d(x, w, padding=1, groups=groups)
    np.testing.assert_allclose(_np(y), _np(x), atol=1e-6)
    with pytest.raises(ValueError):
        init.dirac_(tensora.empty(3, 3))


def test_xavier_bounds_and_std():
    w = _np(init.xavier_uniform_(tensora.empty(300, 200), gain=2.0))
    a = 2.0 * math.sqrt(6 / 500)
    assert np.abs(w).max() <= a and np.abs(w).max() > 0.99 * a
    assert abs(w.std() - a / math.sqrt(3)) < 0.005 * a
    w = _np(init.xavier_normal_(tensora.empty(300, 200)))
    assert abs(w.std() - math.sqrt(2 / 500)) < 0.01 * math.sqrt(2 / 500)


@pytest.mark.parametrize("mode,fan", [("fan_in", 200), ("fan_out", 300)])
def test_kaiming(mode, fan):
    w = _np(init.kaiming_uniform_(tensora.empty(300, 200), a=math.sqrt(5), mode=mode))
    bound = math.sqrt(3) * math.sqrt(2 / 6) / math.sqrt(fan)  # = 1 / sqrt(fan)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    w = _np(init.kaiming_normal_(tensora.empty(300, 200), mode=mode, nonlinearity="relu"))
    assert abs(w.std() - math.sqrt(2 / fan)) < 0.01 * math.sqrt(2 / fan)
    with pytest.raises(ValueError):
        init.kaiming_uniform_(tensora.empty(3, 3), mode="fan_avg")


def test_kaiming_zero_element_warns():
    with pytest.warns(UserWarning, match="no-op"):
        init.kaiming_uniform_(tensora.empty(0, 3))
    with pytest.warns(UserWarning, match="no-op"):
        init.kaiming_normal_(tensora.empty(0, 3))


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (3, 2, 2, 2)])
def test_orthogonal(shape):
    w = _np(init.orthogonal_(tensora.empty(*shape, dtype=tensora.float64), gain=2.0))
    flat = w.reshape(shape[0], -1) / 2.0
    small = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
    np.testing.assert_allclose(small, np.eye(small.shape[0]), atol=1e-12)
    with pytest.raises(ValueError):
        init.orthogonal_(tensora.empty(3))


def test_generator_makes_draws_repeatable_and_independent_of_the_default():
    g1, g2 = tensora.Generator().manual_seed(7), tensora.Generator().manual_seed(7)
    fns = [lambda t, g: init.uniform_(t, generator=g), lambda t, g: init.normal_(t, generator=g),
           lambda t, g: init.trunc_normal_(t, generator=g), lambda t, g: init.xavier_uniform_(t, generator=g),
           lambda t, g: init.kaiming_normal_(t, generator=g), lambda t, g: init.orthogonal_(t, generator=g)]
    for fn in fns:
        a = _np(fn(tensora.empty(4, 5), g1))
        tensora.manual_seed(123)  # the default stream must not matter
        b = _np(fn(tensora.empty(4, 5), g2))
        np.testing.assert_array_equal(a, b)


def test_init_runs_without_recording_on_parameters():
    p = nn.Parameter(tensora.empty(3, 3))
    for fn in (init.uniform_, init.normal_, init.zeros_, init.ones_, init.xavier_uniform_, init.orthogonal_,
               init.trunc_normal_, init.eye_, lambda t: init.constant_(t, 0.1)):
        out = fn(p)
        assert out is p and p.grad_fn is None and p.requires_grad and p.is_leaf


def test_low_precision_and_integer_targets():
    h = init.normal_(tensora.empty(1000, dtype=tensora.bfloat16))
    assert h.dtype is tensora.bfloat16 and abs(float(h.float().std()) - 1) < 0.1
    with pytest.raises(TypeError):
        init.uniform_(tensora.empty(3, dtype=tensora.int64))
    assert init.zeros_(tensora.ones(3, dtype=tensora.int64)).tolist() == [0, 0, 0]


def test_default_layer_inits_follow_torch_formulas():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lin = nn.Linear(400, 50)
    bound = 1 / math.sqrt(400)
    for p in (lin.weight, lin.bias):
        v = _np(p)
        assert np.abs(v).max() <= bound and np.abs(v).max() > 0.9 * bound
    conv = nn.Conv2d(6, 8, 3, groups=2)
    bound = 1 / math.sqrt(3 * 9)
    assert np.abs(_np(conv.weight)).max() <= bound and np.abs(_np(conv.bias)).max() <= bound
    tconv = nn.ConvTranspose2d(6, 8, 3, groups=2)  # fan_in reads the (in, out/groups, k, k) weight: 4 * 9
    assert np.abs(_np(tconv.weight)).max() <= 1 / math.sqrt(4 * 9)
    emb = nn.Embedding(5000, 20, padding_idx=3)
    w = _np(emb.weight)
    assert not w[3].any() and abs(w.std() - 1) < 0.02
    mha = nn.MultiheadAttention(16, 4)
    assert np.abs(_np(mha.in_proj_weight)).max() <= math.sqrt(6 / (16 + 48))
    assert not _np(mha.in_proj_bias).any() and not _np(mha.out_proj.bias).any()
    bil = nn.Bilinear(9, 4, 3)
    assert np.abs(_np(bil.weight)).max() <= 1 / 3 and np.abs(_np(bil.bias)).max() <= 1 / 3
    bn = nn.BatchNorm1d(3)
    assert _np(bn.weight).tolist() == [1, 1, 1] and _np(bn.bias).tolist() == [0, 0, 0]
    assert nn.PReLU(2).weight.tolist() == [0.25, 0.25]
