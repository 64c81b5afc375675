"""Samplers against NumPy draws from an equally seeded stream and against PyTorch's documented rules."""

import numpy as np
import pytest

import tensora
from tensora.data import (BatchSampler, RandomSampler, SequentialSampler, SubsetRandomSampler,
                          WeightedRandomSampler)


def numpy_stream(seed):
    """The NumPy stream a tensora.Generator seeded with `seed` draws from."""
    return np.random.Generator(np.random.PCG64(seed))


def test_sequential_sampler():
    s = SequentialSampler(range(5))
    assert list(s) == [0, 1, 2, 3, 4]
    assert len(s) == 5


def test_random_sampler_is_the_generators_permutation():
    s = RandomSampler(range(10), generator=tensora.Generator().manual_seed(7))
    order = list(s)
    assert order == numpy_stream(7).permutation(10).tolist()
    assert sorted(order) == list(range(10))
    assert list(s) != order  # the generator moved on: a new epoch, a new order
    assert len(s) == 10


def test_random_sampler_num_samples_beyond_length_chains_permutations():
    s = RandomSampler(range(4), num_samples=10, generator=tensora.Generator().manual_seed(1))
    got = list(s)
    ref = numpy_stream(1)
    expected = ref.permutation(4).tolist() + ref.permutation(4).tolist() + ref.permutation(4)[:2].tolist()
    assert got == expected
    assert len(s) == 10


def test_random_sampler_with_replacement_draws_in_chunks_of_32():
    s = RandomSampler(range(5), replacement=True, num_samples=70, generator=tensora.Generator().manual_seed(2))
    got = list(s)
    ref = numpy_stream(2)
    expected = sum((ref.integers(0, 5, size=32).tolist() for _ in range(2)), []) + ref.integers(0, 5, 6).tolist()
    assert got == expected
    assert all(0 <= i < 5 for i in got)


def test_random_sampler_without_generator_follows_manual_seed():
    tensora.manual_seed(5)
    a = list(RandomSampler(range(20)))
    b = list(RandomSampler(range(20)))
    tensora.manual_seed(5)
    assert list(RandomSampler(range(20))) == a
    assert a != b  # each pass draws a fresh seed from the default generator


def test_random_sampler_validation():
    with pytest.raises(TypeError, match="replacement"):
        RandomSampler(range(3), replacement=1)
    with pytest.raises(ValueError, match="num_samples"):
        RandomSampler(range(3), num_samples=0)
    with pytest.raises(ValueError, match="num_samples"):
        RandomSampler([])


def test_subset_random_sampler():
    idx = [10, 20, 30, 40]
    s = SubsetRandomSampler(idx, generator=tensora.Generator().manual_seed(3))
    assert list(s) == [idx[i] for i in numpy_stream(3).permutation(4)]
    assert len(s) == 4


def test_weighted_random_sampler_frequencies():
    w = [0.0, 1.0, 3.0]
    s = WeightedRandomSampler(w, num_samples=20000, generator=tensora.Generator().manual_seed(0))
    counts = np.bincount(list(s), minlength=3) / 20000
    assert counts[0] == 0
    np.testing.assert_allclose(counts[1:], [0.25, 0.75], atol=0.015)
    no_rep = list(WeightedRandomSampler([1, 1, 1, 0], 3, replacement=False))
    assert sorted(no_rep) == [0, 1, 2]


@pytest.mark.parametrize("weights,message", [([1.0, -1.0], "must be >= 0, got -1.0 at index 1"),
                                             ([0.0, 0.0], "sum to 0"),
                                             ([1.0, float("inf")], "must be finite, got inf at index 1"),
                                             ([float("nan"), 1.0], "must be finite, got nan at index 0")])
def test_weighted_random_sampler_names_the_bad_weight(weights, message):
    with pytest.raises(ValueError, match=message):
        WeightedRandomSampler(weights, 2)


def test_weighted_random_sampler_validation():
    with pytest.raises(ValueError, match="num_samples"):
        WeightedRandomSampler([1.0], 0)
    with pytest.raises(ValueError, match="replacement"):
        WeightedRandomSampler([1.0], 1, replacement=0)
    with pytest.raises(ValueError, match="1d"):
        WeightedRandomSampler([[1.0]], 1)


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("n, bs", [(10, 3), (9, 3), (2, 5), (0, 2)])
def test_batch_sampler_against_slicing(n, bs, drop_last):
    s = BatchSampler(range(n), bs, drop_last)
    ref = [list(range(i, min(i + bs, n))) for i in range(0, n, bs)]
    if drop_last:
        ref = [b for b in ref if len(b) == bs]
    assert list(s) == ref
    assert len(s) == len(ref)


def test_batch_sampler_validation():
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(range(3), 0, False)
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(range(3), True, False)
    with pytest.raises(ValueError, match="drop_last"):
        BatchSampler(range(3), 2, 1)
