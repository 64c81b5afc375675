"""Forward hooks of Module: the handle that unregisters one, and the call path that runs them.

Module.__call__ only comes here when a module has hooks, so calling a module without
any costs one dict check.
"""

from __future__ import annotations

import itertools
from typing import Any


class RemovableHandle:
    """Returned by register_*_hook: handle.remove() (or leaving a `with handle:` block) unregisters it."""

    _ids = itertools.count()

    def __init__(self, hooks: dict, *extra: dict) -> None:
        self.id = next(RemovableHandle._ids)
        self._dicts = (hooks,) + extra

    def remove(self) -> None:
        for d in self._dicts:
            d.pop(self.id, None)

    def __enter__(self) -> "RemovableHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def _run_pre_hooks(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    for hook_id, hook in list(module._forward_pre_hooks.items()):
        if hook_id in module._forward_pre_hooks_with_kwargs:
            res = hook(module, args, kwargs)
            if res is not None:
                if not (isinstance(res, tuple) and len(res) == 2):
                    raise RuntimeError(f"forward pre-hook must return None or a tuple of (new_args, new_kwargs), "
                                       f"but got {res}.")
                args, kwargs = res
        else:
            res = hook(module, args)
            if res is not None:
                args = res if isinstance(res, tuple) else (res,)
    return args, kwargs


def call_with_hooks(module: Any, args: tuple, kwargs: dict) -> Any:
    """Pre-hooks (which may replace the arguments), forward, then hooks (which may replace the output).

    Hooks registered with always_call=True also run, with output None, when forward or an
    earlier hook raises; the exception then propagates (torch's order and rules).
    """
    args, kwargs = _run_pre_hooks(module, args, kwargs)
    hooks = list(module._forward_hooks.items())
    called = set()
    try:
        result = module.forward(*args, **kwargs)
        for hook_id, hook in hooks:
            called.add(hook_id)
            if hook_id in module._forward_hooks_with_kwargs:
                res = hook(module, args, kwargs, result)
            else:
                res = hook(module, args, result)
            if res is not None:
                result = res
    except Exception:
        for hook_id, hook in hooks:
            if hook_id in module._forward_hooks_always_called and hook_id not in called:
                if hook_id in module._forward_hooks_with_kwargs:
                    hook(module, args, kwargs, None)
                else:
                    hook(module, args, None)
        raise
    return result


__all__ = ["RemovableHandle", "call_with_hooks"]
