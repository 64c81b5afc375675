"""Activations: sigmoid, tanh, relu, leaky_relu, elu, gelu, silu, softplus, mish.

Each matches PyTorch's formula and its gradient conventions (relu's gradient is
0 at 0; elu's is alpha at 0; softplus returns x above `threshold`). The
functional ones take `inplace=` like torch.nn.functional; nn.functional
re-exports them. float16/bfloat16 compute in float32 and integers become the
default float dtype (relu keeps integers). Backward rules are tensor ops, so
second derivatives work.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..autograd.function import Op
from ..errors import DTypeError
from ..kernels.gelu import gelu_backward, gelu_forward
from ..tensor import Tensor
from .elementwise import add_inplace_methods, exact_in, exp, float_in, float_out, inplace_method, unary, where
from .registry import register

_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_C = 0.044715


def _maybe_inplace(fn: Any, input: Tensor, inplace: bool, name: str, **params: Any) -> Tensor:
    if inplace:
        return inplace_method(lambda t: fn(t, **params), name)(input)
    return fn(input, **params)


class Sigmoid(Op, name="sigmoid"):
    @staticmethod
    def forward(ctx, x):
        xp = ctx.xp
        with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0 gives exactly 0, no nan
            y = unary(lambda a: 1 / (1 + xp.exp(-a)), x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return g * y * (1 - y)


class Tanh(Op, name="tanh"):
    @staticmethod
    def forward(ctx, x):
        y = unary(ctx.xp.tanh, x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return g * (1 - y * y)


_ZEROS: dict = {}


def _zero(xp: Any, dtype: Any) -> Any:
    """A 0-d zero array of `dtype`, made once per array module: a ufunc converts a scalar operand
    to one on every call, which costs a third of relu on 16 elements."""
    key = (xp, dtype)
    z = _ZEROS.get(key)
    if z is None:
        z = _ZEROS[key] = xp.zeros((), dtype)
    return z


# The CPU dtypes relu computes in directly (no 16-bit detour, no bool to refuse), with their zero:
# one dict lookup decides the common case.
_NP_ZEROS = {np.dtype(t): _zero(np, np.dtype(t))
             for t in (np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8)}


class Relu(Op, name="relu"):
    @staticmethod
    def forward(ctx, x):
        xp = ctx.xp
        # maximum(0, x) keeps nan and -0.0 as PyTorch's relu does, ~6x faster than where().
        zero = _NP_ZEROS.get(x.dtype) if xp is np and x.ndim else None
        if zero is not None:
            y = np.maximum(zero, x)
        else:
            if x.dtype.kind == "b":
                raise DTypeError("relu: bool tensors are not supported")
            a, low = exact_in(x)
            y = float_out(xp.maximum(_zero(xp, a.dtype), a), low)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return ReluGrad.apply(g, y)


class ReluGrad(Op, name="relu_grad"):
    """g where relu's output y > 0, else 0: PyTorch's threshold_backward (0 at 0), as one op.

    g * (y > 0) runs ~10x faster than where(y <= 0, 0, g) on maps of mixed signs (where's loop
    branches per element and mispredicts half the time; ~0.2 ms of the digits CNN's 5 ms step),
    but inf * 0 is NaN: a product that is not all finite is redone exactly with where(). Linear in
    g, so its gradient in g is itself with the same y; y, a mask here, gets none.
    """

    @staticmethod
    def forward(ctx, g, y):
        xp = ctx.xp
        ctx.save(y)
        keep = y > 0
        out = xp.multiply(g, keep, dtype=g.dtype)
        if not bool(xp.isfinite(out).all()):
            out = xp.where(keep, g, xp.zeros((), g.dtype))
        return out

    @staticmethod
    def backward(ctx, gg):
        (y,) = ctx.saved
        return ReluGrad.apply(gg, y), None


class LeakyRelu(Op, name="leaky_relu"):
    @staticmethod
    def forward(ctx, x, slope):
        ctx.slope = slope
        ctx.save(x)
        a, low = float_in(x)
        return float_out(ctx.xp.where(a > 0, a, a * slope), low)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return where(x > 0, g, g * ctx.slope)


class Elu(Op, name="elu"):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        ctx.save(x)
        a, low = float_in(x)
        with np.errstate(over="ignore"):
            return float_out(ctx.xp.where(a > 0, a, alpha * ctx.xp.expm1(a)), low)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        # alpha * exp(x) for x <= 0 (so alpha at 0, as PyTorch's elu_backward).
        return where(x > 0, g, g * exp(where(x > 0, 0, x)) * ctx.alpha)


class Gelu(Op, name="gelu"):
    """x * Phi(x) with the exact normal CDF (erf) or PyTorch's tanh approximation (tensora/kernels/gelu.py)."""

    @staticmethod
    def forward(ctx, x, approximate):
        ctx.approximate = approximate
        ctx.save(x)
        a, low = float_in(x)
        return float_out(gelu_forward(a, approximate, ctx.xp), low)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return GeluGrad.apply(g, x, approximate=ctx.approximate)


class GeluGrad(Op, name="gelu_grad"):
    """g * gelu'(x) in one kernel pass, as its own op so that double backward still works.

    Linear in g, so its gradient in g is itself with the same x; its gradient in x is
    g * gelu''(x), written in tensor ops:
      exact: gelu'' = phi(x) (2 - x^2), phi the normal density;
      tanh:  gelu'' = (1 - t^2) (u' - x t u'^2 + 3 k c x^2), t = tanh(u), u = k (x + c x^3),
             u' = k (1 + 3 c x^2), k = sqrt(2/pi), c = 0.044715.
    """

    @staticmethod
    def forward(ctx, g, x, approximate):
        ctx.approximate = approximate
        ctx.save(g, x)
        a, low = float_in(x)
        b, _ = float_in(g)
        return float_out(gelu_backward(a, b, approximate, ctx.xp), low)

    @staticmethod
    def backward(ctx, gg):
        g, x = ctx.saved
        x2 = x * x
        if ctx.approximate == "tanh":
            du = (1 + x2 * (3 * _GELU_C)) * _SQRT_2_OVER_PI
            t = tanh((x + x2 * x * _GELU_C) * _SQRT_2_OVER_PI)
            d2 = (1 - t * t) * (du - x * t * du * du + x2 * (3 * _SQRT_2_OVER_PI * _GELU_C))
        else:
            d2 = exp(x2 * -0.5) * _INV_SQRT_2PI * (2 - x2)
        return GeluGrad.apply(gg, x, approximate=ctx.approximate), gg * g * d2


class Silu(Op, name="silu"):
    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        xp = ctx.xp
        with np.errstate(over="ignore"):
            return unary(lambda a: a / (1 + xp.exp(-a)), x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        s = sigmoid(x)
        return g * s * (1 + x * (1 - s))


class Softplus(Op, name="softplus"):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (PyTorch's formula)."""

    @staticmethod
    def forward(ctx, x, beta, threshold):
        ctx.beta, ctx.threshold = beta, threshold
        ctx.save(x)
        xp = ctx.xp
        a, low = float_in(x)
        b = a * beta
        with np.errstate(over="ignore"):  # overflow only where beta x > threshold, which is not used
            y = xp.where(b > threshold, a, xp.log1p(xp.exp(b)) / beta)
        return float_out(y, low)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        b = x * ctx.beta
        return where(b > ctx.threshold, g, g * sigmoid(b))


class Mish(Op, name="mish"):
    """x * tanh(softplus(x)) (PyTorch's formula, log1p(exp(x)) without a threshold)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        xp = ctx.xp
        with np.errstate(over="ignore"):  # exp(x) = inf gives tanh(inf) = 1, the right limit
            return unary(lambda a: a * xp.tanh(xp.log1p(xp.exp(a))), x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        t = tanh(softplus(x))
        return g * (t + x * sigmoid(x) * (1 - t * t))


# -- public functions -----------------------------------------------------------------------

@register()
def sigmoid(input: Tensor) -> Tensor:
    """1 / (1 + exp(-x)), exactly 0 or 1 in the far tails (no overflow nan)."""
    return Sigmoid.apply(input)


@register()
def tanh(input: Tensor) -> Tensor:
    """Hyperbolic tangent."""
    return Tanh.apply(input)


@register()
def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(x, 0); the gradient at 0 is 0. Integers stay integers."""
    return _maybe_inplace(Relu.apply, input, inplace, "relu_") if inplace else Relu.apply(input)


@register(method=False)
def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x for x > 0, else negative_slope * x."""
    return _maybe_inplace(LeakyRelu.apply, input, inplace, "leaky_relu_", slope=float(negative_slope))


@register(method=False)
def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x for x > 0, else alpha * (exp(x) - 1)."""
    return _maybe_inplace(Elu.apply, input, inplace, "elu_", alpha=float(alpha))


@register(method=False)
def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """x * Phi(x): approximate="none" uses erf, "tanh" PyTorch's tanh formula."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return Gelu.apply(input, approximate=approximate)


@register(method=False)
def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """x * sigmoid(x) (swish)."""
    return _maybe_inplace(Silu.apply, input, inplace, "silu_")


@register(method=False)
def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + exp(beta x)) / beta; x where beta x > threshold."""
    return Softplus.apply(input, beta=float(beta), threshold=float(threshold))


@register(method=False)
def mish(input: Tensor, inplace: bool = False) -> Tensor:
    """x * tanh(softplus(x))."""
    return _maybe_inplace(Mish.apply, input, inplace, "mish_")


def _inplace_fn(fn: Any) -> Any:
    def apply(input: Tensor, *args: Any, **kw: Any) -> Tensor:
        return inplace_method(fn, fn.__name__ + "_")(input, *args, **kw)
    apply.__name__ = apply.__qualname__ = fn.__name__ + "_"
    apply.__doc__ = f"In-place {fn.__name__}()."
    return apply


add_inplace_methods(sigmoid, tanh, relu)
register("relu_", method=False)(_inplace_fn(relu))
register("elu_", method=False)(_inplace_fn(elu))
register("leaky_relu_", method=False)(_inplace_fn(leaky_relu))
