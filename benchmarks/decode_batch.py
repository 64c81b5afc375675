"""Batched decoding without HTTP: tensora's continuous-batching engine against llama.cpp's.

What the serving target ([H]: 8 clients >= 4x the tokens/s of 1) rests on is how much a
decode step over 8 sequences costs against a step over 1. This times that alone, for
tensora's BatchDecoder (what `tensora serve` steps) and, in the same run, llama.cpp's
llama_decode on the same GGUF file with a batch holding one token of each sequence (what
llama-server does for its parallel slots), both on the same number of threads.

Each engine prefills `n` prompts of --prompt random token ids (the same ids for both),
then decodes --steps tokens for every sequence, greedily; tokens/s = n * steps / wall time
of the decode steps, the median of --repeat interleaved runs. "vs 1" divides by the
engine's own 1-sequence rate; "x llama.cpp" divides tensora's rate by llama.cpp's.
llama.cpp comes from llama-cpp-python's low-level bindings (built from its sdist; it also
imports diskcache); without them only tensora's rows are printed.

    PYTHONPATH=. .venv/bin/python benchmarks/decode_batch.py [--model PATH] [--seqs 1,8,32]
        [--prompt 46] [--steps 64] [--repeat 3] [--activation-bits 8]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import table  # noqa: E402

import tensora  # noqa: E402
from tensora.models import default_model_path, load  # noqa: E402
from tensora.models.batching import BatchDecoder  # noqa: E402
from tensora.models.generation import SamplingOptions  # noqa: E402
from tensora.quant import set_activation_bits  # noqa: E402


def tensora_rate(model, prompts: list[list[int]], steps: int) -> float:
    """Aggregate decode tokens/s of BatchDecoder over len(prompts) sequences."""
    dec = BatchDecoder(model)
    opts = SamplingOptions(temperature=0, max_new_tokens=steps + 1, stop_token_ids=())  # no early stop
    dec.join_many([(p, opts) for p in prompts])
    start = time.perf_counter()
    for _ in range(steps):
        dec.step()
    return len(prompts) * steps / (time.perf_counter() - start)


class LlamaCpp:
    """llama.cpp's model and contexts through llama-cpp-python's C bindings (logging off)."""

    def __init__(self, path: str, threads: int) -> None:
        import llama_cpp as lc

        self.lc, self.threads = lc, threads
        self._quiet = lc.llama_log_callback(lambda level, text, data: None)  # kept alive with self
        lc.llama_log_set(self._quiet, ctypes.c_void_p(0))
        lc.llama_backend_init()
        self.model = lc.llama_model_load_from_file(path.encode(), lc.llama_model_default_params())
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model))

    def rate(self, prompts: list[list[int]], steps: int) -> float:
        """Aggregate decode tokens/s over len(prompts) sequences, one llama_decode per step."""
        lc, n = self.lc, len(prompts)
        params = lc.llama_context_default_params()
        params.n_ctx = sum(len(p) + steps + 1 for p in prompts) + 256
        params.n_batch = params.n_ubatch = max(512, max(len(p) for p in prompts))
        params.n_seq_max = n
        params.n_threads = params.n_threads_batch = self.threads
        ctx = lc.llama_init_from_model(self.model, params)
        batch = lc.llama_batch_init(params.n_batch, 0, n)
        try:
            for s, prompt in enumerate(prompts):  # prefill one sequence per call
                self._fill(batch, [(t, i, s, i == len(prompt) - 1) for i, t in enumerate(prompt)])
                self._decode(ctx, batch)
            last = [self._argmax(ctx, -1)] * n  # the last prompt's next token, for every sequence
            start = time.perf_counter()
            for step in range(steps):
                self._fill(batch, [(last[s], len(prompts[s]) + step, s, True) for s in range(n)])
                self._decode(ctx, batch)
                last = [self._argmax(ctx, s) for s in range(n)]
            return n * steps / (time.perf_counter() - start)
        finally:
            lc.llama_batch_free(batch)
            lc.llama_free(ctx)

    @staticmethod
    def _fill(batch, tokens: list[tuple[int, int, int, bool]]) -> None:
        """(token, position, sequence, wants logits) per entry of the batch."""
        batch.n_tokens = len(tokens)
        for i, (token, pos, seq, logits) in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
            batch.seq_id[i][0] = seq

    def _decode(self, ctx, batch) -> None:
        code = self.lc.llama_decode(ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")

    def _argmax(self, ctx, i: int) -> int:
        return int(np.ctypeslib.as_array(self.lc.llama_get_logits_ith(ctx, i), shape=(self.vocab,)).argmax())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="GGUF file (default: the embedded SmolLM2-135M Q4_1)")
    ap.add_argument("--seqs", default="1,8,32", help="sequences decoded together, comma-separated")
    ap.add_argument("--prompt", type=int, default=46, help="prompt tokens per sequence (a chat's, by default)")
    ap.add_argument("--steps", type=int, default=64, help="tokens decoded per sequence")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs per level; the median is reported")
    ap.add_argument("--activation-bits", type=int, choices=(15, 8), default=15)
    args = ap.parse_args()
    path = args.model or str(default_model_path())
    levels = [int(s) for s in args.seqs.split(",")]
    set_activation_bits(args.activation_bits)
    model = load(path)
    threads = tensora.get_num_threads()
    rng = np.random.default_rng(0)
    prompts = rng.integers(100, 20000, (max(levels), args.prompt)).tolist()
    try:
        peer = LlamaCpp(path, threads)
    except ImportError as exc:
        print(f"llama.cpp rows skipped: llama-cpp-python does not import ({exc})")
        peer = None
    engines = {"tensora": lambda p: tensora_rate(model, p, args.steps)}
    if peer is not None:
        engines["llama.cpp"] = lambda p: peer.rate(p, args.steps)
    rates: dict[tuple[str, int], list[float]] = {}
    for name, run in engines.items():
        run(prompts[:1])  # warm up: tensora prepares its fast path, both touch the weights
    for _ in range(args.repeat):
        for n in levels:
            for name, run in engines.items():
                rates.setdefault((name, n), []).append(run(prompts[:n]))
    rows = []
    for name in engines:
        base = float(np.median(rates[(name, levels[0])]))
        for n in levels:
            rate = float(np.median(rates[(name, n)]))
            versus = rate / float(np.median(rates[("llama.cpp", n)])) if peer and name == "tensora" else None
            rows.append((name, n, rate, rate / base, "" if versus is None else f"{versus:.2f}"))
    print(f"model: {os.path.basename(path)}, prompt {args.prompt} tokens, {args.steps} decode steps, "
          f"{threads} threads, {args.activation_bits}-bit activations, median of {args.repeat}")
    print(table(rows, ("engine", "sequences", "tok/s", f"vs {levels[0]}", "x llama.cpp")))


if __name__ == "__main__":
    main()
