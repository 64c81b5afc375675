"""bitsandbytes NF4 / FP4 (with and without double quantization).

Spec-level tests (always run): the NF4 codebook against normal quantiles (QLoRA's
construction, via statistics.NormalDist), FP4's bit layout, the signed dynamic map's
structure, nibble order, hand-computed blocks, the quality claims (NF4 vs int4, what double
quantization costs and saves). Reference tests (bitsandbytes 0.50 CPU backend and torch,
skipped when absent): bytes, absmax statistics and dequantized values bit for bit.
"""

from __future__ import annotations

import time
from statistics import NormalDist

import numpy as np
import pytest

from tensora.errors import ShapeError
from tensora.quant.formats import QuantFormatError, get_format
from tensora.quant.formats.bnb4 import (BLOCK_SIZES, DYNAMIC_MAP, FP4_CODE, NF4_CODE, quantize_dynamic,
                                        torch_mean)


def gaussian(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def rmse(fmt, x):
    return float(np.sqrt(np.mean((fmt.dequantize(fmt.quantize(x), x.shape).astype(np.float64) - x) ** 2)))


def nibbles(packed):
    """Codes in element order: element 2i is the HIGH nibble of byte i."""
    return np.stack([packed >> 4, packed & 0x0F], axis=-1).reshape(-1)


# -- codebooks ----------------------------------------------------------------------------------


def test_nf4_codebook_is_normal_quantiles():
    """QLoRA: 8 positive quantiles on linspace(0.9677083, 0.5, 9)[:-1], 7 negative on 8 points, 0, / max."""
    ppf = NormalDist().inv_cdf
    edges = np.linspace(np.float32(0.9677083), np.float32(0.5), 9, dtype=np.float32)
    positive = [ppf(float(p)) for p in edges[:-1]]
    negative = [-ppf(float(p)) for p in np.linspace(np.float32(0.9677083), np.float32(0.5), 8, dtype=np.float32)[:-1]]
    values = np.sort(positive + [0.0] + negative)
    np.testing.assert_allclose(NF4_CODE, values / values.max(), rtol=0, atol=3e-7)
    assert NF4_CODE.dtype == np.float32 and NF4_CODE[0] == -1 and NF4_CODE[7] == 0 and NF4_CODE[15] == 1
    assert (np.diff(NF4_CODE) > 0).all()


def test_fp4_codebook_bit_layout_and_difference_from_e2m1():
    """Code s eem: e = 00 subnormal (m * 0.0625), else 2**(4 - e) * (1 + m / 2); / 12."""
    want = []
    for code in range(16):
        sign, e, m = (-1) ** (code >> 3), (code >> 1) & 3, code & 1
        want.append(sign * (0.0625 * m if e == 0 else 2.0 ** (4 - e) * (1 + m / 2)) / 12)
    np.testing.assert_array_equal(FP4_CODE, np.array(want, np.float32))
    assert np.signbit(FP4_CODE[8]) == np.False_  # "-0" decodes to +0.0, as bitsandbytes' table has it
    # the same 8 magnitudes as OCP E2M1 (0, 0.5, 1, 1.5, 2, 3, 4, 6) / 6 but for the subnormal
    e2m1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], np.float32) / np.float32(6)
    ours = np.sort(np.abs(FP4_CODE[:8]))
    assert (ours != e2m1).tolist() == [False, True] + [False] * 6
    assert ours[1] == np.float32(0.0625) / np.float32(12) and e2m1[1] == np.float32(1 / 12)


def test_dynamic_map_structure():
    """Dettmers' signed dynamic tree map: 0, 1 and, per decade 1e-6..1, the 2**i midpoints of
    linspace(0.1, 1, 2**i + 1), both signs; values within float32 rounding of the exact construction."""
    assert DYNAMIC_MAP.shape == (256,) and DYNAMIC_MAP.dtype == np.float32
    assert (np.diff(DYNAMIC_MAP) > 0).all() and DYNAMIC_MAP[-1] == 1
    exact = [0.0, 1.0]
    for i in range(7):
        edges = np.linspace(0.1, 1.0, 2 ** i + 1)
        level = 10.0 ** (i - 6) * (edges[:-1] + edges[1:]) / 2
        exact += list(level) + list(-level)
    exact = np.sort(np.array(exact))
    np.testing.assert_allclose(DYNAMIC_MAP, exact, rtol=3e-7, atol=0)  # float32 steps, a few roundings


