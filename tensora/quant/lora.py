"""LoRA adapters for quantized layers: `LoRALinear` lives in tensora.nn (it is generic over any
base with in_features, out_features and weight); it is re-exported here because QLoRA, a
LoRALinear over a frozen QuantizedLinear, is where quantization users look for it.

    >>> import tensora
    >>> from tensora import nn
    >>> from tensora.quant import LoRALinear, QuantizedLinear
    >>> layer = LoRALinear(QuantizedLinear.from_float(nn.Linear(64, 32), "nf4"), r=4)
    >>> [name for name, p in layer.named_parameters() if p.requires_grad]
    ['lora_a', 'lora_b']
"""

from ..nn.modules.lora import LoRALinear, add_lora, load_lora_state_dict, lora_state_dict

__all__ = ["LoRALinear", "add_lora", "lora_state_dict", "load_lora_state_dict"]
