"""Loss reductions: 'none', 'mean', 'sum', and PyTorch's legacy size_average/reduce flags."""

from __future__ import annotations

import warnings

from ..tensor import Tensor

REDUCTIONS = ("none", "mean", "sum")


def legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str,
                     allowed: tuple = REDUCTIONS) -> str:
    """The reduction to use: the legacy flags win when given (with PyTorch's warning), as in torch."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        reduction = "mean" if size_average and reduce else "sum" if reduce else "none"
        warnings.warn(f"size_average and reduce args will be deprecated, please use reduction='{reduction}' "
                      "instead.", stacklevel=3)
    if reduction not in allowed:
        raise ValueError(f"{reduction} is not a valid value for reduction (expected one of {', '.join(allowed)})")
    return reduction


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """loss itself, its mean or its sum."""
    if reduction == "none":
        return loss
    return loss.mean() if reduction == "mean" else loss.sum()
