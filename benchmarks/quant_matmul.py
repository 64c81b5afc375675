"""Quantized matmul (tensora/kernels/quant_matmul.py) against float32 NumPy and PyTorch.

For a Linear weight W of N x K (default 11008 x 4096, Llama-7B's MLP up-projection)
times each format's batch-1 product (GEMV, ``x @ W.T`` with x 1 x K) and batch-32
product (GEMM), through the kernel entry point as a QuantizedTensor calls it (native
body when the extension is loaded), next to ``x @ W.T`` with the dense float32 W in
NumPy and in torch (when importable) in the same run. Reports milliseconds, the ratio
``NumPy float32 time / this time`` (> 1: faster than dense float32) and the rate at
which the weight bytes are read (GB/s), beside the machine's copy bandwidth (bytes
read + written per second by ``np.copyto`` of 256 MiB) and NumPy's dense GEMV rate.

For the GGUF block formats llama.cpp runs the same weight bytes too (ggml's mul_mat through
the libraries llama-cpp-python ships, when it is installed: see _ggml.py), with as many
threads; the "x llama.cpp" columns are llama.cpp's time over tensora's (> 1: tensora is
faster), each pair timed back to back. llama.cpp rounds the activations to 8 bits per
block (its q8_0 / q8_K), tensora to 15 bits by default (tensora/kernels/quant_matmul.py);
``--act-bits 15,8`` adds a row per format with tensora's opt-in 8-bit activations
(``set_activation_bits(8)``: llama.cpp's rounding, the byte kernel), labelled "x8".

The packed weight is one eighth of the rows quantized and repeated 8 times (quantizing
45M values takes minutes for the K-quants' scale searches; the kernels' speed does not
depend on the values).

On a shared machine the time of one product drifts (a neighbour on the same cores or
memory): each format's ratios divide by a NumPy time taken just before its own, and
``--rounds R`` repeats the whole sweep, reporting each time and ratio as the median
over the rounds with the ratios' min-max beside it.

    .venv/bin/python benchmarks/quant_matmul.py [--quick] [--rounds 3] [--formats q4_0,nf4] [--shape 11008 4096]
        [--act-bits 15,8]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
from gguf import GGMLQuantizationType

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _ggml  # noqa: E402
from _timing import per_call_us, table  # noqa: E402

from tensora.backend import native  # noqa: E402
from tensora.kernels import quant_matmul as qm  # noqa: E402
from tensora.quant.formats import FORMATS, get_format  # noqa: E402

try:
    import torch
except ImportError:  # optional reference
    torch = None

# Options benchmarked per format: the defaults, plus the common variants.
CASES = [
    ("q4_0", {}), ("q4_1", {}), ("q5_0", {}), ("q5_1", {}), ("q8_0", {}),
    ("q2_k", {}), ("q3_k", {}), ("q4_k", {}), ("q5_k", {}), ("q6_k", {}),
    ("iq4_nl", {}), ("mxfp4", {}), ("nvfp4", {}),
    ("int8", {}), ("int4", {}), ("int4", {"group_size": 32, "symmetric": False}),
    ("nf4", {}), ("nf4", {"double_quant": True}), ("fp4", {}),
    ("fp8_e4m3", {}), ("fp8_e5m2", {}),
]
REPEAT = 8


def copy_bandwidth() -> float:
    """GB/s of np.copyto over 256 MiB (read + write bytes)."""
    a = np.ones(1 << 26, np.float32)
    b = np.empty_like(a)
    us = per_call_us(lambda: np.copyto(b, a), min_time=0.3)
    return 2 * a.nbytes / us / 1e3


def tiled_parts(fmt, w_slice: np.ndarray) -> dict[str, np.ndarray]:
    """Parts of ``w_slice`` repeated REPEAT times along the rows (see the module doc)."""
    parts = fmt.quantize(w_slice)
    out = {}
    for key, p in parts.items():
        if key in ("absmax_offset", "global_scale", "outlier_cols") or (key == "scale" and p.shape == (1,)):
            out[key] = p  # per-tensor values are shared by the copies
        else:
            out[key] = np.ascontiguousarray(np.concatenate([p] * REPEAT, axis=0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing budget")
    parser.add_argument("--formats", default="", help="comma-separated format names (default: all)")
    parser.add_argument("--shape", type=int, nargs=2, default=(11008, 4096), metavar=("N", "K"))
    parser.add_argument("--rounds", type=int, default=1, help="repeat the sweep; medians over the rounds")
    parser.add_argument("--act-bits", default="15", help="activation bits to run each format with: 15, 8 or 15,8")
    args = parser.parse_args()
    act_bits = [int(b) for b in args.act_bits.split(",")]
    if not act_bits or any(b not in (8, 15) for b in act_bits):
        parser.error("--act-bits takes 15, 8 or 15,8")
    budget = 0.1 if args.quick else 0.3
    n, k = args.shape
    if n % REPEAT:
        parser.error(f"N must be a multiple of {REPEAT}")
    wanted = set(filter(None, args.formats.split(",")))
    cases = [(f, o) for f, o in CASES if f in FORMATS and (not wanted or f in wanted)]

    lib = native.load()
    print(f"native: {native.status()[1]}; simd: {lib.simd() if lib else '-'}; "
          f"threads: {lib.auto_threads() if lib else '-'}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, "
          f"torch {torch.__version__ if torch else '-'}")
    bandwidth = copy_bandwidth()
    print(f"copy bandwidth: {bandwidth:.1f} GB/s; W {n} x {k}")

    rng = np.random.default_rng(0)
    w = rng.standard_normal((n, k), dtype=np.float32)
    xs = {1: rng.standard_normal((1, k), dtype=np.float32), 32: rng.standard_normal((32, k), dtype=np.float32)}

    def numpy_ms(m: int) -> float:
        return per_call_us(lambda: xs[m] @ w.T, min_time=budget) / 1e3

    w_slice = w[: n // REPEAT]
    runners = []  # (label, MiB, run(x) -> y)
    threads = lib.auto_threads() if lib else os.cpu_count()
    peers = {}  # label -> {m: llama.cpp's run(x) -> y}
    if torch:
        tw, lin = torch.from_numpy(w), torch.nn.functional.linear
        runners.append(("torch float32", w.nbytes, lambda x: lin(torch.from_numpy(x), tw)))
    for name, options in cases:
        fmt = get_format(name, **options)
        t0 = time.perf_counter()
        parts = tiled_parts(fmt, w_slice)
        print(f"  {name}: quantized in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        def decode(a, b, fmt=fmt, parts=parts):
            return fmt.dequantize_rows(parts, (n, k), a, b)

        def run(x, fmt=fmt, parts=parts, opts=fmt.options(), bits=15):
            return qm.quant_linear(x, fmt.name, opts, parts, (n, k), decode, bits)

        label = name + ("" if not options else " " + ",".join(f"{a}={v}" for a, v in options.items()))
        for bits in act_bits:
            runners.append((label + (" x8" if bits == 8 else ""), sum(p.nbytes for p in parts.values()),
                            lambda x, run=run, bits=bits: run(x, bits=bits)))
        # GGUF block formats only: their single "blocks" part is the GGUF tensor's bytes (gguf
        # also knows NVFP4 by name, but tensora keeps its scales apart: no llama.cpp layout)
        if _ggml.available() and set(parts) == {"blocks"} and name.upper() in GGMLQuantizationType.__members__:
            type_id = int(GGMLQuantizationType[name.upper()])
            matmuls = {m: _ggml.GgmlMatmul(type_id, parts["blocks"], n, k, m, threads) for m in xs}
            for bits in act_bits:
                peers[label + (" x8" if bits == 8 else "")] = matmuls
            # Both must compute the same product (llama.cpp rounds activations to 8 bits: ~1%
            # of the output's scale), or the ratios would compare different work.
            for m, peer in matmuls.items():
                ours, theirs = run(xs[m]), peer(xs[m])
                err = float(np.abs(ours - theirs).max() / np.abs(ours).max())
                if not err < 0.05:
                    raise RuntimeError(f"{label}: llama.cpp's product differs from tensora's by {err:.3f} "
                                       f"of its largest value at M={m}")

    # times[label][m]: (this ms, NumPy ms just before) per round
    times: dict[str, dict[int, list[tuple[float, float]]]] = {r[0]: {1: [], 32: []} for r in runners}
    peer_times: dict[str, dict[int, list[tuple[float, float]]]] = {label: {1: [], 32: []} for label in peers}
    for _ in range(args.rounds):
        for label, _, run in runners:
            for m in (1, 32):
                base = numpy_ms(m)
                ours = per_call_us(lambda: run(xs[m]), min_time=budget) / 1e3
                times[label][m].append((ours, base))
                if label in peers:
                    peer = peers[label][m]
                    peer_times[label][m].append((ours, per_call_us(lambda: peer(xs[m]), min_time=budget) / 1e3))

    def med(v: list[float]) -> float:
        return float(np.median(v))

    def ratio(samples: list[tuple[float, float]]) -> str:
        r = [b / t for t, b in samples]
        return f"{med(r):.2f}" if len(r) == 1 else f"{med(r):.2f} ({min(r):.2f}-{max(r):.2f})"

    bases = {m: [b for label in times for _, b in times[label][m]] for m in (1, 32)}
    rows = [("numpy float32", w.nbytes / 2**20, med(bases[1]), "1.00", w.nbytes / med(bases[1]) / 1e6, "",
             med(bases[32]), "1.00", "", "BLAS")]
    for label, nbytes, _ in runners:
        t = times[label]
        t1, t32 = med([a for a, _ in t[1]]), med([a for a, _ in t[32]])
        name = label.split()[0]
        bits = 8 if label.endswith(" x8") else 15
        picked = None if lib is None or name not in FORMATS else qm.native_linear(lib, name, 32, k, bits)
        path = "BLAS" if name not in FORMATS else "-" if lib is None else (
            "tiles+BLAS" if picked is None else picked.__name__)
        vs = {m: ratio(peer_times[label][m]) if label in peers else "" for m in (1, 32)}
        rows.append((label, nbytes / 2**20, t1, ratio(t[1]), nbytes / t1 / 1e6, vs[1], t32, ratio(t[32]), vs[32],
                     path))
    print(f"NumPy float32 ms over the run: M=1 {min(bases[1]):.2f}-{max(bases[1]):.2f}, "
          f"M=32 {min(bases[32]):.2f}-{max(bases[32]):.2f}")
    print()
    print(table(rows, ("weight", "MiB", "M=1 ms", "x fp32", "GB/s", "x llama.cpp", "M=32 ms", "x fp32",
                       "x llama.cpp", "M=32 path")))


if __name__ == "__main__":
    main()
