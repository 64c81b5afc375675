"""Gradient clipping: by the total norm of all gradients, or elementwise by value.

Same semantics as torch.nn.utils: the total norm is the norm of the per-gradient
norms (so it equals the norm of all gradients concatenated), it comes back as a
0-d tensor in the gradients' dtype, and gradients are scaled by
min(1, max_norm / (total_norm + 1e-6)) in place.
"""

from __future__ import annotations

import math
import types
import warnings
from typing import Any, Iterable

import numpy as np

from ..dtypes import get_default_dtype
from ..tensor import Tensor
from .optimizer import array_module

TensorOrTensors = Tensor | Iterable[Tensor]


def _as_list(tensors: TensorOrTensors) -> list[Tensor]:
    return [tensors] if isinstance(tensors, Tensor) else list(tensors)


def _vector_norm(xp: Any, a: Any, p: float) -> Any:
    """torch.linalg.vector_norm of an array, as a 0-d array in a's dtype (low-precision floats sum in float32)."""
    work = a if a.dtype.itemsize >= 4 else a.astype(np.float32)
    if p == 2:
        flat = work.reshape(-1)
        out = xp.sqrt(xp.dot(flat, flat))  # BLAS dot: one pass, no |a|^2 temporary
    elif p == math.inf:
        out = xp.abs(work).max() if work.size else xp.zeros((), work.dtype)
    elif p == -math.inf:
        out = xp.abs(work).min() if work.size else xp.asarray(math.inf, work.dtype)
    elif p == 0:
        out = xp.count_nonzero(work)
    elif p == 1:
        out = xp.abs(work).sum()
    else:
        out = (xp.abs(work) ** p).sum() ** (1.0 / p)
    return xp.asarray(out, dtype=a.dtype)


def get_total_norm(tensors: TensorOrTensors, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                   foreach: bool | None = None) -> Tensor:
    """The norm_type-norm of all `tensors` together, as a 0-d tensor on the first one's device.

    foreach is accepted for PyTorch compatibility; each tensor is reduced by one
    vectorised call either way.
    """
    tensors = _as_list(tensors)
    norm_type = float(norm_type)
    if not tensors:
        return Tensor(np.zeros((), dtype=get_default_dtype().np_dtype))  # torch.tensor(0.0)
    first = tensors[0]
    xp = array_module(first)
    norms = [_vector_norm(xp, t.to(first.device)._data, norm_type) for t in tensors]
    dtype = np.result_type(*(n.dtype for n in norms))
    total = _vector_norm(xp, xp.stack([n.astype(dtype) for n in norms]), norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, "
                           "so it cannot be clipped. To disable this error and scale the gradients by the "
                           "non-finite norm anyway, set `error_if_nonfinite=False`")
    return Tensor(total, device=first.device)


def clip_grads_with_norm_(parameters: TensorOrTensors, max_norm: float, total_norm: Tensor,
                          foreach: bool | None = None) -> None:
    """Scale every .grad by min(1, max_norm / (total_norm + 1e-6)), in place."""
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    if not grads:
        return
    xp, total = array_module(total_norm), total_norm._data
    # torch computes this in the norm's dtype, max_norm / x as reciprocal(x) * max_norm.
    coef = xp.minimum(xp.reciprocal(total + total.dtype.type(1e-6)) * float(max_norm), 1.0)
    coef = Tensor(xp.asarray(coef, dtype=total.dtype), device=total_norm.device)
    if bool(coef._data == 1.0):  # x * 1 == x exactly: skip the pass over the gradients
        return
    for g in grads:
        g._data *= coef.to(g.device)._data
        g._bump_version()


def clip_grad_norm_(parameters: TensorOrTensors, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach: bool | None = None) -> Tensor:
    """Rescale gradients so their total norm is at most max_norm; returns the norm before clipping.

    >>> import tensora
    >>> w = tensora.zeros(2, requires_grad=True)
    >>> w.grad = tensora.tensor([3.0, 4.0])
    >>> clip_grad_norm_([w], max_norm=1.0).item()
    5.0
    >>> [round(v, 4) for v in w.grad.tolist()]
    [0.6, 0.8]
    """
    if not isinstance(parameters, Tensor):
        is_generator = isinstance(parameters, types.GeneratorType)
        parameters = list(parameters)
        if is_generator and not parameters:
            warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=2)
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    total_norm = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(parameters, max_norm, total_norm, foreach)
    return total_norm


def clip_grad_value_(parameters: TensorOrTensors, clip_value: float, foreach: bool | None = None) -> None:
    """Clamp every .grad to [-clip_value, clip_value], in place (NaN stays NaN, as torch.clamp)."""
    clip_value = float(clip_value)
    for p in _as_list(parameters):
        if p.grad is not None:
            array_module(p.grad).clip(p.grad._data, -clip_value, clip_value, out=p.grad._data)
            p.grad._bump_version()
