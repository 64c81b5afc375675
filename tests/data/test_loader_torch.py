"""tensora.data against torch.utils.data on the same datasets: batches, collation, lengths, splits,
argument checks and the interleaving of iterable datasets over workers.

Random orders are not compared (the two libraries draw from different generators);
everything deterministic is.
"""

import collections

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.utils.data as tud  # noqa: E402

import tensora  # noqa: E402
import tensora.data as td  # noqa: E402

pytestmark = pytest.mark.torch

Pair = collections.namedtuple("Pair", ["a", "b"])


def as_plain(obj):
    """A batch from either library as nested Python data, NumPy leaves tagged with their dtype."""
    if isinstance(obj, (tensora.Tensor, torch.Tensor)):
        a = obj.numpy()
        return ("tensor", a.dtype.name, a.tolist())
    if isinstance(obj, dict):
        return (type(obj).__name__, {k: as_plain(v) for k, v in obj.items()})
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, [as_plain(v) for v in obj])
    return obj


class Samples:
    """A plain map-style dataset (no base class), NumPy and Python leaves, usable by both loaders."""

    def __init__(self, n=11):
        self.x = np.random.default_rng(0).standard_normal((n, 2, 3)).astype(np.float32)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "i": i, "f": float(i) / 2, "b": i % 2 == 0, "s": f"n{i}",
                "np": np.int32(i), "pair": Pair(self.x[i, 0], (i, [1.5])),
                "od": collections.OrderedDict(z=i, a=self.x[i, 1, :2])}


@pytest.mark.parametrize("kwargs", [dict(batch_size=4), dict(batch_size=4, drop_last=True), dict(batch_size=None),
                                    dict(batch_size=11), dict(batch_sampler=[[3, 1], [0], [10, 10, 2]]),
                                    dict(batch_size=3, sampler=[5, 4, 3, 2, 1, 0])])
def test_same_batches_as_torch(kwargs):
    ds = Samples()
    ours = tensora.data.DataLoader(ds, **kwargs)
    ref = tud.DataLoader(ds, **kwargs)
    assert len(ours) == len(ref)
    assert [as_plain(b) for b in ours] == [as_plain(b) for b in ref]


def test_default_collate_and_convert_match_torch():
    ds = Samples(5)
    batch = [ds[i] for i in range(5)]
    assert as_plain(td.default_collate(batch)) == as_plain(tud.default_collate(batch))
    assert as_plain(td.default_convert(batch[2])) == as_plain(tud.default_convert(batch[2]))
    t_batch = [(tensora.from_numpy(ds.x[i]), i) for i in range(3)]
    r_batch = [(torch.from_numpy(ds.x[i]), i) for i in range(3)]
    assert as_plain(td.default_collate(t_batch)) == as_plain(tud.default_collate(r_batch))


class Count(td.IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self):
        return self.n


class TorchCount(tud.IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self):
        return self.n


@pytest.mark.filterwarnings("ignore:Length of IterableDataset")  # torch's note on unsplit worker copies
@pytest.mark.parametrize("kwargs", [dict(batch_size=3), dict(batch_size=3, drop_last=True),
                                    dict(batch_size=2, num_workers=2), dict(batch_size=None, num_workers=2)])
def test_iterable_datasets_match_torch(kwargs):
    ours = td.DataLoader(Count(7), **kwargs)
    ref = tud.DataLoader(TorchCount(7), **kwargs)
    if kwargs["batch_size"] is not None:
        assert len(ours) == len(ref)
    assert [as_plain(b) for b in ours] == [as_plain(b) for b in ref]


@pytest.mark.parametrize("n, lengths", [(10, [0.5, 0.25, 0.25]), (11, [0.3, 0.3, 0.4]), (7, [1 / 3] * 3),
                                        (3, [0.5, 0.5]), (20, [15, 5])])
def test_random_split_sizes_match_torch(n, lengths):
    ours = td.random_split(range(n), lengths, generator=tensora.Generator().manual_seed(0))
    ref = tud.random_split(range(n), lengths, generator=torch.Generator().manual_seed(0))
    assert [len(p) for p in ours] == [len(p) for p in ref]


@pytest.mark.parametrize("n, bs, drop_last", [(10, 3, False), (10, 3, True), (4, 8, False), (4, 8, True)])
def test_batch_sampler_matches_torch(n, bs, drop_last):
    assert list(td.BatchSampler(range(n), bs, drop_last)) == list(tud.BatchSampler(range(n), bs, drop_last))
    assert len(td.BatchSampler(range(n), bs, drop_last)) == len(tud.BatchSampler(range(n), bs, drop_last))


@pytest.mark.parametrize("kwargs", [dict(num_workers=-1), dict(timeout=-1), dict(prefetch_factor=2),
                                    dict(persistent_workers=True), dict(sampler=[0], shuffle=True),
                                    dict(batch_sampler=[[0]], batch_size=2), dict(batch_size=None, drop_last=True)])
def test_rejects_what_torch_rejects(kwargs):
    ds = Samples()
    with pytest.raises(ValueError):
        tud.DataLoader(ds, **kwargs)
    with pytest.raises(ValueError):
        td.DataLoader(ds, **kwargs)


def test_random_sampler_structure_matches_torch():
    """num_samples > len: whole permutations first, then a cut one, in both libraries."""
    for sampler in (td.RandomSampler(range(5), num_samples=12, generator=tensora.Generator().manual_seed(0)),
                    tud.RandomSampler(range(5), num_samples=12, generator=torch.Generator().manual_seed(0))):
        got = list(sampler)
        assert len(sampler) == len(got) == 12
        assert sorted(got[:5]) == sorted(got[5:10]) == list(range(5))
        assert len(set(got[10:])) == 2
