"""Blocked (flash-attention style) attention on arrays, and its counter-based dropout mask.

`blocked_attention_forward` computes softmax(q k^T * scale + mask) v one (query
block x key block) tile at a time with an online softmax (Milakov & Gimelshein
2018; Dao et al., FlashAttention-2, 2023): it keeps only a running row max, a
running row sum and the output accumulator, so no L x S array ever exists.
`blocked_attention_backward` recomputes each tile's probabilities from the saved
row logsumexp and accumulates dq, dk, dv (and the mask's gradient) tile by tile.

Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev); batch dims broadcast (a size-1
head dim of k/v serves every query head, which is how grouped-query attention is
run without copying k/v). `mask` is None, a bool array (True = take part) or a float
array added to the scores, broadcastable to (..., L, S). `causal` keeps key j for
query i iff j <= i (torch's tril(L, S), top-left aligned). Rows with no key left
give zeros (torch's safe softmax), and zero gradients.

Dropout uses a counter-based mask: element (b, i, j) of the (batch, L, S) weights
is kept iff a SplitMix64 hash of (seed, flat index) is above p * 2**64, so any tile
can be regenerated on its own, in forward or backward, in any tiling, and the naive
path that materialises all L x S weights draws exactly the same mask (as
FlashAttention regenerates its Philox stream from (seed, offset)).

When every query and key fits one tile the online softmax has nothing to rescale: the
forward is a plain softmax, and without a mask (causal or not) on NumPy float32 arrays both
directions run the fused kernel `attention_tile_forward` / `attention_tile_backward`
(csrc/attention_tile.cpp; the one-tile NumPy path and the blocked backward are its reference).

Kernels take and return arrays (NumPy here, CuPy through `xp`); they know nothing
of Tensor or autograd.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .registry import kernel

BLOCK_Q = 256   # query rows per tile
BLOCK_K = 512   # keys per tile: a float32 tile of 8 heads is 8 * 256 * 512 * 4 B = 4 MiB

# SplitMix64 constants (Steele, Lea & Flood 2014; the finaliser of java.util.SplittableRandom).
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def dropout_keep(seed: int, p: float, batch: tuple, rows: tuple[int, int], cols: tuple[int, int],
                 L: int, S: int, xp: Any = np) -> Any:
    """Bool keep-mask of the weights tile [rows) x [cols) of a (batch, L, S) array; P(keep) = 1 - p."""
    nb = int(np.prod(batch, dtype=np.int64))
    b = xp.arange(nb, dtype=np.uint64).reshape(tuple(batch) + (1, 1))
    i = xp.arange(rows[0], rows[1], dtype=np.uint64).reshape(-1, 1)
    j = xp.arange(cols[0], cols[1], dtype=np.uint64)
    z = (b * np.uint64(L) + i) * np.uint64(S) + j   # flat index into (batch, L, S)
    z *= _GOLDEN
    z += np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z >= np.uint64(_threshold(p))


def _threshold(p: float) -> int:
    """The uint64 a hash must reach to keep its weight: P(keep) = 1 - p."""
    return min(int(p * 2.0 ** 64), 2 ** 64 - 1)


def _scale(p: float) -> float:
    return 0.0 if p >= 1 else 1.0 / (1.0 - p)


@kernel("attention_dropout_scale")
def attention_dropout_scale(out: np.ndarray, seed: int, p: float, row0: int, col0: int, L: int, S: int) -> np.ndarray:
    """Fill `out` (batch..., rows, cols), float32 or float64, with the dropout factors (keep / (1 - p))
    of the weights tile starting at (row0, col0) of a (batch, L, S) array; returns out.

    The native body (csrc/dropout.cpp) computes the same hash in one pass instead of NumPy's
    eight uint64 passes plus a compare, a cast and a multiply, bit for bit the same factors.
    """
    rows, cols = (row0, row0 + out.shape[-2]), (col0, col0 + out.shape[-1])
    keep = dropout_keep(seed, p, out.shape[:-2], rows, cols, L, S)
    np.multiply(keep, out.dtype.type(_scale(p)), out=out)
    return out


@attention_dropout_scale.native_body
def _attention_dropout_scale_native(lib: ModuleType, out: np.ndarray, seed: int, p: float, row0: int, col0: int,
                                    L: int, S: int) -> np.ndarray:
    lib.attention_dropout_scale(out, seed & 0xFFFFFFFFFFFFFFFF, _threshold(p), _scale(p), row0, col0, L, S)
    return out


def dropout_scale(seed: int, p: float, batch: tuple, rows: tuple[int, int], cols: tuple[int, int],
                  L: int, S: int, dtype: Any, xp: Any = np) -> Any:
    """keep / (1 - p) as `dtype`: what the softmax weights of the tile are multiplied by."""
    if xp is np:
        out = np.empty(tuple(batch) + (rows[1] - rows[0], cols[1] - cols[0]), dtype)
        return attention_dropout_scale(out, seed, p, rows[0], cols[0], L, S)
    return dropout_keep(seed, p, batch, rows, cols, L, S, xp).astype(dtype) * dtype.type(_scale(p))


def batch_shape(q: Any, k: Any, v: Any, mask: Any) -> tuple:
    """The broadcast batch shape of the output (every dim but the last two)."""
    shapes = [q.shape[:-2], k.shape[:-2], v.shape[:-2]]
    if mask is not None:
        shapes.append(mask.shape[:-2])
    return tuple(np.broadcast_shapes(*shapes))


def _full_ndim(a: Any, ndim: int) -> Any:
    """`a` with leading size-1 dims so it has `ndim` dims (a view)."""
    return a.reshape((1,) * (ndim - a.ndim) + a.shape) if a.ndim < ndim else a


def _tile(mask: Any, rows: slice, cols: slice) -> Any:
    """The mask's part of a tile; a size-1 (broadcast) row or column dim is kept whole."""
    return mask[..., rows if mask.shape[-2] != 1 else slice(None), cols if mask.shape[-1] != 1 else slice(None)]


