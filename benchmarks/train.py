"""Training-step time: tensora vs torch on the CPU, same models, same weights, same batch, same run.

One step is forward + loss + backward + AdamW step (+ zero_grad), the loop body of every
example. Models:
  digits MLP   64-256-256-10 with dropout, batch 64 (examples/digits_mlp.py)
  digits CNN   3 convs + 2 max-pools + linear on 1x8x8, batch 64 (examples/digits_cnn.py)
  transformer  one pre-norm TransformerEncoderLayer, d_model 128, 4 heads, ff 512, causal
               mask, batch 16 x 64 tokens, MSE to a random target
Both libraries run with the same thread count: torch's pool is set to NumPy's BLAS thread
count (NumPy's own ops are single-threaded; only its BLAS calls use threads), then both are
pinned to one thread for the 1-thread columns (tensora.set_num_threads caps its native pool
and, through threadpoolctl, OpenBLAS).
Ratios are tensora time / torch time at the same thread count; the target (issue [C]) is
<= 1.2x torch. Best of the repeats, tensora and torch alternating.

On a machine that other processes keep busy, multi-threaded BLAS (OpenBLAS in NumPy, and
torch's own pool) spins and slows 5-20x; read the 1-thread columns there.

    PYTHONPATH=. .venv/bin/python benchmarks/train.py [--quick]
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import per_call_us, table  # noqa: E402

import tensora  # noqa: E402
import tensora.nn  # noqa: E402

try:
    import torch
except ImportError:
    torch = None
from threadpoolctl import threadpool_info  # noqa: E402

BATCH, SEQ, D_MODEL = 64, 64, 128


def mlp(lib):
    nn = lib.nn
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 256), nn.ReLU(),
                         nn.Dropout(0.2), nn.Linear(256, 10))


def cnn(lib):
    nn = lib.nn
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Dropout(0.3), nn.Linear(256, 10))


class _Block:
    """A TransformerEncoderLayer called with a causal mask (the char LM's block)."""

    def __init__(self, lib):
        self.layer = lib.nn.TransformerEncoderLayer(D_MODEL, 4, 4 * D_MODEL, dropout=0.1, activation="gelu",
                                                    batch_first=True, norm_first=True)
        self.mask = lib.nn.Transformer.generate_square_subsequent_mask(SEQ)

    def __call__(self, x):
        return self.layer(x, src_mask=self.mask, is_causal=True)


def _cases(rng):
    images = rng.random((BATCH, 64), dtype=np.float32)
    labels = rng.integers(0, 10, BATCH)
    tokens = rng.standard_normal((16, SEQ, D_MODEL), dtype=np.float32)
    return [
        ("digits MLP", mlp, lambda m: m, images, labels, "cross_entropy"),
        ("digits CNN", cnn, lambda m: m, images.reshape(BATCH, 1, 8, 8), labels, "cross_entropy"),
        ("transformer block", _Block, lambda b: b.layer, tokens, rng.standard_normal(tokens.shape, dtype=np.float32),
         "mse_loss"),
    ]


def _step(lib, model, module, x, y, loss_name):
    opt = lib.optim.AdamW(module.parameters(), lr=1e-3)
    loss_fn = getattr(lib.nn.functional, loss_name)

    def step():
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # optimizer state is allocated on the first step, not timed
    return step


def blas_threads() -> int:
    """NumPy's BLAS thread count (OpenBLAS's pool, as threadpoolctl reads it)."""
    return max((pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"), default=1)


def _timed(steps: tuple, threads: int, min_time: float) -> tuple[float, float | None]:
    """(tensora ms, torch ms) per step, both libraries on `threads` threads; tensora is timed before
    and after torch, its best kept."""
    t_step, r_step = steps
    tensora.set_num_threads(threads)
    try:
        t = per_call_us(t_step, min_time) / 1e3
        if r_step is None:
            return t, None
        torch.set_num_threads(threads)
        p = per_call_us(r_step, min_time) / 1e3
        return min(t, per_call_us(t_step, min_time) / 1e3), p
    finally:
        tensora.set_num_threads(None)


def rows(min_time: float, threads: int) -> list[tuple]:
    out = []
    for name, build, params_of, x, y, loss_name in _cases(np.random.default_rng(0)):
        tensora.manual_seed(0)
        ours = build(tensora)
        t_step = _step(tensora, ours, params_of(ours), tensora.tensor(x), tensora.tensor(y), loss_name)
        r_step = None
        if torch is not None:
            theirs = build(torch)
            state = {k: torch.from_numpy(v.numpy().copy()) for k, v in params_of(ours).state_dict().items()}
            params_of(theirs).load_state_dict(state)
            r_step = _step(torch, theirs, params_of(theirs), torch.from_numpy(x), torch.from_numpy(y), loss_name)
        t, p = _timed((t_step, r_step), threads, min_time)
        t1, p1 = _timed((t_step, r_step), 1, min_time)
        out.append((name, t, p, t / p if p else None, t1, p1, t1 / p1 if p1 else None))
    return out


def main() -> None:
    min_time = 0.05 if "--quick" in sys.argv else 0.3
    threads = blas_threads()
    native, _ = tensora.native_available()
    print(f"One training step (fwd + loss + bwd + AdamW), float32, CPU; torch and NumPy's OpenBLAS on "
          f"{threads} threads, then both on 1; tensora native extension {'on' if native else 'off'}; "
          f"target x torch <= 1.2")
    headers = ("model", "tensora ms", "torch ms", "x torch", "tensora 1-thread ms", "torch 1-thread ms",
               "x torch 1-thread")
    print(table(rows(min_time, threads), headers))


if __name__ == "__main__":
    main()
