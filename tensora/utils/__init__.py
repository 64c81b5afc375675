"""Utilities on top of autograd: activation checkpointing (torch.utils.checkpoint's interface)
and `saved_bytes`, the size of what a graph keeps for backward.

    >>> import tensora.utils
    >>> x = tensora.randn(3, requires_grad=True)
    >>> tensora.utils.checkpoint(lambda h: (h * h).sum(), x).backward()
    >>> bool(((x.grad - 2 * x.detach()).abs() < 1e-6).all())
    True
"""

from .checkpoint import checkpoint, checkpoint_sequential, saved_bytes

__all__ = ["checkpoint", "checkpoint_sequential", "saved_bytes"]
