"""Fused inference kernels of a Llama-style decoder step, on raw float32 arrays.

A decode step of a small model is dozens of tiny array operations per layer; as Tensor ops
each pays dispatch and autograd bookkeeping, and even as NumPy calls each pays a few
microseconds. These kernels do one job each in one pass (tensora/models/llama_decode.py
strings them together):

- ``rms_norm_rows(x, weight, eps, out)``: ``x / sqrt(mean(x^2) + eps) * weight`` per row;
- ``add_rms_norm_rows(x, delta, weight, eps, out)``: ``x += delta`` (the residual add), then
  rms_norm_rows of the sum: one call where a step had two;
- ``rotary_qkv(qkv, cos, sin, heads, kv_heads, starts, q_out, keys, values)``: rotates the
  query and key heads of fused q|k|v projection rows (transformers' rotate-half layout),
  writes the rotated queries to ``q_out`` and the rotated keys and the values into the KV
  cache at each batch row's own start position;
- ``silu_mul(gate_up, out)``: ``silu(g) * u`` for rows ``[g | u]`` of a fused gate/up product;
- ``gqa_attention(q, keys, values, mask, scale, out)``: softmax attention of queries
  (B, T, heads, D) over the first S cached keys (B, kv_heads, capacity, D), query head h
  reading kv head ``h // (heads / kv_heads)``, ``mask`` (B, T, S) True where a key is seen;
- ``gemv_q8_0(x, blocks, shape, decode_rows)``: quant_linear's product for one row and a
  q8_0 weight, streamed row by row (faster than the fused 8-row kernel for this format);
- ``gemv_f32(x, w, out)``: ``x @ w.T`` for one row, or a batched decode step's few rows (up
  to 16: the weight still streams from memory once, where OpenBLAS's sgemm would pack it
  first), and a float32 weight (N, K), rows split over the native pool; each output row is
  what that row alone gives, bit for bit. More rows go to np.matmul.

Each is a NumPy reference body plus a native body (csrc/decode.cpp) doing the same float32
operations: ``rms_norm_rows``, ``add_rms_norm_rows`` and ``silu_mul`` agree within 1e-6 relative (the native sum
of squares is ordered differently, exp differs in the last bit), ``rotary_qkv`` bit for
bit, ``gqa_attention`` within 1e-5 relative (scores and sums in another order), ``gemv_f32``
within float32 rounding of the dot products (another summation order than BLAS's).

    >>> x = np.ones((1, 4), np.float32)
    >>> out = np.empty_like(x)
    >>> rms_norm_rows(x, np.full(4, 2.0, np.float32), 0.0, out).tolist()
    [[2.0, 2.0, 2.0, 2.0]]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import quant_matmul as qk
from .registry import kernel


def _check(a: np.ndarray, ndim: int, what: str, dtype: type = np.float32) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.ndim != ndim or not a.flags.c_contiguous:
        got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(f"{what}: expected a C-contiguous {np.dtype(dtype).name} array of {ndim} dims, got {got}")


@kernel("rms_norm_rows")
def rms_norm_rows(x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray) -> np.ndarray:
    """``out = x / sqrt(mean(x^2, -1) + eps) * weight`` for x, out (M, K) float32; returns out."""
    _check(x, 2, "rms_norm_rows x")
    _check(out, 2, "rms_norm_rows out")
    if weight.shape != (x.shape[1],) or out.shape != x.shape:
        raise ValueError(f"rms_norm_rows: x {x.shape}, weight {weight.shape}, out {out.shape} do not fit")
    var = np.einsum("ij,ij->i", x, x)[:, None] * np.float32(1.0 / max(x.shape[1], 1))
    np.multiply(x, np.float32(1) / np.sqrt(var + np.float32(eps)), out=out)
    out *= weight
    return out


@kernel("add_rms_norm_rows")
def add_rms_norm_rows(x: np.ndarray, delta: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray) -> np.ndarray:
    """``x += delta`` in place, then ``out = rms_norm_rows(x)``; x, delta, out (M, K) float32; returns out."""
    _check(x, 2, "add_rms_norm_rows x")
    _check(delta, 2, "add_rms_norm_rows delta")
    if delta.shape != x.shape:
        raise ValueError(f"add_rms_norm_rows: delta {delta.shape} does not fit x {x.shape}")
    x += delta
    return rms_norm_rows.reference(x, weight, eps, out)


@kernel("rotary_qkv")
def rotary_qkv(qkv: np.ndarray, cos: np.ndarray, sin: np.ndarray, heads: int, kv_heads: int, starts: np.ndarray,
               q_out: np.ndarray, keys: np.ndarray, values: np.ndarray) -> None:
    """Rotate q and k of qkv (B*T, (heads + 2 kv_heads) * D) with cos/sin (B*T, D); store q, k, v.

    q_out (B*T, heads * D) gets the rotated queries; keys/values (B, kv_heads, capacity, D) get
    the rotated keys and the values of batch row b at positions starts[b] .. starts[b] + T.
    """
    b, kvh, cap, d = _rotary_shapes(qkv, cos, sin, heads, kv_heads, starts, q_out, keys, values)
    m = qkv.shape[0]
    t = m // b
    half = d // 2
    qk = qkv[:, :(heads + kv_heads) * d].reshape(m, heads + kv_heads, d)
    c, s = cos[:, None, :], sin[:, None, :]
    rot = qk * c
    rot[..., :half] -= qk[..., half:] * s[..., :half]
    rot[..., half:] += qk[..., :half] * s[..., half:]
    q_out.reshape(m, heads, d)[:] = rot[:, :heads]
    k = rot[:, heads:].reshape(b, t, kvh, d)
    v = qkv[:, (heads + kv_heads) * d:].reshape(b, t, kvh, d)
    for row in range(b):
        p = int(starts[row])
        keys[row, :, p:p + t] = k[row].transpose(1, 0, 2)
        values[row, :, p:p + t] = v[row].transpose(1, 0, 2)


def _rotary_shapes(qkv, cos, sin, heads, kv_heads, starts, q_out, keys, values) -> tuple[int, int, int, int]:
    for a, what in ((qkv, "qkv"), (cos, "cos"), (sin, "sin"), (q_out, "q_out")):
        _check(a, 2, f"rotary_qkv {what}")
    _check(keys, 4, "rotary_qkv keys")
    _check(values, 4, "rotary_qkv values")
    _check(starts, 1, "rotary_qkv starts", np.int64)
    b, kvh, cap, d = keys.shape
    m = qkv.shape[0]
    ok = (heads > 0 and kv_heads == kvh and d % 2 == 0 and values.shape == keys.shape and b > 0 and m % b == 0
          and qkv.shape[1] == (heads + 2 * kvh) * d and cos.shape == (m, d) and sin.shape == (m, d)
          and q_out.shape == (m, heads * d) and starts.shape == (b,))
    if not ok:
        raise ValueError(f"rotary_qkv: shapes do not fit: qkv {qkv.shape}, cos {cos.shape}, sin {sin.shape}, "
                         f"heads {heads}, kv_heads {kv_heads}, starts {starts.shape}, q_out {q_out.shape}, "
                         f"keys {keys.shape}, values {values.shape}")
    t = m // b
    if starts.size and (starts.min() < 0 or starts.max() + t > cap):
        raise ValueError(f"rotary_qkv: positions up to {int(starts.max()) + t} do not fit a cache of {cap}")
    return b, kvh, cap, d


@kernel("silu_mul")
def silu_mul(gate_up: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = silu(g) * u`` for rows ``[g | u]`` of gate_up (M, 2F); out (M, F); returns out."""
    _check(gate_up, 2, "silu_mul gate_up")
    _check(out, 2, "silu_mul out")
    f = out.shape[1]
    if gate_up.shape != (out.shape[0], 2 * f):
        raise ValueError(f"silu_mul: gate_up {gate_up.shape} does not fit out {out.shape}")
    g, u = gate_up[:, :f], gate_up[:, f:]
    np.negative(g, out=out)
    np.exp(out, out=out)
    out += np.float32(1)
    np.divide(g, out, out=out)
    out *= u
    return out


