"""The attention-dropout factor kernel (tensora/kernels/attention.py, csrc/dropout.cpp).

The reference body is dropout_keep's counter-based hash times 1 / (1 - p); the native body
must give the same factors bit for bit (integer hash, the same float) in both instruction-set
variants, for whole arrays and for tiles, float32 and float64, every p including 0 and 1 and
seeds over 2^63. Bad arguments raise, never crash. Native tests skip when TENSORA_NO_NATIVE disables the
extension and fail when it is missing for another reason.
"""

from __future__ import annotations

import numpy as np
import pytest

from tensora.kernels.attention import attention_dropout_scale, dropout_keep, dropout_scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.999, 1.0])
@pytest.mark.parametrize("seed", [0, 12345, 2 ** 63 - 1, 2 ** 64 - 5])
def test_native_is_bit_identical_to_reference(simd, dtype, p, seed):
    want = attention_dropout_scale.reference(np.empty((2, 3, 40, 70), dtype), seed, p, 0, 0, 40, 70)
    got = attention_dropout_scale.run_native(np.full((2, 3, 40, 70), np.nan, dtype), seed, p, 0, 0, 40, 70)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize("tile", [(0, 0, 40, 70), (10, 33, 7, 20), (39, 69, 1, 1)])
def test_native_tile_is_the_part_of_the_whole(simd, tile):
    r0, c0, rows, cols = tile
    whole = attention_dropout_scale.run_native(np.empty((4, 40, 70), np.float32), 7, 0.3, 0, 0, 40, 70)
    part = attention_dropout_scale.run_native(np.empty((4, rows, cols), np.float32), 7, 0.3, r0, c0, 40, 70)
    np.testing.assert_array_equal(part, whole[:, r0:r0 + rows, c0:c0 + cols])


def test_dropout_scale_keeps_the_reference_statistics_and_unbatched_shape():
    """dropout_scale (which takes the kernel on NumPy arrays) against the bool mask it scales."""
    got = dropout_scale(99, 0.25, (), (0, 64), (0, 128), 64, 128, np.dtype(np.float32))
    keep = dropout_keep(99, 0.25, (), (0, 64), (0, 128), 64, 128)
    assert got.shape == keep.shape == (64, 128)
    np.testing.assert_array_equal(got, keep * np.float32(1 / 0.75))
    assert abs(keep.mean() - 0.75) < 0.01


def test_native_rejects_bad_arguments(lib):
    out = np.empty((2, 4, 5), np.float32)
    with pytest.raises(ValueError, match="outside"):
        lib.attention_dropout_scale(out, 1, 2 ** 63, 2.0, 1, 0, 4, 5)
    with pytest.raises(ValueError, match="outside"):
        lib.attention_dropout_scale(out, 1, 2 ** 63, 2.0, 0, 3, 4, 7)
    with pytest.raises(ValueError, match=r"\(\.\.\., rows, cols\)"):
        lib.attention_dropout_scale(np.empty(5, np.float32), 1, 2 ** 63, 2.0, 0, 0, 1, 5)
    with pytest.raises(TypeError):
        lib.attention_dropout_scale(np.empty((4, 5), np.int32), 1, 2 ** 63, 2.0, 0, 0, 4, 5)
    with pytest.raises(TypeError):
        lib.attention_dropout_scale(np.empty((0, 5), np.int32), 1, 2 ** 63, 2.0, 0, 0, 4, 5)
    with pytest.raises(ValueError, match="C-contiguous"):
        lib.attention_dropout_scale(np.empty((5, 4), np.float32).T, 1, 2 ** 63, 2.0, 0, 0, 4, 5)
    with pytest.raises(ValueError, match="threads"):
        lib.attention_dropout_scale(out, 1, 2 ** 63, 2.0, 0, 0, 4, 5, threads=-1)
