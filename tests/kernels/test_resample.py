"""Separable resampling (tensora/kernels/resample.py): the transposed table is the adjoint, against NumPy."""

import numpy as np

from tensora.kernels import resample as k


def test_resample_and_transposed_table_are_adjoint():
    rng = np.random.default_rng(3)
    index = rng.integers(0, 5, (7, 2))
    weight = rng.standard_normal((7, 2))
    weight[3, 1] = 0.0                                     # zero weights drop out of the transpose
    tindex, tweight = k.transpose_table(index, weight, 5)
    assert tindex.shape[0] == 5
    x = rng.standard_normal((2, 5, 3))
    g = rng.standard_normal((2, 7, 3))
    lhs = np.vdot(k.resample(np, x, 1, index, weight), g)
    rhs = np.vdot(x, k.resample(np, g, 1, tindex, tweight))
    assert np.isclose(lhs, rhs)
    dense = np.zeros((7, 5))
    np.add.at(dense, (np.repeat(np.arange(7), 2), index.ravel()), weight.ravel())
    np.testing.assert_allclose(k.resample(np, x, 1, index, weight), np.einsum("oi,bic->boc", dense, x))
