"""GGUF K-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (super-blocks of 256 values).

A super-block holds an fp16 scale ``d`` (and for Q2_K, Q4_K, Q5_K an fp16 ``dmin``) and a
small quantized scale per sub-block of 16 or 32 values; a value is
``d * sc * q - dmin * m`` (Q2_K, Q4_K, Q5_K) or ``d * sc * q`` (Q3_K, Q6_K). The byte
layouts are llama.cpp's ``block_q*_K`` structs (ggml-common.h), fields in struct order.

Dequantization equals gguf-py's ``gguf.quants.dequantize`` bit for bit. gguf-py has no
K-quant quantizer, so quantization is llama.cpp's reference ``quantize_row_q*_K_ref``
(what ``llama-quantize`` writes without an importance matrix): per sub-block a scale
search (`make_qkx2_quants`, `make_q3_quants`, `make_qx_quants`), the sub-block scales
quantized against the super-block's largest, then every value re-quantized with the
stored (fp16-rounded) scales. The float32 arithmetic is C's, operation by operation, so
the bytes equal ggml-quants.c compiled without FMA contraction of ``a*b + c``: what
llama.cpp's x86-64 builds do (the file sits in ggml-base, built for baseline x86-64; only
the CPU backend gets -march flags). A build that contracts (e.g. -march=native, or aarch64
compilers by default) rounds some sums differently and then picks other codes in a share
of blocks (on N(0, 1): about 0.01% for Q3_K, 2% Q6_K, 6% Q4_K, 24% Q2_K, 31% Q5_K).

    >>> import numpy as np
    >>> fmt = Q4_K()
    >>> x = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    >>> parts = fmt.quantize(x)
    >>> parts["blocks"].shape
    (4, 144)
    >>> float(np.sqrt(np.mean((fmt.dequantize(parts, x.shape) - x) ** 2))) < 0.1
    True
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from ._gguf_blocks import (F16_MAX, F32, GGUFBlockFormat, first_absmax, get_f16, nearest_clip, nearest_int, put_f16,
                           seqsum)
from ._kquant_search import GROUP_MAX_EPS, make_q3_quants, make_qkx2_quants, make_qx_quants
from .base import register_format

QK_K = 256
_SHIFT2 = np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
_BIT = np.arange(8, dtype=np.uint8).reshape(1, 8, 1)


def _element_major(x: np.ndarray, sub: int) -> np.ndarray:
    """(n, 256) super-blocks -> (sub, n * 256 // sub): element i of every sub-block in row i."""
    return np.ascontiguousarray(x.reshape(-1, sub).T)


def _block_major(q: np.ndarray, n: int) -> np.ndarray:
    """Inverse of `_element_major` for codes: (sub, m) -> (n, 256) uint8."""
    return q.T.reshape(n, QK_K).astype(np.uint8)


def _positive_max(v: np.ndarray) -> np.ndarray:
    """C's ``m = 0; if (v > m) m = v`` over axis 1: the largest value if positive, else +0 (NaN skipped)."""
    top = np.fmax.reduce(v, axis=1)
    return np.where(top > 0, top, F32(0))


def _wrap8(v: np.ndarray) -> np.ndarray:
    """An int as C stores it in a uint8 (low byte)."""
    return (v & 0xFF).astype(np.uint8)


def _requantize(x: np.ndarray, codes: np.ndarray, d: np.ndarray, dm: np.ndarray | None,
                lo: int, hi: int) -> np.ndarray:
    """The final pass: codes ``nearest((x + dm) / d)`` (or ``x / d``) with the stored scales.

    ``x``, ``codes`` are (n, subs, sub); ``d``, ``dm`` (n, subs). Sub-blocks whose stored
    scale is 0 keep the codes of their search, as the C ``if (!d) continue`` does."""
    d = d[..., None]
    num = x if dm is None else x + dm[..., None]
    new = nearest_clip(num / d, lo, hi) - F32(lo)
    return np.where(d != 0, new, codes)


def _pack_2bit(q: np.ndarray) -> np.ndarray:
    """(n, 256) codes 0..3 -> (n, 64): byte 32h + l holds elements 128h + 32k + l at bits 2k."""
    q = q.reshape(-1, 2, 4, 32) << _SHIFT2
    return (q[:, :, 0] | q[:, :, 1] | q[:, :, 2] | q[:, :, 3]).reshape(-1, 64)


def _unpack_2bit(qs: np.ndarray) -> np.ndarray:
    return ((qs.reshape(-1, 2, 1, 32) >> _SHIFT2) & np.uint8(3)).reshape(-1, QK_K)


def _pack_nibbles_64(q: np.ndarray) -> np.ndarray:
    """(n, 256) codes 0..15 -> (n, 128): byte 32c + l holds element 64c + l low, 64c + 32 + l high."""
    q = q.reshape(-1, 4, 2, 32)
    return (q[:, :, 0] | (q[:, :, 1] << np.uint8(4))).reshape(-1, 128)


def _unpack_nibbles_64(qs: np.ndarray) -> np.ndarray:
    qs = qs.reshape(-1, 4, 1, 32)
    return np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=2).reshape(-1, QK_K)


