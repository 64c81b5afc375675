"""Llama-family and GPT-2 models against transformers: logits, padding, greedy generation, GGUF, quantized loading."""

from __future__ import annotations

import numpy as np
import pytest

import tensora
import tensora.io as tio
from tensora.models import load
from tensora.quant import QuantizedLinear, QuantizedTensor, quantize_tensor

from models.llama_gguf import llama_gguf_parts

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

VOCAB = 128  # the vocabulary of conftest.hf_models

NAMES = ["llama", "llama3_tied", "qwen2", "gpt2"]


def _ids(b: int, t: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(3, VOCAB, size=(b, t))


def _reference_logits(model, ids, mask=None):
    kw = {}
    if mask is not None:  # positions count real tokens only, as generation computes them
        kw = {"attention_mask": torch.from_numpy(mask), "position_ids": torch.from_numpy(
            np.maximum(np.cumsum(mask, axis=1) - 1, 0))}
    with torch.no_grad():
        return model(torch.from_numpy(ids), **kw).logits.numpy()


@pytest.mark.parametrize("name", NAMES)
def test_logits_match_transformers(hf_models, name):
    path, ref = hf_models[name]
    model = load(path)
    ids = _ids(2, 40)
    np.testing.assert_allclose(model(ids).numpy(), _reference_logits(ref, ids), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_left_padded_batch_matches_transformers(hf_models, name):
    path, ref = hf_models[name]
    model = load(path)
    ids, mask = _ids(2, 24, seed=1), np.ones((2, 24), np.int64)
    mask[1, :9] = 0
    got, want = model(ids, attention_mask=mask).numpy(), _reference_logits(ref, ids, mask)
    np.testing.assert_allclose(got[mask.astype(bool)], want[mask.astype(bool)], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_greedy_generation_equals_transformers(hf_models, name):
    path, ref = hf_models[name]
    model = load(path)
    prompt = _ids(1, 10, seed=2)
    with torch.no_grad():
        want = ref.generate(torch.from_numpy(prompt), max_new_tokens=32, do_sample=False, eos_token_id=None,
                            pad_token_id=0)[0, 10:].tolist()
    got = model.generate(prompt[0].tolist(), max_new_tokens=32, temperature=0, stop_token_ids=[])
    assert got.token_ids == want
    assert (got.finish_reason, got.prompt_tokens, got.completion_tokens) == ("length", 10, 32)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_kv_cache_decoding_equals_full_forward(hf_models, name):
    model = load(hf_models[name][0])
    ids = _ids(1, 12, seed=3)[0].tolist()
    out = model.generate(ids, max_new_tokens=6, temperature=0, stop_token_ids=[])
    assert len(out.token_ids) == 6  # no stop ids: all six are decoded (an empty list would compare equal)
    full = model(np.array([ids + out.token_ids])).numpy()[0]
    assert full[len(ids) - 1:-1].argmax(-1).tolist() == out.token_ids


def test_batched_generation_equals_one_prompt_at_a_time(hf_models):
    model = load(hf_models["llama"][0])
    prompts = [_ids(1, n, seed=n)[0].tolist() for n in (3, 11, 7)]
    batch = model.generate(prompts, max_new_tokens=12, temperature=0, stop_token_ids=[])
    assert len(batch) == len(prompts)  # zip below would otherwise stop at the shorter list
    for p, b in zip(prompts, batch):
        assert len(b.token_ids) == 12
        assert b.token_ids == model.generate(p, max_new_tokens=12, temperature=0, stop_token_ids=[]).token_ids


def test_quantize_while_loading(hf_models):
    path, ref = hf_models["llama"]
    model = load(path, quantize="q8_0")
    layer = model.model.layers[0]
    assert isinstance(layer.mlp.up_proj, QuantizedLinear) and isinstance(model.lm_head, QuantizedLinear)
    ids = _ids(1, 16)
    got, want = model(ids).numpy(), _reference_logits(ref, ids)
    assert np.abs(got - want).max() < 0.02 * np.abs(want).max()


# -- GGUF files as llama.cpp's converter writes them -------------------------------------------

def _llama_gguf(path, ref, quant: str | None):
    return tio.save_gguf(path, *llama_gguf_parts(ref, VOCAB, quant), arch="llama")


# -- sampling and stopping ---------------------------------------------------------------------

class LetterTokenizer:
    """Token i is one letter; enough to test stop strings and streaming without a vocabulary file."""

    eos_token_ids = [2]

    def encode(self, text):
        return [ord(ch) - 97 + 3 for ch in text]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(97 + (i - 3) % 26) for i in ids)


def test_sampling_is_seeded_and_top_k_1_is_greedy(hf_models):
    model = load(hf_models["llama"][0])
    prompt = _ids(1, 5)[0].tolist()
    a = model.generate(prompt, max_new_tokens=10, temperature=1.3, top_p=0.9, seed=7, stop_token_ids=[])
    b = model.generate(prompt, max_new_tokens=10, temperature=1.3, top_p=0.9, seed=7, stop_token_ids=[])
    c = model.generate(prompt, max_new_tokens=10, temperature=1.3, top_p=0.9, seed=8, stop_token_ids=[])
    assert a.token_ids == b.token_ids != c.token_ids
    greedy = model.generate(prompt, max_new_tokens=10, temperature=0, stop_token_ids=[])
    top1 = model.generate(prompt, max_new_tokens=10, temperature=5.0, top_k=1, seed=3, stop_token_ids=[])
    assert top1.token_ids == greedy.token_ids
    penalised = model.generate(prompt, max_new_tokens=10, temperature=0, repetition_penalty=50.0, stop_token_ids=[])
    assert len(set(penalised.token_ids)) == len(penalised.token_ids)  # each seen token pushed far down


def test_stop_strings_streaming_and_eos(hf_models):
    model = load(hf_models["llama"][0])
    model.tokenizer = LetterTokenizer()
    prompt = "abc"
    full = model.generate(prompt, max_new_tokens=20, temperature=0, stop_token_ids=[])
    stop = full.text[5:7]
    cut = model.generate(prompt, max_new_tokens=20, temperature=0, stop=[stop], stop_token_ids=[])
    assert cut.finish_reason == "stop" and cut.text == full.text[:full.text.find(stop)]
    stream = model.stream(prompt, max_new_tokens=20, temperature=0, stop=[stop], stop_token_ids=[])
    deltas = list(stream)
    assert "".join(deltas) == cut.text and stream.completion.text == cut.text
    first = full.token_ids[3]
    ended = model.generate(prompt, max_new_tokens=20, temperature=0, stop_token_ids=[first])
    assert ended.finish_reason == "stop" and ended.token_ids == full.token_ids[:3]


def test_bad_requests_raise_clear_errors(hf_models, tmp_path):
    model = load(hf_models["llama"][0])
    with pytest.raises(ValueError, match="exceeds the model's context of 256"):
        model.generate(_ids(1, 250)[0].tolist(), max_new_tokens=10)
    with pytest.raises(ValueError, match="top_p"):
        model.generate([5], top_p=0)
    with pytest.raises(ValueError, match="text prompt needs"):
        model.generate("hello")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "mamba"}')
    with pytest.raises(tensora.models.UnsupportedModelError, match="'mamba'.*llama"):
        load(bad)


def _gpt2_gguf(path, ref, quant: str | None):
    c = ref.config
    names = {"transformer.wte.weight": "token_embd.weight", "transformer.wpe.weight": "position_embd.weight",
             "transformer.ln_f.weight": "output_norm.weight", "transformer.ln_f.bias": "output_norm.bias"}
    layer = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
             "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    tensors = {}
    for name, p in ref.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied to wte
        w = p.numpy()
        if name in names:
            gguf_name = names[name]
        else:
            parts = name.split(".")
            gguf_name = f"blk.{parts[2]}.{layer['.'.join(parts[3:-1])]}.{parts[-1]}"
            if parts[-1] == "weight" and w.ndim == 2:
                w = np.ascontiguousarray(w.T)  # llama.cpp's converter stores Conv1D weights as (out, in)
        big = w.ndim == 2 and w.shape[1] % 32 == 0 and "embd" not in gguf_name
        tensors[gguf_name] = quantize_tensor(w, quant) if quant and big else tensora.tensor(w)
    meta = {"gpt2.block_count": c.n_layer, "gpt2.context_length": c.n_positions, "gpt2.embedding_length": c.n_embd,
            "gpt2.feed_forward_length": 4 * c.n_embd, "gpt2.attention.head_count": c.n_head,
            "gpt2.attention.layer_norm_epsilon": c.layer_norm_epsilon, "gpt2.vocab_size": VOCAB}
    return tio.save_gguf(path, tensors, meta, arch="gpt2")


GGUF_WRITERS = {"llama": (_llama_gguf, lambda m: m.model.layers[1].self_attn.q_proj.weight),
                "gpt2": (_gpt2_gguf, lambda m: m.transformer.h[0].mlp.c_fc.weight)}


@pytest.mark.parametrize("quant", [None, "q8_0"])
@pytest.mark.parametrize("name", list(GGUF_WRITERS))
def test_gguf_files_match_transformers(hf_models, tmp_path, name, quant):
    _, ref = hf_models[name]
    write, some_weight = GGUF_WRITERS[name]
    model = load(write(tmp_path / "m.gguf", ref, quant))
    ids = _ids(1, 20, seed=4)
    got, want = model(ids).numpy(), _reference_logits(ref, ids)
    if quant is None:
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    else:
        assert isinstance(some_weight(model), QuantizedTensor)
        assert np.abs(got - want).max() < 0.02 * np.abs(want).max()
