"""Batch-1 quantized GEMV per weight row, one thread, weight in cache: the A/B for kernel changes.

benchmarks/quant_matmul.py times the full Llama-7B shape on every core; on a shared 2-core
machine its two threads wait on whichever core another process holds, so one run's ratio
moves by 30% and more. This script calls the native kernel (``tensora._C.quant_linear``)
directly on one thread for a W of N x K that fits in cache (default 512 x 4096) and reports
the best CPU time per call over many repeats (``time.thread_time``: time the thread was
descheduled does not count) as nanoseconds per weight row, beside NumPy's float32 GEMV on
the same shape with BLAS capped at one thread. Compare two builds by running it on each,
alternating, a few times; differences under ~3% are noise.

    .venv/bin/python benchmarks/quant_gemv_rows.py [--formats int4,nf4] [--shape 512 4096] [--repeat 15]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tensora.backend import native
from tensora.backend.threads import set_num_threads
from tensora.quant.formats import FORMATS, get_format

# The batch-1 cases of benchmarks/quant_matmul.py that stream 4 or 8 bits per weight.
CASES = [
    ("q4_0", {}), ("q4_1", {}), ("q4_k", {}), ("iq4_nl", {}), ("mxfp4", {}), ("nvfp4", {}),
    ("int4", {}), ("int4", {"group_size": 32, "symmetric": False}),
    ("nf4", {}), ("nf4", {"double_quant": True}), ("fp4", {}), ("q8_0", {}), ("int8", {}),
]


def ns_per_row(fn, rows: int, repeat: int, calls: int = 50) -> float:
    """Best thread CPU time of `calls` calls over `repeat` tries, per call and row."""
    for _ in range(5):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        for _ in range(calls):
            fn()
        best = min(best, time.thread_time() - t0)
    return best / calls / rows * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default="", help="comma-separated format names (default: all)")
    parser.add_argument("--shape", type=int, nargs=2, default=(512, 4096), metavar=("N", "K"))
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    lib = native.load()
    if lib is None:
        raise SystemExit(f"needs the native extension: {native.status()[1]}")
    set_num_threads(1)
    n, k = args.shape
    wanted = set(filter(None, args.formats.split(",")))
    rng = np.random.default_rng(0)
    w = rng.standard_normal((n, k), dtype=np.float32)
    x = rng.standard_normal((1, k), dtype=np.float32)
    out = np.empty((1, n), np.float32)
    base = ns_per_row(lambda: x @ w.T, n, args.repeat)
    print(f"simd: {lib.simd()}; W {n} x {k}; one thread; ns per weight row (x fp32: NumPy's / this)")
    print(f"{'numpy float32':36} {base:7.1f}   1.00")
    for name, options in CASES:
        if name not in FORMATS or (wanted and name not in wanted):
            continue
        fmt = get_format(name, **options)
        parts = dict(fmt.quantize(w))
        opts = fmt.options()
        group = int(opts.get("group_size") or 0) if name == "int4" else \
            int(opts.get("block_size") or 0) if name in ("nf4", "fp4") else 0
        t = ns_per_row(lambda: lib.quant_linear(name, parts, n, k, x, out, group=group, threads=1), n, args.repeat)
        label = name + ("" if not options else " " + ",".join(f"{a}={v}" for a, v in options.items()))
        print(f"{label:36} {t:7.1f} {base / t:6.2f}")


if __name__ == "__main__":
    main()