def _masked_scores(s: Any, mask: Any, causal: bool, i0: int, i1: int, j0: int, j1: int, xp: Any) -> Any:
    """Apply the user mask and the causal mask to the (full-batch) score tile s, in place."""
    if mask is not None:
        m = _tile(mask, slice(i0, i1), slice(j0, j1))
        if m.dtype == np.bool_:
            xp.copyto(s, s.dtype.type(-np.inf), where=~m)
        else:
            s += m
    if causal and j1 - 1 > i0:  # the tile crosses the diagonal
        above = xp.arange(j0, j1)[None, :] > xp.arange(i0, i1)[:, None]
        xp.copyto(s, s.dtype.type(-np.inf), where=above)
    return s


def sum_to_shape(x: Any, shape: tuple) -> Any:
    """x summed over the dims it was broadcast along, to `shape` (same ndim or fewer)."""
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + d for d, n in enumerate(shape) if n == 1 and x.shape[lead + d] != 1)
    out = x.sum(axis=axes, keepdims=True) if axes else x
    return out.reshape(shape)


def blocked_attention_forward(q: Any, k: Any, v: Any, mask: Any, scale: float, causal: bool,
                              dropout_p: float = 0.0, seed: int = 0, block_q: int = BLOCK_Q,
                              block_k: int = BLOCK_K, xp: Any = np) -> tuple[Any, Any]:
    """(out (batch, L, Ev), logsumexp of the scaled, masked scores (batch, L)) without an L x S array."""
    batch = batch_shape(q, k, v, mask)
    nd = len(batch) + 2
    q, k, v = (_full_ndim(a, nd) for a in (q, k, v))
    mask = None if mask is None else _full_ndim(mask, nd)
    L, S, Ev = q.shape[-2], k.shape[-2], v.shape[-1]
    dtype = q.dtype
    one_tile = 0 < L <= block_q and 0 < S <= block_k
    if one_tile and _fused(xp, mask, batch, q, k, v):
        out, lse = attention_tile_forward(*(_heads(a) for a in (q, k, v)), scale, causal, dropout_p, seed)
        return out.reshape(batch + (L, Ev)), lse.reshape(batch + (L,))
    qs = xp.broadcast_to(q, batch + q.shape[-2:]) * dtype.type(scale)  # full batch, so tiles add masks in place
    kt = xp.swapaxes(k, -1, -2)
    if one_tile:
        return _one_tile_forward(qs, kt, v, mask, causal, dropout_p, seed, batch, xp)
    out = xp.empty(batch + (L, Ev), dtype=dtype)
    lse = xp.empty(batch + (L,), dtype=dtype)
    neg_inf = dtype.type(-np.inf)
    for i0 in range(0, L, block_q):
        i1 = min(i0 + block_q, L)
        m = xp.full(batch + (i1 - i0,), neg_inf, dtype=dtype)      # running row max
        l = xp.zeros(batch + (i1 - i0,), dtype=dtype)              # running row sum of exp
        acc = xp.zeros(batch + (i1 - i0, Ev), dtype=dtype)         # running sum of exp * v
        for j0 in range(0, S, block_k):
            if causal and j0 > i1 - 1:
                break  # this tile and every later one lie above the diagonal
            j1 = min(j0 + block_k, S)
            s = _masked_scores(qs[..., i0:i1, :] @ kt[..., j0:j1], mask, causal, i0, i1, j0, j1, xp)
            m_new = xp.maximum(m, s.max(axis=-1))
            m_safe = xp.where(m_new == neg_inf, dtype.type(0), m_new)  # a row with no key yet
            s -= m_safe[..., None]
            p = xp.exp(s, out=s)
            alpha = xp.exp(m - m_safe)
            l *= alpha
            l += p.sum(axis=-1)
            if dropout_p:  # the normaliser above counts every weight; dropout acts after softmax
                p *= dropout_scale(seed, dropout_p, batch, (i0, i1), (j0, j1), L, S, dtype, xp)
            acc *= alpha[..., None]
            acc += p @ v[..., j0:j1, :]
            m = m_new
        empty = l == 0  # every key masked: output 0 (torch's safe softmax), logsumexp -inf
        l_safe = xp.where(empty, dtype.type(1), l)
        out[..., i0:i1, :] = acc / l_safe[..., None]
        lse[..., i0:i1] = xp.where(empty, neg_inf, xp.where(m == neg_inf, dtype.type(0), m) + xp.log(l_safe))
    return out, lse


