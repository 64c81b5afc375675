"""Generation tokens/s of one Llama-style model: all in RAM, under 1/4 and 1/16 of its size with tensora's
tiering, and with Hugging Face accelerate's disk offload (device_map + offload_folder), in one run.

    python benchmarks/offload.py [--layers 32 --hidden 384 --tokens 16]

The model (random float32 weights, a few hundred MB) is written to a temp directory. Every
run is float32 (same weights), greedy, batch 1, after one warm-up token; accelerate offloads
every decoder layer to disk (max_memory keeps only embeddings and head in RAM). "read/token"
is what tensora read from disk (the checkpoint) per generated token. "hidden" is the share
of tensora's transfer time (reads by the prefetch thread and by the compute thread itself)
that did not show up as the compute thread waiting (tensora.memory.Tracker.hidden_fraction):
a read the compute thread does itself counts whole, a prefetch it then waits for counts for
the part it waited.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "memory"))
from conftest import write_llama  # noqa: E402  (the tests' checkpoint writer)

PROMPT = [1, 5, 9, 20, 33, 7, 11, 3]


def tensora_run(path: Path, budget: int | None, tokens: int, spill: Path) -> tuple[float, float | None, float | None]:
    """(tokens/s, MiB read per token, hidden fraction); the last two None without a budget."""
    from tensora.models import load

    model = load(path, memory_budget=budget, disk_dir=spill)
    model.generate(PROMPT, max_new_tokens=1, temperature=0)
    tracker = model.memory.manager.tracker if budget is not None else None
    if tracker is not None:
        tracker.reset_time()
        read_before = tracker.moved["disk->host"]
    t0 = time.perf_counter()
    model.generate(PROMPT, max_new_tokens=tokens, temperature=0)
    rate = tokens / (time.perf_counter() - t0)
    if tracker is None:
        return rate, None, None
    return rate, (tracker.moved["disk->host"] - read_before) / tokens / 2**20, tracker.hidden_fraction


def accelerate_run(path: Path, tokens: int, offload: Path, layer_bytes: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, device_map="auto",
                                                 offload_folder=str(offload),
                                                 max_memory={"cpu": int(layer_bytes * 1.5), "disk": 10**12})
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        model.generate(ids, max_new_tokens=1, do_sample=False)
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--ffn", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--tokens", type=int, default=16)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        size = write_llama(root / "model", hidden=args.hidden, ffn=args.ffn, layers=args.layers, vocab=args.vocab,
                           heads=6, kv_heads=2)
        print(f"model: {args.layers} layers, hidden {args.hidden}, {size / 2**20:.0f} MiB float32; "
              f"{args.tokens} greedy tokens")
        rows = [("tensora, all in RAM", *tensora_run(root / "model", None, args.tokens, root))]
        for frac in (4, 16):
            rows.append((f"tensora, budget 1/{frac}", *tensora_run(root / "model", size // frac, args.tokens, root)))
        acc = accelerate_run(root / "model", args.tokens, root / "offload", size // args.layers)
        rows.append(("accelerate disk offload", acc, None, None))
    print(f"{'run':<26}{'tokens/s':>10}{'vs accelerate':>15}{'read/token':>12}{'hidden':>9}")
    for name, rate, read, hidden in rows:
        r = "-" if read is None else f"{read:.0f} MiB"
        h = "-" if hidden is None else f"{100 * hidden:.0f} %"
        print(f"{name:<26}{rate:>10.2f}{rate / acc:>14.2f}x{r:>12}{h:>9}")


if __name__ == "__main__":
    main()
