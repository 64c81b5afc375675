"""Worker processes for DataLoader(num_workers > 0): the pool, the worker loop, the errors.

Each worker owns one duplex pipe to the main process. The main process sends it
small tasks (the sample indices, and the blocks it may reuse); the worker fetches
and collates the batch, writes its arrays into a shared-memory block
(transport.py) and answers with the block's description. A worker handles its
tasks in the order sent, so the main process gets batches in sampler order by
reading each batch's worker pipe in turn, while all workers keep computing ahead
(up to prefetch_factor tasks each).

The main process waits on the pipe together with every worker's process
sentinel, so a worker that dies (os._exit, a signal) turns into WorkerDiedError
naming it and its exit code as soon as it happens, never a hang. An exception
inside the dataset is sent back as its type and traceback text and raised again
in the main process. Every worker is seeded with base_seed + worker_id (tensora's
default generator, Python's `random`, NumPy's global RNG modulo 2**32), as PyTorch
seeds its workers, and can see itself through `get_worker_info()`.
"""

from __future__ import annotations

import os
import pickle
import queue
import random
import secrets
import signal
import threading
import time
import traceback
import weakref
from dataclasses import dataclass
from multiprocessing import connection, resource_tracker
from multiprocessing.reduction import ForkingPickler
from typing import Any, Callable

import numpy as np

from .. import random as trandom
from ..creation import from_numpy
from ..errors import TensoraError
from ..tensor import Tensor
from . import shm
from .fetch import IterableFetcher, MapFetcher
from .transport import BatchReader, BatchWriter

_POLL_S = 1.0  # how often an idle worker checks that the main process is still there
_JOIN_S = 5.0  # how long close() lets workers finish their current batch before terminating them
_RESET = "reset"  # message: start a new pass over an IterableDataset (persistent workers)


class _ReplyPickler(ForkingPickler):
    """Pickles a worker's reply. Tensors in dicts, lists and tuples travel in shared memory (the
    transport's spec); one inside any other object (a deque, a dataclass) is pickled here by value,
    as torch's workers send it, instead of failing on Tensor's refusal to be pickled."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, Tensor) and obj.device.type == "cpu":
            return _tensor_from_array, (np.array(obj.detach().numpy()), obj.requires_grad)
        return NotImplemented


def _tensor_from_array(array: np.ndarray, requires_grad: bool) -> Tensor:
    """Unpickle side of _ReplyPickler (in the main process, from our own worker)."""
    return from_numpy(array).requires_grad_(requires_grad)


class DataLoaderError(TensoraError, RuntimeError):
    """A DataLoader failure that is not the dataset's own exception (timeouts, lost workers)."""


