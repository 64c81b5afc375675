"""Sums of products over chosen dims through einsum, for the fused norm and loss ops.

NumPy's ufunc.reduce along a contiguous last axis is 1.5-3x slower than einsum's
SIMD loops on the shapes these ops see (rows of a few hundred values), and a sum
of products through einsum needs no buffer for the product.
"""

from __future__ import annotations

from typing import Any

from ..ops.reduce import keepdim_shape

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def esum(xp: Any, dims: tuple, *arrays: Any) -> Any:
    """sum over `dims` of the elementwise product of same-shaped arrays, keeping those dims (size 1)."""
    letters = _LETTERS[:arrays[0].ndim]
    kept = "".join(c for i, c in enumerate(letters) if i not in dims)
    out = xp.einsum(",".join([letters] * len(arrays)) + "->" + kept, *arrays)
    return out.reshape(keepdim_shape(arrays[0].shape, dims))
