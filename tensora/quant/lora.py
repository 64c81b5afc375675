"""LoRA adapters: train a low-rank update beside a frozen (often quantized) layer.

``LoRALinear(base, r, alpha)`` computes ``base(x) + (dropout(x) @ A.T @ B.T) * alpha / r``
with A (r, in) initialised like nn.Linear's weight and B (out, r) at zero, so training
starts from the base model's outputs exactly (Hu et al., 2021). With a QuantizedLinear
base this is QLoRA: the base weight is 4-bit and frozen, gradients flow through its
fused kernel to x, and only A and B (and nothing of size out x in) are trained.

    >>> import tensora
    >>> from tensora import nn
    >>> from tensora.quant import LoRALinear, QuantizedLinear
    >>> layer = LoRALinear(QuantizedLinear.from_float(nn.Linear(64, 32), "nf4"), r=4)
    >>> [name for name, p in layer.named_parameters() if p.requires_grad]
    ['lora_a', 'lora_b']
"""

from __future__ import annotations

import math

from ..creation import empty, zeros
from ..nn import Dropout, Identity, Linear, Module, Parameter, init
from ..tensor import Tensor
from .layers import QuantizedLinear


class LoRALinear(Module):
    """A frozen ``base`` Linear or QuantizedLinear plus a trainable rank-``r`` update."""

    def __init__(self, base: Linear | QuantizedLinear, r: int = 8, alpha: float = 16.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRALinear: rank r must be >= 1, got {r}")
        self.base = base.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r
        dtype = base.weight.dtype
        self.lora_a = Parameter(empty(r, self.in_features, dtype=dtype))
        self.lora_b = Parameter(zeros(self.out_features, r, dtype=dtype))
        init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.dropout = Dropout(dropout) if dropout > 0 else Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_a.T @ self.lora_b.T) * self.scaling

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}"