class WorkerDiedError(DataLoaderError):
    """A worker process ended while the loader needed it; names the worker and its exit code."""

    def __init__(self, worker_id: int, pid: int | None, exitcode: int | None) -> None:
        self.worker_id, self.pid, self.exitcode = worker_id, pid, exitcode
        if exitcode is not None and exitcode < 0:
            sig = _signal_name(-exitcode)
            how = f"was killed by signal {sig} (exit code {exitcode})"
            if sig == "SIGBUS":
                how += "; this usually means /dev/shm is out of space, raise its size (docker: --shm-size)"
        else:
            how = f"exited unexpectedly with exit code {exitcode}"
        super().__init__(f"DataLoader worker {worker_id} (pid {pid}) {how}")


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker knows about itself: returned by get_worker_info() inside a worker process."""

    id: int
    num_workers: int
    seed: int
    dataset: Any


_worker_info: WorkerInfo | None = None


def get_worker_info() -> WorkerInfo | None:
    """This worker's id, the worker count, its seed and its dataset copy; None in the main process.

    Use it in an IterableDataset's __iter__ to give each worker its own share of the stream.
    """
    return _worker_info


@dataclass
class WorkerSetup:
    """Everything a worker needs, sent once when it starts."""

    dataset: Any
    is_iterable: bool
    auto_collation: bool
    collate_fn: Callable[[Any], Any]
    batch_size: int | None
    drop_last: bool
    worker_init_fn: Callable[[int], Any] | None
    num_workers: int
    base_seed: int

    def fetcher(self) -> IterableFetcher | MapFetcher:
        if self.is_iterable:
            return IterableFetcher(self.dataset, self.auto_collation, self.collate_fn, self.batch_size,
                                   self.drop_last)
        return MapFetcher(self.dataset, self.auto_collation, self.collate_fn)


# -- the worker process ------------------------------------------------------------


def _worker_main(worker_id: int, conn: connection.Connection, done: Any, setup: WorkerSetup | bytes,
                 writer: BatchWriter, parent_pid: int) -> None:
    try:
        _worker_loop(worker_id, conn, done, setup, writer, parent_pid)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the main process reports it
        pass
    finally:
        writer.release_unsent()


def _seed_worker(seed: int) -> None:
    random.seed(seed)
    trandom.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _worker_loop(worker_id: int, conn: connection.Connection, done: Any, setup: WorkerSetup | bytes,
                 writer: BatchWriter, parent_pid: int) -> None:
    global _worker_info
    if isinstance(setup, bytes):  # 'spawn': pickled by shm.dumps_shared
        setup = pickle.loads(setup)
    seed = setup.base_seed + worker_id
    _seed_worker(seed)
    _worker_info = WorkerInfo(id=worker_id, num_workers=setup.num_workers, seed=seed, dataset=setup.dataset)
    init_error = fetcher = None
    try:
        if setup.worker_init_fn is not None:
            setup.worker_init_fn(worker_id)
        fetcher = setup.fetcher()
    except Exception as exc:  # reported with every task, so the main process raises it at the first batch
        init_error = _exception_info(exc)
    sender = _Sender(conn)
    while True:
        if not conn.poll(_POLL_S):
            if os.getppid() != parent_pid:  # the main process is gone
                return
            continue
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        if msg == _RESET:
            if init_error is None:
                try:
                    fetcher = setup.fetcher()
                except Exception as exc:
                    init_error = _exception_info(exc)
            continue
        if done.is_set():  # shutting down: skip queued tasks, wait for None
            continue
        index, returned = msg
        writer.give_back(returned)
        kind, rest = _run_task(index, fetcher, init_error, setup.is_iterable, writer)
        reply = (kind, writer.take_dropped(), *rest)
        try:
            data = _ReplyPickler.dumps(reply)
        except Exception as exc:  # the reply would not pickle (an odd object inside the batch)
            if kind == "batch" and rest[0] is not None:
                writer.give_back([rest[0]])
            data = ForkingPickler.dumps(("error", reply[1], _exception_info(exc)))
        else:
            if kind == "batch":
                writer.sent(rest[0])
        if not sender.send(data):
            return  # the pipe broke: the main process is gone


class _Sender:
    """Sends a worker's replies from a thread of their own, in order.

    A reply too big for the pipe's buffer blocks its sender until the main process reads it,
    and the main process may itself be blocked sending this worker a big task (a long list of
    indices): sent from the loop, each waited for the other forever. Sent from here, the loop
    goes on reading tasks (and watching for the main process to go away) meanwhile."""

    def __init__(self, conn: connection.Connection) -> None:
        self._conn = conn
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._broken = False
        threading.Thread(target=self._run, name="tensora-data-sender", daemon=True).start()

    def send(self, data: bytes) -> bool:
        """Queue a pickled reply; False once the pipe has broken."""
        if not self._broken:
            self._queue.put(data)
        return not self._broken

    def _run(self) -> None:
        while True:
            data = self._queue.get()
            try:
                self._conn.send_bytes(data)
            except OSError:
                self._broken = True
                return


def _run_task(index: Any, fetcher: Any, init_error: tuple | None, is_iterable: bool,
              writer: BatchWriter) -> tuple[str, tuple]:
    """("batch", (block number, size, spec)) | ("error", (info,)) | ("end", ())."""
    if init_error is not None:
        return "error", (init_error,)
    try:
        batch = fetcher.fetch(index)
    except StopIteration as exc:
        if is_iterable:
            return "end", ()
        return "error", (_exception_info(exc),)
    except Exception as exc:
        return "error", (_exception_info(exc),)
    try:
        return "batch", writer.write(batch)
    except Exception as exc:
        return "error", (_exception_info(exc),)


def _exception_info(exc: BaseException) -> tuple:
    """(exception class or None if it does not pickle, class name, formatted traceback)."""
    cls = type(exc)
    try:
        pickle.dumps(cls)
    except Exception:
        cls = None
    text = "".join(traceback.format_exception(exc))
    return cls, type(exc).__name__, text


class _KeyErrorMessage(str):
    """KeyError reprs its argument; this keeps a multi-line message readable."""

    def __repr__(self) -> str:
        return self


def raise_from_worker(worker_id: int, info: tuple) -> None:
    """Raise a worker's exception in the main process: same type, the worker's traceback in the message."""
    cls, name, text = info
    msg = f"Caught {name} in DataLoader worker process {worker_id}.\nOriginal {text}"
    exc: BaseException | None = None
    if cls is not None and issubclass(cls, Exception) and not issubclass(cls, StopIteration):
        try:
            exc = cls(_KeyErrorMessage(msg) if issubclass(cls, KeyError) else msg)
        except Exception:  # a constructor that wants other arguments
            exc = None
    raise exc if exc is not None else DataLoaderError(msg)


# -- the pool, in the main process -------------------------------------------------


class _PoolState:
    """The pool's processes, pipes and shared blocks; closed by a finalizer, so no reference cycle."""

    def __init__(self, prefix: str, num_workers: int) -> None:
        self.procs: list = []
        self.conns: list = []
        self.in_flight = [0] * num_workers  # per worker: tasks sent and not yet received
        self.reader = BatchReader(prefix, num_workers)
        self.shared_names: list[str] = []  # blocks holding a spawned worker's dataset tensors
        self.done: Any = None

    def close(self, wait: float = _JOIN_S) -> None:
        if self.done is not None:
            self.done.set()
        for conn in self.conns:
            try:
                conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(1.0)
            if p.is_alive():
                p.kill()
                p.join()
        for conn in self.conns:
            conn.close()
        # The workers are gone: a block one made that never arrived still has its name.
        for w, count in enumerate(self.in_flight):
            for name in self.reader.unseen_names(w, count):
                shm.release(name)
        self.reader.close()
        for name in self.shared_names:
            shm.release(name)
        self.shared_names.clear()


