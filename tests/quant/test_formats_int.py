"""int8 (per-channel absmax, LLM.int8 outlier columns) and int4 (group-wise, symmetric or not).

References: hand-computed cases, the brute-force nearest code for the stored scale (NumPy
float64), and bitsandbytes' LLM.int8 quantizer (``int8_vectorwise_quant``) for the
outlier-column rule, where installed.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tensora.errors import ShapeError
from tensora.quant.formats import QuantFormatError, get_format
from tensora.quant.formats.int4 import pack_pairs, unpack_pairs


def gaussian(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def poisoned_like(parts, keep_rows, fill):
    """Copies of row-major parts where only rows ``keep_rows`` hold the real data."""
    out = {}
    for key, part in parts.items():
        if part.ndim and part.shape[0] > keep_rows.stop and key != "outlier_cols":
            bad = np.full_like(part, fill(part.dtype))
            bad[keep_rows] = part[keep_rows]
            out[key] = bad
        else:
            out[key] = part
    return out


def nan_or_max(dtype):
    return np.nan if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).max


# -- int8 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (2, 3, 64), (64, 300)])
def test_int8_round_trip_within_half_a_step(shape):
    x = gaussian(shape, seed=len(shape))
    fmt = get_format("int8")
    parts = fmt.quantize(x)
    fmt.check_parts(parts, shape)
    assert set(parts) == {"qweight", "scale"}
    rows = x.reshape(-1, shape[-1])
    np.testing.assert_array_equal(parts["scale"], np.abs(rows).max(axis=1) / np.float32(127))
    # every row's absmax lands on +-127, and each value within scale/2 of the input
    assert (np.abs(parts["qweight"].astype(int)).max(axis=1) == 127).all()
    y = fmt.dequantize(parts, shape)
    assert y.dtype == np.float32 and y.shape == shape
    err = np.abs(y.astype(np.float64) - x).reshape(rows.shape)
    assert (err <= parts["scale"][:, None].astype(np.float64) * (0.5 + 1e-6)).all()


def test_int8_hand_computed_with_ties_to_even():
    w = np.array([[254.0, -127.0, 10.0, 0.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    fmt = get_format("int8")
    parts = fmt.quantize(w)
    assert parts["scale"].tolist() == [2.0, 0.0]  # a zero row gets scale 0
    assert parts["qweight"].tolist() == [[127, -64, 5, 0], [0, 0, 0, 0]]  # -63.5 -> -64 (even)
    assert fmt.dequantize(parts, w.shape).tolist() == [[254.0, -128.0, 10.0, 0.0], [0.0] * 4]


def test_int8_outlier_columns_come_back_exactly():
    x = gaussian((40, 96), seed=1)
    x[5, 10], x[17, 50], x[30, 50], x[2, 95] = 9.5, -7.25, 6.0, -30.0  # 6.0: >= threshold counts
    fmt = get_format("int8", threshold=6.0)
    parts = fmt.quantize(x)
    fmt.check_parts(parts, x.shape)
    cols = [10, 50, 95]
    assert parts["outlier_cols"].tolist() == cols and parts["outlier_cols"].dtype == np.int64
    assert parts["outliers"].dtype == np.float16 and parts["outliers"].shape == (40, 3)
    assert not parts["qweight"][:, cols].any()
    y = fmt.dequantize(parts, x.shape)
    np.testing.assert_array_equal(y[:, cols], x[:, cols].astype(np.float16).astype(np.float32))
    # the scales ignore the outlier columns entirely
    rest = np.delete(x, cols, axis=1)
    np.testing.assert_array_equal(parts["scale"], np.abs(rest).max(axis=1) / np.float32(127))
    err = np.abs(np.delete(y, cols, axis=1).astype(np.float64) - rest)
    assert (err <= parts["scale"][:, None] * (0.5 + 1e-6)).all()
    # with a threshold but no outliers, and without a threshold, the parts are the plain two
    assert set(fmt.quantize(np.clip(x, -5, 5))) == {"qweight", "scale"}
    assert set(get_format("int8").quantize(x)) == {"qweight", "scale"}


def test_int8_outlier_columns_are_bitsandbytes_llm_int8_columns():
    torch = pytest.importorskip("torch")
    pytest.importorskip("bitsandbytes")
    x = gaussian((64, 256), seed=2, scale=2.0)
    x[3, 7] = 12.0
    ours = get_format("int8", threshold=6.0).quantize(x)
    _, _, cols = torch.ops.bitsandbytes.int8_vectorwise_quant.default(torch.from_numpy(x.copy()), 6.0)
    assert ours["outlier_cols"].tolist() == sorted(cols.tolist())


def test_int8_codes_agree_with_bitsandbytes_rowwise_quantizer():
    """LLM.int8's row-wise int8 codes (round(w * 127 / absmax)) equal ours, rint(w / (absmax / 127)),
    except where the two float32 roundings fall on opposite sides of a .5 (then by one)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("bitsandbytes")
    x = gaussian((128, 512), seed=3)
    q_bnb, row_stats, _ = torch.ops.bitsandbytes.int8_vectorwise_quant.default(torch.from_numpy(x.copy()), 0.0)
    parts = get_format("int8").quantize(x)
    np.testing.assert_array_equal(parts["scale"], row_stats.numpy() / np.float32(127))
    diff = np.abs(parts["qweight"].astype(int) - q_bnb.numpy().astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.9999


def test_int8_check_parts_rejects_bad_outliers():
    x = gaussian((4, 16), seed=4)
    x[1, 3] = 8.0
    fmt = get_format("int8", threshold=6.0)
    good = fmt.quantize(x)
    fmt.check_parts(good, x.shape)
    bad_cases = [
        {**good, "outlier_cols": np.array([16], np.int64)},  # out of the row
        {**good, "outlier_cols": np.array([-1], np.int64)},
        {**good, "outlier_cols": good["outlier_cols"].astype(np.int32)},
        {**good, "outliers": good["outliers"].astype(np.float32)},
        {**good, "outliers": good["outliers"][:3]},
        {k: v for k, v in good.items() if k != "outliers"},
        {**good, "scale": good["scale"].astype(np.float16)},
    ]
    for parts in bad_cases:
        with pytest.raises(QuantFormatError):
            fmt.check_parts(parts, x.shape)
    two = {**good, "outlier_cols": np.array([5, 3], np.int64), "outliers": np.zeros((4, 2), np.float16)}
    with pytest.raises(QuantFormatError):  # not increasing
        fmt.check_parts(two, x.shape)
    with pytest.raises(QuantFormatError):  # outlier parts need a threshold
        get_format("int8").check_parts(good, x.shape)


def test_int8_dequantize_rows_reads_only_its_rows():
    x = gaussian((9, 40), seed=5)
    x[:, 4] *= 10
    fmt = get_format("int8", threshold=6.0)
    parts = fmt.quantize(x)
    whole = fmt.dequantize(parts, x.shape)
    poisoned = poisoned_like(parts, slice(3, 6), nan_or_max)
    np.testing.assert_array_equal(fmt.dequantize_rows(poisoned, x.shape, 3, 6), whole[3:6])
    assert fmt.dequantize_rows(parts, x.shape, 4, 4).shape == (0, 40)


def test_int8_options():
    assert get_format("int8").options() == {"threshold": None}
    fmt = get_format("int8", threshold=6)
    assert fmt == get_format("int8", **fmt.options()) and fmt.options() == {"threshold": 6.0}
    for bad in (-1.0, 0, float("nan"), "6", True):
        with pytest.raises(QuantFormatError):
            get_format("int8", threshold=bad)
    with pytest.raises(QuantFormatError):
        get_format("int8").quantize(np.array([[1.0, np.inf]], np.float32))
    with pytest.raises(ShapeError):
        get_format("int8").quantize(np.float32(1.0))


# -- int4 ---------------------------------------------------------------------------------------


def nearest_error(x, scale, zero, group):
    """Smallest |(c - zero) * scale - x| over the 16 codes, per value (float64 brute force)."""
    rows, k = x.shape
    s = np.repeat(scale.astype(np.float64), group, axis=1)[..., None]
    z = np.repeat(zero.astype(np.float64), group, axis=1)[..., None]
    grid = (np.arange(16)[None, None, :] - z) * s
    return np.abs(grid - x[..., None].astype(np.float64)).min(axis=-1)


def test_int4_nibble_order_and_hand_computed_codes():
    codes = (np.arange(32, dtype=np.uint8) * 7) % 15 + 1  # 1..15 (symmetric codes never use 0)
    codes[0] = 15  # (15 - 8) * 0.25 = 1.75 is the absmax: scale 1.75 / 7 = 0.25, exact in fp16
    w = ((codes.astype(np.float32) - 8) * np.float32(0.25)).reshape(1, 32)
    parts = get_format("int4", group_size=32).quantize(w)
    assert parts["scale"].dtype == np.float16 and parts["scale"].tolist() == [[0.25]]
    assert parts["qweight"].shape == (1, 16)
    assert parts["qweight"][0, 0] == codes[0] | (codes[1] << 4)  # element 0 low, element 1 high
    np.testing.assert_array_equal(unpack_pairs(parts["qweight"])[0], codes)
    np.testing.assert_array_equal(pack_pairs(codes[None]), parts["qweight"])
    np.testing.assert_array_equal(get_format("int4", group_size=32).dequantize(parts, w.shape), w)


def test_int4_rounds_half_to_even_with_the_stored_scale():
    w = np.zeros((1, 32), np.float32)
    w[0, :4] = [3.5, 0.25, 0.75, -1.25]  # scale 0.5: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2
    y = get_format("int4", group_size=32).dequantize(get_format("int4", group_size=32).quantize(w), w.shape)
    assert y[0, :4].tolist() == [3.5, 0.0, 1.0, -1.0]


@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_codes_are_the_nearest_for_the_stored_scale(group_size, symmetric):
    x = gaussian((24, 512), seed=group_size, scale=0.05)
    x[0, :group_size] = 0  # a zero group
    x[1, :group_size] = np.abs(x[1, :group_size]) + 1  # a group that does not straddle 0
    fmt = get_format("int4", group_size=group_size, symmetric=symmetric)
    parts = fmt.quantize(x)
    fmt.check_parts(parts, x.shape)
    assert set(parts) == ({"qweight", "scale"} if symmetric else {"qweight", "scale", "zero"})
    scale = parts["scale"].astype(np.float32)
    zero = np.full(scale.shape, 8) if symmetric else parts["zero"]
    assert 0 <= zero.min() and zero.max() <= 15
    y = fmt.dequantize(parts, x.shape)
    err = np.abs(y.astype(np.float64) - x)
    best = nearest_error(x, scale, zero, group_size)
    np.testing.assert_allclose(err, best, rtol=0, atol=1e-6 * np.abs(x).max())
    step = np.repeat(scale, group_size, axis=1)
    assert (err <= step * 0.51 + 1e-12).all()
    assert scale[0, 0] == 0 and not y[0, :group_size].any()
    groups = x.reshape(24, -1, group_size)
    if symmetric:
        want = np.abs(groups).max(axis=2) / 7
    else:
        want = (np.maximum(groups.max(axis=2), 0) - np.minimum(groups.min(axis=2), 0)) / 15
    np.testing.assert_array_equal(parts["scale"], want.astype(np.float32).astype(np.float16))


def test_int4_zero_points_pay_off_on_skewed_groups():
    x = np.abs(gaussian((64, 256), seed=7)) + 0.5
    rmse = {}
    for symmetric in (True, False):
        fmt = get_format("int4", group_size=64, symmetric=symmetric)
        rmse[symmetric] = float(np.sqrt(np.mean((fmt.dequantize(fmt.quantize(x), x.shape) - x) ** 2)))
    assert rmse[False] < 0.6 * rmse[True]


def test_int4_dequantize_rows_reads_only_its_rows():
    x = gaussian((10, 256), seed=8)
    for symmetric in (True, False):
        fmt = get_format("int4", group_size=64, symmetric=symmetric)
        parts = fmt.quantize(x)
        whole = fmt.dequantize(parts, x.shape)
        poisoned = poisoned_like(parts, slice(2, 7), nan_or_max)
        np.testing.assert_array_equal(fmt.dequantize_rows(poisoned, x.shape, 2, 7), whole[2:7])


def test_int4_options_and_errors():
    assert get_format("int4").options() == {"group_size": 128, "symmetric": True}
    assert get_format("int4").block_size == 128 and get_format("int4", group_size=32).block_size == 32
    fmt = get_format("int4", group_size=64, symmetric=False)
    assert fmt == get_format("int4", **fmt.options())
    assert get_format("int4", group_size=64).bits_per_weight() == 4 + 16 / 64
    assert fmt.bits_per_weight() == 4 + 24 / 64
    for bad in ({"group_size": 48}, {"group_size": True}, {"symmetric": "yes"}, {"bits": 4}):
        with pytest.raises((QuantFormatError, TypeError)):
            get_format("int4", **bad)
    with pytest.raises(ShapeError):
        get_format("int4").quantize(np.zeros((2, 96), np.float32))
    with pytest.raises(QuantFormatError):  # absmax / 7 does not fit a float16 scale
        get_format("int4", group_size=32).quantize(np.full((1, 32), 1e6, np.float32))
    with pytest.raises(QuantFormatError):
        get_format("int4").quantize(np.full((1, 128), np.nan, np.float32))


@pytest.mark.parametrize("name,opts", [("int8", {"threshold": 6.0}), ("int4", {"symmetric": False})])
def test_quantize_is_vectorised(name, opts):
    """A 1024 x 4096 matrix (4M values) quantizes and dequantizes in well under a second (2 cores)."""
    x = gaussian((1024, 4096), seed=9)
    fmt = get_format(name, **opts)
    start = time.perf_counter()
    fmt.dequantize(fmt.quantize(x), x.shape)
    assert time.perf_counter() - start < 5
