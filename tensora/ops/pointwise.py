"""Pointwise math: abs, log1p/expm1, rsqrt, sin/cos, erf, rounding, sign, clamp, maximum/minimum, lerp,
nan_to_num.

Transcendental ops return floats (integer inputs become the default float
dtype); value-preserving ops (abs, sign, clamp, rounding, maximum) keep
integer dtypes, as in PyTorch. float16/bfloat16 compute in float32 (see
elementwise.float_in). Rounding and sign have zero gradient. Every backward
is written in tensor ops, so second derivatives work.
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

from .. import dtypes as dt
from ..autograd.function import Op
from ..errors import DTypeError
from ..tensor import Tensor, make_tensor
from .elementwise import add_inplace_methods, exact_in, exact_pair, exp, float_out, pow, unary, where, zero_grad
from ..kernels.erf import erf_array
from .registry import export, register
from .shape import sum_to

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

# -- unary math -------------------------------------------------------------------------

class Abs(Op, name="abs"):
    """|x|; integers stay integers; the gradient at 0 is 0 (sign(x)), as PyTorch."""

    @staticmethod
    def forward(ctx, x):
        if x.dtype == np.bool_:
            raise DTypeError("abs: bool tensors are not supported")
        ctx.save(x)
        a, low = exact_in(x)
        return float_out(ctx.xp.abs(a), low)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g * sign(x)  # 0 at x == 0, as PyTorch


class Log1p(Op, name="log1p"):
    """log(1 + x), accurate for small x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            return unary(ctx.xp.log1p, x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g / (x + 1)


class Expm1(Op, name="expm1"):
    """exp(x) - 1, accurate for small x."""

    @staticmethod
    def forward(ctx, x):
        with np.errstate(over="ignore"):
            y = unary(ctx.xp.expm1, x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return g * (y + 1)


class Rsqrt(Op, name="rsqrt"):
    """1 / sqrt(x)."""

    @staticmethod
    def forward(ctx, x):
        xp = ctx.xp
        with np.errstate(divide="ignore", invalid="ignore"):
            y = unary(lambda a: 1 / xp.sqrt(a), x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return g * y * y * y * -0.5


class Reciprocal(Op, name="reciprocal"):
    """1 / x (integers give the default float dtype)."""

    @staticmethod
    def forward(ctx, x):
        with np.errstate(divide="ignore"):
            y = unary(lambda a: 1 / a, x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return -g * (y * y)  # torch's order (derivatives.yaml: -grad * (result * result)), same rounding


class Sin(Op, name="sin"):
    """Sine, in radians."""

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        return unary(ctx.xp.sin, x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g * cos(x)


class Cos(Op, name="cos"):
    """Cosine, in radians."""

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        return unary(ctx.xp.cos, x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return -g * sin(x)


class Erf(Op, name="erf"):
    """The error function, 2/sqrt(pi) * integral of exp(-t^2) from 0 to x (see erf_array)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        return unary(lambda a: erf_array(ctx.xp, a), x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g * exp(-(x * x)) * _TWO_OVER_SQRT_PI


# -- sign and rounding (zero gradient) ------------------------------------------------------

class Sign(Op, name="sign"):
    """-1, 0 or 1; 0 for nan and for -0.0, as PyTorch's (0 < x) - (x < 0)."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        if x.dtype == np.bool_:
            return x.copy()
        a, low = exact_in(x)
        y = (a > 0).astype(a.dtype)
        y -= a < 0
        return float_out(y, low)

    @staticmethod
    def backward(ctx, g):
        return zero_grad(g, ctx.shape, ctx.xp)


class Round(Op, name="round"):
    """floor / ceil / trunc / round half to even (with `decimals`); integers pass through unchanged."""

    @staticmethod
    def forward(ctx, x, mode, decimals=0):
        ctx.shape = x.shape
        if x.dtype == np.bool_:
            raise DTypeError(f"{mode}: bool tensors are not supported")
        if x.dtype.kind in "iu":
            if decimals:
                raise DTypeError(f"round: decimals={decimals} needs a floating tensor, got {x.dtype}")
            return x.copy()
        a, low = exact_in(x)
        xp = ctx.xp
        if mode == "round":
            # x * 10^d, round half to even, / 10^d: PyTorch's formula, and NumPy's.
            y = xp.round(a, decimals)
        else:
            y = getattr(xp, mode)(a)
        return float_out(y, low)

    @staticmethod
    def backward(ctx, g):
        return zero_grad(g, ctx.shape, ctx.xp)


class Frac(Op, name="frac"):
    """x - trunc(x), with the sign of x; floating tensors only, as in PyTorch."""

    @staticmethod
    def forward(ctx, x):
        if x.dtype.kind in "biu":
            raise DTypeError(f"frac: needs a floating tensor, got {dt.get_dtype(x.dtype).name}")
        a, low = exact_in(x)
        with np.errstate(invalid="ignore"):  # inf - inf: frac(+-inf) is nan
            return float_out(a - ctx.xp.trunc(a), low)

    @staticmethod
    def backward(ctx, g):
        return g


# -- clamp, maximum, minimum, lerp -----------------------------------------------------

class Clamp(Op, name="clamp"):
    """min(max(x, lo), hi); lo or hi may be None, a scalar or a tensor (broadcast).

    Gradients as PyTorch's clamp_backward: x gets it where lo <= x <= hi (also at
    the bounds), lo where x < lo, hi where x > hi; where hi < lo the result is hi
    and only hi gets it.
    """

    @staticmethod
    def forward(ctx, x, lo, hi):
        xp = ctx.xp
        ctx.save(x, lo, hi)
        y, low = exact_in(x)
        if lo is not None:
            y = xp.maximum(y, exact_in(lo)[0])
        if hi is not None:
            y = xp.minimum(y, exact_in(hi)[0])
        return float_out(y, low)

    @staticmethod
    def backward(ctx, g):
        x, lo, hi = ctx.saved
        need = ctx.needs_input_grad
        zero = 0
        gx = glo = ghi = None
        if need[0]:
            keep = x >= lo if lo is not None else None
            if hi is not None:
                keep = x <= hi if keep is None else keep & (x <= hi)
            gx = sum_to(where(keep, g, zero), x.shape)
        inverted = (hi < lo) if lo is not None and hi is not None else None
        if need[1]:
            low_side = x < lo if inverted is None else (x < lo) & ~inverted
            glo = sum_to(where(low_side, g, zero), lo.shape)
        if need[2]:
            high_side = x > hi if inverted is None else (x > hi) | inverted
            ghi = sum_to(where(high_side, g, zero), hi.shape)
        return gx, glo, ghi


def _bound(v: Any, target: dt.DType) -> Any:
    if v is None:
        return None
    if isinstance(v, Tensor):
        return v if v.dtype is target else v.to(target)
    return float(v) if target.is_floating_point else int(v)


@register(method=("clamp", "clip"))
def clamp(input: Tensor, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002 - torch's names
    """Limit input to [min, max]; bounds are scalars or tensors (broadcast), either may be None.

    >>> import tensora
    >>> tensora.tensor([-2.0, 0.5, 3.0]).clamp(0, 1)
    tensor([0.0000, 0.5000, 1.0000])
    """
    if min is None and max is None:
        raise ValueError("clamp: at least one of 'min' or 'max' must not be None")
    target = dt.result_type(*(v for v in (input, min, max) if v is not None))
    x = input if input.dtype is target else input.to(target)
    return Clamp.apply(x, _bound(min, target), _bound(max, target))


register("clip", method=False)(clamp)


@register()
def clamp_min(input: Tensor, min: Any) -> Tensor:  # noqa: A002
    """max(input, min) with clamp's gradient rule."""
    return clamp(input, min=min)


@register()
def clamp_max(input: Tensor, max: Any) -> Tensor:  # noqa: A002
    """min(input, max) with clamp's gradient rule."""
    return clamp(input, max=max)


def _extremum(ctx: Any, a: Any, b: Any, largest: bool) -> Any:
    ctx.save(a, b)
    x, y, low = exact_pair(a, b)
    return float_out(ctx.xp.maximum(x, y) if largest else ctx.xp.minimum(x, y), low)


def _extremum_grads(ctx: Any, g: Tensor, largest: bool) -> tuple:
    """Each input gets g where it wins, g/2 on ties, 0 where it loses (PyTorch's rule)."""
    a, b = ctx.saved
    need = ctx.needs_input_grad
    half = g * 0.5

    def share(mine: Tensor, other: Any) -> Tensor:
        loses = mine < other if largest else mine > other
        return where(loses, 0, where(mine == other, half, g))

    ga = sum_to(share(a, b), a.shape) if need[0] else None
    gb = sum_to(share(b, a), b.shape) if need[1] else None
    return ga, gb


class Maximum(Op, name="maximum"):
    promote = True

    @staticmethod
    def forward(ctx, a, b):
        return _extremum(ctx, a, b, True)

    @staticmethod
    def backward(ctx, g):
        return _extremum_grads(ctx, g, True)


class Minimum(Op, name="minimum"):
    promote = True

    @staticmethod
    def forward(ctx, a, b):
        return _extremum(ctx, a, b, False)

    @staticmethod
    def backward(ctx, g):
        return _extremum_grads(ctx, g, False)


@register()
def maximum(input: Tensor, other: Any) -> Tensor:
    """Elementwise max (nan if either is nan), broadcast and promoted."""
    return Maximum.apply(input, other)


@register()
def minimum(input: Tensor, other: Any) -> Tensor:
    """Elementwise min (nan if either is nan), broadcast and promoted."""
    return Minimum.apply(input, other)


class Lerp(Op, name="lerp"):
    """start + weight * (end - start), with PyTorch's formula: from `end` when |weight| >= 0.5."""

    promote = True

    @staticmethod
    def forward(ctx, start, end, weight):
        xp = ctx.xp
        s, e, low = exact_pair(start, end)
        w = exact_in(weight)[0]
        d = e - s
        if not isinstance(weight, xp.ndarray):  # a number
            ctx.save(start, end, None)
            ctx.weight = float(weight)
            y = s + w * d if -0.5 < ctx.weight < 0.5 else e - d * (1 - w)
        else:
            ctx.save(start, end, weight)
            y = xp.where(xp.abs(w) < 0.5, s + w * d, e - d * (1 - w))
        return float_out(y, low)

    @staticmethod
    def backward(ctx, g):
        start, end, weight = ctx.saved
        w = ctx.weight if weight is None else weight
        need = ctx.needs_input_grad
        gs = sum_to(g * (1 - w), start.shape) if need[0] else None
        ge = sum_to(g * w, end.shape) if need[1] else None
        gw = sum_to(g * (end - start), weight.shape) if need[2] else None
        return gs, ge, gw


@register()
def lerp(input: Tensor, end: Any, weight: Any) -> Tensor:
    """input + weight * (end - input); weight a scalar or a tensor (broadcast)."""
    return Lerp.apply(input, end, weight)


# -- public names ------------------------------------------------------------------------

abs = export(Abs, method=("abs", "absolute", "__abs__"))  # noqa: A001 - torch.abs
register("absolute", method=False)(abs)
log1p = export(Log1p)
expm1 = export(Expm1)
rsqrt = export(Rsqrt)
reciprocal = export(Reciprocal)


def _rtruediv(self: Tensor, other: Any) -> Tensor:
    """other / self as torch's Tensor.__rtruediv__ computes it: self.reciprocal() * other, so that
    2.0 / x rounds 1 / x first, exactly as torch does (binary_operator's default is div(other, self))."""
    return reciprocal(self) * other


Tensor.__rtruediv__ = _rtruediv
sin = export(Sin)
cos = export(Cos)
erf = export(Erf)
sign = export(Sign)
frac = export(Frac)


def _rounding(mode: str, doc: str) -> Any:
    def fn(input: Tensor) -> Tensor:
        return Round.apply(input, mode=mode)
    fn.__name__ = fn.__qualname__ = mode
    fn.__doc__ = doc
    return register(mode)(fn)


floor = _rounding("floor", "Largest integer <= x (integers unchanged); zero gradient.")
ceil = _rounding("ceil", "Smallest integer >= x (integers unchanged); zero gradient.")
trunc = _rounding("trunc", "x rounded toward zero (integers unchanged); zero gradient.")
register("fix")(trunc)


@register()
def round(input: Tensor, decimals: int = 0) -> Tensor:  # noqa: A001 - torch.round
    """Round half to even, to `decimals` places (negative: to tens, hundreds...); zero gradient."""
    return Round.apply(input, mode="round", decimals=int(decimals))


@register()
def square(input: Tensor) -> Tensor:
    """input * input (bool squares to int64, as in PyTorch)."""
    return pow(input, 2)


# -- nan_to_num ------------------------------------------------------------------------

class NanToNum(Op, name="nan_to_num"):
    """nan, +inf and -inf replaced by given values; the gradient passes where x was finite, 0 elsewhere
    (torch's derivatives.yaml: grad * isfinite(self)). Integer and bool inputs come back as copies."""

    @staticmethod
    def forward(ctx, x, nan, posinf, neginf):
        xp = ctx.xp
        if x.dtype.kind in "biu":
            return x.copy()
        finite = xp.isfinite(x)
        if ctx.needs_input_grad:
            ctx.finite = finite
        info = ml_dtypes.finfo(x.dtype)  # numpy's finfo knows no bfloat16 / float8
        # Each replacement is cast to x's dtype first, as torch does: nan=1e10 is inf in float16.
        fills = [xp.asarray(info.max if posinf is None else posinf).astype(x.dtype),
                 xp.asarray(info.min if neginf is None else neginf).astype(x.dtype),
                 xp.asarray(nan).astype(x.dtype)]
        out = xp.where(finite, x, xp.where(x > 0, fills[0], fills[1]))
        return xp.where(xp.isnan(x), fills[2], out)

    @staticmethod
    def backward(ctx, g):
        return where(make_tensor(ctx.finite, g.device), g, 0)


def _replacement(name: str, value: Any, optional: bool) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"nan_to_num(): argument '{name}' must be a number, not {type(value).__name__}")
    return float(value)


@register()
def nan_to_num(input: Tensor, nan: float = 0.0, posinf: float | None = None,
               neginf: float | None = None) -> Tensor:
    """Replace nan by `nan`, +inf by `posinf`, -inf by `neginf` (defaults: 0, and the dtype's largest
    and lowest finite values); gradient 1 where input was finite, 0 where a value was replaced.

    >>> import tensora
    >>> tensora.tensor([float("nan"), float("inf"), -1.0]).nan_to_num(posinf=9.0).tolist()
    [0.0, 9.0, -1.0]
    """
    return NanToNum.apply(input, nan=_replacement("nan", nan, False), posinf=_replacement("posinf", posinf, True),
                          neginf=_replacement("neginf", neginf, True))


add_inplace_methods(abs, log1p, expm1, rsqrt, reciprocal, sin, cos, erf, sign, frac, floor, ceil, trunc, round,
                    square, clamp, clamp_min, clamp_max, lerp, nan_to_num)
Tensor.absolute_ = Tensor.abs_
Tensor.clip_ = Tensor.clamp_
Tensor.fix_ = Tensor.trunc_