def _one_tile_forward(qs: Any, kt: Any, v: Any, mask: Any, causal: bool, dropout_p: float, seed: int,
                      batch: tuple, xp: Any) -> tuple[Any, Any]:
    """blocked_attention_forward when every query and key fits one tile: a plain softmax, without the
    running max, sum and accumulator the online one rescales (the same values, three passes fewer)."""
    L, S, dtype = qs.shape[-2], kt.shape[-1], qs.dtype
    s = _masked_scores(qs @ kt, mask, causal, 0, L, 0, S, xp)
    m = s.max(axis=-1)
    neg_inf = dtype.type(-np.inf)
    s -= xp.where(m == neg_inf, dtype.type(0), m)[..., None]  # a row with no key: exp(-inf) = 0
    p = xp.exp(s, out=s)
    l = p.sum(axis=-1)
    empty = l == 0  # every key masked: output 0 (torch's safe softmax), logsumexp -inf
    l_safe = xp.where(empty, dtype.type(1), l)
    if dropout_p:  # the normaliser above counts every weight; dropout acts after softmax
        p *= dropout_scale(seed, dropout_p, batch, (0, L), (0, S), L, S, dtype, xp)
    out = p @ v
    out /= l_safe[..., None]
    return out, m + xp.log(l_safe)  # m is -inf on empty rows, log(1) = 0


def _put(dst: Any, index: tuple, value: Any, first: bool) -> None:
    """dst[index] = value on the only tile that writes there (no zero-fill to add to), else +=."""
    if first:
        dst[index] = value
    else:
        dst[index] += value