class WorkerPool:
    """`num_workers` processes running `setup`'s fetcher; tasks in, batches out, per worker in order.

    Each worker keeps up to prefetch_factor + 2 spare blocks for reuse: enough for
    the batches in flight plus the one or two a training loop still holds.
    """

    def __init__(self, setup: WorkerSetup, context: Any, prefetch_factor: int) -> None:
        if not shm.available:
            raise DataLoaderError("DataLoader(num_workers > 0) passes batches through POSIX shared memory, "
                                  "which this platform lacks; use num_workers=0")
        resource_tracker.ensure_running()  # started before the workers, so they share it
        prefix = f"/tsr{os.getpid():x}_{secrets.token_hex(3)}_"
        state = _PoolState(prefix, setup.num_workers)
        self._state = state
        self._finalizer = weakref.finalize(self, state.close)
        state.done = context.Event()
        payload: WorkerSetup | bytes = setup
        if context.get_start_method() != "fork":
            payload, state.shared_names = shm.dumps_shared(setup, prefix)
        for w in range(setup.num_workers):
            parent_end, child_end = context.Pipe(duplex=True)
            writer = BatchWriter(prefix, w, keep=prefetch_factor + 2)
            proc = context.Process(target=_worker_main, name=f"tensora-data-worker-{w}", daemon=True,
                                   args=(w, child_end, state.done, payload, writer, os.getpid()))
            proc.start()
            child_end.close()  # only the worker holds it now, so its death reads as EOF here
            state.procs.append(proc)
            state.conns.append(parent_end)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._state.procs]

    def submit(self, worker: int, index: Any) -> None:
        """Queue `index` (a list of indices, one index, or None for an iterable dataset) on `worker`."""
        st = self._state
        try:
            st.conns[worker].send((index, st.reader.returned(worker)))
        except OSError:  # its end of the pipe is closed: the worker is gone
            self._raise_dead(worker)
        st.in_flight[worker] += 1

    def restart_iteration(self) -> None:
        """Tell every worker to start a new pass over its IterableDataset."""
        for conn in self._state.conns:
            conn.send(_RESET)

    def receive(self, worker: int, timeout: float = 0) -> tuple[str, Any]:
        """The result of `worker`'s oldest task: ("batch", batch) | ("error", info) | ("end", None).

        Raises WorkerDiedError if any worker dies while waiting, DataLoaderError after
        `timeout` seconds (0: no limit).
        """
        st = self._state
        conn = st.conns[worker]
        if not conn.poll():
            deadline = time.monotonic() + timeout if timeout > 0 else None
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready = connection.wait([conn, *(p.sentinel for p in st.procs)], left)
                if conn in ready:
                    break
                if ready:
                    self._raise_dead(next(i for i, p in enumerate(st.procs) if p.sentinel in ready))
                if deadline is not None and time.monotonic() >= deadline:
                    raise DataLoaderError(f"DataLoader timed out after {timeout} seconds waiting for a batch "
                                          f"from worker {worker}")
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            self._raise_dead(worker)
        st.in_flight[worker] -= 1
        kind, dropped = msg[:2]
        st.reader.drop(worker, dropped)
        if kind == "batch":
            return kind, st.reader.read(worker, *msg[2:])
        if kind == "error":
            return kind, msg[2]
        return kind, None

    def drain(self) -> None:
        """Receive and drop every task still in flight (a pass ended early; persistent workers go on)."""
        for w in range(len(self._state.conns)):
            while self._state.in_flight[w]:
                self.receive(w)

    def _raise_dead(self, worker: int) -> None:
        proc = self._state.procs[worker]
        proc.join(1.0)
        raise WorkerDiedError(worker, proc.pid, proc.exitcode)

    def close(self, wait: float = _JOIN_S) -> None:
        """Stop the workers (each may finish its current batch within `wait` seconds) and free every block."""
        if self._finalizer.detach() is not None:
            self._state.close(wait)
