"""Hot kernels: one entry point per kernel, each a NumPy reference body plus an
optional native body from the compiled extension (``tensora._C``).

The reference body defines the kernel and always works; the native body must match
it (bit for bit for casts and packing, within a stated tolerance for arithmetic) and
is used when ``tensora.backend.native.load()`` finds the extension and the input is
large enough for it to pay. ``KERNELS`` lists every kernel by name (see
``registry.py`` for the pattern); a kernel module fills it when it is imported, and
tests sweep it with both bodies. Kernels take and return arrays and know nothing of
Tensor or autograd.

    >>> from tensora.kernels import KERNELS, quant_matmul
    >>> {"float32_to_bfloat16", "bfloat16_to_float32", "quant_linear"} <= set(KERNELS)
    True
"""

from . import cast
from .registry import KERNELS, Kernel, kernel

__all__ = ["KERNELS", "Kernel", "kernel", "cast"]
