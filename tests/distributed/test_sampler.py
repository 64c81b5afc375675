"""DistributedSampler against torch.utils.data.DistributedSampler (index layout) and as a partition."""

import pytest

import tensora
from tensora.data import DataLoader, TensorDataset
from tensora.distributed import DistributedSampler


def _shards(n, world, **kw):
    return [list(DistributedSampler(range(n), num_replicas=world, rank=r, **kw)) for r in range(world)]


@pytest.mark.parametrize("n, world", [(10, 2), (10, 3), (7, 4), (2, 5), (12, 4)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_unshuffled_layout_equals_torch(n, world, drop_last):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DistributedSampler as TorchSampler
    for r in range(world):
        ours = list(DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=False, drop_last=drop_last))
        theirs = list(TorchSampler(range(n), num_replicas=world, rank=r, shuffle=False, drop_last=drop_last))
        assert ours == theirs, (r, ours, theirs)
    del torch


@pytest.mark.parametrize("n, world", [(10, 2), (11, 3), (3, 4)])
def test_shuffled_shards_cover_the_dataset_with_equal_lengths(n, world):
    shards = _shards(n, world, seed=5)
    assert len({len(s) for s in shards}) == 1                 # every rank runs the same number of steps
    flat = [i for s in shards for i in s]
    assert set(flat) == set(range(n))                          # nothing missed
    assert len(flat) - len(set(flat)) == (-n) % world          # only the padding repeats
    dropped = _shards(n, world, seed=5, drop_last=True)
    flat = [i for s in dropped for i in s]
    assert len(flat) == len(set(flat)) == n - n % world        # drop_last: disjoint, tail cut


def test_set_epoch_reshuffles_identically_on_every_rank():
    a, b = (DistributedSampler(range(20), num_replicas=2, rank=r, seed=3) for r in range(2))
    first = (list(a), list(b))
    a.set_epoch(1)
    b.set_epoch(1)
    second = (list(a), list(b))
    assert first != second
    for shards in (first, second):
        assert sorted(shards[0] + shards[1]) == list(range(20))  # same permutation on both ranks: a partition
    a.set_epoch(0)
    assert list(a) == first[0]


def test_drives_a_dataloader():
    ds = TensorDataset(tensora.arange(10))
    sampler = DistributedSampler(ds, num_replicas=2, rank=1, shuffle=False)
    batches = [b[0].tolist() for b in DataLoader(ds, batch_size=2, sampler=sampler)]
    assert batches == [[1, 3], [5, 7], [9]]


def test_rank_out_of_range_is_refused():
    with pytest.raises(ValueError, match="rank"):
        DistributedSampler(range(4), num_replicas=2, rank=2)
