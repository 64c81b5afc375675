"""Module hooks: the handle that unregisters one, and the call path that runs them.

Module.__call__ only comes here when a module has hooks, so calling a module without
any costs a few dict checks.

Full backward hooks work as torch's (torch/utils/hooks.py, BackwardHook): the module's
tensor arguments and its outputs each pass through one identity node (_HookIdentity)
whose backward sees the gradients at the module's boundary. In backward the output node
runs first (the graph runs from the outputs toward the inputs): it records grad_output,
after the backward pre-hooks, which may replace it. The input node runs once the
gradients with respect to every input are complete: it calls hook(module, grad_input,
grad_output), and what a hook returns replaces grad_input. grad_input has one entry per
positional argument, grad_output one per output (None for non-tensors, for tensors that
need no gradient and for outputs no gradient reached); keyword arguments are not seen,
as in torch.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any, Callable, Sequence

from ..autograd.function import Function
from ..autograd.grad_mode import is_grad_enabled
from ..tensor import Tensor


class RemovableHandle:
    """Returned by register_*_hook: handle.remove() (or leaving a `with handle:` block) unregisters it."""

    _ids = itertools.count()

    def __init__(self, hooks: dict, *extra: dict) -> None:
        self.id = next(RemovableHandle._ids)
        self._dicts = (hooks,) + extra

    @classmethod
    def add(cls, hooks: dict, hook: Callable, prepend: bool, *extra: dict) -> "RemovableHandle":
        """Register `hook` in `hooks` (first if `prepend`); `extra` are the side tables it may get flags in."""
        handle = cls(hooks, *extra)
        hooks[handle.id] = hook
        if prepend:
            hooks.move_to_end(handle.id, last=False)
        return handle

    def remove(self) -> None:
        for d in self._dicts:
            d.pop(self.id, None)

    def __enter__(self) -> "RemovableHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class HookRegistration:
    """Module's register_*_hook methods (a mixin of nn.Module, which owns the tables they fill)."""

    def register_forward_pre_hook(self, hook: Callable, *, prepend: bool = False,
                                  with_kwargs: bool = False) -> RemovableHandle:
        """Call hook(module, args) before forward (hook(module, args, kwargs) with with_kwargs).

        A hook may return replacement args (a tuple, or one value), or (args, kwargs) with with_kwargs.
        """
        handle = RemovableHandle.add(self._forward_pre_hooks, hook, prepend, self._forward_pre_hooks_with_kwargs)
        if with_kwargs:
            self._forward_pre_hooks_with_kwargs[handle.id] = True
        return handle

    def register_forward_hook(self, hook: Callable, *, prepend: bool = False, with_kwargs: bool = False,
                              always_call: bool = False) -> RemovableHandle:
        """Call hook(module, args, output) after forward (hook(module, args, kwargs, output) with with_kwargs).

        A hook may return a replacement output. always_call runs it even when forward raises.
        """
        handle = RemovableHandle.add(self._forward_hooks, hook, prepend, self._forward_hooks_with_kwargs,
                                     self._forward_hooks_always_called)
        if with_kwargs:
            self._forward_hooks_with_kwargs[handle.id] = True
        if always_call:
            self._forward_hooks_always_called[handle.id] = True
        return handle

    def register_full_backward_pre_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """Call hook(module, grad_output) when the gradients of this module's outputs are known.

        It may return a tuple replacing grad_output (one entry per output) for what flows into
        the module; used to inspect, clip or rescale gradients at a module boundary.
        """
        return RemovableHandle.add(self._backward_pre_hooks, hook, prepend)

    def register_full_backward_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """Call hook(module, grad_input, grad_output) once the gradients of the module's inputs are computed.

        grad_input has one entry per positional argument of forward (None where it needs no
        gradient); a tuple returned replaces it. As in torch, keyword arguments are not seen,
        and an input must not be modified in place by forward.

        >>> import tensora
        >>> from tensora import nn
        >>> lin = nn.Linear(3, 2)
        >>> seen = []
        >>> h = lin.register_full_backward_hook(lambda m, gi, go: seen.append((gi[0].shape, go[0].shape)))
        >>> lin(tensora.randn(4, 3, requires_grad=True)).sum().backward()
        >>> seen
        [(tensora.Size([4, 3]), tensora.Size([4, 2]))]
        """
        return RemovableHandle.add(self._backward_hooks, hook, prepend)


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


class _HookIdentity(Function):
    """Identity on its tensors; backward hands their gradients to `on_grads`, whose result is passed
    on instead (torch's BackwardHookFunction, with the hook called from backward itself)."""

    @staticmethod
    def forward(ctx: Any, on_grads: Callable, *tensors: Tensor) -> tuple:
        ctx.on_grads = on_grads
        ctx.set_materialize_grads(False)  # an output no gradient reached is None to the hooks, as in torch
        return tensors

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> tuple:
        return (None,) + tuple(ctx.on_grads(grads))


