"""The default process group: init_process_group, rank and world size, teardown.

A backend is a factory in `BACKENDS` taking the timeout in seconds; "mpi" reads
rank and world size from MPI itself, so whatever started the processes
(`mpirun -n 2 python train.py`, `tensora launch -n 2 train.py`, a batch
scheduler's mpiexec) decides them. A single `python train.py` is a world of one
(MPI's singleton mode).
"""

from __future__ import annotations

import datetime
import sys
import traceback
from typing import Any, Callable

from .errors import DistributedError

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)  # torch's default for its CPU backends


def _mpi_group(timeout_s: float) -> Any:
    from .mpi import ProcessGroupMPI
    return ProcessGroupMPI(timeout_s)


def _nccl_group(timeout_s: float) -> Any:
    from ..backend.cuda import CUDABackend
    ok, why = CUDABackend().availability()
    raise DistributedError(
        "backend 'nccl' moves CUDA tensors through NCCL (via CuPy), which needs tensora's CUDA backend; that "
        f"backend is not built yet (issue [I]) and here CUDA is {'present' if ok else 'unavailable'}: {why}. "
        "Use backend='mpi' for CPU tensors")


BACKENDS: dict[str, Callable[[float], Any]] = {"mpi": _mpi_group, "nccl": _nccl_group}

_group: Any = None
_previous_excepthook: Any = None


def init_process_group(backend: str = "mpi", timeout: datetime.timedelta | float = DEFAULT_TIMEOUT, *,
                       rank: int | None = None, world_size: int | None = None,
                       abort_on_exception: bool = True) -> None:
    """Join the job's default process group; every rank must call it.

    timeout: how long a collective may wait for its peers (timedelta or seconds)
    before this rank fails with an error naming the op. rank/world_size, if
    given, are checked against what the launcher decided. abort_on_exception:
    an uncaught exception on any rank aborts the whole job (as `python -m mpi4py`
    does), so peers waiting in a collective end at once instead of at the timeout.

    >>> import tensora.distributed as dist
    >>> dist.init_process_group("mpi")              # doctest: +SKIP
    >>> dist.get_rank(), dist.get_world_size()       # doctest: +SKIP
    (0, 2)
    """
    global _group, _previous_excepthook
    if _group is not None:
        raise DistributedError("the default process group is already initialized; call destroy_process_group first")
    if backend not in BACKENDS:
        raise DistributedError(f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
    timeout_s = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else float(timeout)
    if timeout_s <= 0:
        raise ValueError(f"timeout must be positive, got {timeout_s} s")
    group = BACKENDS[backend](timeout_s)
    for name, given, actual in (("rank", rank, group.rank), ("world_size", world_size, group.size)):
        if given is not None and given != actual:
            group.close()
            raise DistributedError(f"init_process_group({name}={given}) but the launcher started this process "
                                   f"with {name} {actual}")
    _group = group
    if abort_on_exception and group.size > 1:
        _previous_excepthook = sys.excepthook
        sys.excepthook = _abort_job


def _abort_job(kind: type, value: BaseException, tb: Any) -> None:
    """sys.excepthook while a group is up: print the traceback, then abort every rank of the job."""
    traceback.print_exception(kind, value, tb)
    group = _group
    if group is not None:
        group.abort(f"tensora.distributed: rank {group.rank} failed with {kind.__name__}; aborting all "
                    f"{group.size} ranks")


def default_group() -> Any:
    """The process group collectives use; raises if init_process_group was not called."""
    if _group is None:
        raise DistributedError("default process group has not been initialized; call "
                               "tensora.distributed.init_process_group() first")
    return _group


def is_initialized() -> bool:
    return _group is not None


def is_available() -> bool:
    """True when a backend that can run here is installed (mpi4py)."""
    try:
        import mpi4py  # noqa: F401, PLC0415 - only probing; importing mpi4py.MPI would initialise MPI
    except ImportError:
        return False
    return True


def get_rank() -> int:
    """This process's rank in the default group (0 .. world_size - 1)."""
    return default_group().rank


def get_world_size() -> int:
    return default_group().size


def get_backend() -> str:
    return default_group().backend


def destroy_process_group() -> None:
    """Leave the default group (after a barrier, so no rank tears down while others still send)."""
    global _group, _previous_excepthook
    group = default_group()
    group.barrier()
    group.close()
    _group = None
    if _previous_excepthook is not None:
        sys.excepthook = _previous_excepthook
        _previous_excepthook = None
