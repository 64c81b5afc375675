"""tensora.train: fit against the same loop written by hand, evaluate and accuracy against NumPy float64.

fit must be nothing but the hand-written loop (same parameters after training, same losses),
plus bookkeeping: per-epoch means weighted by batch size, scheduler stepping, validation,
history entries and the progress output.
"""

import numpy as np
import pytest

import tensora
import tensora.nn.functional as F
from tensora import nn
from tensora.data import DataLoader, TensorDataset
from tensora.optim.lr_scheduler import OneCycleLR, ReduceLROnPlateau, StepLR
from tensora.train import accuracy, evaluate, fit


def _task(n=50, seed=0):
    """A float64 3-class problem with n samples (50 -> batches of 16, 16, 16, 2)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 5))
    y = (x @ rng.standard_normal((5, 3))).argmax(1)
    return x, y


def _model():
    tensora.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _loader(x, y, batch_size=16):
    return DataLoader(TensorDataset(tensora.tensor(x), tensora.tensor(y)), batch_size=batch_size)


def _np_forward(model, x):
    """The model's logits in NumPy float64, from its parameters."""
    w1, b1, w2, b2 = (p.detach().numpy() for p in model.parameters())
    return np.tanh(x @ w1.T + b1) @ w2.T + b2


def _np_cross_entropy(logits, y):
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return -logp[np.arange(len(y)), y]


def test_fit_is_the_hand_written_loop():
    x, y = _task()
    ours, by_hand = _model(), _model()
    opt = tensora.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    history = fit(ours, _loader(x, y), opt, epochs=3, progress=False)

    opt_hand = tensora.optim.SGD(by_hand.parameters(), lr=0.1, momentum=0.9)
    epoch_means = []
    for _ in range(3):
        losses, sizes = [], []
        for xb, yb in _loader(x, y):
            loss = F.cross_entropy(by_hand(xb), yb)
            opt_hand.zero_grad()
            loss.backward()
            opt_hand.step()
            losses.append(loss.item())
            sizes.append(len(yb))
        epoch_means.append(np.average(losses, weights=sizes))

    for p, q in zip(ours.parameters(), by_hand.parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())
    np.testing.assert_allclose([h["loss"] for h in history], epoch_means, rtol=1e-12)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert sorted(history[0]) == ["accuracy", "epoch", "loss", "lr", "time"]
    assert all(h["time"] > 0 for h in history)


def test_training_accuracy_is_the_epoch_mean_of_batch_accuracies():
    # lr=0 keeps the model fixed, so the epoch accuracy is the accuracy of the initial model on all samples.
    x, y = _task()
    model = _model()
    history = fit(model, _loader(x, y), tensora.optim.SGD(model.parameters(), lr=0.0), epochs=1, progress=False)
    logits = _np_forward(model, x)
    assert history[0]["accuracy"] == pytest.approx((logits.argmax(1) == y).mean(), rel=1e-12)
    assert history[0]["loss"] == pytest.approx(_np_cross_entropy(logits, y).mean(), rel=1e-12)


def test_evaluate_against_numpy_and_restores_mode():
    x, y = _task(n=37)
    model = _model()
    model.train()
    result = evaluate(model, _loader(x, y, batch_size=10))
    logits = _np_forward(model, x)
    assert result["loss"] == pytest.approx(_np_cross_entropy(logits, y).mean(), rel=1e-12)
    assert result["accuracy"] == pytest.approx((logits.argmax(1) == y).mean(), rel=1e-12)
    assert model.training
    model.eval()
    evaluate(model, _loader(x, y))
    assert not model.training


def test_evaluate_records_no_graph():
    x, y = _task()
    model = _model()
    assert evaluate(model, _loader(x, y), metrics={"g": lambda out, t: float(out.requires_grad)})["g"] == 0.0


def test_accuracy_against_numpy():
    rng = np.random.default_rng(3)
    logits, target = rng.standard_normal((4, 6, 5)), rng.integers(0, 5, (4, 6))
    expected = (logits.argmax(-1) == target).mean()
    assert accuracy(tensora.tensor(logits), tensora.tensor(target)) == pytest.approx(expected)


@pytest.mark.parametrize("target", [np.zeros((4,)), np.zeros((4, 3), dtype=np.int64), np.zeros((4,), dtype=bool)])
def test_accuracy_is_none_when_targets_are_not_class_indices(target):
    assert accuracy(tensora.zeros(4, 3), tensora.tensor(target)) is None


