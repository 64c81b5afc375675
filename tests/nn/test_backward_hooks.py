"""Full backward hooks: register_full_backward_hook / register_full_backward_pre_hook (torch's rules:
hook(module, grad_input, grad_output), a returned tuple replaces grad_input; pre-hooks may replace
grad_output). Gradients are checked against the chain rule written out in NumPy float64."""

import warnings

import numpy as np
import pytest

import tensora
from tensora import nn


def _linear(seed=0):
    tensora.manual_seed(seed)
    return nn.Linear(3, 2, dtype=tensora.float64)


def test_hook_sees_grad_input_and_grad_output():
    lin = _linear()
    seen = []
    lin.register_full_backward_hook(lambda m, gi, go: seen.append((m, gi, go)))
    a = np.random.default_rng(0).standard_normal((4, 3))
    x = tensora.tensor(a, requires_grad=True)
    w = np.random.default_rng(1).standard_normal((4, 2))
    (lin(x) * tensora.tensor(w)).sum().backward()
    ((m, gi, go),) = seen
    assert m is lin and len(gi) == 1 and len(go) == 1
    np.testing.assert_allclose(go[0].numpy(), w)
    np.testing.assert_allclose(gi[0].numpy(), w @ lin.weight.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), gi[0].numpy())


def test_returned_grad_input_replaces_it_and_pre_hook_replaces_grad_output():
    lin = _linear()
    lin.register_full_backward_pre_hook(lambda m, go: (go[0] * 2,))
    lin.register_full_backward_hook(lambda m, gi, go: (gi[0] * 3,))
    x = tensora.randn(4, 3, dtype=tensora.float64, requires_grad=True)
    lin(x).sum().backward()
    W = lin.weight.detach().numpy()
    np.testing.assert_allclose(x.grad.numpy(), 6 * np.ones((4, 2)) @ W, rtol=1e-12)
    # The pre-hook's grad_output is what flows into the module: the weight sees it too; the
    # hook's replacement only changes what leaves through the input.
    np.testing.assert_allclose(lin.weight.grad.numpy(), 2 * np.ones((2, 4)) @ x.detach().numpy(), rtol=1e-12)


def test_grad_input_has_a_slot_per_positional_argument():
    class Mix(nn.Module):
        def forward(self, a, scale, b, c, *, k=1.0):
            return a * scale + b * c * k, a.sum()

    seen = []
    m = Mix()
    m.register_full_backward_hook(lambda mod, gi, go: seen.append((gi, go)))
    a = tensora.randn(3, dtype=tensora.float64, requires_grad=True)
    b = tensora.randn(3, dtype=tensora.float64)  # needs no gradient
    c = tensora.randn(3, dtype=tensora.float64, requires_grad=True)
    out, unused = m(a, 2.0, b, c, k=tensora.tensor(3.0, dtype=tensora.float64, requires_grad=True))
    out.sum().backward()
    ((gi, go),) = seen
    assert len(gi) == 4 and gi[1] is None and gi[2] is None  # a number, a tensor without grad
    np.testing.assert_allclose(gi[0].numpy(), np.full(3, 2.0))
    np.testing.assert_allclose(gi[3].numpy(), 3 * b.numpy())
    assert len(go) == 2 and go[1] is None  # an output no gradient reached
    np.testing.assert_allclose(go[0].numpy(), np.ones(3))


def test_hooks_run_in_order_and_handles_remove_them():
    lin = _linear()
    calls = []
    h1 = lin.register_full_backward_hook(lambda m, gi, go: calls.append("hook"))
    lin.register_full_backward_hook(lambda m, gi, go: calls.append("first"), prepend=True)
    lin.register_full_backward_pre_hook(lambda m, go: calls.append("pre"))
    lin.register_full_backward_pre_hook(lambda m, go: calls.append("pre-first"), prepend=True)
    x = tensora.randn(2, 3, dtype=tensora.float64, requires_grad=True)
    lin(x).sum().backward()
    assert calls == ["pre-first", "pre", "first", "hook"]
    calls.clear()
    y = lin(x)
    h1.remove()  # hooks are taken when the module is called, as torch does
    y.sum().backward()
    assert calls == ["pre-first", "pre", "first", "hook"]
    calls.clear()
    lin(x).sum().backward()
    assert calls == ["pre-first", "pre", "first"]


def test_nested_modules_call_hooks_from_the_output_side():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    calls = []
    for name, mod in [("seq", model), ("fc1", model[0]), ("fc2", model[2])]:
        mod.register_full_backward_pre_hook(lambda m, go, name=name: calls.append(("pre", name)))
        mod.register_full_backward_hook(lambda m, gi, go, name=name: calls.append(("hook", name)))
    model(tensora.randn(5, 3, requires_grad=True)).sum().backward()
    assert calls == [("pre", "seq"), ("pre", "fc2"), ("hook", "fc2"), ("pre", "fc1"), ("hook", "fc1"),
                     ("hook", "seq")]


