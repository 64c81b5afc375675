"""Tensora: tensors, reverse-mode autograd and memory multiplication.

    >>> import tensora
    >>> x = tensora.arange(6).reshape(2, 3)
    >>> x.T.shape
    tensora.Size([3, 2])
"""

from __future__ import annotations

from . import dtypes, ops  # noqa: F401 - ops registers Tensor methods
from . import utils  # noqa: F401 - tensora.utils.checkpoint(fn, *args)
from .autograd import (enable_grad, inference_mode, is_grad_enabled, is_inference_mode_enabled, no_grad,
                       set_grad_enabled)
from .backend import native as _native
from .backend.threads import get_num_threads, set_num_threads
from .creation import *  # noqa: F403 - the creation API is public by design
from .creation import __all__ as _creation_all
from .device import device
from .dtypes import (bfloat16, can_cast, float8_e4m3fn, float8_e5m2, float16, float32, float64,
                     get_default_dtype, int8, int16, int32, int64, promote_types, result_type,
                     set_default_dtype, uint8)
from .dtypes import bool_ as bool  # noqa: A001 - torch spells it tensora.bool
from .errors import AutogradError, DeviceError, DTypeError, ShapeError, TensoraError
from .ops.registry import FUNCTIONS as _FUNCTIONS
from .random import Generator, get_rng_state, initial_seed, manual_seed, seed, set_rng_state
from .tensor import Size, Tensor, is_tensor
from . import io  # noqa: E402 - model files (safetensors, GGUF, checkpoints)
from .io import load, load_checkpoint, save, save_checkpoint
from . import data, nn, optim  # noqa: E402 - data loading; modules and layers; optimizers, schedulers
from .amp import GradScaler, autocast  # noqa: E402 - mixed precision

half, float, double = float16, float32, float64  # noqa: A001 - torch's aliases
long, int, short = int64, int32, int16  # noqa: A001

__version__ = "0.1.0"

globals().update(_FUNCTIONS)


def native_available() -> tuple[bool, str]:
    """(True, where it loaded from) if the compiled extension is in use, else (False, why not)."""
    return _native.status()


__all__ = (["Tensor", "Size", "device", "Generator", "manual_seed", "seed", "initial_seed",
            "get_rng_state", "set_rng_state", "no_grad", "enable_grad", "set_grad_enabled",
            "inference_mode", "is_grad_enabled", "is_inference_mode_enabled", "native_available",
            "set_num_threads", "get_num_threads",
            "promote_types", "result_type", "can_cast", "get_default_dtype", "set_default_dtype",
            "is_tensor", "autocast", "GradScaler", "save", "load", "save_checkpoint", "load_checkpoint", "TensoraError", "ShapeError", "DTypeError", "DeviceError", "AutogradError"]
           + list(_creation_all) + list(_FUNCTIONS) + list(dtypes.DTYPES))
