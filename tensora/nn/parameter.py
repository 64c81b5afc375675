"""Parameter and Buffer: tensors that a Module registers when they are assigned as attributes.

Both are real Tensor subclasses, so every op takes them as it takes any tensor
(ops return plain Tensors). As torch.nn.Parameter does, a Parameter wraps its
data's array without copying; it is a leaf and the root of its own view tree
(no `_base`), so optimizers can update it in place under `no_grad()`. It shares
the data's version counter, because the two share memory.
"""

from __future__ import annotations

from typing import Any

from ..creation import empty
from ..tensor import Tensor, format_tensor


class Parameter(Tensor):
    """A Tensor that Module registers as a parameter; requires_grad is True by default.

    >>> import tensora
    >>> p = Parameter(tensora.zeros(2))
    >>> p.requires_grad, p.is_leaf
    (True, True)
    """

    def __init__(self, data: Tensor | None = None, requires_grad: bool = True) -> None:
        if data is None:
            data = empty(0)
        elif not isinstance(data, Tensor):
            raise TypeError(f"Parameter data must be a Tensor, got {type(data).__name__}")
        Tensor.__init__(self, data._data, device=data.device)
        self._vc = data._vc  # same memory, so in-place writes through either are counted once
        self.requires_grad = requires_grad

    def __deepcopy__(self, memo: dict) -> "Parameter":
        """A Parameter with a copy of the values and the same requires_grad (the grad is not copied)."""
        if id(self) in memo:
            return memo[id(self)]
        result = type(self)(self.detach().clone(), self.requires_grad)
        memo[id(self)] = result
        return result

    def __repr__(self) -> str:
        return "Parameter containing:\n" + format_tensor(self)


class Buffer(Tensor):
    """A Tensor that Module registers as a buffer when assigned (torch.nn.Buffer).

    persistent=False keeps it out of state_dict (a cache, not model state).

    >>> import tensora
    >>> Buffer(tensora.zeros(2), persistent=False).persistent
    False
    """

    def __init__(self, data: Tensor | None = None, *, persistent: bool = True) -> None:
        if data is None:
            data = empty(0)
        elif not isinstance(data, Tensor):
            raise TypeError(f"Buffer data must be a Tensor, got {type(data).__name__}")
        Tensor.__init__(self, data._data, device=data.device)
        self._vc = data._vc
        self.persistent = persistent

    def __deepcopy__(self, memo: dict[int, Any]) -> "Buffer":
        if id(self) in memo:
            return memo[id(self)]
        result = type(self)(self.detach().clone(), persistent=self.persistent)
        memo[id(self)] = result
        return result


__all__ = ["Parameter", "Buffer"]
