"""Run under mpirun: `zero_checkpoint.py IN STEPS OUT`: DDP + ZeRO-1 training from checkpoint IN ("-": fresh).

Trains STEPS steps at whatever world size mpirun gave, then saves a consolidated checkpoint to OUT. Replicas
that resume start from deliberately wrong weights, so only the checkpoint can make the run continue exactly.
"""

import sys

import tensora
import tensora.distributed as dist
from common import make_model, train

src, steps, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3]
dist.init_process_group("mpi", timeout=20)
rank, world = dist.get_rank(), dist.get_world_size()
net = make_model(seed=0 if src == "-" else 100 + rank)
zero = dist.ZeroRedundancyOptimizer(net.parameters(), optimizer_class=tensora.optim.Adam, lr=0.01)
first = 0 if src == "-" else tensora.load_checkpoint(src, model=net, optimizer=zero).step
ddp = dist.DistributedDataParallel(net)
train(ddp, zero, first, first + steps, rank, world)
dist.save_checkpoint(dst, model=ddp, optimizer=zero, step=first + steps)
dist.destroy_process_group()
