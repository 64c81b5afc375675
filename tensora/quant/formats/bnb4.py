"""bitsandbytes NF4 and FP4: a 16-entry codebook scaled by one absmax per block (QLoRA's storage).

The layout and every rounding decision are bitsandbytes' (0.50, CPU backend), so the bytes
and the dequantized float32 values equal ``bitsandbytes.functional.quantize_4bit`` /
``dequantize_4bit`` on float32 input:

- The array is flattened (``rows * K`` values, bitsandbytes does not care about rows) and
  cut into blocks of ``block_size`` (64 by default); the last block may be short. Each
  block stores its float32 absmax; a value is ``code[q] * absmax``.
- A value is coded as the nearest codebook entry of ``x * (1 / absmax)`` (a reciprocal,
  then a product: bitsandbytes' torch path; the short last block divides instead), with
  the absmax clamped to >= 1e-38 and the ratio clipped to [-1, 1]. "Nearest" means
  bucketing by the float32 midpoints of the sorted codebook, a value exactly on a
  midpoint going to the lower entry (``torch.bucketize`` with right=False).
- Codes are packed two per byte, element 2i in the HIGH nibble; an odd count is padded
  with the code of 0.

NF4 is the NormalFloat codebook of QLoRA (Dettmers et al. 2023): quantiles of N(0, 1) at
8 points from 0.9677083 to 0.5 (positive side) and 7 (negative side), plus 0, divided by
the largest. FP4 is bitsandbytes' own 1-2-1 float, listed by code: magnitudes
(0, 0.0625, 8, 12, 4, 6, 2, 3) / 12 for codes 0..7, their negatives for 8..15. It is NOT
OCP E2M1: its exponent field runs backwards and its only subnormal is 0.0625 / 12 where
E2M1 has 0.5 / 6. Code 8 ("-0") decodes to +0.0 as in bitsandbytes' table (its CPU C
kernel returns -0.0 there: equal values, other sign bit) and, because the stable argsort
puts it after code 0, it is what tiny *positive* values get.

Double quantization (``double_quant=True``, bitsandbytes' ``compress_statistics``): the
absmax values minus their mean (part "absmax_offset") are themselves quantized to 8 bits
in blocks of 256 with bitsandbytes' signed dynamic map (``create_dynamic_map(True)``,
rebuilt bit for bit in tensora.kernels.dynamic_map) and a float32 absmax per 256 ("absmax_scale").
That is 8 + 32/256 instead of 32 bits per block: 0.373 bits per weight saved at block 64.
bitsandbytes' CPU 8-bit quantizer codes through a 65536-entry table rather than an exact
nearest search (`quantize_dynamic` reproduces it), and the mean is torch's float32 CPU
sum (a cascade of partial sums, `torch_mean` reproduces it) divided by the count.

Exactness caveats (bitsandbytes' own output varies here, not ours): torch sums 32768 or
more absmax values in per-thread pieces when it runs on several threads, so its mean,
and with it the double-quantized bytes of tensors of >= 32768 blocks (2M weights at block
64), match ours under ``torch.set_num_threads(1)``; the sum is that of torch's 8-float
vector kernels (AVX2, NEON and default builds; its AVX-512 kernels add in 16 lanes), and
the dynamic map that of its linspace with fused multiply-adds (FMA CPUs).

Rows: flat element ``r * K + j`` is row r, so rows ``a:b`` are the flat range
``[a*K, b*K)``; `dequantize_rows` decodes just the blocks (and bytes, and 256-groups of
double-quantized absmax) that range touches, whether or not K is a multiple of the block.

    >>> import numpy as np
    >>> fmt = NF4(block_size=64, double_quant=True)
    >>> w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    >>> parts = fmt.quantize(w)
    >>> sorted(parts), parts["qweight"].shape
    (['absmax', 'absmax_offset', 'absmax_scale', 'qweight'], (128,))
    >>> float(np.sqrt(np.mean((fmt.dequantize(parts, w.shape) - w) ** 2))) < 0.12
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ...kernels.dynamic_map import SIGNED_MAP, quantize_blockwise
from ._gguf_blocks import CHUNK_VALUES
from .base import Parts, QuantFormat, QuantFormatError, as_rows, check_dims, matrix_shape, register_format

F32 = np.float32
BLOCK_SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
#: Block size of the second (8-bit) quantization of the absmax values.
NESTED_BLOCK = 256
#: bitsandbytes clamps the absmax before taking its reciprocal.
_TINY = F32(1e-38)

#: NF4 codebook (bitsandbytes ``get_4bit_type("nf4")``, QLoRA appendix E), float32, code order.
NF4_CODE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], F32)
#: bitsandbytes FP4 by code: sign bit, then exponent bits 00 (subnormal), 01 (x8), 10 (x4),
#: 11 (x2), then one mantissa bit; normalised by the largest magnitude, 12.
_FP4_MAGNITUDES = np.array([0, 0.0625, 8, 12, 4, 6, 2, 3], F32)
FP4_CODE = np.concatenate([_FP4_MAGNITUDES, -_FP4_MAGNITUDES]) / F32(12) + F32(0)  # + 0: code 8 is +0.0


# -- bitsandbytes' 8-bit dynamic map and its CPU quantizer (shared with the 8-bit optimizers) --

DYNAMIC_MAP = SIGNED_MAP


def quantize_dynamic(x: np.ndarray, block_size: int = NESTED_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(codes uint8, absmax float32 per block) of flat float32 ``x`` with the signed dynamic map,
    as bitsandbytes' CPU ``quantize_blockwise`` codes them (see tensora.kernels.dynamic_map)."""
    return quantize_blockwise(x, SIGNED_MAP, block_size)


