"""tensora.distributed over MPI: all_reduce overhead against raw mpi4py, DDP step time, overlap.

Run: python benchmarks/distributed.py          (add --quick for fewer repeats)
It starts itself under mpirun (1 and 2 ranks, through `tensora launch`'s mpirun
logic) and prints three tables:

1. all_reduce (float32 SUM, in place) through tensora.distributed vs mpi4py's
   Allreduce on the very same NumPy buffer, 1 KiB .. 64 MiB; and the async forms
   (tensora async_op=True + wait() vs raw Iallreduce + Wait). Target: <= 5% overhead.
   Also tensora's fixed per-call cost, measured at 1 rank where MPI has nothing to
   move: the one number here that a busy machine cannot blur.
2. time per DDP training step (forward, backward, SGD step) of an MLP at 1 and 2 ranks.
3. communication hidden behind backward at 2 ranks:
       exposed = t(DDP step) - t(same step under no_sync, no communication)
       hidden  = 1 - exposed / t(all-reducing the same buckets with nothing to overlap)
Timings are the best of interleaved blocks (tensora and raw alternate): on a
shared, oversubscribed machine a rank often waits for its peer to be scheduled,
and the best block is the closest to the cost of the code itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _timing import table  # noqa: E402

SIZES = [1 << 10, 16 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]
WIDTH, DEPTH, BATCH = 1024, 4, 64
BUCKET_MB = (25, 4)


def _best(xs: list[float]) -> float:
    return min(xs)


def _block(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def _allreduce_rows(quick: bool) -> list[dict]:
    from mpi4py import MPI

    import tensora
    import tensora.distributed as dist
    comm = MPI.COMM_WORLD
    rows = []
    for nbytes in SIZES:
        t = tensora.ones(nbytes // 4)
        a = t._data  # the same buffer for both sides
        n = max(2, min(2000, int(0.05 / max(nbytes / 1e9, 2e-6))))  # ~50 ms per block
        cases = {
            "tensora": lambda: dist.all_reduce(t),
            "mpi4py": lambda: comm.Allreduce(MPI.IN_PLACE, a, MPI.SUM),
            "tensora async": lambda: dist.all_reduce(t, async_op=True).wait(),
            "mpi4py async": lambda: comm.Iallreduce(MPI.IN_PLACE, a, MPI.SUM).Wait(),
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(3 if quick else 7):
            for name, fn in cases.items():
                comm.Barrier()
                times[name].append(_block(fn, n))
        row = {"bytes": nbytes, **{k: _best(v) for k, v in times.items()}}
        rows.append(comm.bcast(row, root=0) if comm.size > 1 else row)
    return rows


def _ddp_rows(quick: bool) -> list[dict]:
    from mpi4py import MPI

    import tensora
    import tensora.distributed as dist
    import tensora.nn.functional as F
    from tensora import nn
    comm = MPI.COMM_WORLD
    layers = []
    for _ in range(DEPTH):
        layers += [nn.Linear(WIDTH, WIDTH), nn.ReLU()]
    net = nn.Sequential(*layers)
    x, y = tensora.randn(BATCH, WIDTH), tensora.randn(BATCH, WIDTH)
    rows = []
    for cap in BUCKET_MB:
        ddp = dist.DistributedDataParallel(net, bucket_cap_mb=cap)
        opt = tensora.optim.SGD(ddp.parameters(), lr=1e-4)

        def step(sync: bool = True) -> None:
            opt.zero_grad()
            if sync:
                F.mse_loss(ddp(x), y).backward()
            else:
                with ddp.no_sync():
                    F.mse_loss(ddp(x), y).backward()
            opt.step()

        flats = [b.flat for b in ddp.reducer.buckets]

        def comm_only() -> None:
            works = [ddp.reducer.group.all_reduce(f, dist.ReduceOp.AVG, async_op=True) for f in flats]
            for w in works:
                w.wait()

        reps, n = (3, 3) if quick else (7, 5)
        times: dict[str, list[float]] = {"ddp": [], "local": [], "comm": []}
        step()
        for _ in range(reps):
            for name, fn in (("ddp", step), ("local", lambda: step(False)), ("comm", comm_only)):
                comm.Barrier()
                times[name].append(_block(fn, n))
        row = {"ranks": comm.size, "bucket_mb": cap, "buckets": len(flats), **{k: _best(v) for k, v in times.items()}}
        rows.append(comm.bcast(row, root=0) if comm.size > 1 else row)
        ddp.reducer.remove_hooks()
    return rows


def worker(quick: bool) -> None:
    import tensora.distributed as dist
    dist.init_process_group("mpi")
    result = {"allreduce": _allreduce_rows(quick), "ddp": _ddp_rows(quick)}
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps(result), flush=True)
    dist.destroy_process_group()


def _run(ranks: int, quick: bool) -> dict:
    from tensora.cli.launch import find_mpirun, mpirun_command
    argv, env = mpirun_command(find_mpirun(), ranks, [__file__, "--worker"] + (["--quick"] if quick else []))
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def main() -> None:
    quick = "--quick" in sys.argv
    if "--worker" in sys.argv:
        worker(quick)
        return
    one, two = _run(1, quick), _run(2, quick)
    print("all_reduce, float32 SUM in place, 2 ranks (best us per call; overhead = tensora / mpi4py - 1)")
    rows = []
    for r in two["allreduce"]:
        size = f"{r['bytes'] >> 20} MiB" if r["bytes"] >= 1 << 20 else f"{r['bytes'] >> 10} KiB"
        rows.append((size, r["mpi4py"] * 1e6, r["tensora"] * 1e6, f"{(r['tensora'] / r['mpi4py'] - 1) * 100:+.1f}%",
                     r["mpi4py async"] * 1e6, r["tensora async"] * 1e6,
                     f"{(r['tensora async'] / r['mpi4py async'] - 1) * 100:+.1f}%",
                     f"{r['bytes'] / r['tensora'] / 1e9:.2f}"))
    print(table(rows, ("size", "mpi4py", "tensora", "overhead", "mpi4py async", "tensora async", "overhead async",
                       "tensora GB/s")))
    solo = one["allreduce"][0]  # 1 rank: MPI returns at once, so the difference is tensora's own per-call cost
    print(f"tensora's per-call cost (1 rank, 1 KiB, no transfer): sync {(solo['tensora'] - solo['mpi4py']) * 1e6:.2f} us"
          f" (mpi4py {solo['mpi4py'] * 1e6:.2f} us, tensora {solo['tensora'] * 1e6:.2f} us), async "
          f"{(solo['tensora async'] - solo['mpi4py async']) * 1e6:.2f} us")
    params = DEPTH * (WIDTH * WIDTH + WIDTH)
    print(f"\nDDP step (forward + backward + SGD), MLP {DEPTH}x{WIDTH} float32 ({params / 1e6:.1f}M params, "
          f"{params * 4 >> 20} MiB of gradients), batch {BATCH} per rank (ms)")
    rows = []
    for r1, r2 in zip(one["ddp"], two["ddp"]):
        hidden = max(0.0, min(1.0, 1 - (r2["ddp"] - r2["local"]) / r2["comm"]))
        rows.append((r1["bucket_mb"], r2["buckets"], r1["ddp"] * 1e3, r2["ddp"] * 1e3, r2["local"] * 1e3,
                     r2["comm"] * 1e3, f"{hidden * 100:.0f}%"))
    print(table(rows, ("bucket_cap_mb", "buckets", "1 rank", "2 ranks", "2 ranks no_sync", "all-reduce alone",
                       "comm hidden")))


if __name__ == "__main__":
    main()