@kernel("gqa_attention")
def gqa_attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, mask: np.ndarray, scale: float,
                  out: np.ndarray) -> np.ndarray:
    """softmax(q k^T * scale, masked) v over the first S = mask.shape[2] cached positions.

    q (B, T, heads, D); keys, values (B, kv_heads, capacity, D); mask bool (B, T, S), every
    query seeing at least one key; out (B, T, heads * D). Returns out.
    """
    b, t, h, d, kvh, s = _attention_shapes(q, keys, values, mask, out)
    g = h // kvh
    qg = q.reshape(b, t, kvh, g, d).transpose(0, 2, 3, 1, 4).reshape(b, kvh, g * t, d)
    scores = np.matmul(qg, keys[:, :, :s].swapaxes(-1, -2)).reshape(b, kvh, g, t, s)
    scores *= np.float32(scale)
    scores = np.where(mask[:, None, None], scores, np.float32(-np.inf))
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    o = np.matmul(scores.reshape(b, kvh, g * t, s), values[:, :, :s]).reshape(b, kvh, g, t, d)
    out.reshape(b, t, kvh, g, d)[:] = o.transpose(0, 3, 1, 2, 4)
    return out


def _attention_shapes(q, keys, values, mask, out) -> tuple[int, ...]:
    _check(q, 4, "gqa_attention q")
    _check(keys, 4, "gqa_attention keys")
    _check(values, 4, "gqa_attention values")
    _check(mask, 3, "gqa_attention mask", np.bool_)
    _check(out, 3, "gqa_attention out")
    b, t, h, d = q.shape
    kb, kvh, cap, kd = keys.shape
    s = mask.shape[2]
    ok = (kb == b and kd == d and kvh > 0 and h % kvh == 0 and values.shape == keys.shape
          and mask.shape[:2] == (b, t) and 0 < s <= cap and out.shape == (b, t, h * d))
    if not ok:
        raise ValueError(f"gqa_attention: shapes do not fit: q {q.shape}, keys {keys.shape}, values {values.shape}, "
                         f"mask {mask.shape}, out {out.shape}")
    if not mask.any(axis=-1).all():
        raise ValueError("gqa_attention: every query must see at least one key")
    return b, t, h, d, kvh, s


