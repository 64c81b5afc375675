"""8-bit activations for products with quantized weights (quant_linear's ``act_bits=8``).

References: ``round_activations`` against the float64 formula llama.cpp's Q8 activations
use; the reference body against NumPy's product of the rounded x with the dequantized W;
the native bodies (the byte kernel of csrc/quant/fused_act8.cpp, the int16 kernels with
8-bit integers for the other formats, the float paths) against the reference given the
same rounded x, within float32 summation error: a row rounded differently anywhere would
be off by a rounding step times |W|, far outside it. Rows must not depend on the batch,
bit for bit, and saturating byte products (|w| = 128 against |q| = 127) must be exact.
"""

from __future__ import annotations

import numpy as np
import pytest

import tensora
from tensora import quant
from tensora.kernels import quant_matmul as qm
from tensora.quant.formats import get_format

from quant_cases import CASES, COLS, IDS, ROWS, make  # tests/quant_cases.py

BYTE_CASES = [(n, o) for n, o in CASES if n in qm.ACT8_BYTE_FORMATS]
INTEGER_CASES = [(n, o) for n, o in CASES if not n.startswith("fp8")]


@pytest.fixture(autouse=True)
def _default_bits():
    yield
    qm.set_activation_bits(15)


def float_bound(x, w, name, options):
    """Float32 summation error of x @ w.T, plus NF4's code book rounded to bytes in the byte
    kernel (quant_matmul's docstring)."""
    x64, aw = np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64))
    bound = 1e-5 * (x64 @ aw.T) + 1e-30
    if name == "nf4":
        bs = options.get("block_size", 64)
        flat = aw.ravel()
        blocks = np.concatenate([flat, np.zeros(-flat.size % bs)]).reshape(-1, bs).max(-1)
        bound += (x64 @ blocks.repeat(bs)[: flat.size].reshape(w.shape).T) / 126 * 1.001
    return bound


def byte_book(options):
    """The NF4 format with its code book as the byte kernel holds it: each value times 63,
    rounded half away from zero in float32, over 63 (csrc/quant/fused_bytes.h)."""
    fmt = get_format("nf4", **options)  # a new object: the registry's keeps its code book
    v = fmt.code.astype(np.float32) * np.float32(63)
    fmt.code = np.trunc(v + np.copysign(np.float32(0.5), v)).astype(np.float32) / np.float32(63)
    return fmt


def assert_within(got, want, bound):
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), f"error {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}"


def activations(m, cols=COLS, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, cols)) * rng.uniform(0.05, 20.0, (m, cols))).astype(np.float32)
    x[:, 5] *= 50.0  # an outlier: each 32-value chunk has its own scale
    return x


# -- the rounding ------------------------------------------------------------------------


