"""ConstantLR, PolynomialLR and ChainedScheduler against their closed forms (math, float64), inside
SequentialLR, through state dicts, and the errors bad arguments get."""

import numpy as np
import pytest

import tensora
import tensora.optim as optim
from tensora.optim import lr_scheduler as S


def make_opt(lrs=(1.0, 0.5), **kw):
    return optim.SGD([{"params": [tensora.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs], **kw)


def run(opt, sched, n):
    rows = []
    for _ in range(n):
        opt.step()
        sched.step()
        rows.append([g["lr"] for g in opt.param_groups])
    return np.array(rows)


def closed(fn, n, bases=(1.0, 0.5)):
    return np.array([[fn(t, b) for b in bases] for t in range(1, n + 1)])


CLOSED_FORMS = [
    ("ConstantLR", lambda o: S.ConstantLR(o, factor=0.25, total_iters=7), lambda t, b: b * (0.25 if t < 7 else 1.0)),
    ("ConstantLR-default", lambda o: S.ConstantLR(o), lambda t, b: b * (1 / 3 if t < 5 else 1.0)),
    ("PolynomialLR", lambda o: S.PolynomialLR(o, total_iters=20, power=2.0),
     lambda t, b: b * (1 - min(t, 20) / 20) ** 2),
    ("PolynomialLR-linear", lambda o: S.PolynomialLR(o, total_iters=10), lambda t, b: b * (1 - min(t, 10) / 10)),
    ("Chained", lambda o: S.ChainedScheduler([S.ConstantLR(o, factor=0.1, total_iters=4), S.ExponentialLR(o, 0.9)]),
     lambda t, b: b * (0.1 if t < 4 else 1.0) * 0.9 ** t),
]


@pytest.mark.parametrize("name,build,formula", CLOSED_FORMS, ids=[c[0] for c in CLOSED_FORMS])
def test_recursive_steps_follow_the_closed_form(name, build, formula):
    opt = make_opt()
    sched = build(opt)
    np.testing.assert_allclose(sched.get_last_lr(), [formula(0, 1.0), formula(0, 0.5)], rtol=1e-12)
    np.testing.assert_allclose(run(opt, sched, 40), closed(formula, 40), rtol=1e-12, atol=1e-15)


def test_sequential_lr_restarts_constant_and_polynomial_from_their_closed_forms():
    opt = make_opt()
    sched = S.SequentialLR(opt, [S.ConstantLR(opt, factor=0.5, total_iters=10),
                                 S.PolynomialLR(opt, total_iters=4, power=1.0)], milestones=[3])
    assert sched.get_last_lr() == [0.5, 0.25]

    def formula(t, b):
        return b * 0.5 if t < 3 else b * (1 - min(t - 3, 4) / 4)

    np.testing.assert_allclose(run(opt, sched, 10), closed(formula, 10), rtol=1e-12, atol=1e-15)


# torch warns here too: SequentialLR's initial step steps the chained schedulers a second time.
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_sequential_lr_takes_a_chained_scheduler():
    opt = make_opt(lrs=(1.0,))
    chained = S.ChainedScheduler([S.ConstantLR(opt, factor=0.5, total_iters=2), S.ExponentialLR(opt, 0.5)])
    sched = S.SequentialLR(opt, [chained, S.ConstantLR(opt, factor=1.0, total_iters=1)], milestones=[4])
    # The chained pair restarts from epoch 0 (each of its schedulers was stepped back once).
    lrs = [sched.get_last_lr()[0]] + [row[0] for row in run(opt, sched, 5)]
    np.testing.assert_allclose(lrs, [0.25, 0.125, 0.125, 0.0625, 1.0, 1.0], rtol=1e-12)


@pytest.mark.parametrize("build", [
    lambda o: S.ConstantLR(o, factor=0.5, total_iters=12),
    lambda o: S.PolynomialLR(o, total_iters=15, power=0.5),
    lambda o: S.ChainedScheduler([S.PolynomialLR(o, total_iters=20), S.ExponentialLR(o, 0.95)]),
], ids=["constant", "polynomial", "chained"])
@pytest.mark.parametrize("via_file", [False, True])
def test_state_dict_round_trip_mid_schedule(build, via_file, tmp_path):
    opt = make_opt()
    sched = build(opt)
    run(opt, sched, 6)
    if via_file:
        tensora.save_checkpoint(tmp_path / "c.safetensors", optimizer=opt, scheduler=sched)
    else:
        opt_state, sched_state = opt.state_dict(), sched.state_dict()
        saved_keys = set(sched_state)
    rest = run(opt, sched, 20)
    opt2 = make_opt(lrs=(0.0, 0.0))
    sched2 = build(opt2)
    if via_file:
        tensora.load_checkpoint(tmp_path / "c.safetensors", optimizer=opt2, scheduler=sched2)
    else:
        opt2.load_state_dict(opt_state)
        sched2.load_state_dict(sched_state)
        assert set(sched_state) == saved_keys  # load_state_dict leaves the caller's dict whole
    np.testing.assert_array_equal(run(opt2, sched2, 20), rest)
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_chained_scheduler_state_dict_nests_its_schedulers():
    opt = make_opt()
    sched = S.ChainedScheduler([S.ConstantLR(opt), S.ExponentialLR(opt, 0.9)], optimizer=opt)
    state = sched.state_dict()
    assert "optimizer" not in state and len(state["_schedulers"]) == 2
    assert state["_schedulers"][1]["gamma"] == 0.9


def test_scheduler_errors():
    opt = make_opt()
    with pytest.raises(ValueError, match="between 0 and 1"):
        S.ConstantLR(opt, factor=1.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        S.ConstantLR(opt, factor=-0.1)
    with pytest.raises(ValueError, match="total_iters must be a positive"):
        S.PolynomialLR(opt, total_iters=0)
    with pytest.raises(TypeError, match="is not an Optimizer"):
        S.PolynomialLR([1.0])
    with pytest.raises(ValueError, match="at least one scheduler"):
        S.ChainedScheduler([])
    with pytest.raises(TypeError, match="list or tuple of schedulers"):
        S.ChainedScheduler(S.ConstantLR(opt))
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        S.ChainedScheduler([S.ReduceLROnPlateau(opt)])
    with pytest.raises(ValueError, match="same optimizer"):
        S.ChainedScheduler([S.ConstantLR(opt), S.ExponentialLR(make_opt(), 0.9)])
    with pytest.raises(TypeError, match="should have `optimizer`"):
        S.ChainedScheduler([object()], optimizer=opt)
