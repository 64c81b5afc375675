"""``layer_norm_forward(x, weight, bias, eps)`` and ``layer_norm_backward(g, xhat, rstd, weight)``:
layer norm over the last axis of a (rows, n) array, and its input gradient.

Forward: x-hat = (x - mean) * rstd with rstd = 1 / sqrt(var + eps) (biased variance, as
torch.nn.functional.layer_norm), out = x-hat * weight + bias; returns (out, x-hat, rstd (rows,)),
out being x-hat itself when there is neither weight nor bias. Backward: with gw = g * weight,
dx = rstd * (gw - mean(gw) - x-hat * mean(gw * x-hat)). The parameters' gradients are plain
sums over rows, left to the caller (tensora/nn/_norms.py, which routes trailing-dims layer
norms of float32/float64 here).

The reference bodies are NumPy (row sums through einsum); the native bodies (csrc/layer_norm.cpp)
read each row twice instead of NumPy's five (forward) and four (backward) passes, for float32
(float64 runs the reference). They agree within 1e-5 relative + 1e-5 absolute on unit-scale rows
(float32 row sums in another order).

    >>> x = np.array([[1.0, 2.0, 3.0]])
    >>> out, xhat, rstd = layer_norm_forward(x, None, np.array([0.5, 0.5, 0.5]), 0.0)
    >>> out.round(4).tolist(), rstd.round(4).tolist()
    ([[-0.7247, 0.5, 1.7247]], [1.2247])
    >>> layer_norm_backward(np.array([[1.0, 0.0, 0.0]]), xhat, rstd, None).round(4).tolist()
    [[0.2041, -0.4082, 0.2041]]
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .registry import kernel


@kernel("layer_norm_forward")
def layer_norm_forward(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
                       eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(out, x-hat, rstd) for x (rows, n) and weight, bias (n,) or None, all of x's dtype."""
    inv_n = 1.0 / x.shape[-1]
    mean = np.einsum("ab->a", x) * inv_n
    xhat = np.subtract(x, mean[:, None])
    rstd = 1 / np.sqrt(np.einsum("ab,ab->a", xhat, xhat) * inv_n + eps)
    xhat *= rstd[:, None]
    out = xhat if weight is None else xhat * weight
    if bias is not None:
        out = out + bias if out is xhat else np.add(out, bias, out=out)
    return out, xhat, rstd


@kernel("layer_norm_backward")
def layer_norm_backward(g: np.ndarray, xhat: np.ndarray, rstd: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
    """dx (rows, n) for the output gradient g (rows, n), the forward's x-hat and rstd, and weight (n,) or None."""
    gw = g if weight is None else g * weight
    inv_n = 1.0 / g.shape[-1]
    t = xhat * (np.einsum("ab,ab->a", gw, xhat) * inv_n)[:, None]
    t += (np.einsum("ab->a", gw) * inv_n)[:, None]
    dx = np.subtract(gw, t, out=t)
    dx *= rstd[:, None]
    return dx


_NONE = np.empty(0, np.float32)  # "no weight / no bias" for the native bodies


def _float32(*arrays: Any) -> bool:
    return all(a is None or (isinstance(a, np.ndarray) and a.dtype == np.float32) for a in arrays)


def _c(a: np.ndarray | None) -> np.ndarray:
    """a as a C-contiguous array, or the empty stand-in for None."""
    if a is None:
        return _NONE
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


@layer_norm_forward.native_body
def _layer_norm_forward_native(lib: ModuleType, x: np.ndarray, weight: np.ndarray | None,
                               bias: np.ndarray | None, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not _float32(x, weight, bias) or x.ndim != 2 or x.shape[1] == 0:
        return layer_norm_forward.reference(x, weight, bias, eps)
    x = _c(x)
    xhat = np.empty_like(x)
    out = xhat if weight is None and bias is None else np.empty_like(x)
    rstd = np.empty(x.shape[0], np.float32)
    if out is xhat:  # the kernel writes both; give it a scratch output
        lib.layer_norm_forward(x, _NONE, _NONE, eps, np.empty_like(x), xhat, rstd)
    else:
        lib.layer_norm_forward(x, _c(weight), _c(bias), eps, out, xhat, rstd)
    return out, xhat, rstd


@layer_norm_backward.native_body
def _layer_norm_backward_native(lib: ModuleType, g: np.ndarray, xhat: np.ndarray, rstd: np.ndarray,
                                weight: np.ndarray | None) -> np.ndarray:
    if not _float32(g, xhat, rstd, weight) or g.ndim != 2:
        return layer_norm_backward.reference(g, xhat, rstd, weight)
    dx = np.empty(g.shape, np.float32)
    lib.layer_norm_backward(_c(g), _c(xhat), _c(rstd), _c(weight), dx)
    return dx
