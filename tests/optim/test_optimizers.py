"""Optimizers against NumPy float64 references, plus the base class: groups, state dicts, zero_grad, errors.

Each reference below is the textbook update written out of place in float64 (the
formulas in the optimizer modules' docstrings); tensora's in-place, chunked
versions must agree to rounding.
"""

import copy
import warnings

import ml_dtypes
import numpy as np
import pytest

import tensora
import tensora.optim as optim
from tensora.optim import optimizer as optimizer_module


# -- NumPy references: step(p, g, state, **hyper) -> new p --------------------------------------------------------
def sgd_ref(p, g, st, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False):
    g = (-g if maximize else g) + weight_decay * p
    if momentum:
        st["b"] = g.copy() if "b" not in st else momentum * st["b"] + (1 - dampening) * g
        g = g + momentum * st["b"] if nesterov else st["b"]
    return p - lr * g


def adam_ref(p, g, st, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False,
             decoupled=False):
    t = st["t"] = st.get("t", 0) + 1
    g = -g if maximize else g
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = st["m"] = betas[0] * st.get("m", 0) + (1 - betas[0]) * g
    v = st["v"] = betas[1] * st.get("v", 0) + (1 - betas[1]) * g * g
    if amsgrad:
        v = st["vmax"] = np.maximum(st.get("vmax", 0), v)
    denom = np.sqrt(v) / np.sqrt(1 - betas[1] ** t) + eps
    return p - lr / (1 - betas[0] ** t) * m / denom


def adamw_ref(p, g, st, weight_decay=1e-2, **kw):
    return adam_ref(p, g, st, weight_decay=weight_decay, decoupled=True, **kw)


def rmsprop_ref(p, g, st, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, maximize=False):
    g = (-g if maximize else g) + weight_decay * p
    v = st["v"] = alpha * st.get("v", 0) + (1 - alpha) * g * g
    if centered:
        a = st["a"] = alpha * st.get("a", 0) + (1 - alpha) * g
        v = v - a * a
    d = np.sqrt(v) + eps
    if momentum:
        st["b"] = momentum * st.get("b", 0) + g / d
        return p - lr * st["b"]
    return p - lr * g / d


def adagrad_ref(p, g, st, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                maximize=False):
    t = st["t"] = st.get("t", 0) + 1
    g = (-g if maximize else g) + weight_decay * p
    s = st["s"] = st.get("s", initial_accumulator_value) + g * g
    return p - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(s) + eps)


def lion_ref(p, g, st, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
    m = st.get("m", 0)
    p = p * (1 - lr * weight_decay) - lr * np.sign(betas[0] * m + (1 - betas[0]) * g)
    st["m"] = betas[1] * m + (1 - betas[1]) * g
    return p


CASES = [
    ("SGD", sgd_ref, {"lr": 0.1}),
    ("SGD", sgd_ref, {"lr": 0.1, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.05}),
    ("SGD", sgd_ref, {"lr": 0.1, "momentum": 0.8, "nesterov": True, "maximize": True}),
    ("Adam", adam_ref, {"lr": 0.01}),
    ("Adam", adam_ref, {"lr": 0.01, "betas": (0.5, 0.9), "weight_decay": 0.1, "amsgrad": True, "maximize": True}),
    ("AdamW", adamw_ref, {"lr": 0.01, "weight_decay": 0.2, "amsgrad": True}),
    ("RMSprop", rmsprop_ref, {"lr": 0.01}),
    ("RMSprop", rmsprop_ref, {"lr": 0.01, "alpha": 0.3, "momentum": 0.5, "centered": True, "weight_decay": 0.1}),
    ("RMSprop", rmsprop_ref, {"lr": 0.01, "centered": True, "maximize": True}),
    ("Adagrad", adagrad_ref, {"lr": 0.1}),
    ("Adagrad", adagrad_ref, {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.1, "initial_accumulator_value": 0.3,
                              "maximize": True}),
    ("Lion", lion_ref, {"lr": 0.01}),
    ("Lion", lion_ref, {"lr": 0.01, "betas": (0.95, 0.98), "weight_decay": 0.5}),
]
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]


def grad_at(step, p, rng_seed=0):
    """A gradient that depends on the step and on the parameter (so errors would compound)."""
    noise = np.random.default_rng(rng_seed + step).standard_normal(p.shape)
    return noise + 0.3 * p


