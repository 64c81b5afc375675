"""Work: the handle an `async_op=True` collective returns (torch.distributed.Work).

A backend subclasses it with `_test()` (has the transfer finished?) and the
deadline comes from the process group's timeout. `wait()` polls with that
deadline instead of blocking inside the transport, so a peer that died or
stopped calling collectives turns into a DistributedTimeoutError naming the op,
not a hang. What must happen after the bytes arrive (dividing for AVG, casting a
float32 scratch back to bfloat16) runs once, in `_finish`, on whichever of
`wait()` or `is_completed()` sees the transfer done first.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .errors import DistributedTimeoutError

_SPIN_S = 2e-3    # poll without sleeping this long first: most ops finish within it
_NAP_S = 5e-5     # then sleep this long between polls, leaving the core to the peer ranks


class Work:
    """A started op: `wait()` blocks until done (or raises after the timeout), `is_completed()` polls."""

    def __init__(self, describe: str, timeout_s: float, rank: int,
                 on_complete: Callable[[], Any] | None = None) -> None:
        self._describe = describe
        self._timeout_s = timeout_s
        self._rank = rank
        self._on_complete = on_complete
        self._done = False
        self._result: Any = None
        self._started = time.monotonic()

    def _test(self) -> bool:
        """True once the transport has finished the transfer (backends override)."""
        return True

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            if self._on_complete is not None:
                self._result = self._on_complete()

    def is_completed(self) -> bool:
        """Poll once; also lets the transport progress a pending op (MPI progresses inside its calls)."""
        if not self._done and self._test():
            self._finish()
        return self._done

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the op is done; raise DistributedTimeoutError at the deadline (`timeout` s, else the group's)."""
        if self._done:
            return True
        limit = self._timeout_s if timeout is None else float(timeout)
        deadline = self._started + limit if timeout is None else time.monotonic() + limit
        spin_until = time.monotonic() + _SPIN_S
        while not self._test():
            now = time.monotonic()
            if now > deadline:
                raise DistributedTimeoutError(
                    f"rank {self._rank}: {self._describe} did not complete within {limit:g} s; a peer rank "
                    "probably died or stopped calling the same collectives in the same order")
            if now > spin_until:
                time.sleep(_NAP_S)
        self._finish()
        return True

    def result(self) -> Any:
        """What the op produced once done (irecv: the sender's rank); None for most collectives."""
        self.wait()
        return self._result

    def __repr__(self) -> str:
        return f"<Work {self._describe} {'done' if self._done else 'pending'}>"
