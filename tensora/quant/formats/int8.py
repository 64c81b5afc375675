"""int8: one float32 absmax scale per row (output channel), optional LLM.int8 outlier columns.

Each row r stores ``q = rint(w / scale[r])`` in int8 with ``scale[r] = absmax(row) / 127``,
so ``w = q * scale[r]`` is within ``scale[r] / 2`` of the input. The division uses the
stored float32 scale: the codes are the nearest ones for the scale that is kept.

With ``threshold`` (LLM.int8(), Dettmers et al. 2022, uses 6.0), every column holding a
value with ``|w| >= threshold`` is an *outlier column*: its values are stored as float16
in the part "outliers" (rows x columns), their indices in "outlier_cols", and the column
is zero in "qweight" and left out of the row absmax, so a few large activations-facing
columns no longer blow up the scale of every row. (bitsandbytes' ``int8_vectorwise_quant``
leaves only the outlier *elements* out of the absmax; we leave the whole column out,
since all of its values are kept in float16 anyway.) Without outliers the two parts are
absent, so the part list depends on the data: `check_parts` validates them when present.

    >>> import numpy as np
    >>> fmt = Int8(threshold=6.0)
    >>> w = np.array([[0.5, -1.0, 8.0], [0.25, 1.0, 0.1]], dtype=np.float32)
    >>> parts = fmt.quantize(w)
    >>> parts["outlier_cols"].tolist(), fmt.dequantize(parts, w.shape)[:, 2].tolist()
    ([2], [8.0, 0.0999755859375])
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._gguf_blocks import CHUNK_VALUES
from .base import Parts, QuantFormat, QuantFormatError, as_rows, matrix_shape, register_format

F32 = np.float32
QMAX = 127
_OUTLIER_PARTS = frozenset({"outlier_cols", "outliers"})


@register_format
class Int8(QuantFormat):
    name = "int8"
    description = "int8 per-output-channel absmax (optional LLM.int8 float16 outlier columns)"
    block_size = 1  # one scale per row: any row length works

    def __init__(self, threshold: float | None = None):
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) \
                    or not np.isfinite(threshold) or threshold <= 0:
                raise QuantFormatError(f"int8: threshold must be a positive number or None, got {threshold!r}")
            threshold = float(threshold)
        self.threshold = threshold

    def options(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def quantize(self, array: np.ndarray) -> Parts:
        x = as_rows(array)
        self.check_shape(x.shape)
        if not np.isfinite(x).all():
            raise QuantFormatError("int8: cannot quantize inf or NaN values")
        rows, k = x.shape
        step = max(1, CHUNK_VALUES // max(k, 1))
        cols = np.empty(0, np.int64)
        if self.threshold is not None:
            col_max = np.zeros(k, F32)
            for i in range(0, rows, step):
                np.maximum(col_max, np.abs(x[i:i + step]).max(axis=0), out=col_max)
            cols = np.flatnonzero(col_max >= self.threshold).astype(np.int64)
        qweight = np.empty((rows, k), np.int8)
        scale = np.empty(rows, F32)
        for i in range(0, rows, step):
            chunk = x[i:i + step]
            if cols.size:
                chunk = chunk.copy()
                chunk[:, cols] = 0  # outlier columns: no codes, no say in the scale
            qweight[i:i + step], scale[i:i + step] = _quantize_rows(chunk)
        parts = {"qweight": qweight, "scale": scale}
        if cols.size:
            parts["outlier_cols"] = cols
            parts["outliers"] = np.ascontiguousarray(x[:, cols].astype(np.float16))
        return parts

    def dequantize_rows(self, parts: Mapping[str, np.ndarray], shape: tuple[int, ...],
                        start: int, stop: int) -> np.ndarray:
        rows, _ = matrix_shape(shape)
        start, stop, _ = slice(start, stop).indices(rows)
        stop = max(start, stop)
        out = parts["qweight"][start:stop].astype(F32)
        out *= parts["scale"][start:stop, None]
        if "outlier_cols" in parts:
            out[:, parts["outlier_cols"]] = parts["outliers"][start:stop]
        return out

    def part_specs(self, shape: tuple[int, ...], outliers: int = 0) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Parts of ``shape``; ``outliers`` columns add "outlier_cols" and "outliers" (none by default)."""
        rows, k = matrix_shape(shape)
        specs = {"qweight": ((rows, k), np.dtype(np.int8)), "scale": ((rows,), np.dtype(F32))}
        if outliers:
            specs["outlier_cols"] = ((outliers,), np.dtype(np.int64))
            specs["outliers"] = ((rows, outliers), np.dtype(np.float16))
        return specs

    def check_parts(self, parts: Mapping[str, np.ndarray], shape: tuple[int, ...]) -> None:
        """The base checks on the fixed parts, then the outlier parts (when present) including
        their contents: the column indices must be sorted, unique and inside the row."""
        super().check_parts({k: v for k, v in parts.items() if k not in _OUTLIER_PARTS}, shape)
        present = _OUTLIER_PARTS & set(parts)
        if not present:
            return
        if self.threshold is None or present != _OUTLIER_PARTS:
            raise QuantFormatError(f"int8: unexpected parts {sorted(present)} for {self!r}")
        cols = parts["outlier_cols"]
        if not isinstance(cols, np.ndarray) or cols.dtype != np.int64 or cols.ndim != 1 or cols.size == 0:
            raise QuantFormatError("int8: 'outlier_cols' must be a non-empty 1-d int64 array")
        _, k = matrix_shape(shape)
        if cols[0] < 0 or cols[-1] >= k or (cols.size > 1 and (np.diff(cols) <= 0).any()):
            raise QuantFormatError(f"int8: 'outlier_cols' must be strictly increasing column indices below {k}")
        specs = self.part_specs(shape, cols.size)
        got = parts["outliers"]
        want_shape, want_dtype = specs["outliers"]
        if not isinstance(got, np.ndarray) or got.dtype != want_dtype or got.shape != want_shape:
            raise QuantFormatError(f"int8: 'outliers' should be float16{want_shape}, got "
                                   f"{getattr(got, 'dtype', type(got).__name__)}{getattr(got, 'shape', '')}")


def _quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, scale) of a (rows, K) float32 chunk: absmax / 127 per row, zero rows get scale 0."""
    scale = (np.abs(x).max(axis=1) / F32(QMAX)).astype(F32) if x.shape[1] else np.zeros(x.shape[0], F32)
    safe = np.where(scale > 0, scale, F32(1))
    q = np.rint(x / safe[:, None])
    np.clip(q, -QMAX, QMAX, out=q)
    return q.astype(np.int8), scale
