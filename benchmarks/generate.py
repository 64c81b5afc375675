"""Generation speed: time to first token and decode tokens/s against transformers and llama.cpp.

Models: SmolLM2-135M-Instruct in its stored GGUF formats (Q4_1 + Q8_0; transformers
loads the same file dequantized to float32), and a ~110M-parameter Llama with random
weights (hidden 768, 12 layers, FFN 2048, SmolLM2's 49152-token vocabulary, so that
llama.cpp can take SmolLM2's tokenizer) in float32, q8_0 and q4_0. Each engine gets the
same 32-token prompt; TTFT is the time of a 1-token generation, decode tok/s comes from
the difference between a 1- and a (1 + N)-token generation (greedy, end-of-sequence
ignored). Batch 8 runs 8 prompts together (tensora, transformers, and llama.cpp through its
batch API: 8 sequences of one context, one llama_decode per step for all of them, greedy);
its tok/s counts the tokens of all 8 sequences. llama.cpp runs when llama-cpp-python is
installed, with as many threads as tensora uses.

A shared machine's load changes from second to second, so one measurement per engine
lets one noisy moment decide a ratio. Each model is therefore timed in `--rounds`
rounds (default 5) that alternate the engines (tensora, llama.cpp, transformers, then
the reverse order); the table gives each engine's median decode tok/s and each ratio as
the median of the per-round ratios with their min-max, every ratio taken between runs
of the same round.

tensora runs its inference fast path (tensora/models/llama_decode.py); with --module-path
it also runs the module path in the same run (a no-op forward hook on each decoder layer
makes generation take it), so the two compare under the same machine load. The last
columns are each row's decode speed over llama.cpp's on the same model and weights, and
over transformers' float32.

    PYTHONPATH=. .venv/bin/python benchmarks/generate.py [--new 64] [--rounds 5] [--quick] [--only q4_0,f32] [--module-path]
    PYTHONPATH=. taskset -c 0 .venv/bin/python benchmarks/generate.py --cpu-time --no-batch   # shared machine
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import table  # noqa: E402

import tensora  # noqa: E402
from tensora.io import load_gguf, save_gguf  # noqa: E402
from tensora.models import default_model_path, load  # noqa: E402
from tensora.quant import quantize_tensor  # noqa: E402

THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # honours taskset


CLOCK = time.perf_counter  # --cpu-time: time.process_time


def timed(fn, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = CLOCK()
        fn()
        best = min(best, CLOCK() - t)
    return best


def speeds(run, new: int, batch: int = 1) -> tuple[float, float]:
    """(TTFT seconds, decode tokens/s summed over the batch) of run(n) generating n tokens per prompt."""
    first = timed(lambda: run(1))
    total = timed(lambda: run(1 + new), repeat=1)
    return first, batch * new / max(total - first, 1e-9)


def tensora_runner(model, prompts):
    def run(n):
        model.generate(prompts if len(prompts) > 1 else prompts[0], max_new_tokens=n, temperature=0,
                       stop_token_ids=[])
    return run


def module_path_runner(model, prompts):
    """tensora_runner with the module path forced: forward hooks make generation skip the fast path."""
    def run(n):
        handles = [layer.register_forward_pre_hook(lambda m, args: None) for layer in model.model.layers]
        try:
            tensora_runner(model, prompts)(n)
        finally:
            for h in handles:
                h.remove()
    return run


def transformers_runner(model, prompts):
    import torch

    ids = torch.tensor(prompts)

    def run(n):
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)
    return run


def llamacpp_runner(path: Path, prompt: list[int]):
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=512, n_threads=THREADS, n_batch=512, verbose=False)
    eos = llm.token_eos()

    def no_eos(_, logits):
        logits[eos] = -np.inf
        return logits

    def run(n):
        llm.reset()
        llm.create_completion(prompt, max_tokens=n, temperature=0.0, logits_processor=[no_eos])
    return run


def llamacpp_batch_runner(path: Path, prompts: list[list[int]], new: int):
    """llama.cpp decoding all `prompts` together: each a sequence of one context (its own KV
    cells), prefilled in one llama_decode, then one llama_decode per step carrying every
    sequence's next token (greedy, end-of-sequence ignored), as llama.cpp's batched examples
    and its server's continuous batching do."""
    import llama_cpp as cpp

    n = len(prompts)
    cpp.llama_backend_init()
    model = cpp.llama_model_load_from_file(str(path).encode(), cpp.llama_model_default_params())
    params = cpp.llama_context_default_params()
    params.n_ctx = n * (max(map(len, prompts)) + new + 16)
    params.n_batch = params.n_ubatch = max(512, sum(map(len, prompts)))
    params.n_seq_max, params.n_threads, params.n_threads_batch = n, THREADS, THREADS
    ctx = cpp.llama_init_from_model(model, params)
    memory, vocab = cpp.llama_get_memory(ctx), cpp.llama_vocab_n_tokens(cpp.llama_model_get_vocab(model))
    batch = cpp.llama_batch_init(params.n_batch, 0, 1)

    def decode(tokens: list[tuple[int, int, int, bool]]) -> None:  # (token, position, sequence, logits?)
        batch.n_tokens = len(tokens)
        for i, (tok, pos, seq, want) in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = tok, pos, 1, want
            batch.seq_id[i][0] = seq
        if cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def greedy(batch_rows) -> list[int]:  # each sequence's next token from the logits of its batch row
        return [int(np.ctypeslib.as_array(cpp.llama_get_logits_ith(ctx, i), shape=(vocab,)).argmax())
                for i in batch_rows]

    def run(steps):
        cpp.llama_memory_clear(memory, True)
        decode([(tok, pos, s, pos == len(p) - 1) for s, p in enumerate(prompts) for pos, tok in enumerate(p)])
        nxt = greedy(np.cumsum([len(p) for p in prompts]) - 1)
        for step in range(steps - 1):
            decode([(nxt[s], len(prompts[s]) + step, s, True) for s in range(n)])
            nxt = greedy(range(n))
    return run


