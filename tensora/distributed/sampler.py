"""DistributedSampler: each rank reads its own 1/N of the dataset (torch.utils.data.DistributedSampler).

Every rank draws the same permutation (seeded with seed + epoch, so call
`set_epoch(e)` before each epoch to reshuffle) and takes every N-th index from
its rank on. Without drop_last the permutation is padded with its own first
indices up to a multiple of N, so all ranks run the same number of steps (a rank
with fewer batches would leave the others waiting in a collective); with
drop_last the tail is cut instead. The permutation comes from tensora's
Generator, not torch's, so the order differs from torch's for the same seed.

    >>> s = DistributedSampler(range(5), num_replicas=2, rank=1, shuffle=False)
    >>> list(s)        # indices 0..4 padded with index 0, rank 1 takes the odd positions
    [1, 3, 0]
"""

from __future__ import annotations

import math
from typing import Iterator, Sized

from ..data.sampler import Sampler
from ..random import Generator


class DistributedSampler(Sampler):
    """Indices of rank `rank`'s share of `dataset`; num_replicas and rank default to the process group's."""

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if num_replicas is None or rank is None:
            from .group import default_group
            group = default_group()
            num_replicas = group.size if num_replicas is None else num_replicas
            rank = group.rank if rank is None else rank
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        n = len(dataset)
        if drop_last and n % num_replicas:
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)  # torch's rule: drop the short tail
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            indices = Generator().manual_seed(self.seed + self.epoch).numpy.permutation(n).tolist()
        else:
            indices = list(range(n))
        if not self.drop_last:
            pad = self.total_size - n
            if pad:
                indices += (indices * math.ceil(pad / n))[:pad]
        else:
            indices = indices[:self.total_size]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass use a new shuffle (the same on every rank)."""
        self.epoch = epoch
