"""Forward hooks: pre-hooks replacing arguments, hooks replacing outputs, with_kwargs, prepend,
always_call, handle removal (the rules of torch.nn.Module.register_forward_*_hook; the call order
is also checked against torch in test_nn_torch.py)."""

import numpy as np
import pytest

import tensora
from tensora import nn


def test_forward_hooks_modify_inputs_and_outputs():
    lin = nn.Linear(2, 2)
    calls = []
    h1 = lin.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    h2 = lin.register_forward_hook(lambda m, args, out: out + 1)
    h3 = lin.register_forward_hook(lambda m, args, out: calls.append("first"), prepend=True)
    x = tensora.randn(3, 2)
    out = lin(x)
    np.testing.assert_allclose(out.detach().numpy(), np.broadcast_to(lin.bias.detach().numpy() + 1, (3, 2)),
                               rtol=1e-6)
    assert calls == ["first"]
    for h in (h1, h2, h3):
        h.remove()
    np.testing.assert_allclose(lin(x).detach().numpy(), (x @ lin.weight.T + lin.bias).detach().numpy())


def test_hooks_with_kwargs_and_context_manager():
    class Scale(nn.Module):
        def forward(self, x, *, k=1.0):
            return x * k

    m = Scale()
    seen = {}

    def pre(mod, args, kwargs):
        return args, {"k": kwargs["k"] * 10}

    def post(mod, args, kwargs, out):
        seen["k"] = kwargs["k"]

    with m.register_forward_pre_hook(pre, with_kwargs=True), m.register_forward_hook(post, with_kwargs=True):
        assert m(tensora.tensor(2.0), k=2.0).item() == 40.0
    assert seen["k"] == 20.0
    assert m(tensora.tensor(2.0), k=2.0).item() == 4.0 and not m._forward_hooks and not m._forward_pre_hooks
    bad = m.register_forward_pre_hook(lambda mod, a, k: 5, with_kwargs=True)
    with pytest.raises(RuntimeError, match="forward pre-hook must return"):
        m(tensora.tensor(1.0))
    bad.remove()


def test_always_call_hook_runs_when_forward_raises():
    class Boom(nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    m = Boom()
    seen = []
    m.register_forward_hook(lambda mod, args, out: seen.append(out), always_call=True)
    m.register_forward_hook(lambda mod, args, out: seen.append("never"))
    with pytest.raises(ValueError, match="boom"):
        m(1)
    assert seen == [None]
