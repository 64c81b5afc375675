"""Memory multiplication: tiers (host RAM, disk) under hard budgets, layer-by-layer execution with prefetch.

    >>> import numpy as np
    >>> from tensora.memory import budget, parse_size
    >>> with budget(host="600kB") as mm:
    ...     h = mm.own(np.ones(100_000, np.float32), name="a")   # 400 kB
    ...     g = mm.own(np.zeros(100_000, np.float32), name="b")  # 400 more: "a" goes to disk
    ...     (h.tier, g.tier, float(h.get().sum()), h.tier, g.tier)
    ('disk', 'host', 100000.0, 'host', 'disk')

Models: `tensora.models.load(path, quantize="q4_0", memory_budget="64MiB")` streams the
layers through the host tier (layered.py); `report()` prints what moved and how long it took.
"""

from .errors import DiskTierError, MemoryBudgetError
from .handle import Handle
from .manager import MemoryManager, budget, current_manager
from .report import plot_usage, report
from .sizes import format_size, parse_size
from .tracker import Tracker
from .training import StreamedOptimizer, checkpoint_policy, offload_activations

__all__ = ["DiskTierError", "Handle", "MemoryBudgetError", "MemoryManager", "Tracker", "budget", "current_manager", "format_size",
           "parse_size", "plot_usage", "report", "StreamedOptimizer", "checkpoint_policy", "offload_activations"]
