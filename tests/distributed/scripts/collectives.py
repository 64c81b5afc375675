"""Run under mpirun: every collective against the NumPy result computed from all ranks' inputs."""

import numpy as np

import tensora
import tensora.distributed as dist

dist.init_process_group("mpi", timeout=20)
rank, world = dist.get_rank(), dist.get_world_size()


def data(r, dtype, shape=(3, 5)):
    """Rank r's input: small integers, so sums and products are exact in every dtype."""
    return np.random.default_rng(100 + r).integers(-3, 4, size=shape).astype(dtype)


REF = {dist.ReduceOp.SUM: lambda xs: np.sum(xs, axis=0), dist.ReduceOp.AVG: lambda xs: np.mean(xs, axis=0),
       dist.ReduceOp.MAX: lambda xs: np.max(xs, axis=0), dist.ReduceOp.MIN: lambda xs: np.min(xs, axis=0),
       dist.ReduceOp.PRODUCT: lambda xs: np.prod(xs, axis=0)}

# all_reduce: every op x dtype, sync and async, against NumPy float64 on all ranks' inputs
for dtype in ("float64", "float32", "int32", "bfloat16", "float16"):
    for op, ref in REF.items():
        if op is dist.ReduceOp.AVG and dtype == "int32":
            continue
        for async_op in (False, True):
            t = tensora.from_numpy(data(rank, np.float64)).to(getattr(tensora, dtype))
            version = t._version
            work = dist.all_reduce(t, op=op, async_op=async_op)
            if async_op:
                assert work.wait() and work.is_completed()
            expected = ref(np.stack([data(r, np.float64) for r in range(world)]))
            got = t.to(tensora.float64).numpy()
            tol = {"bfloat16": 1e-2, "float16": 1e-3, "float32": 1e-6}.get(dtype, 1e-12) * np.abs(expected).max()
            assert np.allclose(got, expected, atol=tol, rtol=0), (dtype, op, got, expected)
            assert t._version > version

b = tensora.from_numpy(data(rank, np.float64) > 0)
dist.all_reduce(b, op=dist.ReduceOp.MAX)  # booleans: logical or
assert np.array_equal(b.numpy(), np.any([data(r, np.float64) > 0 for r in range(world)], axis=0))

try:
    dist.all_reduce(tensora.from_numpy(data(rank, np.int64)), op=dist.ReduceOp.AVG)
    raise AssertionError("AVG on integers must be refused")
except dist.DistributedError:
    pass
try:
    dist.all_reduce(tensora.from_numpy(data(rank, np.float64)).t())
    raise AssertionError("non-contiguous tensors must be refused")
except dist.DistributedError as exc:
    assert "contiguous" in str(exc)

# broadcast from the last rank, every dtype as raw bytes
for dtype in ("float32", "bfloat16", "int64"):
    t = tensora.from_numpy(data(rank, np.float64)).to(getattr(tensora, dtype))
    dist.broadcast(t, src=world - 1, async_op=(dtype == "bfloat16")).wait() if dtype == "bfloat16" else \
        dist.broadcast(t, src=world - 1)
    assert np.array_equal(t.to(tensora.float64).numpy(), data(world - 1, np.float64))

# all_gather: list form and into one tensor
outs = [tensora.zeros(3, 5, dtype=tensora.bfloat16) for _ in range(world)]
dist.all_gather(outs, tensora.from_numpy(data(rank, np.float32)).to(tensora.bfloat16))
for r, o in enumerate(outs):
    assert np.array_equal(o.to(tensora.float64).numpy(), data(r, np.float64))
big = tensora.zeros(world * 3, 5, dtype=tensora.float64)
dist.all_gather_into_tensor(big, tensora.from_numpy(data(rank, np.float64)), async_op=True).wait()
assert np.array_equal(big.numpy(), np.concatenate([data(r, np.float64) for r in range(world)]))

# reduce_scatter: rank r gets the sum over ranks of chunk r
full = [np.concatenate([data(r * world + c, np.float64) for c in range(world)]) for r in range(world)]
out = tensora.zeros(3, 5, dtype=tensora.float64)
dist.reduce_scatter_tensor(out, tensora.from_numpy(full[rank]))
assert np.array_equal(out.numpy(), sum(f[3 * rank:3 * rank + 3] for f in full))
out16 = tensora.zeros(3, 5, dtype=tensora.float16)
inputs = [tensora.from_numpy(f[3 * c:3 * c + 3]).to(tensora.float16) for c, f in enumerate([full[rank]] * world)]
dist.reduce_scatter(out16, inputs, op=dist.ReduceOp.MAX, async_op=True).wait()
assert np.array_equal(out16.to(tensora.float64).numpy(), np.max([f[3 * rank:3 * rank + 3] for f in full], axis=0))

# point to point: a ring, blocking and nonblocking (the receiver learns the sender with src=None)
nxt, prev = (rank + 1) % world, (rank - 1) % world
buf = tensora.zeros(3, 5, dtype=tensora.float64)
if rank % 2 == 0:
    dist.send(tensora.from_numpy(data(rank, np.float64)), dst=nxt)
    assert dist.recv(buf, src=prev) == prev
else:
    assert dist.recv(buf) == prev
    dist.send(tensora.from_numpy(data(rank, np.float64)), dst=nxt)
assert np.array_equal(buf.numpy(), data(prev, np.float64))
recv_work = dist.irecv(buf, tag=7)
send_work = dist.isend(tensora.from_numpy(data(rank + 10, np.float64)), dst=nxt, tag=7)
send_work.wait()
assert recv_work.result() == prev
assert np.array_equal(buf.numpy(), data(prev + 10, np.float64))

dist.barrier(async_op=True).wait()
dist.destroy_process_group()
assert not dist.is_initialized()
print(f"rank {rank}: collectives ok")
