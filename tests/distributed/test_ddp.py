"""DistributedDataParallel and ZeRO-1 on 2 ranks against single-process float64 training on the full batch.

The script asserts: DDP + SGD(momentum) equals one process within 1e-10 after 20 steps (several buckets,
replicas initialised differently); no_sync accumulation equals the large-batch step; ZeRO-1 over DDP equals
plain Adam with each rank holding only its shard's state; an unused parameter is named in the error, and
find_unused_parameters=True trains the rest exactly.
"""

from .mpi_launch import check_ok, requires_mpi, run_ranks

pytestmark = requires_mpi


def test_ddp_and_zero_equal_single_process_training():
    proc, _ = run_ranks(2, "ddp.py")
    check_ok(proc)
    assert proc.stdout.count("ddp ok") == 2
