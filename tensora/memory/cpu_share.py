"""How the compute thread and the prefetch thread share the CPU while a tiered pass streams.

Two process-wide settings change for the length of a pass (or of a generate() call, whose
passes follow one another with the prefetch thread reading in between) and are restored
when it ends:

* The interpreter's switch interval. The prefetch thread needs the GIL between its reads,
  and a thread that wakes while the compute thread runs Python waits a whole switch
  interval (5 ms by default) before the interpreter hands it over: longer than a decoder
  layer of a small model takes. Lowered to SWITCH_INTERVAL, the prefetch thread starts
  its next read within about that (in the offload benchmark the median delay from a
  request to its first read went from 0.45-0.6 ms at 0.5 ms to 0.23-0.25 ms at 0.1 ms;
  the tail, several ms on a loaded machine, is the OS's scheduling, not the GIL's).
* BLAS threads. NumPy's matmul (OpenBLAS, MKL) splits each product over every core, and
  the prefetch thread's reads (a copy out of the page cache or a disk's DMA buffer) need
  a core too: on 2 cores the three threads take turns, and a split matrix-vector product
  waits for whichever half was descheduled. On a shared 2-core machine the offload
  benchmark's lm_head took 5-8 ms that way instead of 0.3 ms with one BLAS thread, and
  the prefetch thread started late. So BLAS gets one core fewer than this process may
  use (never more threads than it had), through threadpoolctl.
"""

from __future__ import annotations

import sys

from threadpoolctl import ThreadpoolController

from ..backend.threads import usable_cores

SWITCH_INTERVAL = 0.0001  # seconds: the interpreter's switch interval while a pass streams


class CpuShare:
    """`begin()` when streaming starts, `end()` when it ends; nested pairs (a pass inside a generate() call)
    change nothing: the outermost pair sets and restores. See the module docstring."""

    def __init__(self) -> None:
        self._blas = None  # the BLAS libraries loaded in this process, found on the first pass
        self._limiter = None
        self._saved_switch: float | None = None
        self._depth = 0

    def begin(self) -> None:
        self._depth += 1
        if self._depth > 1:
            return
        self._saved_switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._saved_switch, SWITCH_INTERVAL))
        if self._blas is None:
            self._blas = ThreadpoolController().select(user_api="blas")
        threads = [lib["num_threads"] for lib in self._blas.info()]
        spare = max(1, usable_cores() - 1)
        if threads and spare < max(threads):
            self._limiter = self._blas.limit(limits=min(spare, min(threads)))

    def end(self) -> None:
        self._depth -= 1
        if self._depth > 0:
            return
        if self._saved_switch is not None:
            sys.setswitchinterval(self._saved_switch)
            self._saved_switch = None
        if self._limiter is not None:
            self._limiter.restore_original_limits()
            self._limiter = None
