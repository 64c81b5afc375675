"""FP8 E4M3 / E5M2 weights with a float32 scale per output channel (or per tensor).

The element types are the OCP 8-bit floats as ml_dtypes (and torch, and NVIDIA's FP8
tensor cores) define them: ``float8_e4m3fn`` (bias 7, no inf, largest 448) and
``float8_e5m2`` (bias 15, IEEE-like, largest 57344). The scale maps the channel's (or
tensor's) absmax onto the largest finite value, ``scale = amax / max_finite`` (1 when
amax is 0), each value is ``w / scale`` rounded to nearest even by ml_dtypes (clipped to
the finite range first, so rounding noise at amax cannot produce NaN or inf), and
``w = float(q) * scale``. "qweight" holds the FP8 bit patterns as uint8.

    >>> import numpy as np
    >>> fmt = FP8E4M3()
    >>> w = np.array([[1.0, -0.3, 224.0]], dtype=np.float32)  # scale 224 / 448 = 0.5
    >>> fmt.dequantize(fmt.quantize(w), w.shape).tolist()  # -0.3 / 0.5 = -0.6: E4M3 has -0.625
    [[1.0, -0.3125, 224.0]]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import ml_dtypes
import numpy as np

from ._gguf_blocks import CHUNK_VALUES
from .base import Parts, QuantFormat, QuantFormatError, as_rows, matrix_shape, register_format

F32 = np.float32


class _FP8(QuantFormat):
    """Shared codec; subclasses name the ml_dtypes element type."""

    element: ClassVar[type]
    block_size = 1  # scales per row or per tensor: any row length works

    def __init__(self, per_channel: bool = True):
        if not isinstance(per_channel, (bool, np.bool_)):
            raise QuantFormatError(f"{self.name}: per_channel must be True or False, got {per_channel!r}")
        self.per_channel = bool(per_channel)

    def options(self) -> dict[str, Any]:
        return {"per_channel": self.per_channel}

    @property
    def max_finite(self) -> float:
        return float(ml_dtypes.finfo(self.element).max)

    @classmethod
    def values(cls) -> np.ndarray:
        """float32 value of each of the 256 bit patterns (NaN ones included)."""
        return np.arange(256, dtype=np.uint8).view(cls.element).astype(F32)

    def quantize(self, array: np.ndarray) -> Parts:
        x = as_rows(array)
        self.check_shape(x.shape)
        if not np.isfinite(x).all():
            raise QuantFormatError(f"{self.name}: cannot quantize inf or NaN values")
        rows, k = x.shape
        amax = np.abs(x).max(axis=1) if x.size else np.zeros(rows, F32)
        if not self.per_channel:
            amax = amax.max(keepdims=True) if amax.size else np.zeros(1, F32)
        scale = (amax / F32(self.max_finite)).astype(F32)
        # 1 where amax is 0, or so small (below ~1e-42) that amax / max_finite is 0 in float32:
        # x / 0 would store NaN codes; x / 1 flushes those values to 0, as INT8's scale does
        scale[scale == 0] = 1
        qweight = np.empty((rows, k), np.uint8)
        step = max(1, CHUNK_VALUES // max(k, 1))
        top = F32(self.max_finite)
        for i in range(0, rows, step):
            s = scale[i:i + step, None] if self.per_channel else scale
            y = np.clip(x[i:i + step] / s, -top, top)
            qweight[i:i + step] = y.astype(self.element).view(np.uint8)
        return {"qweight": qweight, "scale": scale}

    def dequantize_rows(self, parts: Mapping[str, np.ndarray], shape: tuple[int, ...],
                        start: int, stop: int) -> np.ndarray:
        rows, _ = matrix_shape(shape)
        start, stop, _ = slice(start, stop).indices(rows)
        stop = max(start, stop)
        out = self.values()[parts["qweight"][start:stop]]  # a 256-entry table beats ml_dtypes' cast ~3x
        scale = parts["scale"]
        out *= scale[start:stop, None] if self.per_channel else scale
        return out

    def part_specs(self, shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        rows, k = matrix_shape(shape)
        return {"qweight": ((rows, k), np.dtype(np.uint8)),
                "scale": ((rows if self.per_channel else 1,), np.dtype(F32))}


@register_format
class FP8E4M3(_FP8):
    name = "fp8_e4m3"
    description = "FP8 E4M3 (float8_e4m3fn, max 448) with a float32 scale per channel or tensor"
    element = ml_dtypes.float8_e4m3fn


@register_format
class FP8E5M2(_FP8):
    name = "fp8_e5m2"
    description = "FP8 E5M2 (float8_e5m2, max 57344) with a float32 scale per channel or tensor"
    element = ml_dtypes.float8_e5m2