def test_quantize_dynamic_by_hand():
    """bitsandbytes' CPU quantizer looks codes up on a grid of 65536 points over [-1, 1]: the
    nearest map value to the grid point, not to the value, so 0 lands on grid point 32768
    (2/65535 - 1 + 1 = 1.5e-5) and is coded as the map's 2.1e-5 (nearer than 7.7e-6)."""
    x = np.zeros(512, np.float32)
    x[:5] = [2.0, -2.0, 1.0, 0.0, 4e-6]  # / absmax 2: 1, -1, 0.5, 0, 2e-6
    codes, absmax = quantize_dynamic(x)
    assert absmax.tolist() == [2.0, 0.0]
    assert codes[:5].tolist() == [255, 0, 219, 131, 131]
    assert DYNAMIC_MAP[0] == np.float32(-0.99296875)  # -1 goes to the map's most negative value
    np.testing.assert_allclose(DYNAMIC_MAP[[219, 131, 130]], [0.50078125, 2.125e-5, 7.75e-6], rtol=1e-6)
    assert not codes[256:].any()  # an all-zero block codes as 0


def test_torch_mean_is_a_close_float32_mean():
    rng = np.random.default_rng(0)
    for n in (1, 5, 8, 33, 1000, 70001):
        x = (rng.random(n) * 3).astype(np.float32)
        assert abs(float(torch_mean(x)) - x.astype(np.float64).mean()) <= 4e-7 * x.mean()


# -- layout by hand -----------------------------------------------------------------------------


def test_nf4_nibble_order_and_hand_computed_codes():
    x = np.zeros((1, 64), np.float32)
    x[0, :6] = [2.0, 0.0, -2.0, 1.0, 0.8814, -0.01]  # / absmax 2: 1, 0, -1, 0.5, 0.4407, -0.005
    parts = get_format("nf4").quantize(x)
    assert parts["absmax"].tolist() == [2.0]
    assert parts["qweight"][0] == 0xF7  # element 0 (1.0 -> code 15) in the HIGH nibble, element 1 low
    # 0.5 is nearer NF4's 0.4407 (code 12) than 0.5626; -0.005 is nearer 0 than -0.091
    assert nibbles(parts["qweight"])[:6].tolist() == [15, 7, 0, 12, 12, 7]
    y = get_format("nf4").dequantize(parts, x.shape)
    assert y[0, :4].tolist() == [2.0, 0.0, -2.0, float(NF4_CODE[12] * 2)]


def test_fp4_tiny_values_and_the_minus_zero_code():
    """Stable argsort puts code 0 before code 8 ("-0"): 0 and tiny negatives get 0, tiny positives 8."""
    x = np.zeros((1, 64), np.float32)
    x[0, :5] = [1.0, 1e-4, -1e-4, 0.004, -0.004]
    codes = nibbles(get_format("fp4").quantize(x)["qweight"])
    assert codes[:6].tolist() == [3, 8, 0, 1, 9, 0]


def test_midpoints_go_to_the_lower_code():
    fmt = get_format("nf4")
    mids = (NF4_CODE[:-1] + NF4_CODE[1:]) / np.float32(2)
    x = np.zeros((1, 64), np.float32)
    x[0, 0] = 1.0  # absmax 1: the ratios are the values themselves
    x[0, 1:16] = mids
    x[0, 16:31] = np.nextafter(mids, np.float32(2))
    codes = nibbles(fmt.quantize(x)["qweight"])
    assert codes[1:16].tolist() == list(range(15)) and codes[16:31].tolist() == list(range(1, 16))


def test_short_last_block_and_odd_count():
    x = gaussian((3, 7, 5), seed=1)  # 105 values: one full block of 64, a short one of 41
    fmt = get_format("nf4", block_size=64)
    parts = fmt.quantize(x)
    fmt.check_parts(parts, x.shape)
    flat = x.reshape(-1)
    np.testing.assert_array_equal(parts["absmax"], [np.abs(flat[:64]).max(), np.abs(flat[64:]).max()])
    assert parts["qweight"].shape == (53,) and parts["qweight"][-1] & 0x0F == 7  # padded with NF4's 0
    y = fmt.dequantize(parts, x.shape)
    assert y.shape == x.shape and np.abs(y - x).max() < 0.25 * np.abs(x).max()
    empty = get_format("nf4", double_quant=True).quantize(np.zeros((0, 4), np.float32))
    assert empty["qweight"].shape == (0,) and empty["absmax"].shape == (0,)


# -- quality --------------------------------------------------------------------------------------


def test_nf4_beats_int4_symmetric_on_gaussian_weights():
    x = gaussian((512, 1024), seed=2)
    nf4, int4 = rmse(get_format("nf4", block_size=64), x), rmse(get_format("int4", group_size=64), x)
    assert nf4 < 0.9 * int4  # ~0.092 vs ~0.108
    assert rmse(get_format("fp4", block_size=64), x) > nf4


