"""The error of a budget that cannot be met, raised before any byte is lost."""

from __future__ import annotations

from ..errors import TensoraError


class MemoryBudgetError(TensoraError, MemoryError):
    """A tensor that can never fit its tier chain (bigger than the host budget, disk full, all pinned).

    Raised before anything is moved or dropped, so the manager's state is what it was.
    """