def _bit_planes(bits: np.ndarray) -> np.ndarray:
    """(n, 256) bits -> (n, 32): byte l holds element 32b + l at bit b."""
    planes = bits.reshape(-1, 8, 32) << _BIT
    return np.bitwise_or.reduce(planes, axis=1).astype(np.uint8)


def _unbit_planes(mask: np.ndarray) -> np.ndarray:
    return ((mask[:, None, :] >> _BIT) & np.uint8(1)).reshape(-1, QK_K)


@register_format
class Q2_K(GGUFBlockFormat):
    name = "q2_k"
    description = "GGUF Q2_K: 2-bit codes, 4-bit scales and minimums per 16 values"
    gguf_type = GGMLQuantizationType.Q2_K
    block_size = QK_K
    type_size = 16 + 64 + 2 + 2  # scale|min nibbles, 256 2-bit codes, fp16 d, fp16 dmin
    max_abs = F16_MAX * 15 * 3  # d * sc * q (sc <= 15, q <= 3), dmin * m no larger

    def quantize_blocks(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        xt = _element_major(x, 16)
        codes, scales, mins = make_qkx2_quants(xt, np.abs(xt), 3, -0.5, 0.1, 15, True)
        scales, mins = scales.reshape(n, 16), mins.reshape(n, 16)
        max_scale, max_min = _positive_max(scales), _positive_max(mins)
        has_scale, has_min = (max_scale > 0)[:, None], (max_min > 0)[:, None]
        low = np.where(has_scale, nearest_int(F32(15) / max_scale[:, None] * scales), 0)
        high = np.where(has_min, nearest_int(F32(15) / max_min[:, None] * mins), 0)
        packed = _wrap8(low) | _wrap8(high << 4)
        out = np.empty((n, self.type_size), np.uint8)
        out[:, :16] = packed
        d = put_f16(out, 80, np.where(max_scale > 0, max_scale / F32(15), F32(0)))
        dmin = put_f16(out, 82, np.where(max_min > 0, max_min / F32(15), F32(0)))
        q = _requantize(x.reshape(n, 16, 16), _block_major(codes, n).reshape(n, 16, 16),
                        d * (packed & np.uint8(0x0F)), dmin * (packed >> np.uint8(4)), 0, 3)
        out[:, 16:80] = _pack_2bit(q.reshape(n, QK_K).astype(np.uint8))
        return out

    def dequantize_blocks(self, blocks: np.ndarray) -> np.ndarray:
        n = blocks.shape[0]
        scales = blocks[:, :16]
        dl = (get_f16(blocks, 80) * (scales & np.uint8(0x0F)).astype(F32))[..., None]
        ml = (get_f16(blocks, 82) * (scales >> np.uint8(4)).astype(F32))[..., None]
        q = _unpack_2bit(blocks[:, 16:80]).reshape(n, 16, 16).astype(F32)
        return (dl * q - ml).reshape(n, QK_K)


def _q3_scales(packed: np.ndarray) -> np.ndarray:
    """12 bytes -> 16 six-bit scales (0..63): low nibbles in bytes 0..7, high pairs in 8..11."""
    low = np.concatenate([packed[:, :8] & np.uint8(0x0F), packed[:, :8] >> np.uint8(4)], axis=1)
    high = (packed[:, None, 8:12] >> _SHIFT2[0]) & np.uint8(3)
    return low | (high.reshape(-1, 16) << np.uint8(4))


@register_format
class Q3_K(GGUFBlockFormat):
    name = "q3_k"
    description = "GGUF Q3_K: 3-bit codes, 6-bit scales per 16 values"
    gguf_type = GGMLQuantizationType.Q3_K
    block_size = QK_K
    type_size = 32 + 64 + 12 + 2  # high-bit mask, 256 2-bit low codes, 16 6-bit scales, fp16 d
    max_abs = F16_MAX * 32 * 4  # d * (sc - 32) * (q - 4)

    def quantize_blocks(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        codes, scales = make_q3_quants(_element_major(x, 16), 4)
        scales = scales.reshape(n, 16)
        max_scale = first_absmax(scales, axis=1)
        has = (max_scale != 0)[:, None]
        inv = F32(-32) / np.where(has[:, 0], max_scale, F32(1))
        l8 = ((nearest_int(inv[:, None] * scales) + 128) & 0xFF) - 128  # C stores it in an int8_t
        level = np.where(has, np.clip(l8, -32, 31) + 32, 0).astype(np.uint8)
        out = np.zeros((n, self.type_size), np.uint8)
        out[:, 96:104] = (level[:, :8] & np.uint8(0x0F)) | ((level[:, 8:] & np.uint8(0x0F)) << np.uint8(4))
        high = (level >> np.uint8(4)).reshape(n, 4, 4) << _SHIFT2[0]
        out[:, 104:108] = high[:, 0] | high[:, 1] | high[:, 2] | high[:, 3]
        d = put_f16(out, 108, np.where(has[:, 0], F32(1) / inv, F32(0)))
        sc = np.where(has, level.astype(F32) - F32(32), F32(-32))  # zero bytes decode as -32
        q = _requantize(x.reshape(n, 16, 16), _block_major(codes, n).reshape(n, 16, 16), d * sc, None,
                        -4, 3).reshape(n, QK_K).astype(np.uint8)
        over = q > 3
        out[:, :32] = _bit_planes(over.astype(np.uint8))
        out[:, 32:96] = _pack_2bit(np.where(over, q - np.uint8(4), q))
        return out

    def dequantize_blocks(self, blocks: np.ndarray) -> np.ndarray:
        n = blocks.shape[0]
        sc = (_q3_scales(blocks[:, 96:108]).astype(np.int8) - np.int8(32)).astype(F32)
        dl = (get_f16(blocks, 108) * sc)[..., None]
        q = _unpack_2bit(blocks[:, 32:96]).astype(np.int8) - ((_unbit_planes(blocks[:, :32]) ^ 1) << 2).astype(np.int8)
        return (dl * q.reshape(n, 16, 16).astype(F32)).reshape(n, QK_K)


def _pack_scale_min_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins -> 12 bytes, the inverse of llama.cpp's ``get_scale_min_k4``.

    Bytes 0..3: scales 0..3 with the top bits of scales 4..7 in bits 6-7; bytes 4..7 the
    same for mins; bytes 8..11: the low nibbles of scale and min 4..7."""
    top = np.uint8(6)
    return np.concatenate([ls[:, :4] | ((ls[:, 4:] >> np.uint8(4)) << top),
                           lm[:, :4] | ((lm[:, 4:] >> np.uint8(4)) << top),
                           (ls[:, 4:] & np.uint8(0x0F)) | ((lm[:, 4:] & np.uint8(0x0F)) << np.uint8(4))], axis=1)


def _unpack_scale_min_k4(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d, m, low = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    top = np.uint8(6)
    sc = np.concatenate([d & np.uint8(63), (low & np.uint8(0x0F)) | ((d >> top) << np.uint8(4))], axis=1)
    mn = np.concatenate([m & np.uint8(63), (low >> np.uint8(4)) | ((m >> top) << np.uint8(4))], axis=1)
    return sc, mn


class _ScaleMinK(GGUFBlockFormat):
    """Q4_K and Q5_K: codes 0..nmax per 32 values with 6-bit scales and mins (``block_q4_K``)."""

    nmax: int
    rmin: float
    nstep: int

    def _quantize_codes(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Fills d, dmin and the 12 scale bytes of ``out``; returns the (n, 256) codes."""
        n = x.shape[0]
        xt = _element_major(x, 32)
        av_x = np.sqrt(seqsum(xt * xt) / F32(32))
        codes, scales, mins = make_qkx2_quants(xt, av_x + np.abs(xt), self.nmax, self.rmin, 0.1, self.nstep, False)
        scales, mins = scales.reshape(n, 8), mins.reshape(n, 8)
        max_scale, max_min = _positive_max(scales), _positive_max(mins)
        inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))[:, None]
        inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))[:, None]
        ls = np.minimum(_wrap8(nearest_int(inv_scale * scales)), np.uint8(63))
        lm = np.minimum(_wrap8(nearest_int(inv_min * mins)), np.uint8(63))
        d = put_f16(out, 0, max_scale / F32(63))
        dmin = put_f16(out, 2, max_min / F32(63))
        out[:, 4:16] = _pack_scale_min_k4(ls, lm)
        q = _requantize(x.reshape(n, 8, 32), _block_major(codes, n).reshape(n, 8, 32), d * ls, dmin * lm,
                        0, self.nmax)
        return q.reshape(n, QK_K).astype(np.uint8)

    def _scales_mins(self, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(d * sc, dmin * m) per sub-block, (n, 8, 1) float32, in gguf-py's rounding order."""
        sc, mn = _unpack_scale_min_k4(blocks[:, 4:16])
        return ((get_f16(blocks, 0) * sc.astype(F32))[..., None], (get_f16(blocks, 2) * mn.astype(F32))[..., None])


@register_format
class Q4_K(_ScaleMinK):
    name = "q4_k"
    description = "GGUF Q4_K: 4-bit codes, 6-bit scales and minimums per 32 values"
    gguf_type = GGMLQuantizationType.Q4_K
    block_size = QK_K
    type_size = 2 + 2 + 12 + 128  # fp16 d, fp16 dmin, 8 6-bit scales and mins, 256 nibbles
    max_abs = F16_MAX * 63 * 15  # d * sc * q (sc <= 63, q <= 15), dmin * m no larger
    nmax, rmin, nstep = 15, -1.0, 20

    def quantize_blocks(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], self.type_size), np.uint8)
        out[:, 16:] = _pack_nibbles_64(self._quantize_codes(x, out))
        return out

    def dequantize_blocks(self, blocks: np.ndarray) -> np.ndarray:
        n = blocks.shape[0]
        d, dm = self._scales_mins(blocks)
        q = _unpack_nibbles_64(blocks[:, 16:]).reshape(n, 8, 32).astype(F32)
        return (d * q - dm).reshape(n, QK_K)


