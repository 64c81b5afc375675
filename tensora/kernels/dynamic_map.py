"""bitsandbytes' 8-bit dynamic quantization maps and its blockwise CPU quantizer.

One byte per value plus a float32 absmax per block: a value is ``code[q] * absmax``.
The maps are Dettmers' dynamic tree type ("8-Bit Approximations for Parallelism in
Deep Learning"): for each decade 10**-6 .. 10**0 a run of evenly spaced fractions, so
small values keep relative precision that a linear int8 grid would flush to zero.
Two users share it: NF4's double quantization of its absmax values (tensora.quant) and
the 8-bit optimizers' moment buffers (tensora.optim.Adam8bit), which is why it lives
here, below both.

- `SIGNED_MAP` is ``bitsandbytes.functional.create_dynamic_map(signed=True)`` and
  `UNSIGNED_MAP` is ``create_dynamic_map(signed=False)``, bit for bit (Adam8bit keeps
  its first moment with the signed map and its second, never negative, with the
  unsigned one that spends all 8 bits on magnitude, as bitsandbytes' ``Adam8bit`` does).
- `quantize_blockwise` codes as bitsandbytes' CPU ``quantize_blockwise`` does: through
  a 65536-entry table over [-1, 1] instead of an exact nearest search (see `_lut`).

    >>> import numpy as np
    >>> x = np.array([0.5, -0.25, 1e-3, 0.0], np.float32)
    >>> codes, absmax = quantize_blockwise(x, SIGNED_MAP)
    >>> absmax.tolist(), codes.dtype.name
    ([0.5], 'uint8')
    >>> bool(np.abs(dequantize_blockwise(codes, absmax, SIGNED_MAP, x.size) - x).max() < 2e-3)
    True
"""

from __future__ import annotations

import functools

import numpy as np

F32 = np.float32
#: bitsandbytes' block size for 8-bit optimizer state and for nested absmax quantization.
BLOCK = 256
#: bitsandbytes' CPU quantizer cuts [-1, 1] into this many points.
_LUT_SIZE = 65536


def _linspace(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps, dtype=float32)`` bit for bit.

    torch computes ``start + step*i`` for the first half and ``end - step*(steps-1-i)`` for
    the rest, each a fused multiply-add in float32; float64 evaluates those exactly here
    (24-bit step times a small integer, values in [0.1, 1]) before the single rounding."""
    start32, end32 = F32(start), F32(end)
    step = np.float64((end32 - start32) / F32(steps - 1))
    i = np.arange(steps, dtype=np.float64)
    up = np.float64(start32) + step * i
    down = np.float64(end32) - step * (steps - 1 - i)
    return np.where(i < steps // 2, up, down).astype(F32)


def dynamic_map(signed: bool = True) -> np.ndarray:
    """bitsandbytes' ``create_dynamic_map(signed)``: 256 sorted float32 values, 0 and 1 included.

    For decade i = 0..6 (scale 10**(i-6)), the midpoints of evenly spaced points in [0.1, 1]:
    2**i + 1 of them and both signs when signed, 2**(i+1) + 1 of them (twice as fine, no
    sign) when not."""
    levels = [np.array([0.0, 1.0], F32)]
    for i in range(7):
        edges = _linspace(0.1, 1.0, (2 ** i if signed else 2 ** (i + 1)) + 1)
        level = F32(10.0 ** (i - 6)) * ((edges[:-1] + edges[1:]) / F32(2))
        levels += [level, -level] if signed else [level]
    return np.sort(np.concatenate(levels))


SIGNED_MAP = dynamic_map(signed=True)
UNSIGNED_MAP = dynamic_map(signed=False)


@functools.lru_cache(maxsize=8)
def _lut(code_bytes: bytes) -> np.ndarray:
    """bitsandbytes' CPU quantizer table for a sorted map: [-1, 1] cut into 65536 points, each
    mapped to the number of map midpoints strictly below it (the nearest entry, ties going down)."""
    code = np.frombuffer(code_bytes, F32)
    points = F32(-1) + (F32(2) * np.arange(_LUT_SIZE, dtype=F32)) / F32(_LUT_SIZE - 1)
    return np.searchsorted(F32(0.5) * (code[:-1] + code[1:]), points, side="left").astype(np.uint8)


def quantize_blockwise(x: np.ndarray, code: np.ndarray = SIGNED_MAP,
                       block_size: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(codes uint8 of x's flat size, float32 absmax per block) of float32 ``x``.

    As bitsandbytes' ``quantize_blockwise`` on CPU: ``v = x * (1 / absmax)`` clipped to
    [-1, 1], table index ``trunc((v + 1) * 0.5 * 65535 + 0.5)`` in float32; an all-zero
    block gets codes 0 (for the unsigned map that is the value 0)."""
    flat = np.ascontiguousarray(x, dtype=F32).reshape(-1)
    n = flat.size
    nblocks = -(-n // block_size)
    if n % block_size:
        padded = np.zeros(nblocks * block_size, F32)
        padded[:n] = flat
        flat = padded
    blocks = flat.reshape(nblocks, block_size)
    absmax = np.abs(blocks).max(axis=1) if n else np.zeros(0, F32)
    inv = F32(1) / np.where(absmax > 0, absmax, F32(1))
    v = blocks * inv[:, None]
    np.clip(v, F32(-1), F32(1), out=v)
    v += F32(1)
    v *= F32(0.5) * F32(_LUT_SIZE - 1)  # 0.5 * 65535 is exact in float32: one rounding as two
    v += F32(0.5)
    codes = _lut(np.ascontiguousarray(code, F32).tobytes())[v.astype(np.uint16)]
    codes[absmax == 0] = 0
    return codes.reshape(-1)[:n], absmax


def dequantize_blockwise(codes: np.ndarray, absmax: np.ndarray, code: np.ndarray = SIGNED_MAP,
                         n: int | None = None, block_size: int = BLOCK,
                         out: np.ndarray | None = None) -> np.ndarray:
    """Flat float32 ``code[codes] * absmax[block]`` of the first ``n`` values (all by default)."""
    n = codes.size if n is None else n
    nfull = n // block_size
    out = np.empty(n, F32) if out is None else out
    values = np.take(code, codes[:n])
    head = nfull * block_size
    np.multiply(values[:head].reshape(nfull, block_size), absmax[:nfull, None],
                out=out[:head].reshape(nfull, block_size))
    if head < n:
        np.multiply(values[head:], absmax[nfull], out=out[head:])
    return out
