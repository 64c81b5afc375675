"""QuantizedTensor: construction, validation, fused products and their gradients, for every format."""

from __future__ import annotations

import numpy as np
import pytest

import tensora
from tensora import nn
from tensora.nn import functional as F
from tensora.quant import QuantFormatError, QuantizedTensor, formats, get_format, quantize_tensor

ALL_FORMATS = ["int8", "int4", "nf4", "fp4", "fp8_e4m3", "fp8_e5m2", "nvfp4", "mxfp4", "q4_0", "q4_1", "q5_0",
               "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl"]
# Variants worth running through every product: options change the packed layout.
VARIANTS = [(name, {}) for name in ALL_FORMATS] + [
    ("int8", {"threshold": 3.0}), ("int4", {"group_size": 32, "symmetric": False}),
    ("nf4", {"double_quant": True}), ("fp4", {"block_size": 128, "double_quant": True}),
    ("fp8_e4m3", {"per_channel": False}),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in opts.items()) for name, opts in VARIANTS]


def _weight(rows=48, cols=512, seed=0):
    w = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    w[3, 7] = 9.0  # one outlier column for int8's threshold variant
    return w


def _rel_err(got, want):
    return float(np.linalg.norm(np.asarray(got, np.float64) - want) / max(np.linalg.norm(want), 1e-30))


def test_every_format_is_registered():
    assert set(ALL_FORMATS) <= set(formats())


@pytest.mark.parametrize("name,opts", VARIANTS, ids=IDS)
def test_dequantize_matches_the_format_and_is_close(name, opts):
    w = _weight()
    qt = quantize_tensor(tensora.from_numpy(w), name, **opts)
    dense = qt.dequantize().numpy()
    fmt = get_format(name, **opts)
    np.testing.assert_array_equal(dense, fmt.dequantize(qt.packed(), w.shape))
    assert qt.shape == tensora.Size(w.shape) and qt.dtype is tensora.float32 and qt.device.type == "cpu"
    assert _rel_err(dense, w) < 0.6  # q2_k is the coarsest; each format's own bound is in its tests
    assert qt.nbytes == sum(p.nbytes for p in qt.packed().values()) < w.nbytes


@pytest.mark.parametrize("name,opts", VARIANTS, ids=IDS)
def test_fused_products_match_the_dense_weight(name, opts):
    w = _weight(rows=37)  # odd row count: partial tiles and thread chunks
    qt = quantize_tensor(w, name, **opts)
    dense = qt.dequantize().numpy().astype(np.float64)
    rng = np.random.default_rng(1)
    for m in (1, 5):
        x = rng.standard_normal((m, w.shape[1])).astype(np.float32)
        # the kernels' own error against the dense weight: 15-bit activations (~4e-5), NF4's
        # 2**-12 code book in the native kernel (~1.5e-4); a wrong scale or code is far above
        assert _rel_err((tensora.from_numpy(x) @ qt.T).numpy(), x @ dense.T) < 1e-3
        g = rng.standard_normal((m, w.shape[0])).astype(np.float32)
        assert _rel_err((tensora.from_numpy(g) @ qt).numpy(), g @ dense) < 1e-3


@pytest.mark.parametrize("name", ["q4_0", "nf4", "int8", "q6_k"])
def test_gradients_reach_the_input_and_bias(name):
    w = _weight(rows=16, cols=256)
    qt = quantize_tensor(w, name)
    dense = tensora.from_numpy(qt.dequantize().numpy())
    x = tensora.randn(3, 4, 256, requires_grad=True)
    b = tensora.randn(16, requires_grad=True)
    upstream = tensora.randn(3, 4, 16)
    (F.linear(x, qt, b) * upstream).sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    b_ref = b.detach().clone().requires_grad_()
    (F.linear(x_ref, dense, b_ref) * upstream).sum().backward()
    assert _rel_err(x.grad.numpy(), x_ref.grad.numpy()) < 1e-4  # measured: 0 (the backward decodes exactly)
    np.testing.assert_allclose(b.grad.numpy(), b_ref.grad.numpy(), rtol=1e-5, atol=1e-5)
    # x @ qt (the transpose product) differentiates back through the forward kernel
    g = tensora.randn(2, 16, requires_grad=True)
    (g @ qt).square().sum().backward()
    g_ref = g.detach().clone().requires_grad_()
    (g_ref @ dense).square().sum().backward()
    assert _rel_err(g.grad.numpy(), g_ref.grad.numpy()) < 3e-4  # measured: <= 3.3e-5 (NF4)


