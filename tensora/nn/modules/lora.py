"""LoRA adapters: train a low-rank update beside a frozen (often quantized) linear layer.

``LoRALinear(base, r, alpha)`` computes ``base(x) + (dropout(x) @ A.T @ B.T) * alpha / r``
with A (r, in) initialised like nn.Linear's weight and B (out, r) at zero, so training
starts from the base model's outputs exactly (Hu et al., 2021). The base is anything with
``in_features``, ``out_features`` and a ``weight`` (nn.Linear, quant.QuantizedLinear): with
a QuantizedLinear base this is QLoRA (Dettmers et al., 2023): the base weight is 4-bit and
frozen, gradients flow through its fused kernel to x, and only A and B are trained.

`add_lora(model, r, alpha, targets)` swaps matching layers for LoRALinear in place and
freezes everything else; `lora_state_dict` / `load_lora_state_dict` save and restore the
adapters alone (a few MB beside a multi-GB base); `merge()` folds B @ A into a dense base
for inference at no extra cost, `unmerge()` takes it out again.

    >>> import tensora
    >>> from tensora import nn
    >>> model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> add_lora(model, r=4, targets=["0"])
    ['0']
    >>> sorted(lora_state_dict(model))
    ['0.lora_a', '0.lora_b']
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ...autograd.grad_mode import no_grad
from ...creation import empty, zeros
from ...tensor import Tensor
from .. import init
from ..module import Module
from ..parameter import Parameter
from .dropout import Dropout
from .linear import Identity

LORA_KEYS = ("lora_a", "lora_b")


class LoRALinear(Module):
    """A frozen ``base`` linear layer (dense or quantized) plus a trainable rank-``r`` update."""

    def __init__(self, base: Module, r: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRALinear: rank r must be >= 1, got {r}")
        for attr in ("in_features", "out_features", "weight"):
            if not hasattr(base, attr):
                raise TypeError(f"LoRALinear: the base must have in_features, out_features and weight; "
                                f"{type(base).__name__} has no {attr}")
        self.base = base.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r
        self.merged = False
        dtype = base.weight.dtype
        self.lora_a = Parameter(empty(r, self.in_features, dtype=dtype))
        self.lora_b = Parameter(zeros(self.out_features, r, dtype=dtype))
        self.reset_parameters()
        self.dropout = Dropout(dropout) if dropout > 0 else Identity()

    def reset_parameters(self) -> None:
        """A as nn.Linear initialises its weight, B = 0: the adapter starts as the identity update."""
        init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        init.zeros_(self.lora_b)

    def forward(self, x: Tensor) -> Tensor:
        if self.merged:
            return self.base(x)
        return self.base(x) + (self.dropout(x) @ self.lora_a.T @ self.lora_b.T) * self.scaling

    def delta_weight(self) -> Tensor:
        """The update B @ A * alpha / r, shaped like the base weight (out, in)."""
        return (self.lora_b @ self.lora_a) * self.scaling

    def merge(self) -> None:
        """Add the update into a dense base weight, so forward is the base layer alone.

        A quantized base refuses: requantizing W + BA would round the whole weight again
        and the merged layer would no longer compute what was trained (the update is small
        next to a 4-bit step, so much of it would round away). Dequantize the base into an
        nn.Linear first, or keep the adapter separate (it costs r * (in + out) MACs per token).
        """
        if self.merged:
            return
        weight = self.base.weight
        if not isinstance(weight, Tensor) or not weight.is_floating_point():
            raise TypeError(f"LoRALinear.merge: the base weight is {type(weight).__name__}, not a dense float "
                            "tensor; requantizing it would change what was trained. Dequantize the base into "
                            "an nn.Linear and merge into that, or keep the adapter unmerged")
        with no_grad():
            weight += self.delta_weight().to(weight.dtype)
        self.merged = True

    def unmerge(self) -> None:
        """Take the update back out of the base weight (equal up to float rounding)."""
        if not self.merged:
            return
        weight = self.base.weight
        with no_grad():
            weight -= self.delta_weight().to(weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}" + (", merged" if self.merged else "")


Targets = Sequence[str] | Callable[[str, Module], bool] | None


def _is_linear(module: Module) -> bool:
    return all(hasattr(module, a) for a in ("in_features", "out_features", "weight")) and not isinstance(
        module, LoRALinear)


def _matches(targets: Targets, name: str, module: Module) -> bool:
    if targets is None:
        return True
    if callable(targets):
        return bool(targets(name, module))
    leaf = name.rsplit(".", 1)[-1]
    return any(fnmatch.fnmatchcase(name, t) or fnmatch.fnmatchcase(leaf, t) for t in targets)


def add_lora(model: Module, r: int = 8, alpha: float = 16.0, targets: Targets = None,
             dropout: float = 0.0) -> list[str]:
    """Replace the linear layers of `model` that match `targets` by LoRALinear, in place; freeze the rest.

    targets: glob patterns matched against a layer's full name ("layers.*.attn.q_proj") or
    its last part ("q_proj"), or a predicate ``(name, module) -> bool``; None takes every
    linear layer (anything with in_features, out_features and weight, quantized or not).
    Returns the names replaced. Afterwards only the adapters require grad.
    """
    chosen = [(name, m) for name, m in model.named_modules() if name and _is_linear(m) and _matches(targets, name, m)]
    if not chosen:
        raise ValueError(f"add_lora: no linear layer of {type(model).__name__} matches {targets!r}")
    model.requires_grad_(False)
    for name, module in chosen:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, LoRALinear(module, r=r, alpha=alpha, dropout=dropout))
    return [name for name, _ in chosen]


def lora_state_dict(model: Module) -> dict[str, Tensor]:
    """The adapters' tensors alone ("<layer>.lora_a", "<layer>.lora_b"), for tensora.save."""
    return {k: v for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] in LORA_KEYS}


def load_lora_state_dict(model: Module, state_dict: Mapping[str, Any]) -> None:
    """Load adapters saved by lora_state_dict into a model that has the same add_lora layers.

    Every adapter of the model must be given and nothing else: a missing or extra key is a
    KeyError naming it (a partial load would silently leave some adapters at zero)."""
    ours = set(lora_state_dict(model))
    given = set(state_dict)
    if ours != given:
        raise KeyError(f"load_lora_state_dict: missing {sorted(ours - given)}, unexpected {sorted(given - ours)}")
    model.load_state_dict(dict(state_dict), strict=False)
