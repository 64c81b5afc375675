"""Separable resampling along one axis: interpolate and adaptive pooling, on arrays of any array module.

A map from an input axis to an output axis is a small host table: output j sums
x[index[j, t]] * weight[j, t] over its T taps. `resample` applies a table (as one matmul with
the dense matrix when the axis is short, else as T gathers), `transpose_table` builds the
table of the transposed map, which is the map's gradient. Split out of im2col.py, whose
windows are all the same size; these are not.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .windows import acc_dtype

DENSE_RESAMPLE_RATIO = 16  # measured: BLAS beats take + multiply + add up to ~16-32 inputs per tap


def resample(xp: Any, x: Any, axis: int, index: Any, weight: Any) -> Any:
    """out[..., j, ...] = sum_t x[..., index[j, t], ...] * weight[j, t] along `axis`.

    `index` and `weight` are small host (NumPy) tables of shape (out, T). Weighted maps over a
    short input dim (at most DENSE_RESAMPLE_RATIO * T) run as one matmul with the dense (out, in)
    matrix; pure gathers (nearest), long dims, and inputs holding inf/NaN (0 * inf would leak
    NaN into every output of the row) run as T gathers.
    """
    acc = acc_dtype(x.dtype)
    xa = x.astype(acc, copy=False)
    in_size = x.shape[axis]
    out_size, t = index.shape
    out_shape = list(x.shape)
    out_shape[axis] = out_size
    if xa.size == 0 or t == 0:
        return xp.zeros(out_shape, dtype=x.dtype)
    gather = bool((weight == 1).all())
    if not gather and in_size <= DENSE_RESAMPLE_RATIO * t and bool(xp.isfinite(xa).all()):
        dense = np.zeros((out_size, in_size))
        np.add.at(dense, (np.repeat(np.arange(out_size), t), index.ravel()), weight.ravel())
        dense = xp.asarray(dense.astype(acc))
        if axis in (-1, x.ndim - 1):
            out = xp.matmul(xa, dense.T)
        else:
            out = xp.moveaxis(xp.matmul(dense, xp.moveaxis(xa, axis, -2)), -2, axis)
        return out.astype(x.dtype, copy=False)
    shape = [1] * x.ndim
    shape[axis] = out_size
    out = None
    for j in range(t):
        part = xp.take(xa, xp.asarray(index[:, j]), axis=axis)
        if not gather:
            part *= xp.asarray(weight[:, j].astype(acc)).reshape(shape)
        if out is None:
            out = part
        else:
            out += part
    return out.astype(x.dtype, copy=False)


def transpose_table(index: np.ndarray, weight: np.ndarray, in_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The (in_size, M) table of the transposed map: which outputs each input feeds, with weights."""
    out_size, t = index.shape
    src = index.ravel()
    dst = np.repeat(np.arange(out_size, dtype=np.int64), t)
    w = weight.ravel()
    keep = w != 0
    src, dst, w = src[keep], dst[keep], w[keep]
    order = np.argsort(src, kind="stable")
    src, dst, w = src[order], dst[order], w[order]
    counts = np.bincount(src, minlength=in_size)
    m = int(counts.max()) if counts.size else 0
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])) if counts.size else counts
    rank = np.arange(src.size) - starts[src]
    tindex = np.zeros((in_size, m), dtype=np.int64)
    tweight = np.zeros((in_size, m), dtype=weight.dtype)
    tindex[src, rank] = dst
    tweight[src, rank] = w
    return tindex, tweight
