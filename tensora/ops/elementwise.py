"""Elementwise arithmetic: + - * / ** // %, exp/log/sqrt, where, comparisons.

Binary ops broadcast and promote like PyTorch (`Op.promote`), and their
backward sums the gradient back to each input's shape with `sum_to`. Each
backward is written in tensor ops, so gradients of gradients work.

The helpers `float_in`/`float_out` and `exact_in` fix how every elementwise
family computes in low precision: float16/bfloat16 run in float32 and are
cast back once (NumPy's half and ml_dtypes' bfloat16 loops are slow, and a
chain of half-precision steps loses accuracy, so PyTorch's CPU kernels do the
same), and integer inputs of a transcendental op become the default float
dtype (torch.exp(int tensor) is float32). Math functions live in
pointwise.py, activations in activation.py, bool/bit ops in logical.py.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .. import dtypes as dt
from ..autograd.function import Op
from ..errors import DTypeError
from ..tensor import Tensor
from .conversion import cast_array
from .inplace import update_inplace
from .registry import binary_operator, export, register
from .shape import sum_to

_LOW = {d.np_dtype: d for d in (dt.float16, dt.bfloat16, *dt.FLOAT8)}
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_FULL = (_F32, _F64)


def _shape(a: Any) -> tuple:
    return getattr(a, "shape", ())  # arrays, NumPy scalars and Python numbers


def float_in(x: Any) -> tuple[Any, dt.DType | None]:
    """(x as the float32/float64 array the math runs in, the dtype to cast the result back to)."""
    d = x.dtype
    if d is _F32 or d is _F64 or d in _FULL:  # identity first: NumPy's builtin dtypes are singletons
        return x, None
    low = _LOW.get(d)
    if low is not None:
        return cast_array(x, dt.float32), low
    return x.astype(dt.get_default_dtype().np_dtype), None  # bool and integers -> default float


def exact_in(x: Any) -> tuple[Any, dt.DType | None]:
    """Like float_in for value-preserving ops (abs, relu, clamp): integers stay integers."""
    low = _LOW.get(getattr(x, "dtype", None))  # Python scalars pass through
    return (x, None) if low is None else (cast_array(x, dt.float32), low)


def exact_pair(a: Any, b: Any) -> tuple[Any, Any, dt.DType | None]:
    """exact_in for the two (promoted) operands of a binary op; either may be a Python scalar."""
    x, low = exact_in(a)
    y, low_b = exact_in(b)
    return x, y, low or low_b


def float_out(y: Any, low: dt.DType | None) -> Any:
    """y cast back to `low` (when set), always an array: NumPy returns scalars for 0-d inputs, and a
    forward that saves its output must save the very array the output tensor wraps."""
    if isinstance(y, np.generic):
        y = np.asarray(y)
    return y if low is None else cast_array(y, low)


def unary(fn: Callable, x: Any) -> Any:
    """fn(x) computed through float_in/float_out."""
    d = x.dtype
    if (d is _F32 or d is _F64) and x.ndim:
        return fn(x)  # the common case, where float_in/float_out change nothing
    a, low = float_in(x)
    return float_out(fn(a), low)


def _integral(a: Any, b: Any) -> bool:
    """Whether a binary op on a and b (arrays or scalars) computes in integers (or bool)."""
    return np.result_type(getattr(a, "dtype", a), getattr(b, "dtype", b)).kind in "iub"


def zero_grad(g: Tensor, shape: tuple, xp: Any) -> Tensor:
    """A zero gradient of `shape` (the derivative of a piecewise-constant op)."""
    return Tensor(xp.zeros(shape, g._data.dtype), device=g.device)


# -- arithmetic ---------------------------------------------------------------------

class Add(Op, name="add"):
    promote = True

    @staticmethod
    def forward(ctx, a, b):
        if ctx.needs_input_grad:  # empty unless recording: keep the no-grad path lean
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
        if ctx.needs_input_grad:
            ctx.shapes = (_shape(a), _shape(b))
        return a - b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        need = ctx.needs_input_grad
        return (sum_to(g, sa) if need[0] else None), (sum_to(-g, sb) if need[1] else None)


class Mul(Op, name="mul"):
    promote = True
    opmath_scalar = True  # bf16 x * 1.001: 1.001 stays float32 and the product is rounded once, as torch

    @staticmethod
    def forward(ctx, a, b):
        need = ctx.needs_input_grad
        if need:  # save only what backward reads, as torch: (x * 2) then x.add_(1) is no error
            ctx.shapes = (_shape(a), _shape(b))
            ctx.save(a if need[1] else None, b if need[0] else None)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        sa, sb = ctx.shapes
        need = ctx.needs_input_grad
        return (sum_to(g * b, sa) if need[0] else None), (sum_to(g * a, sb) if need[1] else None)


class Div(Op, name="div"):
    promote = True
    opmath_scalar = True

    @staticmethod
    def forward(ctx, a, b):
        need = ctx.needs_input_grad
        if need:  # a only for d/db, as torch: (x / 2) then x.add_(1) is no error
            ctx.shapes = (_shape(a), _shape(b))
            ctx.save(a if need[1] else None, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        sa, sb = ctx.shapes
        need = ctx.needs_input_grad
        ga = sum_to(g / b, sa) if need[0] else None
        gb = sum_to(-g * a / (b * b), sb) if need[1] else None
        return ga, gb


class Neg(Op, name="neg"):
    @staticmethod
    def forward(ctx, a):
        if a.dtype == np.bool_:
            raise DTypeError("neg: negation of a bool tensor is not supported; use ~ or logical_not()")
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class Pow(Op, name="pow"):
    promote = True

    @staticmethod
    def forward(ctx, a, b):
        if _integral(a, b) and ctx.xp.any(b < 0):
            raise DTypeError("pow: integers to negative integer powers are not allowed; use a float base")
        x, y, low = exact_pair(a, b)
        out = float_out(x ** y, low)
        ctx.save(a, b, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved
        need = ctx.needs_input_grad
        ga = gb = None
        if need[0]:
            # d/da a^b = b a^(b-1), which is 0 where b == 0 (not 0 * 0^-1 = nan at a == 0), as PyTorch.
            if isinstance(b, Tensor):
                ga = g * b * a ** (b - 1)
                ga = where((b == 0) & (a == 0), 0.0, ga)
            else:
                ga = g * b * a ** (b - 1) if b != 0 else g * 0
            ga = sum_to(ga, a.shape)
        if need[1]:
            # d/db a^b = a^b log a, defined as 0 where a == 0 and b >= 0 (PyTorch does the same);
            # a negative base gives nan (log a), as in PyTorch.
            mask = (a == 0) & (b >= 0)
            safe = where(mask, ones_scalar(a), a)
            gb = sum_to(g * out * log(safe), b.shape)
        return ga, gb


def ones_scalar(like: Tensor) -> Tensor:
    """A 0-d one of `like`'s dtype and device."""
    return Tensor(np.ones((), like._data.dtype), device=like.device).to(like.device)


