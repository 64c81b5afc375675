"""The activations torch.nn.functional has that tensora.ops does not: hardtanh/relu6,
hardsigmoid, hardswish, logsigmoid, selu, celu, threshold, softsign, tanhshrink,
hardshrink, softshrink, softmin, glu, prelu.

Piecewise ones are small ops whose backward masks the gradient exactly where
PyTorch's *_backward kernels do (hardtanh passes it only strictly inside
(min_val, max_val), so relu6 after relu gives 0 at 0); ops with an exp branch
never evaluate it where it could overflow into a nan gradient. The rest are
compositions of tensor ops with PyTorch's own formulas. Backwards are tensor
ops, so second derivatives work.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

from ..autograd.function import Op
from ..ops.activation import elu, sigmoid, tanh
from ..ops.elementwise import exp, float_in, float_out, inplace_method, where
from ..ops.softmax import softmax as _softmax
from ..tensor import Tensor
from ..amp import autocast_op

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _maybe_inplace(fn: Callable, input: Tensor, inplace: bool, name: str, *args: Any) -> Tensor:
    return inplace_method(fn, name)(input, *args) if inplace else fn(input, *args)


class Hardtanh(Op, name="hardtanh"):
    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.lo, ctx.hi = lo, hi
        ctx.save(x)
        a, low = float_in(x)
        return float_out(ctx.xp.clip(a, lo, hi), low)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return where((x > ctx.lo) & (x < ctx.hi), g, 0)  # torch's hardtanh_backward: 0 on the edges


class Hardsigmoid(Op, name="hardsigmoid"):
    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        a, low = float_in(x)
        return float_out(ctx.xp.clip(a + 3, 0, 6) / 6, low)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return where((x > -3) & (x < 3), g / 6, 0)


class Hardswish(Op, name="hardswish"):
    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        a, low = float_in(x)
        return float_out(a * ctx.xp.clip(a + 3, 0, 6) / 6, low)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        # torch's hardswish_backward: 0 up to -3, x / 3 + 1/2 strictly inside, 1 from 3 on.
        return where(x <= -3, 0, where(x < 3, g * (x / 3 + 0.5), g))


class LogSigmoid(Op, name="logsigmoid"):
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)), finite for any x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        xp = ctx.xp
        a, low = float_in(x)
        return float_out(xp.minimum(a, 0) - xp.log1p(xp.exp(-xp.abs(a))), low)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g * sigmoid(-x)


class Celu(Op, name="celu"):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        ctx.save(x)
        xp = ctx.xp
        a, low = float_in(x)
        return float_out(xp.where(a > 0, a, alpha * xp.expm1(xp.minimum(a, 0) / alpha)), low)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return where(x > 0, g, g * exp(where(x > 0, 0, x) / ctx.alpha))


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:
    """x clamped to [min_val, max_val]; the gradient is 0 at and beyond the edges, as in PyTorch."""
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val ({min_val}) cannot be greater than max_val ({max_val})")
    return _maybe_inplace(lambda t: Hardtanh.apply(t, lo=float(min_val), hi=float(max_val)), input, inplace,
                          "hardtanh_")


def hardtanh_(input: Tensor, min_val: float = -1.0, max_val: float = 1.0) -> Tensor:
    """In-place hardtanh."""
    return hardtanh(input, min_val, max_val, inplace=True)


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    """min(max(x, 0), 6): hardtanh(x, 0, 6)."""
    return hardtanh(input, 0.0, 6.0, inplace)


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    """relu6(x + 3) / 6."""
    return _maybe_inplace(Hardsigmoid.apply, input, inplace, "hardsigmoid_")


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    """x * relu6(x + 3) / 6 (MobileNetV3)."""
    return _maybe_inplace(Hardswish.apply, input, inplace, "hardswish_")


def logsigmoid(input: Tensor) -> Tensor:
    """log(1 / (1 + exp(-x))), computed without overflow."""
    return LogSigmoid.apply(input)


def selu(input: Tensor, inplace: bool = False) -> Tensor:
    """scale * elu(x, alpha) with the self-normalising constants of Klambauer et al. (2017)."""
    return _maybe_inplace(lambda t: elu(t, _SELU_ALPHA) * _SELU_SCALE, input, inplace, "selu_")


def celu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""
    if alpha == 0:
        raise ValueError("celu: alpha must not be zero")
    return _maybe_inplace(lambda t: Celu.apply(t, alpha=float(alpha)), input, inplace, "celu_")


def threshold(input: Tensor, threshold: float, value: float, inplace: bool = False) -> Tensor:
    """x where x > threshold, else value."""
    return _maybe_inplace(lambda t: where(t > threshold, t, value), input, inplace, "threshold_")


_threshold = threshold  # threshold_'s own argument is called threshold too


def threshold_(input: Tensor, threshold: float, value: float) -> Tensor:
    """In-place threshold."""
    return _threshold(input, threshold, value, inplace=True)


def softsign(input: Tensor) -> Tensor:
    """x / (1 + |x|)."""
    return input / (input.abs() + 1)


def tanhshrink(input: Tensor) -> Tensor:
    """x - tanh(x)."""
    return input - tanh(input)


def hardshrink(input: Tensor, lambd: float = 0.5) -> Tensor:
    """x where |x| > lambd, else 0."""
    return where(input.abs() > lambd, input, 0)


def softshrink(input: Tensor, lambd: float = 0.5) -> Tensor:
    """x - lambd above lambd, x + lambd below -lambd, 0 between."""
    if lambd < 0:
        raise ValueError(f"softshrink: lambd must be non-negative, got {lambd}")
    return where(input > lambd, input - lambd, where(input < -lambd, input + lambd, 0))


def _softmax_dim(input: Tensor, dim: int | None, name: str) -> int:
    if dim is not None:
        return dim
    # PyTorch's legacy implicit choice, with its warning.
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call to include "
                  "dim=X as an argument.", stacklevel=3)
    return 0 if input.ndim in (0, 1, 3) else 1


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """exp(x) / sum(exp(x)) along `dim` (torch.nn.functional.softmax's signature)."""
    return _softmax(input, _softmax_dim(input, dim, "softmax"), dtype=dtype)


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """log(softmax(x)) along `dim`, computed stably."""
    return input.log_softmax(_softmax_dim(input, dim, "log_softmax"), dtype=dtype)


def softmin(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """softmax(-x) along `dim`."""
    if dtype is not None:
        input = input.to(dtype)
    return _softmax(-input, _softmax_dim(input, dim, "softmin"))


def glu(input: Tensor, dim: int = -1) -> Tensor:
    """a * sigmoid(b) for the two halves a, b of `input` along `dim` (gated linear unit)."""
    if input.ndim == 0 or input.shape[dim] % 2:
        raise ValueError(f"glu: halving dimension {dim} must be even, got input shape {tuple(input.shape)}")
    a, b = input.chunk(2, dim)
    return a * sigmoid(b)


@autocast_op("prelu")
def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """x where x > 0, else weight * x; weight has 1 element or one per channel (dim 1)."""
    if weight.numel() != 1:
        if input.ndim < 2 or input.shape[1] != weight.numel():
            raise ValueError(f"prelu: weight has {weight.numel()} elements, expected 1 or the number of "
                             f"channels (dim 1) of an input of shape {tuple(input.shape)}")
        weight = weight.reshape((-1,) + (1,) * (input.ndim - 2))
    elif weight.ndim:
        weight = weight.reshape(())
    return where(input > 0, input, weight * input)

