"""Run under mpirun: `kill` (rank 1 dies) or `hang` (rank 1 never joins); rank 0 must not wait forever."""

import os
import signal
import sys
import time

import tensora
import tensora.distributed as dist

mode = sys.argv[1]
dist.init_process_group("mpi", timeout=1)
t = tensora.ones(1000)
dist.all_reduce(t)  # everyone is up
if dist.get_rank() == 1:
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(120)
if mode == "hang":
    try:
        dist.all_reduce(t, async_op=True).wait()
        raise AssertionError("a collective without its peer must time out")
    except dist.DistributedTimeoutError as exc:
        print(f"caught: {exc}", file=sys.stderr, flush=True)
for _ in range(100):
    dist.all_reduce(t)  # blocking: the watchdog aborts the job, or mpirun ends it when a rank died