def test_vector_input_and_dtypes():
    qt = quantize_tensor(_weight(rows=8, cols=64), "q8_0")
    dense = qt.dequantize().numpy().astype(np.float64)
    v, u = tensora.randn(64), tensora.randn(8)
    out = v @ qt.T
    assert out.shape == tensora.Size([8])
    assert _rel_err(out.numpy(), dense @ v.numpy().astype(np.float64)) < 1e-2
    out = u @ qt
    assert out.shape == tensora.Size([64])
    assert _rel_err(out.numpy(), u.numpy().astype(np.float64) @ dense) < 1e-2
    x = tensora.randn(2, 64).to(tensora.bfloat16)
    y = x @ qt.to(tensora.bfloat16).T
    assert y.dtype is tensora.bfloat16
    assert _rel_err(y.float().numpy(), x.float().numpy().astype(np.float64) @ dense.T) < 2e-2
    assert qt.T.T.shape == qt.shape and qt.T.shape == tensora.Size([64, 8])


def test_misuse_is_a_clear_error():
    qt = quantize_tensor(_weight(rows=8, cols=64), "q8_0")
    with pytest.raises(tensora.ShapeError, match=r"\[2, 32\].*\[64, 8\]"):
        tensora.randn(2, 32) @ qt.T
    with pytest.raises(TypeError, match="right operand"):
        qt @ tensora.randn(64, 2)
    with pytest.raises(TypeError, match="does not accept a QuantizedTensor"):
        tensora.ops.linalg.matmul(qt, tensora.randn(64, 2))
    with pytest.raises(TypeError):
        qt + 1
    with pytest.raises(RuntimeError, match="frozen"):
        qt.requires_grad_()
    with pytest.raises(tensora.ShapeError, match="multiple of the block size 32"):
        quantize_tensor(tensora.randn(4, 48), "q4_0")
    with pytest.raises(QuantFormatError, match="unknown quantization format 'q9_9'"):
        quantize_tensor(tensora.randn(4, 64), "q9_9")
    with pytest.raises(TypeError, match="floating"):
        quantize_tensor(tensora.ones(4, 64, dtype=tensora.int32), "q8_0")


@pytest.mark.parametrize("name,opts", VARIANTS, ids=IDS)
def test_packed_round_trip_and_validation(name, opts):
    w = _weight(rows=8)
    qt = quantize_tensor(w, name, **opts)
    parts = qt.packed()
    again = QuantizedTensor.from_packed(name, parts, w.shape, **qt.format.options())
    np.testing.assert_array_equal(again.dequantize().numpy(), qt.dequantize().numpy())
    key = next(iter(parts))
    bad = dict(parts, **{key: parts[key].reshape(-1)[:-1]})
    with pytest.raises(QuantFormatError, match=repr(key)):
        QuantizedTensor.from_packed(name, bad, w.shape, **qt.format.options())
    with pytest.raises(QuantFormatError, match="expected parts"):
        QuantizedTensor.from_packed(name, dict(parts, extra=np.zeros(1)), w.shape, **qt.format.options())


def test_embedding_decodes_only_the_rows_asked_for():
    w = _weight(rows=100, cols=64)
    qt = quantize_tensor(w, "q8_0")
    ids = tensora.tensor([[3, 4, 5, 99], [0, 3, 3, 50]])
    got = F.embedding(ids, qt)
    np.testing.assert_array_equal(got.numpy(), qt.dequantize().numpy()[ids.numpy()])
    with pytest.raises(IndexError, match="out of range"):
        F.embedding(tensora.tensor([100]), qt)


def test_gguf_tensors_are_wrapped_without_copying():
    gq = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType as T

    from tensora.io import GGUFBlockTensor
    from tensora.quant import from_gguf

    w = _weight(rows=4, cols=64)
    blocks = gq.quantize(w, T.Q8_0)
    bt = GGUFBlockTensor("w", "Q8_0", (4, 64), 32, 34, blocks)
    qt = from_gguf(bt)
    assert np.shares_memory(qt.packed()["blocks"], blocks)
    np.testing.assert_array_equal(qt.dequantize().numpy(), gq.dequantize(blocks, T.Q8_0))
    empty = from_gguf(GGUFBlockTensor("e", "Q8_0", (0, 64), 32, 34, blocks[:0]))  # a GGUF may hold one
    assert tuple(empty.dequantize().shape) == (0, 64)
    assert tuple((tensora.ones(3, 64) @ empty.T).shape) == (3, 0)


def test_module_quantized_forward_close_to_dense():
    lin = nn.Linear(256, 64)
    x = tensora.randn(5, 256)
    from tensora.quant import QuantizedLinear
    q = QuantizedLinear.from_float(lin, "q8_0")
    assert _rel_err(q(x).detach().numpy(), lin(x).detach().numpy()) < 1e-2
    assert "format=" in repr(q)