def blocked_attention_backward(q: Any, k: Any, v: Any, mask: Any, out: Any, lse: Any, dout: Any,
                               scale: float, causal: bool, dropout_p: float = 0.0, seed: int = 0,
                               need: tuple = (True, True, True, False), block_q: int = BLOCK_Q,
                               block_k: int = BLOCK_K, xp: Any = np) -> tuple:
    """(dq, dk, dv, dmask) shaped like q, k, v, mask (None where `need` is False), tile by tile.

    With P = softmax(scores) and W = P * dropout the weights, dV = W^T dO, dW = dO V^T,
    dP = dW * dropout, dScores = P * (dP - D) with D = rowsum(dO * O) (= rowsum(dP * P)),
    dq = dScores k * scale, dk = dScores^T q * scale, dmask = dScores.
    """
    L, S = q.shape[-2], k.shape[-2]
    batch = batch_shape(q, k, v, mask)
    if 0 < L <= block_q and 0 < S <= block_k and _fused(xp, mask, batch, q, k, v):
        grads = attention_tile_backward(*(_heads(a) for a in (q, k, v, out)), lse.reshape(-1, L), _heads(dout),
                                        scale, causal, dropout_p, seed)
        return tuple(g.reshape(a.shape) if n else None for g, a, n in zip(grads, (q, k, v), need)) + (None,)
    return _blocked_backward(q, k, v, mask, out, lse, dout, scale, causal, dropout_p, seed, need, block_q, block_k,
                             xp)


def _fused(xp: Any, mask: Any, batch: tuple, *qkv: Any) -> bool:
    """Whether one-tile attention can take the fused kernel: NumPy arrays, no mask, every batch dim
    present in q, k and v (no broadcast head to expand)."""
    return xp is np and mask is None and all(a.shape[:-2] == batch for a in qkv)


def _heads(a: Any) -> Any:
    """(..., rows, cols) -> (heads, rows, cols), a view where it can be."""
    return a.reshape((-1,) + a.shape[-2:])


@kernel("attention_tile_forward")
def attention_tile_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, causal: bool,
                           dropout_p: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(out (heads, L, Ev), lse (heads, L)) for q (heads, L, E), k (heads, S, E), v (heads, S, Ev) that fit
    one tile, without a mask (causal or not), dropout from the counter hash of `seed`.

    The native body (csrc/attention_tile.cpp) does a query row at a time, its scores in L1 and
    the causal triangle skipped, heads across the pool, instead of NumPy's passes over the whole
    (heads, L, S) weights; for float32 with S, E, Ev multiples of 8 on AVX2+FMA, else this
    reference runs. It agrees with the reference within 1e-5 (float32 exp and sums in another order).
    """
    qs = q * q.dtype.type(scale)
    return _one_tile_forward(qs, np.swapaxes(k, -1, -2), v, None, causal, dropout_p, seed, q.shape[:-2], np)


@kernel("attention_tile_backward")
def attention_tile_backward(q: np.ndarray, k: np.ndarray, v: np.ndarray, out: np.ndarray, lse: np.ndarray,
                            dout: np.ndarray, scale: float, causal: bool, dropout_p: float,
                            seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dq, dk, dv) of attention_tile_forward given dout (heads, L, Ev) and the saved out and lse."""
    grads = _blocked_backward(q, k, v, None, out, lse, dout, scale, causal, dropout_p, seed, (True, True, True, False),
                              q.shape[-2], k.shape[-2], np)
    return grads[:3]


def _tile_native_ok(lib: ModuleType, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> bool:
    return (lib.simd() == "avx2" and all(a.dtype == np.float32 and a.ndim == 3 for a in (q, k, v))
            and not (k.shape[-2] % 8 or q.shape[-1] % 8 or v.shape[-1] % 8)
            and max(q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]) <= 1024)


def _tile_c(a: np.ndarray) -> np.ndarray:
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


