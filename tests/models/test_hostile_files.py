"""Hostile model files: settings that are the wrong kind of value, sizes no checkpoint holds,
special files where settings go, tokenizer vocabularies that would take gigabytes to build.

Each case was found by fuzzing the loaders (it crashed, hung, took gigabytes, or surfaced as a
bare KeyError / TypeError / ZeroDivisionError from deep inside); each must now be a tensora
error naming the file and the problem, raised before anything large is built.
"""

from __future__ import annotations

import json
import os
import resource
import time

import numpy as np
import pytest

import tensora.io as tio
from tensora.io import FormatError, UnsupportedError
from tensora.models import load, load_tokenizer
from tensora.models.tokenizer import TokenizerError

from serve.tiny import write_tiny_llama  # tests/serve/tiny.py


@pytest.fixture
def tiny(tmp_path):
    write_tiny_llama(tmp_path, hidden=32, layers=1, context=64)
    return tmp_path


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("changes,message", [
    ({"num_hidden_layers": 10**12}, "num_hidden_layers = 1000000000000, but the checkpoint has"),
    ({"hidden_size": 2**40}, "hidden_size = 1099511627776 is longer than any axis"),
    ({"vocab_size": 2**32 - 1}, "vocab_size = 4294967295 is longer than any axis"),
    ({"num_attention_heads": 0}, "num_attention_heads|cannot be built"),
    ({"num_hidden_layers": "x"}, "num_hidden_layers must be a positive integer, got 'x'"),
    ({"hidden_size": 1.5}, "cannot be built|hidden_size must be a positive integer"),
    ({"rms_norm_eps": float("nan")}, "rms_norm_eps must be a positive number"),
    ({"rope_theta": -1.0}, "rope_theta must be a positive number"),
    ({"max_position_embeddings": 0}, "max_position_embeddings must be a positive integer"),
    ({"rope_scaling": "linear"}, "cannot be built"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "cannot be built|lacks"),
])
def test_config_values_a_checkpoint_cannot_hold_are_format_errors(tiny, changes, message):
    _edit_config(tiny, **changes)
    start = time.perf_counter()
    with pytest.raises(FormatError, match=message) as info:
        load(tiny)
    assert "config.json" in str(info.value)
    assert time.perf_counter() - start < 30


def test_a_long_context_costs_nothing_until_used(tiny):
    """A rotary table for 2**25 positions took 9.5 GB before the first token; its rows now come as needed."""
    _edit_config(tiny, max_position_embeddings=2**25)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = load(tiny)
    out = model.generate([5, 6, 7], max_new_tokens=2, temperature=0)
    assert out.completion_tokens == 2
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 1 << 20, f"{grown_kib} KiB for a 3-token prompt"
    rope = model.rotary()
    assert rope.cos.shape[0] < 10_000
    cos, _ = rope.covering(np.array([9000]))
    assert cos.shape[0] > 9000
    short = load(tiny)  # the same rows, computed in one go
    np.testing.assert_array_equal(cos.numpy()[:3], short.rotary().cos.numpy()[:3])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_settings_files_that_are_not_files_are_refused_at_once(tiny):
    (tiny / "config.json").unlink()
    os.mkfifo(tiny / "config.json")  # a plain open() waits forever for a writer
    with pytest.raises(FormatError, match="is a FIFO"):
        load(tiny)
    (tiny / "config.json").unlink()
    (tiny / "config.json").write_text("[" * 100_000)
    with pytest.raises(FormatError, match="nests JSON too deeply|not valid JSON"):
        load(tiny)


def test_broken_hf_tokenizer_files_are_tokenizer_errors(tiny):
    good = (tiny / "tokenizer.json").read_text()
    (tiny / "tokenizer.json").write_text('{"version": 1, 2: 3}')
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        load_tokenizer(tiny)
    (tiny / "tokenizer.json").write_text(good)
    (tiny / "tokenizer_config.json").write_text("[1, 2]")
    with pytest.raises(TokenizerError, match="tokenizer_config.json: holds a JSON list"):
        load_tokenizer(tiny)
    (tiny / "tokenizer_config.json").write_bytes(b'{"eos_token": "\xff"}')
    with pytest.raises(TokenizerError, match="not UTF-8"):
        load_tokenizer(tiny)
    (tiny / "tokenizer_config.json").write_text("{}")
    (tiny / "generation_config.json").write_text(json.dumps({"eos_token_id": "x"}))
    with pytest.raises(TokenizerError, match="eos_token_id must be a token id"):
        load_tokenizer(tiny)
    (tiny / "generation_config.json").unlink()
    (tiny / "tokenizer_config.json").write_text(json.dumps({"chat_template": 5}))
    with pytest.raises(TokenizerError, match="chat_template must be a string"):
        load_tokenizer(tiny)


