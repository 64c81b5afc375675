"""The model and data the checkpoint scripts and their single-process reference share."""

import numpy as np

import tensora
import tensora.nn.functional as F
from tensora import nn

ROWS = 12  # global batch: divisible by 1, 2 and 3 ranks


def make_model(seed: int) -> nn.Module:
    tensora.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8, dtype=tensora.float64), nn.Tanh(), nn.Linear(8, 2, dtype=tensora.float64))


def batch(step: int, rank: int = 0, world: int = 1):
    rng = np.random.default_rng(step)
    x, y = rng.standard_normal((ROWS, 5)), rng.standard_normal((ROWS, 2))
    rows = slice(rank * ROWS // world, (rank + 1) * ROWS // world)
    return tensora.from_numpy(np.ascontiguousarray(x[rows])), tensora.from_numpy(np.ascontiguousarray(y[rows]))


def train(model, opt, first: int, last: int, rank: int = 0, world: int = 1) -> None:
    for step in range(first, last):
        opt.zero_grad()
        x, y = batch(step, rank, world)
        F.mse_loss(model(x), y).backward()
        opt.step()


def flat_params(model) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
