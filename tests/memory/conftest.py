"""Tiny Llama-style checkpoints with random float32 weights, written as Hugging Face directories."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def write_llama(root: Path, *, hidden: int = 256, ffn: int = 704, layers: int = 40, vocab: int = 1024,
                heads: int = 4, kv_heads: int = 2, seed: int = 0) -> int:
    """Write config.json + model.safetensors under `root`; returns the float32 bytes of the weights."""
    from safetensors.numpy import save_file

    root.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "llama", "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": ffn,
              "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
              "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2}
    (root / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(seed)
    kv = kv_heads * (hidden // heads)
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
              "lm_head.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
                   p + "mlp.gate_proj.weight": (ffn, hidden), p + "mlp.up_proj.weight": (ffn, hidden),
                   p + "mlp.down_proj.weight": (hidden, ffn), p + "self_attn.q_proj.weight": (hidden, hidden),
                   p + "self_attn.k_proj.weight": (kv, hidden), p + "self_attn.v_proj.weight": (kv, hidden),
                   p + "self_attn.o_proj.weight": (hidden, hidden)}
    tensors = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            tensors[name] = 1 + np.float32(0.1) * rng.standard_normal(shape, dtype=np.float32)
        else:  # scaled so activations stay O(1) through 40 layers and greedy picks are not ties
            tensors[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(shape[-1] ** -0.5)
    save_file(tensors, str(root / "model.safetensors"))
    # Flushed, as a downloaded checkpoint is: the loader hands back each consumed tensor's mapped
    # pages (MADV_PAGEOUT), which the kernel cannot do for dirty pages not yet written back.
    fd = os.open(root / "model.safetensors", os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    return sum(t.nbytes for t in tensors.values())