# -- native bodies (csrc/decode.cpp validates every argument itself) ----------------------


@rms_norm_rows.native_body
def _rms_norm_rows_native(lib, x, weight, eps, out):
    lib.rms_norm_rows(x, weight, out, float(eps))
    return out


@add_rms_norm_rows.native_body
def _add_rms_norm_rows_native(lib, x, delta, weight, eps, out):
    lib.add_rms_norm_rows(x, delta, weight, out, float(eps))
    return out


@rotary_qkv.native_body
def _rotary_qkv_native(lib, qkv, cos, sin, heads, kv_heads, starts, q_out, keys, values):
    lib.rotary_qkv(qkv, cos, sin, starts, q_out, keys, values, heads=heads, kv_heads=kv_heads)


@silu_mul.native_body
def _silu_mul_native(lib, gate_up, out):
    lib.silu_mul(gate_up, out)
    return out


@gqa_attention.native_body
def _gqa_attention_native(lib, q, keys, values, mask, scale, out):
    lib.gqa_attention(q, keys, values, mask, out, float(scale))
    return out


@kernel("gemv_q8_0")
def gemv_q8_0(x: np.ndarray, blocks: np.ndarray, shape: tuple[int, int],
              decode_rows: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """``x @ W.T`` for one row x (1, K) float32 and W (N, K) in q8_0 blocks: quant_linear's product.

    The native body (csrc/decode_gemv.cpp) streams W row by row with quant_linear's 15-bit
    activations; it agrees with quant_linear's within float32 rounding of the scaled sums.
    """
    return qk.quant_linear.reference(x, "q8_0", {}, {"blocks": blocks}, shape, decode_rows)


@gemv_q8_0.native_body
def _gemv_q8_0_native(lib, x, blocks, shape, decode_rows):
    out = np.empty((1, shape[0]), np.float32)
    if lib.gemv_q8_0(blocks, shape[0], shape[1], x, out):
        return out
    return qk.quant_linear(x, "q8_0", {}, {"blocks": blocks}, shape, decode_rows)  # no AVX2, or inf/NaN in x


@kernel("gemv_f32")
def gemv_f32(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = x @ w.T`` for x (M, K), w (N, K) and out (M, N) float32; returns out."""
    return np.matmul(x, w.T, out=out)


@gemv_f32.native_body
def _gemv_f32_native(lib, x, w, out):
    if not lib.gemv_f32(w, x, out):  # no AVX2/FMA here, or more than 16 rows: BLAS
        np.matmul(x, w.T, out=out)
    return out
