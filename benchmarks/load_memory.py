"""Peak memory of `tensora.models.load(..., quantize=FMT)` against the float32 model's size.

Writes a Llama-architecture Hugging Face directory with random float32 weights (default
~860 MB: hidden 1024, 12 layers, FFN 2816, vocab 32000), then loads it in a fresh
process per format and reports the process's peak resident set (VmHWM, which counts
touched pages of memory-mapped files too) above its level right after `import tensora`,
next to the float32 bytes of the checkpoint and the quantized model's bytes.

    PYTHONPATH=. .venv/bin/python benchmarks/load_memory.py [--formats q4_0,nf4,q8_0] [--layers 12]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
import tensora
from tensora.models import load
from tensora.quant import memory_report
base = hwm()
model = load(sys.argv[1], quantize=None if sys.argv[2] == "none" else sys.argv[2])
report = memory_report(model)
print(json.dumps({"peak": hwm() - base, "model_bytes": report.held_bytes}))
"""


def write_model(path: Path, hidden: int, layers: int, ffn: int, vocab: int) -> int:
    """A random Llama checkpoint; returns its float32 bytes."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    config = {"model_type": "llama", "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": ffn,
              "num_hidden_layers": layers, "num_attention_heads": hidden // 64, "num_key_value_heads": hidden // 64,
              "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
              "lm_head.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,)}
        shapes |= {p + f"self_attn.{n}_proj.weight": (hidden, hidden) for n in "qkvo"}
        shapes |= {p + "mlp.gate_proj.weight": (ffn, hidden), p + "mlp.up_proj.weight": (ffn, hidden),
                   p + "mlp.down_proj.weight": (hidden, ffn)}
    tensors = {k: (rng.standard_normal(s, dtype=np.float32) * 0.02) for k, s in shapes.items()}
    save_file(tensors, str(path / "model.safetensors"))
    return sum(t.nbytes for t in tensors.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--formats", default="none,q8_0,q4_0,nf4")
    ap.add_argument("--layers", type=int, default=12)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = write_model(Path(tmp) / "m", 1024, args.layers, 2816, 32000)
        print(f"checkpoint: {fp32 / 2**20:.0f} MiB float32")
        print("| quantize | model MiB | peak RSS over import, MiB | peak / float32 | peak / model |")
        print("|----------|-----------|---------------------------|----------------|--------------|")
        for fmt in args.formats.split(","):
            out = subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / "m"), fmt], capture_output=True,
                                 text=True, env=os.environ, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {fmt} | {r['model_bytes'] / 2**20:.0f} | {r['peak'] / 2**20:.0f} | {r['peak'] / fp32:.2f} | "
                  f"{r['peak'] / r['model_bytes']:.2f} |")


if __name__ == "__main__":
    main()
