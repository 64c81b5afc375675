"""NVIDIA NVFP4: E2M1 values in blocks of 16, an FP8 (E4M3) scale per block, an FP32 scale per tensor.

The two-level scheme of NVIDIA's Blackwell NVFP4 (as TensorRT Model Optimizer and
Transformer Engine quantize it):

- global_scale = amax(tensor) / (448 * 6)  (float32, 1 for an all-zero tensor), so the
  largest block scale lands at E4M3's maximum, 448;
- block scale  = e4m3(amax(block) / 6 / global_scale), rounded to nearest even by
  ml_dtypes' ``float8_e4m3fn`` (clipped to 448 first);
- code         = e2m1(w / (float(block scale) * global_scale)), round to nearest even,
  saturating at 6 (tensora/quant/formats/fp4_e2m1.py); blocks whose scale rounds to 0
  get code 0;
- value        = e2m1(code) * (float(block scale) * global_scale): the factor the
  codes were divided by, rounded once to float32 (as the native decoder computes it).

Parts: "qweight" uint8 (rows, K // 2), element 2i in the low nibble and 2i+1 in the high
one (the order NVIDIA's packed FP4 tensors use); "scale" uint8 (rows, K // 16), the
E4M3 bit patterns; "global_scale" float32 (1,).

GGUF's NVFP4 (``gguf.quants.NVFP4``, llama.cpp's ``block_nvfp4``) stores different bytes
for the same element type, and is not implemented here:

- it has no per-tensor FP32 scale: a value is ``e2m1(code) * ue4m3(scale)``, so the
  block scales alone must cover the tensor's range (E4M3 spans 2**-9 .. 448);
- its scale byte is *unsigned* E4M3 (bias 7, no sign bit; 0x7F decodes to 0);
- blocks come in super-blocks of 64 values: 4 scale bytes, then 32 code bytes, and
  within each 16-value block the low nibbles hold elements 0..7 and the high nibbles
  8..15 (GGUF's split order), not adjacent pairs.

Converting ours to GGUF's would mean folding global_scale into every block scale and
re-rounding them to E4M3 (lossy when the tensor's range exceeds E4M3's), then
re-packing the nibbles.

    >>> import numpy as np
    >>> fmt = NVFP4()
    >>> w = np.array([[0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0] * 2], dtype=np.float32)
    >>> parts = fmt.quantize(w)
    >>> parts["scale"].view(E4M3).astype(float).tolist()  # block amax 6 -> 6 / 6 / (6 / 2688)
    [[448.0]]
    >>> bool(np.allclose(fmt.dequantize(parts, w.shape), w, rtol=1e-6))
    True
"""

from __future__ import annotations

from collections.abc import Mapping

import ml_dtypes
import numpy as np

from ._gguf_blocks import CHUNK_VALUES
from .base import Parts, QuantFormat, QuantFormatError, as_rows, matrix_shape, register_format
from .fp4_e2m1 import E2M1_MAX, E2M1_VALUES, e2m1_encode
from .int4 import pack_pairs, unpack_pairs

F32 = np.float32
E4M3 = ml_dtypes.float8_e4m3fn
E4M3_MAX = 448.0
#: E2M1 code values with code 8 ("-0") read as +0.0, as the native decoder's table has it.
_VALUES = E2M1_VALUES + F32(0)


@register_format
class NVFP4(QuantFormat):
    name = "nvfp4"
    description = "NVIDIA NVFP4: E2M1 in blocks of 16, E4M3 block scales, FP32 tensor scale"
    block_size = 16

    def quantize(self, array: np.ndarray) -> Parts:
        x = as_rows(array)
        self.check_shape(x.shape)
        if not np.isfinite(x).all():
            raise QuantFormatError("nvfp4: cannot quantize inf or NaN values")
        rows, k = x.shape
        amax = float(np.abs(x).max()) if x.size else 0.0
        global_scale = np.array([amax / (E4M3_MAX * E2M1_MAX) if amax > 0 else 1.0], F32)
        blocks = x.reshape(-1, self.block_size)
        codes = np.empty(blocks.shape, np.uint8)
        scale_bits = np.empty(blocks.shape[0], np.uint8)
        step = max(1, CHUNK_VALUES // self.block_size)
        for i in range(0, blocks.shape[0], step):
            codes[i:i + step], scale_bits[i:i + step] = _quantize_blocks(blocks[i:i + step], global_scale[0])
        return {"qweight": pack_pairs(codes).reshape(rows, k // 2),
                "scale": scale_bits.reshape(rows, k // self.block_size),
                "global_scale": global_scale}

    def dequantize_rows(self, parts: Mapping[str, np.ndarray], shape: tuple[int, ...],
                        start: int, stop: int) -> np.ndarray:
        rows, k = matrix_shape(shape)
        start, stop, _ = slice(start, stop).indices(rows)
        stop = max(start, stop)
        out = np.empty((stop - start, k), F32)
        step = max(1, CHUNK_VALUES // max(k, 1))
        for r in range(start, stop, step):
            e = min(stop, r + step)
            values = _VALUES[unpack_pairs(parts["qweight"][r:e])].reshape(e - r, -1, self.block_size)
            values *= (parts["scale"][r:e].view(E4M3).astype(F32) * parts["global_scale"][0])[..., None]
            out[r - start:e - start] = values.reshape(e - r, k)
        return out

    def part_specs(self, shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        rows, k = matrix_shape(shape)
        return {"qweight": ((rows, k // 2), np.dtype(np.uint8)),
                "scale": ((rows, k // self.block_size), np.dtype(np.uint8)),
                "global_scale": ((1,), np.dtype(F32))}


def _quantize_blocks(x: np.ndarray, global_scale: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(E2M1 codes (n, 16), E4M3 scale bits (n,)) of (n, 16) float32 blocks."""
    target = np.abs(x).max(axis=1) / F32(E2M1_MAX) / global_scale
    scale_bits = np.minimum(target, F32(E4M3_MAX)).astype(E4M3).view(np.uint8)
    scale = scale_bits.view(E4M3).astype(F32) * global_scale
    safe = np.where(scale > 0, scale, F32(1))
    codes = e2m1_encode(x / safe[:, None])
    codes[scale == 0] = 0
    return codes, scale_bits
