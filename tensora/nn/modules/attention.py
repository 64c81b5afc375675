"""MultiheadAttention (torch.nn.MultiheadAttention, same parameters, masks and results).

Inputs are (L, N, E) by default or (N, L, E) with batch_first (or unbatched (L, E)). Masks follow
torch: in a bool attn_mask or key_padding_mask, True means "may NOT attend" (the reverse of
scaled_dot_product_attention's bool masks); float masks are added to the scores. With
need_weights=True the scores are materialised to return the attention weights; otherwise the
work goes to tensora's scaled_dot_product_attention.

Internally everything runs batch-major, (N, H, L, head_dim): the same linear maps and the same
products as torch's (L, N*H, head_dim) layout, so the numbers agree, with fewer copies.
"""

from __future__ import annotations

import math
from typing import Any

from ... import dtypes as dt
from ...creation import empty, zeros
from ...ops.combine import cat, pad
from ...tensor import Tensor
from .. import functional as F
from .. import init
from ..module import Module
from ..parameter import Parameter
from .linear import NonDynamicallyQuantizableLinear


def canonical_mask(mask: Tensor | None, dtype: dt.DType) -> Tensor | None:
    """A float mask to add to attention scores: bool masks become -inf where True, 0 elsewhere."""
    if mask is None or mask.dtype.is_floating_point:
        return mask
    if mask.dtype is not dt.bool_:
        raise TypeError("only bool and floating types of masks are supported")
    return zeros(*mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))


def _check_shapes(query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None,
                  attn_mask: Tensor | None) -> bool:
    """True for batched (3-D) inputs, False for unbatched (2-D); torch's checks and messages otherwise."""
    if query.ndim not in (2, 3):
        raise ValueError(f"query should be unbatched 2D or batched 3D tensor but received {query.ndim}-D query tensor")
    batched = query.ndim == 3
    kind = "batched (3-D)" if batched else "unbatched (2-D)"
    if key.ndim != query.ndim or value.ndim != query.ndim:
        raise ValueError(f"For {kind} `query`, expected `key` and `value` to be {query.ndim}-D but found "
                         f"{key.ndim}-D and {value.ndim}-D tensors respectively")
    if key_padding_mask is not None and key_padding_mask.ndim != query.ndim - 1:
        raise ValueError(f"For {kind} `query`, expected `key_padding_mask` to be `None` or {query.ndim - 1}-D but "
                         f"found {key_padding_mask.ndim}-D tensor instead")
    if attn_mask is not None and attn_mask.ndim not in (2, 3):
        raise ValueError(f"For {kind} `query`, expected `attn_mask` to be `None`, 2-D or 3-D but found "
                         f"{attn_mask.ndim}-D tensor instead")
    return batched


