"""The error of a budget that cannot be met, raised before any byte is lost."""

from __future__ import annotations

from ..errors import TensoraError


class MemoryBudgetError(TensoraError, MemoryError):
    """A tensor that can never fit its tier chain (bigger than the host budget, disk full, all pinned).

    Raised before anything is moved or dropped, so the manager's state is what it was.
    """


class DiskTierError(TensoraError, OSError):
    """A file of the disk tier that cannot be written, or read back as it was: a spill file (the
    disk full, its directory removed, the file cut short) or a checkpoint a weight is read from.

    The message names the file. A failed spill leaves no partial file behind and the array
    where it was, in the host tier."""
