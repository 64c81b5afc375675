"""Elementwise ops: arithmetic, math functions, activations, comparisons.

Binary ops broadcast and promote like PyTorch (`Op.promote`), and their
backward sums the gradient back to each input's shape with `sum_to`. Each
backward is written in tensor ops, so gradients of gradients work.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import dtypes as dt
from ..autograd.function import Op
from ..tensor import Tensor
from .inplace import update_inplace
from .registry import export, register
from .shape import sum_to


def _shape(a: Any) -> tuple:
    return np.shape(a)


# -- arithmetic ---------------------------------------------------------------------

class Add(Op, name="add"):
    promote = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape(a), _shape(b))
        return a + b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        need = ctx.needs_input_grad
        return (sum_to(g, sa) if need[0] else None), (sum_to(g, sb) if need[1] else None)


class Sub(Op, name="sub"):
    promote = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape(a), _shape(b))
        return a - b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        need = ctx.needs_input_grad
        return (sum_to(g, sa) if need[0] else None), (sum_to(-g, sb) if need[1] else None)


class Mul(Op, name="mul"):
    promote = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.save(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        need = ctx.needs_input_grad
        return (sum_to(g * b, a.shape) if need[0] else None), (sum_to(g * a, b.shape) if need[1] else None)


class Div(Op, name="div"):
    promote = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.save(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        need = ctx.needs_input_grad
        ga = sum_to(g / b, a.shape) if need[0] else None
        gb = sum_to(-g * a / (b * b), b.shape) if need[1] else None
        return ga, gb


class Neg(Op, name="neg"):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class Pow(Op, name="pow"):
    promote = True

    @staticmethod
    def forward(ctx, a, b):
        out = a ** b
        ctx.save(a, b, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved
        need = ctx.needs_input_grad
        ga = sum_to(g * b * a ** (b - 1), a.shape) if need[0] else None
        gb = None
        if need[1]:
            # d/db a^b = a^b log a; define it as 0 where a == 0 (PyTorch does the same).
            safe = where(a > 0, a, ones_scalar(a))
            gb = sum_to(g * out * log(safe) * (a > 0), b.shape)
        return ga, gb


def ones_scalar(like: Tensor) -> Tensor:
    """A 0-d one of `like`'s dtype and device."""
    return Tensor(np.ones((), like._data.dtype), device=like.device).to(like.device)


class Exp(Op, name="exp"):
    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.exp(x)
        ctx.save(y)  # backward needs exp(x); saving y avoids recomputing it
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return g * y


