"""Dropout: zero elements (or whole channels) with probability p and scale the rest by 1 / (1 - p).

The keep-mask is drawn from `generator` (default: the global one, so
tensora.manual_seed(0) repeats it) and saved as bool, a quarter of a float32
copy; backward multiplies the gradient by the same mask and scale. dropout1d/2d/3d
draw one value per channel (torch.nn.functional.dropout1d/2d/3d), broadcast over
the spatial dims. Masks come from tensora's PCG64 streams, so they do not match
torch's bit for bit, only in distribution.
"""

from __future__ import annotations

import math

from ..autograd.function import Op
from ..errors import DTypeError, ShapeError, fmt_shape
from ..kernels.dropout import dropout_apply, dropout_grad
from ..random import Generator, resolve, uint32_words
from ..tensor import Tensor
from .inplace import update_inplace
from .registry import register


class Dropout(Op, name="dropout"):
    """x * keep / (1 - p), keep ~ Bernoulli(1 - p) of shape `mask_shape` (broadcast against x)."""

    @staticmethod
    def forward(ctx, x, p, mask_shape, generator):
        # The keep decision is that of a float32 uniform >= p (p resolved to 2**-24, far below sampling
        # noise), taken from the uniform's uint32 word (tensora/kernels/dropout.py).
        words = uint32_words(resolve(generator), math.prod(mask_shape)).reshape(mask_shape)
        out, keep = dropout_apply(x, ctx.xp.asarray(words), p)
        ctx.save(keep)
        ctx.p = p
        return out

    @staticmethod
    def backward(ctx, g):
        (keep,) = ctx.saved
        return DropoutGrad.apply(g, keep, p=ctx.p)


class DropoutGrad(Op, name="dropout_grad"):
    """g * keep / (1 - p) in one kernel pass (tensora/kernels/dropout.py). Linear in g, so its
    gradient in g is itself with the same mask; the mask gets none."""

    @staticmethod
    def forward(ctx, g, keep, p):
        ctx.save(keep)
        ctx.p = p
        return dropout_grad(g, keep, p)

    @staticmethod
    def backward(ctx, gg):
        (keep,) = ctx.saved
        return DropoutGrad.apply(gg, keep, p=ctx.p), None


def _check(name: str, x: Tensor, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: dropout probability has to be between 0 and 1, but got {p}")
    if not x.dtype.is_floating_point:
        raise DTypeError(f"{name}: expected a floating input, got {x.dtype.name} (shape {fmt_shape(x.shape)})")


def _apply(x: Tensor, p: float, mask_shape: tuple, inplace: bool, generator: Generator | None) -> Tensor:
    if inplace:
        return update_inplace(x, lambda s: Dropout.apply(s, p=p, mask_shape=mask_shape, generator=generator))
    return Dropout.apply(x, p=p, mask_shape=mask_shape, generator=generator)


@register(method=False)
def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
            generator: Generator | None = None) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (identity unless training).

    >>> import tensora
    >>> _ = tensora.manual_seed(0)
    >>> tensora.dropout(tensora.ones(6), p=0.5).tolist()
    [2.0, 2.0, 2.0, 0.0, 0.0, 0.0]
    """
    _check("dropout", input, p)
    if not training or p == 0:
        return input
    return _apply(input, p, tuple(input.shape), inplace, generator)


def _feature_dropout(name: str, input: Tensor, p: float, training: bool, inplace: bool,
                     generator: Generator | None, spatial: int, unbatched: bool) -> Tensor:
    """Channel-wise dropout: one draw per (batch, channel), shared over the trailing `spatial` dims."""
    _check(name, input, p)
    ndims = (spatial + 1, spatial + 2)
    if input.ndim not in ndims:
        raise ShapeError(f"{name}: expected a {ndims[0]}-D or {ndims[1]}-D input, got shape {fmt_shape(input.shape)}")
    if not training or p == 0:
        return input
    # torch treats a 3-D input to dropout2d as batched 1-D (N, C, L), not as unbatched (C, H, W).
    keep = input.ndim - spatial if unbatched or input.ndim == ndims[1] else input.ndim - spatial + 1
    mask_shape = tuple(input.shape[:keep]) + (1,) * (input.ndim - keep)
    return _apply(input, p, mask_shape, inplace, generator)


@register(method=False)
def dropout1d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
              generator: Generator | None = None) -> Tensor:
    """Zero whole channels of (N, C, L) or (C, L) inputs with probability p, scale the rest by 1/(1-p)."""
    return _feature_dropout("dropout1d", input, p, training, inplace, generator, 1, True)


@register(method=False)
def dropout2d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
              generator: Generator | None = None) -> Tensor:
    """Zero whole channels of (N, C, H, W) inputs with probability p; a 3-D input is taken as (N, C, L)
    (torch's current rule), so use dropout1d for that and unsqueeze unbatched 2-D images."""
    return _feature_dropout("dropout2d", input, p, training, inplace, generator, 2, False)


@register(method=False)
def dropout3d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
              generator: Generator | None = None) -> Tensor:
    """Zero whole channels of (N, C, D, H, W) or (C, D, H, W) inputs with probability p."""
    return _feature_dropout("dropout3d", input, p, training, inplace, generator, 3, True)
