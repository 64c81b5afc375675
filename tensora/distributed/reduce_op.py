"""ReduceOp: how all_reduce and reduce_scatter combine the ranks' values (torch.distributed.ReduceOp)."""

from __future__ import annotations

import enum


class ReduceOp(enum.Enum):
    """SUM, AVG (SUM then divide by the world size; floating dtypes only), PRODUCT, MIN, MAX."""

    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"

    def __repr__(self) -> str:
        return f"ReduceOp.{self.name}"
