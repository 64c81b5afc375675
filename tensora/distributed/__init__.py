"""Distributed training over an existing transport: MPI (mpi4py) for CPU tensors.

    mpirun -n 2 python train.py            # or: tensora launch -n 2 train.py

    import tensora.distributed as dist
    dist.init_process_group("mpi")
    model = dist.DistributedDataParallel(net)
    loader = DataLoader(ds, batch_size=32, sampler=dist.DistributedSampler(ds))

Collectives (all_reduce, broadcast, all_gather, reduce_scatter, send/recv)
mirror torch.distributed; DistributedDataParallel averages gradients with
bucketed all-reduces overlapping backward; ZeroRedundancyOptimizer shards
optimizer state (ZeRO stage 1). "nccl" is registered for CUDA tensors and says
what it is missing until the CUDA backend exists.
"""

from __future__ import annotations

from .collectives import (all_gather, all_gather_into_tensor, all_reduce, barrier, broadcast, irecv, isend, recv,
                          reduce_scatter, reduce_scatter_tensor, send)
from .ddp import DistributedDataParallel
from .errors import DistributedError, DistributedTimeoutError
from .group import (BACKENDS, destroy_process_group, get_backend, get_rank, get_world_size, init_process_group,
                    is_available, is_initialized)
from .reduce_op import ReduceOp
from .sampler import DistributedSampler
from .work import Work
from .zero import ZeroRedundancyOptimizer, save_checkpoint

__all__ = ["init_process_group", "destroy_process_group", "is_initialized", "is_available", "get_rank",
           "get_world_size", "get_backend", "BACKENDS", "ReduceOp", "Work", "all_reduce", "broadcast", "all_gather",
           "all_gather_into_tensor", "reduce_scatter", "reduce_scatter_tensor", "barrier", "send", "recv", "isend",
           "irecv", "DistributedDataParallel", "DistributedSampler", "ZeroRedundancyOptimizer", "save_checkpoint",
           "DistributedError", "DistributedTimeoutError"]
