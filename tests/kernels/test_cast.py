"""float32 <-> bfloat16 kernels (tensora/kernels/cast.py).

Reference: ml_dtypes ``astype``, bit for bit. A table of hand-checked bit patterns
pins down what both bodies must produce (ties to even, NaN -> sign | 0x7fc0,
subnormals kept), then the native body is compared with the reference on random and
swept bit patterns, every shape and layout, both SIMD variants and thread splits.
Native-only tests skip when TENSORA_NO_NATIVE disables the extension and fail when
it is missing for any other reason.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from tensora.backend import native
from tensora.kernels import KERNELS
from tensora.kernels.cast import bfloat16_to_float32, float32_to_bfloat16

BF16 = ml_dtypes.bfloat16

# float32 bits -> bfloat16 bits, as ml_dtypes 0.6 produces them.
NARROW_TABLE = [
    (0x3F800000, 0x3F80),  # 1.0 exact
    (0x3F807FFF, 0x3F80),  # just below the halfway point: down
    (0x3F808000, 0x3F80),  # tie, kept lsb even: stays
    (0x3F808001, 0x3F81),  # just above the halfway point: up
    (0x3F818000, 0x3F82),  # tie, kept lsb odd: up to even
    (0xBF808000, 0xBF80),  # negative tie, even
    (0xBF818000, 0xBF82),  # negative tie, odd
    (0x7F7F7FFF, 0x7F7F),  # below the tie at the largest bfloat16
    (0x7F7F8000, 0x7F80),  # tie at the largest bfloat16 (odd): overflows to inf
    (0x7F7FFFFF, 0x7F80),  # largest float32 -> +inf
    (0xFF7FFFFF, 0xFF80),  # most negative float32 -> -inf
    (0x7F800000, 0x7F80),  # +inf
    (0xFF800000, 0xFF80),  # -inf
    (0x00000000, 0x0000),  # +0
    (0x80000000, 0x8000),  # -0 keeps its sign
    (0x00000001, 0x0000),  # smallest subnormal rounds to +0
    (0x80000001, 0x8000),  # ... and to -0
    (0x00008000, 0x0000),  # subnormal tie, even
    (0x00018000, 0x0002),  # subnormal tie, odd: up (subnormals are not flushed)
    (0x00010000, 0x0001),  # smallest bfloat16 subnormal, exact
    (0x007F0000, 0x007F),  # largest bfloat16 subnormal, exact
    (0x007FFFFF, 0x0080),  # largest float32 subnormal rounds up to the smallest normal
    (0x807FFFFF, 0x8080),
    (0x7FC00000, 0x7FC0),  # quiet NaN
    (0xFFC00000, 0xFFC0),  # negative quiet NaN keeps its sign
    (0x7FC12345, 0x7FC0),  # quiet NaN, payload dropped
    (0x7F800001, 0x7FC0),  # signalling NaN with the smallest payload: quietened
    (0xFF800001, 0xFFC0),
    (0x7F808000, 0x7FC0),  # NaN that naive rounding would carry into +inf
    (0x7F80FFFF, 0x7FC0),
    (0x7F810000, 0x7FC0),  # signalling NaN whose payload survives truncation: dropped
    (0x7FBFFFFF, 0x7FC0),  # largest signalling payload
    (0x7FFFFFFF, 0x7FC0),
    (0xFFFFFFFF, 0xFFC0),
]

# bfloat16 bits -> float32 bits: exact, NaN payloads and the quiet bit are kept.
WIDEN_TABLE = [
    (0x3F80, 0x3F800000),
    (0x8000, 0x80000000),
    (0x0001, 0x00010000),
    (0x7F80, 0x7F800000),
    (0xFF80, 0xFF800000),
    (0x7F7F, 0x7F7F0000),
    (0x7FC0, 0x7FC00000),
    (0xFFC1, 0xFFC10000),
    (0x7F81, 0x7F810000),  # signalling NaN stays signalling
]


def f32_from_bits(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def bf16_from_bits(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint16).view(BF16)


def narrow_reference_bits(x: np.ndarray) -> np.ndarray:
    return float32_to_bfloat16.reference(x).view(np.uint16)


def widen_reference_bits(x: np.ndarray) -> np.ndarray:
    return bfloat16_to_float32.reference(x).view(np.uint32)


def _use_simd(lib, level):
    try:
        lib.set_simd(level)
    except ValueError as e:  # e.g. avx2 on a CPU or platform without it
        pytest.skip(str(e))


@pytest.fixture(params=["baseline", "avx2"])
def simd(request, lib):
    """Runs the test once per SIMD variant of the native loops."""
    _use_simd(lib, request.param)
    yield request.param
    lib.set_simd("auto")


@pytest.fixture(params=["reference", "native-baseline", "native-avx2"])
def body(request):
    """Each body of a kernel (native once per SIMD variant), called as body(kernel, x)."""
    if request.param == "reference":
        yield lambda k, x: k.reference(x)
        return
    lib = request.getfixturevalue("lib")
    _use_simd(lib, request.param.removeprefix("native-"))
    yield lambda k, x: k.run_native(x)
    lib.set_simd("auto")


# --- both bodies against the defined bits ---------------------------------------


def test_narrow_table(body):
    src, want = zip(*NARROW_TABLE)
    got = body(float32_to_bfloat16, f32_from_bits(src))
    assert got.dtype == BF16
    assert [hex(b) for b in got.view(np.uint16)] == [hex(b) for b in want]


def test_widen_table(body):
    src, want = zip(*WIDEN_TABLE)
    got = body(bfloat16_to_float32, bf16_from_bits(src))
    assert got.dtype == np.float32
    assert [hex(b) for b in got.view(np.uint32)] == [hex(b) for b in want]


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1,), (7,), (2, 3, 5)])
def test_shapes(body, shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    y = body(float32_to_bfloat16, x)
    assert y.shape == shape and y.dtype == BF16 and y.flags.c_contiguous
    np.testing.assert_array_equal(y.view(np.uint16), narrow_reference_bits(x))
    z = body(bfloat16_to_float32, y)
    assert z.shape == shape and z.dtype == np.float32 and z.flags.c_contiguous
    np.testing.assert_array_equal(z.view(np.uint32), widen_reference_bits(y))


def _layouts(base: np.ndarray) -> dict[str, np.ndarray]:
    """Non-contiguous, read-only and misaligned views of `base` (2-D)."""
    raw = np.zeros(base.nbytes + 1, np.uint8)
    misaligned = raw[1:].view(base.dtype).reshape(base.shape)
    misaligned[...] = base
    readonly = base.copy()
    readonly.flags.writeable = False
    return {
        "strided": base[::2, ::3],
        "transposed": base.T,
        "reversed": base[::-1, ::-1],
        "broadcast": np.broadcast_to(base[:1], base.shape),
        "readonly": readonly,
        "misaligned": misaligned,
    }


@pytest.mark.parametrize(
    "layout", ["strided", "transposed", "reversed", "broadcast", "readonly", "misaligned"]
)
def test_layouts(body, layout):
    rng = np.random.default_rng(2)
    x = _layouts(rng.standard_normal((40, 30)).astype(np.float32))[layout]
    y = body(float32_to_bfloat16, x)
    assert y.shape == x.shape
    np.testing.assert_array_equal(y.view(np.uint16), narrow_reference_bits(x))
    xb = _layouts(x.astype(BF16))[layout]
    z = body(bfloat16_to_float32, xb)
    assert z.shape == xb.shape
    np.testing.assert_array_equal(z.view(np.uint32), widen_reference_bits(xb))


@pytest.mark.parametrize("bad", [np.zeros(3), [1.0, 2.0], np.zeros(3, np.float16)])
def test_narrow_rejects_other_dtypes(body, bad):
    """float64 input would be rounded twice (to float32, then bfloat16): refused."""
    with pytest.raises(TypeError, match="expected a float32 array"):
        body(float32_to_bfloat16, bad)


@pytest.mark.parametrize("bad", [np.zeros(3, np.float32), np.zeros(3, np.uint16)])
def test_widen_rejects_other_dtypes(body, bad):
    with pytest.raises(TypeError, match="expected a bfloat16 array"):
        body(bfloat16_to_float32, bad)


def test_reference_does_not_warn_on_signalling_nan():
    with np.errstate(all="raise"):  # the native body never warns either
        float32_to_bfloat16.reference(f32_from_bits([0x7F800001, 0xFFBFFFFF]))


# --- native against the reference -------------------------------------------------


def test_native_random_bits(lib, simd):
    """Every kind of float32: uniform random bit patterns are ~0.4% NaN."""
    rng = np.random.default_rng(3)
    x = f32_from_bits(rng.integers(0, 2**32, size=100_003, dtype=np.uint32))
    got = float32_to_bfloat16.run_native(x).view(np.uint16)
    np.testing.assert_array_equal(got, narrow_reference_bits(x))


def test_native_random_normal(lib, simd):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(100_003) * np.float32(1e3)).astype(np.float32)
    np.testing.assert_array_equal(
        float32_to_bfloat16.run_native(x).view(np.uint16), narrow_reference_bits(x)
    )


def test_native_sweep_every_upper_half(lib, simd):
    """All 2**16 upper halves (sign, exponent, kept mantissa) x the lower halves that
    decide rounding: zero, one, just below / at / above the tie, all ones."""
    upper = np.arange(2**16, dtype=np.uint32) << 16
    lower = np.array([0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x1234, 0xC000],
                     dtype=np.uint32)
    x = f32_from_bits((upper[:, None] | lower[None, :]).ravel())
    np.testing.assert_array_equal(
        float32_to_bfloat16.run_native(x).view(np.uint16), narrow_reference_bits(x)
    )


def test_native_widen_every_bfloat16(lib, simd):
    x = bf16_from_bits(np.arange(2**16, dtype=np.uint32).astype(np.uint16))
    np.testing.assert_array_equal(
        bfloat16_to_float32.run_native(x).view(np.uint32), widen_reference_bits(x)
    )


@pytest.mark.parametrize("n", [(1 << 19) + 37, (1 << 21) + 37])
def test_native_large_arrays_auto_threads(lib, n):
    """Sizes past both thread thresholds, so the automatic split runs (when the
    machine has 2+ cores), with a ragged last chunk."""
    rng = np.random.default_rng(5)
    x = f32_from_bits(rng.integers(0, 2**32, size=n, dtype=np.uint32))
    y = float32_to_bfloat16.run_native(x)
    np.testing.assert_array_equal(y.view(np.uint16), narrow_reference_bits(x))
    np.testing.assert_array_equal(
        bfloat16_to_float32.run_native(y).view(np.uint32), widen_reference_bits(y)
    )


@pytest.mark.parametrize("threads", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000, 12_345])
def test_native_explicit_thread_split(lib, threads, n):
    """Every chunking of small arrays: chunk starts are multiples of 64 elements,
    more threads than chunks is clamped, and no element is skipped or repeated."""
    rng = np.random.default_rng(n)
    x = f32_from_bits(rng.integers(0, 2**32, size=n, dtype=np.uint32))
    out = np.full(n, 0xDEAD, np.uint16)
    lib.float32_to_bfloat16(x, out, threads=threads)
    np.testing.assert_array_equal(out, narrow_reference_bits(x))
    back = np.full(n, np.nan, np.float32)
    lib.bfloat16_to_float32(out, back, threads=threads)
    np.testing.assert_array_equal(back.view(np.uint32), widen_reference_bits(out.view(BF16)))


@pytest.mark.slow
def test_native_exhaustive_float32(lib):
    """All 2**32 float32 bit patterns, in chunks (~20 s on 2 cores)."""
    chunk = 1 << 24
    out = np.empty(chunk, np.uint16)
    for start in range(0, 1 << 32, chunk):
        x = f32_from_bits(np.arange(start, start + chunk, dtype=np.uint64).astype(np.uint32))
        lib.float32_to_bfloat16(x, out)
        np.testing.assert_array_equal(out, narrow_reference_bits(x), err_msg=hex(start))


# --- dispatch ---------------------------------------------------------------------


def test_registered():
    assert KERNELS["float32_to_bfloat16"] is float32_to_bfloat16
    assert KERNELS["bfloat16_to_float32"] is bfloat16_to_float32


def test_dispatch_follows_size_and_availability():
    small_f32, small_bf16 = np.zeros(4, np.float32), np.zeros(4, BF16)
    big_bf16 = np.zeros(bfloat16_to_float32.min_native_size, BF16)
    expected = "native" if native.load() is not None else "reference"
    assert float32_to_bfloat16.body_for(small_f32) == expected
    assert bfloat16_to_float32.body_for(small_bf16) == "reference"
    assert bfloat16_to_float32.body_for(big_bf16) == expected
    # Whichever body runs, the entry point gives the reference bits.
    x = f32_from_bits([0x3F818000, 0x7F800001])
    assert float32_to_bfloat16(x).view(np.uint16).tolist() == [0x3F82, 0x7FC0]


def test_run_native_without_extension_says_why(monkeypatch):
    monkeypatch.setattr(native, "load", lambda: None)
    monkeypatch.setattr(native, "status", lambda: (False, "import failed: test"))
    with pytest.raises(RuntimeError, match="import failed: test"):
        float32_to_bfloat16.run_native(np.zeros(2, np.float32))
    assert float32_to_bfloat16.body_for(np.zeros(2, np.float32)) == "reference"


# --- native argument validation ---------------------------------------------------


def _narrow_args(n=8):
    return np.arange(n, dtype=np.float32), np.full(n, 0xBEEF, np.uint16)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda x, o: (x.astype(np.float64), o), TypeError, "src: expected dtype float32, got"),
        (lambda x, o: (x, o.astype(np.int16)), TypeError, "out: expected dtype uint16, got int16"),
        (lambda x, o: (x, o.view(np.float16)), TypeError, "out: expected dtype uint16"),
        (lambda x, o: (x[::2], o[:4]), ValueError, "src: expected a C-contiguous array"),
        (lambda x, o: (x[::-1], o), ValueError, "src: expected a C-contiguous array"),
        (lambda x, o: (x.reshape(2, 4).T, o), ValueError, "src: expected a C-contiguous"),
        (lambda x, o: (x[:4], o[::2]), ValueError, "out: expected a C-contiguous array"),
        (lambda x, o: (x, o[:7]), ValueError, "out: expected 8 elements to match the input"),
        (lambda x, o: (x[:7], o), ValueError, "out: expected 7 elements"),
    ],
)
def test_native_rejects_bad_arguments(lib, make, error, match):
    x, out = _narrow_args()
    src, dst = make(x, out)
    before = dst.copy()
    with pytest.raises(error, match=match):
        lib.float32_to_bfloat16(src, dst)
    np.testing.assert_array_equal(dst, before)  # nothing was written


def test_native_rejects_bad_arguments_widen(lib):
    bits, out = np.zeros(8, np.uint16), np.zeros(8, np.float32)
    with pytest.raises(TypeError, match="src: expected dtype uint16, got float32"):
        lib.bfloat16_to_float32(out, out.copy())
    with pytest.raises(TypeError, match="out: expected dtype float32, got uint16"):
        lib.bfloat16_to_float32(bits, bits.copy())
    with pytest.raises(ValueError, match="src: expected a C-contiguous"):
        lib.bfloat16_to_float32(bits[::2], out[:4])
    with pytest.raises(ValueError, match="out: expected 8 elements"):
        lib.bfloat16_to_float32(bits, out[:5])


def test_native_rejects_misaligned(lib):
    raw = np.zeros(8 * 4 + 1, np.uint8)
    src = raw[1:].view(np.float32)
    with pytest.raises(ValueError, match="src: data is not aligned to 4 bytes"):
        lib.float32_to_bfloat16(src, np.zeros(8, np.uint16))


def test_native_rejects_overlap(lib):
    """out inside src's buffer would be overwritten while other threads read it."""
    buf = np.zeros(16, np.float32)
    with pytest.raises(ValueError, match="must not overlap"):
        lib.float32_to_bfloat16(buf, buf.view(np.uint16)[8:24])
    with pytest.raises(ValueError, match="must not overlap"):
        lib.bfloat16_to_float32(buf.view(np.uint16)[:16], buf)


