"""Op speed: per-op overhead vs torch eager, large ops vs NumPy, matmul vs NumPy/torch.

Run: python benchmarks/ops.py            (add --quick for fewer repeats)
Targets (issue [B]): large elementwise/reductions/matmul >= 0.95x NumPy speed
(ratio tensora_time / numpy_time <= 1.05), per-op overhead <= 1.5x torch eager.
conv2d and attention have their own scripts: benchmarks/conv.py, benchmarks/attention.py.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import per_call_us, table  # noqa: E402

import tensora  # noqa: E402

try:
    import torch
except ImportError:
    torch = None


def overhead_rows(min_time: float) -> list[tuple]:
    """Small (16,) tensors: what one op costs in Python, with and without recording."""
    if torch:
        torch.set_num_threads(1)
    a, b = tensora.randn(16), tensora.randn(16)
    ag = tensora.randn(16, requires_grad=True)
    ta, tb = (torch.randn(16), torch.randn(16)) if torch else (None, None)
    tg = torch.randn(16, requires_grad=True) if torch else None
    cases = [
        ("a + b", lambda: a + b, lambda: ta + tb),
        ("a * 2.0", lambda: a * 2.0, lambda: ta * 2.0),
        ("a.exp()", lambda: a.exp(), lambda: ta.exp()),
        ("a.relu()", lambda: a.relu(), lambda: ta.relu()),
        ("a.sum()", lambda: a.sum(), lambda: ta.sum()),
        ("a.reshape(4, 4)", lambda: a.reshape(4, 4), lambda: ta.reshape(4, 4)),
        ("a[2:10]", lambda: a[2:10], lambda: ta[2:10]),
        ("a.softmax(0)", lambda: a.softmax(0), lambda: ta.softmax(0)),
        ("ag * b (recording)", lambda: ag * b, lambda: tg * tb),
        ("ag.tanh() (recording)", lambda: ag.tanh(), lambda: tg.tanh()),
    ]
    rows = []
    for name, f, g in cases:
        t = per_call_us(f, min_time)
        p = per_call_us(g, min_time) if torch else None
        rows.append((name, t, p, (t / p) if p else None))
    return rows


def large_rows(min_time: float) -> list[tuple]:
    """4096x4096 float32: the array library's speed should show through."""
    n = 4096
    xa = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    ya = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    x, y = tensora.from_numpy(xa), tensora.from_numpy(ya)
    ma = xa[:1024, :1024].copy()
    m = tensora.from_numpy(ma)

    def np_softmax():
        e = np.exp(xa - xa.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    cases = [
        ("add", lambda: x + y, lambda: xa + ya),
        ("mul", lambda: x * y, lambda: xa * ya),
        ("exp", lambda: x.exp(), lambda: np.exp(xa)),
        ("tanh", lambda: x.tanh(), lambda: np.tanh(xa)),
        ("relu", lambda: x.relu(), lambda: np.maximum(xa, 0)),
        ("sum", lambda: x.sum(), lambda: xa.sum()),
        ("sum(dim=1)", lambda: x.sum(1), lambda: xa.sum(1)),
        ("mean(dim=0)", lambda: x.mean(0), lambda: xa.mean(0)),
        ("amax(dim=1)", lambda: x.amax(1), lambda: xa.max(1)),
        ("softmax(dim=1)", lambda: x.softmax(1), np_softmax),
        ("matmul 1024^3", lambda: m @ m, lambda: ma @ ma),
    ]
    rows = []
    for name, f, g in cases:
        t = per_call_us(f, min_time) / 1e3
        n_ = per_call_us(g, min_time) / 1e3
        rows.append((name, t, n_, t / n_))
    return rows


def main() -> None:
    quick = "--quick" in sys.argv
    min_time = 0.05 if quick else 0.2
    print("Per-op overhead, (16,) float32, torch single-threaded (target: x torch <= 1.5)")
    rows = overhead_rows(min_time)
    print(table(rows, ("op", "tensora us", "torch us", "x torch")))
    ratios = [r[3] for r in rows if r[3]]
    if ratios:
        print(f"geometric mean x torch: {np.exp(np.mean(np.log(ratios))):.2f}")
    print("\nLarge ops, 4096x4096 float32 (target: x numpy <= 1.05)")
    rows = large_rows(min_time)
    print(table(rows, ("op", "tensora ms", "numpy ms", "x numpy")))
    print(f"geometric mean x numpy: {np.exp(np.mean(np.log([r[3] for r in rows]))):.2f}")


if __name__ == "__main__":
    main()