def test_regression_history_has_no_accuracy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5))
    y = x @ rng.standard_normal((5, 3))
    model = _model()
    history = fit(model, _loader(x, y), tensora.optim.Adam(model.parameters(), lr=1e-2), epochs=2,
                  loss_fn=F.mse_loss, val_loader=_loader(x, y), progress=False)
    assert sorted(history[-1]) == ["epoch", "loss", "lr", "time", "val_loss"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["val_loss"] == pytest.approx(((_np_forward(model, x) - y) ** 2).mean(), rel=1e-12)


def test_val_entries_match_evaluate_after_each_epoch():
    x, y = _task()
    xv, yv = _task(seed=1)
    model = _model()
    history = fit(model, _loader(x, y), tensora.optim.SGD(model.parameters(), lr=0.1), epochs=2,
                  val_loader=_loader(xv, yv), progress=False)
    final = evaluate(model, _loader(xv, yv))
    assert history[-1]["val_loss"] == pytest.approx(final["loss"], rel=1e-12)
    assert history[-1]["val_accuracy"] == pytest.approx(final["accuracy"], rel=1e-12)


def test_scheduler_per_epoch_and_lr_in_history():
    x, y = _task()
    model = _model()
    opt = tensora.optim.SGD(model.parameters(), lr=1.0)
    history = fit(model, _loader(x, y), opt, epochs=4, scheduler=StepLR(opt, step_size=1, gamma=0.5), progress=False)
    assert [h["lr"] for h in history] == [1.0, 0.5, 0.25, 0.125]
    assert opt.param_groups[0]["lr"] == 0.0625


def test_scheduler_per_batch():
    x, y = _task()
    loader = _loader(x, y)
    model = _model()
    opt = tensora.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = OneCycleLR(opt, max_lr=0.1, total_steps=3 * len(loader))
    fit(model, loader, opt, epochs=3, scheduler=sched, scheduler_interval="batch", progress=False)
    assert sched.last_epoch == 3 * len(loader)


def test_plateau_scheduler_gets_the_validation_loss():
    x, y = _task()
    model = _model()
    opt = tensora.optim.SGD(model.parameters(), lr=0.05)
    # mode="max" on a falling loss: every epoch after the first is "bad", so lr halves each time.
    sched = ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0)
    history = fit(model, _loader(x, y), opt, epochs=3, scheduler=sched, val_loader=_loader(x[:20], y[:20]),
                  progress=False)
    assert [h["lr"] for h in history] == [0.05, 0.05, 0.025]
    assert sched.best == history[0]["val_loss"]


def test_plateau_scheduler_without_validation_uses_training_loss():
    x, y = _task()
    model = _model()
    opt = tensora.optim.SGD(model.parameters(), lr=0.05)
    sched = ReduceLROnPlateau(opt, mode="max", patience=5)
    history = fit(model, _loader(x, y), opt, epochs=2, scheduler=sched, progress=False)
    assert sched.best == history[0]["loss"]


def test_several_inputs_custom_metrics_and_device():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 3), nn.Linear(2, 3)

        def forward(self, u, v):
            return self.a(u) + self.b(v)

    rng = np.random.default_rng(0)
    u, v, y = rng.standard_normal((32, 5)), rng.standard_normal((32, 2)), rng.integers(0, 3, 32)
    ds = TensorDataset(tensora.tensor(u, dtype=tensora.float32), tensora.tensor(v, dtype=tensora.float32),
                       tensora.tensor(y))
    model = Pair()
    seen = []
    metrics = {"batch": lambda out, t: seen.append(tuple(out.shape)) or float(len(t))}
    history = fit(model, DataLoader(ds, batch_size=12), tensora.optim.SGD(model.parameters(), lr=0.1), epochs=1,
                  metrics=metrics, device="cpu", progress=False)
    assert seen == [(12, 3), (12, 3), (8, 3)]
    assert history[0]["batch"] == pytest.approx((12 * 12 + 12 * 12 + 8 * 8) / 32)
    assert "accuracy" not in history[0]


def test_progress_output(capsys):
    x, y = _task()
    model = _model()
    fit(model, _loader(x, y), tensora.optim.SGD(model.parameters(), lr=0.1), epochs=2)
    out = capsys.readouterr()
    assert "epoch 1/2: loss" in out.out + out.err
    assert "epoch 2/2: loss" in out.out + out.err
    fit(model, _loader(x, y), tensora.optim.SGD(model.parameters(), lr=0.1), epochs=1, progress=False)
    out = capsys.readouterr()
    assert out.out == out.err == ""


def test_errors():
    x, y = _task()
    model = _model()
    opt = tensora.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="scheduler_interval"):
        fit(model, _loader(x, y), opt, epochs=1, scheduler_interval="step", progress=False)
    with pytest.raises(TypeError, match=r"\(inputs\.\.\., target\)"):
        fit(model, [tensora.tensor(x)], opt, epochs=1, progress=False)
