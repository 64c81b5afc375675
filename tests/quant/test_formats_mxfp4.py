"""MXFP4 against gguf-py's ``MXFP4`` block type and the OCP Microscaling spec (v1.0).

Bytes equal gguf-py's (and so llama.cpp's ``block_mxfp4``); values follow the spec: a
shared E8M0 exponent ``floor(log2(amax)) - 2`` and E2M1 elements (fp4_e2m1 / ml_dtypes).
"""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize as gguf_dequantize  # noqa: E402
from gguf.quants import quantize as gguf_quantize  # noqa: E402

from tensora.quant.formats import get_format  # noqa: E402
from tensora.quant.formats.fp4_e2m1 import E2M1_VALUES, e2m1_decode  # noqa: E402

MXFP4 = gguf.GGMLQuantizationType.MXFP4


def decode(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(exponent byte per block, E2M1 code per value in element order) of (n, 17) blocks."""
    codes = np.concatenate([blocks[:, 1:] & 0x0F, blocks[:, 1:] >> 4], axis=1)
    return blocks[:, 0].astype(np.int64), codes


@pytest.mark.parametrize("log_scale", [-120, -60, -20, -3, 0, 1, 7, 30, 100, 110])
def test_bytes_equal_gguf_py_across_exponents(log_scale):
    rng = np.random.default_rng(log_scale + 200)
    x = (rng.standard_normal((64, 256)) * np.float32(2.0) ** log_scale).astype(np.float32)
    x[0] = 0
    x[1, 3] *= 100  # one outlier block
    x[2] = np.nextafter(np.float32(2.0) ** (log_scale + rng.integers(-3, 4, 256)), np.float32(0))
    x[3] = rng.standard_t(2, 256).astype(np.float32) * np.float32(2.0) ** log_scale
    fmt = get_format("mxfp4")
    ours = fmt.quantize(x)["blocks"]
    np.testing.assert_array_equal(ours, gguf_quantize(x, MXFP4))
    np.testing.assert_array_equal(fmt.dequantize({"blocks": ours}, x.shape).view(np.uint32),
                                  gguf_dequantize(ours, MXFP4).view(np.uint32))


def test_shared_exponent_is_the_spec_floor_rule():
    """e - 127 = floor(log2(amax)) - emax(E2M1) with emax = 2, from the exact exponent of amax."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((500, 32)) * np.exp(rng.uniform(-40, 40, (500, 1)))).astype(np.float32)
    e, _ = decode(get_format("mxfp4").quantize(x)["blocks"])
    mantissa, exponent = np.frexp(np.abs(x).max(axis=1))  # amax = mantissa * 2**exponent, mantissa in [0.5, 1)
    away_from_power_of_two = mantissa < 1 - 1e-6  # where float32 log2 can round up to the next integer
    assert away_from_power_of_two.mean() > 0.99
    np.testing.assert_array_equal((e - 127)[away_from_power_of_two], (exponent - 1 - 2)[away_from_power_of_two])


def test_values_are_e2m1_times_power_of_two_and_nearest():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((300, 32)) * 3).astype(np.float32)
    fmt = get_format("mxfp4")
    blocks = fmt.quantize(x)["blocks"]
    e, codes = decode(blocks)
    scale = np.float32(2.0) ** (e - 127).astype(np.float32)
    y = fmt.dequantize({"blocks": blocks}, x.shape)
    np.testing.assert_array_equal(y, e2m1_decode(codes) * scale[:, None])
    # Each value is the nearest representable one (all 16 E2M1 values times the block scale).
    grid = E2M1_VALUES[None, None, :] * scale[:, None, None]
    best = np.abs(grid - x[..., None]).min(axis=-1)
    np.testing.assert_array_equal(np.abs(y - x), best)
    assert np.abs(y).max() <= 6 * scale.max()


def test_midpoints_round_to_the_smaller_magnitude():
    """gguf-py's first-minimum search sends ties down - unlike round-half-even at 0.75, 1.75, 3.5."""
    midpoints = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], np.float32)
    x = np.zeros((2, 32), np.float32)
    x[:, 0] = 6.0  # amax 6 -> shared exponent floor(log2 6) - 2 = 0: scale 1
    x[0, 1:8] = midpoints
    x[1, 1:8] = -midpoints
    fmt = get_format("mxfp4")
    blocks = fmt.quantize(x)["blocks"]
    np.testing.assert_array_equal(blocks, gguf_quantize(x, MXFP4))
    y = fmt.dequantize({"blocks": blocks}, x.shape)
    below = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0], np.float32)
    np.testing.assert_array_equal(y[0, 1:8], below)
    np.testing.assert_array_equal(y[1, 1:8], -below)
    _, codes = decode(blocks)
    assert codes[1, 1] == 0  # -0.25 -> +0 (code 0), never the -0 code 8
    assert (codes[:, 8:] == 0).all()


def test_zero_block_and_tiny_block():
    """amax = 0 gives e = 0 (as gguf-py). amax < 2**-125 needs e < 0: we clamp to e = 0
    (scale 2**-127) and keep what it can represent; gguf-py wraps e into 248..255 instead."""
    x = np.zeros((2, 32), np.float32)
    x[1, :3] = np.float32(2.0) ** -127 * np.array([1.0, 0.5, -1.5], np.float32)
    fmt = get_format("mxfp4")
    blocks = fmt.quantize(x)["blocks"]
    e, codes = decode(blocks)
    assert e.tolist() == [0, 0]
    assert (codes[0] == 0).all()
    np.testing.assert_array_equal(fmt.dequantize({"blocks": blocks}, x.shape), x)
