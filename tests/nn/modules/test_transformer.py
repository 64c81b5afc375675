"""Transformer blocks: the post-/pre-norm residual formulas rebuilt from each layer's own submodules,
causal-mask detection, independent clones, full model shapes and init, gradcheck."""

import numpy as np
import pytest

import tensora
from tensora import nn


def _np(t):
    return t.detach().numpy()


def _ff(layer, x):
    return layer.linear2(layer.activation(layer.linear1(x)))


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_formula(norm_first, activation):
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, activation=activation,
                                       batch_first=True, norm_first=norm_first, dtype=tensora.float64)
    x = tensora.randn(2, 4, 8, dtype=tensora.float64)
    mask = nn.Transformer.generate_square_subsequent_mask(4, dtype=tensora.float64)

    def sa(t):
        return layer.self_attn(t, t, t, attn_mask=mask, need_weights=False)[0]

    if norm_first:
        h = x + sa(layer.norm1(x))
        ref = h + _ff(layer, layer.norm2(h))
    else:
        h = layer.norm1(x + sa(x))
        ref = layer.norm2(h + _ff(layer, h))
    np.testing.assert_allclose(_np(layer(x, src_mask=mask)), _np(ref), rtol=1e-12)


def test_decoder_layer_formula():
    layer = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.0, dtype=tensora.float64)
    tgt, mem = tensora.randn(3, 2, 8, dtype=tensora.float64), tensora.randn(5, 2, 8, dtype=tensora.float64)
    h = layer.norm1(tgt + layer.self_attn(tgt, tgt, tgt, need_weights=False)[0])
    h = layer.norm2(h + layer.multihead_attn(h, mem, mem, need_weights=False)[0])
    ref = layer.norm3(h + _ff(layer, h))
    np.testing.assert_allclose(_np(layer(tgt, mem)), _np(ref), rtol=1e-12)


def test_encoder_stack_clones_and_detects_causal_masks():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True,
                                       dtype=tensora.float64)
    enc = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(8, dtype=tensora.float64))
    assert enc.layers[0] is not layer and enc.layers[0].linear1.weight is not enc.layers[1].linear1.weight
    np.testing.assert_array_equal(_np(enc.layers[1].linear1.weight), _np(layer.linear1.weight))
    x = tensora.randn(2, 4, 8, dtype=tensora.float64)
    causal = nn.Transformer.generate_square_subsequent_mask(4, dtype=tensora.float64)
    ref = enc.norm(enc.layers[1](enc.layers[0](x, src_mask=causal), src_mask=causal))
    np.testing.assert_allclose(_np(enc(x, mask=causal)), _np(ref), rtol=1e-12)
    bool_causal = tensora.ones(4, 4, dtype=tensora.bool).triu(1)
    np.testing.assert_allclose(_np(enc(x, mask=bool_causal)), _np(ref), rtol=1e-12)
    seen = []
    enc.layers[0].register_forward_pre_hook(lambda m, args, kw: seen.append(kw["is_causal"]), with_kwargs=True)
    enc(x, mask=causal)
    enc(x, mask=tensora.zeros(4, 4, dtype=tensora.float64))
    assert seen == [True, False]
    assert _np(nn.Transformer.generate_square_subsequent_mask(3)).tolist() == \
        [[0, -np.inf, -np.inf], [0, 0, -np.inf], [0, 0, 0]]


def test_padding_mask_reaches_every_layer():
    layer = nn.TransformerEncoderLayer(4, 1, dim_feedforward=8, dropout=0.0, batch_first=True,
                                       dtype=tensora.float64)
    enc = nn.TransformerEncoder(layer, 2)
    x = tensora.randn(1, 3, 4, dtype=tensora.float64)
    kpm = tensora.tensor([[False, False, True]])
    out = enc(x, src_key_padding_mask=kpm)
    # The padded position never influences the others.
    x2 = x.clone()
    with tensora.no_grad():
        x2[0, 2] = 100.0
    np.testing.assert_allclose(_np(enc(x2, src_key_padding_mask=kpm))[0, :2], _np(out)[0, :2], rtol=1e-12)


def test_full_transformer_shapes_init_and_errors():
    model = nn.Transformer(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=1, dim_feedforward=16,
                           dropout=0.0, batch_first=True)
    src, tgt = tensora.randn(2, 5, 8), tensora.randn(2, 3, 8)
    out = model(src, tgt, tgt_mask=model.generate_square_subsequent_mask(3))
    assert out.shape == (2, 3, 8)
    w = _np(model.encoder.layers[0].linear1.weight)
    assert np.abs(w).max() <= np.sqrt(6 / (8 + 16))  # Xavier, not Linear's default
    assert len(model.encoder.layers) == 2 and len(model.decoder.layers) == 1
    with pytest.raises(RuntimeError, match="batch number"):
        model(src, tensora.randn(3, 3, 8))
    with pytest.raises(RuntimeError, match="d_model"):
        model(src, tensora.randn(2, 3, 4))
    with pytest.raises(RuntimeError, match="relu/gelu"):
        nn.TransformerEncoderLayer(8, 2, activation="tanh")
    custom = nn.TransformerEncoderLayer(8, 2, activation=nn.GELU())
    assert "activation" in dict(custom.named_children())


def test_encoder_layer_gradcheck(module_gradcheck):
    layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=4, dropout=0.0, batch_first=True, norm_first=True,
                                       activation="gelu", dtype=tensora.float64)
    assert module_gradcheck(layer, tensora.randn(1, 2, 4, dtype=tensora.float64, requires_grad=True))


def test_dropout_active_only_in_training():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.5, batch_first=True)
    x = tensora.randn(2, 4, 8)
    layer.eval()
    np.testing.assert_array_equal(_np(layer(x)), _np(layer(x)))
    layer.train()
    assert not np.array_equal(_np(layer(x)), _np(layer(x)))
