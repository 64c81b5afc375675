"""Inference fast path of the Llama family: a whole forward step on raw float32 arrays.

The module path (llama.py) runs about 37 Tensor ops per decoder layer, each with
dispatch and autograd bookkeeping; at decode time (one token per row) that bookkeeping,
not the weight-reading GEMVs, dominates a small model's step. When no gradient is
needed this path computes the same step with the kernels directly:

    x = embed(ids)
    for each layer:
        qkv = [q|k|v](rms_norm(x))           one GEMV: q/k/v weights merged
        rotate q, k; store k, v in the cache  rotary_qkv
        x += o(attention(q, cache))           gqa_attention; the add in the next norm's call
        gu = [gate|up](rms_norm(x))           one GEMV: gate/up weights merged
        x += down(silu(g) * u)                silu_mul; add_rms_norm_rows again
    logits = lm_head(rms_norm(x)[last])

Placement: every projection weight (each layer's `linears`, and lm_head) is copied once,
at first use, into one buffer on transparent huge pages (tensora/backend/huge_pages.py:
a step streams all of them, and with 4 KiB pages TLB misses cost ~5% of a float32
step), and the modules' weights are rebound to views of it, so memory does not double
(the originals are freed, or a mapped checkpoint's pages handed back, io/mapped_pages.py)
and both paths keep reading the same bytes. q/k/v (and gate/up) weights of the same kind
(all dense float32, or all in one quantized format whose packed parts are stored row by
row) land side by side there and run as one merged product. Quantized products call the
fused GEMV of tensora/kernels/quant_matmul.py with the same activations as the module
path (its output rows do not depend on which other rows are computed with them), dense
ones the native float32 GEMV for one row (a decode step) and BLAS for more. Each
Projection binds its one-row kernel and arguments once: a step makes ~50 such calls.

The path is taken only where it computes exactly what the module path would: float32
weights and activations, plain Linear / Embedding / RMSNorm modules (no LoRA, no other
subclass), no forward hooks anywhere (tensora.memory's layer-by-layer execution brings
weights in through hooks: a tiered model, `model.memory`, runs the module path), and
gradients off. `fast_path(model)` returns None otherwise.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from ..autograd.grad_mode import is_grad_enabled
from ..backend import native
from ..backend.huge_pages import Arena
from ..io.mapped_pages import release_pages
from ..kernels import decode as dk
from ..kernels import quant_matmul as qk
from ..kernels.registry import Kernel
from ..nn import Embedding, Linear, Module, RMSNorm
from ..quant import QuantizedEmbedding, QuantizedLinear, QuantizedTensor
from ..tensor import Tensor
from .layers import KVCache, SlotKVCache



class Projection:
    """``x @ W.T + b`` for one or several Linear modules whose weights are merged row-wise."""

    def __init__(self, linears: list[Module], arena: Arena) -> None:
        weights = [m.weight for m in linears]
        rows = [int(w.shape[0]) for w in weights]
        biases = [m.bias for m in linears]
        if any(b is not None for b in biases):
            self.bias = np.concatenate([np.zeros(r, np.float32) if b is None else _array(b)
                                        for b, r in zip(biases, rows)])
        else:
            self.bias = None
        self.rows, self.cols = sum(rows), int(weights[0].shape[1])
        if all(isinstance(w, Tensor) for w in weights):
            self.quant = None
            self.weight = _merge_dense(linears, arena)
            self.dense = _body(dk.gemv_f32)  # native for up to 16 rows, then BLAS
        else:
            self.quant = _merge_quantized(linears, arena)
            self.format_obj = weights[0].format
            fmt, _, parts = self.quant
            args = qk._native_args(fmt, self.quant[1], parts)
            self.native = None if args is None else (native.load(), args["parts"], args["group"])
        self.one_row = self._one_row()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        bits = qk.activation_bits()
        if x.shape[0] == 1 and self.one_row is not None and (self.quant is None or bits == 15):
            out = self.one_row(x)
        elif self.quant is None:
            out = self.dense(x, self.weight, np.empty((x.shape[0], self.rows), np.float32))
        else:
            fmt, options, parts = self.quant
            fused = None if self.native is None else qk.native_linear(self.native[0], fmt, x.shape[0], self.cols, bits)
            if fused is not None:  # the fused or the multi-row kernel, called directly
                out = np.empty((x.shape[0], self.rows), np.float32)
                fused(fmt, self.native[1], self.rows, self.cols, x, out, group=self.native[2], act_bits=bits)
            else:
                out = qk.quant_linear(x, fmt, options, parts, (self.rows, self.cols), self._decode, bits)
        if self.bias is not None:
            out += self.bias
        return out

    def _one_row(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """The product of one activation row (a decode step) with its kernel and arguments bound
        once, or None where the general path serves it: a step makes ~50 of these calls, and
        choosing the kernel at each cost ~1.3 us of them (~2% of a q4_0 step)."""
        rows, cols = self.rows, self.cols
        if self.quant is None:
            gemv, w = self.dense, self.weight
            return lambda x: gemv(x, w, np.empty((1, rows), np.float32))
        if self.native is None:
            return None
        (fmt, _, parts), (lib, native_parts, group) = self.quant, self.native
        if fmt == "q8_0":
            gemv_q8_0, blocks, decode = _body(dk.gemv_q8_0), parts["blocks"], self._decode
            return lambda x: gemv_q8_0(x, blocks, (rows, cols), decode)
        fused = qk.native_linear(lib, fmt, 1)
        if fused is None:
            return None

        def product(x: np.ndarray) -> np.ndarray:
            out = np.empty((1, rows), np.float32)
            fused(fmt, native_parts, rows, cols, x, out, group=group)
            return out

        return product

    def _decode(self, start: int, stop: int) -> np.ndarray:
        """Rows start:stop of the merged quantized weight as float32 (the kernels' NumPy decoder)."""
        return self.format_obj.dequantize_rows(self.quant[2], (self.rows, self.cols), start, stop)


def _array(t: Any) -> np.ndarray:
    return np.asarray(t.detach().numpy(), np.float32)


def _merge_dense(linears: list[Module], arena: Arena) -> np.ndarray:
    """One (sum of rows, K) float32 array in `arena`; each module's weight becomes a view of its rows."""
    merged = arena.take((sum(int(m.weight.shape[0]) for m in linears), int(linears[0].weight.shape[1])), np.float32)
    start = 0
    for m in linears:
        stop = start + m.weight.shape[0]
        source = m.weight.detach().numpy()
        merged[start:stop] = source
        m.weight.data = Tensor(merged[start:stop])  # the original is freed unless held elsewhere,
        release_pages(source)  # and a mapped file's pages are handed back: RSS does not double
        start = stop
    return merged


def _merge_quantized(linears: list[Module], arena: Arena) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """(format name, options, packed parts) of the weights stacked row-wise in `arena`; modules
    rebound to views. One weight's parts are copied as they are (they need not be stored by row)."""
    weights: list[QuantizedTensor] = [m.weight for m in linears]
    first = weights[0]
    total = (sum(int(w.shape[0]) for w in weights), int(first.shape[1]))
    merged = {}
    for name, part in first.packed().items():
        shape = part.shape if len(weights) == 1 else (sum(w.packed()[name].shape[0] for w in weights),) + part.shape[1:]
        merged[name] = arena.take(shape, part.dtype)
    start = 0
    for m, w in zip(linears, weights):
        stop = start + int(w.shape[0])
        views = {name: part if len(weights) == 1 else part[start:stop] for name, part in merged.items()}
        for name, view in views.items():
            view[...] = w.packed()[name]
            release_pages(w.packed()[name])
        m.weight = QuantizedTensor(w.format, views, tuple(w.shape), w.dtype)  # validates the views
        start = stop
    first.format.check_parts(merged, total)
    return first.format.name, first.format.options(), merged


def _room(linears: list[Module]) -> int:
    """Bytes of an Arena that holds every weight of `linears`, however they are merged."""
    parts = [p for m in linears for p in (m.weight.packed().values() if isinstance(m.weight, QuantizedTensor)
                                          else [m.weight.detach().numpy()])]
    return sum(Arena.room(p.nbytes) for p in parts)


def _mergeable(linears: list[Module]) -> bool:
    """Whether the weights can be concatenated row-wise (same kind, same format, row-major parts)."""
    weights = [m.weight for m in linears]
    if len({int(w.shape[1]) for w in weights}) != 1:
        return False
    if all(isinstance(w, Tensor) for w in weights):
        return all(w.dtype == weights[0].dtype for w in weights)
    if not all(isinstance(w, QuantizedTensor) and not w.is_transposed for w in weights):
        return False
    fmt = weights[0].format
    if any(w.format.name != fmt.name or w.format.options() != fmt.options() for w in weights):
        return False
    for w in weights:
        parts = w.packed()
        if set(parts) != set(weights[0].packed()):
            return False
        if any(p.ndim == 0 or p.shape[0] != w.shape[0] or p.shape[1:] != weights[0].packed()[n].shape[1:]
               for n, p in parts.items()):
            return False  # a part not stored one row per weight row (e.g. int8's outlier columns)
    return True


def _projections(linears: list[Module], arena: Arena) -> list[Projection]:
    """One merged Projection when the weights allow it, else one per module."""
    if len(linears) > 1 and _mergeable(linears):
        return [Projection(linears, arena)]
    return [Projection([m], arena) for m in linears]


def _run(projs: list[Projection], x: np.ndarray) -> np.ndarray:
    if len(projs) == 1:
        return projs[0](x)
    return np.concatenate([p(x) for p in projs], axis=1)


def _linears(layer: Module) -> list[Module]:
    """The decoder layer's projections in the order a step runs them: q, k, v, o, gate, up, down."""
    attn, mlp = layer.self_attn, layer.mlp
    return [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]


class _Layer:
    def __init__(self, layer: Module, arena: Arena) -> None:
        self.norm1, self.eps1 = _array(layer.input_layernorm.weight), _eps(layer.input_layernorm)
        self.norm2, self.eps2 = _array(layer.post_attention_layernorm.weight), _eps(layer.post_attention_layernorm)
        q, k, v, o, gate, up, down = _linears(layer)
        self.qkv = _projections([q, k, v], arena)
        self.o = Projection([o], arena)
        self.gate_up = _projections([gate, up], arena)
        self.down = Projection([down], arena)


def _eps(norm: RMSNorm) -> float:
    return float(np.finfo(np.float32).eps) if norm.eps is None else float(norm.eps)


class LlamaDecoder:
    """The prepared fast path of one LlamaForCausalLM (see the module docstring)."""

    def __init__(self, model: Any) -> None:
        c = model.config
        self.heads, self.kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.scale = 1.0 / math.sqrt(self.head_dim)
        # one owner for every projection weight, in the order a step reads them
        layers = model.model.layers
        arena = Arena(sum(_room(_linears(layer)) for layer in layers) + _room([model.lm_head]))
        self.layers = [_Layer(layer, arena) for layer in layers]
        tied = model.model.embed_tokens.weight is model.lm_head.weight
        self.lm_head = Projection([model.lm_head], arena)
        if tied:  # a rebound quantized lm_head is a new object: the embedding takes it too, not the old copy
            model.model.embed_tokens.weight = model.lm_head.weight
        w = model.model.embed_tokens.weight
        self.embed = w if isinstance(w, QuantizedTensor) else w.detach().numpy()
        # a decode step's one quantized row, decoded by the native decoder called directly
        self.embed_args = None if not isinstance(w, QuantizedTensor) else qk._native_args(
            w.format.name, w.format.options(), w.packed())
        self.norm, self.norm_eps = _array(model.model.norm.weight), _eps(model.model.norm)
        # the norms in the order a step applies them: each layer's residual add is fused
        # with the norm that reads its sum, the next layer's input norm or the final norm
        self.norms = [(layer.norm1, layer.eps1) for layer in self.layers] + [(self.norm, self.norm_eps)]
        self.ffn = c.intermediate_size
        self.rope = model.rotary()
        self.fingerprint = _fingerprint(model)  # after merging: the rebound views
        self.kernels = [_body(k) for k in (dk.rms_norm_rows, dk.add_rms_norm_rows, dk.rotary_qkv, dk.gqa_attention,
                                           dk.silu_mul)]

    def logits(self, ids: np.ndarray, positions: np.ndarray, mask: Tensor | None, cache: KVCache | SlotKVCache,
               start: int, last: np.ndarray | None = None) -> np.ndarray:
        """float32 logits (B, vocab) of each row's last position (or of position `last[b]`, for
        right-padded prompts), writing the new keys into `cache`.

        Arguments as LlamaForCausalLM.hidden_states takes them (ids (B, T) int, positions (B, T));
        a SlotKVCache writes each row at its own length, as its layers' `update` does.
        """
        b, t = ids.shape
        cos_table, sin_table = self.rope.covering(positions)
        if isinstance(cache, SlotKVCache):
            n = cache.rows
            starts = np.ascontiguousarray(cache.lengths[:n], np.int64)
            kv = [(c.keys.numpy()[:n], c.values.numpy()[:n]) for c in cache.layers]
            total = int(starts.max()) + t
        else:
            starts = np.full(b, start, np.int64)
            kv = [(c.keys.numpy(), c.values.numpy()) for c in cache.layers]
            total = start + t
        seen = _key_mask(mask, start, t, total, b)
        x = self._embed(ids.reshape(-1))
        cos, sin = cos_table.numpy()[positions.reshape(-1)], sin_table.numpy()[positions.reshape(-1)]
        m = b * t
        h, kvh, d = self.heads, self.kv_heads, self.head_dim
        xn = np.empty_like(x)
        q = np.empty((m, h * d), np.float32)
        att = np.empty((b, t, h * d), np.float32)
        act = np.empty((m, self.ffn), np.float32)
        q4, att2 = q.reshape(b, t, h, d), att.reshape(m, h * d)
        rms_norm, add_rms_norm, rotary, attention, silu_mul = self.kernels
        rms_norm(x, *self.norms[0], xn)
        for layer, (keys, values), (norm, eps) in zip(self.layers, kv, self.norms[1:]):
            qkv = _run(layer.qkv, xn)
            rotary(qkv, cos, sin, h, kvh, starts, q, keys, values)
            attention(q4, keys, values, seen, self.scale, att)
            add_rms_norm(x, layer.o(att2), layer.norm2, layer.eps2, xn)
            silu_mul(_run(layer.gate_up, xn), act)
            add_rms_norm(x, layer.down(act), norm, eps, xn)
        # the final norm ran on every row (rows are normalised independently); keep the last position's
        picked = xn.reshape(b, t, -1)[:, -1] if last is None else xn.reshape(b, t, -1)[np.arange(b), last]
        return self.lm_head(np.ascontiguousarray(picked))

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        w = self.embed
        if not isinstance(w, QuantizedTensor):
            if ids.min() < 0 or ids.max() >= w.shape[0]:  # NumPy would take a negative id from the end
                raise IndexError(f"token id out of range for an embedding of {w.shape[0]} rows")
            return w[ids]
        if ids.size > 8:  # a prompt: take_rows decodes runs of ids together
            return np.ascontiguousarray(w.take_rows(ids), np.float32)
        rows, cols = (int(s) for s in w.shape)
        if ids.min() < 0 or ids.max() >= rows:
            raise IndexError(f"token id out of range for an embedding of {rows} rows")
        fmt, parts, args = w.format, w.packed(), self.embed_args
        out = np.empty((ids.size, cols), np.float32)
        for j, i in enumerate(ids.tolist()):
            if args is None:  # no native decoder for this format (or no extension): NumPy's
                out[j] = fmt.dequantize_rows(parts, (rows, cols), i, i + 1)[0]
            else:
                native.load().quant_dequantize_rows(fmt.name, args["parts"], rows, cols, i, i + 1, out[j:j + 1],
                                                    group=args["group"], threads=1)
        return out


def _body(k: Kernel) -> Callable[..., Any]:
    """The body a call of kernel `k` would run, resolved once (no per-call dispatch)."""
    if k.body_for(np.zeros(1, np.float32)) == "native":
        return functools.partial(k.native, native.load())
    return k.reference


def _key_mask(mask: Tensor | None, start: int, t: int, total: int, b: int) -> np.ndarray:
    """(B, T, S) bool: the model's mask (B, 1, T, S) as is, or causal attention when it is None."""
    if mask is not None:
        return np.ascontiguousarray(mask.numpy()[:, 0], np.bool_)
    if t == 1 and total == start + 1:  # a decode step sees every key (a quarter of the general form's time)
        return np.ones((b, 1, total), np.bool_)
    q = np.arange(start, start + t)[:, None]
    return np.ascontiguousarray(np.broadcast_to(np.arange(total)[None, :] <= q, (b, t, total)))


def _fingerprint(model: Any) -> tuple[int, ...]:
    """Identities of every array the fast path reads: a reassigned weight makes it stale."""
    ids = []
    for _, v in model.state_dict(keep_vars=True).items():
        if isinstance(v, QuantizedTensor):
            ids.extend(id(p) for p in v.packed().values())
        elif isinstance(v, Tensor):
            ids.append(id(v._data))
    return tuple(ids)


def eligible(model: Any) -> bool:
    """Whether the fast path computes exactly what the module path would (module docstring)."""
    if is_grad_enabled() or getattr(model, "memory", None) is not None:
        return False
    if model.model.norm.weight.dtype.np_dtype != np.float32:
        return False
    for m in model.modules():
        if m._forward_pre_hooks or m._forward_hooks:
            return False
    for layer in model.model.layers:
        if not all(_plain_linear(m) for m in _linears(layer)):
            return False
        if type(layer.input_layernorm) is not RMSNorm or type(layer.post_attention_layernorm) is not RMSNorm:
            return False
    embed = model.model.embed_tokens
    if not isinstance(embed, (Embedding, QuantizedEmbedding)) or type(embed).forward not in (
            Embedding.forward, QuantizedEmbedding.forward) or getattr(embed, "max_norm", None) is not None:
        return False
    return _plain_linear(model.lm_head) and type(model.model.norm) is RMSNorm


def _plain_linear(m: Module) -> bool:
    if type(m).forward not in (Linear.forward, QuantizedLinear.forward) or not isinstance(m, (Linear, QuantizedLinear)):
        return False
    w = m.weight
    if isinstance(w, QuantizedTensor):
        return not w.is_transposed and w.dtype.np_dtype == np.float32
    return w.dtype.np_dtype == np.float32 and (m.bias is None or m.bias.dtype.np_dtype == np.float32)


_DECODERS: weakref.WeakKeyDictionary[Any, tuple[Any, LlamaDecoder]] = weakref.WeakKeyDictionary()


def fast_path(model: Any, cache: Any) -> LlamaDecoder | None:
    """The model's prepared decoder, or None where the module path must run.

    Checked once per cache object (a generation, or a serving engine's slot cache together
    with the views of its rows that joins prefill through: the checks cost ~3 ms, a tenth of
    a join),
    so they do not run at every step; a decoder is rebuilt when a weight was reassigned.
    """
    if is_grad_enabled():
        return None
    cache = cache.owner if getattr(cache, "owner", None) is not None else cache
    held = _DECODERS.get(model)
    if held is not None and held[0]() is cache:
        return held[1]
    if not eligible(model):
        _DECODERS.pop(model, None)
        return None
    decoder = held[1] if held is not None else None
    if decoder is None or decoder.fingerprint != _fingerprint(model):
        decoder = LlamaDecoder(model)
    _DECODERS[model] = (weakref.ref(cache), decoder)
    return decoder