def random_llama(root: Path, smollm_meta: dict) -> tuple[Path, dict]:
    """A random-weight Llama as an HF directory and as GGUF files (f32, q8_0, q4_0) with SmolLM2's vocabulary."""
    from safetensors.numpy import save_file

    hidden, layers, ffn, vocab, heads = 768, 12, 2048, 49152, 12
    config = {"model_type": "llama", "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": ffn,
              "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": heads,
              "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
              "bos_token_id": 1, "eos_token_id": 2}
    hf = root / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    w = {"model.embed_tokens.weight": rng.standard_normal((vocab, hidden), np.float32) * 0.02,
         "model.norm.weight": np.ones(hidden, np.float32)}
    for i in range(layers):
        p = f"model.layers.{i}."
        w |= {p + "input_layernorm.weight": np.ones(hidden, np.float32),
              p + "post_attention_layernorm.weight": np.ones(hidden, np.float32)}
        w |= {p + f"self_attn.{n}_proj.weight": rng.standard_normal((hidden, hidden), np.float32) * 0.02
              for n in "qkvo"}
        w |= {p + "mlp.gate_proj.weight": rng.standard_normal((ffn, hidden), np.float32) * 0.02,
              p + "mlp.up_proj.weight": rng.standard_normal((ffn, hidden), np.float32) * 0.02,
              p + "mlp.down_proj.weight": rng.standard_normal((hidden, ffn), np.float32) * 0.02}
    save_file(w, str(hf / "model.safetensors"))
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    meta = {k: v for k, v in smollm_meta.items() if k.startswith("tokenizer.")}
    meta |= {"llama.block_count": layers, "llama.context_length": 2048, "llama.embedding_length": hidden,
             "llama.feed_forward_length": ffn, "llama.attention.head_count": heads,
             "llama.attention.head_count_kv": heads, "llama.rope.freq_base": 10000.0,
             "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.vocab_size": vocab}
    files = {}
    for fmt in ("f32", "q8_0", "q4_0"):
        tensors = {}
        for name, a in w.items():
            if name in names:
                gname = names[name]
            else:
                parts = name.split(".")
                gname = f"blk.{parts[2]}.{layer['.'.join(parts[3:-1])]}.{parts[-1]}"
            if "q_proj" in name or "k_proj" in name:  # llama.cpp's interleaved rotary rows
                a = a.reshape(heads, 2, hidden // heads // 2, hidden).swapaxes(1, 2).reshape(hidden, hidden)
            quantized = fmt != "f32" and a.ndim == 2
            tensors[gname] = quantize_tensor(a, fmt) if quantized else tensora.tensor(np.ascontiguousarray(a))
        files[fmt] = save_gguf(root / f"llama-{fmt}.gguf", tensors, meta, arch="llama")
    return hf, files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of alternating engines per model")
    ap.add_argument("--quick", action="store_true", help="skip batch 8 and the random 110M model")
    ap.add_argument("--only", default="", help="comma-separated weight formats to run (Q4_1, f32, q8_0, q4_0)")
    ap.add_argument("--module-path", action="store_true", help="also time tensora's module path (no fast path)")
    ap.add_argument("--no-batch", action="store_true", help="skip batch 8")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with the process's CPU time instead of the wall clock: robust on a shared machine, "
                         "comparable across engines only at one thread (taskset -c N; spinning threads count)")
    args = ap.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    only = {f.strip().lower() for f in args.only.split(",") if f.strip()}
    have_llamacpp = importlib.util.find_spec("llama_cpp") is not None
    have_hf = importlib.util.find_spec("transformers") is not None
    smol = default_model_path()
    print(f"{THREADS} threads; native: {tensora.native_available()[0]}; llama.cpp: {have_llamacpp}; "
          f"transformers: {have_hf}")
    rng = np.random.default_rng(0)
    prompt = rng.integers(100, 40000, size=32).tolist()
    batch = [rng.integers(100, 40000, size=32).tolist() for _ in range(8)]
    rows = []

    with tempfile.TemporaryDirectory() as tmp:
        cases = [("SmolLM2-135M", smol, "Q4_1", smol)]
        if not args.quick:
            hf, files = random_llama(Path(tmp), load_gguf(smol).metadata)
            cases += [("Llama-110M", hf, "f32", files["f32"]), ("Llama-110M", files["q8_0"], "q8_0", files["q8_0"]),
                      ("Llama-110M", files["q4_0"], "q4_0", files["q4_0"])]
        batched = not (args.quick or args.no_batch)
        for name, path, fmt, gguf_path in cases:
            if only and fmt.lower() not in only:
                continue
            engines = []  # (engine, weights, runner, batch)
            model = load(path)
            engines.append(("tensora", fmt, tensora_runner(model, [prompt]), 1))
            if args.module_path:
                engines.append(("tensora module path", fmt, module_path_runner(model, [prompt]), 1))
            if batched:
                engines.append(("tensora batch 8", fmt, tensora_runner(model, batch), 8))
                if args.module_path:
                    engines.append(("tensora module path batch 8", fmt, module_path_runner(model, batch), 8))
            if have_llamacpp:
                engines.append(("llama.cpp", fmt, llamacpp_runner(gguf_path, prompt), 1))
                if batched:
                    engines.append(("llama.cpp batch 8", fmt, llamacpp_batch_runner(gguf_path, batch, args.new), 8))
            if have_hf and fmt in ("Q4_1", "f32"):
                import torch
                import transformers

                torch.set_num_threads(THREADS)
                if Path(path).is_dir():
                    ref = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
                else:
                    ref = transformers.AutoModelForCausalLM.from_pretrained(
                        Path(path).parent, gguf_file=Path(path).name).eval()
                label = fmt + (" (dequantized)" if fmt != "f32" else "")
                engines.append(("transformers f32", label, transformers_runner(ref, [prompt]), 1))
                if batched:
                    engines.append(("transformers f32 batch 8", fmt, transformers_runner(ref, batch), 8))
            rows += rounds(name, engines, args.new, args.rounds)
    print(f"{args.rounds} rounds; ratios: median of the per-round ratios (min-max)")
    print(table(with_ratios(rows), ("model", "engine", "weights", "TTFT ms (32-token prompt, median)",
                                    f"decode tok/s ({args.new} new, median)", "x llama.cpp", "x transformers f32")))


