"""Attention speed and memory, and activation-checkpointing memory: tensora vs PyTorch CPU.

Run: python benchmarks/attention.py [--quick]

1. scaled_dot_product_attention at T=1024 (batch 1, 8 heads, head dim 64, float32),
   forward and forward+backward, tensora's math and efficient paths vs
   torch.nn.functional.scaled_dot_product_attention on the CPU (same thread count).
2. Peak memory (tracemalloc, which sees NumPy's allocations) of forward+backward at
   T=4096: the math path materialises (8, 4096, 4096) scores, the efficient path tiles.
3. A 16-layer MLP on (4096, 1024) float32 activations with and without checkpointing
   each layer: bytes the graph saves for backward, peak memory and time.

--quick shrinks every size by 4 (T=256/1024, MLP (1024, 256)) for a smoke run.
Both libraries use OMP_NUM_THREADS threads (OpenBLAS reads it too; default: all
cores). On a shared machine run with OMP_NUM_THREADS=1: idle-spinning BLAS threads
of a busy machine make multi-threaded timings swing by 10x.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import table  # noqa: E402

import tensora  # noqa: E402
from tensora.ops.attention import sdpa_backend  # noqa: E402
from tensora.utils import checkpoint, saved_bytes  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

MiB = 2 ** 20


def best_ms(fn: Callable[[], object], repeat: int = 5) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def peak_mib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / MiB
    finally:
        tracemalloc.stop()


def attention_speed(T: int) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((1, 8, T, 64)).astype(np.float32) for _ in range(3)]
    g = rng.standard_normal((1, 8, T, 64)).astype(np.float32)
    rows = []
    for causal in (False, True):
        def ours(path: str, backward: bool) -> Callable[[], object]:
            def run() -> None:
                q, k, v = (tensora.tensor(a, requires_grad=backward) for a in arrays)
                with sdpa_backend(path):
                    out = tensora.scaled_dot_product_attention(q, k, v, is_causal=causal)
                if backward:
                    out.backward(tensora.tensor(g))
            return run

        def theirs(backward: bool) -> Callable[[], object]:
            def run() -> None:
                q, k, v = (torch.tensor(a, requires_grad=backward) for a in arrays)
                out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
                if backward:
                    out.backward(torch.tensor(g))
            return run

        for backward in (False, True):
            ref = best_ms(theirs(backward)) if torch else None
            for path in ("math", "efficient"):
                t = best_ms(ours(path, backward))
                rows.append((f"T={T} causal={causal} {'fwd+bwd' if backward else 'fwd'}", path, t, ref,
                             t / ref if ref else None))
    print(table(rows, ("case", "tensora path", "tensora ms", "torch ms", "x torch")))


def attention_memory(T: int) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((1, 8, T, 64)).astype(np.float32) for _ in range(3)]
    scores = 8 * T * T * 4 / MiB
    rows = []
    for path in ("math", "efficient"):
        def run() -> None:
            q, k, v = (tensora.tensor(a, requires_grad=True) for a in arrays)
            with sdpa_backend(path):
                tensora.scaled_dot_product_attention(q, k, v).sum().backward()
        rows.append((path, peak_mib(run)))
    ratio = rows[0][1] / rows[1][1]
    print(table([(p, m, m / scores) for p, m in rows], ("path", "peak MiB", "x one (8, T, T) f32 array")))
    print(f"math / efficient peak: {ratio:.1f}x (T={T}, one (8, {T}, {T}) float32 scores array = {scores:.0f} MiB)")


def mlp_checkpoint(rows_: int, width: int, layers: int = 16) -> None:
    tensora.manual_seed(0)
    weights = [(tensora.randn(width, width) * (1 / width ** 0.5)).requires_grad_(True) for _ in range(layers)]
    x = tensora.randn(rows_, width, requires_grad=True)

    def layer(h: tensora.Tensor, w: tensora.Tensor) -> tensora.Tensor:
        y = h @ w
        return y * (y > 0)

    result = []
    for use in (False, True):
        saved = []

        def run() -> None:
            h = x
            for w in weights:
                h = checkpoint(layer, h, w) if use else layer(h, w)
            loss = h.sum()
            saved.append(saved_bytes(loss))
            loss.backward()

        t = time.perf_counter()
        peak = peak_mib(run)
        elapsed = time.perf_counter() - t
        result.append(("checkpointed" if use else "plain", saved[0] / MiB, peak, elapsed * 1e3))
    act = rows_ * width * 4 / MiB
    print(table(result, ("16-layer MLP", "saved for backward MiB", "peak MiB (tracemalloc)", "fwd+bwd ms")))
    print(f"({rows_}, {width}) float32 activation = {act:.0f} MiB; saved-bytes ratio plain/checkpointed "
          f"{result[0][1] / result[1][1]:.1f}x, peak ratio {result[0][2] / result[1][2]:.1f}x, "
          f"time ratio {result[1][3] / result[0][3]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every size / 4")
    args = parser.parse_args()
    div = 4 if args.quick else 1
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    if torch:
        torch.set_num_threads(threads)
    print(f"CPU threads: {threads}; torch {'not installed' if torch is None else torch.__version__}\n")
    attention_speed(1024 // div)
    print()
    attention_memory(4096 // div)
    print()
    mlp_checkpoint(4096 // div, 1024 // div)


if __name__ == "__main__":
    main()
