"""What the GGUF block formats share: the one-part layout, fp16 fields, llama.cpp's rounding.

Every GGUF type stores a (rows, K) matrix as ONE uint8 part "blocks" of shape
``(rows, K // block_size * type_size)``: the very bytes llama.cpp writes, so a tensor read
from a GGUF file is wrapped without a copy. A subclass names its ``gguf_type`` and spells
``type_size`` as the sum of its fields, and implements two block codecs on (n, ...) arrays
of whole blocks; this base class cuts rows into bounded chunks around them.

The helpers reproduce llama.cpp's C arithmetic exactly (float32 everywhere, sums in C's
left-to-right order, ``nearest_int``'s magic-number rounding), which is what makes the
quantized bytes equal to the reference quantizers' and not merely close.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from .base import Parts, QuantFormat, QuantFormatError, as_rows, matrix_shape

F32 = np.float32

#: Blocks handled per chunk: bounds the temporaries of the vectorised codecs (a few MiB).
CHUNK_VALUES = 1 << 17
#: Largest finite float16: the GGUF block scales (d, dmin, m) are float16.
F16_MAX = float(np.finfo(np.float16).max)
#: Chunks whose largest magnitude is at most this cannot overflow a float16 scale (every
#: scale field is at most about the block's absmax), so only larger ones are decoded and checked.
_OVERFLOW_CHECK_FROM = 256.0


class GGUFBlockFormat(QuantFormat):
    """A GGUF block type: one uint8 part "blocks" holding llama.cpp's bytes row by row."""

    gguf_type: ClassVar[GGMLQuantizationType]
    #: Bytes per block (the C struct's size), written as a sum of its fields.
    type_size: ClassVar[int]
    #: Largest magnitude a block can represent (float16 scales times the largest codes); larger
    #: inputs cannot be stored, and are refused rather than written as inf, NaN or garbage.
    max_abs: ClassVar[float] = float("inf")

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "gguf_type" in cls.__dict__ and GGML_QUANT_SIZES[cls.gguf_type] != (cls.block_size, cls.type_size):
            raise TypeError(f"{cls.__name__}: layout ({cls.block_size}, {cls.type_size}) is not gguf's "
                            f"{GGML_QUANT_SIZES[cls.gguf_type]}")

    # -- what a block type provides -------------------------------------------------------

    def quantize_blocks(self, x: np.ndarray) -> np.ndarray:
        """(n, block_size) float32 -> (n, type_size) uint8."""
        raise NotImplementedError

    def dequantize_blocks(self, blocks: np.ndarray) -> np.ndarray:
        """(n, type_size) uint8 -> (n, block_size) float32."""
        raise NotImplementedError

    # -- the QuantFormat contract ---------------------------------------------------------

    def part_specs(self, shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        rows, k = matrix_shape(shape)
        return {"blocks": ((rows, k // self.block_size * self.type_size), np.dtype(np.uint8))}

    def quantize(self, array: np.ndarray) -> Parts:
        x = as_rows(array)
        self.check_shape(x.shape)
        amax = float(np.abs(x).max()) if x.size else 0.0  # NaN if any value is NaN
        if not np.isfinite(amax):
            raise QuantFormatError(f"{self.name}: cannot quantize inf or NaN values")
        if amax > self.max_abs:
            raise QuantFormatError(f"{self.name}: values up to {amax:.6g} are too large for its float16 scales "
                                   f"(largest storable magnitude {self.max_abs:.6g}); scale the tensor down or "
                                   "use a format with float32 scales (int8, fp8_e4m3, nf4)")
        rows, k = x.shape
        blocks = x.reshape(-1, self.block_size)
        out = np.empty((blocks.shape[0], self.type_size), np.uint8)
        step = max(1, CHUNK_VALUES // self.block_size)
        with np.errstate(all="ignore"):  # masked lanes of degenerate blocks divide by zero
            for i in range(0, blocks.shape[0], step):
                out[i:i + step] = self.quantize_blocks(blocks[i:i + step])
                if amax > _OVERFLOW_CHECK_FROM and not np.isfinite(self.dequantize_blocks(out[i:i + step])).all():
                    big = float(np.abs(blocks[i:i + step]).max())
                    raise QuantFormatError(f"{self.name}: values up to {big:.6g} overflow its float16 block scales "
                                           "(they would decode to inf or NaN); scale the tensor down or use a "
                                           "format with float32 scales (int8, fp8_e4m3, nf4)")
        return {"blocks": out.reshape(rows, k // self.block_size * self.type_size)}

    def dequantize_rows(self, parts: Mapping[str, np.ndarray], shape: tuple[int, ...],
                        start: int, stop: int) -> np.ndarray:
        rows, k = matrix_shape(shape)
        data = parts["blocks"]
        if data.dtype != np.uint8 or data.shape != (rows, k // self.block_size * self.type_size):
            raise QuantFormatError(f"{self.name}: 'blocks' is {data.dtype}{tuple(data.shape)}, "
                                   f"not the layout of shape {tuple(shape)}")
        start, stop, _ = slice(start, stop).indices(rows)
        blocks = data[start:stop].reshape(-1, self.type_size)  # only these rows' bytes
        out = np.empty((blocks.shape[0], self.block_size), np.float32)
        step = max(1, CHUNK_VALUES // self.block_size)
        for i in range(0, blocks.shape[0], step):
            out[i:i + step] = self.dequantize_blocks(np.ascontiguousarray(blocks[i:i + step]))
        return out.reshape(max(stop - start, 0), k)


# -- fields -------------------------------------------------------------------------------


def get_f16(blocks: np.ndarray, offset: int) -> np.ndarray:
    """The fp16 field at byte ``offset`` of each block, as float32 (n, 1)."""
    return np.ascontiguousarray(blocks[:, offset:offset + 2]).view(np.float16).astype(F32)


def put_f16(out: np.ndarray, offset: int, value: np.ndarray) -> np.ndarray:
    """Store float32 ``value`` (n,) as fp16 at byte ``offset``; returns it rounded back to float32."""
    half = np.asarray(value, F32).astype(np.float16).reshape(-1, 1)
    out[:, offset:offset + 2] = half.view(np.uint8)
    return half.astype(F32)


def low_high_nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, m) bytes -> (n, 2m): all low nibbles, then all high nibbles (GGUF's element order)."""
    return np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=-1)


def pack_low_high(q: np.ndarray) -> np.ndarray:
    """Inverse of `low_high_nibbles`: (n, 2m) codes 0..15 -> (n, m) bytes."""
    half = q.shape[-1] // 2
    return (q[..., :half] | (q[..., half:] << np.uint8(4))).astype(np.uint8)


# -- llama.cpp's arithmetic ---------------------------------------------------------------


def nearest_int(v: np.ndarray) -> np.ndarray:
    """llama.cpp's ``nearest_int``: add 1.5 * 2**23 and read the mantissa (int32).

    Round-half-to-even for |v| < 2**22; emulated bit for bit beyond (where C returns
    garbage that a clamp then bounds), so even degenerate inputs give C's codes."""
    t = np.asarray(v, F32) + F32(12582912.0)
    i = t.view(np.int32)
    i &= 0x007FFFFF
    i -= 0x00400000
    return i


def nearest_clip(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``MAX(lo, MIN(hi, nearest_int(v)))`` as float32 (the codes enter float sums next)."""
    return np.clip(nearest_int(v), lo, hi).astype(F32)


def seqsum(terms: np.ndarray) -> np.ndarray:
    """Sum over axis 0 strictly left to right, as C's ``s += t[i]`` loop rounds (float32)."""
    total = terms[0].copy()
    for row in terms[1:]:
        total += row
    return total


def first_absmax(x: np.ndarray, axis: int) -> np.ndarray:
    """The signed value of largest magnitude along ``axis``, as C's ``if (fabsf(v) > amax)`` loop
    from ``amax = 0`` picks it: the first on ties, never a NaN (numpy's argmax would), 0 if all are 0."""
    mag = np.abs(x)
    mag[np.isnan(mag)] = -1
    idx = np.expand_dims(mag.argmax(axis=axis), axis)
    picked = np.take_along_axis(x, idx, axis=axis).squeeze(axis)
    return np.where(np.take_along_axis(mag, idx, axis=axis).squeeze(axis) > 0, picked, x.dtype.type(0))
