"""GGUF IQ4_NL: 4-bit codes into a fixed non-uniform table, one fp16 scale per 32 values.

A block is an fp16 scale ``d`` and 16 bytes of codes (elements 0..15 in the low nibbles,
16..31 in the high ones); element j is ``d * KVALUES[q_j]``, the table being llama.cpp's
``kvalues_iq4nl`` (denser near zero, where weights are).

gguf-py dequantizes IQ4_NL but does not quantize it, so quantization follows llama.cpp's
``quantize_iq4_nl`` without an importance matrix (what ``llama-quantize`` writes): weights
``x**2``, a first scale from the largest value, then the best least-squares scale over 15
trial scales ``(itry - 127) / max`` (``ntry = 7``), codes re-picked with the final scale.
Codes are chosen as ``best_index_int8`` does: the upper neighbour from the midpoint up.

    >>> import numpy as np
    >>> fmt = IQ4_NL()
    >>> x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
    >>> float(np.abs(fmt.dequantize(fmt.quantize(x), x.shape) - x).max()) < 0.1
    True
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from ._gguf_blocks import (F16_MAX, F32, GGUFBlockFormat, first_absmax, get_f16, low_high_nibbles, pack_low_high,
                           put_f16, seqsum)
from .base import register_format

#: llama.cpp's ``kvalues_iq4nl``.
KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int8)
_VALUES = KVALUES.astype(F32)
#: ``best_index_int8`` picks code j once 2x >= KVALUES[j-1] + KVALUES[j]; those sums are
#: integers, so floor(2x) decides alone: a table from floor(2x) (clipped) to the code.
_PAIR_SUMS = KVALUES[:-1].astype(np.int32) + KVALUES[1:]
_FLOOR_LO, _FLOOR_HI = int(_PAIR_SUMS[0]) - 1, int(_PAIR_SUMS[-1])
_CODE_OF_FLOOR = np.searchsorted(_PAIR_SUMS, np.arange(_FLOOR_LO, _FLOOR_HI + 1), side="right").astype(np.uint8)
_VALUE_OF_FLOOR = _VALUES[_CODE_OF_FLOOR]
_NTRY = 7
_GROUP_MAX_EPS = F32(1e-15)


def _lookup(table: np.ndarray, v: np.ndarray) -> np.ndarray:
    """table[best_index_int8(v)] for float32 ``v``; NaN gives code 0, as C's false comparisons do."""
    k = np.floor(v * F32(2))
    np.fmax(k, F32(_FLOOR_LO), out=k)  # fmax/fmin, not clip: they replace NaN too
    np.fmin(k, F32(_FLOOR_HI), out=k)
    k -= F32(_FLOOR_LO)
    return table[k.astype(np.intp)]


@register_format
class IQ4_NL(GGUFBlockFormat):
    name = "iq4_nl"
    description = "GGUF IQ4_NL: 4-bit codes into a non-uniform table, fp16 scale per 32 values"
    gguf_type = GGMLQuantizationType.IQ4_NL
    block_size = 32
    type_size = 2 + 16  # fp16 d, 32 nibbles
    max_abs = F16_MAX * 127  # d * KVALUES[q]

    def quantize_blocks(self, x: np.ndarray) -> np.ndarray:
        big = first_absmax(x, axis=1)
        empty = np.abs(big) < _GROUP_MAX_EPS
        big = np.where(empty, F32(1), big)  # keeps the masked lanes finite; their d is 0 below
        xt = np.ascontiguousarray(x.T)  # (32, n): the sums below run over elements in C order
        wt = xt * xt

        def sums(inv_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            q = _lookup(_VALUE_OF_FLOOR, inv_scale * xt)
            wq = wt * q
            return seqsum(wq * xt), seqsum(wq * q)

        sumqx, sumq2 = sums(F32(1) / (-big / F32(KVALUES[0])))
        d = np.where(sumq2 > 0, sumqx / sumq2, F32(0))
        best = d * sumqx
        for itry in range(-_NTRY, _NTRY + 1):
            sumqx, sumq2 = sums(F32(itry + int(KVALUES[0])) / big)
            better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
            d = np.where(better, sumqx / sumq2, d)
            best = np.where(better, d * sumqx, best)
        d = np.where(empty, F32(0), d)
        out = np.empty((x.shape[0], self.type_size), np.uint8)
        put_f16(out, 0, d)
        inv = np.where(d != 0, F32(1) / d, F32(0))
        out[:, 2:] = pack_low_high(_lookup(_CODE_OF_FLOOR, inv[:, None] * x))
        return out

    def dequantize_blocks(self, blocks: np.ndarray) -> np.ndarray:
        return get_f16(blocks, 0) * _VALUES[low_high_nibbles(blocks[:, 2:])]