def run_tensora(name, kw, init, steps):
    params = [tensora.tensor(a.copy(), requires_grad=True) for a in init]
    opt = getattr(optim, name)(params, **kw)
    for t in range(steps):
        for i, p in enumerate(params):
            p.grad = tensora.tensor(grad_at(t * 10 + i, p.detach().numpy()))
        opt.step()
    return params, opt


def run_reference(ref, kw, init, steps):
    params, states = [a.copy() for a in init], [{} for _ in init]
    for t in range(steps):
        for i in range(len(params)):
            params[i] = ref(params[i], grad_at(t * 10 + i, params[i]), states[i], **kw)
    return params


@pytest.mark.parametrize("name,ref,kw", CASES, ids=IDS)
def test_matches_numpy_reference(name, ref, kw, rng):
    init = [rng.standard_normal(s) for s in [(4, 5), (7,), ()]]
    params, _ = run_tensora(name, kw, init, 25)
    expected = run_reference(ref, kw, init, 25)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.detach().numpy(), e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,ref,kw", CASES, ids=IDS)
def test_chunked_path_matches_reference(name, ref, kw, rng, monkeypatch):
    """Tiny chunks (8 float64s) split a 101-element tensor into 13 pieces, the last one short."""
    monkeypatch.setattr(optimizer_module, "CHUNK_BYTES", 64)
    init = [rng.standard_normal(101)]
    params, _ = run_tensora(name, kw, init, 5)
    np.testing.assert_allclose(params[0].detach().numpy(), run_reference(ref, kw, init, 5)[0], rtol=1e-10,
                               atol=1e-12)


@pytest.mark.parametrize("name,ref,kw", CASES, ids=IDS)
def test_bfloat16_params_track_the_float64_reference(name, ref, kw, rng):
    """16-bit parameters keep 16-bit state; the arithmetic runs in float32 scratch, rounding once per store."""
    init = rng.standard_normal(64)
    p = tensora.tensor(init).to(tensora.bfloat16).requires_grad_()
    ref_p, ref_state = p.detach().float().numpy().astype(np.float64), {}
    opt = getattr(optim, name)([p], **kw)
    for t in range(5):
        g = grad_at(t, ref_p)
        p.grad = tensora.tensor(g).to(tensora.bfloat16)
        opt.step()
        ref_p = ref(ref_p, p.grad.float().numpy().astype(np.float64), ref_state, **kw)
        ref_p = ref_p.astype(ml_dtypes.bfloat16).astype(np.float64)  # the parameter is stored in bfloat16
    assert p.dtype is tensora.bfloat16
    assert all(v.dtype is tensora.bfloat16 for k, v in opt.state[p].items() if k != "step")
    got = p.detach().float().numpy()
    ulp = np.spacing(np.abs(ref_p).astype(ml_dtypes.bfloat16)).astype(np.float64)
    # A few bfloat16 ulps (0.0078 at 1): steps that round away in one order do not in the other (e.g. AdamW's
    # decay, stored before the update as in torch), and the 16-bit state rounds each step.
    err = np.abs(got - ref_p)
    assert err.mean() < 0.01 and err.max() < 0.08


def test_update_writes_through_a_strided_parameter(rng):
    """A transposed (non-contiguous) leaf is updated in place: its base storage sees the step."""
    base = tensora.tensor(rng.standard_normal((3, 4)))
    p = base.T.requires_grad_()
    assert not p.is_contiguous() and p.is_leaf
    g = rng.standard_normal((4, 3))
    expected = adam_ref(p.detach().numpy().copy(), g, {}, lr=0.1)
    p.grad = tensora.tensor(g)
    optim.Adam([p], lr=0.1).step()
    np.testing.assert_allclose(base.numpy().T, expected, rtol=1e-12)


def test_float32_params_keep_float32_state(rng):
    p = tensora.tensor(rng.standard_normal(5).astype(np.float32), requires_grad=True)
    p.grad = tensora.ones(5)
    opt = optim.Adam([p])
    opt.step()
    state = opt.state[p]
    assert p.dtype is tensora.float32
    assert state["exp_avg"].dtype is tensora.float32 and state["exp_avg_sq"].dtype is tensora.float32
    assert state["step"].dtype is tensora.float32 and state["step"].shape == () and state["step"].item() == 1.0


def test_step_skips_params_without_grad_and_bumps_versions():
    a = tensora.ones(3, requires_grad=True)
    b = tensora.ones(3, requires_grad=True)
    a.grad = tensora.ones(3)
    opt = optim.SGD([a, b], lr=0.5)
    va, vb = a._version, b._version
    opt.step()
    assert a.tolist() == [0.5, 0.5, 0.5] and b.tolist() == [1.0, 1.0, 1.0]
    assert a._version == va + 1 and b._version == vb


