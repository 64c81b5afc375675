"""LR schedulers against their closed-form formulas (math, float64), plus state dicts, warnings and errors.

The schedulers step with torch's recursive forms; here each sequence is compared
with the direct formula from the PyTorch docs, written out below.
"""

import math
import warnings

import numpy as np
import pytest

import tensora
import tensora.optim as optim
from tensora.optim import lr_scheduler as S


def make_opt(cls=optim.SGD, lrs=(1.0, 0.5), **kw):
    groups = [{"params": [tensora.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs]
    return cls(groups, **kw)


def run(opt, sched, n, metrics=None, key=None):
    """Step n times (optimizer first, as one must); record every group's lr (and momentum/beta1 if key)."""
    rows = []
    for i in range(n):
        opt.step()
        if metrics is None:
            sched.step()
        else:
            sched.step(metrics[i])
        row = [g["lr"] for g in opt.param_groups]
        if key == "betas":
            row += [g["betas"][0] for g in opt.param_groups]
        elif key:
            row += [g[key] for g in opt.param_groups]
        rows.append(row)
    return np.array(rows)


def closed(fn, n, bases=(1.0, 0.5)):
    """The expected lr after each of n steps: epoch t = 1..n."""
    return np.array([[fn(t, b) for b in bases] for t in range(1, n + 1)])


CLOSED_FORMS = [
    ("StepLR", lambda o: S.StepLR(o, step_size=7, gamma=0.5), lambda t, b: b * 0.5 ** (t // 7)),
    ("MultiStepLR", lambda o: S.MultiStepLR(o, milestones=[5, 12, 12, 30], gamma=0.1),
     lambda t, b: b * 0.1 ** sum(m <= t for m in [5, 12, 12, 30])),
    ("ExponentialLR", lambda o: S.ExponentialLR(o, gamma=0.97), lambda t, b: b * 0.97 ** t),
    ("CosineAnnealingLR", lambda o: S.CosineAnnealingLR(o, T_max=25, eta_min=0.01),
     lambda t, b: 0.01 + (b - 0.01) * (1 + math.cos(math.pi * t / 25)) / 2),
    ("LinearLR", lambda o: S.LinearLR(o, start_factor=0.2, end_factor=0.9, total_iters=20),
     lambda t, b: b * (0.2 + 0.7 * min(t, 20) / 20)),
    ("LambdaLR", lambda o: S.LambdaLR(o, lambda e: 1 / (1 + e)), lambda t, b: b / (1 + t)),
]


@pytest.mark.parametrize("name,build,formula", CLOSED_FORMS, ids=[c[0] for c in CLOSED_FORMS])
def test_recursive_steps_follow_the_closed_form(name, build, formula):
    opt = make_opt()
    sched = build(opt)
    assert sched.get_last_lr() == [formula(0, 1.0), formula(0, 0.5)]  # construction sets epoch 0
    np.testing.assert_allclose(run(opt, sched, 80), closed(formula, 80), rtol=1e-12, atol=1e-15)


def test_lambda_lr_per_group_functions():
    opt = make_opt()
    sched = S.LambdaLR(opt, [lambda e: 0.5 ** e, lambda e: e + 1])
    np.testing.assert_allclose(run(opt, sched, 4), [[0.5, 1.0], [0.25, 1.5], [0.125, 2.0], [0.0625, 2.5]])
    with pytest.raises(ValueError, match="Expected 2 lr_lambdas, but got 1"):
        S.LambdaLR(opt, [lambda e: 1.0])


def test_sequential_lr_switches_at_milestones():
    """Warmup (LinearLR) for 10 epochs, cosine for 50, then exponential decay; each restarts at its epoch 0."""
    opt = make_opt()
    sched = S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.1, total_iters=10),
                                 S.CosineAnnealingLR(opt, T_max=50), S.ExponentialLR(opt, gamma=0.9)],
                           milestones=[10, 60])
    assert sched.get_last_lr() == pytest.approx([0.1, 0.05])

    def expected(t, b):
        if t < 10:
            return b * (0.1 + 0.9 * t / 10)
        if t < 60:
            return b * (1 + math.cos(math.pi * (t - 10) / 50)) / 2
        return b * 0.9 ** (t - 60)

    np.testing.assert_allclose(run(opt, sched, 120), closed(expected, 120), rtol=1e-10, atol=1e-14)


def one_cycle_reference(t, max_lr, total, pct=0.3, div=25.0, final_div=1e4, three_phase=False, cos=True):
    """lr at step t of the 1cycle policy, from the torch docs' description of the phases."""
    initial, = (max_lr / div,)
    low = initial / final_div
    anneal = ((lambda a, b, x: b + (a - b) / 2 * (math.cos(math.pi * x) + 1)) if cos
              else (lambda a, b, x: (b - a) * x + a))
    up = pct * total - 1
    if three_phase:
        phases = [(up, initial, max_lr), (2 * pct * total - 2, max_lr, initial), (total - 1, initial, low)]
    else:
        phases = [(up, initial, max_lr), (total - 1, max_lr, low)]
    start = 0.0
    for i, (end, a, b) in enumerate(phases):
        if t <= end or i == len(phases) - 1:
            return anneal(a, b, (t - start) / (end - start))
        start = end


@pytest.mark.parametrize("three_phase,strategy", [(False, "cos"), (True, "linear"), (True, "cos")])
def test_one_cycle_lr_follows_the_phases(three_phase, strategy):
    opt = make_opt(momentum=0.9)
    sched = S.OneCycleLR(opt, max_lr=[2.0, 0.2], total_steps=100, three_phase=three_phase,
                         anneal_strategy=strategy)
    got = run(opt, sched, 99)
    ref = closed(lambda t, b: one_cycle_reference(t, b, 100, three_phase=three_phase, cos=strategy == "cos"), 99,
                 bases=(2.0, 0.2))
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert opt.param_groups[0]["initial_lr"] == 2.0 / 25 and opt.param_groups[1]["max_lr"] == 0.2


def test_one_cycle_cycles_momentum_against_the_lr():
    opt = make_opt(momentum=0.9)
    sched = S.OneCycleLR(opt, max_lr=1.0, total_steps=50)
    assert opt.param_groups[0]["momentum"] == 0.95  # starts at max_momentum while the lr is lowest
    rows = run(opt, sched, 49, key="momentum")
    peak = int(np.argmax(rows[:, 0]))
    assert rows[peak, 2] == pytest.approx(0.85)  # lowest momentum at the lr peak
    assert rows[-1, 2] == pytest.approx(0.95)


def test_one_cycle_drives_adam_beta1_and_keeps_beta2():
    opt = make_opt(optim.Adam, betas=(0.9, 0.99))
    sched = S.OneCycleLR(opt, max_lr=0.1, epochs=2, steps_per_epoch=10, base_momentum=0.8, max_momentum=0.9)
    rows = run(opt, sched, 20, key="betas")
    assert rows[:, 2].min() == pytest.approx(0.8) and opt.param_groups[0]["betas"][1] == 0.99
    with pytest.raises(ValueError, match="Tried to step 21 times. The specified number of total steps is 20"):
        opt.step()
        sched.step()


def test_reduce_lr_on_plateau_hand_traced():
    """min mode, patience 2, cooldown 1: the lr halves after 3 epochs without a 1% improvement."""
    opt = make_opt()
    sched = S.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1, threshold=0.01, min_lr=[0.3, 0.0])
    metrics = [1.0, 0.999, 0.995, 0.999, 0.98, 0.98, 0.98, 0.98, 0.98, 0.98, 0.98, 0.98]
    got = run(opt, sched, len(metrics), metrics=metrics)[:, 0]
    # epoch 4 (3 bad epochs after 1.0) -> 0.5; cooldown epoch 5 resets bad count (0.98 is new best anyway);
    # 0.98 stays best: bad at epochs 6,7,8 -> 0.3 (clamped by min_lr) at epoch 8; then clamped for ever.
    np.testing.assert_allclose(got, [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.3, 0.3, 0.3, 0.3, 0.3])
    assert sched.get_last_lr()[1] < 0.5 * 0.5


