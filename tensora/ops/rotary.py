"""Rotary position embedding as one op: y = x * cos + rotate_half(x) * sin.

rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2]), the layout of transformers' Llama.
Written out of tensor ops it is seven ops per call (two slices, a negation, a cat, two
products and a sum), which per decode step of a 30-layer model is 420 dispatches; one op
is 30. The angles' two halves are equal (cos/sin of cat(freqs, freqs)), so the
rotation's transpose is the rotation by -angle: the gradient is rotary(g, cos, -sin),
itself this op, so higher-order gradients work. cos and sin are constants (no gradient).
"""

from __future__ import annotations

from ..autograd.function import Op
from ..errors import ShapeError, fmt_shape
from ..tensor import Tensor


class Rotary(Op, name="rotary_embedding"):
    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save(cos, sin)
        half = x.shape[-1] // 2
        out = x * cos
        out[..., :half] -= x[..., half:] * sin[..., :half]
        out[..., half:] += x[..., :half] * sin[..., half:]
        return out

    @staticmethod
    def backward(ctx, g):
        cos, sin = ctx.saved
        return Rotary.apply(g, cos, -sin), None, None


def rotary_embedding(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x * cos + rotate_half(x) * sin for x (..., head_dim) and cos/sin broadcastable to it.

    cos and sin must hold the same angles in both halves of the last dim (as RoPE builds them).
    """
    if x.shape[-1] % 2 or cos.shape[-1] != x.shape[-1] or sin.shape[-1] != x.shape[-1]:
        raise ShapeError(f"rotary_embedding: x {fmt_shape(x.shape)} needs an even last dim matching cos "
                         f"{fmt_shape(cos.shape)} and sin {fmt_shape(sin.shape)}")
    return Rotary.apply(x, cos, sin)
