"""GGUF block formats against gguf-py (``gguf.quants``) and llama.cpp's reference quantizers.

* Dequantization of every type equals ``gguf.quants.dequantize`` bit for bit, on random
  bytes (finite fp16 fields) and on blocks we quantized.
* Where gguf-py quantizes (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, MXFP4) our bytes equal its bytes.
* The K-quants and IQ4_NL (which gguf-py does not quantize) are checked against golden
  bytes produced by llama.cpp's ggml-quants.c (``quantize_row_q*_K_ref``, and
  ``quantize_iq4_nl`` without importance weights) compiled with -ffp-contract=off, against
  a hand-derived block, and against llama.cpp's test-quantize-fns error bounds.
"""

from __future__ import annotations

import hashlib
import time
import zlib

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize as gguf_dequantize  # noqa: E402
from gguf.quants import quantize as gguf_quantize  # noqa: E402

from tensora.errors import ShapeError  # noqa: E402
from tensora.quant.formats import QuantFormatError, get_format  # noqa: E402

LEGACY = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]
K_QUANTS = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]
ALL = LEGACY + K_QUANTS + ["iq4_nl", "mxfp4"]
#: The types gguf-py 0.19 can quantize (the others raise NotImplementedError there).
GGUF_PY_QUANTIZES = LEGACY + ["mxfp4"]
#: Byte offsets of each block's fp16 fields (filled with finite values in random blocks).
FP16_FIELDS = {"q4_0": [0], "q4_1": [0, 2], "q5_0": [0], "q5_1": [0, 2], "q8_0": [0], "q2_k": [80, 82],
               "q3_k": [108], "q4_k": [0, 2], "q5_k": [0, 2], "q6_k": [208], "iq4_nl": [0], "mxfp4": []}


