"""Tensor-like objects that take over an op: the ``__tensora_function__`` protocol.

Some objects stand in for a tensor without being one: a QuantizedTensor holds packed
blocks, not an array, and a matmul with it must run a fused kernel instead of reading a
dense weight. Such an object defines ``__tensora_function__(func, args, kwargs)``; the
ops that accept one (matmul, linear, embedding) call `override_for` first and hand the
call over, so `x @ qt.T` and `F.linear(x, qt)` work without ops importing the layer
that defines the object (tensora.quant sits above ops). The method returns
``NotImplemented`` for ops it does not take, which becomes a TypeError naming both.

This is PyTorch's ``__torch_function__`` idea, kept to the few ops that need it so the
common path pays one ``type(x) is Tensor`` check per argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..tensor import Tensor


def override_for(*args: Any) -> Any | None:
    """The first argument that is not a Tensor but defines ``__tensora_function__``, or None."""
    for a in args:
        if type(a) is not Tensor and hasattr(type(a), "__tensora_function__"):
            return a
    return None


def call_override(owner: Any, func: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
    """``owner.__tensora_function__(func, args, kwargs)``; TypeError if it declines."""
    result = type(owner).__tensora_function__(owner, func, args, kwargs)
    if result is NotImplemented:
        raise TypeError(f"{func.__name__} does not accept a {type(owner).__name__} "
                        f"(call .dequantize() first for a dense tensor)")
    return result
