"""multinomial (tensora/ops/sampling.py): shapes, streams, errors, and the distribution of the draws.

References: the exact probabilities of sequential draws with and without replacement, checked
with a chi-square statistic on seeded draws (fixed seeds: the statistic is the same every run, far
below the 0.1% critical value, so the test is not flaky); torch.multinomial for shapes, dtypes and
error messages.
"""

import numpy as np
import pytest

import tensora
from tensora import DTypeError, ShapeError

P = [0.1, 0.2, 0.3, 0.4, 0.0]
CHI2_999 = {3: 16.27, 4: 18.47, 11: 31.26}  # chi-square 0.1% critical values by degrees of freedom


def _chi2(counts, probs):
    counts, probs = np.asarray(counts, float), np.asarray(probs, float)
    keep = probs > 0
    assert counts[~keep].sum() == 0  # a zero-weight category is never drawn
    expected = counts.sum() * probs[keep] / probs[keep].sum()
    return float(((counts[keep] - expected) ** 2 / expected).sum())


def test_shapes_dtype_method_and_generator_streams():
    p1, p2 = tensora.tensor(P), tensora.tensor([P, P[::-1]])
    assert tensora.multinomial(p1, 3).shape == (3,) and tensora.multinomial(p1, 3).dtype is tensora.int64
    assert p2.multinomial(4, True).shape == (2, 4) and p2.multinomial(1).shape == (2, 1)
    a = tensora.multinomial(p2, 6, True, generator=tensora.Generator().manual_seed(7))
    b = p2.multinomial(6, replacement=True, generator=tensora.Generator().manual_seed(7))
    assert a.tolist() == b.tolist()  # the same stream gives the same draws
    tensora.manual_seed(3)
    c = tensora.multinomial(p2, 3)
    tensora.manual_seed(3)
    assert tensora.multinomial(p2, 3).tolist() == c.tolist()  # the default generator, reseeded
    half = tensora.tensor(P).to(tensora.bfloat16)
    assert set(tensora.multinomial(half, 4).tolist()) == {0, 1, 2, 3}


def test_without_replacement_draws_each_non_zero_category_at_most_once():
    weights = tensora.tensor([[0.0, 5.0, 1.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0, 0.0]])
    for seed in range(20):
        out = weights.multinomial(3, generator=tensora.Generator().manual_seed(seed)).numpy()
        assert sorted(out[0]) == [1, 2, 4]  # exactly the non-zero ones
        assert len(set(out[1])) == 3 and 4 not in out[1]
    full = tensora.multinomial(tensora.tensor([3.0, 1.0, 2.0]), 3)
    assert sorted(full.tolist()) == [0, 1, 2]


def test_with_replacement_follows_the_weights():
    g = tensora.Generator().manual_seed(0)
    draws = tensora.multinomial(tensora.tensor(P) * 7, 20000, replacement=True, generator=g).numpy()
    assert _chi2(np.bincount(draws, minlength=5), P) < CHI2_999[3]
    rows = tensora.multinomial(tensora.tensor([P, P[::-1]]), 10000, True, generator=g).numpy()
    assert _chi2(np.bincount(rows[0], minlength=5), P) < CHI2_999[3]
    assert _chi2(np.bincount(rows[1], minlength=5), P[::-1]) < CHI2_999[3]


def test_without_replacement_draws_are_sequential_draws():
    # Draw 1 ~ p; draw 2 given draw 1 = i ~ p with i removed: P(i, j) = p_i * p_j / (1 - p_i).
    p = np.array(P[:4])
    rows = 20000
    g = tensora.Generator().manual_seed(1)
    out = tensora.multinomial(tensora.tensor(np.tile(p, (rows, 1))), 2, generator=g).numpy()
    assert _chi2(np.bincount(out[:, 0], minlength=4), p) < CHI2_999[3]
    pairs = np.array([[p[i] * p[j] / (1 - p[i]) if i != j else 0.0 for j in range(4)] for i in range(4)])
    counts = np.zeros((4, 4))
    np.add.at(counts, (out[:, 0], out[:, 1]), 1)
    assert _chi2(counts.ravel(), pairs.ravel()) < CHI2_999[11]


@pytest.mark.parametrize("weights,n,replacement,error,match", [
    ([0.5, -0.1], 1, True, ValueError, "element < 0"),
    ([float("nan"), 1.0], 1, False, ValueError, "inf"),
    ([float("inf"), 1.0], 1, True, ValueError, "inf"),
    ([[1.0, 1.0], [0.0, 0.0]], 1, True, ValueError, r"sum of probabilities <= 0"),
    ([[1.0, 0.0, 0.0]], 2, False, ValueError, "not enough non-negative category"),
    ([1.0, 2.0], 3, False, ValueError, r"n_sample > prob_dist.size\(-1\)"),
    ([1.0, 2.0], 0, True, ValueError, "n_sample <= 0"),
    ([[[1.0]]], 1, True, ShapeError, "1 or 2 dim"),
])
def test_errors(weights, n, replacement, error, match):
    with pytest.raises(error, match=match):
        tensora.multinomial(tensora.tensor(weights), n, replacement)


def test_integer_weights_are_refused():
    with pytest.raises(DTypeError, match="floating-point"):
        tensora.multinomial(tensora.tensor([1, 2]), 1)
    assert tensora.multinomial(tensora.tensor([[1.0, 0.0, 0.0]]), 2, True).tolist() == [[0, 0]]


@pytest.mark.torch
def test_shapes_dtypes_and_messages_match_torch():
    torch = pytest.importorskip("torch")
    for weights, n, replacement in [(P, 3, False), ([P, P], 7, True), ([P], 1, False)]:
        ours = tensora.multinomial(tensora.tensor(weights), n, replacement)
        theirs = torch.multinomial(torch.tensor(weights), n, replacement)
        assert tuple(ours.shape) == tuple(theirs.shape) and str(theirs.dtype) == "torch.int64"
        assert ours.dtype is tensora.int64
    for weights, n, replacement in [([0.5, -0.1], 1, True), ([0.0, 0.0], 1, True), ([1.0, 2.0], 3, False),
                                    ([1.0, 2.0], 0, True)]:
        with pytest.raises(RuntimeError) as theirs:
            torch.multinomial(torch.tensor(weights), n, replacement)
        with pytest.raises(ValueError) as ours:
            tensora.multinomial(tensora.tensor(weights), n, replacement)
        assert str(ours.value) == str(theirs.value)
