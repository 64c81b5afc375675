"""Matrix products: matmul / @ with batching and broadcasting (more of linalg joins here).

1-D operands are promoted to matrices with differentiable views and squeezed
back, so the core op only sees >= 2-D arrays and its backward is two matmuls.
"""

from __future__ import annotations

from ..autograd.function import Op
from ..errors import ShapeError, fmt_shape
from ..tensor import Tensor
from .registry import register
from .shape import sum_to


class MatMul(Op, name="matmul"):
    promote = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.save(a, b)
        return ctx.xp.matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        need = ctx.needs_input_grad
        ga = sum_to(MatMul.apply(g, b.mT), a.shape) if need[0] else None
        gb = sum_to(MatMul.apply(a.mT, g), b.shape) if need[1] else None
        return ga, gb


@register()
def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product with NumPy/PyTorch semantics for 1-D, 2-D and batched operands."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError("matmul expects tensors")
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: both arguments need at least 1 dimension, got shapes "
                         f"{fmt_shape(a.shape)} and {fmt_shape(b.shape)}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ShapeError(f"matmul: shapes {fmt_shape(a.shape)} and {fmt_shape(b.shape)} cannot be multiplied "
                         f"({a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]})")
    a2 = a.unsqueeze(0) if a.ndim == 1 else a
    b2 = b.unsqueeze(-1) if b.ndim == 1 else b
    out = MatMul.apply(a2, b2)
    if b.ndim == 1:
        out = out.squeeze(-1)
    if a.ndim == 1:
        out = out.squeeze(-2 if b.ndim > 1 else -1)
    return out


Tensor.__matmul__ = matmul
Tensor.__rmatmul__ = lambda self, other: matmul(other, self)