@pytest.mark.parametrize("block", [32, 256])  # 256: the K-quants' (llama.cpp's q8_K)
def test_round_activations_is_llama_cpp_q8_rounding(block):
    x = activations(7, 512)
    got = qm.round_activations(x, block)
    chunks = x.astype(np.float64).reshape(7, 512 // block, block)
    amax = np.abs(chunks).max(-1, keepdims=True)
    q = np.rint(chunks * 127 / amax)
    assert np.abs(q).max() == 127
    np.testing.assert_allclose(got.reshape(chunks.shape), q * amax / 127, rtol=2e-7, atol=0)
    assert np.all(np.abs(got - x) <= amax.repeat(block, -1).reshape(7, 512) / 254 * 1.0001)
    assert got.dtype == np.float32 and got.shape == x.shape


def test_k_quants_take_one_activation_scale_per_256_values():
    assert [qm.activation_block(n) for n in ("q4_k", "q6_k", "q2_k", "q4_0", "nf4", "q8_0")] == [256] * 3 + [32] * 3
    x = activations(1, 512)
    assert not np.array_equal(qm.round_activations(x, 256), qm.round_activations(x))


def test_round_activations_leaves_what_the_kernels_cannot_scale():
    x = activations(1, 128)
    x[0, 0] = np.nan  # chunk 0 keeps its values: the float path propagates the NaN
    x[0, 32:64] = 0.0  # a zero chunk
    x[0, 64:96] = np.float32(2.0 ** -100)  # too small to scale
    got = qm.round_activations(x)
    np.testing.assert_array_equal(got[0, :96], x[0, :96])
    assert not np.array_equal(got[0, 96:], x[0, 96:])
    odd = activations(2, 100)  # rows not made of 32-value chunks are not rounded
    np.testing.assert_array_equal(qm.round_activations(odd), odd)


def test_bits_are_checked():
    with pytest.raises(ValueError, match="8 or 15"):
        qm.set_activation_bits(4)
    with pytest.raises(ValueError, match="8 or 15"):
        qm.set_activation_bits(True)
    fmt, parts, w, decode = make("q4_0", {})
    with pytest.raises(ValueError, match="8 or 15"):
        qm.quant_linear(activations(1), "q4_0", {}, parts, (ROWS, COLS), decode, 16)


def test_native_checks_bits(lib):
    fmt, parts, w, decode = make("q4_0", {})
    out = np.empty((1, ROWS), np.float32)
    for product in (lib.quant_linear, lib.quant_gemm):
        with pytest.raises(ValueError, match="act_bits: expected 8 or 15, got 7"):
            product("q4_0", parts, ROWS, COLS, activations(1), out, act_bits=7)


# -- the bodies ------------------------------------------------------------------------


@pytest.mark.parametrize("name,options", CASES[:5] + [("q4_k", {}), ("nf4", {}), ("int4", {"group_size": 32})])
def test_reference_multiplies_the_rounded_activations(name, options):
    fmt, parts, w, decode = make(name, options)
    x = activations(3)
    got = qm.quant_linear.reference(x, name, fmt.options(), parts, (ROWS, COLS), decode, 8)
    want = qm.round_activations(x, qm.activation_block(name)).astype(np.float64) @ w.astype(np.float64).T
    assert_within(got, want, float_bound(x, w, "", {}))


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_native_matches_reference(name, options, lib):
    fmt, parts, w, decode = make(name, options)
    opts = fmt.options()
    for m in (1, 3, 9, 32, 80):  # 80: past FUSED_MAX_ROWS for some formats (tiles + BLAS)
        x = activations(m, seed=m)
        want = qm.quant_linear.reference(x, name, opts, parts, (ROWS, COLS), decode, 8)
        got = qm.quant_linear.run_native(x, name, opts, parts, (ROWS, COLS), decode, 8)
        assert_within(got, want, float_bound(qm.round_activations(x, qm.activation_block(name)), w, name, opts))


@pytest.mark.parametrize("options", [o for n, o in CASES if n == "nf4"], ids=[i for i in IDS if i.startswith("nf4")])
def test_nf4_byte_book_is_what_the_byte_kernel_multiplies(options, lib):
    """NF4 with 8-bit activations: the byte kernel's result is the product with its code
    book rounded to bytes, within float32 summation error alone (a code taken from the
    wrong nibble, or a scale of the wrong block, is off by a weight's size)."""
    if lib.simd() != "avx2":
        pytest.skip("the byte kernel needs AVX2; other CPUs keep the exact code book")
    name = "nf4"
    fmt, parts, w, decode = make(name, options)
    w_bytes = byte_book(options).dequantize_rows(parts, (ROWS, COLS), 0, ROWS)
    assert 0 < np.abs(w_bytes - w).max() <= np.abs(w).max() / 126 * 1.001
    group = qm._native_args(name, fmt.options(), parts)["group"]
    for m in (1, 4, 9):
        x = activations(m, seed=m)
        got = np.empty((m, ROWS), np.float32)
        lib.quant_linear(name, parts, ROWS, COLS, x, got, group=group, act_bits=8)
        want = qm.round_activations(x).astype(np.float64) @ w_bytes.astype(np.float64).T
        assert_within(got, want, float_bound(qm.round_activations(x), w_bytes, "", {}))


@pytest.mark.parametrize("name,options", INTEGER_CASES, ids=[n + "".join(f"-{k}={v}" for k, v in o.items())
                                                              for n, o in INTEGER_CASES])
def test_rows_do_not_depend_on_the_batch(name, options, lib):
    fmt, parts, w, decode = make(name, options)
    group = qm._native_args(name, fmt.options(), parts)["group"]
    x = activations(11, seed=3)
    alone = np.empty((11, ROWS), np.float32)
    for i in range(11):
        lib.quant_linear(name, parts, ROWS, COLS, x[i : i + 1], alone[i : i + 1], group=group, act_bits=8)
    for product in (lib.quant_linear, lib.quant_gemm):
        for m in (2, 5, 11):
            out = np.empty((m, ROWS), np.float32)
            product(name, parts, ROWS, COLS, x[:m], out, group=group, act_bits=8)
            np.testing.assert_array_equal(out, alone[:m])


@pytest.mark.parametrize("name,code", [("q8_0", 0x80), ("int8", 0x80), ("q6_k", 0x00), ("q6_k", 0xFF)])
def test_extreme_bytes_do_not_saturate(name, code, lib):
    """|w| = 128 times |q| = 127, twice per int16 pair, is 32512: one more would saturate
    vpmaddubsw. Every weight byte -128 and activations at full scale, of both signs. Q6_K:
    every code at an end (-32, or 31 as 63 in the byte kernel) times every int8 sub-scale
    at an end (-128, 127), the largest integer sums its super-block pass adds up."""
    fmt = get_format(name)
    rows, cols = 16, 512
    parts = {k: v.copy() for k, v in fmt.quantize(np.ones((rows, cols), np.float32)).items()}
    if name == "q8_0":
        blocks = parts["blocks"].reshape(rows, cols // 32, 34)
        blocks[:, :, 2:] = np.uint8(code)
    elif name == "q6_k":
        blocks = parts["blocks"].reshape(rows, cols // 256, 210)
        blocks[:, :, :192] = np.uint8(code)  # low and high bits of every code
        blocks[:, :, 192:208] = np.uint8(0x80 if code == 0 else 0x7F)
    else:
        parts["qweight"][:] = -128
    w = fmt.dequantize_rows(parts, (rows, cols), 0, rows)
    assert np.unique(w).size == 1 and w[0, 0] != 0
    x = np.full((3, cols), 1.0, np.float32)
    x[1] = -1.0
    x[2, ::2] = -1.0
    want = qm.round_activations(x).astype(np.float64) @ w.astype(np.float64).T
    got = np.empty((3, rows), np.float32)
    lib.quant_linear(name, parts, rows, cols, x, got, act_bits=8)
    assert_within(got, want, float_bound(x, w, name, {}))


def test_rows_of_odd_length_are_not_rounded(lib):
    fp8 = get_format("fp8_e4m3")  # FP8 takes any row length
    w = np.random.default_rng(1).standard_normal((8, 100)).astype(np.float32)
    parts = fp8.quantize(w)
    x = activations(2, 100)
    a, b = np.empty((2, 8), np.float32), np.empty((2, 8), np.float32)
    lib.quant_linear("fp8_e4m3", parts, 8, 100, x, a, act_bits=8)
    lib.quant_linear("fp8_e4m3", parts, 8, 100, x, b, act_bits=15)
    np.testing.assert_array_equal(a, b)


def test_the_setting_reaches_quantized_layers():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((40, 256)).astype(np.float32)
    qt = quant.quantize_tensor(tensora.tensor(w), "q4_0")
    x = activations(2, 256)
    exact = (tensora.tensor(x) @ qt.T).numpy()
    quant.set_activation_bits(8)
    assert quant.activation_bits() == 8
    fast = (tensora.tensor(x) @ qt.T).numpy()
    dense = qt.dequantize().numpy().astype(np.float64)
    want = qm.round_activations(x).astype(np.float64) @ dense.T
    assert_within(fast, want, float_bound(x, dense, "", {}))
    assert not np.array_equal(fast, exact)
    quant.set_activation_bits(15)
    np.testing.assert_array_equal((tensora.tensor(x) @ qt.T).numpy(), exact)