def rounds(model_name: str, engines: list[tuple], new: int, count: int) -> list[list]:
    """Rows [model, engine, weights, TTFT seconds per round, tok/s per round] of `count` rounds;
    odd rounds run the engines in reverse order, so no engine always follows the same one."""
    for _, _, run, _ in engines:
        run(2)  # warm up
    times: list[list[tuple[float, float]]] = [[] for _ in engines]
    for r in range(count):
        order = list(enumerate(engines))
        for i, (engine, weights, run, batch) in order if r % 2 == 0 else order[::-1]:
            times[i].append(speeds(run, new, batch))
            ttft, tps = times[i][-1]
            print(f"round {r + 1}: {model_name} {engine} {weights}: TTFT {ttft * 1e3:.0f} ms, {tps:.1f} tok/s",
                  flush=True)
    return [[model_name, engine, weights, [t for t, _ in ts], [s for _, s in ts]]
            for (engine, weights, _, _), ts in zip(engines, times)]


def with_ratios(rows: list[list]) -> list[tuple]:
    """Rows with median TTFT and tok/s, plus decode tok/s over llama.cpp's (same model, weights and
    batch) and over transformers' (same batch), each ratio per round: median (min-max)."""
    def speed(model, engine, fmt=None):
        return next((r[4] for r in rows if r[0] == model and r[1] == engine and (fmt is None or r[2] == fmt)), None)

    def ratio(tps, ref):
        if ref is None:
            return None
        per_round = [a / b for a, b in zip(tps, ref)]
        return f"{statistics.median(per_round):.2f} ({min(per_round):.2f}-{max(per_round):.2f})"

    out = []
    for model, engine, fmt, ttft, tps in rows:
        cpp = speed(model, "llama.cpp batch 8" if engine.endswith("batch 8") else "llama.cpp", fmt)
        hf = speed(model, "transformers f32 batch 8" if engine.endswith("batch 8") else "transformers f32")
        out.append((model, engine, fmt, f"{statistics.median(ttft) * 1e3:.0f}", f"{statistics.median(tps):.1f}",
                    ratio(tps, cpp), ratio(tps, hf)))
    return out


if __name__ == "__main__":
    main()
