"""Tensor.new_zeros / new_ones / new_full / new_empty / new_tensor: new tensors "like" an existing one.

As torch.Tensor.new_*: the result takes the source tensor's dtype and device unless
`dtype=` / `device=` say otherwise, never its shape or values (new_tensor ignores
what its data would infer: an int32 tensor's new_tensor([1.7]) is int32 [1]). The
result is a fresh leaf with no history; `requires_grad=True` makes it one that
records. Generic code uses these to make tensors that follow its input's dtype
and device without spelling them out.

    >>> import tensora
    >>> x = tensora.ones(2, dtype=tensora.float64)
    >>> x.new_zeros(3).dtype, x.new_full((2, 2), 7).tolist()
    (tensora.float64, [[7.0, 7.0], [7.0, 7.0]])
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

from .. import creation
from ..tensor import Tensor
from .registry import register


def _like(x: Tensor, dtype: Any, device: Any) -> dict[str, Any]:
    return {"dtype": x.dtype if dtype is None else dtype, "device": x.device if device is None else device}


@register(function=False)
def new_zeros(x: Tensor, *size: Any, dtype: Any = None, device: Any = None,
              requires_grad: bool = False) -> Tensor:
    """Zeros of `size` (ints, or one tuple/list), with x's dtype and device by default."""
    return creation.zeros(*size, **_like(x, dtype, device), requires_grad=requires_grad)


@register(function=False)
def new_ones(x: Tensor, *size: Any, dtype: Any = None, device: Any = None,
             requires_grad: bool = False) -> Tensor:
    """Ones of `size` (ints, or one tuple/list), with x's dtype and device by default."""
    return creation.ones(*size, **_like(x, dtype, device), requires_grad=requires_grad)


@register(function=False)
def new_empty(x: Tensor, *size: Any, dtype: Any = None, device: Any = None,
              requires_grad: bool = False) -> Tensor:
    """Uninitialised memory of `size`, with x's dtype and device by default."""
    return creation.empty(*size, **_like(x, dtype, device), requires_grad=requires_grad)


@register(function=False)
def new_full(x: Tensor, size: Sequence[int], fill_value: Any, *, dtype: Any = None, device: Any = None,
             requires_grad: bool = False) -> Tensor:
    """`fill_value` (cast to the dtype: 3.5 fills an int tensor with 3) in the shape `size` (a tuple or list).

    Unlike full(), the dtype is x's, not one inferred from fill_value.
    """
    if not isinstance(size, (tuple, list)):
        raise TypeError(f"new_full(): argument 'size' must be a tuple of ints, not {type(size).__name__}")
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    opts = _like(x, dtype, device)
    return creation._fill(tuple(size), fill_value, opts["dtype"], opts["device"], requires_grad)


@register(function=False)
def new_tensor(x: Tensor, data: Any, *, dtype: Any = None, device: Any = None,
               requires_grad: bool = False) -> Tensor:
    """A copy of `data` (lists, numbers, arrays, tensors) as a leaf with x's dtype and device by default."""
    if isinstance(data, Tensor):
        # torch warns here too: the copy is detached, which callers porting code may not expect.
        warnings.warn("To copy construct from a tensor, it is recommended to use sourceTensor.detach().clone() "
                      "or sourceTensor.detach().clone().requires_grad_(True), rather than "
                      "tensor.new_tensor(sourceTensor).", UserWarning, stacklevel=2)
    return creation.tensor(data, **_like(x, dtype, device), requires_grad=requires_grad)