def _spm_gguf(path, tokens, **extra):
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": [0.0] * len(tokens), "tokenizer.ggml.token_type": [2, 3, 3] + [1] * (len(tokens) - 3)}
    meta.update(extra)
    tio.save_gguf(path, {"x": np.zeros(1, np.float32)}, meta, arch="llama")
    return path


def test_a_vocabulary_of_long_tokens_is_refused_before_building_merges(tmp_path):
    """2000 tokens "a" .. "a" * 2000: every split of every token is a merge, 2.6 GB at 1500 tokens
    and an abort at 2000. The merge work is bounded before anything is built."""
    path = _spm_gguf(tmp_path / "bomb.gguf", ["<unk>", "<s>", "</s>"] + ["a" * k for k in range(1, 2001)])
    start = time.perf_counter()
    with pytest.raises(FormatError, match="too long to turn into merges"):
        load_tokenizer(path)
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("key,value,message", [
    ("tokenizer.ggml.bos_token_id", "1", "bos_token_id must be a token id"),
    ("tokenizer.ggml.eos_token_id", 1.5, "eos_token_id must be a token id"),
    ("tokenizer.ggml.add_bos_token", [1, 2], "add_bos_token must be a boolean"),
    ("tokenizer.ggml.scores", 1.0, "scores must be an array of numbers"),
    ("tokenizer.ggml.token_type", ["a", "b", "c", "d"], "token_type must be an array of numbers"),
    ("tokenizer.chat_template", 5, "chat_template must be a string"),
])
def test_gguf_tokenizer_values_of_the_wrong_kind_are_named(tmp_path, key, value, message):
    path = _spm_gguf(tmp_path / "t.gguf", ["<unk>", "<s>", "</s>", "a"], **{key: value})
    with pytest.raises(FormatError, match=message) as info:
        load_tokenizer(path)
    assert "t.gguf" in str(info.value)


def test_gguf_tensors_of_block_types_tensora_cannot_decode(tmp_path):
    """GGUF's NVFP4 shares its name with tensora's (NVIDIA's three-part) nvfp4 format: its blocks
    stay raw instead of being unpacked as the wrong format; a model made of them is refused by name."""
    from gguf import GGMLQuantizationType, GGUFWriter

    path = str(tmp_path / "n.gguf")
    writer = GGUFWriter(path, "llama")
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((2, 36), np.uint8), raw_dtype=GGMLQuantizationType.NVFP4)
    writer.add_tensor("blk.0.attn_k.weight", np.zeros((2, 40), np.uint8), raw_dtype=GGMLQuantizationType.Q8_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert tio.load_gguf(path).unsupported_block_tensors() == {"blk.0.attn_q.weight": "NVFP4",
                                                               "blk.0.attn_k.weight": "Q8_1"}
    with pytest.raises(UnsupportedError, match="a GGUF block type tensora cannot decode"):
        load(path)


def test_a_checkpoint_that_does_not_fit_its_config_names_the_file(tiny):
    from safetensors.numpy import load_file, save_file

    weights = load_file(tiny / "model.safetensors")
    weights["model.norm.weight"] = np.ones(31, np.float32)  # hidden_size is 32
    save_file(weights, tiny / "model.safetensors")
    with pytest.raises(FormatError, match=r"model.norm.weight: checkpoint shape \(31,\) does not match the "
                                          r"model's \(32,\)") as info:
        load(tiny)
    assert str(tiny) in str(info.value)


def test_nan_weights_are_named_when_sampling(tiny):
    """numpy's "probabilities contain NaN" named no cause."""
    from safetensors.numpy import load_file, save_file

    weights = load_file(tiny / "model.safetensors")
    weights["model.norm.weight"][:] = np.nan
    save_file(weights, tiny / "model.safetensors")
    with pytest.raises(FloatingPointError, match="logits hold NaN"):
        load(tiny).generate([5, 6], max_new_tokens=1, temperature=0.7, seed=0)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_symlink_loops_are_named(tiny, name):
    (tiny / name).unlink()
    os.symlink(tiny / name, tiny / name)
    with pytest.raises(FormatError, match=f"{name}: is a loop of symbolic links"):
        load(tiny)