class Exp(Op, name="exp"):
    @staticmethod
    def forward(ctx, x):
        y = unary(ctx.xp.exp, x)
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
        return unary(ctx.xp.log, x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g / x


class Sqrt(Op, name="sqrt"):
    @staticmethod
    def forward(ctx, x):
        y = unary(ctx.xp.sqrt, x)
        ctx.save(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return g / (2 * y)


# -- rounded division and remainders ------------------------------------------------

def _check_int_divisor(b: Any, xp: Any, name: str) -> None:
    # NumPy quietly returns 0 for an integer division by zero; PyTorch raises.
    if xp.any(b == 0):
        raise ZeroDivisionError(f"{name}: integer division by zero")


class RoundDiv(Op, name="round_div"):
    """a / b rounded toward -inf ("floor", Python's //) or toward 0 ("trunc"); zero gradient."""

    promote = True

    @staticmethod
    def forward(ctx, a, b, mode):
        xp = ctx.xp
        ctx.shapes = (_shape(a), _shape(b))
        if _integral(a, b):
            _check_int_divisor(b, xp, "div")
            if mode == "floor":
                return a // b
            q = xp.abs(a) // xp.abs(b)
            return xp.where((a < 0) != (b < 0), -q, q).astype(np.result_type(a, b))
        x, y, low = exact_pair(a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            # floor_divide, not floor(a / b): it rounds like Python and PyTorch (1 // 0.1 == 9).
            q = xp.floor_divide(x, y) if mode == "floor" else xp.trunc(x / y)
        return float_out(q, low)

    @staticmethod
    def backward(ctx, g):
        need = ctx.needs_input_grad
        return tuple(zero_grad(g, s, ctx.xp) if n else None for s, n in zip(ctx.shapes, need))


class Remainder(Op, name="remainder"):
    """a - b * floor(a / b) (sign of b, Python's %) or, with trunc=True, C's fmod (sign of a)."""

    promote = True

    @staticmethod
    def forward(ctx, a, b, trunc):
        xp = ctx.xp
        ctx.trunc = trunc
        ctx.save(a, b)
        if _integral(a, b):
            _check_int_divisor(b, xp, "fmod" if trunc else "remainder")
        x, y, low = exact_pair(a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            return float_out(xp.fmod(x, y) if trunc else xp.remainder(x, y), low)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        need = ctx.needs_input_grad
        ga = sum_to(g, a.shape) if need[0] else None
        gb = None
        if need[1]:
            q = div(a.detach(), b.detach() if isinstance(b, Tensor) else b,
                    rounding_mode="trunc" if ctx.trunc else "floor")
            gb = sum_to(-g * q, b.shape)
        return ga, gb


# -- where ----------------------------------------------------------------------------

class Where(Op, name="where_"):
    """cond ? a : b with a and b promoted together (cond carries no gradient)."""

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save(cond)
        ctx.shapes = (_shape(a), _shape(b))
        return _select(ctx.xp, cond, a, b)

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved
        sa, sb = ctx.shapes
        zero = g * 0
        need = ctx.needs_input_grad
        ga = sum_to(where(cond, g, zero), sa) if need[1] else None
        gb = sum_to(where(cond, zero, g), sb) if need[2] else None
        return None, ga, gb


def _select(xp: Any, cond: Any, a: Any, b: Any) -> Any:
    """xp.where(cond, a, b). With a 0-d zero on one side and a finite float32/64 array of the result's
    shape on the other (relu's gradient, masked fills), the array times the mask instead: ~10x faster,
    as where's per-element branch mispredicts on a random mask (a masked negative gives -0.0)."""
    for keep, zero, invert in ((a, b, False), (b, a, True)):
        if (zero.ndim == 0 and keep.dtype in _FULL and zero.dtype == keep.dtype and not zero
                and keep.ndim >= cond.ndim and keep.shape[keep.ndim - cond.ndim:] == cond.shape):
            if bool(xp.isfinite(keep.sum())):  # an inf or nan anywhere: 0 * inf is nan, so where()
                return keep * (~cond if invert else cond)
            break
    return xp.where(cond, a, b)


@register(method=False)  # the method puts self first: x.where(condition, y), below
def where(condition: Tensor, input: Any, other: Any) -> Tensor:
    """Elements of `input` where `condition`, else of `other` (broadcast, promoted).

    >>> import tensora
    >>> tensora.where(tensora.tensor([True, False]), tensora.tensor([1.0, 2.0]), 0.0).tolist()
    [1.0, 0.0]
    """
    target = dt.result_type(*(v for v in (input, other)))
    a = input.to(target) if isinstance(input, Tensor) else Tensor(np.asarray(input, dtype=target.np_dtype))
    b = other.to(target) if isinstance(other, Tensor) else Tensor(np.asarray(other, dtype=target.np_dtype))
    cond = condition if isinstance(condition, Tensor) else Tensor(np.asarray(condition, dtype=bool))
    if a.device != cond.device:
        a, b = a.to(cond.device), b.to(cond.device)
    return Where.apply(cond.bool() if cond.dtype is not dt.bool_ else cond, a, b)


@register("where", function=False)  # Tensor.where only; tensora.where is the function above
def _where_method(self: Tensor, condition: Any, other: Any) -> Tensor:
    """x.where(condition, y): x where `condition`, else y; torch's Tensor.where, = where(condition, x, y).

    >>> import tensora
    >>> tensora.tensor([1.0, 2.0]).where(tensora.tensor([False, True]), -1.0).tolist()
    [-1.0, 2.0]
    """
    return where(condition, self, other)


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
    # Integer / integer divides as floats (true division), as in PyTorch. A floating tensor
    # makes the result floating whatever the other operand is: no need to ask result_type.
    if isinstance(a, Tensor) and a.dtype.category == dt.FLOATING:
        return a, b
    if dt.result_type(a, b).category != dt.FLOATING:
        f = dt.get_default_dtype()
        a = a.to(f) if isinstance(a, Tensor) else float(a)
        b = b.to(f) if isinstance(b, Tensor) else float(b)
    return a, b


@register(method=("div", "divide", "true_divide"))
def div(input: Any, other: Any, *, rounding_mode: str | None = None) -> Tensor:
    """input / other; rounding_mode "trunc" or "floor" rounds the quotient (zero gradient then)."""
    if rounding_mode is None:
        return Div.apply(*_true_div_inputs(input, other))
    if rounding_mode not in ("trunc", "floor"):
        raise ValueError(f"div: rounding_mode must be None, 'trunc' or 'floor', got {rounding_mode!r}")
    return RoundDiv.apply(input, other, mode=rounding_mode)


@register()
def floor_divide(input: Any, other: Any) -> Tensor:
    """input // other, rounded toward -inf like Python and torch.floor_divide (zero gradient)."""
    return RoundDiv.apply(input, other, mode="floor")


@register()
def remainder(input: Any, other: Any) -> Tensor:
    """Python's %: the result has the sign of `other` (torch.remainder). d/d(other) = -floor(input/other)."""
    return Remainder.apply(input, other, trunc=False)


@register()
def fmod(input: Any, other: Any) -> Tensor:
    """C's fmod: the result has the sign of `input` (torch.fmod). d/d(other) = -trunc(input/other)."""
    return Remainder.apply(input, other, trunc=True)


@register()
def pow(input: Any, exponent: Any) -> Tensor:  # noqa: A001 - torch.pow
    return Pow.apply(input, exponent)


for _dunder, _fn in [("add", add), ("sub", sub), ("mul", mul), ("truediv", div), ("pow", pow),
                     ("floordiv", floor_divide), ("mod", remainder)]:
    binary_operator(_dunder, _fn)


def inplace_method(fn: Callable, name: str) -> Callable:
    """x.<name>(*args): x = fn(x, *args) written into x (see update_inplace).

    Like PyTorch, a result of a higher dtype category than x (a float result for
    an integer x) is refused rather than truncated.
    """

    def method(self: Tensor, *args: Any, **kw: Any) -> Tensor:
        def compute(s: Tensor) -> Tensor:
            y = fn(s, *args, **kw)
            if not dt.can_cast(y.dtype, self.dtype):
                raise DTypeError(f"{name}: result type {y.dtype.name} can't be cast to the desired output "
                                 f"type {self.dtype.name}")
            return y
        return update_inplace(self, compute, args + tuple(kw.values()))

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"In-place version of {fn.__name__}()."
    return method


def add_inplace_methods(*fns: Callable) -> None:
    """Install x.<name>_() for each function, as PyTorch has them."""
    for fn in fns:
        setattr(Tensor, fn.__name__ + "_", inplace_method(fn, fn.__name__ + "_"))


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

add_inplace_methods(add, sub, mul, div, pow, floor_divide, remainder, fmod, neg, exp, log, sqrt)
Tensor.subtract_ = Tensor.sub_
Tensor.multiply_ = Tensor.mul_
Tensor.divide_ = Tensor.div_
Tensor.negative_ = Tensor.neg_
Tensor.__iadd__ = Tensor.add_
Tensor.__isub__ = Tensor.sub_
Tensor.__imul__ = Tensor.mul_
Tensor.__itruediv__ = Tensor.div_
Tensor.__ifloordiv__ = Tensor.floor_divide_
Tensor.__imod__ = Tensor.remainder_
Tensor.__ipow__ = Tensor.pow_
