"""Resizing: interpolate (nearest, nearest-exact, linear, bilinear, trilinear, area).

Every mode here is separable: resizing a spatial dim is a sparse linear map
along that dim, out[j] = sum_t x[index[j, t]] * weight[j, t], with one or two
taps for nearest/linear and a window of taps for area (adaptive average
pooling). `Resample` applies one such map; its gradient is the same op with the
transposed table, so gradients of any order stay in `Resample`. The tables
follow PyTorch's index and weight formulas (aten/src/ATen/native/UpSample.h),
including its float32 arithmetic for float32 inputs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..autograd.function import Op
from ..errors import DTypeError, ShapeError, fmt_shape
from ..kernels import resample as rs
from ..tensor import Tensor
from .registry import register


class ResampleTable:
    """A sparse linear map from in_size to out_size points: (out_size, T) host index and weight arrays."""

    def __init__(self, index: np.ndarray, weight: np.ndarray, in_size: int) -> None:
        self.index, self.weight, self.in_size = index, weight, in_size
        self._transposed: ResampleTable | None = None

    @property
    def out_size(self) -> int:
        return self.index.shape[0]

    def is_identity(self) -> bool:
        return (self.in_size == self.out_size and self.index.shape[1] == 1
                and bool((self.index[:, 0] == np.arange(self.out_size)).all()) and bool((self.weight == 1).all()))

    def transposed(self) -> "ResampleTable":
        """The adjoint map (built once, and its own adjoint is this table)."""
        if self._transposed is None:
            t = ResampleTable(*rs.transpose_table(self.index, self.weight, self.in_size), in_size=self.out_size)
            t._transposed = self
            self._transposed = t
        return self._transposed


class Resample(Op, name="resample"):
    """out[..., j, ...] = sum_t x[..., index[j, t], ...] * weight[j, t] along one axis."""

    @staticmethod
    def forward(ctx, x, axis, table):
        ctx.axis, ctx.table = axis, table
        return rs.resample(ctx.xp, x, axis, table.index, table.weight)

    @staticmethod
    def backward(ctx, g):
        return Resample.apply(g, axis=ctx.axis, table=ctx.table.transposed())


def resample_dims(x: Tensor, tables: list[ResampleTable]) -> Tensor:
    """Apply one table per spatial dim (the last len(tables) dims), last dim first, as PyTorch's kernels do.

    Always a new tensor, as in PyTorch: a copy when every table is the identity.
    """
    first = x.ndim - len(tables)
    out = x
    for i in reversed(range(len(tables))):
        if not tables[i].is_identity():
            out = Resample.apply(out, axis=first + i, table=tables[i])
    return x.clone() if out is x else out


# -- tables (PyTorch's formulas) ----------------------------------------------------

def _identity(n: int) -> ResampleTable:
    return ResampleTable(np.arange(n, dtype=np.int64)[:, None], np.ones((n, 1)), n)


def _scale_value(scale: float | None, in_size: int, out_size: int, opmath: Any) -> Any:
    """compute_scales_value: 1/scale when a scale factor was given, else in/out, in opmath precision."""
    if scale is not None and scale > 0:
        return opmath(1.0 / scale)
    return opmath(in_size) / opmath(out_size)


def nearest_table(in_size: int, out_size: int, scale: float | None, exact: bool) -> ResampleTable:
    """Source index floor(j * s) ('nearest') or floor((j + 0.5) * s) ('nearest-exact'), in float32."""
    j = np.arange(out_size, dtype=np.int64)
    if not exact and out_size == in_size:
        return _identity(in_size)
    if not exact and out_size == 2 * in_size:
        src = j >> 1
    else:
        s = _scale_value(scale, in_size, out_size, np.float32)
        if exact:
            src = np.floor(((j + 0.5) * np.float64(s)).astype(np.float32))
        else:
            src = np.floor(j.astype(np.float32) * s)
        src = np.minimum(src.astype(np.int64), in_size - 1)
    return ResampleTable(src[:, None], np.ones((out_size, 1)), in_size)


def linear_table(in_size: int, out_size: int, align_corners: bool, scale: float | None,
                 opmath: Any) -> ResampleTable:
    """Two taps per output with weights (1 - lambda, lambda), as compute_source_index_and_lambda."""
    if out_size == in_size:
        return _identity(in_size)
    j = np.arange(out_size, dtype=np.int64)
    if align_corners:
        ratio = opmath(in_size - 1) / opmath(out_size - 1) if out_size > 1 else opmath(0)
        src = ratio * j.astype(opmath)
    else:
        ratio = _scale_value(scale, in_size, out_size, opmath)
        src = np.maximum((np.float64(ratio) * (j + 0.5) - 0.5).astype(opmath), opmath(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam1 = np.clip(src - i0.astype(opmath), 0, 1).astype(opmath)
    i1 = i0 + (i0 < in_size - 1)
    lam0 = (opmath(1) - lam1).astype(opmath)
    return ResampleTable(np.stack([i0, i1], 1), np.stack([lam0, lam1], 1).astype(np.float64), in_size)


def adaptive_table(in_size: int, out_size: int) -> ResampleTable:
    """Window [floor(j * in / out), ceil((j + 1) * in / out)) averaged, as adaptive_avg_pool."""
    if out_size == in_size:
        return _identity(in_size)
    j = np.arange(out_size, dtype=np.int64)
    start = (j * in_size) // out_size
    end = -((-(j + 1) * in_size) // out_size)
    length = end - start
    taps = np.arange(int(length.max()) if out_size else 0)
    inside = taps[None, :] < length[:, None]
    index = np.where(inside, start[:, None] + taps[None, :], 0)
    weight = np.where(inside, 1.0 / np.maximum(length, 1)[:, None], 0.0)
    return ResampleTable(index, weight, in_size)


# -- interpolate --------------------------------------------------------------------

_MODES = {"nearest": None, "nearest-exact": None, "area": None, "linear": 3, "bilinear": 4, "trilinear": 5}


def _sizes(x: Tensor, nd: int, size: Any, scale_factor: Any, recompute_scale_factor: bool | None
           ) -> tuple[tuple[int, ...], tuple[float | None, ...]]:
    """Output sizes and the scale factors the index formulas use (None: derive from the sizes)."""
    if (size is None) == (scale_factor is None):
        raise ValueError("only one of size or scale_factor should be defined" if size is not None
                         else "either size or scale_factor should be defined")
    in_size = tuple(x.shape[2:])
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("recompute_scale_factor is not meaningful with an explicit size.")
        sizes = tuple(size) if isinstance(size, (tuple, list)) else (size,) * nd
        if len(sizes) != nd:
            raise ValueError(f"Input and output must have the same number of spatial dimensions, but got input "
                             f"with spatial dimensions of {list(in_size)} and output size of {list(sizes)}. "
                             f"Please provide input tensor in (N, C, d1, d2, ...,dK) format and output size in "
                             f"(o1, o2, ...,oK) format.")
        return tuple(int(s) for s in sizes), (None,) * nd
    scales = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * nd
    if len(scales) != nd:
        raise ValueError(f"Input and scale_factor must have the same number of spatial dimensions, but got "
                         f"input with spatial dimensions of {list(in_size)} and scale_factor of shape "
                         f"{list(scales)}.")
    scales = tuple(float(s) for s in scales)
    out = tuple(int(math.floor(i * s)) for i, s in zip(in_size, scales))
    return out, ((None,) * nd if recompute_scale_factor else scales)


@register(method=False)
def interpolate(input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                antialias: bool = False) -> Tensor:
    """Resize (N, C, *spatial) to `size` or by `scale_factor`, as torch.nn.functional.interpolate.

    Modes: 'nearest', 'nearest-exact', 'area' (3-D to 5-D input), 'linear' (3-D), 'bilinear' (4-D),
    'trilinear' (5-D); align_corners applies to the linear modes. antialias is not available.

    >>> import tensora
    >>> x = tensora.arange(4.0).reshape(1, 1, 2, 2)
    >>> tensora.interpolate(x, scale_factor=2, mode="nearest")[0, 0, 0].tolist()
    [0.0, 0.0, 1.0, 1.0]
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"interpolate: expected a Tensor input, got {type(input).__name__}")
    if mode not in _MODES:
        raise ValueError(f"interpolate: mode {mode!r} is not supported; choose one of {', '.join(_MODES)}")
    if antialias:
        raise ValueError("interpolate: antialias=True is not supported")
    if not 3 <= input.ndim <= 5:
        raise ShapeError(f"interpolate: expected a 3-D, 4-D or 5-D input (N, C, *spatial), got shape "
                         f"{fmt_shape(input.shape)}")
    want = _MODES[mode]
    if want is not None and input.ndim != want:
        raise ShapeError(f"Got {input.ndim}D input, but {mode} mode needs {want}D input")
    linear = want is not None
    if align_corners is not None and not linear:
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    if not input.dtype.is_floating_point:
        raise DTypeError(f"interpolate: {mode} mode is not implemented for {input.dtype.name} input")
    nd = input.ndim - 2
    out, scales = _sizes(input, nd, size, scale_factor, recompute_scale_factor)
    in_size = tuple(input.shape[2:])
    if any(i <= 0 for i in in_size) or any(o <= 0 for o in out):
        raise ShapeError(f"Input and output sizes should be greater than 0, but got input {fmt_shape(in_size)} "
                         f"output {fmt_shape(out)}")
    opmath = np.float64 if input.dtype.name == "float64" else np.float32
    if mode == "area":
        tables = [adaptive_table(i, o) for i, o in zip(in_size, out)]
    elif linear:
        tables = [linear_table(i, o, bool(align_corners), s, opmath) for i, o, s in zip(in_size, out, scales)]
    else:
        tables = [nearest_table(i, o, s, mode == "nearest-exact") for i, o, s in zip(in_size, out, scales)]
    return resample_dims(input, tables)
