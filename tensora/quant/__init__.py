"""Quantized tensors: formats, QuantizedTensor, quantized layers, LoRA, model-level quantize().

    >>> import tensora
    >>> from tensora import quant
    >>> "nf4" in quant.formats() and "q4_k" in quant.formats()
    True
    >>> qt = quant.quantize_tensor(tensora.randn(16, 64), "nf4", block_size=64, double_quant=True)
    >>> qt.dequantize().shape
    tensora.Size([16, 64])

Where things live:

    formats/     one module per format family, all registered in formats.FORMATS
    tensor.py    QuantizedTensor and the differentiable fused products
    layers.py    QuantizedLinear, QuantizedEmbedding
    lora.py      LoRALinear (QLoRA on a frozen quantized base)
    model.py     quantize(module, format, ...) and memory_report(module)

The fused kernels are tensora/kernels/quant_matmul.py (NumPy reference + native body);
``set_activation_bits(8)`` opts their products into llama.cpp's 8-bit activations (faster,
coarser; the default 15 bits keeps the product within 2**-15 of the exact one).
"""

from __future__ import annotations

from ..kernels.quant_matmul import activation_bits, set_activation_bits
from .formats import FORMATS, QuantFormat, QuantFormatError, get_format
from .layers import QuantizedEmbedding, QuantizedLinear
from .lora import LoRALinear
from .model import MemoryReport, QuantizeResult, memory_report, quantize
from .tensor import QuantizedTensor, from_gguf, quantize_tensor, quantized_linear


def formats() -> list[str]:
    """Names of the registered quantization formats."""
    return sorted(FORMATS)


__all__ = ["FORMATS", "LoRALinear", "activation_bits", "set_activation_bits", "MemoryReport", "QuantFormat", "QuantFormatError", "QuantizeResult",
           "QuantizedEmbedding", "QuantizedLinear", "QuantizedTensor", "formats", "from_gguf", "get_format",
           "memory_report", "quantize", "quantize_tensor", "quantized_linear"]
