"""Grad modes: switch graph recording on and off, per thread.

`no_grad`, `enable_grad`, `set_grad_enabled` and `inference_mode` work as
context managers and as decorators. The flag is one attribute read on a
thread-local, so ops pay almost nothing to check it.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable


class _State(threading.local):
    enabled = True
    inference = False


STATE = _State()


def is_grad_enabled() -> bool:
    return STATE.enabled


def is_inference_mode_enabled() -> bool:
    return STATE.inference


class _GradMode:
    """Base for grad-mode switches: a context manager that is also a decorator."""

    _enabled: bool = True
    _inference: bool | None = None

    def __new__(cls, *args: Any) -> Any:
        if len(args) == 1 and callable(args[0]):
            return cls()(args[0])  # used bare, @no_grad without parentheses, as torch >= 2.1 allows
        return super().__new__(cls)

    def __enter__(self) -> None:
        self._prev = (STATE.enabled, STATE.inference)
        STATE.enabled = self._enabled
        if self._inference is not None:
            STATE.inference = self._inference

    def __exit__(self, *exc: Any) -> None:
        STATE.enabled, STATE.inference = self._prev

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.__class__(*self._args()):
                return fn(*args, **kwargs)
        return wrapper

    def _args(self) -> tuple:
        return ()


class no_grad(_GradMode):  # noqa: N801 - torch spelling
    """Do not record operations: results have requires_grad=False."""

    _enabled = False


class enable_grad(_GradMode):  # noqa: N801
    """Record operations again inside a no_grad region."""

    _enabled = True


class set_grad_enabled(_GradMode):  # noqa: N801
    """Switch recording to `mode`; applies at once, like torch, and undoes on exit when used with `with`."""

    def __init__(self, mode: bool) -> None:
        self._enabled = bool(mode)
        self._prev = (STATE.enabled, STATE.inference)
        STATE.enabled = self._enabled

    def __enter__(self) -> None:
        pass

    def __call__(self, fn: Callable) -> Callable:
        STATE.enabled, STATE.inference = self._prev  # used as a decorator: do not switch now
        return super().__call__(fn)

    def _args(self) -> tuple:
        return (self._enabled,)


class inference_mode(_GradMode):  # noqa: N801
    """no_grad for serving: nothing is recorded and tensors made inside are never part of a graph."""

    def __init__(self, mode: bool = True) -> None:
        self._enabled = not mode
        self._inference = bool(mode)

    def _args(self) -> tuple:
        return (self._inference,)
