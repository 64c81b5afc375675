"""Dropout layers: Dropout, Dropout1d, Dropout2d, Dropout3d (torch/nn/modules/dropout.py).

Active only in training mode (module.train()); in eval mode they return the input unchanged.
"""

from __future__ import annotations

from typing import Callable

from ...tensor import Tensor
from .. import functional as F
from ..module import Module


class _DropoutNd(Module):
    drop: Callable[..., Tensor]

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if p < 0 or p > 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return type(self).drop(input, self.p, self.training, self.inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """Zero each element with probability p and scale the others by 1 / (1 - p) while training.

    >>> import tensora
    >>> d = Dropout(0.5).eval()
    >>> d(tensora.ones(3)).tolist()
    [1.0, 1.0, 1.0]
    """

    drop = staticmethod(F.dropout)


class Dropout1d(_DropoutNd):
    """Zero whole channels of (N, C, L) or (C, L) inputs."""

    drop = staticmethod(F.dropout1d)


class Dropout2d(_DropoutNd):
    """Zero whole channels of (N, C, H, W) inputs."""

    drop = staticmethod(F.dropout2d)


class Dropout3d(_DropoutNd):
    """Zero whole channels of (N, C, D, H, W) or (C, D, H, W) inputs."""

    drop = staticmethod(F.dropout3d)


__all__ = ["Dropout", "Dropout1d", "Dropout2d", "Dropout3d"]