@register_format
class Q5_K(_ScaleMinK):
    name = "q5_k"
    description = "GGUF Q5_K: 5-bit codes, 6-bit scales and minimums per 32 values"
    gguf_type = GGMLQuantizationType.Q5_K
    block_size = QK_K
    type_size = 2 + 2 + 12 + 32 + 128  # fp16 d, fp16 dmin, scales and mins, high bits, 256 nibbles
    max_abs = F16_MAX * 63 * 31  # d * sc * q (sc <= 63, q <= 31), dmin * m no larger
    nmax, rmin, nstep = 31, -0.5, 15

    def quantize_blocks(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], self.type_size), np.uint8)
        q = self._quantize_codes(x, out)
        out[:, 16:48] = _bit_planes(q >> np.uint8(4))
        out[:, 48:] = _pack_nibbles_64(q & np.uint8(0x0F))
        return out

    def dequantize_blocks(self, blocks: np.ndarray) -> np.ndarray:
        n = blocks.shape[0]
        d, dm = self._scales_mins(blocks)
        q = _unpack_nibbles_64(blocks[:, 48:]) | (_unbit_planes(blocks[:, 16:48]) << np.uint8(4))
        return (d * q.reshape(n, 8, 32).astype(F32) - dm).reshape(n, QK_K)


