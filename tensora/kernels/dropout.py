"""``dropout_apply(x, words, p)``: dropout's keep-mask from uint32 random words, and x * keep / (1 - p);
``dropout_grad(g, keep, p)``: its backward, g * keep / (1 - p).

Element i is kept iff ``(words[i] >> 8) >= ceil(float32(p) * 2**24)``, which is exactly
``(words[i] >> 8) * 2**-24 >= float32(p)``: the decision NumPy's ``random(dtype=float32)``
makes from the same words, so the masks are the ones the generator always gave (see
tensora.random.uint32_words). ``words`` has the mask's shape, which broadcasts against x
(one draw per channel for dropout2d). Returns ``(x * keep * (1 / (1 - p)), keep)`` with
NumPy's roundings (x * keep, then the scale), so an inf or NaN x dropped is NaN.

The native bodies (csrc/dropout.cpp) make the compare, the product and the bool mask in one
pass instead of three array passes (and the backward's product and scale in one instead of
two), for float32/float64 arrays of the mask's own shape; they agree with the references
bit for bit.

    >>> x = np.ones(4, np.float32)
    >>> out, keep = dropout_apply(x, np.array([0, 2 ** 31, 2 ** 32 - 1, 2 ** 30], np.uint32), 0.5)
    >>> out.tolist(), keep.tolist()
    ([0.0, 2.0, 2.0, 0.0], [False, True, True, False])
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from .registry import kernel


def threshold(p: float) -> int:
    """The smallest w >> 8 that keeps an element: ceil(float32(p) 2^24) (2^24 for p = 1: none kept)."""
    return math.ceil(float(np.float32(p)) * 2 ** 24)


@kernel("dropout_apply")
def dropout_apply(x: Any, words: Any, p: float) -> tuple[Any, Any]:
    """(x * keep / (1 - p) in x's dtype, bool keep of words' shape) for uint32 `words` broadcasting
    against x (arrays of one array module)."""
    keep = (words >> 8) >= threshold(p)
    out = x * keep
    out *= _scale(x, p)
    return out, keep


@kernel("dropout_grad")
def dropout_grad(g: Any, keep: Any, p: float) -> Any:
    """(g * keep) * (1 / (1 - p)) in g's dtype, for a bool `keep` broadcasting against g."""
    return g * keep * float(_scale(g, p))


def _scale(x: Any, p: float) -> Any:
    return x.dtype.type(0.0 if p >= 1 else 1.0 / (1.0 - p))


def _c(a: np.ndarray) -> np.ndarray:
    """a as the C-contiguous array the native loop takes (np.ascontiguousarray would make a 0-d array 1-d)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


@dropout_apply.native_body
def _dropout_apply_native(lib: ModuleType, x: Any, words: Any, p: float) -> tuple[Any, Any]:
    if not (isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64) and words.shape == x.shape):
        return dropout_apply.reference(x, words, p)
    x, words = _c(x), _c(words)
    out, keep = np.empty_like(x), np.empty(x.shape, np.bool_)
    lib.dropout_apply(x, words, out, keep, threshold(p), 0.0 if p >= 1 else 1.0 / (1.0 - p))
    return out, keep


@dropout_grad.native_body
def _dropout_grad_native(lib: ModuleType, g: Any, keep: Any, p: float) -> Any:
    if not (isinstance(g, np.ndarray) and g.dtype in (np.float32, np.float64) and keep.shape == g.shape):
        return dropout_grad.reference(g, keep, p)
    g, keep = _c(g), _c(keep)
    out = np.empty_like(g)
    lib.dropout_grad(g, keep, out, 0.0 if p >= 1 else 1.0 / (1.0 - p))
    return out
