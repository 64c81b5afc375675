"""Quantized layers, model-level quantize(), memory_report, LoRA on a quantized base, and files."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tensora
from tensora import nn
from tensora.io import FormatError
from tensora.quant import (LoRALinear, QuantizedEmbedding, QuantizedLinear, QuantizedTensor, memory_report,
                           quantize)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 128)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128))
                                     for _ in range(2)])
        self.head = nn.Linear(128, 10)
        self.odd = nn.Linear(100, 128)  # 100 is not a multiple of any block size

    def forward(self, ids):
        h = self.embed(ids)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


def test_quantize_replaces_layers_in_place_and_reports_the_rest():
    model = Tiny()
    ids = tensora.tensor([[1, 2, 3]])
    before = model(ids).detach().numpy()
    result = quantize(model, "q8_0", skip=["head"])
    assert result.quantized == ["embed", "blocks.0.0", "blocks.0.2", "blocks.1.0", "blocks.1.2"]
    assert result.skipped == ["head"] and list(result.unfit) == ["odd"]
    assert "multiple of the block size" in result.unfit["odd"]
    assert isinstance(model.embed, QuantizedEmbedding) and isinstance(model.blocks[0][0], QuantizedLinear)
    assert type(model.head) is nn.Linear
    after = model(ids).detach().numpy()
    assert np.abs(after - before).max() < 0.05 * np.abs(before).max()


def test_skip_predicate_embeddings_flag_and_group_size():
    model = Tiny()
    result = quantize(model, "int4", skip=lambda name, m: name.endswith(".2"), group_size=64, embeddings=False)
    assert result.quantized == ["blocks.0.0", "blocks.1.0", "head"]
    assert model.blocks[0][0].weight.format.options()["group_size"] == 64
    assert isinstance(model.embed, nn.Embedding)
    model = Tiny()
    quantize(model, "nf4", group_size=128, double_quant=True)
    assert model.head.weight.format.options() == {"block_size": 128, "double_quant": True}
    with pytest.raises(ValueError, match="fixed block size"):
        quantize(Tiny(), "q8_0", group_size=64)


def test_memory_report_counts_what_is_held():
    model = nn.Sequential(nn.Linear(1024, 1024, bias=False), nn.Linear(1024, 1024, bias=False))
    dense = memory_report(model)
    assert dense.multiplier == 1.0 and dense.dense_bytes == 2 * 1024 * 1024 * 4
    quantize(model, "nf4", double_quant=True)
    report = memory_report(model)
    assert report.dense_bytes == dense.dense_bytes
    assert 7.0 < report.multiplier < 8.0  # 32 bits -> ~4.13 bits per weight
    assert "nf4" in str(report) and "total" in str(report)


def test_state_dict_save_load_round_trip(tmp_path):
    model = Tiny()
    quantize(model, "nf4", double_quant=True, skip=["embed"])
    path = tensora.save(model, tmp_path / "q.safetensors")
    loaded = tensora.load(path)
    q = loaded["blocks.0.0.weight"]
    assert isinstance(q, QuantizedTensor) and q.format == model.blocks[0][0].weight.format
    for name, part in model.blocks[0][0].weight.packed().items():
        np.testing.assert_array_equal(q.packed()[name], part)
    fresh = Tiny()
    quantize(fresh, "nf4", double_quant=True, skip=["embed"])
    fresh.load_state_dict(loaded)
    ids = tensora.tensor([[5, 6]])
    np.testing.assert_array_equal(fresh(ids).detach().numpy(), model(ids).detach().numpy())


def test_dense_checkpoint_loads_into_a_quantized_model():
    dense = Tiny()
    model = Tiny()
    quantize(model, "q8_0")
    model.load_state_dict(dense.state_dict())
    w = dense.blocks[0][0].weight.detach().numpy()
    assert np.abs(model.blocks[0][0].weight.dequantize().numpy() - w).max() < 0.01 * np.abs(w).max()


def test_corrupt_quantized_file_is_a_format_error(tmp_path):
    lin = nn.Linear(64, 32)
    layer = QuantizedLinear.from_float(lin, "q4_0")
    path = tensora.save({"w": layer.weight}, tmp_path / "q.safetensors")
    meta = tensora.io.read_metadata(path)
    spec = json.loads(meta["tensora.quant:w"])
    spec["shape"] = [64, 64]  # the blocks are for 32 rows
    bad = tensora.save({"w:blocks": tensora.load(path)["w"].packed()["blocks"]}, tmp_path / "bad.safetensors",
                       metadata={"tensora.quant:w": json.dumps(spec)})
    with pytest.raises(FormatError, match=r"bad.safetensors.*'w'.*blocks"):
        tensora.load(bad)
    spec["format"] = "nope"
    bad = tensora.save({"w:blocks": tensora.load(path)["w"].packed()["blocks"]}, tmp_path / "bad2.safetensors",
                       metadata={"tensora.quant:w": json.dumps(spec)})
    with pytest.raises(FormatError, match="unknown quantization format"):
        tensora.load(bad)


def test_qlora_trains_adapters_on_a_frozen_nf4_base():
    tensora.manual_seed(0)
    base = nn.Linear(128, 64)
    layer = LoRALinear(QuantizedLinear.from_float(base, "nf4", double_quant=True), r=8, alpha=16)
    x = tensora.randn(64, 128)
    np.testing.assert_allclose(layer(x).detach().numpy(), layer.base(x).detach().numpy(), atol=1e-6)
    delta = tensora.randn(128, 4) @ tensora.randn(4, 64) * 0.1  # a rank-4 change: within LoRA's reach
    target = (layer.base(x) + x @ delta).detach()
    trainable = [p for p in layer.parameters() if p.requires_grad]
    assert [tuple(p.shape) for p in trainable] == [(8, 128), (64, 8)]
    packed = {k: v.copy() for k, v in layer.base.weight.packed().items()}
    opt = tensora.optim.Adam(trainable, lr=1e-2)
    losses = []
    for _ in range(60):
        loss = (layer(x) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.05 * losses[0]
    for k, v in layer.base.weight.packed().items():
        np.testing.assert_array_equal(v, packed[k])


def test_quantize_drops_each_dense_weight_before_the_next_layer():
    """Peak memory is the model plus one layer: siblings in one container too (a list of the
    children once kept every dense weight alive until the container was done)."""
    import gc
    import weakref

    model = nn.Sequential(*[nn.Linear(256, 256) for _ in range(6)])
    dense = [weakref.ref(layer.weight) for layer in model]
    alive_at = {}

    def skip(name, _module):
        gc.collect()
        alive_at[name] = sum(ref() is not None for ref in dense)
        return False

    quantize(model, "q4_0", skip=skip)
    assert alive_at == {str(i): 6 - i for i in range(6)}