def bits(a: np.ndarray) -> np.ndarray:
    """float32 values as their bit patterns, so -0.0 != 0.0 and NaN == NaN of the same payload."""
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def sample(shape: tuple[int, ...], scale: float, seed: int) -> np.ndarray:
    """Gaussian data with the awkward rows: all zero, one large outlier, constant, one-signed."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    rows = x.reshape(-1, shape[-1])
    rows[0] = 0
    if rows.shape[0] > 1:
        rows[1, 5] = 60 * scale
    if rows.shape[0] > 2:
        rows[2] = np.float32(0.75 * scale)
    if rows.shape[0] > 3:
        rows[3] = np.abs(rows[3])
    if rows.shape[0] > 4:
        rows[4, : shape[-1] // 2] = 0
    if rows.shape[0] > 5:
        rows[5, :32] = -0.0
    return x


def random_blocks(name: str, rows: int, blocks_per_row: int, seed: int) -> np.ndarray:
    fmt = get_format(name)
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (rows * blocks_per_row, fmt.type_size), dtype=np.uint8)
    for offset in FP16_FIELDS[name]:
        half = (rng.standard_normal(data.shape[0]) * 4).astype(np.float16)
        data[:, offset:offset + 2] = half.view(np.uint8).reshape(-1, 2)
    return data.reshape(rows, blocks_per_row * fmt.type_size)


# -- layout ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_layout_is_gguf(name):
    fmt = get_format(name)
    assert fmt.name == fmt.gguf_type.name.lower() == name
    assert (fmt.block_size, fmt.type_size) == gguf.GGML_QUANT_SIZES[fmt.gguf_type]
    k = 2 * fmt.block_size
    assert fmt.part_specs((3, 5, k)) == {"blocks": ((15, 2 * fmt.type_size), np.dtype(np.uint8))}
    assert fmt.bits_per_weight() == 8 * fmt.type_size / fmt.block_size
    parts = fmt.quantize(np.zeros((3, 5, k), np.float32))
    fmt.check_parts(parts, (3, 5, k))
    assert parts["blocks"].shape == gguf.quants.quant_shape_to_byte_shape((15, k), fmt.gguf_type)


@pytest.mark.parametrize("name", ALL)
def test_rejects_bad_shapes_parts_and_values(name):
    fmt = get_format(name)
    with pytest.raises(ShapeError):
        fmt.quantize(np.zeros((2, fmt.block_size + 1), np.float32))
    good = fmt.quantize(np.ones((2, fmt.block_size), np.float32))
    with pytest.raises(QuantFormatError):
        fmt.check_parts({"blocks": good["blocks"][:, 1:]}, (2, fmt.block_size))
    with pytest.raises(QuantFormatError):
        fmt.check_parts({"blocks": good["blocks"].view(np.int8)}, (2, fmt.block_size))
    with pytest.raises(QuantFormatError):
        fmt.check_parts({"blocks": good["blocks"], "scale": good["blocks"]}, (2, fmt.block_size))
    with pytest.raises(QuantFormatError):
        fmt.quantize(np.full((1, fmt.block_size), np.nan, np.float32))
    with pytest.raises(QuantFormatError):
        fmt.dequantize(good, (3, fmt.block_size))
    with pytest.raises(QuantFormatError):
        get_format(name, block_size=64)


# -- dequantization: bit for bit with gguf-py -------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_dequantize_random_blocks_equals_gguf_py(name):
    fmt = get_format(name)
    blocks = random_blocks(name, rows=7, blocks_per_row=3, seed=11)
    shape = (7, 3 * fmt.block_size)
    ours = fmt.dequantize({"blocks": blocks}, shape)
    assert ours.dtype == np.float32 and ours.shape == shape
    np.testing.assert_array_equal(bits(ours), bits(gguf_dequantize(blocks, fmt.gguf_type)))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("scale", [1e-4, 1.0, 300.0])
def test_dequantize_quantized_equals_gguf_py(name, scale):
    fmt = get_format(name)
    x = sample((9, 2 * fmt.block_size * 2), scale, seed=3)
    blocks = fmt.quantize(x)["blocks"]
    ours = fmt.dequantize({"blocks": blocks}, x.shape)
    np.testing.assert_array_equal(bits(ours), bits(gguf_dequantize(blocks, fmt.gguf_type)))


@pytest.mark.parametrize("name", ALL)
def test_dequantize_rows_reads_only_its_rows(name):
    fmt = get_format(name)
    shape = (6, 2 * fmt.block_size)
    whole = fmt.quantize(sample(shape, 1.0, seed=5))["blocks"]
    expected = fmt.dequantize({"blocks": whole}, shape)
    poisoned = np.full_like(whole, 0xFF)  # NaN fp16 fields and all-ones codes everywhere...
    poisoned[2:4] = whole[2:4]  # ...but in the rows asked for
    got = fmt.dequantize_rows({"blocks": poisoned}, shape, 2, 4)
    np.testing.assert_array_equal(bits(got), bits(expected[2:4]))
    assert fmt.dequantize_rows({"blocks": whole}, shape, 3, 3).shape == (0, shape[1])


# -- quantization: bit for bit with gguf-py where it quantizes --------------------------------


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # gguf-py at 3e4
@pytest.mark.parametrize("name", GGUF_PY_QUANTIZES)
@pytest.mark.parametrize("shape", [(1, 32), (5, 64), (2, 3, 256), (17, 512)])
@pytest.mark.parametrize("scale", [1e-6, 0.02, 1.0, 1e3, 3e4])
def test_quantize_equals_gguf_py(name, shape, scale):
    fmt = get_format(name)
    x = sample(shape, scale, seed=zlib.crc32(repr((name, shape, scale)).encode()))
    theirs = gguf_quantize(x.reshape(-1, shape[-1]), fmt.gguf_type)
    if not np.isfinite(gguf_dequantize(theirs, fmt.gguf_type)).all():
        # gguf-py writes an fp16 scale of inf (the 60 * 3e4 outlier): we refuse instead.
        with pytest.raises(QuantFormatError, match="float16"):
            fmt.quantize(x)
        return
    np.testing.assert_array_equal(fmt.quantize(x)["blocks"], theirs)


@pytest.mark.parametrize("name", GGUF_PY_QUANTIZES)
def test_quantize_equals_gguf_py_on_exact_ties(name):
    """Values on the rounding midpoints of the code grid (half-integers times the scale)."""
    fmt = get_format(name)
    k = np.arange(8 * 32)
    x = (((k * 7) % 33 - 16) / np.float32(2)).astype(np.float32).reshape(8, 32)
    x[:, 0] = 8  # pins the block scale so the others sit on exact midpoints
    np.testing.assert_array_equal(fmt.quantize(x)["blocks"], gguf_quantize(x, fmt.gguf_type))


# -- K-quants and IQ4_NL: llama.cpp's reference quantizers ------------------------------------


def golden_input(n: int) -> np.ndarray:
    """Deterministic, platform-independent test values in [-2.5, 2.5] (integer arithmetic)."""
    k = np.arange(n, dtype=np.int64)
    return ((k * k * 37 + k * 11) % 2001 - 1000).astype(np.float32) / np.float32(400)


def mixed_matrix() -> np.ndarray:
    """16 x 512 values with many scales, zero / constant / one-signed rows and an outlier."""
    x = golden_input(16 * 512).reshape(16, 512)
    x = x * np.array([1, 1e-3, 1e3, 1, 1, 1, 1, 1, 1, 1, 0.5, 3, 1, 1, 1e-5, 20], np.float32)[:, None]
    x[3] = 0
    x[4, 100] = 40
    x[5] = np.abs(x[5])
    x[6] = -np.abs(x[6])
    x[7, :256] = 1.25
    x[8, ::3] = 0
    x[9] = x[9] * x[9] * x[9]
    x[12] = x[12] + 3
    x[13, 256:] = 1e-20
    return x


#: ggml-quants.c's bytes for golden_input(256) (golden_input(64) for IQ4_NL).
GOLDEN = {
    "q2_k": (
        "ffcccc8bdeedbdaceeddccdcbecdcefec054389d711afea79d766f5552497671bfb9f43772811053e376d66ace9237db"
        "2661b10057e746da6e03a7482dc5ae574d766f59434d7bb5b0fe3d488bda69e9b82e6031"
    ),
    "q3_k": (
        "746cea26f8ff3391d639fb8c4daed9f8e495b7eedfe3bb9e063ea2ec7076fe203408d59e17d00ebfee487f9ea2ba5e56"
        "e1a963e6389eef0c5a76635b13ceb57859ef7e6c0bdbd2fe166f9b2c91e7690b7a98bfd3a6bb4218d15dcbb5f61144a7"
        "97367993088446780cc33ccfada6"
    ),
    "q4_k": (
        "ad1d2f29f9f4faf5fcf8fcf0a788ffb8105091e32588fb5fd358ee740bb36b14edb7816c4834313e4c6b8abafa2b6dcf"
        "e1770eb66d16efb9846e4a3633314e6d8cbcec1d6eb10377ea5fd459f0872ee63a2623203e4d6c9ccc0d4e90f356ca3e"
        "b349df661dc57e3700dbb6918d8a87950a5cbe1376fa60f58b22c97229e3bc87624c393633415e7daddd0e51a2f558cb"
    ),
    "q5_k": (
        "1c190c29fdf9fff8fff9fcf0cdbcffbc5840c60a14d31fbdfa15d7206182f5942f5e7e0515285041cdf56b27bbb965eb"
        "209123c64a00e7afb792ceda0876c728db6e03ba8169627e9ac71575e537da8fd2ee0c7bcb2cdf6207bd846d56618dba"
        "0867d82acd7106edd5aeb8b3f01d5cdc755d46506d9ae837a80a9d40f5bc947d7682beeb2b9afc7e01c67b422b142f3a"
        "06aa5f16fde6d0fb073583e344d66a0ec48b635c6772afed4cad0e9145faa088"
    ),
    "q6_k": (
        "a112668c855f1cac0f4369532ecd5db029142d6cc040fec3bcd2168715c1aaa105f4b4c839710cf5b543b8fb10fdb855"
        "c313405a31f5960540797e51019c064ecb4aecc1bcc51160e1a57b708bd939db9d94af8737c5094c615d27f478cafef5"
        "0155c625e2dcb4f91c7e2cc891c9de2180f1375c4512bf3f81a8ffd98503b4e73064c82c81e90e177c869fa5f2b88681"
        "70763bf8be0fcf9c2cb915a5015df8102e7dbc0c5feb4bd7a30feb4420c9b29fbc86dfe5f3fd8781400ec9b87b2a9909"
        "81718c667e846e7b8a8c7a8880778a742591"
    ),
    "iq4_nl": "ec24e06011d284381cffd3c9bfb4bcc2ecf3bc24e1b4895e32382f344e548ec6f01c65d1",
}

#: sha256 of ggml-quants.c's bytes for mixed_matrix().
GOLDEN_MIXED_SHA256 = {
    "q2_k": "0eec31d6678f08a3723c299850a2cff68f14ad00bcf2ae4482564bbd6e1ac6de",
    "q3_k": "5d391b1146821c04145a80efa16067db3f3f733d0433a87cbac6b93386680d52",
    "q4_k": "1f81e3225f942de1a8034c2796a5367c4bdeb1514399c453684b91d7292ff5cc",
    "q5_k": "b976528d7343b6b29112681794effba8a72ff4c2232bc303cecadaf7f3dc7b8a",
    "q6_k": "9e58143e5ee1a0220fdbc110003c73d8c1940826cca78c6082cc70d6b7befd26",
    "iq4_nl": "ea2ebfdc5bbab28d3d158f5c9c10d080aef217e7bca3dce6bd9b435445866907",
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_quantize_equals_llama_cpp_golden_bytes(name):
    fmt = get_format(name)
    n = 64 if name == "iq4_nl" else 256
    assert fmt.quantize(golden_input(n)[None])["blocks"].tobytes().hex() == GOLDEN[name]


@pytest.mark.parametrize("name", sorted(GOLDEN_MIXED_SHA256))
def test_quantize_equals_llama_cpp_on_awkward_rows(name):
    blocks = get_format(name).quantize(mixed_matrix())["blocks"]
    assert hashlib.sha256(blocks.tobytes()).hexdigest() == GOLDEN_MIXED_SHA256[name]


def test_q4_k_constant_block_by_hand():
    """256 copies of c = 59.0625 = 945/16: min 0, scale c/15, super-scale c/15/63 = 1/16 (exact in
    fp16, 0x2c00), all six-bit scales 63 (bytes 0-3: 63 | 3 << 6 = 0xff, bytes 8-11: 0x0f), mins
    0, and every code 15 (0xff nibble pairs); it decodes back to c exactly."""
    x = np.full((1, 256), 59.0625, np.float32)
    blocks = get_format("q4_k").quantize(x)["blocks"]
    assert blocks.tobytes().hex() == "002c" "0000" + "ff" * 4 + "00" * 4 + "0f" * 4 + "ff" * 128
    np.testing.assert_array_equal(get_format("q4_k").dequantize({"blocks": blocks}, x.shape), x)


@pytest.mark.parametrize("name", ALL)
def test_error_within_llama_cpp_test_quantize_fns_bounds(name):
    """llama.cpp's tests/test-quantize-fns.cpp: 4096 values 0.1 + 2 cos(i), error
    sqrt(sum sq diff) / n below 0.002 (0.0075 for Q2_K, 0.004 for Q3_K)."""
    fmt = get_format(name)
    x = (0.1 + 2 * np.cos(np.arange(4096, dtype=np.float32))).astype(np.float32)[None]
    y = fmt.dequantize(fmt.quantize(x), x.shape)
    error = np.sqrt(np.sum((x.astype(np.float64) - y) ** 2)) / x.size
    assert error < {"q2_k": 0.0075, "q3_k": 0.004}.get(name, 0.002)


def test_rmse_on_gaussian_data_orders_by_bits():
    x = np.random.default_rng(0).standard_normal((64, 4096)).astype(np.float32)
    rmse = {}
    for name in ALL:
        fmt = get_format(name)
        rmse[name] = float(np.sqrt(np.mean((fmt.dequantize(fmt.quantize(x), x.shape) - x) ** 2)))
    assert rmse["q6_k"] < rmse["q5_k"] < rmse["q4_k"] < rmse["q3_k"] < rmse["q2_k"]
    assert rmse["q8_0"] < rmse["q6_k"]
    assert rmse["q4_k"] < rmse["q4_1"] < rmse["q4_0"] and rmse["q5_k"] < rmse["q5_1"] < rmse["q5_0"]
    assert rmse["iq4_nl"] < rmse["q4_0"]
    # Measured with the reference quantizers (N(0, 1), std 1), plus a few percent of slack.
    bounds = {"q2_k": 0.31, "q3_k": 0.16, "q4_k": 0.075, "q5_k": 0.038, "q6_k": 0.019, "q4_0": 0.09,
              "q4_1": 0.082, "q5_0": 0.045, "q5_1": 0.04, "q8_0": 0.0056, "iq4_nl": 0.08, "mxfp4": 0.12}
    for name, bound in bounds.items():
        assert rmse[name] < bound, (name, rmse[name])


def test_gguf_file_tensor_wraps_without_copy(tmp_path):
    """A tensor written with gguf-py's writer and read by its reader is our "blocks" part as is."""
    fmt = get_format("q4_k")
    x = sample((4, 512), 1.0, seed=9)
    blocks = fmt.quantize(x)["blocks"]
    writer = gguf.GGUFWriter(tmp_path / "t.gguf", "test")
    writer.add_tensor("w", blocks, raw_dtype=fmt.gguf_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tensor = gguf.GGUFReader(tmp_path / "t.gguf").tensors[0]
    assert tensor.tensor_type == fmt.gguf_type
    data = tensor.data
    assert data.dtype == np.uint8 and data.shape == blocks.shape
    fmt.check_parts({"blocks": data}, x.shape)
    np.testing.assert_array_equal(data, blocks)
    y = fmt.dequantize({"blocks": data}, x.shape)
    np.testing.assert_array_equal(y, fmt.dequantize({"blocks": blocks}, x.shape))


@pytest.mark.parametrize("name", ALL)
def test_quantize_is_vectorised(name):
    """A 1024 x 4096 matrix (4M values) round-trips in about a second in every format (2 cores); the
    bound is 10 s, for a busy CI machine: a Python loop over blocks takes minutes."""
    fmt = get_format(name)
    x = np.random.default_rng(1).standard_normal((1024, 4096)).astype(np.float32)
    start = time.perf_counter()
    parts = fmt.quantize(x)
    fmt.dequantize(parts, x.shape)
    assert time.perf_counter() - start < 10
