"""Dtype conversion kernels between float32 and bfloat16.

bfloat16 is the upper half of a float32, so converting down is rounding away 16
mantissa bits and converting up is exact. Both bodies match ml_dtypes (the
reference) bit for bit: round to nearest, ties to even; subnormals kept; overflow
to +-inf; any NaN becomes the quiet NaN ``sign | 0x7fc0`` (payload dropped, sign
kept), while widening keeps a bfloat16 NaN's payload and quiet bit unchanged.

    >>> import numpy as np
    >>> from tensora.kernels.cast import float32_to_bfloat16, bfloat16_to_float32
    >>> y = float32_to_bfloat16(np.float32([1.0, 1.00390625, 3.4e38]))
    >>> y.view(np.uint16).tolist()  # 1 + 2**-8 is a tie: rounds to the even 1.0
    [16256, 16256, 32640]
    >>> bfloat16_to_float32(y).tolist()
    [1.0, 1.0, inf]
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
from ml_dtypes import bfloat16

from .registry import kernel

# Element counts from which the native body is used, measured with
# benchmarks/cast.py (x86-64, 2 cores, AVX2). Narrowing: the native loop is 2-4x
# ml_dtypes' and the call overheads are equal (~2.3 us: the reference pays for
# np.errstate), so native wins at every size. Widening: single-threaded both run at
# memory speed and ml_dtypes' call is ~1.4 us cheaper, so native only pays once the
# loop is split across threads (from 2**21 elements; tensora._C's own threshold).
NARROW_NATIVE_FROM = 0
WIDEN_NATIVE_FROM = 1 << 21


def _checked(x: object, dtype: type, name: str) -> np.ndarray:
    """``x`` as an ndarray of exactly ``dtype``; no silent double rounding from float64."""
    a = np.asarray(x)
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected a {np.dtype(dtype).name} array, got {a.dtype}")
    return a


def _native_ready(a: np.ndarray) -> np.ndarray:
    """``a`` C-contiguous and aligned, as tensora._C requires (copies only if needed)."""
    if a.flags.c_contiguous and a.flags.aligned:  # np.require costs ~1 us even then
        return a
    return np.array(a, order="C")  # a fresh array is aligned


@kernel("float32_to_bfloat16", min_native_size=NARROW_NATIVE_FROM)
def float32_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """Round a float32 array to bfloat16 (nearest, ties to even); same shape, C order."""
    a = _checked(x, np.float32, "float32_to_bfloat16")
    # Signalling NaNs set FE_INVALID inside ml_dtypes' cast and NumPy would warn;
    # the result is still the quiet NaN we define, as in the native body.
    with np.errstate(invalid="ignore"):
        return a.astype(bfloat16, order="C")


@float32_to_bfloat16.native_body
def _float32_to_bfloat16_native(lib: ModuleType, x: np.ndarray) -> np.ndarray:
    src = _native_ready(_checked(x, np.float32, "float32_to_bfloat16"))
    out = np.empty(src.shape, dtype=np.uint16)
    lib.float32_to_bfloat16(src, out)
    return out.view(bfloat16)


@kernel("bfloat16_to_float32", min_native_size=WIDEN_NATIVE_FROM)
def bfloat16_to_float32(x: np.ndarray) -> np.ndarray:
    """Widen a bfloat16 array to float32 exactly; same shape, C order."""
    a = _checked(x, bfloat16, "bfloat16_to_float32")
    return a.astype(np.float32, order="C")


@bfloat16_to_float32.native_body
def _bfloat16_to_float32_native(lib: ModuleType, x: np.ndarray) -> np.ndarray:
    src = _native_ready(_checked(x, bfloat16, "bfloat16_to_float32")).view(np.uint16)
    out = np.empty(src.shape, dtype=np.float32)
    lib.bfloat16_to_float32(src, out)
    return out