@register_format
class Q6_K(GGUFBlockFormat):
    name = "q6_k"
    description = "GGUF Q6_K: 6-bit codes, int8 scales per 16 values"
    gguf_type = GGMLQuantizationType.Q6_K
    block_size = QK_K
    type_size = 128 + 64 + 16 + 2  # low nibbles, high 2-bit pairs, 16 int8 scales, fp16 d
    max_abs = F16_MAX * 128 * 32  # d * sc * (q - 32), sc int8

    def quantize_blocks(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        codes, scales = make_qx_quants(_element_major(x, 16), 32)
        scales = scales.reshape(n, 16)
        max_scale = first_absmax(scales, axis=1)
        live = np.abs(max_scale) >= GROUP_MAX_EPS  # else C zeroes the whole block
        inv = F32(-128) / np.where(live, max_scale, F32(1))
        sc = ((np.minimum(nearest_int(inv[:, None] * scales), 127) + 128) & 0xFF) - 128  # into an int8_t
        out = np.empty((n, self.type_size), np.uint8)
        out[:, 192:208] = sc.astype(np.int8).view(np.uint8)
        d = put_f16(out, 208, F32(1) / inv)
        q = _requantize(x.reshape(n, 16, 16), _block_major(codes, n).reshape(n, 16, 16), d * sc.astype(F32),
                        None, -32, 31).reshape(n, 2, 4, 32).astype(np.uint8)
        low, high = q & np.uint8(0x0F), (q >> np.uint8(4)) << _SHIFT2
        out[:, :128] = np.concatenate([low[:, :, 0] | (low[:, :, 2] << np.uint8(4)),
                                       low[:, :, 1] | (low[:, :, 3] << np.uint8(4))], axis=2).reshape(n, 128)
        out[:, 128:192] = (high[:, :, 0] | high[:, :, 1] | high[:, :, 2] | high[:, :, 3]).reshape(n, 64)
        out[~live] = 0
        return out

    def dequantize_blocks(self, blocks: np.ndarray) -> np.ndarray:
        n = blocks.shape[0]
        d = (get_f16(blocks, 208) * blocks[:, 192:208].view(np.int8).astype(F32))[..., None]
        ql = blocks[:, :128].reshape(n, 2, 1, 64) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
        ql = (ql & np.uint8(0x0F)).reshape(n, 2, 4, 32)
        qh = (blocks[:, 128:192].reshape(n, 2, 1, 32) >> _SHIFT2) & np.uint8(3)
        q = (ql | (qh << np.uint8(4))).astype(np.int8) - np.int8(32)
        return (d * q.reshape(n, 16, 16).astype(F32)).reshape(n, QK_K)
