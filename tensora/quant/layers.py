"""Layers whose weight is a QuantizedTensor: QuantizedLinear and QuantizedEmbedding.

They are drop-in replacements for nn.Linear / nn.Embedding built from one with
`from_float`. The weight is frozen (it has no gradient and is not a Parameter); the
bias stays a trainable Parameter. In a state dict the weight appears under its usual
key as a QuantizedTensor, so `tensora.save` writes its packed parts and loading one
back needs no re-quantization. Loading assigns into the layer's QuantizedTensor in place
(as loading copies into a Parameter), so weights tied between layers stay tied.
"""

from __future__ import annotations

from typing import Any

from ..creation import empty
from ..errors import ShapeError, fmt_shape
from ..nn import Embedding, Linear, Module, Parameter
from ..nn import functional as F
from ..tensor import Tensor
from .formats import QuantFormat
from .tensor import QuantizedTensor, quantize_tensor, quantized_linear


class _QuantizedWeight(Module):
    """Shared state-dict plumbing: the QuantizedTensor `weight` is saved and loaded like a buffer."""

    weight: QuantizedTensor

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.weight
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        key = prefix + "weight"
        if key in state_dict:
            value = state_dict[key]
            want = tuple(self.weight.shape)
            if isinstance(value, QuantizedTensor):
                problem = self._unusable(value)
                if tuple(value.shape) != want:
                    error_msgs.append(f"size mismatch for {key}: copying a quantized weight with shape "
                                      f"{fmt_shape(value.shape)}, the shape in current model is {fmt_shape(want)}.")
                elif problem:
                    error_msgs.append(f"{key}: {problem}")
                else:
                    self.weight._assign(value)
            elif isinstance(value, Tensor):
                if tuple(value.shape) != want:
                    error_msgs.append(f"size mismatch for {key}: copying a param with shape {fmt_shape(value.shape)} "
                                      f"from checkpoint, the shape in current model is {fmt_shape(want)}.")
                else:
                    self.weight._assign(quantize_tensor(value, self.weight.format))  # a dense checkpoint
            else:
                error_msgs.append(f"{key}: expected a QuantizedTensor or a dense tensor of shape "
                                  f"{fmt_shape(want)}, got {type(value).__name__}")
        elif strict:
            missing_keys.append(key)
        rest = {k: v for k, v in state_dict.items() if k != key}
        super()._load_from_state_dict(rest, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _unusable(self, weight: QuantizedTensor) -> str | None:
        """Why ``weight`` cannot serve this layer (None when it can)."""
        return None

    def _apply(self, fn: Any, recurse: bool = True) -> Module:
        """model.to(dtype) / .half() / .double() reach the quantized weight too: its result dtype
        follows what ``fn`` does to a tensor of that dtype (in place, so tied weights stay tied);
        a move off the CPU raises (QuantizedTensor.to)."""
        super()._apply(fn, recurse)
        probe = fn(empty(0, dtype=self.weight.dtype))
        if probe.device != self.weight.device or probe.dtype is not self.weight.dtype:
            self.weight._assign(self.weight.to(probe.device, probe.dtype))
        return self


class QuantizedLinear(_QuantizedWeight):
    """y = x @ W.T + bias with W quantized; gradients reach x and bias (W is frozen)."""

    def __init__(self, weight: QuantizedTensor, bias: Parameter | Tensor | None = None) -> None:
        super().__init__()
        if weight.ndim != 2:
            raise ShapeError(f"QuantizedLinear: weight must be 2-D (out, in), got {fmt_shape(weight.shape)}")
        self.out_features, self.in_features = weight.shape
        self.weight = weight
        if bias is not None and not isinstance(bias, Parameter):
            bias = Parameter(bias.detach())
        self.bias = bias

    @classmethod
    def from_float(cls, linear: Linear, format: str | QuantFormat, **options: Any) -> QuantizedLinear:
        """Quantize ``linear``'s weight; the bias is shared, not copied."""
        return cls(quantize_tensor(linear.weight, format, **options), linear.bias)

    def forward(self, input: Tensor) -> Tensor:
        return quantized_linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, format={self.weight.format!r}")


class QuantizedEmbedding(_QuantizedWeight):
    """Looks up rows of a quantized (num_embeddings, dim) table, decoding only the rows asked for."""

    def __init__(self, weight: QuantizedTensor, padding_idx: int | None = None) -> None:
        super().__init__()
        if weight.ndim != 2:
            raise ShapeError(f"QuantizedEmbedding: weight must be 2-D, got {fmt_shape(weight.shape)}")
        if weight.is_transposed:
            raise ShapeError(f"QuantizedEmbedding: {self._unusable(weight)}")
        self.num_embeddings, self.embedding_dim = weight.shape
        self.weight = weight
        self.padding_idx = padding_idx

    @classmethod
    def from_float(cls, embedding: Embedding, format: str | QuantFormat, **options: Any) -> QuantizedEmbedding:
        return cls(quantize_tensor(embedding.weight, format, **options), embedding.padding_idx)

    def forward(self, input: Tensor) -> Tensor:
        return F.embedding(input, self.weight, self.padding_idx)

    def _unusable(self, weight: QuantizedTensor) -> str | None:
        if weight.is_transposed:
            return ("a transposed (.T) QuantizedTensor cannot be an embedding table: its rows are the stored "
                    "matrix's columns, which the blocks do not hold together")
        return None

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, format={self.weight.format!r}"

