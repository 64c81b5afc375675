"""A transformers Llama checkpoint as llama.cpp's converter (convert_hf_to_gguf) writes it, for tests.

Names map to GGUF's, the Q/K rows are permuted from rotate-half to interleaved pairs, a tied
lm_head is left out (the loader reuses token_embd), Llama 3 rope scaling becomes the
rope_freqs tensor (LlamaModel.generate_extra_tensors), and with `quant` the 2-D weights whose
rows hold whole 32-value blocks are quantized.
"""

from __future__ import annotations

import math

import numpy as np

import tensora
from tensora.quant import quantize_tensor

_LAYER = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
          "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight"}


def permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's permutation of Q/K rows (rotate-half -> interleaved)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama_gguf_parts(ref, vocab: int, quant: str | None = None) -> tuple[dict, dict]:
    """(tensors, metadata) of transformers LlamaForCausalLM `ref`, ready for tensora.io.save_gguf."""
    c = ref.config
    tensors = {}
    for name, p in ref.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        w = p.numpy()
        if name in _TOP:
            gguf = _TOP[name]
        else:
            parts = name.split(".")
            gguf = f"blk.{parts[2]}.{_LAYER['.'.join(parts[3:-1])]}.{parts[-1]}"
            if "q_proj" in name:
                w = permute(w, c.num_attention_heads)
            elif "k_proj" in name:
                w = permute(w, c.num_key_value_heads)
        w = np.ascontiguousarray(w)
        big = w.ndim == 2 and w.shape[1] % 32 == 0
        tensors[gguf] = quantize_tensor(w, quant) if quant and big else tensora.tensor(w)
    freqs = _rope_freqs(c)
    if freqs is not None:
        tensors["rope_freqs.weight"] = tensora.tensor(freqs)
    meta = {"llama.block_count": c.num_hidden_layers, "llama.context_length": c.max_position_embeddings,
            "llama.embedding_length": c.hidden_size, "llama.feed_forward_length": c.intermediate_size,
            "llama.attention.head_count": c.num_attention_heads,
            "llama.attention.head_count_kv": c.num_key_value_heads, "llama.rope.freq_base": 10000.0,
            "llama.attention.layer_norm_rms_epsilon": c.rms_norm_eps, "llama.vocab_size": vocab}
    return tensors, meta


def _rope_freqs(c) -> np.ndarray | None:
    """Llama 3's per-frequency scaling factors, or None for other rope types."""
    scaling = getattr(c, "rope_scaling", None) or getattr(c, "rope_parameters", None) or {}
    if scaling.get("rope_type") != "llama3":
        return None
    head_dim = c.hidden_size // c.num_attention_heads
    base = scaling.get("rope_theta", getattr(c, "rope_theta", 10000.0))
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    factors = []
    for freq in 1.0 / base ** (np.arange(0, head_dim, 2) / head_dim):
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            factors.append(1.0)
        elif wavelen > old / low:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, np.float32)
