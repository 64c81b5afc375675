"""Optimizer step time: tensora vs torch.optim (foreach=False, the single-tensor path), same run.

Run: python benchmarks/optim.py            (add --quick for fewer repeats)
Target (issue [C]): one update of a 10M-parameter model within ~1.5x of torch's
foreach=False Adam on CPU. Also shown: the same with torch pinned to one thread (NumPy
is single-threaded), and a model of many small tensors, where per-parameter Python
overhead dominates instead of memory bandwidth.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import per_call_us, table  # noqa: E402

import tensora  # noqa: E402
import tensora.optim  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

# ~10.5M parameters: an embedding-sized matrix plus eight 1024x1024 layers with biases.
BIG = [(2048, 1024)] + [(1024, 1024), (1024,)] * 8
# 300 small tensors (~0.3M parameters): a deep narrow network.
SMALL = [(32, 32), (32,), (32, 64)] * 100

CASES = [
    ("SGD momentum=0.9", "SGD", {"lr": 0.01, "momentum": 0.9}),
    ("Adam", "Adam", {"lr": 1e-3}),
    ("AdamW amsgrad", "AdamW", {"lr": 1e-3, "amsgrad": True}),
    ("RMSprop centered", "RMSprop", {"lr": 1e-3, "centered": True, "momentum": 0.9}),
    ("Adagrad", "Adagrad", {"lr": 1e-2}),
    ("Lion", "Lion", {"lr": 1e-4, "weight_decay": 0.1}),
]


def _model(shapes: list[tuple], seed: int) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    return params, grads


def _tensora_step(cls: str, kw: dict, params: list, grads: list):
    ps = [tensora.tensor(p, requires_grad=True) for p in params]
    for p, g in zip(ps, grads):
        p.grad = tensora.tensor(g)
    opt = getattr(tensora.optim, cls)(ps, **kw)
    opt.step()  # state allocation is not part of a step
    return opt.step


def _torch_step(cls: str, kw: dict, params: list, grads: list):
    if torch is None or not hasattr(torch.optim, cls):
        return None
    ps = [torch.tensor(p, requires_grad=True) for p in params]
    for p, g in zip(ps, grads):
        p.grad = torch.tensor(g)
    opt = getattr(torch.optim, cls)(ps, foreach=False, **kw)
    opt.step()
    return opt.step


def rows(shapes: list[tuple], min_time: float) -> list[tuple]:
    params, grads = _model(shapes, 0)
    threads = torch.get_num_threads() if torch else 1
    out = []
    for name, cls, kw in CASES:
        t = per_call_us(_tensora_step(cls, kw, params, grads), min_time) / 1e3
        step = _torch_step(cls, kw, params, grads)
        p = p1 = None
        if step is not None:
            p = per_call_us(step, min_time) / 1e3
            torch.set_num_threads(1)
            p1 = per_call_us(step, min_time) / 1e3
            torch.set_num_threads(threads)
        out.append((name, t, p, p1, t / p if p else None, t / p1 if p1 else None))
    return out


def main() -> None:
    min_time = 0.05 if "--quick" in sys.argv else 0.3
    headers = ("optimizer", "tensora ms", "torch ms", "torch 1-thread ms", "x torch", "x torch 1-thread")
    n_big = sum(int(np.prod(s)) for s in BIG)
    threads = torch.get_num_threads() if torch else 0
    print(f"One step, {n_big / 1e6:.1f}M float32 parameters in {len(BIG)} tensors "
          f"(torch {threads} threads; target: Adam x torch <= 1.5)")
    print(table(rows(BIG, min_time), headers))
    n_small = sum(int(np.prod(s)) for s in SMALL)
    print(f"\nOne step, {n_small / 1e6:.2f}M float32 parameters in {len(SMALL)} small tensors")
    print(table(rows(SMALL, min_time), headers))


if __name__ == "__main__":
    main()
