"""`fit`: the standard training loop in one call, for users who do not want to write it.

The loop written by hand stays the first-class path; `fit` is that loop and nothing more,
over public APIs only, so reading it shows what to write once you outgrow it:

    for epoch in range(epochs):
        for inputs, target in loader:
            loss = loss_fn(model(inputs), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()

On top of it: a tqdm progress bar, per-epoch averages of the loss and of `metrics`
(accuracy when targets are class indices), an optional validation pass, and a history
list with one dict per epoch.

    >>> import tensora
    >>> from tensora import nn
    >>> from tensora.data import DataLoader, TensorDataset
    >>> from tensora.train import fit
    >>> x = tensora.randn(64, 4)
    >>> loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)
    >>> model = nn.Linear(4, 2)
    >>> history = fit(model, loader, tensora.optim.SGD(model.parameters(), lr=0.5), epochs=3, progress=False)
    >>> sorted(history[-1])
    ['accuracy', 'epoch', 'loss', 'lr', 'time']
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

from tqdm.auto import tqdm

from .autograd import no_grad
from .dtypes import bool_
from .nn import Module
from .nn import functional as F
from .optim import Optimizer
from .optim.lr_scheduler import ReduceLROnPlateau
from .tensor import Tensor

Metric = Callable[[Tensor, Tensor], "float | None"]

__all__ = ["fit", "evaluate", "accuracy"]


def accuracy(output: Tensor, target: Tensor) -> float | None:
    """Fraction of rows whose argmax over the last dim equals the target class index.

    None when the targets are not class indices (floating point targets, or a shape other
    than output.shape[:-1]), so the default metrics also suit regression.
    """
    is_index = not target.is_floating_point() and target.dtype != bool_
    if not is_index or tuple(target.shape) != tuple(output.shape[:-1]):
        return None
    return (output.argmax(-1) == target).sum().item() / max(target.numel(), 1)


DEFAULT_METRICS: Mapping[str, Metric] = {"accuracy": accuracy}


class _Mean:
    """Running means of named values, weighted by the number of targets each batch holds."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, int] = {}

    def add(self, values: Mapping[str, float | None], weight: int) -> None:
        for name, value in values.items():
            if value is not None:
                self.sums[name] = self.sums.get(name, 0.0) + value * weight
                self.weights[name] = self.weights.get(name, 0) + weight

    def result(self) -> dict[str, float]:
        return {name: total / self.weights[name] for name, total in self.sums.items()}


def _split(batch: Any, device: Any) -> tuple[Sequence[Tensor], Tensor]:
    """A loader batch (inputs..., target) -> (inputs, target), moved to `device` when one is given."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(f"fit expects batches of (inputs..., target), got a {type(batch).__name__}")
    *inputs, target = batch
    if device is not None:
        inputs = [x.to(device) if isinstance(x, Tensor) else x for x in inputs]
        target = target.to(device)
    return inputs, target


def _batch_metrics(loss: Tensor, output: Tensor, target: Tensor,
                   metrics: Mapping[str, Metric]) -> dict[str, float | None]:
    values: dict[str, float | None] = {"loss": loss.item()}
    for name, fn in metrics.items():
        values[name] = fn(output.detach(), target)
    return values


def _summary(record: Mapping[str, float], epochs: int) -> str:
    """'epoch 3/10: loss 0.1234 accuracy 0.9650 val_loss ...' for the line printed after each epoch."""
    values = " ".join(f"{k} {v:.4g}" for k, v in record.items() if k not in ("epoch", "time"))
    return f"epoch {record['epoch']}/{epochs}: {values} ({record['time']:.1f}s)"


def evaluate(model: Module, loader: Iterable[Any], loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
             metrics: Mapping[str, Metric] | None = None, device: Any = None) -> dict[str, float]:
    """Mean loss and metrics of `model` over `loader`, in eval mode and without recording gradients.

    The model's train/eval mode is restored afterwards.
    """
    metrics = DEFAULT_METRICS if metrics is None else metrics
    was_training = model.training
    model.eval()
    means = _Mean()
    with no_grad():
        for batch in loader:
            inputs, target = _split(batch, device)
            output = model(*inputs)
            means.add(_batch_metrics(loss_fn(output, target), output, target, metrics), target.numel())
    model.train(was_training)
    return means.result()


def fit(model: Module, loader: Iterable[Any], optimizer: Optimizer, epochs: int,
        loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy, scheduler: Any = None,
        val_loader: Iterable[Any] | None = None, metrics: Mapping[str, Metric] | None = None,
        device: Any = None, progress: bool = True,
        scheduler_interval: Literal["epoch", "batch"] = "epoch") -> list[dict[str, float]]:
    """Train `model` for `epochs` passes over `loader`; return one dict of averages per epoch.

    Args:
        loader: yields (inputs..., target); the model is called as model(*inputs).
        loss_fn: loss_fn(output, target) -> scalar tensor (default cross entropy).
        scheduler: stepped once per epoch after the optimizer steps (per batch with
            scheduler_interval="batch", as OneCycleLR expects); ReduceLROnPlateau is
            stepped with the epoch's validation loss (training loss without val_loader).
        val_loader: evaluated after each epoch (see `evaluate`); adds "val_" entries.
        metrics: name -> fn(output, target) returning a float, or None where it does not
            apply; default {"accuracy": accuracy}. Epoch values are means weighted by the
            number of targets in each batch.
        device: when given, the model and every batch are moved there.
        progress: show a tqdm bar per epoch with the running loss.

    Each history entry holds "epoch" (1-based), "loss", the metrics, their "val_" forms,
    "lr" (the first param group's, used during the epoch) and "time" (seconds).
    """
    if scheduler_interval not in ("epoch", "batch"):
        raise ValueError(f"scheduler_interval should be 'epoch' or 'batch', not {scheduler_interval!r}")
    metrics = DEFAULT_METRICS if metrics is None else metrics
    if device is not None:
        model.to(device)
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        means = _Mean()
        bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False)
        for batch in bar:
            inputs, target = _split(batch, device)
            output = model(*inputs)
            loss = loss_fn(output, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None and scheduler_interval == "batch":
                scheduler.step()
            means.add(_batch_metrics(loss, output, target, metrics), target.numel())
            bar.set_postfix(loss=f"{means.result()['loss']:.4f}", refresh=False)
        record: dict[str, float] = {"epoch": epoch, **means.result()}
        if val_loader is not None:
            record.update({f"val_{k}": v for k, v in evaluate(model, val_loader, loss_fn, metrics, device).items()})
        if scheduler is not None and scheduler_interval == "epoch":
            if isinstance(scheduler, ReduceLROnPlateau):
                scheduler.step(record.get("val_loss", record["loss"]))
            else:
                scheduler.step()
        record.update(lr=lr, time=time.perf_counter() - start)
        if progress:
            tqdm.write(_summary(record, epochs))
        history.append(record)
    return history