@pytest.mark.parametrize("mode,threshold_mode,metrics,expected", [
    ("max", "rel", [1.0, 1.0005, 1.2, 1.2, 1.2], [1.0, 1.0, 1.0, 1.0, 0.1]),
    ("max", "abs", [1.0, 1.05, 1.2, 1.2, 1.2], [1.0, 1.0, 1.0, 1.0, 0.1]),
    ("min", "abs", [1.0, 0.95, 0.93, 0.93, 0.93], [1.0, 1.0, 0.1, 0.1, 0.01]),
])
def test_reduce_lr_on_plateau_modes(mode, threshold_mode, metrics, expected):
    opt = make_opt(lrs=(1.0,))
    sched = S.ReduceLROnPlateau(opt, mode=mode, threshold_mode=threshold_mode, threshold=0.1 if threshold_mode ==
                                "abs" else 1e-3, patience=1)
    np.testing.assert_allclose(run(opt, sched, len(metrics), metrics=metrics)[:, 0], expected)


def test_reduce_lr_on_plateau_skips_changes_below_eps():
    opt = make_opt(lrs=(1e-8,))
    sched = S.ReduceLROnPlateau(opt, patience=0)
    run(opt, sched, 3, metrics=[1.0, 1.0, 1.0])
    assert opt.param_groups[0]["lr"] == 1e-8


