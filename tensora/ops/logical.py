"""Ops without gradients on truth values and bits: logical_*, bitwise_* (& | ^ ~), isnan/isinf/isfinite.

Logical ops take any dtype (nonzero is True) and return bool. Bitwise ops take
bool and integer tensors only, promoted like PyTorch (`int8 & True` is int8);
on bool they are the logical ops. The classification ops return bool and are
all False/True for integer inputs, which can hold no nan or inf.
"""

from __future__ import annotations

from typing import Any

from .. import dtypes as dt
from ..autograd.function import Op
from ..errors import DTypeError
from ..tensor import Tensor
from .elementwise import add_inplace_methods, inplace_method
from .registry import binary_operator, register


def _truth(a: Any, xp: Any) -> Any:
    return a if getattr(a, "dtype", None) == bool else xp.not_equal(a, 0)


class Logical(Op, name="logical"):
    @staticmethod
    def forward(ctx, a, b, op):
        xp = ctx.xp
        return getattr(xp, op)(_truth(a, xp), _truth(b, xp))

    @staticmethod
    def backward(ctx, g):
        return None, None


class LogicalNot(Op, name="logical_not"):
    @staticmethod
    def forward(ctx, a):
        return ctx.xp.logical_not(_truth(a, ctx.xp))

    @staticmethod
    def backward(ctx, g):
        return None


@register()
def logical_and(input: Tensor, other: Any) -> Tensor:
    """True where both are nonzero (bool result, broadcast)."""
    return Logical.apply(input, other, op="logical_and")


@register()
def logical_or(input: Tensor, other: Any) -> Tensor:
    """True where either is nonzero (bool result, broadcast)."""
    return Logical.apply(input, other, op="logical_or")


@register()
def logical_xor(input: Tensor, other: Any) -> Tensor:
    """True where exactly one is nonzero (bool result, broadcast)."""
    return Logical.apply(input, other, op="logical_xor")


@register()
def logical_not(input: Tensor) -> Tensor:
    """True where input is zero (bool result)."""
    return LogicalNot.apply(input)


def _check_bits(name: str, *operands: Any) -> None:
    for v in operands:
        d = v.dtype if isinstance(v, Tensor) else dt.scalar_dtype(v)
        if d.category == dt.FLOATING:
            raise DTypeError(f"{name}: only bool and integer tensors are supported, got {d.name}")


class Bitwise(Op, name="bitwise"):
    promote = True

    @staticmethod
    def forward(ctx, a, b, op):
        return getattr(ctx.xp, op)(a, b)

    @staticmethod
    def backward(ctx, g):
        return None, None


class BitwiseNot(Op, name="bitwise_not"):
    @staticmethod
    def forward(ctx, a):
        return ctx.xp.invert(a)

    @staticmethod
    def backward(ctx, g):
        return None


def _bitwise(np_name: str, name: str) -> Any:
    def fn(input: Any, other: Any) -> Tensor:
        _check_bits(name, input, other)
        return Bitwise.apply(input, other, op=np_name)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Elementwise {np_name} of bool/integer tensors (broadcast, promoted)."
    return register(name)(fn)


bitwise_and = _bitwise("bitwise_and", "bitwise_and")
bitwise_or = _bitwise("bitwise_or", "bitwise_or")
bitwise_xor = _bitwise("bitwise_xor", "bitwise_xor")


@register()
def bitwise_not(input: Tensor) -> Tensor:
    """~input: logical not for bool, two's-complement not for integers."""
    _check_bits("bitwise_not", input)
    return BitwiseNot.apply(input)


for _dunder, _fn in [("and", bitwise_and), ("or", bitwise_or), ("xor", bitwise_xor)]:
    binary_operator(_dunder, _fn)
Tensor.__invert__ = bitwise_not


class Classify(Op, name="classify"):
    """isnan / isinf / isfinite: a bool mask of the floating-point class of each element."""

    @staticmethod
    def forward(ctx, a, op):
        return getattr(ctx.xp, op)(a)

    @staticmethod
    def backward(ctx, g):
        return None


@register()
def isnan(input: Tensor) -> Tensor:
    """True where input is nan."""
    return Classify.apply(input, op="isnan")


@register()
def isinf(input: Tensor) -> Tensor:
    """True where input is +inf or -inf."""
    return Classify.apply(input, op="isinf")


@register()
def isfinite(input: Tensor) -> Tensor:
    """True where input is neither nan nor +-inf."""
    return Classify.apply(input, op="isfinite")


add_inplace_methods(logical_and, logical_or, logical_xor, logical_not, bitwise_and, bitwise_or, bitwise_xor,
                    bitwise_not)
Tensor.__iand__ = inplace_method(bitwise_and, "__iand__")
Tensor.__ior__ = inplace_method(bitwise_or, "__ior__")
Tensor.__ixor__ = inplace_method(bitwise_xor, "__ixor__")
