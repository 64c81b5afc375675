"""Embedding against NumPy: lookup, padding_idx gradient, max_norm renormalisation, from_pretrained."""

import numpy as np
import pytest

import tensora
from tensora import nn


def _np(t):
    return t.detach().numpy()


def test_lookup_and_padding_gradient():
    emb = nn.Embedding(6, 3, padding_idx=-1, dtype=tensora.float64)
    assert emb.padding_idx == 5 and not _np(emb.weight)[5].any()
    ids = tensora.tensor([[0, 5, 2], [2, 2, 5]])
    out = emb(ids)
    np.testing.assert_array_equal(_np(out), _np(emb.weight)[ids.numpy()])
    g = np.random.default_rng(0).standard_normal((2, 3, 3))
    out.backward(tensora.tensor(g))
    ref = np.zeros((6, 3))
    np.add.at(ref, ids.numpy(), g)
    ref[5] = 0
    np.testing.assert_allclose(_np(emb.weight.grad), ref, rtol=1e-12)
    assert repr(emb) == "Embedding(6, 3, padding_idx=5)"
    with pytest.raises(ValueError):
        nn.Embedding(3, 2, padding_idx=3)


def test_max_norm_renormalises_looked_up_rows_in_place():
    emb = nn.Embedding(4, 3, max_norm=1.0, dtype=tensora.float64)
    with tensora.no_grad():
        emb.weight.copy_(tensora.tensor([[3.0, 4.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 2.0], [5.0, 0.0, 0.0]]))
    out = emb(tensora.tensor([0, 1, 0, 2]))
    w = _np(emb.weight)
    np.testing.assert_allclose(w[0], np.array([3.0, 4.0, 0.0]) * (1.0 / (5.0 + 1e-7)))
    np.testing.assert_allclose(w[1], [0.1, 0.0, 0.0])
    np.testing.assert_allclose(w[3], [5.0, 0.0, 0.0])  # not looked up: untouched
    np.testing.assert_allclose(_np(out)[3], w[2])
    assert repr(emb) == "Embedding(4, 3, max_norm=1.0)"


def test_scale_grad_by_freq_and_repr():
    emb = nn.Embedding(3, 2, scale_grad_by_freq=True, sparse=True, dtype=tensora.float64)
    emb(tensora.tensor([1, 1, 2])).sum().backward()
    np.testing.assert_allclose(_np(emb.weight.grad), [[0, 0], [1, 1], [1, 1]])
    assert repr(emb) == "Embedding(3, 2, scale_grad_by_freq=True, sparse=True)"


def test_from_pretrained():
    w = tensora.randn(5, 2)
    emb = nn.Embedding.from_pretrained(w)
    assert not emb.weight.requires_grad and emb.weight.data_ptr() == w.data_ptr()
    assert nn.Embedding.from_pretrained(w, freeze=False).weight.requires_grad
    with pytest.raises(ValueError):
        nn.Embedding.from_pretrained(tensora.randn(5))
    with pytest.raises(ValueError):
        nn.Embedding(4, 2, _weight=tensora.randn(5, 2))