STATEFUL = [
    lambda o: S.StepLR(o, 5, 0.7),
    lambda o: S.MultiStepLR(o, [3, 9, 9], 0.5),
    lambda o: S.CosineAnnealingLR(o, T_max=15, eta_min=0.05),
    lambda o: S.LinearLR(o, 0.3, 1.0, 12),
    lambda o: S.SequentialLR(o, [S.LinearLR(o, 0.1, total_iters=5), S.ExponentialLR(o, 0.9)], milestones=[5]),
    lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=60),
]


@pytest.mark.parametrize("build", STATEFUL, ids=["step", "multistep", "cosine", "linear", "sequential", "onecycle"])
@pytest.mark.parametrize("via_file", [False, True])
def test_state_dict_round_trip_mid_schedule(build, via_file, tmp_path):
    opt = make_opt(momentum=0.9)
    sched = build(opt)
    run(opt, sched, 8)
    if via_file:
        tensora.save_checkpoint(tmp_path / "c.safetensors", optimizer=opt, scheduler=sched)
    else:
        opt_state, sched_state = opt.state_dict(), sched.state_dict()
    rest = run(opt, sched, 30, key="momentum")

    opt2 = make_opt(lrs=(0.0, 0.0), momentum=0.9)
    sched2 = build(opt2)
    if via_file:
        tensora.load_checkpoint(tmp_path / "c.safetensors", optimizer=opt2, scheduler=sched2)
    else:
        opt2.load_state_dict(opt_state)
        sched2.load_state_dict(sched_state)
    np.testing.assert_array_equal(run(opt2, sched2, 30, key="momentum"), rest)


def test_reduce_lr_on_plateau_state_round_trip(tmp_path):
    metrics = [1.0 - 0.01 * (i % 5) for i in range(40)]
    opt = make_opt()
    sched = S.ReduceLROnPlateau(opt, patience=2, cooldown=1)
    run(opt, sched, 10, metrics=metrics)
    tensora.save_checkpoint(tmp_path / "c.safetensors", optimizer=opt, scheduler=sched)
    rest = run(opt, sched, 30, metrics=metrics[10:])
    opt2 = make_opt()
    sched2 = S.ReduceLROnPlateau(opt2, mode="max")
    tensora.load_checkpoint(tmp_path / "c.safetensors", optimizer=opt2, scheduler=sched2)
    assert sched2.mode_worse == math.inf
    np.testing.assert_array_equal(run(opt2, sched2, 30, metrics=metrics[10:]), rest)


