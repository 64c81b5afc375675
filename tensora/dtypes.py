"""Data types as objects, and PyTorch's type-promotion rules.

A `DType` pairs a tensora name with the NumPy dtype that stores it (bfloat16
and the float8 types come from ml_dtypes). Every dtype registers itself in
`DTYPES` by name; lookups, promotion and the test sweep iterate that table.

Promotion follows `torch.promote_types` and `torch.result_type`:

========  =====  =====  =====  =====  =====  =====  =====  =====  =====
promote   bool   u8     i8     i16    i32    i64    f16    bf16   f32
========  =====  =====  =====  =====  =====  =====  =====  =====  =====
bool      bool   u8     i8     i16    i32    i64    f16    bf16   f32
u8        u8     u8     i16    i16    i32    i64    f16    bf16   f32
i8        i8     i16    i8     i16    i32    i64    f16    bf16   f32
i16       i16    i16    i16    i16    i32    i64    f16    bf16   f32
i32       i32    i32    i32    i32    i32    i64    f16    bf16   f32
i64       i64    i64    i64    i64    i64    i64    f16    bf16   f32
f16       f16    f16    f16    f16    f16    f16    f16    f32    f32
bf16      bf16   bf16   bf16   bf16   bf16   bf16   f32    bf16   f32
f32       f32    f32    f32    f32    f32    f32    f32    f32    f32
========  =====  =====  =====  =====  =====  =====  =====  =====  =====

float64 wins over every other type. The float8 types promote only with
themselves (PyTorch refuses mixed float8 promotion too); convert explicitly.

`result_type` adds PyTorch's category rule: operands are ranked
bool < integer < floating; a zero-dim tensor or a Python scalar only changes
the result when its category is higher than that of the dimensioned tensors
(``int8 tensor + 2.5`` is float32, ``float16 tensor + float64 0-d`` is float16).
"""

from __future__ import annotations

import builtins
from typing import Any

import ml_dtypes
import numpy as np

from .errors import DTypeError

BOOL, INTEGRAL, FLOATING = 0, 1, 2


class DType:
    """One element type: its name, storage dtype and category."""

    __slots__ = ("name", "np_dtype", "category", "is_signed", "_short")

    def __init__(self, name: str, np_dtype: Any, category: int, short: str) -> None:
        self.name = name
        self.np_dtype = np.dtype(np_dtype)
        self.category = category
        self.is_signed = category == FLOATING or self.np_dtype.kind == "i"
        self._short = short

    @property
    def itemsize(self) -> int:
        return self.np_dtype.itemsize

    @property
    def is_floating_point(self) -> bool:
        return self.category == FLOATING

    @property
    def bits(self) -> int:
        return 8 * self.itemsize

    def __repr__(self) -> str:
        return f"tensora.{self.name}"

    def __reduce__(self):  # dtypes pickle by name (for multiprocessing workers)
        return (get_dtype, (self.name,))


DTYPES: dict[str, DType] = {}
_BY_NUMPY: dict[np.dtype, DType] = {}
_ALIASES = {"float": "float32", "double": "float64", "half": "float16",
            "long": "int64", "int": "int32", "short": "int16"}


def _register(name: str, np_dtype: Any, category: int, short: str) -> DType:
    dt = DType(name, np_dtype, category, short)
    DTYPES[name] = dt
    _BY_NUMPY[dt.np_dtype] = dt
    return dt


bool_ = _register("bool", np.bool_, BOOL, "b")
uint8 = _register("uint8", np.uint8, INTEGRAL, "u8")
int8 = _register("int8", np.int8, INTEGRAL, "i8")
int16 = _register("int16", np.int16, INTEGRAL, "i16")
int32 = _register("int32", np.int32, INTEGRAL, "i32")
int64 = _register("int64", np.int64, INTEGRAL, "i64")
float16 = _register("float16", np.float16, FLOATING, "f16")
bfloat16 = _register("bfloat16", ml_dtypes.bfloat16, FLOATING, "bf16")
float32 = _register("float32", np.float32, FLOATING, "f32")
float64 = _register("float64", np.float64, FLOATING, "f64")
float8_e4m3fn = _register("float8_e4m3fn", ml_dtypes.float8_e4m3fn, FLOATING, "f8e4m3")
float8_e5m2 = _register("float8_e5m2", ml_dtypes.float8_e5m2, FLOATING, "f8e5m2")

