"""The kernel table: one ``Kernel`` per entry point, registered by name.

A kernel is written twice. The *reference* body is NumPy (plus ml_dtypes): it is the
definition, always available, and what the tests compare against. The optional
*native* body does the same through the compiled extension ``tensora._C`` and must
agree with the reference (bit for bit for casts and packing, within a stated
tolerance for arithmetic). Calling the kernel picks the native body when the
extension is loaded, provides this kernel, and the input has at least
``min_native_size`` elements (below that, call overhead beats the faster loop);
otherwise the reference runs. Kernels take and return arrays; they know nothing of
Tensor or autograd.

    >>> import numpy as np
    >>> from tensora.kernels import KERNELS
    >>> k = KERNELS["float32_to_bfloat16"]
    >>> k(np.float32([1.0, 3.0])).tolist() == k.reference(np.float32([1.0, 3.0])).tolist()
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from ..backend import native

KERNELS: dict[str, Kernel] = {}


class Kernel:
    """One entry point: ``reference(*args)`` and optionally ``native(lib, *args)``."""

    def __init__(self, name: str, reference: Callable[..., Any], *, min_native_size: int = 0):
        self.name = name
        self.reference = reference
        self.native: Callable[..., Any] | None = None
        self.min_native_size = min_native_size
        self._checked_lib: ModuleType | None = None
        self._lib_has_it = False
        functools.update_wrapper(self, reference)  # name, docstring, signature for help()

    def native_body(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: register ``fn(lib, *args)`` as the native body; returns ``fn``."""
        self.native = fn
        return fn

    def _lib(self) -> ModuleType | None:
        """The loaded extension if it provides this kernel (a stale build may not)."""
        lib = native.load()
        if lib is None or self.native is None:
            return None
        if lib is not self._checked_lib:
            self._lib_has_it = self.name in lib.kernels()
            self._checked_lib = lib
        return lib if self._lib_has_it else None

    def _pick(self, x: Any) -> ModuleType | None:
        """The extension to run ``x`` on, or None for the reference body."""
        size = x.size if isinstance(x, np.ndarray) else np.size(x)
        if size < self.min_native_size:
            return None
        return self._lib()

    def body_for(self, x: Any) -> str:
        """``"native"`` or ``"reference"``: which body a call with first argument ``x`` runs."""
        return "reference" if self._pick(x) is None else "native"

    def run_native(self, *args: Any, **kwargs: Any) -> Any:
        """Run the native body whatever the size; RuntimeError if it is unavailable."""
        lib = self._lib()
        if lib is None:
            available, reason = native.status()
            if self.native is None:
                why = "none is registered"
            elif available:
                why = f"{native.MODULE_NAME} does not provide it (stale build?)"
            else:
                why = reason
            raise RuntimeError(f"no native body for kernel {self.name!r}: {why}")
        return self.native(lib, *args, **kwargs)

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        lib = self._pick(x)
        if lib is None:
            return self.reference(x, *args, **kwargs)
        return self.native(lib, x, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<Kernel {self.name} (native from {self.min_native_size} elements)>"


def kernel(name: str, *, min_native_size: int = 0) -> Callable[[Callable[..., Any]], Kernel]:
    """Decorator: make the decorated NumPy reference body a registered ``Kernel``."""

    def register(reference: Callable[..., Any]) -> Kernel:
        if name in KERNELS:
            raise ValueError(f"kernel {name!r} is already registered")
        k = Kernel(name, reference, min_native_size=min_native_size)
        KERNELS[name] = k
        return k

    return register