def test_lambda_lr_state_dict_keeps_callable_objects_not_functions():
    class Decay:
        def __init__(self):
            self.rate = 0.5

        def __call__(self, epoch):
            return self.rate ** epoch

    opt = make_opt()
    decay = Decay()
    sched = S.LambdaLR(opt, [decay, lambda e: 1.0])
    decay.rate = 0.25
    sd = sched.state_dict()
    assert sd["lr_lambdas"] == [{"rate": 0.25}, None]
    fresh = Decay()
    S.LambdaLR(make_opt(), [fresh, lambda e: 1.0]).load_state_dict(sd)
    assert fresh.rate == 0.25


def test_resuming_needs_initial_lr():
    with pytest.raises(KeyError, match="initial_lr"):
        S.StepLR(make_opt(), 5, last_epoch=3)
    opt = make_opt()
    for g in opt.param_groups:
        g["initial_lr"] = 2.0
    sched = S.StepLR(opt, step_size=5, gamma=0.5, last_epoch=4)
    run(opt, sched, 1)
    assert opt.param_groups[0]["lr"] == 0.5  # epoch 5 halves the lr it had


def test_warns_when_the_scheduler_steps_before_the_optimizer():
    opt = make_opt()
    sched = S.StepLR(opt, 5)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        sched.step()
    opt2 = make_opt()
    sched2 = S.StepLR(opt2, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt2.step()
        sched2.step()
        sched2.step()


def test_calling_get_lr_directly_points_to_get_last_lr():
    sched = S.ExponentialLR(make_opt(), 0.5)
    with pytest.warns(UserWarning, match="get_last_lr"):
        sched.get_lr()


def test_scheduler_errors():
    opt = make_opt()
    with pytest.raises(TypeError, match="list is not an Optimizer"):
        S.StepLR([], 3)
    with pytest.raises(ValueError, match="start_factor=0"):
        S.LinearLR(opt, start_factor=0)
    with pytest.raises(ValueError, match="end_factor=1.5"):
        S.LinearLR(opt, end_factor=1.5)
    with pytest.raises(ValueError, match="total_steps OR"):
        S.OneCycleLR(opt, max_lr=1.0)
    with pytest.raises(ValueError, match="positive integer total_steps, but got 0"):
        S.OneCycleLR(opt, max_lr=1.0, total_steps=0)
    with pytest.raises(ValueError, match="pct_start, but got 2.0"):
        S.OneCycleLR(opt, max_lr=1.0, total_steps=10, pct_start=2.0)
    with pytest.raises(ValueError, match="instead got cosine"):
        S.OneCycleLR(opt, max_lr=1.0, total_steps=10, anneal_strategy="cosine")
    with pytest.raises(ValueError, match="max_lr must have the same length"):
        S.OneCycleLR(opt, max_lr=[1.0], total_steps=10)
    with pytest.raises(ValueError, match="momentum or beta1"):
        S.OneCycleLR(make_opt(optim.Adagrad), max_lr=1.0, total_steps=10)
    with pytest.raises(ValueError, match="number of schedulers 2 and the number of milestones to be equal to 2"):
        S.SequentialLR(opt, [S.StepLR(opt, 2), S.StepLR(opt, 3)], milestones=[2, 4])
    with pytest.raises(ValueError, match="same optimizer"):
        S.SequentialLR(opt, [S.StepLR(opt, 2), S.StepLR(make_opt(), 3)], milestones=[2])
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        S.SequentialLR(opt, [S.StepLR(opt, 2), S.ReduceLROnPlateau(opt)], milestones=[2])
    with pytest.raises(ValueError, match="Factor should be < 1.0, got factor=1.5"):
        S.ReduceLROnPlateau(opt, factor=1.5)
    with pytest.raises(ValueError, match="mode 'median' is unknown"):
        S.ReduceLROnPlateau(opt, mode="median")
    with pytest.raises(ValueError, match="expected 2 min_lrs, got 3"):
        S.ReduceLROnPlateau(opt, min_lr=[0, 0, 0])