class MultiheadAttention(Module):
    """Attention of query over key/value with num_heads heads: out_proj(concat_h softmax(q_h k_h^T / sqrt(d)) v_h).

    Parameters as torch's: in_proj_weight (3E, E) and in_proj_bias (3E) (or q/k/v_proj_weight when
    kdim/vdim differ from embed_dim), out_proj (a Linear), optional bias_k/bias_v. forward returns
    (output, weights): weights (N, L, S) averaged over heads, (N, H, L, S) with
    average_attn_weights=False, None with need_weights=False.

    >>> import tensora
    >>> mha = MultiheadAttention(8, 2, batch_first=True)
    >>> x = tensora.randn(3, 5, 8)
    >>> out, w = mha(x, x, x)
    >>> out.shape, w.shape
    (tensora.Size([3, 5, 8]), tensora.Size([3, 5, 5]))
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, *, device: Any = None, dtype: Any = None) -> None:
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} and "
                             f"num_heads={num_heads} instead")
        super().__init__()
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != embed_dim:
            raise ValueError("embed_dim must be divisible by num_heads")
        factory = dict(device=device, dtype=dtype)
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(empty(3 * embed_dim, embed_dim, **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = Parameter(empty(embed_dim, embed_dim, **factory))
            self.k_proj_weight = Parameter(empty(embed_dim, self.kdim, **factory))
            self.v_proj_weight = Parameter(empty(embed_dim, self.vdim, **factory))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = Parameter(empty(1, 1, embed_dim, **factory))
            self.bias_v = Parameter(empty(1, 1, embed_dim, **factory))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # torch's choice: Xavier for the input projection, zero biases; out_proj keeps Linear's weight init.
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
        if self.bias_v is not None:
            init.xavier_normal_(self.bias_v)

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v = the input projections of (N, *, E) inputs; self-attention does one matmul."""
        E = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:E], b[E:2 * E], b[2 * E:])
        if not self._qkv_same_embed_dim:
            return (F.linear(query, self.q_proj_weight, bq), F.linear(key, self.k_proj_weight, bk),
                    F.linear(value, self.v_proj_weight, bv))
        w = self.in_proj_weight
        if query is key and key is value:
            q, k, v = F.linear(query, w, b).chunk(3, -1)
            return q, k, v
        if key is value:
            k, v = F.linear(key, w[E:], None if b is None else b[E:]).chunk(2, -1)
            return F.linear(query, w[:E], bq), k, v
        return F.linear(query, w[:E], bq), F.linear(key, w[E:2 * E], bk), F.linear(value, w[2 * E:], bv)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        batched = _check_shapes(query, key, value, key_padding_mask, attn_mask)
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:  # (L, N, E) -> (N, L, E), keeping `is` identities for _project
            same_kv = key is value
            same_qk = query is key
            query = query.transpose(0, 1)
            key = query if same_qk else key.transpose(0, 1)
            value = key if same_kv else value.transpose(0, 1)
        N, L, E = query.shape
        if E != self.embed_dim:
            raise ValueError(f"was expecting embedding dimension of {self.embed_dim}, but got {E}")
        key_padding_mask = canonical_mask(key_padding_mask, query.dtype)
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use the Transformer "
                               "module method `generate_square_subsequent_mask` to create this mask.")
        if is_causal and key_padding_mask is None and not need_weights:
            attn_mask = None  # the hint alone says it all: sdpa builds the causal mask itself
        else:
            attn_mask = canonical_mask(attn_mask, query.dtype)
            if key_padding_mask is not None:
                is_causal = False
        q, k, v = self._project(query, key, value)
        S = k.shape[1]
        H, hd = self.num_heads, self.head_dim
        if attn_mask is not None:
            if attn_mask.ndim == 2:
                if tuple(attn_mask.shape) != (L, S):
                    raise RuntimeError(f"The shape of the 2D attn_mask is {attn_mask.shape}, but should be {(L, S)}.")
                attn_mask = attn_mask.reshape(1, 1, L, S)
            else:
                if tuple(attn_mask.shape) != (N * H, L, S):
                    raise RuntimeError(f"The shape of the 3D attn_mask is {attn_mask.shape}, but should be "
                                       f"{(N * H, L, S)}.")
                attn_mask = attn_mask.reshape(N, H, L, S)
        if self.bias_k is not None and self.bias_v is not None:
            k = cat([k, self.bias_k.expand(N, 1, E)], 1)
            v = cat([v, self.bias_v.expand(N, 1, E)], 1)
            attn_mask = None if attn_mask is None else pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else pad(key_padding_mask, (0, 1))
        q = q.reshape(N, L, H, hd).transpose(1, 2)  # (N, H, L, hd)
        k = k.reshape(N, -1, H, hd).transpose(1, 2)
        v = v.reshape(N, -1, H, hd).transpose(1, 2)
        if self.add_zero_attn:
            k = cat([k, zeros(N, H, 1, hd, dtype=k.dtype, device=k.device)], 2)
            v = cat([v, zeros(N, H, 1, hd, dtype=v.dtype, device=v.device)], 2)
            attn_mask = None if attn_mask is None else pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else pad(key_padding_mask, (0, 1))
        S = k.shape[2]
        if key_padding_mask is not None:
            if tuple(key_padding_mask.shape) != (N, S):
                raise ValueError(f"expecting key_padding_mask shape of {(N, S)}, but got {key_padding_mask.shape}")
            kpm = key_padding_mask.reshape(N, 1, 1, S)
            attn_mask = kpm if attn_mask is None else attn_mask + kpm
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            scores = (q * math.sqrt(1.0 / hd)) @ k.transpose(-2, -1)
            if attn_mask is not None:
                scores = scores + attn_mask
            weights = F.softmax(scores, -1)
            if dropout_p > 0.0:
                weights = F.dropout(weights, p=dropout_p)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal)
            weights = None
        out = F.linear(out.transpose(1, 2).reshape(N, L, E), self.out_proj.weight, self.out_proj.bias)
        if weights is not None and average_attn_weights:
            weights = weights.mean(1)
        if not batched:
            return out.squeeze(0), None if weights is None else weights.squeeze(0)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


__all__ = ["MultiheadAttention"]
