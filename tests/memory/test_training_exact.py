"""The exact memory savers: saved-tensor hooks, activation offload, checkpointing by policy and
streamed optimizer state must give bit-identical gradients and weights to the plain run
(the reference here is the same computation without them)."""

import numpy as np
import pytest

import tensora
from tensora import nn
from tensora.autograd.graph import saved_tensors_hooks
from tensora.errors import AutogradError
from tensora.memory import StreamedOptimizer, budget, checkpoint_policy, offload_activations
from tensora.optim import Adam, AdamW8bit
from tensora.utils.checkpoint import saved_bytes


class Blocks(nn.Module):
    """Residual tanh blocks: a ModuleList, as checkpoint_policy expects of a model."""

    def __init__(self, width=64, depth=4):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(width, width) for _ in range(depth)])
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x).tanh() * layer(x).sigmoid()
        return self.head(x).sum()


def _model_and_input(seed=0, width=64):
    tensora.manual_seed(seed)
    model = Blocks(width)
    x = tensora.randn(32, width)
    return model, x


def _grads(model):
    return {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


def _reference_grads(seed=0):
    model, x = _model_and_input(seed)
    model(x).backward()
    return _grads(model)


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_saved_tensors_hooks_see_every_saved_tensor_and_keep_gradients():
    want = _reference_grads()
    model, x = _model_and_input()
    packed = []

    def pack(t):
        packed.append(t.shape)
        return t.detach().numpy().copy()  # the graph keeps only this copy

    with saved_tensors_hooks(pack, lambda a: a):
        loss = model(x)
    loss.backward()
    assert len(packed) > 20
    _assert_same(_grads(model), want)


def test_hooks_nest_and_version_checks_still_apply():
    x = tensora.randn(5, requires_grad=True)
    calls = []
    with saved_tensors_hooks(lambda t: calls.append("outer") or t, lambda t: t):
        with saved_tensors_hooks(lambda t: calls.append("inner") or t.detach().numpy().copy(), lambda a: a):
            h = x * 1.0
            y = (h * h).sum()
        z = h.exp().sum()
    # the innermost pair wins; leaving the block restores the outer one (exp saves one output)
    assert set(calls[:-1]) == {"inner"} and calls[-1] == "outer"
    with tensora.no_grad():
        h.add_(1.0)  # h was saved by mul: backward must refuse, hooks or not
    with pytest.raises(AutogradError, match="modified by an in-place operation"):
        y.backward()
    del z


def test_hooks_keep_double_backward():
    w = tensora.randn(4, requires_grad=True)
    with saved_tensors_hooks(lambda t: t.detach().numpy().copy(), lambda a: a):
        y = (w * w * w).sum()
    (g,) = tensora.autograd.grad(y, [w], create_graph=True)
    g.sum().backward()  # d/dw sum(3 w^2) = 6 w, reached through the rebuilt saved leaf
    np.testing.assert_allclose(w.grad.numpy(), 6 * w.detach().numpy(), rtol=1e-6)


@pytest.mark.parametrize("tier", ["host", "disk"])
def test_offload_activations_gives_identical_gradients(tier):
    want = _reference_grads()
    model, x = _model_and_input()
    with budget(host="64KiB") as mm:  # the activations (~8 KiB each, dozens) cannot all stay
        with offload_activations(tier, min_bytes=1024):
            loss = model(x)
        owned = len(mm.handles)
        loss.backward()
        moved = dict(mm.tracker.moved)
        assert mm.tracker.peak["host"] <= 64 * 1024
    assert owned > 10
    assert moved.get("host->disk", 0) > 0 and moved.get("disk->host", 0) > 0
    _assert_same(_grads(model), want)


def test_offloaded_activations_are_freed_with_the_graph():
    model, x = _model_and_input()
    with budget(host="1MiB") as mm:
        with offload_activations(min_bytes=1024):
            loss = model(x)
        assert mm.handles
        loss.backward()
        del loss
        assert mm.handles == []  # each node's saved arrays go as backward passes it


def test_checkpoint_policy_gives_identical_gradients_and_saves_less():
    want = _reference_grads()
    model, x = _model_and_input()
    plain = saved_bytes(model(x))
    wrapped = checkpoint_policy(model, every=2)
    assert wrapped == [model.layers[0], model.layers[2]]
    model.zero_grad()
    loss = model(x)
    assert saved_bytes(loss) < plain
    loss.backward()
    _assert_same(_grads(model), want)
    checkpoint_policy(model, every=5)  # a new policy replaces the old one
    assert "forward" not in model.layers[2].__dict__


def test_checkpoint_policy_needs_blocks():
    with pytest.raises(ValueError, match="no a ModuleList|ModuleList"):
        checkpoint_policy(nn.Linear(2, 2))


# budgets that hold one layer's state (Adam: 2 x 36 KiB; AdamW8bit: 2 x 9.2 KiB) but not all four
@pytest.mark.parametrize("make, host", [(lambda ps: Adam(ps, lr=1e-2), 96 * 1024),
                                        (lambda ps: AdamW8bit(ps, lr=1e-2), 24 * 1024)])
def test_streamed_optimizer_state_gives_identical_weights(make, host):
    def run(streamed):
        model, x = _model_and_input(width=96)  # 96*96 = 9216 weights per layer: quantized by AdamW8bit
        with budget(host=host) as mm:
            opt = StreamedOptimizer(make(list(model.parameters()))) if streamed else make(list(model.parameters()))
            for _ in range(3):
                opt.zero_grad()
                model(tensora.randn(32, 96)).backward()
                opt.step()
            if streamed:
                assert all(h.kind == "optimizer" for h in mm.handles) and mm.handles
                assert mm.tracker.moved.get("host->disk", 0) > 0  # the state does not fit: it streams
                assert mm.tracker.peak["host"] <= host
            sd = opt.state_dict()
        return {n: p.detach().numpy().copy() for n, p in model.named_parameters()}, sd

    want, want_sd = run(False)
    got, got_sd = run(True)
    _assert_same(got, want)
    for i, state in want_sd["state"].items():
        for k, v in state.items():
            np.testing.assert_array_equal(got_sd["state"][i][k].numpy(), v.numpy())


def test_streamed_optimizer_needs_a_manager():
    with pytest.raises(RuntimeError, match="budget"):
        StreamedOptimizer(Adam([tensora.zeros(2, requires_grad=True)]))
