"""DataLoader in the main process: batches against NumPy slicing of the same data, orders against the
samplers' seeded draws, lengths and argument checks against PyTorch's rules."""

import numpy as np
import pytest

import tensora
from tensora.data import (BatchSampler, DataLoader, Dataset, IterableDataset, SequentialSampler,
                          TensorDataset)


class Rows(Dataset):
    """Map-style: sample i is (x[i], y[i]) as NumPy, the way a user dataset usually returns them."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


class Count(IterableDataset):
    def __init__(self, n, sized=True):
        self.n, self.sized = n, sized

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self):
        if not self.sized:
            raise TypeError("no length")
        return self.n


@pytest.fixture
def data(rng):
    return rng.standard_normal((23, 4)).astype(np.float32), rng.integers(0, 10, 23)


def batches_of(loader):
    return [(x.numpy().copy(), y.numpy().copy()) for x, y in loader]


def test_sequential_batches_are_slices(data):
    x, y = data
    got = batches_of(DataLoader(Rows(x, y), batch_size=5))
    assert len(got) == 5
    for k, (bx, by) in enumerate(got):
        np.testing.assert_array_equal(bx, x[5 * k:5 * k + 5])
        np.testing.assert_array_equal(by, y[5 * k:5 * k + 5])
    assert got[0][0].dtype == np.float32 and got[0][1].dtype == np.int64


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("bs", [1, 4, 5, 23, 30])
def test_len_and_drop_last(data, bs, drop_last):
    x, y = data
    loader = DataLoader(Rows(x, y), batch_size=bs, drop_last=drop_last)
    got = batches_of(loader)
    expected = 23 // bs if drop_last else -(-23 // bs)
    assert len(loader) == len(got) == expected
    if got:
        assert all(len(b[1]) == bs for b in got[:-1])
        assert len(got[-1][1]) == (bs if drop_last else 23 - bs * (expected - 1))


def test_shuffle_follows_the_generator(data):
    x, y = data
    ds = TensorDataset(tensora.from_numpy(x), tensora.from_numpy(y))
    g = tensora.Generator().manual_seed(42)
    loader = DataLoader(ds, batch_size=6, shuffle=True, generator=g)
    first = np.concatenate([b[1] for b in batches_of(loader)])
    second = np.concatenate([b[1] for b in batches_of(loader)])
    # Per pass: one 63-bit worker seed, then the permutation, both from the loader's generator.
    ref = np.random.Generator(np.random.PCG64(42))
    ref.integers(0, 2**63)
    perm1 = ref.permutation(23)
    ref.integers(0, 2**63)
    perm2 = ref.permutation(23)
    np.testing.assert_array_equal(first, y[perm1])
    np.testing.assert_array_equal(second, y[perm2])
    again = DataLoader(ds, batch_size=6, shuffle=True, generator=tensora.Generator().manual_seed(42))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches_of(again)]), first)


def test_shuffle_without_generator_follows_manual_seed(data):
    x, y = data
    loader = DataLoader(Rows(x, y), batch_size=4, shuffle=True)
    tensora.manual_seed(9)
    a = [b[1].tolist() for b in batches_of(loader)]
    tensora.manual_seed(9)
    b = [b[1].tolist() for b in batches_of(loader)]
    assert a == b
    assert sorted(sum(a, [])) == sorted(y.tolist())


def test_no_batching_converts_samples(data):
    x, y = data
    got = list(DataLoader(Rows(x, y), batch_size=None))
    assert len(got) == 23
    sx, sy = got[3]
    assert isinstance(sx, tensora.Tensor) and sx.shape == (4,)
    np.testing.assert_array_equal(sx.numpy(), x[3])
    assert sy == y[3]


def test_custom_sampler_batch_sampler_and_collate(data):
    x, y = data
    ds = Rows(x, y)
    rev = list(range(22, -1, -1))
    by_sampler = batches_of(DataLoader(ds, batch_size=10, sampler=rev))
    np.testing.assert_array_equal(by_sampler[0][1], y[rev[:10]])
    groups = [[0, 5], [22], [3, 3, 3]]
    by_batches = batches_of(DataLoader(ds, batch_sampler=groups))
    assert [b[1].tolist() for b in by_batches] == [y[g].tolist() for g in groups]
    sums = list(DataLoader(ds, batch_size=8, collate_fn=lambda batch: sum(s[1] for s in batch)))
    assert sums == [int(y[i:i + 8].sum()) for i in range(0, 23, 8)]
    loader = DataLoader(ds, batch_sampler=BatchSampler(SequentialSampler(ds), 7, drop_last=True))
    assert len(loader) == 3


def test_iterable_dataset_batches():
    assert [b.tolist() for b in DataLoader(Count(7), batch_size=3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [b.tolist() for b in DataLoader(Count(7), batch_size=3, drop_last=True)] == [[0, 1, 2], [3, 4, 5]]
    assert list(DataLoader(Count(3), batch_size=None)) == [0, 1, 2]  # ints stay ints unbatched
    assert len(DataLoader(Count(7), batch_size=3)) == 3
    assert len(DataLoader(Count(7), batch_size=3, drop_last=True)) == 2
    with pytest.raises(TypeError):
        len(DataLoader(Count(7, sized=False)))


def test_iterator_len_and_pin_memory_noop(data):
    x, y = data
    loader = DataLoader(Rows(x, y), batch_size=5, pin_memory=True)
    it = iter(loader)
    assert len(it) == 5
    np.testing.assert_array_equal(next(it)[0].numpy(), x[:5])


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_workers=-1), "non-negative"),
    (dict(timeout=-1), "non-negative"),
    (dict(prefetch_factor=2), "prefetch_factor"),
    (dict(num_workers=1, prefetch_factor=0), "prefetch_factor"),
    (dict(persistent_workers=True), "persistent_workers"),
    (dict(multiprocessing_context="spawn"), "multiprocessing_context"),
    (dict(sampler=[0, 1], shuffle=True), "mutually exclusive with shuffle"),
    (dict(batch_sampler=[[0]], batch_size=2), "batch_sampler option is mutually exclusive"),
    (dict(batch_sampler=[[0]], drop_last=True), "batch_sampler option is mutually exclusive"),
    (dict(batch_size=None, drop_last=True), "batch_size=None"),
])
def test_argument_checks(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataLoader(Rows(*data), **kwargs)


@pytest.mark.parametrize("name", ["shuffle", "sampler", "batch_sampler"])
def test_iterable_dataset_rejects_orders(name):
    value = {"shuffle": True, "sampler": [0], "batch_sampler": [[0]]}[name]
    with pytest.raises(ValueError, match=f"expected unspecified {name}"):
        DataLoader(Count(3), **{name: value})


def test_exception_in_dataset_propagates_and_iteration_goes_on(data):
    class Flaky(Rows):
        def __getitem__(self, i):
            if i == 7:
                raise KeyError("seven")
            return super().__getitem__(i)

    it = iter(DataLoader(Flaky(*data), batch_size=5))
    next(it)
    with pytest.raises(KeyError, match="seven"):
        next(it)
    assert next(it)[1].tolist() == data[1][10:15].tolist()
