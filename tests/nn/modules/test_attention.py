"""MultiheadAttention against a NumPy float64 reference of torch's algorithm: packed and separate
projections, batch_first, unbatched, bool/float/padding masks, bias_kv, zero_attn, weights."""

import numpy as np
import pytest

import tensora
from tensora import nn


def _np(t):
    return t.detach().numpy()


def np_mha(m, q, k, v, attn_mask=None, key_padding_mask=None):
    """Batch-major (N, L, E) reference; masks are float (additive) or bool (True = blocked)."""
    E, H = m.embed_dim, m.num_heads
    hd = E // H
    if m.in_proj_weight is not None:
        wq, wk, wv = np.split(_np(m.in_proj_weight), 3)
    else:
        wq, wk, wv = _np(m.q_proj_weight), _np(m.k_proj_weight), _np(m.v_proj_weight)
    bq, bk, bv = np.split(_np(m.in_proj_bias), 3) if m.in_proj_bias is not None else (0, 0, 0)
    Q, K, V = q @ wq.T + bq, k @ wk.T + bk, v @ wv.T + bv
    N, L, S = q.shape[0], q.shape[1], k.shape[1]
    mask = np.zeros((N, H, L, S))
    if attn_mask is not None:
        am = np.where(attn_mask, -np.inf, 0) if attn_mask.dtype == bool else attn_mask
        mask = mask + (am.reshape(N, H, L, S) if am.ndim == 3 else am)
    if key_padding_mask is not None:
        kp = np.where(key_padding_mask, -np.inf, 0) if key_padding_mask.dtype == bool else key_padding_mask
        mask = mask + kp[:, None, None, :]
    if m.bias_k is not None:
        K = np.concatenate([K, np.broadcast_to(_np(m.bias_k), (N, 1, E))], 1)
        V = np.concatenate([V, np.broadcast_to(_np(m.bias_v), (N, 1, E))], 1)
        mask = np.concatenate([mask, np.zeros((N, H, L, 1))], -1)
    Qh = Q.reshape(N, L, H, hd).transpose(0, 2, 1, 3)
    Kh = K.reshape(N, -1, H, hd).transpose(0, 2, 1, 3)
    Vh = V.reshape(N, -1, H, hd).transpose(0, 2, 1, 3)
    if m.add_zero_attn:
        Kh = np.concatenate([Kh, np.zeros((N, H, 1, hd))], 2)
        Vh = np.concatenate([Vh, np.zeros((N, H, 1, hd))], 2)
        mask = np.concatenate([mask, np.zeros((N, H, L, 1))], -1)
    s = Qh @ Kh.transpose(0, 1, 3, 2) / np.sqrt(hd) + mask
    w = np.exp(s - s.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    out = (w @ Vh).transpose(0, 2, 1, 3).reshape(N, L, E) @ _np(m.out_proj.weight).T
    if m.out_proj.bias is not None:
        out = out + _np(m.out_proj.bias)
    return out, w


def _randomise(m, seed=0):
    rng = np.random.default_rng(seed)
    with tensora.no_grad():
        for p in m.parameters():
            p.copy_(tensora.tensor(rng.standard_normal(tuple(p.shape)) * 0.5))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("need_weights", [False, True])
def test_self_attention_with_masks(batch_first, need_weights):
    rng = np.random.default_rng(1)
    N, L, E, H = 2, 5, 8, 2
    m = nn.MultiheadAttention(E, H, batch_first=batch_first, dtype=tensora.float64)
    _randomise(m)
    x = rng.standard_normal((N, L, E))
    am = rng.standard_normal((L, L))
    kpm = np.zeros((N, L), dtype=bool)
    kpm[0, -2:] = True
    xt = tensora.tensor(x if batch_first else x.transpose(1, 0, 2))
    out, w = m(xt, xt, xt, key_padding_mask=tensora.tensor(kpm), attn_mask=tensora.tensor(am),
               need_weights=need_weights, average_attn_weights=False)
    ref, ref_w = np_mha(m, x, x, x, attn_mask=am, key_padding_mask=kpm)
    got = _np(out) if batch_first else _np(out).transpose(1, 0, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    if need_weights:
        np.testing.assert_allclose(_np(w), ref_w, rtol=1e-10, atol=1e-12)
    else:
        assert w is None


def test_cross_attention_kdim_vdim_bias_kv_zero_attn_and_averaged_weights():
    rng = np.random.default_rng(2)
    m = nn.MultiheadAttention(6, 3, kdim=4, vdim=5, add_bias_kv=True, add_zero_attn=True, batch_first=True,
                              dtype=tensora.float64)
    assert m.in_proj_weight is None and m.k_proj_weight.shape == (6, 4)
    _randomise(m, 3)
    q, k, v = rng.standard_normal((2, 3, 6)), rng.standard_normal((2, 4, 4)), rng.standard_normal((2, 4, 5))
    bool_mask = rng.random((2 * 3, 3, 4)) < 0.3
    out, w = m(tensora.tensor(q), tensora.tensor(k), tensora.tensor(v), attn_mask=tensora.tensor(bool_mask))
    ref, ref_w = np_mha(m, q, k, v, attn_mask=bool_mask)
    np.testing.assert_allclose(_np(out), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(_np(w), ref_w.mean(1), rtol=1e-10, atol=1e-12)
    assert w.shape == (2, 3, 6)  # 4 keys + bias_k + zero_attn


def test_shared_key_value_and_unbatched():
    rng = np.random.default_rng(4)
    m = nn.MultiheadAttention(4, 2, dtype=tensora.float64)
    _randomise(m, 5)
    q, kv = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    qt, kvt = tensora.tensor(q), tensora.tensor(kv)
    out, w = m(qt, kvt, kvt)
    ref, ref_w = np_mha(m, q[None], kv[None], kv[None])
    np.testing.assert_allclose(_np(out), ref[0], rtol=1e-10)
    np.testing.assert_allclose(_np(w), ref_w.mean(1)[0], rtol=1e-10)
    out2, none = m(qt, kvt, kvt, need_weights=False, key_padding_mask=tensora.tensor([False] * 4 + [True]))
    ref2, _ = np_mha(m, q[None], kv[None], kv[None], key_padding_mask=np.array([[False] * 4 + [True]]))
    np.testing.assert_allclose(_np(out2), ref2[0], rtol=1e-10)


def test_is_causal_hint_equals_the_causal_mask():
    m = nn.MultiheadAttention(4, 2, batch_first=True, dtype=tensora.float64)
    _randomise(m, 6)
    x = tensora.randn(2, 5, 4, dtype=tensora.float64)
    causal = nn.Transformer.generate_square_subsequent_mask(5, dtype=tensora.float64)
    a, _ = m(x, x, x, attn_mask=causal, need_weights=False)
    b, _ = m(x, x, x, attn_mask=causal, need_weights=False, is_causal=True)
    c, _ = m(x, x, x, attn_mask=causal, is_causal=True)
    np.testing.assert_allclose(_np(a), _np(b), rtol=1e-12)
    np.testing.assert_allclose(_np(a), _np(c), rtol=1e-12)
    with pytest.raises(RuntimeError, match="Need attn_mask"):
        m(x, x, x, is_causal=True)


def test_gradcheck(module_gradcheck):
    m = nn.MultiheadAttention(4, 2, batch_first=True, dtype=tensora.float64)
    x = tensora.randn(1, 3, 4, dtype=tensora.float64, requires_grad=True)
    assert module_gradcheck(m, x, call=lambda mod, t: mod(t, t, t)[0])
    assert module_gradcheck(m, x, call=lambda mod, t: mod(t, t, t, need_weights=False)[0])


def test_errors_and_repr():
    with pytest.raises(ValueError, match="divisible"):
        nn.MultiheadAttention(5, 2)
    with pytest.raises(ValueError, match="greater than 0"):
        nn.MultiheadAttention(0, 2)
    m = nn.MultiheadAttention(4, 2)
    with pytest.raises(ValueError, match="query should be unbatched 2D or batched 3D"):
        m(tensora.randn(4), tensora.randn(4), tensora.randn(4))
    with pytest.raises(RuntimeError, match="2D attn_mask"):
        x = tensora.randn(3, 1, 4)
        m(x, x, x, attn_mask=tensora.zeros(2, 2))
    assert repr(m) == ("MultiheadAttention(\n  (out_proj): NonDynamicallyQuantizableLinear(in_features=4, "
                       "out_features=4, bias=True)\n)")