# -- torch's float32 CPU mean ---------------------------------------------------------------


def _seqsum(a: np.ndarray, axis: int) -> np.ndarray:
    """Strictly left-to-right float32 sum along ``axis`` (cumsum adds in order; sum() is pairwise)."""
    if a.shape[axis] == 0:
        return np.zeros(a.shape[:axis] + a.shape[axis + 1:], F32)
    return np.cumsum(a, axis=axis, dtype=F32).take(-1, axis=axis)


def _multi_row_sum(x: np.ndarray) -> np.ndarray:
    """torch's ``multi_row_sum`` over the rows of (size, w): sums of 2**p rows, sums of 2**p of
    those, sums of 2**p of those, then a running sum, p = max(4, ceil(log2 size) // 4)."""
    size, w = x.shape
    power = max(4, (1 if size <= 2 else (size - 1).bit_length()) // 4)
    step = 1 << power
    n0 = size // step
    level0 = _seqsum(x[:n0 * step].reshape(n0, step, w), 1)
    n1 = n0 // step
    level1 = _seqsum(level0[:n1 * step].reshape(n1, step, w), 1)
    n2 = n1 // step
    level2 = _seqsum(level1[:n2 * step].reshape(n2, step, w), 1)
    acc = _seqsum(x[n0 * step:], 0) + _seqsum(level0[n1 * step:], 0)
    return (acc + _seqsum(level1[n2 * step:], 0)) + _seqsum(level2, 0)


def _row_sum(x: np.ndarray) -> np.ndarray:
    """torch's ``row_sum``: (size, w) -> (w,), four interleaved partial sums then their total."""
    quarter = x.shape[0] // 4
    partial = _multi_row_sum(x[:quarter * 4].reshape(quarter, 4 * x.shape[1])).reshape(4, -1)
    first = partial[0]
    for row in x[quarter * 4:]:
        first = first + row
    return ((first + partial[1]) + partial[2]) + partial[3]


def torch_mean(x: np.ndarray, lanes: int = 8) -> np.float32:
    """``torch.mean`` of a contiguous float32 vector on CPU with one thread, bit for bit:
    torch's cascade sum (SumKernel.cpp) over ``lanes``-wide vectors, then / n."""
    n = x.size
    if n < lanes:
        total = _row_sum(x.reshape(n, 1))[0]
    else:
        nvec = n // lanes
        total = F32(0)
        for v in x[nvec * lanes:]:
            total = F32(total + v)
        for v in _row_sum(x[:nvec * lanes].reshape(nvec, lanes)):
            total = F32(total + v)
    return F32(F32(total) / F32(n))


# -- the formats ------------------------------------------------------------------------------


class _BitsAndBytes4(QuantFormat):
    """Shared codec of NF4 and FP4; subclasses set the codebook ``code`` (code order)."""

    code: ClassVar[np.ndarray]
    _bounds: ClassVar[np.ndarray]
    _order: ClassVar[np.ndarray]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Bucket edges between neighbouring values of the sorted codebook, and the code of
        # each bucket (stable sort, as torch.argsort orders FP4's two zeros: code 0, then 8).
        cls._order = np.argsort(cls.code, kind="stable").astype(np.uint8)
        ordered = cls.code[cls._order]
        cls._bounds = (ordered[:-1] + ordered[1:]) / F32(2)

    def __init__(self, block_size: int = 64, double_quant: bool = False):
        if not isinstance(block_size, (int, np.integer)) or isinstance(block_size, bool) or block_size not in BLOCK_SIZES:
            raise QuantFormatError(f"{self.name}: block_size must be one of {BLOCK_SIZES}, got {block_size!r}")
        if not isinstance(double_quant, (bool, np.bool_)):
            raise QuantFormatError(f"{self.name}: double_quant must be True or False, got {double_quant!r}")
        self.block_size = int(block_size)
        self.double_quant = bool(double_quant)

    def options(self) -> dict[str, Any]:
        return {"block_size": self.block_size, "double_quant": self.double_quant}

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Any shape but 0-d: the values are blocked after flattening, the last block may be short."""
        check_dims(self.name, shape)

    def encode(self, scaled: np.ndarray) -> np.ndarray:
        """Codes of values already divided by their absmax (clipped to [-1, 1] here)."""
        scaled = np.clip(scaled, F32(-1), F32(1))
        bucket = np.zeros(scaled.shape, np.uint8)
        for bound in self._bounds:  # bucket = number of bounds strictly below (15 cheap passes
            bucket += scaled > bound  # beat np.searchsorted's per-value binary search ~10x)
        return self._order[bucket]

    def quantize(self, array: np.ndarray) -> Parts:
        x = as_rows(array)
        self.check_shape(x.shape)
        if not np.isfinite(x).all():
            raise QuantFormatError(f"{self.name}: cannot quantize inf or NaN values")
        flat = x.reshape(-1)
        n, bs = flat.size, self.block_size
        nfull, rem = divmod(n, bs)
        absmax = np.empty(nfull + (rem > 0), F32)
        codes = np.empty(n + n % 2, np.uint8)
        step = max(1, CHUNK_VALUES // bs)
        for i in range(0, nfull, step):
            j = min(i + step, nfull)
            blocks = flat[i * bs:j * bs].reshape(-1, bs)
            absmax[i:j] = np.abs(blocks).max(axis=1)
            inv = F32(1) / np.maximum(absmax[i:j], _TINY)
            codes[i * bs:j * bs] = self.encode(blocks * inv[:, None]).reshape(-1)
        if rem:
            tail = flat[nfull * bs:]
            absmax[-1] = max(np.abs(tail).max(), _TINY)  # clamped (and stored so) by bitsandbytes
            codes[nfull * bs:n] = self.encode(tail / absmax[-1])
        if n % 2:
            codes[n] = self.encode(np.zeros(1, F32))[0]
        parts = {"qweight": ((codes[0::2] << np.uint8(4)) | codes[1::2]).astype(np.uint8)}
        if not self.double_quant:
            parts["absmax"] = absmax
            return parts
        offset = torch_mean(absmax) if absmax.size else F32(0)
        parts["absmax"], parts["absmax_scale"] = quantize_dynamic(absmax - offset)
        parts["absmax_offset"] = np.array([offset], F32)
        return parts

    def dequantize_rows(self, parts: Mapping[str, np.ndarray], shape: tuple[int, ...],
                        start: int, stop: int) -> np.ndarray:
        rows, k = matrix_shape(shape)
        start, stop, _ = slice(start, stop).indices(rows)
        stop = max(start, stop)
        out = np.empty((stop - start) * k, F32)
        step = max(self.block_size, CHUNK_VALUES // self.block_size * self.block_size)
        first, last = start * k, stop * k
        for a in range(first, last, step):
            b = min(last, a + step)
            out[a - first:b - first] = self._decode(parts, rows * k, a, b)
        return out.reshape(stop - start, k)

    def _decode(self, parts: Mapping[str, np.ndarray], n: int, a: int, b: int) -> np.ndarray:
        """Flat values [a, b) of n, from the bytes and scales of the blocks they lie in only."""
        bs = self.block_size
        b0, b1 = a // bs, -(-b // bs)
        e0, e1 = b0 * bs, min(b1 * bs, n)
        packed = parts["qweight"][e0 // 2:(e1 + 1) // 2]  # e0 is even: blocks start on a byte
        nibbles = np.zeros((b1 - b0) * bs, np.uint8)  # a short last block is padded with code 0
        nibbles[0:2 * packed.size:2] = packed >> np.uint8(4)
        nibbles[1:2 * packed.size:2] = packed & np.uint8(0x0F)
        values = self.code[nibbles].reshape(b1 - b0, bs) * self._absmax(parts, b0, b1)[:, None]
        return values.reshape(-1)[a - e0:b - e0]

    def _absmax(self, parts: Mapping[str, np.ndarray], b0: int, b1: int) -> np.ndarray:
        """float32 absmax of blocks b0:b1 (decoding the 8-bit ones as bitsandbytes does)."""
        if not self.double_quant:
            return parts["absmax"][b0:b1]
        scale = parts["absmax_scale"][np.arange(b0, b1) // NESTED_BLOCK]
        return DYNAMIC_MAP[parts["absmax"][b0:b1]] * scale + parts["absmax_offset"][0]

    def part_specs(self, shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        n = math.prod(shape)
        nblocks = -(-n // self.block_size)
        specs = {"qweight": (((n + 1) // 2,), np.dtype(np.uint8))}
        if not self.double_quant:
            specs["absmax"] = ((nblocks,), np.dtype(F32))
            return specs
        specs["absmax"] = ((nblocks,), np.dtype(np.uint8))
        specs["absmax_scale"] = ((-(-nblocks // NESTED_BLOCK),), np.dtype(F32))
        specs["absmax_offset"] = ((1,), np.dtype(F32))
        return specs


@register_format
class NF4(_BitsAndBytes4):
    name = "nf4"
    description = "bitsandbytes NF4 (QLoRA NormalFloat) with float32 or double-quantized block absmax"
    code = NF4_CODE


@register_format
class FP4(_BitsAndBytes4):
    name = "fp4"
    description = "bitsandbytes FP4 (its own 1-2-1 float) with float32 or double-quantized block absmax"
    code = FP4_CODE
