"""Vector similarities and distances: normalize, cosine_similarity, pairwise_distance
(torch.nn.functional's formulas and eps placements)."""

from __future__ import annotations

import numpy as np

from ..tensor import Tensor


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: Tensor | None = None) -> Tensor:
    """input / max(||input||_p, eps) along `dim`; with `out`, the result is also copied into it.

    >>> import tensora
    >>> normalize(tensora.tensor([[3.0, 4.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929]]
    """
    y = input / input.norm(p, dim, keepdim=True).clamp_min(eps)
    if out is not None:
        out.copy_(y.detach())
        return out
    return y


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """sum(x1 / max(||x1||, eps) * x2 / max(||x2||, eps)) along `dim`, inputs broadcast.

    As in PyTorch, the clamping of the norms is not differentiated (it is applied under no_grad
    there), so where a norm is below eps the gradient still flows through the norm itself.
    """
    shape = np.broadcast_shapes(tuple(x1.shape), tuple(x2.shape))
    if tuple(x1.shape) != shape:
        x1 = x1.expand(shape)
    if tuple(x2.shape) != shape:
        x2 = x2.expand(shape)
    n1 = _clamped(x1.norm(2, dim, keepdim=True), eps)
    n2 = _clamped(x2.norm(2, dim, keepdim=True), eps)
    return ((x1 / n1) * (x2 / n2)).sum(dim)


def _clamped(norm: Tensor, eps: float) -> Tensor:
    """max(norm, eps) in value, with the gradient of `norm` itself (PyTorch's no_grad clamp_min_)."""
    return norm + (norm.detach().clamp_min(eps) - norm.detach())


def pairwise_distance(x1: Tensor, x2: Tensor, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False) -> Tensor:
    """||x1 - x2 + eps||_p along the last dim (torch.nn.functional.pairwise_distance)."""
    return (x1 - x2 + eps).norm(p, max(x1.ndim, x2.ndim) - 1, keepdim=keepdim)
