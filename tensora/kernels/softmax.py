"""``softmax_rows(x, out, log)``: softmax or log-softmax over the last axis of a small array.

On a small input a NumPy softmax is five ufunc calls (max, subtract, exp, sum, divide),
each costing more in call overhead than its arithmetic; the native body (csrc/softmax.cpp)
makes the same three passes per row in one call. On large inputs NumPy's SIMD exp is the
faster loop, so tensora/ops/softmax.py sends only inputs of at most ``SMALL`` elements
here. Native and reference agree within 1e-6 relative for softmax and 1e-6 absolute for
log-softmax, whose values all carry the row's log-sum (float32: exp may differ in its
last bit and the row sum is taken in another order; float64: 1e-13).

    >>> x = np.log(np.array([[1.0, 3.0]]))
    >>> softmax_rows(x, np.empty_like(x), False).round(12).tolist()
    [[0.25, 0.75]]
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from .registry import kernel

#: Largest input (elements) the softmax ops route to this kernel.
SMALL = 1024


@kernel("softmax_rows")
def softmax_rows(x: np.ndarray, out: np.ndarray, log: bool) -> np.ndarray:
    """Softmax (``log=False``) or log-softmax over the last axis of C-contiguous float32 or
    float64 ``x`` into ``out`` (same shape and dtype, not overlapping x); returns out.
    A row of -inf gives NaN and a NaN makes its row NaN, as in NumPy and PyTorch."""
    if x.ndim == 0 or x.size == 0 or out.shape != x.shape or out.dtype != x.dtype:
        raise ValueError(f"softmax_rows: x {x.dtype} {x.shape} and out {out.dtype} {out.shape} do not fit")
    np.subtract(x, x.max(axis=-1, keepdims=True), out=out)
    if log:
        out -= np.log(np.exp(out).sum(axis=-1, keepdims=True))
    else:
        np.exp(out, out=out)
        out /= out.sum(axis=-1, keepdims=True)
    return out


@softmax_rows.native_body
def _softmax_rows_native(lib: ModuleType, x: np.ndarray, out: np.ndarray, log: bool) -> np.ndarray:
    lib.softmax_rows(x, out, log)
    return out
