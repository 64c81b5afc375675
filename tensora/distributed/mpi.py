"""The MPI backend: collectives on NumPy arrays through mpi4py (Open MPI or any MPI).

Zero-copy: mpi4py reads and writes the arrays' own buffers (buffer protocol), so
a contiguous tensor is reduced in place with no staging copy. Transfers that do
not combine values (broadcast, all_gather, send/recv) move raw bytes, so every
dtype, bfloat16 and fp8 included, travels as it is.

Reductions need an MPI datatype with arithmetic. MPI has none for float16,
bfloat16 or fp8, so those are reduced in float32: copied up, reduced, divided
(AVG) and rounded back once. That is one rounding instead of one per rank, so
the result is the correctly rounded float32 sum (what torch's NCCL bf16 sum
approaches), at the cost of a float32 scratch copy. Booleans reduce as logical
OR (SUM, AVG, MAX) and AND (PRODUCT, MIN), as torch does.

Synchronous ops use MPI's blocking calls under a Watchdog deadline; async ops
(`async_op=True`) use the nonblocking calls (MPI_Iallreduce, ...) and return a
Work whose wait() polls the requests against the group's timeout.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np

from .errors import DistributedError
from .reduce_op import ReduceOp
from .watchdog import Watchdog
from .work import Work

# dtypes MPI can do arithmetic on directly; mpi4py maps them from the buffer's format
_NATIVE = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.complex64, np.complex128, np.int8, np.int16,
                                          np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_))


def _mpi() -> Any:
    from mpi4py import MPI  # noqa: PLC0415 - initialises MPI; only a process group may do that
    return MPI


class MPIWork(Work):
    """Work over MPI requests; `_keep` holds the buffers alive until the transfer is done."""

    def __init__(self, requests: list, keep: tuple, describe: str, timeout_s: float, rank: int,
                 on_complete: Callable[[], Any] | None = None) -> None:
        super().__init__(describe, timeout_s, rank, on_complete)
        self._requests = requests
        self._keep = keep

    def _test(self) -> bool:
        if self._requests[0].__class__.Testall(self._requests):
            self._keep = ()
            return True
        return False


class ProcessGroupMPI:
    """All ranks of MPI_COMM_WORLD (a private duplicate, so user MPI traffic never mixes with ours)."""

    backend = "mpi"

    def __init__(self, timeout_s: float) -> None:
        MPI = _mpi()
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()
        self.comm.Set_errhandler(MPI.ERRORS_RETURN)  # MPI failures raise MPI.Exception instead of killing silently
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.timeout_s = float(timeout_s)
        self._ops = {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.PRODUCT: MPI.PROD,
                     ReduceOp.MIN: MPI.MIN, ReduceOp.MAX: MPI.MAX}
        self._bool_ops = {ReduceOp.SUM: MPI.LOR, ReduceOp.AVG: MPI.LOR, ReduceOp.MAX: MPI.LOR,
                          ReduceOp.PRODUCT: MPI.LAND, ReduceOp.MIN: MPI.LAND}
        # (dtype, op) pairs MPI reduces in place with nothing to do afterwards
        self._direct = {(d, op): mop for d in _NATIVE if d != np.bool_ for op, mop in self._ops.items()
                        if op is not ReduceOp.AVG}
        self.threads_ok = MPI.Query_thread() == MPI.THREAD_MULTIPLE  # may another thread poll requests?
        self.watchdog = Watchdog(self.rank, self.abort)

    def abort(self, message: str = "") -> None:
        """End every rank of the job now (MPI_Abort): peers blocked in a collective would wait forever."""
        if message:
            print(message, file=sys.stderr, flush=True)
        self._MPI.COMM_WORLD.Abort(1)

    def close(self) -> None:
        self.watchdog.stop()
        self.comm.Free()

    # -- the shape every op takes: blocking call under the watchdog, or nonblocking + Work --
    def _run(self, name: str, call: Callable[[], Any], icall: Callable[[], Any], keep: tuple,
             finish: Callable[[], Any] | None, async_op: bool) -> Work | Any:
        if async_op:
            req = icall()
            return MPIWork(req if isinstance(req, list) else [req], keep, name, self.timeout_s, self.rank, finish)
        self.watchdog.arm(name, self.timeout_s)
        try:
            call()
        finally:
            self.watchdog.disarm()
        return finish() if finish is not None else None

    @staticmethod
    def _bytes(a: np.ndarray) -> list:
        return [a.reshape(-1).view(np.uint8), _mpi().BYTE]

    def _reduction(self, a: np.ndarray, op: ReduceOp) -> tuple[np.ndarray, Any, bool]:
        """(array to reduce, MPI op, whether it is a float32 scratch copy of `a`)."""
        if op is ReduceOp.AVG and a.dtype.kind not in "fc" and a.dtype in _NATIVE:
            raise DistributedError(f"ReduceOp.AVG needs a floating dtype, got {a.dtype}; use SUM and divide")
        if a.dtype == np.bool_:
            return a, self._bool_ops[op], False
        if a.dtype in _NATIVE:
            return a, self._ops[op], False
        return a.astype(np.float32), self._ops[op], True  # float16, bfloat16, fp8: see the module docstring

    def _finisher(self, a: np.ndarray, work: np.ndarray, op: ReduceOp, upcast: bool) -> Callable[[], None] | None:
        if op is not ReduceOp.AVG and not upcast:
            return None
        size = self.size

        def finish() -> None:
            if op is ReduceOp.AVG:
                np.divide(work, size, out=work)
            if upcast:
                a[...] = work.astype(a.dtype)
        return finish

    # -- collectives on arrays ------------------------------------------------------
    def all_reduce(self, a: np.ndarray, op: ReduceOp, async_op: bool = False) -> Work | None:
        mop = self._direct.get((a.dtype, op))
        if mop is not None and async_op:  # the hot paths: no closures, no scratch
            return MPIWork([self.comm.Iallreduce(self._MPI.IN_PLACE, a, mop)], (a,), "all_reduce", self.timeout_s,
                           self.rank)
        if mop is not None:
            self.watchdog.arm("all_reduce", self.timeout_s)
            try:
                self.comm.Allreduce(self._MPI.IN_PLACE, a, mop)
            finally:
                self.watchdog.disarm()
            return None
        work, mop, upcast = self._reduction(a, op)
        IN_PLACE = self._MPI.IN_PLACE
        return self._run("all_reduce", lambda: self.comm.Allreduce(IN_PLACE, work, mop),
                         lambda: self.comm.Iallreduce(IN_PLACE, work, mop), (work,),
                         self._finisher(a, work, op, upcast), async_op)

    def broadcast(self, a: np.ndarray, src: int, async_op: bool = False) -> Work | None:
        buf = self._bytes(a)
        return self._run("broadcast", lambda: self.comm.Bcast(buf, root=src),
                         lambda: self.comm.Ibcast(buf, root=src), (a,), None, async_op)

    def all_gather(self, out: np.ndarray, a: np.ndarray, async_op: bool = False) -> Work | None:
        send, recv = self._bytes(a), self._bytes(out)
        return self._run("all_gather", lambda: self.comm.Allgather(send, recv),
                         lambda: self.comm.Iallgather(send, recv), (a, out), None, async_op)

    def reduce_scatter(self, out: np.ndarray, a: np.ndarray, op: ReduceOp, async_op: bool = False) -> Work | None:
        send, mop, upcast = self._reduction(a, op)
        recv = out.astype(np.float32) if upcast else out
        return self._run("reduce_scatter", lambda: self.comm.Reduce_scatter_block(send, recv, mop),
                         lambda: self.comm.Ireduce_scatter_block(send, recv, mop), (send, recv),
                         self._finisher(out, recv, op, upcast), async_op)

    def gather_bytes(self, blob: np.ndarray, to: int) -> list[np.ndarray] | None:
        """Collect every rank's uint8 `blob` (sizes may differ) on rank `to`; others get None. For state, not tensors."""
        sizes = np.zeros(self.size, dtype=np.int64)
        mine = np.array([blob.size], dtype=np.int64)
        recv = np.empty(0, dtype=np.uint8)
        self._run("gather (sizes)", lambda: self.comm.Gather(mine, sizes, root=to), None, (), None, False)
        if self.rank == to:
            recv = np.empty(int(sizes.sum()), dtype=np.uint8)
        spec = [recv, (sizes.tolist(), None), self._MPI.BYTE] if self.rank == to else None
        self._run("gather", lambda: self.comm.Gatherv([blob, self._MPI.BYTE], spec, root=to), None, (), None, False)
        if self.rank != to:
            return None
        return np.split(recv, np.cumsum(sizes)[:-1].tolist())

    def barrier(self, async_op: bool = False) -> Work | None:
        return self._run("barrier", self.comm.Barrier, self.comm.Ibarrier, (), None, async_op)

    # -- point to point ---------------------------------------------------------------
    def send(self, a: np.ndarray, dst: int, tag: int, async_op: bool = False) -> Work | None:
        buf = self._bytes(a)
        return self._run(f"send to rank {dst}", lambda: self.comm.Send(buf, dest=dst, tag=tag),
                         lambda: self.comm.Isend(buf, dest=dst, tag=tag), (a,), None, async_op)

    def recv(self, a: np.ndarray, src: int | None, tag: int, async_op: bool = False) -> Work | int:
        MPI = self._MPI
        buf = self._bytes(a)
        source = MPI.ANY_SOURCE if src is None else src
        where = "any rank" if src is None else f"rank {src}"
        if async_op:
            req = self.comm.Irecv(buf, source=source, tag=tag)
            status = MPI.Status()
            work = MPIWork([req], (a,), f"recv from {where}", self.timeout_s, self.rank, lambda: status.Get_source())
            work._test = lambda: req.Test(status)  # the status tells which rank sent (ANY_SOURCE)
            return work
        status = MPI.Status()
        self._run(f"recv from {where}", lambda: self.comm.Recv(buf, source=source, tag=tag, status=status),
                  None, (a,), None, False)
        return status.Get_source()
