"""Shared helper for layer tests: gradcheck a module's forward in its inputs and all its parameters."""

from contextlib import contextmanager

import pytest

from tensora.autograd import gradcheck


@contextmanager
def _swapped(module, tensors):
    """Temporarily make the module use `tensors` (by dotted parameter name) as its parameters."""
    saved = []
    for name, t in tensors.items():
        owner_path, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_path)
        saved.append((owner, leaf, owner._parameters[leaf]))
        owner._parameters[leaf] = t
    try:
        yield
    finally:
        for owner, leaf, p in saved:
            owner._parameters[leaf] = p


def _module_gradcheck(module, *inputs, call=None, **kw):
    """gradcheck of (inputs..., parameters...) -> module(*inputs); float64 module and inputs."""
    named = list(module.named_parameters())
    params = [p.detach().clone().requires_grad_() for _, p in named]
    n = len(inputs)
    call = call or (lambda m, *xs: m(*xs))

    def fn(*args):
        with _swapped(module, dict(zip([name for name, _ in named], args[n:]))):
            return call(module, *args[:n])

    return gradcheck(fn, list(inputs) + params, **kw)


@pytest.fixture
def module_gradcheck():
    return _module_gradcheck
