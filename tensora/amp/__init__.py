"""Mixed precision: `autocast` picks each op's precision, `GradScaler` keeps 16-bit gradients finite.

    >>> import tensora
    >>> model = tensora.nn.Linear(8, 8)
    >>> with tensora.autocast(dtype=tensora.bfloat16):
    ...     y = model(tensora.randn(4, 8))   # the GEMM runs in bfloat16
    >>> y.dtype
    tensora.bfloat16

Both follow torch.amp (torch.autocast on CPU, torch.amp.GradScaler). This package
sits just above `tensor`: `autograd.function.Op.apply` reads its state (`ACTIVE`)
and calls `autocast_inputs`, so it imports nothing that imports ops.
"""

from .autocast_mode import (ACTIVE, AUTOCAST, POLICY, autocast, autocast_inputs, autocast_op,
                            get_autocast_dtype, is_autocast_enabled)
from .grad_scaler import GradScaler, OptState

__all__ = ["autocast", "GradScaler", "OptState", "is_autocast_enabled", "get_autocast_dtype",
           "autocast_inputs", "autocast_op", "ACTIVE", "AUTOCAST", "POLICY"]
