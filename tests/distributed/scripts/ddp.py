"""Run under mpirun: DDP and ZeRO-1 training equal single-process training on the concatenated batch."""

import copy

import numpy as np

import tensora
import tensora.distributed as dist
import tensora.nn.functional as F
from tensora import nn

dist.init_process_group("mpi", timeout=20)
rank, world = dist.get_rank(), dist.get_world_size()
B, STEPS = 4, 20  # per-rank batch; the reference trains on world * B rows


class MLP(nn.Module):
    def __init__(self, unused=False):
        super().__init__()
        self.fc1 = nn.Linear(6, 16, dtype=tensora.float64)
        self.fc2 = nn.Linear(16, 3, dtype=tensora.float64)
        self.unused = nn.Linear(3, 3, dtype=tensora.float64) if unused else None
        self.register_buffer("scale", tensora.full((3,), float(rank + 1), dtype=tensora.float64))

    def forward(self, x):
        return self.fc2(F.tanh(self.fc1(x))) * self.scale


def make(seed, **kw):
    tensora.manual_seed(seed)
    return MLP(**kw)


def batch(step):
    rng = np.random.default_rng(step)
    x, y = rng.standard_normal((world * B, 6)), rng.standard_normal((world * B, 3))
    return tensora.from_numpy(x), tensora.from_numpy(y)


def shard(t):
    return t[rank * B:(rank + 1) * B].contiguous()


def params(m):
    return np.concatenate([p.detach().numpy().ravel() for p in m.parameters()])


def train(model, opt, steps, accumulate=1, distributed=True):
    for step in range(steps):
        opt.zero_grad()
        for micro in range(accumulate):
            x, y = batch(1000 * step + micro)
            if distributed:
                x, y = shard(x), shard(y)
            last = micro == accumulate - 1
            ctx = model.no_sync() if distributed and not last else _null()
            with ctx:
                (F.mse_loss(model(x), y) / accumulate).backward()
        opt.step()


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# the reference: one process, rank 0's initialisation (and buffer), the whole batch
ref = make(0)
ref.scale.fill_(1.0)
ref_sgd = copy.deepcopy(ref)

# 1. DDP + SGD, several buckets (tiny cap), replicas start from different seeds: the broadcast must fix that
ddp = dist.DistributedDataParallel(make(rank), bucket_cap_mb=0.0005)
assert len(ddp.reducer.buckets) > 2
assert np.array_equal(params(ddp.module), params(ref)) and ddp.module.scale.tolist() == [1.0] * 3
train(ddp, tensora.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9), STEPS)
train(ref_sgd, tensora.optim.SGD(ref_sgd.parameters(), lr=0.1, momentum=0.9), STEPS, distributed=False)
err = np.abs(params(ddp.module) - params(ref_sgd)).max()
assert err < 1e-10, f"DDP differs from single-process training by {err}"

# 2. no_sync: 3 accumulated micro-batches per step equal the large-batch step
ddp = dist.DistributedDataParallel(make(rank))
ref_acc = copy.deepcopy(ref)
train(ddp, tensora.optim.SGD(ddp.parameters(), lr=0.1), 3, accumulate=3)
train(ref_acc, tensora.optim.SGD(ref_acc.parameters(), lr=0.1), 3, accumulate=3, distributed=False)
err = np.abs(params(ddp.module) - params(ref_acc)).max()
assert err < 1e-10, f"no_sync accumulation differs by {err}"

# 3. ZeRO-1 over DDP equals plain Adam; each rank holds state for its shard only
ddp = dist.DistributedDataParallel(make(rank))
zero = dist.ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=tensora.optim.Adam, lr=0.01)
ref_adam = copy.deepcopy(ref)
train(ddp, zero, STEPS)
train(ref_adam, tensora.optim.Adam(ref_adam.parameters(), lr=0.01), STEPS, distributed=False)
err = np.abs(params(ddp.module) - params(ref_adam)).max()
assert err < 1e-10, f"ZeRO-1 differs from Adam by {err}"
held = len(zero.optim.state) if zero.optim is not None else 0
assert held == len(zero.local) < len(list(ddp.parameters())) or world == 1

# 4. an unused parameter: the next forward names it; find_unused_parameters=True trains the rest
ddp = dist.DistributedDataParallel(make(rank, unused=True))
x, y = batch(0)
F.mse_loss(ddp(shard(x)), shard(y)).backward()
try:
    ddp(shard(x))
    raise AssertionError("a parameter without gradient must be reported")
except dist.DistributedError as exc:
    assert "unused.weight" in str(exc) and "unused.bias" in str(exc) and "fc1" not in str(exc), exc
ddp = dist.DistributedDataParallel(make(rank, unused=True), find_unused_parameters=True)
ref_unused = copy.deepcopy(ref)
train(ddp, tensora.optim.SGD(ddp.parameters(), lr=0.1), 3)
train(ref_unused, tensora.optim.SGD(ref_unused.parameters(), lr=0.1), 3, distributed=False)
assert ddp.module.unused.weight.grad is None
assert np.abs(np.concatenate([p.detach().numpy().ravel() for n, p in ddp.module.named_parameters() if "unused" not in n])
              - params(ref_unused)).max() < 1e-10

dist.destroy_process_group()
print(f"rank {rank}: ddp ok")