def test_step_does_not_record_a_graph():
    p = tensora.ones(2, requires_grad=True)
    p.grad = tensora.ones(2)
    optim.Adam([p]).step()
    assert p.grad_fn is None and p.is_leaf


def test_closure_runs_with_grad_enabled_and_returns_loss():
    p = tensora.tensor([2.0], requires_grad=True)
    opt = optim.SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with tensora.no_grad():
        loss = opt.step(closure)
    assert loss.item() == 4.0 and p.tolist() == [1.0]  # 2 - 0.25 * 2 * 2


# -- param groups -----------------------------------------------------------------------------------------------
def test_param_groups_use_their_own_hyperparameters():
    a = tensora.ones(2, requires_grad=True)
    b = tensora.ones(2, requires_grad=True)
    opt = optim.SGD([{"params": [a]}, {"params": b, "lr": 0.5, "momentum": 0.9}], lr=0.1)
    a.grad, b.grad = tensora.ones(2), tensora.ones(2)
    opt.step()
    assert np.allclose(a.tolist(), [0.9, 0.9]) and np.allclose(b.tolist(), [0.5, 0.5])
    assert opt.param_groups[0]["momentum"] == 0 and opt.param_groups[1]["momentum"] == 0.9
    assert a not in opt.state and "momentum_buffer" in opt.state[b]  # plain SGD keeps no state, like torch


def test_add_param_group_fills_defaults_and_steps_new_params():
    a = tensora.ones(2, requires_grad=True)
    b = tensora.ones(2, requires_grad=True)
    opt = optim.Adam([a], lr=0.1, betas=(0.8, 0.9))
    opt.add_param_group({"params": [b], "lr": 0.01})
    group = opt.param_groups[1]
    assert group["lr"] == 0.01 and group["betas"] == (0.8, 0.9) and group["params"][0] is b
    b.grad = tensora.ones(2)
    opt.step()
    assert np.allclose(b.tolist(), 1 - 0.01, rtol=1e-6)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(TypeError, match="must be a dict"):
        opt.add_param_group([b])


