"""Reverse-mode automatic differentiation: graph recording, the backward engine, grad modes."""

from .engine import backward, grad
from .function import OPS, Function, Op
from .grad_mode import (enable_grad, inference_mode, is_grad_enabled, is_inference_mode_enabled, no_grad,
                        set_grad_enabled)
from .gradcheck import gradcheck, gradgradcheck
from .graph import Context

__all__ = ["backward", "grad", "gradcheck", "gradgradcheck", "Function", "Op", "OPS", "Context", "no_grad", "enable_grad",
           "set_grad_enabled", "inference_mode", "is_grad_enabled", "is_inference_mode_enabled"]
