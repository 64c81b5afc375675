"""GGUF's first block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (32 values per block).

Each block holds an fp16 scale ``d`` (plus an fp16 minimum ``m`` for the _1 types) and
one small integer code per value; element j of a block is ``d * (q_j - offset)`` or
``d * q_j + m``. The 4-bit codes sit two to a byte, elements 0..15 in the low nibbles and
16..31 in the high ones; Q5's fifth bits are one little-endian uint32 ``qh``.

Quantization reproduces gguf-py's ``gguf.quants`` (itself matching llama.cpp's
``quantize_row_q*_ref``) byte for byte: the same float32 operations in the same order,
truncation after adding 0.5 (or 8.5, 16.5), round-half-away for Q8_0.

    >>> import numpy as np
    >>> fmt = Q8_0()
    >>> blocks = fmt.quantize(np.linspace(-1, 1, 32, dtype=np.float32).reshape(1, 32))["blocks"]
    >>> blocks.shape, blocks.dtype
    ((1, 34), dtype('uint8'))
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from ._gguf_blocks import F16_MAX, F32, GGUFBlockFormat, get_f16, low_high_nibbles, pack_low_high, put_f16
from .base import register_format

_FIVE_BIT_OFFSET = 16


def _inverse(d: np.ndarray) -> np.ndarray:
    """``1/d`` with 0 for a zero scale (an all-equal block), as gguf-py and C compute it."""
    return np.where(d == 0, F32(0), F32(1) / d)


def _absmax_scale(x: np.ndarray, levels: int) -> np.ndarray:
    """d = (signed value of largest magnitude, the first on ties) / -levels: it maps to code 0.

    gguf-py's argmax pick: an all-zero block whose first value is -0.0 gets d = +0.0 here,
    where C (which starts from +0) writes -0.0; we follow gguf-py."""
    first = np.abs(x).argmax(axis=1)[:, None]
    return np.take_along_axis(x, first, axis=1)[:, 0] / F32(-levels)


def _truncate(v: np.ndarray, top: int) -> np.ndarray:
    """``(uint8) trunc(v)`` clipped to 0..top (v >= 0 up to rounding)."""
    return np.trunc(v).astype(np.uint8).clip(0, top)


def _split_fifth_bit(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """5-bit codes (n, 32) -> (qh: 4 bytes of high bits, little-endian; qs: 16 nibble pairs)."""
    qh = np.packbits(q >> np.uint8(4), axis=-1, bitorder="little")
    return qh, pack_low_high(q & np.uint8(0x0F))


def _join_fifth_bit(qh: np.ndarray, qs: np.ndarray) -> np.ndarray:
    high = np.unpackbits(qh, axis=-1, bitorder="little")
    return low_high_nibbles(qs) | (high << np.uint8(4))


@register_format
class Q4_0(GGUFBlockFormat):
    name = "q4_0"
    description = "GGUF Q4_0: 4-bit codes, one fp16 scale per 32 values"
    gguf_type = GGMLQuantizationType.Q4_0
    block_size = 32
    type_size = 2 + 16  # fp16 d, 32 nibbles
    max_abs = F16_MAX * 8  # d * (q - 8)

    def quantize_blocks(self, x: np.ndarray) -> np.ndarray:
        d = _absmax_scale(x, 8)
        q = _truncate(x * _inverse(d)[:, None] + F32(8.5), 15)
        out = np.empty((x.shape[0], self.type_size), np.uint8)
        put_f16(out, 0, d)
        out[:, 2:] = pack_low_high(q)
        return out

    def dequantize_blocks(self, blocks: np.ndarray) -> np.ndarray:
        q = low_high_nibbles(blocks[:, 2:]).astype(np.int8) - np.int8(8)
        return get_f16(blocks, 0) * q.astype(F32)


@register_format
class Q4_1(GGUFBlockFormat):
    name = "q4_1"
    description = "GGUF Q4_1: 4-bit codes, fp16 scale and minimum per 32 values"
    gguf_type = GGMLQuantizationType.Q4_1
    block_size = 32
    type_size = 2 + 2 + 16  # fp16 d, fp16 m, 32 nibbles
    max_abs = F16_MAX * 16  # d * q + m, q <= 15

    def quantize_blocks(self, x: np.ndarray) -> np.ndarray:
        lo, hi = x.min(axis=1), x.max(axis=1)
        d = (hi - lo) / F32(15)
        q = _truncate((x - lo[:, None]) * _inverse(d)[:, None] + F32(0.5), 15)
        out = np.empty((x.shape[0], self.type_size), np.uint8)
        put_f16(out, 0, d)
        put_f16(out, 2, lo)
        out[:, 4:] = pack_low_high(q)
        return out

    def dequantize_blocks(self, blocks: np.ndarray) -> np.ndarray:
        q = low_high_nibbles(blocks[:, 4:]).astype(F32)
        return get_f16(blocks, 0) * q + get_f16(blocks, 2)


@register_format
class Q5_0(GGUFBlockFormat):
    name = "q5_0"
    description = "GGUF Q5_0: 5-bit codes, one fp16 scale per 32 values"
    gguf_type = GGMLQuantizationType.Q5_0
    block_size = 32
    type_size = 2 + 4 + 16  # fp16 d, 32 high bits, 32 nibbles
    max_abs = F16_MAX * 16  # d * (q - 16)

    def quantize_blocks(self, x: np.ndarray) -> np.ndarray:
        d = _absmax_scale(x, _FIVE_BIT_OFFSET)
        q = _truncate(x * _inverse(d)[:, None] + F32(16.5), 31)
        out = np.empty((x.shape[0], self.type_size), np.uint8)
        put_f16(out, 0, d)
        out[:, 2:6], out[:, 6:] = _split_fifth_bit(q)
        return out

    def dequantize_blocks(self, blocks: np.ndarray) -> np.ndarray:
        q = _join_fifth_bit(blocks[:, 2:6], blocks[:, 6:]).astype(np.int8) - np.int8(_FIVE_BIT_OFFSET)
        return get_f16(blocks, 0) * q.astype(F32)


@register_format
class Q5_1(GGUFBlockFormat):
    name = "q5_1"
    description = "GGUF Q5_1: 5-bit codes, fp16 scale and minimum per 32 values"
    gguf_type = GGMLQuantizationType.Q5_1
    block_size = 32
    type_size = 2 + 2 + 4 + 16  # fp16 d, fp16 m, 32 high bits, 32 nibbles
    max_abs = F16_MAX * 32  # d * q + m, q <= 31

    def quantize_blocks(self, x: np.ndarray) -> np.ndarray:
        lo, hi = x.min(axis=1), x.max(axis=1)
        d = (hi - lo) / F32(31)
        q = _truncate((x - lo[:, None]) * _inverse(d)[:, None] + F32(0.5), 31)
        out = np.empty((x.shape[0], self.type_size), np.uint8)
        put_f16(out, 0, d)
        put_f16(out, 2, lo)
        out[:, 4:8], out[:, 8:] = _split_fifth_bit(q)
        return out

    def dequantize_blocks(self, blocks: np.ndarray) -> np.ndarray:
        q = _join_fifth_bit(blocks[:, 4:8], blocks[:, 8:]).astype(F32)
        return get_f16(blocks, 0) * q + get_f16(blocks, 2)


@register_format
class Q8_0(GGUFBlockFormat):
    name = "q8_0"
    description = "GGUF Q8_0: int8 codes, one fp16 scale per 32 values"
    gguf_type = GGMLQuantizationType.Q8_0
    block_size = 32
    type_size = 2 + 32  # fp16 d, 32 int8
    max_abs = F16_MAX * 128  # d * q, q int8

    def quantize_blocks(self, x: np.ndarray) -> np.ndarray:
        d = np.abs(x).max(axis=1) / F32(127)
        v = x * _inverse(d)[:, None]
        # C's roundf (half away from zero), computed exactly: floor(|v|) + (frac >= 0.5).
        a = np.abs(v)
        whole = np.floor(a)
        q = np.copysign(whole + (a - whole >= F32(0.5)), v)
        out = np.empty((x.shape[0], self.type_size), np.uint8)
        put_f16(out, 0, d)
        out[:, 2:] = q.astype(np.int8).view(np.uint8)
        return out

    def dequantize_blocks(self, blocks: np.ndarray) -> np.ndarray:
        return blocks[:, 2:].view(np.int8).astype(F32) * get_f16(blocks, 0)
