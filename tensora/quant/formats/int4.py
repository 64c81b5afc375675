"""int4: 4-bit integer codes in groups along a row with a float16 scale (and zero point) each.

The common GPTQ/AWQ-style weight-only layout: a row of K values is cut into groups of
``group_size`` (32, 64 or 128); codes are packed two per byte, element 2i in the low
nibble and 2i+1 in the high one.

Symmetric (default): ``scale = absmax / 7``, ``code = clip(rint(w / scale), -8, 7) + 8``,
``w = (code - 8) * scale``; a zero group (or one whose scale underflows float16) gets
scale 0 and codes 8.

Asymmetric: ``scale = (max - min) / 15``, ``zero = clip(rint(-min / scale), 0, 15)``,
``code = clip(rint(w / scale) + zero, 0, 15)``, ``w = (code - zero) * scale``, with an
extra uint8 part "zero". The range is widened to include 0 first (min <= 0 <= max, as
GPTQ's quantizer does), so 0 is always representable and a group that does not straddle
zero does not saturate at one end.

Every code is computed with the float16-rounded scale that is stored (round half to
even), so the dequantized group is the best the stored scale can give.

    >>> import numpy as np
    >>> fmt = Int4(group_size=32)
    >>> w = np.linspace(-0.7, 0.7, 64, dtype=np.float32).reshape(2, 32)
    >>> float(np.abs(fmt.dequantize(fmt.quantize(w), w.shape) - w).max()) <= 0.05
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._gguf_blocks import CHUNK_VALUES
from .base import Parts, QuantFormat, QuantFormatError, as_rows, matrix_shape, register_format

F32 = np.float32
GROUP_SIZES = (32, 64, 128)
_F16_MAX = float(np.finfo(np.float16).max)


def pack_pairs(codes: np.ndarray) -> np.ndarray:
    """(..., 2m) codes 0..15 -> (..., m) bytes, element 2i in the low nibble, 2i+1 in the high."""
    return (codes[..., 0::2] | (codes[..., 1::2] << np.uint8(4))).astype(np.uint8)


def unpack_pairs(packed: np.ndarray) -> np.ndarray:
    """Inverse of `pack_pairs`: (..., m) bytes -> (..., 2m) codes in element order."""
    out = np.empty(packed.shape[:-1] + (2 * packed.shape[-1],), np.uint8)
    out[..., 0::2] = packed & np.uint8(0x0F)
    out[..., 1::2] = packed >> np.uint8(4)
    return out


def float16_scale(scale: np.ndarray, name: str) -> np.ndarray:
    """``scale`` rounded to float16 and back to float32; raises if a scale overflows float16."""
    if scale.size and float(scale.max()) > _F16_MAX:
        raise QuantFormatError(f"{name}: values too large for float16 group scales")
    return scale.astype(np.float16).astype(F32)


@register_format
class Int4(QuantFormat):
    name = "int4"
    description = "int4 group-wise (32/64/128) with float16 scales, symmetric or with zero points"

    def __init__(self, group_size: int = 128, symmetric: bool = True):
        if not isinstance(group_size, (int, np.integer)) or isinstance(group_size, bool) or group_size not in GROUP_SIZES:
            raise QuantFormatError(f"int4: group_size must be one of {GROUP_SIZES}, got {group_size!r}")
        if not isinstance(symmetric, (bool, np.bool_)):
            raise QuantFormatError(f"int4: symmetric must be True or False, got {symmetric!r}")
        self.block_size = int(group_size)
        self.symmetric = bool(symmetric)

    def options(self) -> dict[str, Any]:
        return {"group_size": self.block_size, "symmetric": self.symmetric}

    def quantize(self, array: np.ndarray) -> Parts:
        x = as_rows(array)
        self.check_shape(x.shape)
        if not np.isfinite(x).all():
            raise QuantFormatError("int4: cannot quantize inf or NaN values")
        rows, k = x.shape
        g = self.block_size
        groups = x.reshape(-1, g)  # (rows * K // g, g)
        codes = np.empty(groups.shape, np.uint8)
        scale = np.empty(groups.shape[0], F32)
        zero = None if self.symmetric else np.empty(groups.shape[0], np.uint8)
        step = max(1, CHUNK_VALUES // g)
        for i in range(0, groups.shape[0], step):
            chunk = groups[i:i + step]
            if self.symmetric:
                codes[i:i + step], scale[i:i + step] = _quantize_symmetric(chunk)
            else:
                codes[i:i + step], scale[i:i + step], zero[i:i + step] = _quantize_asymmetric(chunk)
        parts = {"qweight": pack_pairs(codes).reshape(rows, k // 2),
                 "scale": scale.astype(np.float16).reshape(rows, k // g)}
        if zero is not None:
            parts["zero"] = zero.reshape(rows, k // g)
        return parts

    def dequantize_rows(self, parts: Mapping[str, np.ndarray], shape: tuple[int, ...],
                        start: int, stop: int) -> np.ndarray:
        rows, k = matrix_shape(shape)
        start, stop, _ = slice(start, stop).indices(rows)
        stop = max(start, stop)
        g = self.block_size
        out = np.empty((stop - start, k), F32)
        step = max(1, CHUNK_VALUES // max(k, 1))
        for r in range(start, stop, step):
            e = min(stop, r + step)
            codes = unpack_pairs(parts["qweight"][r:e]).reshape(e - r, k // g, g).astype(F32)
            codes -= parts["zero"][r:e, :, None] if "zero" in parts else F32(8)
            codes *= parts["scale"][r:e, :, None].astype(F32)
            out[r - start:e - start] = codes.reshape(e - r, k)
        return out

    def part_specs(self, shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        rows, k = matrix_shape(shape)
        specs = {"qweight": ((rows, k // 2), np.dtype(np.uint8)),
                 "scale": ((rows, k // self.block_size), np.dtype(np.float16))}
        if not self.symmetric:
            specs["zero"] = ((rows, k // self.block_size), np.dtype(np.uint8))
        return specs


def _quantize_symmetric(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes 0..15, float16-exact scale) of (n, g) groups."""
    scale = float16_scale(np.abs(x).max(axis=1) / F32(7), "int4")
    safe = np.where(scale > 0, scale, F32(1))
    q = np.rint(x / safe[:, None])
    q[scale == 0] = 0
    np.clip(q, -8, 7, out=q)
    return (q + 8).astype(np.uint8), scale


def _quantize_asymmetric(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes 0..15, float16-exact scale, zero point 0..15) of (n, g) groups."""
    lo = np.minimum(x.min(axis=1), F32(0))
    hi = np.maximum(x.max(axis=1), F32(0))
    scale = float16_scale((hi - lo) / F32(15), "int4")
    safe = np.where(scale > 0, scale, F32(1))
    zero = np.clip(np.rint(-lo / safe), 0, 15)
    zero[scale == 0] = 0
    q = np.rint(x / safe[:, None]) + zero[:, None]
    q[scale == 0] = 0
    np.clip(q, 0, 15, out=q)
    return q.astype(np.uint8), scale, zero.astype(np.uint8)