def test_inputs_without_grad_call_the_hook_at_the_outputs_and_warn():
    lin = _linear()
    seen = []
    lin.register_full_backward_hook(lambda m, gi, go: seen.append(gi))
    with pytest.warns(UserWarning, match="no inputs require gradients"):
        lin(tensora.randn(2, 3, dtype=tensora.float64)).sum().backward()
    assert seen == [(None,)] and lin.weight.grad is not None
    lin.register_full_backward_hook(lambda m, gi, go: (tensora.ones(2, 3),))
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match="None for all gradients"):
        warnings.simplefilter("ignore")
        lin(tensora.randn(2, 3, dtype=tensora.float64)).sum().backward()


def test_bad_hook_results_are_refused():
    lin = _linear()
    x = tensora.randn(2, 3, dtype=tensora.float64, requires_grad=True)
    h = lin.register_full_backward_hook(lambda m, gi, go: (gi[0], gi[0]))
    with pytest.raises(RuntimeError, match="invalid number of grad_input, got 2, but expected 1"):
        lin(x).sum().backward()
    h.remove()
    h = lin.register_full_backward_pre_hook(lambda m, go: ())
    with pytest.raises(RuntimeError, match="invalid number of grad_output, got 0, but expected 1"):
        lin(x).sum().backward()
    h.remove()
    h = lin.register_full_backward_hook(lambda m, gi, go: gi[0])
    with pytest.raises(TypeError, match="tuple of gradients"):
        lin(x).sum().backward()
    h.remove()
    lin.register_full_backward_hook(lambda m, gi, go: (tensora.ones(5),))
    with pytest.raises(tensora.AutogradError, match="shape"):
        lin(x).sum().backward()


def test_no_grad_calls_skip_the_hooks_and_outputs_keep_their_values():
    lin = _linear()
    calls = []
    lin.register_full_backward_hook(lambda m, gi, go: calls.append(1))
    x = tensora.randn(2, 3, dtype=tensora.float64, requires_grad=True)
    with tensora.no_grad():
        out = lin(x)
    assert not out.requires_grad and calls == []
    y = lin(x)
    np.testing.assert_array_equal(y.detach().numpy(), out.numpy())
    assert y.grad_fn is not None


def test_tuple_and_namedtuple_outputs_keep_their_type():
    from collections import namedtuple
    Pair = namedtuple("Pair", "a b")

    class Two(nn.Module):
        def forward(self, x):
            return Pair(x * 2, x * 3)

    m = Two()
    seen = []
    m.register_full_backward_hook(lambda mod, gi, go: seen.append((gi, go)))
    x = tensora.randn(3, dtype=tensora.float64, requires_grad=True)
    out = m(x)
    assert isinstance(out, Pair)
    (out.a + out.b).sum().backward()
    np.testing.assert_allclose(seen[0][0][0].numpy(), np.full(3, 5.0))
    np.testing.assert_allclose(x.grad.numpy(), np.full(3, 5.0))


def test_in_place_writes_into_hooked_outputs_and_inputs_are_refused():
    # torch refuses these too: the write would route gradients around the hooks (and they would never run).
    lin = _linear()
    lin.register_full_backward_hook(lambda m, gi, go: None)
    x = tensora.randn(2, 3, dtype=tensora.float64, requires_grad=True)
    with pytest.raises(tensora.AutogradError, match="is a view and is being modified in place"):
        lin(x).relu_()

    class Doubles(nn.Module):
        def forward(self, a):
            a.mul_(2)
            return a

    m = Doubles()
    m.register_full_backward_hook(lambda mod, gi, go: None)
    with pytest.raises(tensora.AutogradError, match="custom Function"):
        m(x * 1)
    calls = []
    lin.register_full_backward_hook(lambda m, gi, go: calls.append(1))
    out = lin(x).clone()
    out.relu_()  # a clone is the caller's own
    out.sum().backward()
    assert calls == [1]


def test_custom_function_returning_its_input_refuses_in_place_writes():
    class Ident(tensora.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t

        @staticmethod
        def backward(ctx, g):
            return g * 10

    x = tensora.ones(3, dtype=tensora.float64, requires_grad=True)
    y = Ident.apply(x * 1)
    with pytest.raises(tensora.AutogradError, match="output 0 of Ident is a view"):
        y.add_(1)
    Ident.apply(x * 1).sum().backward()
    assert x.grad.tolist() == [10.0, 10.0, 10.0]
