"""``gelu_forward(x, approximate)`` and ``gelu_backward(x, g, approximate)``: GELU and g * GELU'(x).

GELU(x) = x Phi(x), with the exact normal CDF (``approximate="none"``, through erf) or
PyTorch's tanh form (``"tanh"``: 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))). The
reference bodies below define both; NumPy has no erf, so they spend a dozen full-array
passes per call, which made GELU the largest cost after the matmuls in a transformer
block's training step. The native body (csrc/gelu.cpp) is one pass over float32, 8 lanes
with AVX2: it agrees with the reference within 1e-6 absolute + 1e-5 relative (float32
erf/exp approximations of a few ulp). float64 always runs the reference.

    >>> x = np.array([-1.0, 0.0, 2.0])
    >>> gelu_forward(x, "none").round(4).tolist()
    [-0.1587, 0.0, 1.9545]
    >>> gelu_backward(x, np.ones_like(x), "tanh").round(4).tolist()
    [-0.083, 0.5, 1.0861]
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from .erf import erf_array
from .registry import kernel

_SQRT1_2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_C = 0.044715


def _check(approximate: str) -> None:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


@kernel("gelu_forward")
def gelu_forward(x: Any, approximate: str, xp: Any = np) -> Any:
    """GELU of a float32/float64 array of array module `xp` (a new array of x's shape and dtype)."""
    _check(approximate)
    if approximate == "tanh":
        return 0.5 * x * (1 + xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x * x * x)))
    return 0.5 * x * (1 + erf_array(xp, x * _SQRT1_2))


@kernel("gelu_backward")
def gelu_backward(x: Any, g: Any, approximate: str, xp: Any = np) -> Any:
    """g * GELU'(x) for float32/float64 x and g of one shape, arrays of `xp` (a new array)."""
    _check(approximate)
    if approximate == "tanh":
        x2 = x * x
        t = xp.tanh((x + x2 * x * _GELU_C) * _SQRT_2_OVER_PI)
        d = (1 + t) * 0.5 + x * (1 - t * t) * (1 + x2 * (3 * _GELU_C)) * (0.5 * _SQRT_2_OVER_PI)
    else:
        d = (1 + erf_array(xp, x * _SQRT1_2)) * 0.5 + x * xp.exp(x * x * -0.5) * _INV_SQRT_2PI
    return g * d


def _native_ok(xp: Any, *arrays: Any) -> bool:
    """The native loop takes NumPy float32 only (float64 is the accuracy path, not a hot one)."""
    return xp is np and all(a.dtype == np.float32 for a in arrays)


def _c(a: np.ndarray) -> np.ndarray:
    """a as the C-contiguous array the native loop takes (np.ascontiguousarray would make a 0-d array 1-d)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


@gelu_forward.native_body
def _gelu_forward_native(lib: ModuleType, x: Any, approximate: str, xp: Any = np) -> Any:
    if not _native_ok(xp, x):
        return gelu_forward.reference(x, approximate, xp)
    _check(approximate)
    x = _c(x)
    out = np.empty_like(x)
    lib.gelu_forward(x, out, approximate)
    return out


@gelu_backward.native_body
def _gelu_backward_native(lib: ModuleType, x: Any, g: Any, approximate: str, xp: Any = np) -> Any:
    if not _native_ok(xp, x, g) or g.shape != x.shape:
        return gelu_backward.reference(x, g, approximate, xp)
    _check(approximate)
    x, g = _c(x), _c(g)
    out = np.empty_like(x)
    lib.gelu_backward(x, g, out, approximate)
    return out
