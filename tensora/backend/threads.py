"""How many threads Tensora's CPU work may use: `set_num_threads` / `get_num_threads`.

Two pools do the work on a CPU: the native extension's own (csrc/parallel.h, one loop at
a time over every usable core) and the BLAS library behind NumPy's matmul. Like
``torch.set_num_threads``, one call caps both, so that a process sharing the machine, or
a benchmark's one-thread column, really runs on that many cores. Without a call each
pool uses every usable core (the native one at most 8).

    >>> import tensora
    >>> tensora.set_num_threads(1)
    >>> tensora.get_num_threads()
    1
    >>> tensora.set_num_threads(None)  # back to every usable core
"""

from __future__ import annotations

import os

from threadpoolctl import threadpool_limits

from . import native

#: The native pool's own cap (csrc/parallel.h), mirrored for the NumPy path's answer.
NATIVE_MAX = 8

_limit: int | None = None
_blas_before = None  # the first cap's threadpoolctl limiter: it remembers BLAS's own thread count


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_num_threads(n: int | None) -> None:
    """Cap the native kernels' loops and the BLAS library at ``n`` threads (None: lift the cap,
    and BLAS goes back to the thread count it had before the first cap)."""
    global _limit, _blas_before
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_num_threads: n must be a positive int or None, got {n!r}")
    lib = native.load()
    if lib is not None:
        lib.set_thread_limit(0 if n is None else n)
    if n is None:
        if _blas_before is not None:
            _blas_before.restore_original_limits()
        _blas_before = None
    elif _blas_before is None:
        _blas_before = threadpool_limits(n, user_api="blas")
    else:
        threadpool_limits(n, user_api="blas")
    _limit = n


def get_num_threads() -> int:
    """The most threads one kernel loop uses now."""
    lib = native.load()
    if lib is not None:
        return int(lib.auto_threads())
    cores = min(usable_cores(), NATIVE_MAX)
    return cores if _limit is None else min(_limit, cores)
