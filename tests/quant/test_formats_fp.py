"""FP8 (E4M3 / E5M2, per channel or per tensor) and NVIDIA NVFP4.

References: the element types' value tables from ml_dtypes, searched by brute force for the
nearest value (ties to the even code); torch's float8 casts where torch is installed;
hand-computed bit patterns; gguf-py's NVFP4 decoder for the documented difference in layout.
"""

from __future__ import annotations

import time

import ml_dtypes
import numpy as np
import pytest

from tensora.quant.formats import QuantFormatError, get_format
from tensora.quant.formats.fp4_e2m1 import E2M1_VALUES

E4M3, E5M2 = ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2
ELEMENT = {"fp8_e4m3": (E4M3, 448.0), "fp8_e5m2": (E5M2, 57344.0)}


def gaussian(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def finite_table(element):
    """(codes, values) of every finite value of an 8-bit float type."""
    codes = np.arange(256, dtype=np.uint8)
    values = codes.view(element).astype(np.float64)
    keep = np.isfinite(values)
    return codes[keep], values[keep]


def assert_nearest(y, target, table):
    """Each y is a table value nearest to target (float64 brute force)."""
    dist = np.abs(table[None, :] - target.reshape(-1, 1)).min(axis=1)
    np.testing.assert_array_equal(np.abs(y.reshape(-1).astype(np.float64) - target.reshape(-1)), dist)


# -- FP8 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_fp8_scale_and_nearest_codes(name, per_channel):
    element, top = ELEMENT[name]
    x = gaussian((16, 96), seed=1) * np.exp(np.linspace(-4, 4, 16, dtype=np.float32))[:, None]
    x[3] = 0  # a zero row
    fmt = get_format(name, per_channel=per_channel)
    parts = fmt.quantize(x)
    fmt.check_parts(parts, x.shape)
    amax = np.abs(x).max(axis=1) if per_channel else np.abs(x).max().reshape(1)
    want = np.where(amax > 0, amax / np.float32(top), np.float32(1))
    np.testing.assert_array_equal(parts["scale"], want.astype(np.float32))
    scale = np.broadcast_to(parts["scale"][:, None] if per_channel else parts["scale"], x.shape)
    q = parts["qweight"].view(element).astype(np.float64)
    _, table = finite_table(element)
    assert_nearest(q, x / scale, table)
    if per_channel:  # every nonzero row reaches the largest magnitude
        assert (np.abs(q).max(axis=1)[amax > 0] == top).all() and parts["scale"][3] == 1
    y = fmt.dequantize(parts, x.shape)
    np.testing.assert_array_equal(y, (q * scale).astype(np.float32))


def test_fp8_hand_computed_bit_patterns():
    w = np.array([[448.0, -1.0, 0.5, 2.0 ** -9, 0.0]], np.float32)  # scale 448 / 448 = 1
    parts = get_format("fp8_e4m3").quantize(w)
    assert parts["scale"].tolist() == [1.0]
    assert parts["qweight"].tolist() == [[0x7E, 0xB8, 0x30, 0x01, 0x00]]  # max, -1, 0.5, min subnormal, 0
    w = np.array([[57344.0, -1.0, 2.0 ** -16]], np.float32)
    assert get_format("fp8_e5m2").quantize(w)["qweight"].tolist() == [[0x7B, 0xBC, 0x01]]


def test_fp8_ties_go_to_the_even_code():
    w = np.array([[448.0, 1.0625, 1.1875, -17.0]], np.float32)  # E4M3 steps 1/8 near 1, 2 near 16
    y = get_format("fp8_e4m3").dequantize(get_format("fp8_e4m3").quantize(w), w.shape)
    assert y.tolist() == [[448.0, 1.0, 1.25, -16.0]]


@pytest.mark.parametrize("name,dtype", [("fp8_e4m3", "float8_e4m3fn"), ("fp8_e5m2", "float8_e5m2")])
def test_fp8_codes_equal_torch_float8_casts(name, dtype):
    torch = pytest.importorskip("torch")
    x = gaussian((64, 256), seed=2, scale=3.0)
    parts = get_format(name).quantize(x)
    scaled = torch.from_numpy(x) / torch.from_numpy(parts["scale"])[:, None]
    want = scaled.to(getattr(torch, dtype)).view(torch.uint8).numpy()
    np.testing.assert_array_equal(parts["qweight"], want)


def test_fp8_relative_error_and_rows():
    x = gaussian((32, 512), seed=3)
    for name, bound in (("fp8_e4m3", 2.0 ** -4), ("fp8_e5m2", 2.0 ** -3)):
        fmt = get_format(name)
        parts = fmt.quantize(x)
        y = fmt.dequantize(parts, x.shape)
        normal = np.abs(x) > 0.02 * np.abs(x).max(axis=1, keepdims=True)  # clear of the subnormals
        assert (np.abs(y - x)[normal] <= bound * np.abs(x)[normal] * 1.0001).all()
        poisoned = {"qweight": np.full_like(parts["qweight"], 0x7F), "scale": np.full_like(parts["scale"], np.nan)}
        poisoned["qweight"][5:9], poisoned["scale"][5:9] = parts["qweight"][5:9], parts["scale"][5:9]
        np.testing.assert_array_equal(fmt.dequantize_rows(poisoned, x.shape, 5, 9), y[5:9])


def test_fp8_options_and_errors():
    assert get_format("fp8_e4m3").options() == {"per_channel": True}
    fmt = get_format("fp8_e5m2", per_channel=False)
    assert fmt == get_format("fp8_e5m2", **fmt.options()) and fmt.part_specs((3, 4))["scale"][0] == (1,)
    with pytest.raises(QuantFormatError):
        get_format("fp8_e4m3", per_channel="no")
    with pytest.raises(QuantFormatError):
        get_format("fp8_e4m3").quantize(np.array([[np.inf]], np.float32))
    with pytest.raises(QuantFormatError):
        fmt.check_parts(get_format("fp8_e5m2").quantize(gaussian((3, 4))), (3, 4))  # (3,) scales


# -- NVFP4 -------------------------------------------------------------------------------------


def nvfp4_parts(x):
    fmt = get_format("nvfp4")
    parts = fmt.quantize(x)
    fmt.check_parts(parts, x.shape)
    return fmt, parts


def codes_of(qweight):
    """E2M1 codes in element order: element 2i is the LOW nibble of byte i."""
    return np.stack([qweight & 0x0F, qweight >> 4], axis=-1).reshape(qweight.shape[0], -1)


def test_nvfp4_scales_follow_nvidias_recipe():
    x = gaussian((12, 128), seed=4) * np.exp(np.linspace(-6, 3, 12, dtype=np.float32))[:, None]
    _, parts = nvfp4_parts(x)
    amax = np.abs(x).max()
    assert parts["global_scale"].tolist() == [np.float32(amax / (448 * 6))]
    gs = parts["global_scale"][0]
    block_amax = np.abs(x).reshape(12, -1, 16).max(axis=2)
    target = block_amax / np.float32(6) / gs
    decoded = parts["scale"].view(E4M3).astype(np.float64)
    _, table = finite_table(E4M3)
    assert_nearest(decoded, np.minimum(target, 448.0).astype(np.float64), table)  # nearest E4M3
    assert decoded.max() == 448  # the largest block's scale is E4M3's maximum


def test_nvfp4_codes_are_the_nearest_e2m1_values():
    x = gaussian((8, 256), seed=5)
    fmt, parts = nvfp4_parts(x)
    factor = np.repeat(parts["scale"].view(E4M3).astype(np.float32) * parts["global_scale"][0], 16, axis=1)
    codes = codes_of(parts["qweight"])
    assert_nearest(E2M1_VALUES[codes], (x / factor).astype(np.float64), E2M1_VALUES.astype(np.float64))
    np.testing.assert_array_equal(fmt.dequantize(parts, x.shape), (E2M1_VALUES[codes] + 0) * factor)


def test_nvfp4_hand_computed_block():
    # amax 2688 = 448 * 6 makes the global scale 1, and the block scale 2688 / 6 = 448
    x = np.zeros((1, 32), np.float32)
    x[0, :8] = [2688.0, -448.0, 224.0, 112.0, 336.0, 560.0, 0.0, -1.0]  # / 448: 6, -1, .5, .25, .75, 1.25
    x[0, 16:32] = 1.5  # second block: scale e4m3(1.5 / 6) = 0.25, every value 1.5 / 0.25 = 6
    fmt, parts = nvfp4_parts(x)
    assert parts["global_scale"].tolist() == [1.0]
    assert parts["scale"].view(E4M3).astype(float).tolist() == [[448.0, 0.25]]
    codes = codes_of(parts["qweight"])[0]
    # 6 -> 0b0111, -1 -> 0b1010, 0.5 -> 1, 0.25 -> 0 (tie, even), 0.75 -> 2 (tie: 1.0 is even), 1.25 -> 2
    assert codes[:8].tolist() == [7, 10, 1, 0, 2, 2, 0, 8]
    assert parts["qweight"][0, 0] == 7 | (10 << 4)  # element 0 in the LOW nibble
    assert (codes[16:] == 7).all()
    y = fmt.dequantize(parts, x.shape)[0]
    assert y[:8].tolist() == [2688.0, -448.0, 224.0, 0.0, 448.0, 448.0, 0.0, 0.0]
    assert not np.signbit(y[7])  # code 8 ("-0") decodes to +0.0


def test_nvfp4_zero_tensor_and_vanishing_blocks():
    fmt, parts = nvfp4_parts(np.zeros((2, 32), np.float32))
    assert parts["global_scale"].tolist() == [1.0] and not parts["scale"].any() and not parts["qweight"].any()
    x = np.zeros((1, 32), np.float32)
    x[0, 0], x[0, 16:] = 1000.0, 1e-6  # second block's scale underflows E4M3 -> 0, codes 0
    fmt, parts = nvfp4_parts(x)
    assert parts["scale"][0, 1] == 0 and not codes_of(parts["qweight"])[0, 16:].any()
    assert not fmt.dequantize(parts, x.shape)[0, 16:].any()


def test_nvfp4_quality_and_rows():
    x = gaussian((64, 1024), seed=6)
    fmt, parts = nvfp4_parts(x)
    y = fmt.dequantize(parts, x.shape)
    sqnr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x.astype(np.float64)) ** 2))
    assert 19 < sqnr < 22  # E2M1 with per-16 scales: ~20.4 dB on Gaussian data
    poisoned = {"qweight": np.full_like(parts["qweight"], 0xFF), "scale": np.full_like(parts["scale"], 0x7F),
                "global_scale": parts["global_scale"]}
    poisoned["qweight"][10:20], poisoned["scale"][10:20] = parts["qweight"][10:20], parts["scale"][10:20]
    np.testing.assert_array_equal(fmt.dequantize_rows(poisoned, x.shape, 10, 20), y[10:20])
    with pytest.raises(QuantFormatError):
        get_format("nvfp4", block_size=32)
    assert abs(get_format("nvfp4").bits_per_weight() - 4.5) < 1e-5  # + one float32 per tensor