FLOAT8 = (float8_e4m3fn, float8_e5m2)

_default_float = float32


def get_dtype(spec: Any) -> DType:
    """Return the DType for a DType, a name ("float32", "half"), or a NumPy dtype."""
    if isinstance(spec, DType):
        return spec
    if isinstance(spec, str):
        name = _ALIASES.get(spec, spec)
        if name in DTYPES:
            return DTYPES[name]
        raise DTypeError(f"unknown dtype {spec!r}; known: {', '.join(DTYPES)}")
    if spec is builtins.bool:
        return bool_
    if spec is builtins.int:
        return int64
    if spec is builtins.float:
        return _default_float
    try:
        npd = np.dtype(spec)
    except TypeError as exc:
        raise DTypeError(f"cannot interpret {spec!r} as a dtype") from exc
    if npd in _BY_NUMPY:
        return _BY_NUMPY[npd]
    raise DTypeError(f"NumPy dtype {npd} has no tensora equivalent; "
                     f"supported: {', '.join(DTYPES)}")


def get_default_dtype() -> DType:
    """The floating dtype used for Python floats and float creation ops (float32)."""
    return _default_float


def set_default_dtype(dtype: Any) -> None:
    """Set the default floating dtype; only float32 and float64 are allowed, as in PyTorch."""
    global _default_float
    dt = get_dtype(dtype)
    if dt not in (float32, float64):
        raise DTypeError(f"default dtype must be float32 or float64, got {dt.name}")
    _default_float = dt


def promote_types(a: DType, b: DType) -> DType:
    """The smallest dtype both `a` and `b` convert to without losing category (torch.promote_types)."""
    a, b = get_dtype(a), get_dtype(b)
    if a is b:
        return a
    if a in FLOAT8 or b in FLOAT8:
        raise DTypeError(f"promotion of float8 types is not supported "
                         f"({a.name} with {b.name}); convert one explicitly")
    if a is bool_:
        return b
    if b is bool_:
        return a
    if a.category != b.category:
        return a if a.category > b.category else b
    if a.category == FLOATING:
        if {a, b} == {float16, bfloat16}:
            return float32
        return a if a.itemsize >= b.itemsize else b
    if a is uint8 or b is uint8:  # uint8 with a signed type needs a wider signed type
        other = b if a is uint8 else a
        return int16 if other is int8 else other
    return a if a.itemsize >= b.itemsize else b


def scalar_dtype(value: Any) -> DType:
    """Dtype a Python scalar takes when it becomes a tensor on its own."""
    if isinstance(value, (builtins.bool, np.bool_)):
        return bool_
    if isinstance(value, (builtins.int, np.integer)):
        return int64
    if isinstance(value, (builtins.float, np.floating)):
        return _default_float
    raise DTypeError(f"unsupported scalar type {type(value).__name__}")


def _combine_categories(higher: DType | None, lower: DType | None) -> DType | None:
    # Mirrors c10's combine_categories: `lower` only matters if it is of a higher category.
    if higher is None:
        return lower
    if lower is None or higher.category == FLOATING:
        return higher
    if higher is bool_ or lower.category == FLOATING:
        return promote_types(higher, lower)
    return higher


def result_type(*operands: Any) -> DType:
    """Result dtype of an op on `operands` (tensors, DTypes or Python scalars), as torch.result_type."""
    dim: DType | None = None
    zero: DType | None = None
    wrapped: DType | None = None
    for op in operands:
        if isinstance(op, DType):
            dim = op if dim is None else promote_types(dim, op)
        elif hasattr(op, "dtype") and hasattr(op, "ndim") and isinstance(op.dtype, DType):
            if op.ndim == 0:
                zero = op.dtype if zero is None else promote_types(zero, op.dtype)
            else:
                dim = op.dtype if dim is None else promote_types(dim, op.dtype)
        else:
            dt = scalar_dtype(op)
            wrapped = dt if wrapped is None else promote_types(wrapped, dt)
    out = _combine_categories(dim, _combine_categories(zero, wrapped))
    if out is None:
        raise DTypeError("result_type needs at least one operand")
    return out


def can_cast(from_: DType, to: DType) -> bool:
    """Whether an op may write a `from_` result into a `to` tensor (torch.can_cast)."""
    return get_dtype(from_).category <= get_dtype(to).category
