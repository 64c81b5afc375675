"""Quantizing while loading keeps peak memory near the quantized model, never the float32 one (measured)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

CHILD = r"""
import json, sys
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
from tensora.models import load
from tensora.quant import memory_report
base = hwm()
model = load(sys.argv[1], quantize="q4_0")
print(json.dumps({"peak": hwm() - base, "held": memory_report(model).held_bytes}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc")
def test_quantize_on_load_peak_memory(tmp_path):
    from safetensors.numpy import save_file

    hidden, ffn, layers, vocab = 512, 1408, 8, 8000
    config = {"model_type": "llama", "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": ffn,
              "num_hidden_layers": layers, "num_attention_heads": 8, "num_key_value_heads": 8,
              "max_position_embeddings": 512}
    (tmp_path / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
              "lm_head.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
                   p + "mlp.gate_proj.weight": (ffn, hidden), p + "mlp.up_proj.weight": (ffn, hidden),
                   p + "mlp.down_proj.weight": (hidden, ffn)}
        shapes |= {p + f"self_attn.{n}_proj.weight": (hidden, hidden) for n in "qkvo"}
    tensors = {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    fp32 = sum(t.nbytes for t in tensors.values())  # 134 MB
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["held"] < fp32 / 6
    # the quantized model, one float32 source tensor (16 MB) and the quantizer's temporaries
    assert r["peak"] < 0.45 * fp32, (r, fp32)
