"""Train a model whose float32 weights + Adam state are many times the host budget.

QLoRA (frozen NF4 base, rank-r adapters), AdamW8bit state streamed per parameter through the
memory manager, activations offloaded into it, every second block checkpointed; then the
memory report. The same run without any saver is the reference: the losses must agree.

    python examples/train_beyond_memory.py --width 1024 --depth 8 --steps 20
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tensora
from tensora import nn
from tensora.memory import StreamedOptimizer, budget, checkpoint_policy, offload_activations, report
from tensora.nn import add_lora
from tensora.optim import AdamW8bit
from tensora.quant import quantize


class MLPBlocks(nn.Module):
    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
                                     for _ in range(depth)])

    def forward(self, x: tensora.Tensor) -> tensora.Tensor:
        for block in self.layers:
            x = x + block(x)
        return x


def build(width: int, depth: int, rank: int) -> tuple[nn.Module, int]:
    tensora.manual_seed(0)
    model = MLPBlocks(width, depth)
    full = 3 * 4 * sum(p.numel() for p in model.parameters())  # float32 weights + Adam's two moments
    quantize(model, "nf4")
    add_lora(model, r=rank, alpha=2 * rank)
    return model, full


def train(model: nn.Module, opt, x, y, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--budget-fraction", type=float, default=1 / 32,
                        help="host budget for activations + optimizer state, as a share of float32 weights + Adam")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = tensora.tensor(rng.standard_normal((args.batch, args.width)).astype(np.float32))
    y = tensora.tensor(np.tanh(rng.standard_normal((args.batch, args.width))).astype(np.float32))

    model, full = build(args.width, args.depth, args.rank)
    t0 = time.perf_counter()
    reference = train(model, AdamW8bit([p for p in model.parameters() if p.requires_grad], lr=3e-3), x, y, args.steps)
    plain_s = time.perf_counter() - t0

    model, _ = build(args.width, args.depth, args.rank)
    checkpoint_policy(model, every=2)
    host = int(full * args.budget_fraction)
    t0 = time.perf_counter()
    with budget(host=host) as mm:
        opt = StreamedOptimizer(AdamW8bit([p for p in model.parameters() if p.requires_grad], lr=3e-3))
        with offload_activations("host"):
            losses = train(model, opt, x, y, args.steps)
        print(report())
        peak = mm.tracker.peak["host"]
    budget_s = time.perf_counter() - t0
    worst = max(abs(a / b - 1) for a, b in zip(losses, reference))
    print(f"float32 weights + Adam state: {full / 2**20:.1f} MiB; manager budget {host / 2**20:.1f} MiB "
          f"({full / host:.0f}x smaller), its peak {peak / 2**20:.2f} MiB")
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}; largest relative gap to the unconstrained run {worst:.2e}; "
          f"time {budget_s:.1f} s vs {plain_s:.1f} s")


if __name__ == "__main__":
    main()
