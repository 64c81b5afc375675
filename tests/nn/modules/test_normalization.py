"""BatchNorm (running statistics, momentum, eval), LayerNorm, GroupNorm, RMSNorm against NumPy float64."""

import numpy as np
import pytest

import tensora
from tensora import nn


def _np(t):
    return t.detach().numpy()


def np_batch_norm(x, w, b, eps):
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean) / np.sqrt(var + eps) * w.reshape(shape) + b.reshape(shape)


@pytest.mark.parametrize("cls,shape", [(nn.BatchNorm1d, (6, 3)), (nn.BatchNorm1d, (6, 3, 4)),
                                       (nn.BatchNorm2d, (4, 3, 2, 5)), (nn.BatchNorm3d, (2, 3, 2, 2, 3))])
def test_batch_norm_train_updates_running_stats(cls, shape):
    rng = np.random.default_rng(0)
    bn = cls(3, momentum=0.2, dtype=tensora.float64)
    with tensora.no_grad():
        bn.weight.copy_(tensora.tensor(rng.standard_normal(3)))
        bn.bias.copy_(tensora.tensor(rng.standard_normal(3)))
    rm, rv = np.zeros(3), np.ones(3)
    axes = (0,) + tuple(range(2, len(shape)))
    n = int(np.prod([shape[a] for a in axes]))
    for step in range(3):
        x = rng.standard_normal(shape) * 2 + 1
        y = bn(tensora.tensor(x))
        np.testing.assert_allclose(_np(y), np_batch_norm(x, _np(bn.weight), _np(bn.bias), 1e-5), rtol=1e-10,
                                   atol=1e-12)
        rm = 0.8 * rm + 0.2 * x.mean(axis=axes)
        rv = 0.8 * rv + 0.2 * x.var(axis=axes) * n / (n - 1)  # the unbiased variance, as torch
        np.testing.assert_allclose(_np(bn.running_mean), rm, rtol=1e-12)
        np.testing.assert_allclose(_np(bn.running_var), rv, rtol=1e-12)
        assert bn.num_batches_tracked.item() == step + 1
    bn.eval()
    x = rng.standard_normal(shape)
    bshape = (1, -1) + (1,) * (len(shape) - 2)
    ref = (x - rm.reshape(bshape)) / np.sqrt(rv.reshape(bshape) + 1e-5) * _np(bn.weight).reshape(bshape) \
        + _np(bn.bias).reshape(bshape)
    np.testing.assert_allclose(_np(bn(tensora.tensor(x))), ref, rtol=1e-10)
    assert bn.num_batches_tracked.item() == 3


def test_batch_norm_cumulative_average_and_no_tracking():
    bn = nn.BatchNorm1d(2, momentum=None, dtype=tensora.float64)
    xs = [np.random.default_rng(i).standard_normal((5, 2)) for i in range(3)]
    for x in xs:
        bn(tensora.tensor(x))
    np.testing.assert_allclose(_np(bn.running_mean), np.mean([x.mean(0) for x in xs], axis=0), rtol=1e-12)
    free = nn.BatchNorm1d(2, track_running_stats=False, affine=False, dtype=tensora.float64).eval()
    assert free.running_mean is None and list(free.state_dict()) == []
    x = xs[0]
    np.testing.assert_allclose(_np(free(tensora.tensor(x))), (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-10)


def test_batch_norm_state_dict_and_reset():
    bn = nn.BatchNorm2d(3)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    bn(tensora.randn(2, 3, 2, 2))
    sd = bn.state_dict()
    del sd["num_batches_tracked"]  # old checkpoints lack it: loads, keeping the counter
    fresh = nn.BatchNorm2d(3)
    assert fresh.load_state_dict(sd).missing_keys == []
    np.testing.assert_array_equal(_np(fresh.running_mean), _np(bn.running_mean))
    bn.reset_parameters()
    assert _np(bn.running_var).tolist() == [1, 1, 1] and bn.num_batches_tracked.item() == 0
    with pytest.raises(ValueError, match="expected 4D input"):
        bn(tensora.randn(2, 3))
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        nn.BatchNorm1d(3)(tensora.randn(2, 3, 2, 2))


def test_batch_norm_gradcheck(module_gradcheck):
    bn = nn.BatchNorm1d(2, dtype=tensora.float64)
    assert module_gradcheck(bn, tensora.randn(4, 2, 3, dtype=tensora.float64, requires_grad=True))


def test_layer_norm(module_gradcheck):
    ln = nn.LayerNorm((3, 4), dtype=tensora.float64)
    with tensora.no_grad():
        ln.weight.copy_(tensora.randn(3, 4))
        ln.bias.copy_(tensora.randn(3, 4))
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    ref = (x - mean) / np.sqrt(var + 1e-5) * _np(ln.weight) + _np(ln.bias)
    np.testing.assert_allclose(_np(ln(tensora.tensor(x))), ref, rtol=1e-10)
    assert module_gradcheck(nn.LayerNorm(3, dtype=tensora.float64),
                            tensora.randn(2, 3, dtype=tensora.float64, requires_grad=True))
    assert nn.LayerNorm(4, bias=False).bias is None and nn.LayerNorm(4, elementwise_affine=False).weight is None


def test_group_norm(module_gradcheck):
    gn = nn.GroupNorm(2, 4, dtype=tensora.float64)
    with tensora.no_grad():
        gn.weight.copy_(tensora.randn(4))
    x = np.random.default_rng(2).standard_normal((3, 4, 5))
    g = x.reshape(3, 2, -1)
    y = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-5)).reshape(x.shape)
    ref = y * _np(gn.weight).reshape(1, 4, 1) + _np(gn.bias).reshape(1, 4, 1)
    np.testing.assert_allclose(_np(gn(tensora.tensor(x))), ref, rtol=1e-10)
    assert module_gradcheck(gn, tensora.randn(2, 4, 2, dtype=tensora.float64, requires_grad=True))
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(3, 4)


def test_rms_norm(module_gradcheck):
    rms = nn.RMSNorm(4, eps=1e-6, dtype=tensora.float64)
    with tensora.no_grad():
        rms.weight.copy_(tensora.randn(4))
    x = np.random.default_rng(3).standard_normal((2, 3, 4))
    ref = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * _np(rms.weight)
    np.testing.assert_allclose(_np(rms(tensora.tensor(x))), ref, rtol=1e-10)
    assert module_gradcheck(rms, tensora.randn(2, 4, dtype=tensora.float64, requires_grad=True))
    # eps=None: the dtype's machine epsilon.
    x32 = np.full((1, 4), 1e-5, dtype=np.float32)
    ref = x32 / np.sqrt((x32 * x32).mean(-1, keepdims=True) + np.finfo(np.float32).eps)
    np.testing.assert_allclose(_np(nn.RMSNorm(4)(tensora.tensor(x32))), ref, rtol=1e-5)


def test_norm_reprs():
    assert repr(nn.BatchNorm2d(8)) == \
        "BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)"
    assert repr(nn.LayerNorm(16)) == "LayerNorm((16,), eps=1e-05, elementwise_affine=True, bias=True)"
    assert repr(nn.GroupNorm(2, 4, affine=False)) == "GroupNorm(2, 4, eps=1e-05, affine=False, bias=False)"
    assert repr(nn.RMSNorm([2, 3])) == "RMSNorm((2, 3), eps=None, elementwise_affine=True)"