@attention_tile_forward.native_body
def _attention_tile_forward_native(lib: ModuleType, q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float,
                                   causal: bool, dropout_p: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not _tile_native_ok(lib, q, k, v):
        return attention_tile_forward.reference(q, k, v, scale, causal, dropout_p, seed)
    heads, L, Ev = q.shape[0], q.shape[1], v.shape[2]
    out, lse = np.empty((heads, L, Ev), np.float32), np.empty((heads, L), np.float32)
    lib.attention_tile_forward(_tile_c(q), _tile_c(k), _tile_c(v), scale, causal, dropout_p,
                               seed & 0xFFFFFFFFFFFFFFFF, _threshold(dropout_p), out, lse)
    return out, lse


@attention_tile_backward.native_body
def _attention_tile_backward_native(lib: ModuleType, q: np.ndarray, k: np.ndarray, v: np.ndarray, out: np.ndarray,
                                    lse: np.ndarray, dout: np.ndarray, scale: float, causal: bool, dropout_p: float,
                                    seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not (_tile_native_ok(lib, q, k, v) and out.dtype == lse.dtype == dout.dtype == np.float32):
        return attention_tile_backward.reference(q, k, v, out, lse, dout, scale, causal, dropout_p, seed)
    dq, dk, dv = np.empty(q.shape, np.float32), np.empty(k.shape, np.float32), np.empty(v.shape, np.float32)
    lib.attention_tile_backward(*(_tile_c(a) for a in (q, k, v, out, lse, dout)), scale, causal, dropout_p,
                                seed & 0xFFFFFFFFFFFFFFFF, _threshold(dropout_p), dq, dk, dv)
    return dq, dk, dv


def _blocked_backward(q: Any, k: Any, v: Any, mask: Any, out: Any, lse: Any, dout: Any, scale: float, causal: bool,
                      dropout_p: float, seed: int, need: tuple, block_q: int, block_k: int, xp: Any) -> tuple:
    """blocked_attention_backward's array code, for every case the fused kernel does not take."""
    batch = batch_shape(q, k, v, mask)
    nd = len(batch) + 2
    shapes = (q.shape, k.shape, v.shape, None if mask is None else mask.shape)
    q, k, v = (_full_ndim(a, nd) for a in (q, k, v))
    mask = None if mask is None else _full_ndim(mask, nd)
    L, S = q.shape[-2], k.shape[-2]
    dtype = q.dtype
    qs = xp.broadcast_to(q, batch + q.shape[-2:]) * dtype.type(scale)
    kt, vt = xp.swapaxes(k, -1, -2), xp.swapaxes(v, -1, -2)
    d_rows = (dout * out).sum(axis=-1)
    lse_safe = xp.where(lse == dtype.type(-np.inf), dtype.type(np.inf), lse)  # empty rows: P = 0
    want_q, want_k, want_v, want_m = need
    want_m = want_m and mask is not None and mask.dtype != np.bool_
    one = 0 < L <= block_q and 0 < S <= block_k  # one tile writes every gradient element once
    alloc = xp.empty if one else xp.zeros
    dq = alloc(batch + q.shape[-2:], dtype=dtype) if want_q else None
    dk = alloc(k.shape, dtype=dtype) if want_k else None
    dv = alloc(v.shape, dtype=dtype) if want_v else None
    dmask = alloc(mask.shape, dtype=dtype) if want_m else None
    for j0 in range(0, S, block_k):
        j1 = min(j0 + block_k, S)
        for i0 in range(0, L, block_q):
            i1 = min(i0 + block_q, L)
            if causal and j0 > i1 - 1:
                continue
            s = _masked_scores(qs[..., i0:i1, :] @ kt[..., j0:j1], mask, causal, i0, i1, j0, j1, xp)
            s -= lse_safe[..., i0:i1, None]
            p = xp.exp(s, out=s)
            drop = dropout_scale(seed, dropout_p, batch, (i0, i1), (j0, j1), L, S, dtype, xp) if dropout_p else None
            do = dout[..., i0:i1, :]
            if want_v:
                w = p if drop is None else p * drop
                _put(dv, (..., slice(j0, j1), slice(None)),
                     sum_to_shape(xp.swapaxes(w, -1, -2) @ do, dv.shape[:-2] + (j1 - j0, dv.shape[-1])), one)
            ds = do @ vt[..., j0:j1]  # dW, turned into dScores in place
            if drop is not None:
                ds *= drop
            ds -= d_rows[..., i0:i1, None]
            ds *= p
            if want_q:
                _put(dq, (..., slice(i0, i1), slice(None)), ds @ k[..., j0:j1, :], one)
            if want_k:
                _put(dk, (..., slice(j0, j1), slice(None)), sum_to_shape(
                    xp.swapaxes(ds, -1, -2) @ qs[..., i0:i1, :], dk.shape[:-2] + (j1 - j0, dk.shape[-1])), one)
            if want_m:
                target = _tile(dmask, slice(i0, i1), slice(j0, j1))
                _put(target, (...,), sum_to_shape(ds, target.shape), one)
    if want_q:
        dq *= dtype.type(scale)
        dq = sum_to_shape(dq, shapes[0])
    return (dq, None if dk is None else dk.reshape(shapes[1]), None if dv is None else dv.reshape(shapes[2]),
            None if dmask is None else dmask.reshape(shapes[3]))