@pytest.mark.parametrize("name", ["nf4", "fp4"])
def test_double_quant_costs_under_one_percent_and_saves_three_eighths_of_a_bit(name):
    x = gaussian((512, 1024), seed=3)
    plain, double = get_format(name), get_format(name, double_quant=True)
    assert rmse(double, x) < 1.01 * rmse(plain, x)
    saved = plain.bits_per_weight((4096, 4096)) - double.bits_per_weight((4096, 4096))
    assert abs(saved - (32 - 8 - 32 / 256) / 64) < 1e-3  # 0.373 bits per weight
    assert plain.bits_per_weight() == 4.5


# -- parts, rows, options -------------------------------------------------------------------------


@pytest.mark.parametrize("k", [128, 96, 50])  # a multiple of the block, not one, odd number of bytes
@pytest.mark.parametrize("double_quant", [False, True])
def test_dequantize_rows_reads_only_the_blocks_of_its_rows(k, double_quant):
    shape = (600, k)
    fmt = get_format("nf4", block_size=64, double_quant=double_quant)
    x = gaussian(shape, seed=k)
    parts = fmt.quantize(x)
    whole = fmt.dequantize(parts, shape)
    a, b = 301, 305
    first, last = a * k // 64, -(-b * k // 64)  # blocks the rows touch
    keep = {"qweight": slice(first * 32, min(last * 32, parts["qweight"].size)), "absmax": slice(first, last),
            "absmax_scale": slice(first // 256, -(-last // 256)), "absmax_offset": slice(0, 1)}
    poisoned = {}
    for key, part in parts.items():
        bad = np.full_like(part, np.nan if part.dtype == np.float32 else 0xFF)
        bad[keep[key]] = part[keep[key]]
        poisoned[key] = bad
    np.testing.assert_array_equal(fmt.dequantize_rows(poisoned, shape, a, b), whole[a:b])
    assert fmt.dequantize_rows(parts, shape, 7, 7).shape == (0, k)


def test_parts_options_and_errors():
    shape = (10, 100)
    for double_quant, names in ((False, {"qweight", "absmax"}),
                                (True, {"qweight", "absmax", "absmax_scale", "absmax_offset"})):
        fmt = get_format("fp4", block_size=32, double_quant=double_quant)
        parts = fmt.quantize(gaussian(shape))
        assert set(parts) == names
        fmt.check_parts(parts, shape)
        assert fmt == get_format("fp4", **fmt.options())
    with pytest.raises(QuantFormatError):  # float32 absmax where double quant stores bytes
        get_format("nf4", double_quant=True).check_parts(get_format("nf4").quantize(gaussian(shape)), shape)
    with pytest.raises(QuantFormatError):
        get_format("nf4").check_parts(get_format("nf4").quantize(gaussian(shape)), (10, 101))
    assert get_format("nf4").options() == {"block_size": 64, "double_quant": False}
    for bad in ({"block_size": 48}, {"block_size": 8192}, {"double_quant": 1}):
        with pytest.raises(QuantFormatError):
            get_format("nf4", **bad)
    with pytest.raises(QuantFormatError):
        get_format("nf4").quantize(np.array([np.nan, 1], np.float32))
    with pytest.raises(ShapeError):
        get_format("nf4").quantize(np.float32(1))


@pytest.mark.parametrize("name", ["nf4", "fp4"])
def test_quantize_is_vectorised(name):
    """A 1024 x 4096 matrix (4M values) takes well under a second (2 cores)."""
    x = gaussian((1024, 4096), seed=4)
    fmt = get_format(name, double_quant=True)
    start = time.perf_counter()
    fmt.dequantize(fmt.quantize(x), x.shape)
    assert time.perf_counter() - start < 5


# -- bitsandbytes itself ----------------------------------------------------------------------------


@pytest.fixture
def bnb():
    torch = pytest.importorskip("torch")
    functional = pytest.importorskip("bitsandbytes.functional")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torch's mean sums in per-thread pieces past 32768 values
    yield torch, functional
    torch.set_num_threads(threads)


def bnb_quantize(bnb, x, name, block_size, double_quant):
    torch, F = bnb
    # Quantize the flat array: the bytes are the same (bitsandbytes blocks the flat
    # data), but bitsandbytes 0.50's CPU dequantize_4bit returns wrong values for a
    # 2-D state whose rows are shorter than a block (e.g. (24, 256) at block 512).
    packed, state = F.quantize_4bit(torch.from_numpy(x.reshape(-1)), blocksize=block_size,
                                    quant_type=name, compress_statistics=double_quant)
    values = F.dequantize_4bit(packed, state).numpy().reshape(x.shape)
    return packed.numpy().reshape(-1), state, values


def test_codebooks_equal_bitsandbytes(bnb):
    _, F = bnb
    for ours, theirs in ((NF4_CODE, F.get_4bit_type("nf4", device="cpu")),
                         (FP4_CODE, F.get_4bit_type("fp4", device="cpu")),
                         (DYNAMIC_MAP, F.create_dynamic_map(signed=True))):
        np.testing.assert_array_equal(ours.view(np.uint32), theirs.numpy().view(np.uint32))


@pytest.mark.parametrize("name", ["nf4", "fp4"])
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("shape,scale", [((24, 256), 1.0), ((7, 3, 100), 1e-3), ((33, 65), 40.0)])
def test_equals_bitsandbytes(bnb, name, block_size, double_quant, shape, scale):
    x = gaussian(shape, seed=block_size + len(shape), scale=scale)
    x.reshape(-1)[:block_size] = 0  # an all-zero block
    x.reshape(-1)[-3:] = [1e-30, -1e-30, 0]
    packed, state, values = bnb_quantize(bnb, x, name, block_size, double_quant)
    fmt = get_format(name, block_size=block_size, double_quant=double_quant)
    parts = fmt.quantize(x)
    np.testing.assert_array_equal(parts["qweight"], packed)
    np.testing.assert_array_equal(parts["absmax"], state.absmax.numpy())
    if double_quant:
        np.testing.assert_array_equal(parts["absmax_scale"], state.state2.absmax.numpy())
        assert parts["absmax_offset"].tolist() == [state.offset.item()]
    ours = fmt.dequantize(parts, shape)
    np.testing.assert_array_equal(ours, values)  # == : FP4's code 8 is -0.0 in bitsandbytes' C kernel
    if name == "nf4":
        np.testing.assert_array_equal(ours.view(np.uint32), values.view(np.uint32))


def test_equals_bitsandbytes_on_exact_midpoints(bnb):
    for name in ("nf4", "fp4"):
        codebook = np.sort(get_format(name).code)
        mids = (codebook[:-1] + codebook[1:]) / np.float32(2)
        x = np.zeros((4, 64), np.float32)
        x[:, 0] = 1.0
        x[0, 1:16], x[1, 1:16] = mids, np.nextafter(mids, np.float32(2))
        x[2, 1:16], x[3, 1:16] = np.nextafter(mids, np.float32(-2)), -mids
        np.testing.assert_array_equal(get_format(name).quantize(x)["qweight"], bnb_quantize(bnb, x, name, 64, False)[0])


def test_double_quant_equals_bitsandbytes_past_torch_parallel_threshold(bnb):
    """65536 blocks: torch would split its mean across threads; with one thread it is ours."""
    x = gaussian((1024, 4096), seed=5)
    packed, state, values = bnb_quantize(bnb, x, "nf4", 64, True)
    fmt = get_format("nf4", double_quant=True)
    parts = fmt.quantize(x)
    np.testing.assert_array_equal(parts["qweight"], packed)
    np.testing.assert_array_equal(parts["absmax"], state.absmax.numpy())
    assert parts["absmax_offset"].tolist() == [state.offset.item()]
    np.testing.assert_array_equal(fmt.dequantize(parts, x.shape).view(np.uint32), values.view(np.uint32))


def test_dynamic_quantizer_and_mean_equal_bitsandbytes_and_torch(bnb):
    torch, F = bnb
    rng = np.random.default_rng(6)
    grid = np.float32(-1) + (np.float32(2) * np.arange(65536, dtype=np.float32)) / np.float32(65535)
    samples = [rng.standard_normal(5000).astype(np.float32), np.zeros(700, np.float32),
               np.concatenate([[np.float32(1)], grid[rng.integers(0, 65536, 4000)]]).astype(np.float32)]
    for x in samples:
        codes, state = F.quantize_blockwise(torch.from_numpy(x), blocksize=256)
        ours = quantize_dynamic(x)
        np.testing.assert_array_equal(ours[0], codes.numpy())
        np.testing.assert_array_equal(ours[1], state.absmax.numpy())
    for n in [1, 3, 7, 8, 9, 31, 64, 255, 1000, 4097, 65536, 100003]:
        x = (rng.random(n) * rng.uniform(0.1, 100)).astype(np.float32)
        assert torch_mean(x) == torch.from_numpy(x).mean().item()