class Log(Op, name="log"):
    @staticmethod
    def forward(ctx, x):
        ctx.save(x)
        return ctx.xp.log(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g / x


class Sqrt(Op, name="sqrt"):
    @staticmethod
    def forward(ctx, x):
        y = ctx.xp.sqrt(x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return g / (2 * y)


class Where(Op, name="where_"):
    """cond ? a : b with a and b promoted together (cond carries no gradient)."""

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save(cond)
        ctx.shapes = (_shape(a), _shape(b))
        return ctx.xp.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved
        sa, sb = ctx.shapes
        zero = g * 0
        need = ctx.needs_input_grad
        ga = sum_to(where(cond, g, zero), sa) if need[1] else None
        gb = sum_to(where(cond, zero, g), sb) if need[2] else None
        return None, ga, gb


@register()
def where(condition: Tensor, input: Any, other: Any) -> Tensor:
    """Elements of `input` where `condition`, else of `other` (broadcast, promoted)."""
    target = dt.result_type(*(v for v in (input, other)))
    a = input.to(target) if isinstance(input, Tensor) else Tensor(np.asarray(input, dtype=target.np_dtype))
    b = other.to(target) if isinstance(other, Tensor) else Tensor(np.asarray(other, dtype=target.np_dtype))
    cond = condition if isinstance(condition, Tensor) else Tensor(np.asarray(condition, dtype=bool))
    if a.device != cond.device:
        a, b = a.to(cond.device), b.to(cond.device)
    return Where.apply(cond.bool() if cond.dtype is not dt.bool_ else cond, a, b)


# -- public functions and operators ------------------------------------------------

@register()
def add(input: Any, other: Any, *, alpha: Any = 1) -> Tensor:
    """input + alpha * other, broadcast and type-promoted."""
    return Add.apply(input, other if alpha == 1 else mul(other, alpha))


@register(method=("sub", "subtract"))
def sub(input: Any, other: Any, *, alpha: Any = 1) -> Tensor:
    return Sub.apply(input, other if alpha == 1 else mul(other, alpha))


@register(method=("mul", "multiply"))
def mul(input: Any, other: Any) -> Tensor:
    return Mul.apply(input, other)


def _true_div_inputs(a: Any, b: Any) -> tuple:
    # Integer / integer divides as floats (true division), as in PyTorch.
    if dt.result_type(a, b).category != dt.FLOATING:
        f = dt.get_default_dtype()
        a = a.to(f) if isinstance(a, Tensor) else float(a)
        b = b.to(f) if isinstance(b, Tensor) else float(b)
    return a, b


@register(method=("div", "divide", "true_divide"))
def div(input: Any, other: Any, *, rounding_mode: str | None = None) -> Tensor:
    """input / other; rounding_mode "trunc" or "floor" rounds the quotient (no gradient then)."""
    if rounding_mode is None:
        return Div.apply(*_true_div_inputs(input, other))
    if rounding_mode not in ("trunc", "floor"):
        raise ValueError(f"div: rounding_mode must be None, 'trunc' or 'floor', got {rounding_mode!r}")
    return RoundDiv.apply(input, other, mode=rounding_mode)


class RoundDiv(Op, name="round_div"):
    promote = True

    @staticmethod
    def forward(ctx, a, b, mode):
        xp = ctx.xp
        if np.asarray(a).dtype.kind in "iub":
            if mode == "floor":
                return a // b
            q = xp.abs(a) // xp.abs(b)
            return xp.where((a < 0) != (b < 0), -q, q).astype(np.result_type(a, b))
        q = a / b
        return (xp.floor(q) if mode == "floor" else xp.trunc(q)).astype(q.dtype)

    @staticmethod
    def backward(ctx, g):
        return g * 0, None


@register()
def pow(input: Any, exponent: Any) -> Tensor:  # noqa: A001 - torch.pow
    return Pow.apply(input, exponent)


def _rev(fn: Any) -> Any:
    def reflected(self: Tensor, other: Any) -> Tensor:
        return fn(other, self)
    return reflected


Tensor.__add__ = add
Tensor.__radd__ = _rev(add)
Tensor.__sub__ = sub
Tensor.__rsub__ = _rev(sub)
Tensor.__mul__ = mul
Tensor.__rmul__ = _rev(mul)
Tensor.__truediv__ = div
Tensor.__rtruediv__ = _rev(div)
Tensor.__pow__ = pow
Tensor.__rpow__ = _rev(pow)


def _inplace(fn: Any) -> Any:
    def method(self: Tensor, other: Any, **kw: Any) -> Tensor:
        return update_inplace(self, lambda s: fn(s, other, **kw), (other,))
    method.__name__ = fn.__name__ + "_"
    return method


for _name, _fn in [("add", add), ("sub", sub), ("mul", mul), ("div", div), ("pow", pow)]:
    setattr(Tensor, _name + "_", _inplace(_fn))
Tensor.__iadd__ = Tensor.add_
Tensor.__isub__ = Tensor.sub_
Tensor.__imul__ = Tensor.mul_
Tensor.__itruediv__ = Tensor.div_


# -- comparisons (no gradient) -------------------------------------------------------

class Compare(Op, name="compare"):
    promote = True

    @staticmethod
    def forward(ctx, a, b, op):
        return getattr(ctx.xp, op)(a, b)

    @staticmethod
    def backward(ctx, g):
        return None, None


def _comparison(np_name: str, *names: str) -> Any:
    def fn(input: Any, other: Any) -> Tensor:
        return Compare.apply(input, other, op=np_name)
    fn.__name__ = names[0]
    fn.__doc__ = f"Elementwise {np_name} as a bool tensor (broadcast, promoted)."
    register(names[0], method=names)(fn)
    return fn


eq = _comparison("equal", "eq")
ne = _comparison("not_equal", "ne")
lt = _comparison("less", "lt", "less")
le = _comparison("less_equal", "le", "less_equal")
gt = _comparison("greater", "gt", "greater")
ge = _comparison("greater_equal", "ge", "greater_equal")
Tensor.__eq__ = eq
Tensor.__ne__ = ne
Tensor.__lt__ = lt
Tensor.__le__ = le
Tensor.__gt__ = gt
Tensor.__ge__ = ge


neg = export(Neg, method=("neg", "negative", "__neg__"))
exp = export(Exp)
log = export(Log)
sqrt = export(Sqrt)