def test_native_rejects_readonly_out(lib):
    x, out = _narrow_args()
    out.flags.writeable = False
    with pytest.raises(TypeError):  # nanobind refuses a read-only array for `out`
        lib.float32_to_bfloat16(x, out)


@pytest.mark.parametrize("src", [[1.0, 2.0], None, 3.0, "abc"])
def test_native_rejects_non_arrays(lib, src):
    with pytest.raises(TypeError):
        lib.float32_to_bfloat16(src, np.zeros(2, np.uint16))


def test_native_rejects_bad_threads_and_simd(lib):
    x, out = _narrow_args()
    with pytest.raises(ValueError, match="threads"):
        lib.float32_to_bfloat16(x, out, threads=-1)
    with pytest.raises(TypeError):
        lib.float32_to_bfloat16(x, out, 2)  # threads is keyword-only
    with pytest.raises(ValueError, match="unknown or not supported"):
        lib.set_simd("avx9000")
    assert lib.simd() in ("baseline", "avx2")


def test_native_empty_arrays_accept_any_layout(lib):
    x = np.zeros((0, 4), np.float32)[:, ::2]
    lib.float32_to_bfloat16(x, np.zeros(0, np.uint16))
    lib.bfloat16_to_float32(np.zeros(0, np.uint16), np.zeros((3, 0), np.float32))


def test_native_module_reports_itself(lib):
    assert set(lib.kernels()) >= {"float32_to_bfloat16", "bfloat16_to_float32", "quant_linear", "quant_gemm"}
    assert isinstance(lib.__version__, str) and lib.__version__
    assert lib.auto_threads() >= 1
