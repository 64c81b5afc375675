"""Loader for the optional compiled extension ``tensora._C``.

The extension only makes kernels faster; it is never required. ``load()`` returns the
module, or None when it is disabled, was not built, or fails to import, and never
raises; ``status()`` says which, for ``tensora info`` and for skipped tests. The
first call decides and the answer is cached for the life of the process.

Set ``TENSORA_NO_NATIVE=1`` before the first call to force the NumPy bodies (the
test suite runs both ways)::

    >>> from tensora.backend import native
    >>> available, reason = native.status()
    >>> available == (native.load() is not None)
    True
"""

from __future__ import annotations

import importlib
import os
import threading
from types import ModuleType

ENV_VAR = "TENSORA_NO_NATIVE"
MODULE_NAME = "tensora._C"

# Values of ENV_VAR that leave the extension enabled; anything else disables it.
_ENABLED_VALUES = ("", "0", "false", "no", "off")

_lock = threading.Lock()
_loaded = False
_module: ModuleType | None = None
_reason = "not loaded yet"


def _try_import() -> tuple[ModuleType | None, str]:
    value = os.environ.get(ENV_VAR, "")
    if value.strip().lower() not in _ENABLED_VALUES:
        return None, f"disabled by {ENV_VAR}={value}"
    try:
        module = importlib.import_module(MODULE_NAME)
    except Exception as e:  # ImportError, OSError (bad .so), or whatever its init raised
        return None, f"import failed: {type(e).__name__}: {e}"
    return module, f"loaded {MODULE_NAME} from {getattr(module, '__file__', '?')}"


def load() -> ModuleType | None:
    """The ``tensora._C`` module, or None if it is disabled or unavailable. Never raises."""
    global _loaded, _module, _reason
    if not _loaded:
        with _lock:
            if not _loaded:
                _module, _reason = _try_import()
                _loaded = True
    return _module


def status() -> tuple[bool, str]:
    """``(available, reason)``: e.g. ``(True, "loaded tensora._C from /path")`` or
    ``(False, "disabled by TENSORA_NO_NATIVE=1")`` or ``(False, "import failed: ...")``."""
    module = load()
    return module is not None, _reason


def reset() -> None:
    """Forget the cached answer so the next ``load()`` decides again (for tests that
    change ``TENSORA_NO_NATIVE``; an imported extension stays in ``sys.modules``)."""
    global _loaded, _module, _reason
    with _lock:
        _loaded, _module, _reason = False, None, "not loaded yet"
