"""float32 <-> bfloat16 conversion: tensora's kernels against ml_dtypes and PyTorch.

Times, for 1e3..1e7 elements: ml_dtypes ``astype`` (the reference body); the
``tensora.kernels.cast`` entry point as dispatched ("entry": native or reference by
size) and forced native ("entry native"), both allocating their output; the raw
``tensora._C`` call into a preallocated buffer on one thread and on automatic
threads; and ``torch.Tensor.to`` when torch is importable.
Reports the best of several repeats in microseconds and the ratio
``ml_dtypes time / tensora time`` (> 1: tensora is faster).

    .venv/bin/python benchmarks/cast.py [--quick]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import ml_dtypes
import numpy as np

from tensora.backend import native
from tensora.kernels import cast

try:
    import torch
except ImportError:  # optional reference
    torch = None


def best_us(fn: Callable[[], object], budget_s: float) -> float:
    """Best per-call time in microseconds over 5 repeats of ~budget_s/5 each."""
    fn()  # warm up: page in the output, load code
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    loops = max(1, int(budget_s / 5 / once))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - t0) / loops)
    return best * 1e6


def cases(lib, n: int, direction: str) -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal(n, dtype=np.float32)
    bf16 = f32.astype(ml_dtypes.bfloat16)
    if direction == "f32->bf16":
        kernel, x, raw_out = cast.float32_to_bfloat16, f32, np.empty(n, np.uint16)
        raw = lib.float32_to_bfloat16 if lib else None
        ref = lambda: f32.astype(ml_dtypes.bfloat16)  # noqa: E731
        tx, tdtype = (torch.from_numpy(f32), torch.bfloat16) if torch else (None, None)
        raw_in = f32
    else:
        kernel, x, raw_out = cast.bfloat16_to_float32, bf16, np.empty(n, np.float32)
        raw = lib.bfloat16_to_float32 if lib else None
        ref = lambda: bf16.astype(np.float32)  # noqa: E731
        tx = torch.from_numpy(bf16.view(np.uint16)).view(torch.bfloat16) if torch else None
        tdtype = torch.float32 if torch else None
        raw_in = bf16.view(np.uint16)
    out: dict[str, Callable[[], object]] = {"ml_dtypes": ref, "entry": lambda: kernel(x)}
    if lib:
        out["entry native"] = lambda: kernel.run_native(x)
        out["_C 1 thr"] = lambda: raw(raw_in, raw_out, threads=1)
        out["_C auto"] = lambda: raw(raw_in, raw_out)
    if torch:
        out["torch"] = lambda: tx.to(tdtype)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing budget")
    args = parser.parse_args()
    budget = 0.1 if args.quick else 0.5

    lib = native.load()
    print(f"native: {native.status()[1]}")
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, numpy {np.__version__}, "
          f"ml_dtypes {ml_dtypes.__version__}, torch {torch.__version__ if torch else '-'}")
    if torch:
        print(f"torch threads: {torch.get_num_threads()}")
    sizes = [10**k for k in range(3, 8)]
    for direction in ("f32->bf16", "bf16->f32"):
        names = list(cases(lib, 8, direction))
        print(f"\n{direction}: best time per call in us; x = ml_dtypes time / this time")
        print(f"{'n':>10} " + " ".join(f"{name:>18}" for name in names))
        for n in sizes:
            times = {name: best_us(fn, budget) for name, fn in cases(lib, n, direction).items()}
            ref = times["ml_dtypes"]
            cells = [f"{t:10.1f} ({ref / t:4.1f}x)" for t in times.values()]
            print(f"{n:>10} " + " ".join(f"{c:>18}" for c in cells))


if __name__ == "__main__":
    main()
