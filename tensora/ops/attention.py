"""Scaled dot-product attention, as torch.nn.functional.scaled_dot_product_attention defines it.

    out = dropout(softmax(q @ k^T * scale + mask, dim=-1), dropout_p) @ v

Two paths compute it and agree (tests/ops/test_attention.py checks both against
each other and against NumPy and torch):

* "math" builds the formula from differentiable tensor ops and materialises the
  (..., L, S) scores, so every order of gradient works directly.
* "efficient" is one op (`EfficientAttention`) over the blocked kernel in
  tensora/kernels/attention.py: tiles of queries x keys with an online softmax,
  saving only (q, k, v, out, row logsumexp); its backward recomputes each tile's
  weights from the logsumexp, so neither direction holds an L x S array. Its
  backward is array code, not tensor ops: when a gradient of the gradient is asked
  for (create_graph=True) it rebuilds the math path from the saved inputs and
  differentiates that instead, so higher orders stay correct at math-path memory.

"auto" (the default) picks "efficient" once batch * L * S reaches
EFFICIENT_MIN_SCORES (on CPU it is then also the faster one: at batch 8, T=256 single
threaded it takes ~0.65x the math path's time forward+backward, at T=1024 ~0.7x;
below, both are dominated by per-op overhead and the math path's graph needs no
recomputation for double backward). Force a path with `backend=` or
`with sdpa_backend("math"):`.

Semantics follow torch 2.13: a bool mask keeps True entries, a float mask is added;
is_causal keeps key j for query i iff j <= i (tril(L, S), top-left aligned) and
combines with attn_mask; dropout is always applied when dropout_p > 0 (pass 0.0 in
eval). A query row whose every key is masked gives zeros and zero gradients in
both paths (torch's safe softmax, which its math and CPU kernels use, not the NaN
of the plain formula). The dropout mask is drawn from a seed taken from the
default generator (tensora.manual_seed reproduces it) and is the same in both paths.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from .. import dtypes as dt
from ..autograd.engine import grad
from ..autograd.function import Op
from ..autograd.grad_mode import STATE, enable_grad
from ..backend import get_backend
from ..device import CPU
from ..errors import DTypeError, ShapeError, fmt_shape
from ..kernels.attention import (BLOCK_K, BLOCK_Q, batch_shape, blocked_attention_backward,
                                 blocked_attention_forward, dropout_scale)
from ..random import resolve
from ..tensor import Tensor, make_tensor
from .elementwise import where
from .registry import register
from ..amp import autocast_op

BACKENDS = ("auto", "math", "efficient")
EFFICIENT_MIN_SCORES = 1 << 18  # 1 MiB of float32 scores: from here "auto" stops materialising them


class _Config(threading.local):
    backend = "auto"
    block_q = BLOCK_Q
    block_k = BLOCK_K


_CONFIG = _Config()


@contextmanager
def sdpa_backend(backend: str, *, block_q: int | None = None, block_k: int | None = None) -> Iterator[None]:
    """Run attention in this thread through `backend` ("auto", "math" or "efficient"), optionally with
    other tile sizes for the efficient path.

    >>> import tensora
    >>> q = tensora.randn(1, 2, 8, 4)
    >>> with sdpa_backend("efficient", block_q=4, block_k=4):
    ...     out = tensora.scaled_dot_product_attention(q, q, q)
    >>> tuple(out.shape)
    (1, 2, 8, 4)
    """
    if backend not in BACKENDS:
        raise ValueError(f"sdpa_backend: backend must be one of {BACKENDS}, got {backend!r}")
    for name, size in (("block_q", block_q), ("block_k", block_k)):
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ValueError(f"sdpa_backend: {name} must be a positive int, got {size!r}")
    prev = (_CONFIG.backend, _CONFIG.block_q, _CONFIG.block_k)
    _CONFIG.backend = backend
    _CONFIG.block_q = block_q or prev[1]
    _CONFIG.block_k = block_k or prev[2]
    try:
        yield
    finally:
        _CONFIG.backend, _CONFIG.block_q, _CONFIG.block_k = prev


class EfficientAttention(Op, name="sdpa_efficient"):
    """Blocked attention: saves q, k, v, out and the row logsumexp; backward recomputes tiles."""

    @staticmethod
    def forward(ctx, q, k, v, mask, scale, causal, dropout_p, seed, block_q, block_k):
        out, lse = blocked_attention_forward(q, k, v, mask, scale, causal, dropout_p, seed, block_q, block_k,
                                             ctx.xp)
        ctx.save(q, k, v, mask, out, lse)
        ctx.params = (scale, causal, dropout_p, seed, block_q, block_k)
        return out

    @staticmethod
    def backward(ctx, g):
        q, k, v, mask, out, lse = ctx.saved
        scale, causal, dropout_p, seed, block_q, block_k = ctx.params
        if STATE.enabled:  # create_graph=True: differentiate the math path, whose backward is tensor ops
            return _math_grads(ctx.needs_input_grad, (q, k, v, mask), g, scale, causal, dropout_p, seed)
        grads = blocked_attention_backward(q._data, k._data, v._data, None if mask is None else mask._data,
                                           out._data, lse._data, g._data, scale, causal, dropout_p, seed,
                                           ctx.needs_input_grad, block_q, block_k, ctx.xp)
        return tuple(None if a is None else make_tensor(a, g.device) for a in grads)


def _math_grads(need: tuple, inputs: tuple, g: Tensor, scale: float, causal: bool, dropout_p: float,
                seed: int) -> tuple:
    """Gradients of the math path at `inputs`, as a graph (for double backward through the efficient op)."""
    # A fresh view per input keeps q, k, v apart as grad targets even when they are one tensor.
    views = [t.reshape(t.shape) if t is not None and n else t for t, n in zip(inputs, need)]
    with enable_grad():
        out = math_attention(*views, scale=scale, causal=causal, dropout_p=dropout_p, seed=seed)
    targets = [t for t, n in zip(views, need) if n]
    got = iter(grad([out], targets, [g], create_graph=True, allow_unused=True, materialize_grads=True))
    return tuple(next(got) if n else None for n in need)


def _const(array: Any, like: Tensor) -> Tensor:
    return make_tensor(array, like.device)


def math_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, *, scale: float, causal: bool,
                   dropout_p: float, seed: int) -> Tensor:
    """The attention formula in differentiable tensor ops, with the (..., L, S) scores materialised."""
    L, S = q.shape[-2], k.shape[-2]
    s = (q @ k.mT) * scale
    if mask is not None:
        s = where(mask, s, -math.inf) if mask.dtype is dt.bool_ else s + mask
    if causal:
        s = where(_const(np.tri(L, S, dtype=bool), s), s, -math.inf)
    # The row max only shifts the exponent (softmax is invariant to it), so it is a constant here.
    xp = _xp_of(s)
    neg_inf = s._data.dtype.type(-np.inf)
    m = s._data.max(axis=-1, keepdims=True) if S else xp.full(s.shape[:-1] + (1,), neg_inf, s._data.dtype)
    empty = m == neg_inf  # every key masked: 0 / 1 = 0 instead of 0 / 0
    e = (s - _const(xp.where(empty, s._data.dtype.type(0), m), s)).exp()
    w = e / (e.sum(-1, keepdim=True) + _const(empty.astype(s._data.dtype), s))
    if dropout_p:
        batch = batch_shape(q._data, k._data, v._data, None if mask is None else mask._data)
        w = w * _const(dropout_scale(seed, dropout_p, batch, (0, L), (0, S), L, S, s._data.dtype, xp), s)
    return w @ v


def _xp_of(t: Tensor) -> Any:
    return np if t.device is CPU else get_backend(t.device).xp


def _check(query: Any, key: Any, value: Any, attn_mask: Any, dropout_p: float) -> None:
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"scaled_dot_product_attention: {name} must be a Tensor, got {type(t).__name__}")
        if t.ndim < 2:
            raise ShapeError(f"scaled_dot_product_attention: {name} needs at least 2 dims (..., seq, features), "
                             f"got shape {fmt_shape(t.shape)}")
    if not (query.dtype is key.dtype is value.dtype) or not query.dtype.is_floating_point:
        raise DTypeError("scaled_dot_product_attention: expected query, key and value to have the same floating "
                         f"dtype, got {query.dtype.name}, {key.dtype.name} and {value.dtype.name}")
    if query.shape[-1] != key.shape[-1]:
        raise ShapeError(f"scaled_dot_product_attention: query {fmt_shape(query.shape)} and key "
                         f"{fmt_shape(key.shape)} must have the same last (feature) dim")
    if key.shape[-2] != value.shape[-2]:
        raise ShapeError(f"scaled_dot_product_attention: key {fmt_shape(key.shape)} and value "
                         f"{fmt_shape(value.shape)} must have the same sequence length (dim -2)")
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor):
            raise TypeError(f"scaled_dot_product_attention: attn_mask must be a Tensor, got {type(attn_mask).__name__}")
        if attn_mask.dtype is not dt.bool_ and not attn_mask.dtype.is_floating_point:
            raise DTypeError(f"scaled_dot_product_attention: attn_mask must be bool or floating, got "
                             f"{attn_mask.dtype.name}")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1], got {dropout_p}")


def _repeat_heads(x: Tensor, times: int) -> Tensor:
    """x.repeat_interleave(times, dim=-3), differentiably (expand a new dim, then merge it)."""
    shape = tuple(x.shape)
    return x.unsqueeze(-3).expand(shape[:-2] + (times,) + shape[-2:]).reshape(
        shape[:-3] + (shape[-3] * times,) + shape[-2:])


def _group_heads(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple:
    """GQA without copies: q (..., Hkv*G, L, E) -> (..., Hkv, G, L, E), k/v (..., Hkv, 1, S, *).

    Query head h then meets key head h // G, which is what key.repeat_interleave(G, -3)
    gives torch. Returns the regrouped tensors and whether the output needs merging back.
    """
    hq, hk, hv = q.shape[-3], k.shape[-3], v.shape[-3]
    if hq % hk or hq % hv:
        raise ShapeError(f"scaled_dot_product_attention: with enable_gqa the number of heads (dim -3) of key "
                         f"{fmt_shape(k.shape)} and value {fmt_shape(v.shape)} must divide that of query "
                         f"{fmt_shape(q.shape)}")
    if hk != hv:  # two group sizes: no common grouping, so repeat both (copies of k and v only)
        return q, _repeat_heads(k, hq // hk), _repeat_heads(v, hq // hv), mask, False
    groups = hq // hk
    q = q.unflatten(-3, (hk, groups))
    if mask is not None and mask.ndim >= 3:
        mask = mask.unflatten(-3, (hk, groups)) if mask.shape[-3] == hq else mask.unsqueeze(-3)
    return q, k.unsqueeze(-3), v.unsqueeze(-3), mask, True


def _output_batch(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, enable_gqa: bool) -> tuple:
    """Check that the batch dims broadcast (and the mask against (..., L, S)); name the shapes if not."""
    L, S = q.shape[-2], k.shape[-2]
    try:
        batch = tuple(np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2]))
    except ValueError:
        hint = "" if enable_gqa else "; for grouped-query attention pass enable_gqa=True"
        raise ShapeError(f"scaled_dot_product_attention: batch dims of query {fmt_shape(q.shape)}, key "
                         f"{fmt_shape(k.shape)} and value {fmt_shape(v.shape)} do not broadcast{hint}") from None
    if mask is not None:
        try:
            np.broadcast_shapes(tuple(mask.shape), batch + (L, S))
        except ValueError:
            raise ShapeError(f"scaled_dot_product_attention: attn_mask of shape {fmt_shape(mask.shape)} does not "
                             f"broadcast to the attention weights' shape {fmt_shape(batch + (L, S))}") from None
    return batch


@register(method=False)
@autocast_op("scaled_dot_product_attention")
def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, *, scale: float | None = None,
                                 enable_gqa: bool = False, backend: str | None = None) -> Tensor:
    """softmax(query @ key^T * scale + mask) @ value, with torch's arguments and semantics.

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev). attn_mask: bool
    (True = take part) or float (added), broadcastable to (..., L, S). is_causal: key j
    only for query i >= j. scale defaults to 1/sqrt(E). enable_gqa: key/value may have
    fewer heads (dim -3) than query, each serving query.size(-3) // key.size(-3) of them.
    backend: "math", "efficient" or "auto" (default: the thread's `sdpa_backend`).
    float16/bfloat16 inputs are computed in float32 and the result cast back.

    >>> import tensora
    >>> q = tensora.randn(2, 4, 16, 8)  # (batch, heads, L, E)
    >>> out = tensora.scaled_dot_product_attention(q, q, q, is_causal=True)
    >>> tuple(out.shape)
    (2, 4, 16, 8)
    """
    _check(query, key, value, attn_mask, dropout_p)
    backend = _CONFIG.backend if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"scaled_dot_product_attention: backend must be one of {BACKENDS}, got {backend!r}")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    out_dtype = query.dtype
    work = out_dtype if out_dtype in (dt.float32, dt.float64) else dt.float32
    q, k, v = (t if t.dtype is work else t.to(work) for t in (query, key, value))
    mask = attn_mask
    if mask is not None and mask.dtype is not dt.bool_ and mask.dtype is not work:
        mask = mask.to(work)
    merge = False
    if enable_gqa and q.ndim >= 3 and k.ndim >= 3 and v.ndim >= 3 and not q.shape[-3] == k.shape[-3] == v.shape[-3]:
        q, k, v, mask, merge = _group_heads(q, k, v, mask)
    batch = _output_batch(q, k, v, mask, enable_gqa)
    L, S = q.shape[-2], k.shape[-2]
    seed = int(resolve(None).integers(0, 2 ** 63)) if dropout_p else 0
    if backend == "auto":
        backend = "efficient" if math.prod(batch) * L * S >= EFFICIENT_MIN_SCORES else "math"
    if backend == "math":
        out = math_attention(q, k, v, mask, scale=scale, causal=bool(is_causal), dropout_p=float(dropout_p),
                             seed=seed)
    else:
        out = EfficientAttention.apply(q, k, v, mask, scale=scale, causal=bool(is_causal),
                                       dropout_p=float(dropout_p), seed=seed, block_q=_CONFIG.block_q,
                                       block_k=_CONFIG.block_k)
    if merge:
        out = out.flatten(-4, -3)
    return out if out.dtype is out_dtype else out.to(out_dtype)
