"""Matrix products with a quantized weight that never build the dense weight.

``W`` is an (N, K) matrix in one of tensora's packed formats (tensora/quant/formats/):
``fmt`` names the format, ``options`` are its constructor options, ``parts`` its packed
arrays and ``decode_rows(start, stop)`` its NumPy decoder (kernels may not import the
formats, so the caller passes it). Three kernels, each a NumPy reference body plus a
native body from ``tensora._C``:

- ``quant_linear(x, ...)``: ``x @ W.T`` for x (M, K) float32, result (M, N);
- ``quant_linear_grad_input(g, ...)``: ``g @ W`` for g (M, N), result (M, K) (the
  backward to the input, as QLoRA trains adapters next to a frozen weight);
- ``quant_dequantize_rows(fmt, ..., start, stop, ...)``: rows ``start:stop`` of W.

The reference bodies decode W a tile of rows at a time (``TILE_BYTES`` of float32) and
multiply each tile with ``np.matmul`` into its slice of the result, so their extra
memory is bounded whatever N is. The native bodies run, for few activation rows
(``FUSED_MAX_ROWS``, lower for formats with a heavier decode: ``HEAVY_DECODE``), the
fused kernel (csrc/quant/fused_avx2.cpp: each 32-value chunk of 8 weight rows is
decoded in registers and multiplied there, two activation rows per pass, on every
core; for one row its byte variant, csrc/quant/fused_vnni.cpp, where the CPU has
AVX-512 VNNI); from ``GEMM_MIN_ROWS`` (``GEMM_MIN_ROWS_FORMAT``) to ``GEMM_MAX_ROWS``
rows the multi-row kernel (csrc/quant/gemm_avx2.cpp: each chunk decoded once for all
rows, then 16 multiply-adds per chunk and row straight from an L1 buffer), which gives
every row bit for bit the fused kernel's result (FP8: its panel kernel, csrc/quant/fp8_avx2.cpp,
which decodes each 256-column block of 16 weight rows once into an L1 panel of float32 and
runs a 6 x 16 FMA microkernel on it, as BLAS does: from ``GEMM_MIN_ROWS_FP8`` rows, at any
batch); for more rows they decode tiles natively (AVX2, one thread: BLAS's workers
spin between tiles) into one reused buffer and hand each tile to BLAS, where a GEMM's
arithmetic rather than the weight bytes is the cost. The backward does the same with
a float path (decode a row, one axpy per activation row) up to
``GRAD_FUSED_MAX_ROWS``. Every format has native bodies; a format the loaded
extension lacks (a stale build) runs the reference.

Tolerances (native against reference; tests/kernels/test_quant_matmul.py checks them):

- ``quant_dequantize_rows``: bit for bit (same float32 operations in the same order).
- Float paths (the tile paths, ``quant_linear_grad_input``, FP8's kernels, rows
  whose length is not a multiple of 32, any CPU without AVX2/FMA/F16C): the same
  products summed in another order, ``|native - ref| <= 1e-5 * (|x| @ |W|.T)``
  (float32 rounding is ~6e-8 per operation; 1e-5 leaves room for K ~ 10**5 terms).
- The fused integer kernel (all other formats): x is rounded to 15-bit integers per 32
  values (step ``amax / 16256``: llama.cpp's Q8 activations with 128x finer steps), so
  that weights decode to exact int16 and ``vpmaddwd`` sums exactly; the result is the
  exact product with that perturbed x, ``|native - ref| <= (|W| @ a.T) / 32512 +
  1e-5 * (|x| @ |W|.T)`` with ``a`` each value's 32-chunk amax (about 3e-5 of the
  output's scale, a hundredth of a 4-bit format's own error). NF4's code book is
  irrational and is held in multiples of 2**-12, which adds
  ``(|x| @ absmax_per_value.T) / 8192``. Inputs holding inf or NaN take the float
  path, so they propagate as in the reference.
- Its variant for one activation row (M = 1, the GEMV of batch-1 decoding) on CPUs with
  AVX-512 VNNI (``lib.vnni()``; ``lib.set_simd("avx2")`` turns it off), for the formats
  whose weights are whole bytes (all integer formats but Q2_K, Q3_K and Q6_K; not NF4 or
  FP4, whose code books are not): weights decode to bytes and ``vpdpbusd`` multiplies
  them, as llama.cpp does, but with the same 15-bit activations held as two signed bytes,
  the same integers and the same scale steps, so bit for bit the int16 kernel's result.
  llama.cpp's 8-bit activations (``amax / 127``) would halve the products but move the
  logits ~0.5% and change SmolLM2's greedy answers, so they are opt-in (below).

8-bit activations (``set_activation_bits(8)``, or ``act_bits=8`` per call; default 15): x is
first rounded as llama.cpp rounds its Q8 activations, each 32-value chunk to
``round(x * 127 / amax) * amax / 127`` (``round_activations``, the same float32 steps in
NumPy and in the extension's ``round_act8``; for the K-quants each 256-value chunk, as
llama.cpp's q8_K, so that the byte kernel applies Q4_K's and Q5_K's 6-bit sub-scales in
integers and scales in float once per super-block: 10-13% faster), and every body then
computes the product with that rounded x: the NumPy reference and the tile paths in float32, the integer kernels with
byte products (csrc/quant/fused_act8.cpp: ``vpmaddubsw`` on weights kept as bytes; on an
11008 x 4096 GEMV, 2 cores, 1.25-1.5x faster than the int16 kernel: q4_0 1.43 -> 0.96 ms,
int4 1.20 -> 0.94, q8_0 1.54 -> 1.24; it serves every batch up to ``GEMM_MAX_ROWS``, sharing
each decoded chunk among the rows, so that rows stay independent of the batch; Q2_K, Q3_K
and Q6_K, whose sub-scales multiply int16 weights, keep their int16 kernels with the same
8-bit integers). So the tolerances above hold against the reference given the rounded x,
rows stay independent of the batch bit for bit, and the error against the unrounded x is
llama.cpp's: up to ``amax / 254`` per activation. NF4, whose code book is irrational, runs
the byte kernel too, its book held in multiples of 1/63, which adds up to
``(|x| @ absmax_per_value.T) / 126`` (in place of ``/ 8192``): on Gaussian weights 0.5%
more matmul error than the exact book, twice what the activations' own rounding adds. FP4
keeps its exact int16 kernel: a sixth of its weights sit on its smallest value, 1/192 of the
block's absmax, which a byte book that fits would move by half or more.
Rows whose length is not a multiple of 32 are not rounded. The backward treats the rounding
as the identity (a straight-through estimate), as the 15-bit rounding is treated.

Rows are independent: a row's result does not depend on how many rows share the call,
bit for bit, so batched decoding computes what each sequence would alone. FP8 is the
exception: its fused kernel sums each row in 16 lanes (its one-row AVX-512 loop in 32),
its panel kernel (from ``GEMM_MIN_ROWS_FP8`` rows) in k order, so an FP8 row batched and
alone are two float32 sums of the same exact products, each within the float bound
above of the float64 product: they differ by at most twice that bound,
``2e-5 * (|x| @ |W|.T)``. Within the panel kernel (from ``GEMM_MIN_ROWS_FP8`` rows) a
row's result does not depend on the batch, bit for bit.

    >>> import numpy as np
    >>> from tensora.quant.formats import get_format
    >>> fmt = get_format("q8_0")
    >>> w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    >>> parts = fmt.quantize(w)
    >>> decode = lambda a, b: fmt.dequantize_rows(parts, w.shape, a, b)
    >>> x = np.ones((2, 256), np.float32)
    >>> y = quant_linear(x, "q8_0", {}, parts, w.shape, decode)
    >>> bool(np.allclose(y, x @ decode(0, 64).T, rtol=1e-3, atol=1e-3))
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import numpy as np

from ..backend import native
from .registry import kernel

Decoder = Callable[[int, int], np.ndarray]

#: Float32 bytes of one decoded tile of W (reference and native tile paths).
TILE_BYTES = 4 << 20
#: Activation rows up to which the fused kernel beats native tiles + BLAS, measured on
#: W 11008 x 4096 (benchmarks/quant_matmul.py, 2 cores): the fused kernel's cost grows
#: linearly with the rows (about 0.6 ms per row at 4 bits), BLAS's less than linearly,
#: and tiles also pay a decode. Formats with a light decode (one mask or table lookup
#: per value) cross over near 64 rows; those with sub-scales, fifth/sixth bits or two
#: tables per value near 16-32. FP8's fused kernel keeps float activations (an FMA per
#: weight, as BLAS), yet tiles pay a float32 decode of every weight that costs more:
#: at 32 rows fused runs at 1.2-1.4x NumPy float32 and tiles at 0.3-0.6x, at 64 rows
#: fused still leads (1.05x against 0.4-0.5x).
#: (From GEMM_MIN_ROWS the multi-row kernel replaces the fused one; FP8 from
#: GEMM_MIN_ROWS_FP8, at any batch.)
FUSED_MAX_ROWS = 64
HEAVY_DECODE = {"q2_k": 32, "q3_k": 16, "q5_k": 32, "q6_k": 16, "nf4": 32, "fp4": 32, "nvfp4": 32}
#: Activation rows from which the multi-row kernel (``quant_gemm``) beats the fused one
#: (``GEMM_MIN_ROWS_FORMAT`` for some formats), measured one thread, alternating runs, on
#: SmolLM2's shapes (576-3072 x 576-1536) and 4096 x 4096: both are bound by vector
#: instructions, and per chunk of 8 weight rows and activation row the multi-row kernel
#: takes ~40 for its products, sums and scales against the fused kernel's ~45, plus a
#: decode per call (and 16 permutes) where the fused kernel decodes once per two rows.
#: So the lighter a format's decode, the more rows repay it: the 4-bit GGUF formats break
#: even near 5-6 rows (q4_1 at 8 rows: 2-14% faster in cache, 5-8% slower streaming
#: 4096 x 4096 from DRAM); q5_0/q5_1, IQ4_NL and the K-quants are 15-30% faster from 4
#: rows; formats of whole bytes (one sign extension per 16 values) only near 12 rows
#: (q8_0's 49152 x 576 LM head at 8 rows: 5-15% slower).
GEMM_MIN_ROWS = 6
GEMM_MIN_ROWS_FORMAT = {"q8_0": 12, "int8": 12, "q5_0": 4, "q5_1": 4, "iq4_nl": 4, "mxfp4": 4, "q4_k": 4,
                        **{name: 4 for name in HEAVY_DECODE}}
#: Widest weight rows (columns) for which the thresholds above hold. For wider ones, whose
#: weights stream from DRAM in a model, the multi-row kernel is 4-30% slower than the fused
#: one below 12 rows (q4_1 576 x 1536 at 8 rows: 4-10% in SmolLM2 steps and cold-cache
#: runs, 4096 x 4096 at 4-8 rows: 5-30%; its 8 activation rows of 1536 values, 24 KiB, no
#: longer fit in L1 next to its 16 KiB decode buffer), so they keep the earlier thresholds:
#: 12 rows, 4 for ``HEAVY_DECODE``.
GEMM_NARROW_COLS = 1024
GEMM_MIN_ROWS_WIDE = 12
#: Rows up to which it beats native tiles + BLAS (measured as above).
GEMM_MAX_ROWS = 128
#: Formats whose multi-row kernel is FP8's panel kernel (float32 FMAs, no lane reductions,
#: each weight decoded once per 256 rows), used from ``GEMM_MIN_ROWS_FP8`` rows at any
#: batch: measured on W 11008 x 4096 (one core), it is 1.2x slower than the fused kernel
#: at 4 rows, level at 5 and 8 (the fused kernel's 4-row passes fit), as fast or up to
#: 1.3x faster at 6-7 and 9-12, 1.5x at 32; tiles + BLAS, which pay a float32 decode of every weight, are
#: 1.9-2.2x slower than it at 128 and 256 rows.
FP8_GEMM = frozenset({"fp8_e4m3", "fp8_e5m2"})
#: Formats with the byte kernel for 8-bit activations (csrc/quant/fused_act8.cpp).
#: GGUF's K-quants: with 8-bit activations, one activation scale per 256 values.
K_QUANTS = frozenset({"q2_k", "q3_k", "q4_k", "q5_k", "q6_k"})
ACT8_BYTE_FORMATS = frozenset({"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "iq4_nl", "mxfp4", "int8",
                               "int4", "nvfp4", "nf4", "q6_k"})
GEMM_MIN_ROWS_FP8 = 6
#: Rows up to which the backward's native float path (decode a row, one axpy per
#: activation row) beats tiles + BLAS.
GRAD_FUSED_MAX_ROWS = 8

#: Bits activations are rounded to before a product with a quantized weight (module-wide, as
#: torch.set_float32_matmul_precision is): 15 (the default) or 8 (llama.cpp's; see above).
_activation_bits = 15


def activation_bits() -> int:
    """The bits quant_linear rounds activations to when a call does not say (15 or 8)."""
    return _activation_bits


def set_activation_bits(bits: int) -> None:
    """Set the activation rounding of later products with quantized weights: 15 (default,
    |error| <= amax / 32512 per value) or 8 (llama.cpp's, amax / 254: faster byte kernels)."""
    global _activation_bits
    _activation_bits = _check_bits(bits)


def _check_bits(bits: Any) -> int:
    if isinstance(bits, bool) or bits not in (8, 15):
        raise ValueError(f"activation bits must be 8 or 15, got {bits!r}")
    return int(bits)


def activation_block(fmt: str) -> int:
    """Values per activation scale with 8-bit activations: 256 for the K-quants (llama.cpp's
    q8_K, so that their integer sub-scales apply before any float step), else 32."""
    return 256 if fmt in K_QUANTS else 32


def round_activations(x: np.ndarray, block: int = 32) -> np.ndarray:
    """x (M, K) float32 with each ``block``-value chunk (32, or 256: ``activation_block``)
    rounded to 8 bits as llama.cpp's Q8 activations: ``q = round-half-even(x * (127 /
    amax))``, ``x~ = q * (amax / 127)`` in float32, amax the chunk's largest magnitude.
    Chunks holding inf or NaN, all zeros, or an amax below 2**-90 stay as they are, and so
    does x when K is not a multiple of ``block`` (the integer kernels leave those to their
    float path). The extension's ``round_act8`` (csrc/quant/quant.h) is the same function."""
    m, k = x.shape
    if k % block or x.size == 0:
        return x
    chunks = x.reshape(m, k // block, block)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        amax = np.max(np.abs(chunks), axis=2, keepdims=True)
        keep = ~np.isfinite(amax) | ~(amax >= np.float32(2.0 ** -90))
        amax = np.where(keep, np.float32(1), amax)
        q = np.clip(np.rint(chunks * (np.float32(127) / amax)), -127, 127)
        rounded = q * (amax / np.float32(127))
    return np.where(keep, chunks, rounded).reshape(m, k)


def _bits(act_bits: int | None) -> int:
    return _activation_bits if act_bits is None else _check_bits(act_bits)


def _matrix(a: np.ndarray, cols: int, what: str) -> np.ndarray:
    """``a`` as a C-contiguous float32 (M, cols) matrix; TypeError for other dtypes."""
    a = np.asarray(a)
    if a.dtype != np.float32:
        raise TypeError(f"{what}: expected a float32 array, got {a.dtype}")
    if a.ndim != 2 or a.shape[1] != cols:
        raise ValueError(f"{what}: expected shape (M, {cols}), got {a.shape}")
    return np.ascontiguousarray(a)


def _tile_rows(cols: int) -> int:
    return max(1, TILE_BYTES // (4 * max(cols, 1)))


def _shape(shape: tuple[int, int]) -> tuple[int, int]:
    rows, cols = (int(s) for s in shape)
    if rows < 0 or cols < 0:
        raise ValueError(f"bad matrix shape {shape}")
    return rows, cols


# -- reference bodies --------------------------------------------------------------------


@kernel("quant_linear")
def quant_linear(x: np.ndarray, fmt: str, options: Mapping[str, Any], parts: Mapping[str, np.ndarray],
                 shape: tuple[int, int], decode_rows: Decoder, act_bits: int | None = None) -> np.ndarray:
    """``x @ W.T``: x float32 (M, K), W (N, K) quantized; returns float32 (M, N). ``act_bits``
    (8 or 15; None: ``activation_bits()``): 8 multiplies ``round_activations(x)``."""
    rows, cols = _shape(shape)
    x = _matrix(x, cols, "quant_linear")
    if _bits(act_bits) == 8:
        x = round_activations(x, activation_block(fmt))
    out_t = np.empty((rows, x.shape[0]), np.float32)  # W x.T, tile rows are contiguous
    step = _tile_rows(cols)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        np.matmul(decode_rows(r0, r1), x.T, out=out_t[r0:r1])
    return np.ascontiguousarray(out_t.T)


@kernel("quant_linear_grad_input")
def quant_linear_grad_input(g: np.ndarray, fmt: str, options: Mapping[str, Any],
                            parts: Mapping[str, np.ndarray], shape: tuple[int, int],
                            decode_rows: Decoder) -> np.ndarray:
    """``g @ W``: g float32 (M, N), W (N, K) quantized; returns float32 (M, K)."""
    rows, cols = _shape(shape)
    g = _matrix(g, rows, "quant_linear_grad_input")
    out = np.zeros((g.shape[0], cols), np.float32)
    tmp = np.empty_like(out)
    step = _tile_rows(cols)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        np.matmul(g[:, r0:r1], decode_rows(r0, r1), out=tmp)
        out += tmp
    return out


@kernel("quant_dequantize_rows")
def quant_dequantize_rows(fmt: str, options: Mapping[str, Any], parts: Mapping[str, np.ndarray],
                          shape: tuple[int, int], start: int, stop: int, decode_rows: Decoder) -> np.ndarray:
    """Rows ``start:stop`` of W as float32 (stop - start, K) (slice semantics)."""
    return decode_rows(start, stop)


_native_formats: dict[int, frozenset[str]] = {}


def formats_with_native() -> frozenset[str]:
    """Names of the formats the loaded extension accelerates (empty without it)."""
    lib = native.load()
    if lib is None:
        return frozenset()
    key = id(lib)
    if key not in _native_formats:
        has = "quant_linear" in lib.kernels()
        _native_formats[key] = frozenset(lib.quant_formats()) if has else frozenset()
    return _native_formats[key]


# -- native bodies -----------------------------------------------------------------------


def _native_args(fmt: str, options: Mapping[str, Any], parts: Mapping[str, np.ndarray]) -> dict | None:
    """Keyword arguments of the ``tensora._C`` calls, or None when the extension lacks ``fmt``
    (or the weight is empty: nothing to speed up, and the reference handles no rows)."""
    if fmt not in formats_with_native() or any(np.asarray(p).size == 0 for p in parts.values()):
        return None
    group = options.get("group_size") if fmt == "int4" else options.get("block_size") if fmt in ("nf4", "fp4") else 0
    return {"parts": {k: _native_part(v) for k, v in parts.items()}, "group": int(group or 0)}


def _native_part(a: Any) -> Any:
    """An ndarray part as the native kernels read it: native byte order, C-contiguous and aligned
    (strided, misaligned or byte-swapped views are copied; the reference reads any of them, and
    both bodies must agree). Anything else is passed on for the extension to reject."""
    if not isinstance(a, np.ndarray):
        return a
    if a.dtype.byteorder not in "=|":
        a = a.astype(a.dtype.newbyteorder("="))
    return np.require(a, requirements=("C", "A"))


def native_linear(lib: ModuleType, fmt: str, m: int, cols: int = 0, act_bits: int = 15) -> Callable[..., None] | None:
    """The ``tensora._C`` function computing ``x @ W.T`` for ``m`` activation rows of ``cols``
    values in place (``quant_gemm`` or ``quant_linear``, same signature), or None where tiles
    + BLAS are faster. ``cols=0`` stands for a row length the caller does not give: the
    thresholds of narrow rows, taken in whole 32-value chunks. With 8-bit activations the
    formats of whole-byte weights run the byte kernel at every batch up to ``GEMM_MAX_ROWS``
    (it shares each decoded chunk among the rows, and ``quant_linear`` is it)."""
    if act_bits == 8 and fmt in ACT8_BYTE_FORMATS:
        return lib.quant_linear if m <= GEMM_MAX_ROWS else None
    if fmt in FP8_GEMM:
        # The panel kernel runs with AVX2 on whole chunks; elsewhere quant_gemm would take
        # the float path row by row, which tiles + BLAS beat at large batches.
        panel = lib.simd() == "avx2" and cols % 32 == 0
        low, high = (GEMM_MIN_ROWS_FP8, m) if panel else (m + 1, m)  # (m + 1, m): not at all
    elif cols > GEMM_NARROW_COLS:
        low, high = GEMM_MIN_ROWS_FORMAT[fmt] if fmt in HEAVY_DECODE else GEMM_MIN_ROWS_WIDE, GEMM_MAX_ROWS
    else:
        low, high = GEMM_MIN_ROWS_FORMAT.get(fmt, GEMM_MIN_ROWS), GEMM_MAX_ROWS
    if low <= m <= high and hasattr(lib, "quant_gemm"):
        return lib.quant_gemm
    if m <= min(FUSED_MAX_ROWS, HEAVY_DECODE.get(fmt, FUSED_MAX_ROWS)):
        return lib.quant_linear
    return None


def _decode_into(lib: ModuleType, fmt: str, args: dict, rows: int, cols: int, r0: int, r1: int,
                 buf: np.ndarray) -> np.ndarray:
    # One thread: BLAS's workers still spin between the tile products, and decoding on
    # every core against them is several times slower than decoding on this one.
    tile = buf[: r1 - r0]
    lib.quant_dequantize_rows(fmt, args["parts"], rows, cols, r0, r1, tile, group=args["group"], threads=1)
    return tile


@quant_linear.native_body
def _quant_linear_native(lib: ModuleType, x: np.ndarray, fmt: str, options: Mapping[str, Any],
                         parts: Mapping[str, np.ndarray], shape: tuple[int, int], decode_rows: Decoder,
                         act_bits: int | None = None) -> np.ndarray:
    bits = _bits(act_bits)
    args = _native_args(fmt, options, parts)
    if args is None:
        return quant_linear.reference(x, fmt, options, parts, shape, decode_rows, bits)
    rows, cols = _shape(shape)
    x = _matrix(x, cols, "quant_linear")
    fused = native_linear(lib, fmt, x.shape[0], cols, bits)
    if fused is not None:
        out = np.empty((x.shape[0], rows), np.float32)
        fused(fmt, args["parts"], rows, cols, x, out, group=args["group"], act_bits=bits)
        return out
    if bits == 8:
        x = round_activations(x, activation_block(fmt))
    out_t = np.empty((rows, x.shape[0]), np.float32)
    step = _tile_rows(cols)
    buf = np.empty((min(step, rows), cols), np.float32)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        np.matmul(_decode_into(lib, fmt, args, rows, cols, r0, r1, buf), x.T, out=out_t[r0:r1])
    return np.ascontiguousarray(out_t.T)


@quant_linear_grad_input.native_body
def _quant_linear_grad_input_native(lib: ModuleType, g: np.ndarray, fmt: str, options: Mapping[str, Any],
                                    parts: Mapping[str, np.ndarray], shape: tuple[int, int],
                                    decode_rows: Decoder) -> np.ndarray:
    args = _native_args(fmt, options, parts)
    if args is None:
        return quant_linear_grad_input.reference(g, fmt, options, parts, shape, decode_rows)
    rows, cols = _shape(shape)
    g = _matrix(g, rows, "quant_linear_grad_input")
    out = np.zeros((g.shape[0], cols), np.float32)
    if g.shape[0] <= GRAD_FUSED_MAX_ROWS:
        lib.quant_linear_grad_input(fmt, args["parts"], rows, cols, g, out, group=args["group"])
        return out
    tmp = np.empty_like(out)
    step = _tile_rows(cols)
    buf = np.empty((min(step, rows), cols), np.float32)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        np.matmul(g[:, r0:r1], _decode_into(lib, fmt, args, rows, cols, r0, r1, buf), out=tmp)
        out += tmp
    return out


@quant_dequantize_rows.native_body
def _quant_dequantize_rows_native(lib: ModuleType, fmt: str, options: Mapping[str, Any],
                                  parts: Mapping[str, np.ndarray], shape: tuple[int, int], start: int, stop: int,
                                  decode_rows: Decoder) -> np.ndarray:
    args = _native_args(fmt, options, parts)
    if args is None:
        return decode_rows(start, stop)
    rows, cols = _shape(shape)
    start, stop, _ = slice(start, stop).indices(rows)
    stop = max(start, stop)
    out = np.empty((stop - start, cols), np.float32)
    lib.quant_dequantize_rows(fmt, args["parts"], rows, cols, start, stop, out, group=args["group"])
    return out