def test_named_parameters_are_recorded_in_groups_and_state_dict():
    a = tensora.ones(2, requires_grad=True)
    opt = optim.SGD([("layer.weight", a)], lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["layer.weight"]
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["layer.weight"]
    with pytest.raises(ValueError, match="with/without names"):
        opt.add_param_group({"params": [tensora.ones(1, requires_grad=True)]})


def test_parameter_validation_errors():
    p = tensora.ones(2, requires_grad=True)
    with pytest.raises(TypeError, match="iterable of Tensors or dicts"):
        optim.SGD(p)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([])
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD([{"params": {p}}])
    with pytest.raises(TypeError, match="can only optimize Tensors, but one of the params is ndarray"):
        optim.SGD([np.ones(2)])
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([p * 2])
    with pytest.warns(UserWarning, match="duplicate parameters"):
        optim.SGD([p, p])


@pytest.mark.parametrize("build,message", [
    (lambda p: optim.SGD(p, lr=-0.1), "Invalid learning rate: -0.1"),
    (lambda p: optim.SGD(p, momentum=-1), "Invalid momentum value: -1"),
    (lambda p: optim.SGD(p, weight_decay=-1e-3), "Invalid weight_decay value: -0.001"),
    (lambda p: optim.SGD(p, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    (lambda p: optim.SGD(p, momentum=0.9, dampening=0.1, nesterov=True), "dampening=0.1"),
    (lambda p: optim.Adam(p, lr=-1), "Invalid learning rate: -1"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
    (lambda p: optim.Adam(p, betas=(0.9, -0.5)), "Invalid beta parameter at index 1: -0.5"),
    (lambda p: optim.AdamW(p, eps=-1e-8), "Invalid epsilon value: -1e-08"),
    (lambda p: optim.AdamW(p, weight_decay=-2), "Invalid weight_decay value: -2"),
    (lambda p: optim.RMSprop(p, alpha=-0.1), "Invalid alpha value: -0.1"),
    (lambda p: optim.RMSprop(p, momentum=-0.1), "Invalid momentum value: -0.1"),
    (lambda p: optim.Adagrad(p, lr_decay=-1), "Invalid lr_decay value: -1"),
    (lambda p: optim.Adagrad(p, initial_accumulator_value=-1), "Invalid initial_accumulator_value value: -1"),
    (lambda p: optim.Lion(p, betas=(0.9, 1.5)), "Invalid beta parameter at index 1: 1.5"),
    (lambda p: optim.Lion(p, lr=float("nan")), "Invalid learning rate: nan"),
])
def test_hyperparameter_errors_name_the_value(build, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        build([tensora.ones(2, requires_grad=True)])


# -- zero_grad ----------------------------------------------------------------------------------------------------
def test_zero_grad_set_to_none_drops_grads():
    p = tensora.ones(2, requires_grad=True)
    p.grad = tensora.ones(2)
    opt = optim.SGD([p])
    opt.zero_grad()
    assert p.grad is None
    opt.zero_grad()  # no grads: nothing to do


def test_zero_grad_in_place_keeps_the_tensor_and_detaches_it():
    p = tensora.ones(2, requires_grad=True)
    (p * p).sum().backward(create_graph=True)
    g = p.grad
    assert g.grad_fn is not None
    optim.SGD([p]).zero_grad(set_to_none=False)
    assert p.grad is g and g.tolist() == [0.0, 0.0] and g.grad_fn is None and not g.requires_grad
    p.grad = tensora.ones(2)  # a leaf grad: only requires_grad is switched off
    optim.SGD([p]).zero_grad(set_to_none=False)
    assert p.grad.tolist() == [0.0, 0.0]


# -- state dicts --------------------------------------------------------------------------------------------------
STATE_KEYS = {"SGD": {"momentum_buffer"}, "Adam": {"step", "exp_avg", "exp_avg_sq"},
              "AdamW": {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
              "RMSprop": {"step", "square_avg", "momentum_buffer", "grad_avg"}, "Adagrad": {"step", "sum"},
              "Lion": {"exp_avg"}}
BUILD = {"SGD": dict(lr=0.1, momentum=0.9), "Adam": dict(lr=0.01), "AdamW": dict(lr=0.01, amsgrad=True),
         "RMSprop": dict(momentum=0.5, centered=True), "Adagrad": dict(lr_decay=0.01), "Lion": dict(lr=0.01)}


def _two_group_optimizer(name, rng):
    ps = [tensora.tensor(rng.standard_normal(s), requires_grad=True) for s in [(3,), (2, 2), (4,)]]
    return ps, getattr(optim, name)([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.003}], **BUILD[name])


def _train(ps, opt, start, stop):
    for t in range(start, stop):
        for i, p in enumerate(ps):
            p.grad = tensora.tensor(grad_at(t * 10 + i, p.detach().numpy()))
        opt.step()


@pytest.mark.parametrize("name", sorted(STATE_KEYS))
def test_state_dict_layout(name, rng):
    ps, opt = _two_group_optimizer(name, rng)
    _train(ps, opt, 0, 3)
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert sd["param_groups"][1]["lr"] == 0.003
    assert set(sd["state"]) == {0, 1, 2}
    for s in sd["state"].values():
        assert set(s) == STATE_KEYS[name]
        if "step" in s:
            assert isinstance(s["step"], tensora.Tensor) and s["step"].dtype is tensora.float32
            assert s["step"].item() == 3.0


@pytest.mark.parametrize("name", sorted(STATE_KEYS))
def test_state_dict_round_trip_mid_training(name, rng):
    """Training 10 steps, saving, and resuming for 10 more equals 20 uninterrupted steps, bit for bit."""
    ps, opt = _two_group_optimizer(name, rng)
    _train(ps, opt, 0, 10)
    saved_params = [p.detach().numpy().copy() for p in ps]
    saved = copy.deepcopy(opt.state_dict())  # tensors included: training on must not change it
    _train(ps, opt, 10, 20)

    ps2 = [tensora.tensor(a, requires_grad=True) for a in saved_params]
    opt2 = getattr(optim, name)([{"params": ps2[:2]}, {"params": ps2[2:]}], lr=0.5)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[1]["lr"] == 0.003 and opt2.param_groups[1]["params"][0] is ps2[2]
    _train(ps2, opt2, 10, 20)
    for a, b in zip(ps, ps2):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


@pytest.mark.parametrize("name", ["Adam", "SGD", "Adagrad"])
def test_state_dict_survives_a_checkpoint_file(name, rng, tmp_path):
    ps, opt = _two_group_optimizer(name, rng)
    _train(ps, opt, 0, 5)
    saved_params = [p.detach().numpy().copy() for p in ps]
    tensora.save_checkpoint(tmp_path / "ckpt.safetensors", optimizer=opt)
    _train(ps, opt, 5, 10)

    ps2 = [tensora.tensor(a, requires_grad=True) for a in saved_params]
    opt2 = getattr(optim, name)([{"params": ps2[:2]}, {"params": ps2[2:]}])
    tensora.load_checkpoint(tmp_path / "ckpt.safetensors", optimizer=opt2)
    _train(ps2, opt2, 5, 10)
    for a, b in zip(ps, ps2):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_load_state_dict_casts_state_to_the_parameter_dtype_and_restores_plain_steps():
    p32 = tensora.ones(3, requires_grad=True)
    opt = optim.Adam([p32])
    sd = {"state": {0: {"step": 4, "exp_avg": tensora.ones(3, dtype=tensora.float64),
                        "exp_avg_sq": tensora.ones(3, dtype=tensora.float64)}},
          "param_groups": [{"lr": 0.5, "betas": [0.8, 0.9], "eps": 1e-8, "weight_decay": 0, "params": [0]}]}
    opt.load_state_dict(sd)
    state = opt.state[p32]
    assert state["exp_avg"].dtype is tensora.float32
    assert isinstance(state["step"], tensora.Tensor) and state["step"].dtype is tensora.float32
    assert state["step"].item() == 4.0
    group = opt.param_groups[0]
    assert group["lr"] == 0.5 and group["amsgrad"] is False and group["params"] == [p32]  # missing keys defaulted
    assert group["betas"] is not sd["param_groups"][0]["betas"]  # groups share no containers with the input


def test_adamw_load_keeps_decoupled_weight_decay():
    p = tensora.ones(1, requires_grad=True)
    sd = optim.Adam([p]).state_dict()
    opt = optim.AdamW([p])
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["decoupled_weight_decay"] is True


def test_load_state_dict_rejects_mismatched_groups():
    a, b = tensora.ones(1, requires_grad=True), tensora.ones(1, requires_grad=True)
    sd = optim.SGD([a, b]).state_dict()
    with pytest.raises(ValueError, match="different number of parameter groups"):
        optim.SGD([{"params": [a]}, {"params": [b]}]).load_state_dict(sd)
    with pytest.raises(ValueError, match="doesn't match the size"):
        optim.SGD([a]).load_state_dict(sd)


@pytest.mark.parametrize("make", [lambda ps: optim.Adam(ps, amsgrad=True), lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.RMSprop(ps, momentum=0.9, centered=True), optim.Adagrad, optim.Lion,
                                  lambda ps: optim.Adam8bit(ps, min_8bit_size=1),
                                  lambda ps: optim.Adam8bit(ps, min_8bit_size=10**6)])
@pytest.mark.parametrize("shape", [(100,), (2, 50)])
def test_load_state_dict_refuses_state_shaped_for_another_parameter(make, shape):
    # a state dict of another model: stepping with it would read another parameter's moments
    big = tensora.ones(300, requires_grad=True)
    big.grad = tensora.ones(300)
    saved = make([big])
    saved.step()
    p = tensora.ones(*shape, requires_grad=True)
    opt = make([p])
    before = opt.state_dict()
    with pytest.raises(tensora.ShapeError, match=r"state '\w+' of parameter 0 has shape \[\d+\], but the parameter, "
                                                 rf"of shape \[{', '.join(map(str, shape))}\], needs \[\d+"):
        opt.load_state_dict(saved.state_dict())
    assert opt.state_dict() == before  # nothing half-loaded


def test_adagrad_state_exists_before_the_first_step():
    p = tensora.ones(2, requires_grad=True)
    opt = optim.Adagrad([p], initial_accumulator_value=0.25)
    state = opt.state_dict()["state"][0]
    assert state["step"].item() == 0.0 and state["sum"].tolist() == [0.25, 0.25]


def test_repr_lists_each_group():
    opt = optim.SGD([tensora.ones(1, requires_grad=True)], lr=0.1)
    text = repr(opt)
    assert text.startswith("SGD (\nParameter Group 0\n") and "    lr: 0.1\n" in text and "params" not in text


def test_subclass_overriding_only_step_still_works():
    class Halve(optim.Optimizer):
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    p._data *= 0.5

    p = tensora.ones(2, requires_grad=True)
    Halve([p], {}).step()
    assert p.tolist() == [0.5, 0.5]
    with pytest.raises(TypeError, match="does not define an update rule"):
        p.grad = tensora.ones(2)
        optim.Optimizer([p], {}).step()


def test_no_warnings_in_a_plain_training_step():
    p = tensora.ones(2, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt = optim.AdamW([p], lr=0.1)
        (p * p).sum().backward()
        opt.step()
        opt.zero_grad()