def _pack(index: Sequence[int], grads: Sequence[Any], n: int) -> tuple:
    """The gradients of the wrapped positions, None at every other one of n."""
    out = [None] * n
    for i, g in zip(index, grads):
        out[i] = g
    return tuple(out)


class BackwardHook:
    """The full backward hooks of one module call (see the module docstring)."""

    def __init__(self, module: Any, hooks: list, pre_hooks: list) -> None:
        self.module, self.hooks, self.pre_hooks = module, hooks, pre_hooks
        self.grad_outputs: tuple | None = None
        self.n_inputs = self.n_outputs = 0
        self.input_index: list[int] | None = None  # args positions wrapped; None: no input needs a gradient
        self.output_index: list[int] | None = None

    @staticmethod
    def _wrap(values: Sequence[Any], on_grads: Callable) -> tuple[list, list[int] | None]:
        index = [i for i, v in enumerate(values) if isinstance(v, Tensor) and v.requires_grad]
        if not index or not is_grad_enabled():
            return list(values), None
        wrapped = list(values)
        for i, t in zip(index, _HookIdentity.apply(on_grads, *(values[i] for i in index))):
            wrapped[i] = t
        return wrapped, index

    def setup_input(self, args: tuple) -> tuple:
        self.n_inputs = len(args)
        wrapped, self.input_index = self._wrap(args, self._input_grads)
        return tuple(wrapped)

    def setup_output(self, result: Any) -> Any:
        if not isinstance(result, (Tensor, tuple)):
            warnings.warn("For backward hooks to be called, module output should be a Tensor or a tuple of Tensors "
                          f"but received {type(result)}", UserWarning, stacklevel=3)
            return result
        values = result if isinstance(result, tuple) else (result,)
        self.n_outputs = len(values)
        wrapped, self.output_index = self._wrap(values, self._output_grads)
        if not isinstance(result, tuple):
            return wrapped[0]
        return type(result)(*wrapped) if hasattr(result, "_fields") else type(result)(wrapped)  # namedtuples too

    def _output_grads(self, grads: tuple) -> tuple:
        grad_outputs = _pack(self.output_index, grads, self.n_outputs)
        for hook in self.pre_hooks:
            res = hook(self.module, grad_outputs)
            if res is None:
                continue
            if not isinstance(res, (tuple, list)):
                raise TypeError(f"backward pre-hook must return None or a tuple of gradients, got {type(res).__name__}")
            if len(res) != len(grad_outputs):
                raise RuntimeError(f"Backward pre hook returned an invalid number of grad_output, got {len(res)}, "
                                   f"but expected {len(grad_outputs)}")
            grad_outputs = tuple(res)
        self.grad_outputs = grad_outputs
        if self.input_index is None:
            # No input needs a gradient, so no input node will run: call the hooks now (torch does, and warns).
            warnings.warn("Full backward hook is firing when gradients are computed with respect to module outputs "
                          "since no inputs require gradients.", UserWarning, stacklevel=2)
            grad_inputs = (None,) * self.n_inputs
            for hook in self.hooks:
                res = hook(self.module, grad_inputs, grad_outputs)
                if res is not None and not all(r is None for r in res):
                    raise RuntimeError("Backward hook for Modules where no input requires gradient should always "
                                       "return None or None for all gradients.")
            self.grad_outputs = None
        return tuple(grad_outputs[i] for i in self.output_index)

    def _input_grads(self, grads: tuple) -> tuple:
        if self.grad_outputs is None:
            # The gradient reached the inputs without passing through the outputs (e.g. double backward).
            return grads
        grad_inputs = _pack(self.input_index, grads, self.n_inputs)
        for hook in self.hooks:
            res = hook(self.module, grad_inputs, self.grad_outputs)
            if res is None:
                continue
            if not isinstance(res, (tuple, list)):
                raise TypeError(f"backward hook must return None or a tuple of gradients, got {type(res).__name__}")
            if len(res) != len(grad_inputs):
                raise RuntimeError(f"Backward hook returned an invalid number of grad_input, got {len(res)}, "
                                   f"but expected {len(grad_inputs)}")
            grad_inputs = tuple(res)
        self.grad_outputs = None
        return tuple(grad_inputs[i] for i in self.input_index)


def call_with_hooks(module: Any, args: tuple, kwargs: dict) -> Any:
    """Pre-hooks (which may replace the arguments), forward, then hooks (which may replace the output).

    Hooks registered with always_call=True also run, with output None, when forward or an
    earlier hook raises; the exception then propagates (torch's order and rules). With
    full backward hooks, the arguments forward sees (after the pre-hooks) and the output
    (after the forward hooks) pass through BackwardHook's identity nodes.
    """
    args, kwargs = _run_pre_hooks(module, args, kwargs)
    backward_hook = None
    if module._backward_hooks or module._backward_pre_hooks:
        backward_hook = BackwardHook(module, list(module._backward_hooks.values()),
                                     list(module._backward_pre_hooks.values()))
        args = backward_hook.setup_input(args)
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
    if backward_hook is not None:
        result = backward_hook.setup_output(result)
    return result


__all__ = ["RemovableHandle", "call_with_hooks"]
