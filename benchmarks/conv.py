"""Convolution, pooling and resizing: tensora against PyTorch on the CPU, forward and forward+backward.

The headline case is conv2d on a batch of 32 RGB 32x32 images to 64 channels, kernel 3,
padding 1 (a CIFAR stem), float32. "fwd+bwd" computes the weight and bias gradients (the
input of a first layer needs none); "fwd+bwd+dx" adds the input gradient. Each case runs
tensora and torch in alternating blocks and reports the best of the repeats in
milliseconds (the median too, which shows how noisy the machine was) and the ratio tensora / torch
(< 2 is the target; < 1: tensora is faster). torch runs with its default thread count,
printed in the header, next to NumPy's BLAS.

    .venv/bin/python benchmarks/conv.py [--quick] [--repeats N] [--torch-threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import table  # noqa: E402

import tensora  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # optional reference
    torch = None


def _pair(shape_x: tuple, shape_w: tuple | None, grad_x: bool, seed: int = 0) -> tuple[list, list, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape_x, dtype=np.float32)]
    if shape_w is not None:
        arrays.append(rng.standard_normal(shape_w, dtype=np.float32) * 0.1)
        arrays.append(np.zeros(shape_w[0], np.float32))
    grads = [grad_x] + [True] * (len(arrays) - 1)
    ta = [tensora.tensor(a, requires_grad=r) for a, r in zip(arrays, grads)]
    pt = [torch.tensor(a, requires_grad=r) for a, r in zip(arrays, grads)] if torch else []
    return ta, pt, rng


def _case(name: str, shape_x: tuple, shape_w: tuple | None, ta_fn: Callable, pt_fn: Callable,
          backward: bool, grad_x: bool = False) -> tuple[str, Callable, Callable | None]:
    """(label, tensora thunk, torch thunk) for one configuration."""
    ta_in, pt_in, rng = _pair(shape_x, shape_w, grad_x)
    with tensora.no_grad():
        out_shape = tuple(ta_fn(*ta_in).shape)
    g = rng.standard_normal(out_shape, dtype=np.float32)
    ta_g = tensora.tensor(g)
    pt_g = torch.tensor(g) if torch else None

    def run_ta() -> None:
        for t in ta_in:
            t.grad = None
        if backward:
            ta_fn(*ta_in).backward(ta_g)
        else:
            with tensora.no_grad():
                ta_fn(*ta_in)

    def run_pt() -> None:
        for t in pt_in:
            t.grad = None
        if backward:
            pt_fn(*pt_in).backward(pt_g)
        else:
            with torch.no_grad():
                pt_fn(*pt_in)

    return name, run_ta, (run_pt if torch else None)


def cases() -> list[tuple[str, Callable, Callable | None]]:
    f = F if torch else None
    conv = (lambda x, w, b: tensora.conv2d(x, w, b, padding=1),
            lambda x, w, b: f.conv2d(x, w, b, padding=1))
    stem = ((32, 3, 32, 32), (64, 3, 3, 3))
    inner = ((32, 64, 16, 16), (64, 64, 3, 3))
    strided = (lambda x, w, b: tensora.conv2d(x, w, b, stride=2, padding=1),
               lambda x, w, b: f.conv2d(x, w, b, stride=2, padding=1))
    dw = (lambda x, w, b: tensora.conv2d(x, w, b, padding=1, groups=64),
          lambda x, w, b: f.conv2d(x, w, b, padding=1, groups=64))
    act = (32, 64, 32, 32)
    return [
        _case("conv2d 32x3x32x32 -> 64, k3 p1: fwd", *stem, *conv, backward=False),
        _case("conv2d 32x3x32x32 -> 64, k3 p1: fwd+bwd", *stem, *conv, backward=True),
        _case("conv2d 32x3x32x32 -> 64, k3 p1: fwd+bwd+dx", *stem, *conv, backward=True, grad_x=True),
        _case("conv2d 32x64x16x16 -> 64, k3 p1: fwd+bwd+dx", *inner, *conv, backward=True, grad_x=True),
        _case("conv2d 32x64x16x16 -> 64, k3 s2 p1: fwd+bwd+dx", *inner, *strided, backward=True, grad_x=True),
        _case("depthwise 32x64x16x16, k3 p1: fwd+bwd+dx", inner[0], (64, 1, 3, 3), *dw, backward=True,
              grad_x=True),
        _case("max_pool2d 32x64x32x32, k2: fwd+bwd", act, None, lambda x: tensora.max_pool2d(x, 2),
              lambda x: f.max_pool2d(x, 2), backward=True, grad_x=True),
        _case("max_pool2d 32x64x32x32, k3 s2 p1: fwd+bwd", act, None,
              lambda x: tensora.max_pool2d(x, 3, 2, 1), lambda x: f.max_pool2d(x, 3, 2, 1),
              backward=True, grad_x=True),
        _case("avg_pool2d 32x64x32x32, k2: fwd+bwd", act, None, lambda x: tensora.avg_pool2d(x, 2),
              lambda x: f.avg_pool2d(x, 2), backward=True, grad_x=True),
        _case("adaptive_avg_pool2d 32x64x32x32 -> 7x7: fwd+bwd", act, None,
              lambda x: tensora.adaptive_avg_pool2d(x, 7), lambda x: f.adaptive_avg_pool2d(x, 7),
              backward=True, grad_x=True),
        _case("interpolate bilinear x2 32x64x16x16: fwd+bwd", inner[0], None,
              lambda x: tensora.interpolate(x, scale_factor=2, mode="bilinear"),
              lambda x: f.interpolate(x, scale_factor=2, mode="bilinear"), backward=True, grad_x=True),
        _case("interpolate nearest x2 32x64x16x16: fwd+bwd", inner[0], None,
              lambda x: tensora.interpolate(x, scale_factor=2), lambda x: f.interpolate(x, scale_factor=2),
              backward=True, grad_x=True),
    ]


def measure(run_ta: Callable, run_pt: Callable | None, repeats: int, rounds: int = 4) -> tuple[list, list]:
    """Milliseconds per call, in alternating blocks of calls to one library.

    Blocks rather than strict alternation: torch's OpenMP workers and OpenBLAS's threads spin for
    a while after each call, and would steal the cores from whichever library runs next.
    """
    ta_ms: list[float] = []
    pt_ms: list[float] = []
    per_block = max(1, repeats // rounds)
    for _ in range(rounds):
        for run, out in ((run_ta, ta_ms), (run_pt, pt_ms)):
            if run is None:
                continue
            run()  # warm up after the switch
            for _ in range(per_block):
                t0 = time.perf_counter()
                run()
                out.append((time.perf_counter() - t0) * 1e3)
    return ta_ms, pt_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if torch and args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    repeats = args.repeats or (8 if args.quick else 40)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"numpy {np.__version__}, torch {torch.__version__ if torch else '-'}")
    if torch:
        print(f"torch threads: {torch.get_num_threads()}")
    print(f"tensora native extension: {tensora.native_available()[1]}")
    print(f"best (and median) of {repeats} repeats, ms")
    rows = []
    for name, run_ta, run_pt in cases():
        ta_ms, pt_ms = measure(run_ta, run_pt, repeats)
        best_ta = min(ta_ms)
        best_pt = min(pt_ms) if pt_ms else None
        rows.append((name, best_ta, statistics.median(ta_ms), best_pt,
                     statistics.median(pt_ms) if pt_ms else None,
                     best_ta / best_pt if best_pt else None))
    print(table(rows, ("case", "tensora", "(median)", "torch", "(median)", "ratio")))


if __name__ == "__main__":
    main()
