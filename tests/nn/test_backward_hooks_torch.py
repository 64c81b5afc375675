"""Full backward hooks against torch.nn: the same model with the same hooks gives the same calls, in
the same order, with the same grad_input / grad_output values, and the same final gradients when
hooks replace them."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

import tensora  # noqa: E402


def _model(m, weights):
    model = m.nn.Sequential(m.nn.Linear(3, 4), m.nn.Tanh(), m.nn.Linear(4, 2))
    with m.no_grad():
        for p, w in zip(model.parameters(), weights):
            p.copy_(m.tensor(w))
    return model.double()


def _as_numpy(grads):
    return [None if g is None else g.detach().numpy() for g in grads]


def _run(m, weights, a, replace):
    model = _model(m, weights)
    log = []
    for name, mod in [("seq", model), ("fc1", model[0]), ("tanh", model[1]), ("fc2", model[2])]:
        def pre(mod, go, name=name):
            log.append((name, "pre", _as_numpy(go)))
            if replace and name == "fc2":
                return (go[0] * 0.5,)

        def hook(mod, gi, go, name=name):
            log.append((name, "hook", _as_numpy(gi), _as_numpy(go)))
            if replace and name == "tanh":
                return (gi[0] + 1.0,)

        mod.register_full_backward_pre_hook(pre)
        mod.register_full_backward_hook(hook)
    x = m.tensor(a, requires_grad=True)
    out = model(x)
    (out * m.tensor(np.linspace(-1, 1, out.numel()).reshape(tuple(out.shape)))).sum().backward()
    grads = [p.grad.numpy() for p in model.parameters()] + [x.grad.numpy()]
    return log, grads


@pytest.mark.parametrize("replace", [False, True])
def test_hook_calls_and_gradients_match_torch(replace):
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(s) for s in [(4, 3), (4,), (2, 4), (2,)]]
    a = rng.standard_normal((5, 3))
    ours, our_grads = _run(tensora, weights, a, replace)
    theirs, their_grads = _run(torch, weights, a, replace)
    assert [e[:2] for e in ours] == [e[:2] for e in theirs]
    for o, t in zip(ours, theirs):
        for og, tg in zip(o[2:], t[2:]):
            assert len(og) == len(tg)
            for x, y in zip(og, tg):
                assert (x is None) == (y is None), o[:2]
                if x is not None:
                    np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)
    for g, tg in zip(our_grads, their_grads):
        np.testing.assert_allclose(g, tg, rtol=1e-12, atol=1e-14)


def test_inputs_without_grad_match_torch():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 3))
    seen = {}
    for m in (tensora, torch):
        lin = m.nn.Linear(3, 2).double()
        lin.register_full_backward_hook(lambda mod, gi, go, m=m: seen.update({m.__name__: (gi, len(go))}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lin(m.tensor(a)).sum().backward()
    assert seen["tensora"] == seen["torch"] == ((None,), 1)
