"""ConstantLR, PolynomialLR and ChainedScheduler against torch.optim.lr_scheduler: 60-step lr sequences
equal to the last bit, alone, chained and inside SequentialLR, and the same state_dict keys."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

import tensora  # noqa: E402
import tensora.optim as optim  # noqa: E402


def make_opts():
    t_params = [torch.zeros(2, requires_grad=True) for _ in range(2)]
    a_params = [tensora.zeros(2, requires_grad=True) for _ in range(2)]
    t_opt = torch.optim.SGD([{"params": [t_params[0]], "lr": 0.1}, {"params": [t_params[1]], "lr": 0.03}],
                            momentum=0.9)
    a_opt = optim.SGD([{"params": [a_params[0]], "lr": 0.1}, {"params": [a_params[1]], "lr": 0.03}], momentum=0.9)
    return t_opt, a_opt


def lr_sequence(opt, sched, n):
    rows = []
    for _ in range(n):
        opt.step()
        sched.step()
        rows.append([g["lr"] for g in opt.param_groups] + list(sched.get_last_lr()))
    return np.array(rows)


SCHEDULES = {
    "ConstantLR": lambda S, o: S.ConstantLR(o, factor=0.3, total_iters=17),
    "ConstantLR-default": lambda S, o: S.ConstantLR(o),
    "PolynomialLR": lambda S, o: S.PolynomialLR(o, total_iters=40, power=1.7),
    "PolynomialLR-default": lambda S, o: S.PolynomialLR(o),
    "Chained": lambda S, o: S.ChainedScheduler([S.ConstantLR(o, factor=0.1, total_iters=20), S.ExponentialLR(o, 0.9)]),
    "Chained-3": lambda S, o: S.ChainedScheduler([S.LinearLR(o, start_factor=0.2, total_iters=8),
                                                  S.PolynomialLR(o, total_iters=50, power=0.5),
                                                  S.MultiStepLR(o, [10, 30], 0.5)], optimizer=o),
    "Sequential-constant-poly": lambda S, o: S.SequentialLR(o, [S.ConstantLR(o, factor=0.5, total_iters=20),
                                                                S.PolynomialLR(o, total_iters=30, power=2.0)],
                                                            milestones=[12]),
    "Sequential-chained": lambda S, o: S.SequentialLR(
        o, [S.ChainedScheduler([S.ConstantLR(o, factor=0.5, total_iters=5), S.ExponentialLR(o, 0.9)]),
            S.PolynomialLR(o, total_iters=30)], milestones=[15]),
}


# Both libraries warn for Sequential-chained: SequentialLR's first step steps the chained ones again.
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_60_step_schedules_equal_torch(name):
    build = SCHEDULES[name]
    t_opt, a_opt = make_opts()
    t_sched, a_sched = build(torch.optim.lr_scheduler, t_opt), build(optim.lr_scheduler, a_opt)
    assert a_sched.get_last_lr() == t_sched.get_last_lr()
    assert [g["lr"] for g in a_opt.param_groups] == [g["lr"] for g in t_opt.param_groups]
    np.testing.assert_array_equal(lr_sequence(a_opt, a_sched, 60), lr_sequence(t_opt, t_sched, 60))
    assert set(a_sched.state_dict()) == set(t_sched.state_dict())


def test_chained_state_dict_loads_into_torchs_layout():
    t_opt, a_opt = make_opts()
    build = SCHEDULES["Chained"]
    t_sched, a_sched = build(torch.optim.lr_scheduler, t_opt), build(optim.lr_scheduler, a_opt)
    lr_sequence(t_opt, t_sched, 7)
    lr_sequence(a_opt, a_sched, 7)
    ours, theirs = a_sched.state_dict(), t_sched.state_dict()
    assert [set(s) for s in ours["_schedulers"]] == [set(s) for s in theirs["_schedulers"]]
    assert [s["last_epoch"] for s in ours["_schedulers"]] == [s["last_epoch"] for s in theirs["_schedulers"]]