def test_nvfp4_differs_from_gguf_nvfp4_only_as_documented():
    """With global_scale 1 our bytes convert to GGUF's: per 64 values, the 4 scale bytes (unsigned
    E4M3 = our positive E4M3), then 32 code bytes with elements 0..7 low and 8..15 high per 16."""
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize as gguf_dequantize

    qtype = gguf.GGMLQuantizationType.NVFP4
    assert gguf.GGML_QUANT_SIZES[qtype] == (64, 4 + 32)
    x = gaussian((4, 128), seed=7)
    x[0, 0] = 2688.0  # global scale 1
    fmt, parts = nvfp4_parts(x)
    assert parts["global_scale"].tolist() == [1.0]
    codes = codes_of(parts["qweight"]).reshape(4, -1, 4, 16)  # (rows, super-blocks, blocks, 16)
    split = codes[..., :8] | (codes[..., 8:] << 4)  # GGUF's split nibble order
    blocks = np.concatenate([parts["scale"].reshape(4, -1, 4), split.reshape(4, -1, 32)], axis=-1)
    ours = fmt.dequantize(parts, x.shape)
    np.testing.assert_array_equal(gguf_dequantize(blocks.reshape(4, -1).astype(np.uint8), qtype), ours)


def test_nvfp4_quantize_is_vectorised():
    x = gaussian((1024, 4096), seed=8)
    start = time.perf_counter()
    get_format("nvfp4").dequantize(get_format("nvfp4").quantize(x), x.shape)
    get_format("fp8_e4m3").dequantize(get_format("fp8_e4m3").quantize(x), x.shape)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("name,per_channel", [("fp8_e4m3", True), ("fp8_e4m3", False), ("fp8_e5m2", True),
                                              ("fp8_e5m2", False), ("nvfp4", False)])
def test_values_too_small_for_a_scale_flush_to_zero_not_nan(name, per_channel):
    """amax / max_finite is 0 in float32 below ~1e-42 (E4M3) / 1e-40 (E5M2): x / 0 once stored
    NaN codes for finite input. Such rows now decode to zeros; rows beside them keep theirs."""
    fmt = get_format(name, per_channel=per_channel) if name != "nvfp4" else get_format(name)
    x = np.full((3, 64), 1e-44, np.float32)
    x[0, ::2] = 0.0
    x[2] = gaussian((64,), seed=1) * np.float32(1e-30 if per_channel else 1e-44)
    got = fmt.dequantize(fmt.quantize(x), x.shape)
    assert np.isfinite(got).all()
    assert np.all(np.abs(got[:2]) <= 1e-44)
    if per_channel:  # a row of normal (if small) values has its own scale and survives
        np.testing.assert_allclose(got[2], x[2], rtol=0.15, atol=1e-31)
