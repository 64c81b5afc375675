"""Sampling indices from tensors of weights: multinomial (torch.multinomial).

Draws come from a `tensora.Generator` stream (the default one unless `generator=` is
given), like randint and randperm, so tensora.manual_seed(0) repeats them; they match
torch's in distribution, not bit for bit. Each row is computed in float64 on the host.
"""

from __future__ import annotations


import numpy as np

from ..errors import DTypeError, ShapeError, fmt_shape
from ..random import Generator, resolve
from ..tensor import Tensor
from .registry import register


@register()
def multinomial(input: Tensor, num_samples: int, replacement: bool = False,
                generator: Generator | None = None) -> Tensor:
    """Indices drawn from the categories of each row of `input` with probabilities proportional to it.

    input: (n,) or (rows, n) non-negative weights (rows need not sum to 1). Returns int64 indices of
    shape (num_samples,) or (rows, num_samples). Without replacement a row's indices are distinct,
    in the order sequential draws would give them (each draw renormalises the weights left), and
    the row needs at least num_samples non-zero weights; with replacement each draw is independent.

    >>> import tensora
    >>> tensora.multinomial(tensora.tensor([0.0, 1.0, 0.0]), 2, replacement=True).tolist()
    [1, 1]
    """
    p = _check(input, num_samples, replacement)
    rows, n = p.shape
    rng = resolve(generator)
    if replacement:
        # Inverse CDF: the first category whose cumulative weight passes u * total. Dividing by
        # the row's last cumulative value makes it exactly 1, so rounding never lets u pick a
        # zero-weight category after the last non-zero one.
        cdf = np.cumsum(p, axis=1)
        cdf /= cdf[:, -1:]
        u = rng.random((rows, num_samples))
        out = np.stack([np.searchsorted(cdf[r], u[r], side="right") for r in range(rows)])
    else:
        # The exponential race (Efraimidis-Spirakis; torch's CPU kernel does the same): a category
        # with weight w wins at time E / w, E ~ Exp(1); the first num_samples finishers, in finishing
        # order, are distributed as num_samples draws without replacement.
        with np.errstate(divide="ignore"):
            keys = p / rng.standard_exponential((rows, n))
        if num_samples < n:
            part = np.argpartition(-keys, num_samples - 1, axis=1)[:, :num_samples]
        else:
            part = np.broadcast_to(np.arange(n), (rows, n))
        order = np.argsort(-np.take_along_axis(keys, part, axis=1), axis=1, kind="stable")
        out = np.take_along_axis(part, order, axis=1)
    out = out.astype(np.int64, copy=False)
    if input.ndim == 1:
        out = out[0]
    dev = input.device
    if dev.type != "cpu":
        from ..backend import get_backend
        return Tensor(get_backend(dev).from_host(out, dev), device=dev)
    return Tensor(np.ascontiguousarray(out))


def _check(input: Tensor, num_samples: int, replacement: bool) -> np.ndarray:
    """The weights as a float64 (rows, n) host array, after torch's checks (and messages)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"multinomial: expected a Tensor, got {type(input).__name__}")
    if not input.dtype.is_floating_point:
        raise DTypeError(f"multinomial only supports floating-point dtypes for input, got: {input.dtype.name}")
    if input.ndim not in (1, 2):
        raise ShapeError(f"prob_dist must be 1 or 2 dim, got shape {fmt_shape(input.shape)}")
    num_samples = int(num_samples)
    if num_samples <= 0:
        raise ValueError("cannot sample n_sample <= 0 samples")
    n = input.shape[-1]
    if not replacement and num_samples > n:
        raise ValueError("cannot sample n_sample > prob_dist.size(-1) samples without replacement")
    p = np.asarray(input._host(), dtype=np.float64).reshape(-1, n)
    if n == 0:
        raise ShapeError(f"multinomial: cannot sample from an empty distribution (shape {fmt_shape(input.shape)})")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probability tensor contains either `inf`, `nan` or element < 0")
    if (p.sum(axis=1) <= 0).any():
        raise ValueError("invalid multinomial distribution (sum of probabilities <= 0)")
    if not replacement and ((p > 0).sum(axis=1) < num_samples).any():
        # torch 2.x on the CPU fills such rows with zero-weight categories; its earlier versions (and
        # its CUDA kernel) refuse, as we do: a draw without replacement cannot pick weight 0.
        raise ValueError("invalid multinomial distribution (with replacement=False, not enough non-negative "
                         "category to sample)")
    return p
