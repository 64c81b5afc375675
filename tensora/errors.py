"""Exceptions raised by tensora.

Each subclasses the built-in exception a Python user would catch for the same
problem (a shape mismatch is a ValueError, a dtype mismatch a TypeError), so
`except ValueError` keeps working, while `except tensora.TensoraError` catches
everything the library raises on purpose.
"""

from __future__ import annotations


class TensoraError(Exception):
    """Base class of every error tensora raises deliberately."""


class ShapeError(TensoraError, ValueError):
    """Shapes that do not fit together; the message names them."""


class DTypeError(TensoraError, TypeError):
    """A dtype that an operation cannot take or cannot promote."""


class DeviceError(TensoraError, RuntimeError):
    """A device that is unknown, unavailable, or mixed with another one."""


class AutogradError(TensoraError, RuntimeError):
    """Misuse of the autograd graph: freed buffers, in-place edits of saved tensors."""


def fmt_shape(shape) -> str:
    """Render a shape the way error messages print it: [2, 3]."""
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"
