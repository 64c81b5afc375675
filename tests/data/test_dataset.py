"""Datasets and random_split against plain NumPy indexing and PyTorch's documented split rule."""

import math
import warnings

import numpy as np
import pytest

import tensora
from tensora.data import (ChainDataset, ConcatDataset, Dataset, IterableDataset, Subset, TensorDataset,
                          random_split)


class Squares(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i * i


class Stream(IterableDataset):
    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items)


# -- TensorDataset ---------------------------------------------------------------


def test_tensor_dataset_samples_are_rows(rng):
    x, y = rng.standard_normal((7, 3)), rng.integers(0, 5, 7)
    ds = TensorDataset(tensora.from_numpy(x), tensora.from_numpy(y))
    assert len(ds) == 7
    for i in range(7):
        xi, yi = ds[i]
        np.testing.assert_array_equal(xi.numpy(), x[i])
        assert yi.item() == y[i]


def test_tensor_dataset_batched_fetch_matches_per_sample(rng):
    x, y = rng.standard_normal((9, 2, 3)), rng.integers(0, 5, 9)
    ds = TensorDataset(tensora.from_numpy(x), tensora.from_numpy(y))
    idx = [4, 0, 8, 4, -1]
    fast = ds.__getitems__(idx)
    assert len(fast) == len(idx)
    for (fx, fy), i in zip(fast, idx):
        np.testing.assert_array_equal(fx.numpy(), x[i])
        assert fy.item() == y[i]


def test_tensor_dataset_size_mismatch():
    with pytest.raises(ValueError, match="Size mismatch"):
        TensorDataset(tensora.zeros(3, 2), tensora.zeros(4))
    with pytest.raises(ValueError, match="at least one"):
        TensorDataset()


# -- Subset / ConcatDataset / ChainDataset --------------------------------------


def test_subset_maps_indices():
    sub = Subset(Squares(10), [7, 2, 5])
    assert len(sub) == 3
    assert [sub[i] for i in range(3)] == [49, 4, 25]
    assert sub.__getitems__([2, 0]) == [25, 49]


def test_subset_forwards_batched_fetch_of_inner(rng):
    x = rng.standard_normal((6, 2))
    sub = Subset(TensorDataset(tensora.from_numpy(x)), [5, 1, 3])
    got = sub.__getitems__([0, 2])
    np.testing.assert_array_equal(np.stack([s[0].numpy() for s in got]), x[[5, 3]])
    (rows,) = sub[[2, 1]]  # a list index is forwarded whole, as torch's Subset does
    np.testing.assert_array_equal(rows.numpy(), x[[3, 1]])


def test_concat_dataset_against_list_concatenation():
    parts = [Squares(3), Squares(0), Squares(4)]
    ds = ConcatDataset(parts)
    ref = [0, 1, 4] + [0, 1, 4, 9]
    assert len(ds) == 7
    assert ds.cumulative_sizes == [3, 3, 7]
    assert [ds[i] for i in range(7)] == ref
    assert [ds[-i] for i in range(1, 8)] == ref[::-1]
    with pytest.raises(ValueError, match="exceed"):
        ds[-8]
    assert [(Squares(2) + Squares(2))[i] for i in range(4)] == [0, 1, 0, 1]


def test_concat_dataset_errors():
    with pytest.raises(ValueError, match="empty"):
        ConcatDataset([])
    with pytest.raises(TypeError, match="ChainDataset"):
        ConcatDataset([Stream([1])])


def test_chain_dataset():
    chained = Stream([1, 2]) + Stream([3])
    assert isinstance(chained, ChainDataset)
    assert list(chained) == [1, 2, 3]
    assert len(chained) == 3
    with pytest.raises(TypeError, match="IterableDataset"):
        list(ChainDataset([Squares(2)]))


# -- random_split ----------------------------------------------------------------


def torch_split_sizes(n, fractions):
    """PyTorch's rule, written out: floor each share, then hand the remainder out round-robin."""
    sizes = [math.floor(n * f) for f in fractions]
    for i in range(n - sum(sizes)):
        sizes[i % len(sizes)] += 1
    return sizes


@pytest.mark.parametrize("n, fractions", [(10, [0.5, 0.25, 0.25]), (11, [0.3, 0.3, 0.4]), (7, [1 / 3] * 3),
                                          (100, [0.8, 0.1, 0.1]), (5, [0.7, 0.3])])
def test_random_split_fraction_sizes(n, fractions):
    parts = random_split(range(n), fractions, generator=tensora.Generator().manual_seed(0))
    assert [len(p) for p in parts] == torch_split_sizes(n, fractions)


def test_random_split_is_a_seeded_permutation():
    n = 50
    parts = random_split(range(n), [20, 30], generator=tensora.Generator().manual_seed(3))
    flat = [p[i] for p in parts for i in range(len(p))]
    assert sorted(flat) == list(range(n))
    # the same permutation tensora.randperm draws from an equally seeded generator
    assert flat == tensora.randperm(n, generator=tensora.Generator().manual_seed(3)).tolist()
    again = random_split(range(n), [20, 30], generator=tensora.Generator().manual_seed(3))
    assert [list(p.indices) for p in again] == [list(p.indices) for p in parts]
    other = random_split(range(n), [20, 30], generator=tensora.Generator().manual_seed(4))
    assert [list(p.indices) for p in other] != [list(p.indices) for p in parts]


def test_random_split_default_generator_follows_manual_seed():
    tensora.manual_seed(11)
    a = [list(p.indices) for p in random_split(range(20), [0.5, 0.5])]
    tensora.manual_seed(11)
    b = [list(p.indices) for p in random_split(range(20), [0.5, 0.5])]
    assert a == b


def test_random_split_errors_and_warning():
    with pytest.raises(ValueError, match="does not equal"):
        random_split(range(10), [3, 3])
    with pytest.raises(ValueError, match="not between 0 and 1"):
        random_split(range(10), [1.5, -0.5])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parts = random_split(range(2), [0.9, 0.05, 0.05])
    assert [len(p) for p in parts] == torch_split_sizes(2, [0.9, 0.05, 0.05]) == [2, 0, 0]
    assert any("index 2 is 0" in str(w.message) for w in caught)
