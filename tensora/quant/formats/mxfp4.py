"""OCP MXFP4: E2M1 values in blocks of 32 sharing one E8M0 (power of two) scale.

The bytes are GGUF's MXFP4 block (``block_mxfp4`` in llama.cpp): the E8M0 exponent byte
``e`` then 16 bytes of 4-bit E2M1 codes, elements 0..15 in the low nibbles and 16..31 in
the high ones. Element j is ``e2m1(q_j) * 2**(e - 127)``.

The scale follows the OCP Microscaling spec (v1.0, section 6.3): the shared exponent is
``floor(log2(amax)) - 2`` (2 = emax of E2M1), so the block's largest value lands in
[4, 8) before E2M1 saturates it to at most 6. Quantization matches gguf-py's
``MXFP4.quantize_blocks`` (and llama.cpp's ``quantize_row_mxfp4_ref``) byte for byte:
``floor(log2(amax))`` is evaluated in float32 as they do, and each value takes the
nearest E2M1 code with ties going to the smaller magnitude (their first-minimum search
over the code table) - not ml_dtypes' round-half-to-even, which differs at 0.75, 1.75
and 3.5 - and 0 is always code 0, never the -0 code 8.

One deliberate difference: a block whose amax is below 2**-125 (all values subnormal or
nearly so) would need an exponent below E8M0's range; gguf-py casts the negative number
to uint8 (wrapping it to a huge scale that zeroes the block), we clamp it to ``e = 0``.

    >>> import numpy as np
    >>> fmt = MXFP4()
    >>> x = np.array([[0.5, -1.0, 3.0, 6.0] * 8], dtype=np.float32)
    >>> fmt.dequantize(fmt.quantize(x), x.shape)[0, :4].tolist()
    [0.5, -1.0, 3.0, 6.0]
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from ._gguf_blocks import F32, GGUFBlockFormat, low_high_nibbles, pack_low_high
from .base import register_format
from .fp4_e2m1 import E2M1_VALUES

#: E2M1 code values doubled, as llama.cpp's ``kvalues_mxfp4`` (0, 1, 2, 3, 4, 6, 8, 12, ...):
#: with the "half" scale 2**(e - 128) the products are exact. ``+ 0.0`` turns code 8's -0
#: into +0, as the C table's integer 0 gives.
_KVALUES = E2M1_VALUES * F32(2) + F32(0)
#: Magnitude code m (0..7) is reached once ceil(2v) > _HALF_STEPS[m - 1], v in doubled units:
#: twice the midpoints between neighbouring magnitudes (0.5, 1.5, 2.5, 3.5, 5, 7, 10), so a
#: value exactly on a midpoint stays at the smaller magnitude.
_HALF_STEPS = np.array([1, 3, 5, 7, 10, 14, 20])
_MAGNITUDE_OF_CEIL = np.searchsorted(_HALF_STEPS, np.arange(22), side="left").astype(np.uint8)
_E2M1_EMAX = 2
_E8M0_BIAS = 127


def e8m0_half(e: np.ndarray) -> np.ndarray:
    """2**(e - 128) as float32, built from bits as ggml's ``ggml_e8m0_to_fp32_half`` (subnormal for e < 2)."""
    e = e.astype(np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - np.uint32(1)) << np.uint32(23))
    return bits.view(F32)


@register_format
class MXFP4(GGUFBlockFormat):
    name = "mxfp4"
    description = "OCP MXFP4: E2M1 values, one E8M0 power-of-two scale per 32 (GGUF MXFP4 bytes)"
    gguf_type = GGMLQuantizationType.MXFP4
    block_size = 32
    type_size = 1 + 16  # E8M0 exponent, 32 nibbles

    def quantize_blocks(self, x: np.ndarray) -> np.ndarray:
        amax = np.abs(x).max(axis=1)
        shared = np.floor(np.log2(amax)) - F32(_E2M1_EMAX) + F32(_E8M0_BIAS)
        e = np.where(amax > 0, np.maximum(shared, F32(0)), F32(0)).astype(np.uint8)
        # |x| / d is exact (d is a power of two) and lies in [0, 16): doubled E2M1 units,
        # doubled once more so every midpoint is an integer that ceil() compares exactly.
        quadrupled = np.abs(x) / e8m0_half(e)[:, None] * F32(2)
        magnitude = _MAGNITUDE_OF_CEIL[np.minimum(np.ceil(quadrupled), F32(21)).astype(np.intp)]
        q = magnitude + np.where((x < 0) & (magnitude > 0), np.uint8(8), np.uint8(0))
        out = np.empty((x.shape[0], self.type_size), np.uint8)
        out[:, 0] = e
        out[:, 1:] = pack_low_high(q)
        return out

    def dequantize_blocks(self, blocks: np.ndarray) -> np.ndarray:
        return e8m0_half(blocks[:, :1]) * _KVALUES[low_high_nibbles(blocks[:, 1:])]
