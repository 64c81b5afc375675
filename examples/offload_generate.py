"""Generate with a Llama-style model whose float32 weights are 16x its host-RAM budget.

The embedded SmolLM2-135M-Instruct (a GGUF file) is first written out as a plain float32
Hugging Face checkpoint (513 MiB). That checkpoint is loaded back with quantize="q4_0" and
memory_budget = its float32 size / 16 (32 MiB): each weight is quantized as it is read and
handed to tensora's memory manager, and generation runs stage by stage (embedding, each
decoder layer, final norm, lm_head) while a background thread reads the next stages from
disk. The answer streams as it is generated; then the memory report, and (with --check)
the same prompt through the same quantized model without a budget: the tokens must agree.

    python examples/offload_generate.py [--ratio 16] [--quantize q4_0] [--tokens 48] [--check]
    python examples/offload_generate.py --model path/to/llama-hf-dir   # a checkpoint of your own
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from tensora.io import load as load_tensors
from tensora.memory import format_size, report
from tensora.models import default_model_path, load
from tensora.quant import QuantizedTensor

QUESTION = "What is the capital of France? Answer in one sentence."
HF_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
           "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta",
           "tie_word_embeddings", "bos_token_id", "eos_token_id")


def float32_checkpoint(gguf: Path, out: Path) -> Any:
    """Write the GGUF model's weights dequantized to float32 as a Hugging Face Llama directory; its tokenizer."""
    model = load(gguf)
    config = {"model_type": "llama", **{k: getattr(model.config, k) for k in HF_KEYS}}
    tensors = {}
    for name, value in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        array = value.dequantize().numpy() if isinstance(value, QuantizedTensor) else value.numpy()
        tensors[name] = np.ascontiguousarray(array, dtype=np.float32)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config))
    return model.tokenizer


def float32_bytes(path: Path) -> int:
    """Bytes of the checkpoint's weights as float32 (mapped, not read)."""
    return sum(4 * int(np.prod(t.shape)) for t in load_tensors(path).values())


def main(ratio: float = 16, quantize: str = "q4_0", tokens: int = 48, check: bool = False,
         model_dir: str | None = None, verbose: bool = True) -> dict[str, Any]:
    """Run the example; returns the tokens generated (and, with check, the unconstrained ones) and the tracker."""
    say = print if verbose else (lambda *a, **k: None)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = None
        if model_dir is None:
            path = Path(tmp) / "smollm2-f32"
            tokenizer = float32_checkpoint(default_model_path(), path)
        else:
            path = Path(model_dir)
        full = float32_bytes(path)
        host = int(full / ratio)
        t0 = time.perf_counter()
        model = load(path, quantize=quantize, memory_budget=host, disk_dir=tmp)
        model.tokenizer = model.tokenizer or tokenizer
        say(f"{path.name}: {format_size(full)} as float32, loaded as {quantize} in {time.perf_counter() - t0:.1f} s "
            f"under a {format_size(host)} host budget ({ratio:g}x smaller)")
        prompt = model.chat_prompt([{"role": "user", "content": QUESTION}])
        say(f"user: {QUESTION}\nassistant: ", end="", flush=True)
        t0 = time.perf_counter()
        stream = model.stream(prompt, max_new_tokens=tokens, temperature=0)
        for delta in stream:
            say(delta, end="", flush=True)
        seconds = time.perf_counter() - t0
        result = {"tokens": stream.completion.token_ids, "tracker": model.memory.manager.tracker}
        say(f"\n[{len(result['tokens'])} tokens in {seconds:.1f} s]\n")
        say(report(model.memory.manager))
        model.memory.close()
        if check:
            free = load(path, quantize=quantize)
            result["unconstrained"] = free.generate(prompt, max_new_tokens=tokens, temperature=0).token_ids
            same = result["unconstrained"] == result["tokens"]
            say(f"\nwithout a budget, the same quantized model gives {'the same' if same else 'DIFFERENT'} tokens")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=16, help="float32 size of the model / host budget")
    parser.add_argument("--quantize", default="q4_0", help="format the weights are quantized to while loading")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--check", action="store_true", help="compare with the unconstrained quantized model")
    parser.add_argument("--model", default=None, help="a Hugging Face Llama directory instead of the embedded model")
    args = parser.parse_args()
    main(args.ratio, args.quantize, args.tokens, args.check, args.model)
