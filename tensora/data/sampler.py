"""Samplers: which indices a DataLoader fetches, in which order, grouped how.

Same classes and arguments as torch.utils.data.sampler. Random samplers draw
from a `tensora.Generator`: give one (seeded) and the order repeats run after
run; give none and RandomSampler draws one 63-bit seed from the default
generator at the start of each pass (as PyTorch does), so `tensora.manual_seed`
makes the whole run repeat.

    >>> list(BatchSampler(SequentialSampler(range(5)), batch_size=2, drop_last=False))
    [[0, 1], [2, 3], [4]]
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence, Sized

import numpy as np

from ..random import Generator, resolve

_CHUNK = 32  # RandomSampler(replacement=True) draws indices in chunks of this many, like PyTorch


class Sampler:
    """Iterates over dataset indices: subclasses define `__iter__` (and `__len__` when it is known)."""


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """A random permutation of the indices, or `num_samples` draws with replacement.

    Without replacement and with num_samples > len(data_source), whole permutations
    follow each other, the last one cut short (PyTorch's rule).
    """

    def __init__(self, data_source: Sized, replacement: bool = False, num_samples: int | None = None,
                 generator: Generator | None = None) -> None:
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement should be a boolean value, but got replacement={replacement}")
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = generator
        if not isinstance(self.num_samples, int) or self.num_samples <= 0:
            raise ValueError(f"num_samples should be a positive integer value, but got num_samples={self.num_samples}")

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self) -> Iterator[int]:
        n = len(self.data_source)
        gen = self.generator
        if gen is None:  # a private stream per pass, seeded from the default one
            gen = Generator().manual_seed(int(resolve(None).integers(0, 2**63)))
        rng = gen.numpy
        total = self.num_samples
        if self.replacement:
            for _ in range(total // _CHUNK):
                yield from rng.integers(0, n, size=_CHUNK).tolist()
            if total % _CHUNK:
                yield from rng.integers(0, n, size=total % _CHUNK).tolist()
        else:
            for _ in range(total // n):
                yield from rng.permutation(n).tolist()
            if total % n:
                yield from rng.permutation(n)[:total % n].tolist()

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given indices in a random order, drawn from `generator` (the default one if None)."""

    def __init__(self, indices: Sequence[int], generator: Generator | None = None) -> None:
        self.indices = indices
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        for i in resolve(self.generator).permutation(len(self.indices)).tolist():
            yield self.indices[i]

    def __len__(self) -> int:
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """`num_samples` indices in 0..len(weights)-1, index i with probability weights[i] / sum(weights)."""

    def __init__(self, weights: Sequence[float], num_samples: int, replacement: bool = True,
                 generator: Generator | None = None) -> None:
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
            raise ValueError(f"num_samples should be a positive integer value, but got num_samples={num_samples}")
        if not isinstance(replacement, bool):
            raise ValueError(f"replacement should be a boolean value, but got replacement={replacement}")
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1:
            raise ValueError(f"weights should be a 1d sequence but given weights have shape {tuple(w.shape)}")
        # checked here, as torch.multinomial does, rather than as numpy's "probabilities contain NaN"
        if not np.isfinite(w).all():
            raise ValueError(f"weights must be finite, got {w[~np.isfinite(w)][0]} at index "
                             f"{int(np.flatnonzero(~np.isfinite(w))[0])}")
        if (w < 0).any():
            raise ValueError(f"weights must be >= 0, got {w[w < 0][0]} at index {int(np.flatnonzero(w < 0)[0])}")
        if w.size and not w.sum() > 0:
            raise ValueError("the weights sum to 0: no sample could be drawn")
        self.weights = w
        self.num_samples = num_samples
        self.replacement = replacement
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        p = self.weights / self.weights.sum()
        draws = resolve(self.generator).choice(len(p), size=self.num_samples, replace=self.replacement, p=p)
        return iter(draws.tolist())

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler):
    """Groups another sampler's indices into lists of `batch_size` (the last shorter unless drop_last)."""

    def __init__(self, sampler: Iterable[Any], batch_size: int, drop_last: bool) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list]:
        it = iter(self.sampler)
        if self.drop_last:
            # zip over one iterator repeated batch_size times stops at the first short batch
            for batch in zip(*[it] * self.batch_size):
                yield list(batch)
            return
        batch = []
        for idx in it:
            batch.append(idx)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
