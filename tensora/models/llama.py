"""The Llama family as one config-driven model: Llama 1-3, Mistral, Qwen2, SmolLM.

    h = embed(ids)
    for each layer:  h = h + attn(rms_norm(h));  h = h + mlp(rms_norm(h))
    logits = lm_head(rms_norm(h))

attn: grouped-query attention with rotary positions (theta, linear or Llama-3 scaling),
optional q/k/v bias (Qwen2) and sliding window (Mistral); mlp: SwiGLU,
down(silu(gate(x)) * up(x)). Module and parameter names are transformers' own
(`model.layers.0.self_attn.q_proj.weight`), so a Hugging Face state dict loads as is;
GGUF names (`blk.0.attn_q.weight`) are mapped onto them by `gguf_state_dict`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

from ..nn import Module, ModuleList, RMSNorm
from ..nn import functional as F
from ..quant import QuantizedTensor
from ..tensor import Tensor
from .base import CausalLM
from .layers import (CheckpointEmbedding, CheckpointLinear, KVCache, LayerCache, RotaryTable, apply_rotary,
                     llama3_scaling_from_factors, rope_inverse_frequencies)
from .llama_decode import fast_path
from .registry import register


@dataclass
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_id: Any = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_hf(cls, c: dict[str, Any], tensor_names: set[str] = frozenset()) -> LlamaConfig:
        """From a transformers config.json (llama, mistral, qwen2)."""
        heads = c["num_attention_heads"]
        qwen = c.get("model_type") == "qwen2"
        window = _sliding_window(c)
        return cls(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                   num_hidden_layers=c["num_hidden_layers"], num_attention_heads=heads,
                   num_key_value_heads=c.get("num_key_value_heads") or heads,
                   head_dim=c.get("head_dim") or c["hidden_size"] // heads,
                   max_position_embeddings=c.get("max_position_embeddings", 2048),
                   rms_norm_eps=c.get("rms_norm_eps", 1e-6), rope_theta=_rope_theta(c),
                   rope_scaling=c.get("rope_scaling") or c.get("rope_parameters"), tie_word_embeddings=c.get("tie_word_embeddings", False),
                   qkv_bias=qwen or c.get("attention_bias", False), o_bias=not qwen and c.get("attention_bias", False),
                   mlp_bias=c.get("mlp_bias", False), sliding_window=window,
                   bos_token_id=c.get("bos_token_id"), eos_token_id=c.get("eos_token_id"), extra=c)

    @classmethod
    def from_gguf(cls, meta: dict[str, Any], tensor_names: set[str]) -> LlamaConfig:
        """From GGUF metadata (`{arch}.block_count`, ...), as llama.cpp reads it."""
        arch = meta["general.architecture"]

        def key(name: str, default: Any = None) -> Any:
            return meta.get(f"{arch}.{name}", default)

        def need(name: str) -> Any:
            return meta[f"{arch}.{name}"]  # llama.cpp refuses a file without it too

        heads = need("attention.head_count")
        hidden = need("embedding_length")
        head_dim = key("attention.key_length") or key("rope.dimension_count") or hidden // heads
        scaling = None
        kind = key("rope.scaling.type")
        if kind == "linear":
            scaling = {"rope_type": "linear", "factor": key("rope.scaling.factor")}
        elif kind not in (None, "none"):
            scaling = {"rope_type": kind}  # refused by RotaryTable: not silently computed without its scaling
        vocab = key("vocab_size") or len(_vocabulary(meta, arch))
        return cls(vocab_size=vocab, hidden_size=hidden, intermediate_size=need("feed_forward_length"),
                   num_hidden_layers=need("block_count"), num_attention_heads=heads,
                   num_key_value_heads=key("attention.head_count_kv") or heads, head_dim=head_dim,
                   max_position_embeddings=key("context_length", 2048),
                   rms_norm_eps=key("attention.layer_norm_rms_epsilon", 1e-6),
                   rope_theta=key("rope.freq_base", 10000.0), rope_scaling=scaling,
                   tie_word_embeddings="output.weight" not in tensor_names,
                   qkv_bias="blk.0.attn_q.bias" in tensor_names, o_bias="blk.0.attn_output.bias" in tensor_names,
                   mlp_bias="blk.0.ffn_up.bias" in tensor_names,
                   sliding_window=key("attention.sliding_window"),
                   bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
                   eos_token_id=meta.get("tokenizer.ggml.eos_token_id"), extra={"gguf_arch": arch})

    @property
    def gguf_architecture(self) -> str:
        """llama.cpp's general.architecture for this model: "qwen2" for Qwen2, "llama" for the rest."""
        return self.extra.get("gguf_arch") or ("qwen2" if self.extra.get("model_type") == "qwen2" else "llama")

    def to_hf(self) -> dict[str, Any]:
        """A transformers config.json that `from_hf` (and transformers) read back as this config."""
        qwen = self.gguf_architecture == "qwen2"
        if not qwen and self.qkv_bias != self.o_bias:
            raise ValueError("a Llama with biases on q/k/v but not on o (or the reverse) has no transformers "
                             "config (attention_bias covers all four)")
        model_type = "qwen2" if qwen else "mistral" if self.sliding_window else "llama"
        scaling = self._hf_rope_scaling()
        config = {"architectures": [f"{model_type.capitalize()}ForCausalLM"], "model_type": model_type,
                  "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
                  "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_hidden_layers,
                  "num_attention_heads": self.num_attention_heads, "num_key_value_heads": self.num_key_value_heads,
                  "head_dim": self.head_dim, "max_position_embeddings": self.max_position_embeddings,
                  "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta, "rope_scaling": scaling,
                  "tie_word_embeddings": self.tie_word_embeddings, "hidden_act": "silu",
                  "attention_bias": self.o_bias, "mlp_bias": self.mlp_bias,
                  "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id}
        if self.sliding_window:
            config |= {"sliding_window": self.sliding_window, "use_sliding_window": True}
            if qwen:
                config["max_window_layers"] = 0  # every layer slides, as tensora computes it
        return config

    def _hf_rope_scaling(self) -> dict[str, Any] | None:
        """rope_scaling as transformers names it: a GGUF's rope_freqs (Llama 3.1+) as the "llama3" scaling
        they were computed from. Factors no such scaling gives stay as tensora's "freq_factors", which
        transformers ignores (it warns), so that tensora still reads them back."""
        scaling = self.rope_scaling
        if not scaling or "freq_factors" not in scaling or scaling.get("rope_type", "default") != "default":
            return scaling
        fitted = llama3_scaling_from_factors(scaling["freq_factors"], self.head_dim, self.rope_theta)
        if fitted is None:
            warnings.warn("the GGUF's rope_freqs match no Llama 3 rope_scaling; config.json keeps them as "
                          "rope_scaling.freq_factors, which tensora reads and transformers ignores", stacklevel=3)
            return scaling
        return fitted

    def to_gguf(self) -> dict[str, Any]:
        """llama.cpp's hyperparameter keys for this config, as convert_hf_to_gguf writes them
        (Llama 3 rope scaling travels as the rope_freqs tensor instead: see LlamaForCausalLM.gguf_tensors)."""
        arch = self.gguf_architecture
        meta = {"general.architecture": arch, "vocab_size": self.vocab_size,
                "context_length": self.max_position_embeddings, "embedding_length": self.hidden_size,
                "block_count": self.num_hidden_layers, "feed_forward_length": self.intermediate_size,
                "rope.dimension_count": self.head_dim, "attention.head_count": self.num_attention_heads,
                "attention.head_count_kv": self.num_key_value_heads, "rope.freq_base": float(self.rope_theta),
                "attention.layer_norm_rms_epsilon": float(self.rms_norm_eps)}
        if self.head_dim != self.hidden_size // self.num_attention_heads:
            meta |= {"attention.key_length": self.head_dim, "attention.value_length": self.head_dim}
        kind = (self.rope_scaling or {}).get("rope_type", (self.rope_scaling or {}).get("type"))
        if kind == "linear":
            meta |= {"rope.scaling.type": "linear", "rope.scaling.factor": float(self.rope_scaling["factor"])}
        if self.sliding_window:
            meta["attention.sliding_window"] = self.sliding_window
        return {k if k.startswith("general.") else f"{arch}.{k}": v for k, v in meta.items()}


def _sliding_window(c: dict[str, Any]) -> int | None:
    """The window every layer attends within, or None; transformers' rule for which layers slide.

    Qwen2 slides only from layer max_window_layers on (layer_types, when config.json lists them):
    a model whose layers differ is refused, not computed with one window for all.
    """
    window = c.get("sliding_window") if c.get("use_sliding_window", c.get("model_type") == "mistral") else None
    if window is None or c.get("model_type") != "qwen2":
        return window
    kinds = c.get("layer_types") or ["sliding_attention" if i >= c.get("max_window_layers", 28) else "full_attention"
                                     for i in range(c["num_hidden_layers"])]
    if all(k == "sliding_attention" for k in kinds):
        return window
    if all(k == "full_attention" for k in kinds):
        return None
    raise ValueError(f"a sliding window ({window}) on some layers only ({kinds.count('sliding_attention')} of "
                     f"{len(kinds)}) is not supported; tensora applies one attention rule to every layer")


def _vocabulary(meta: dict[str, Any], arch: str) -> list[str]:
    """The GGUF's token list, which gives the vocabulary size where `{arch}.vocab_size` is absent."""
    if "tokenizer.ggml.tokens" not in meta:
        raise KeyError(f"{arch}.vocab_size (or tokenizer.ggml.tokens)")
    return meta["tokenizer.ggml.tokens"]


def _rope_theta(c: dict[str, Any]) -> float:
    if "rope_theta" in c:
        return float(c["rope_theta"])
    params = c.get("rope_parameters") or {}  # transformers >= 5 nests it
    return float(params.get("rope_theta", 10000.0))


class LlamaAttention(Module):
    def __init__(self, c: LlamaConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = CheckpointLinear(c.hidden_size, self.heads * c.head_dim, bias=c.qkv_bias)
        self.k_proj = CheckpointLinear(c.hidden_size, self.kv_heads * c.head_dim, bias=c.qkv_bias)
        self.v_proj = CheckpointLinear(c.hidden_size, self.kv_heads * c.head_dim, bias=c.qkv_bias)
        self.o_proj = CheckpointLinear(self.heads * c.head_dim, c.hidden_size, bias=c.o_bias)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None, cache: LayerCache | None,
                start: int) -> Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            k, v = cache.update(start, k, v)
        causal = mask is None and t > 1
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                             enable_gqa=self.kv_heads != self.heads)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class LlamaMLP(Module):
    def __init__(self, c: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = CheckpointLinear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.up_proj = CheckpointLinear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.down_proj = CheckpointLinear(c.intermediate_size, c.hidden_size, bias=c.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(Module):
    def __init__(self, c: LlamaConfig) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(c)
        self.mlp = LlamaMLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps)

    def forward(self, h: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None, cache: LayerCache | None,
                start: int) -> Tensor:
        h = h + self.self_attn(self.input_layernorm(h), rope, mask, cache, start)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaBackbone(Module):
    def __init__(self, c: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = CheckpointEmbedding(c.vocab_size, c.hidden_size)
        self.layers = ModuleList([LlamaDecoderLayer(c) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps)


@register("llama", hf_model_types=("llama", "mistral", "qwen2"), gguf_architectures=("llama", "qwen2"))
class LlamaForCausalLM(CausalLM):
    """Llama-family causal LM; `forward(ids)` gives logits (B, T, vocab)."""

    config_class = LlamaConfig

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaBackbone(config)
        self.lm_head = CheckpointLinear(config.hidden_size, config.vocab_size, bias=False)
        self._rope: RotaryTable | None = None
        rope_inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)  # refuse an unknown kind now

    def rotary(self) -> RotaryTable:
        c = self.config
        if self._rope is None or self._rope.cos.dtype is not self.model.norm.weight.dtype:
            self._rope = RotaryTable(c.head_dim, c.max_position_embeddings, c.rope_theta, c.rope_scaling,
                                     self.model.norm.weight.dtype)
        return self._rope

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        c = self.config
        return KVCache(c.num_hidden_layers, batch, c.num_key_value_heads, capacity, c.head_dim,
                       self.model.norm.weight.dtype)

    def hidden_states(self, ids: Tensor, positions: np.ndarray, mask: Tensor | None, cache: KVCache | None,
                      start: int) -> Tensor:
        h = self.model.embed_tokens(ids)
        if h.dtype is not self.model.norm.weight.dtype:
            h = h.to(self.model.norm.weight.dtype)
        rope = self.rotary().lookup(positions)
        for i, layer in enumerate(self.model.layers):
            h = layer(h, rope, mask, None if cache is None else cache[i], start)
        return self.model.norm(h)

    def next_token_logits(self, ids: np.ndarray, positions: np.ndarray, mask: Tensor | None, cache: Any,
                          start: int, last: np.ndarray | None = None) -> np.ndarray:
        """The inference fast path (llama_decode.py) where it applies, else the module path."""
        decoder = None if cache is None else fast_path(self, cache)
        if decoder is None:
            return super().next_token_logits(ids, positions, mask, cache, start, last)
        return decoder.logits(ids, positions, mask, cache, start, last)

    @property
    def sliding_window(self) -> int | None:
        return self.config.sliding_window

    # -- checkpoint names -------------------------------------------------------------------

    def tied_weights(self) -> dict[str, str]:
        return {"lm_head.weight": "model.embed_tokens.weight"} if self.config.tie_word_embeddings else {}

    def gguf_state_dict(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """GGUF (llama.cpp) tensors under transformers' names; Q/K rows back in rotate-half order."""
        c = self.config
        permuted = c.extra.get("gguf_arch") == "llama"  # llama.cpp's converter interleaves llama's Q/K rows
        out: dict[str, Any] = {}
        for name, t in tensors.items():
            if name == "rope_freqs.weight":  # Llama 3.1+ rope scaling, as llama.cpp's per-frequency divisors
                self._use_freq_factors(t)
                continue
            hf = _GGUF_NAMES.get(name) or _gguf_layer_name(name)
            if hf is None:  # a tensor this model has no place for: the loader names it as unexpected
                out[name] = t
                continue
            if permuted and (hf.endswith("q_proj.weight") or hf.endswith("k_proj.weight")
                             or hf.endswith("q_proj.bias") or hf.endswith("k_proj.bias")):
                heads = c.num_attention_heads if ".q_proj." in hf else c.num_key_value_heads
                if t.shape[0] != heads * c.head_dim:  # else the row permutation would index past the end
                    raise ValueError(f"{name}: {t.shape[0]} rows, but the metadata gives {heads} heads of "
                                     f"{c.head_dim} ({heads * c.head_dim} rows)")
                t = take_rows(t, _unpermute_rows(heads, c.head_dim))
            out[hf] = t
        return out

    def gguf_tensors(self, tensors: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
        """(GGUF name, tensor) for each of the model's weights, one at a time: `gguf_state_dict` inverted
        (Q/K rows interleaved for the "llama" architecture, a tied lm_head left out), then Llama 3's
        rope scaling as the rope_freqs tensor, as convert_hf_to_gguf writes it."""
        c = self.config
        permuted = c.gguf_architecture == "llama"
        for name in tensors:
            if name in self.tied_weights():
                continue
            gguf = _HF_NAMES.get(name) or _hf_layer_name(name)
            if gguf is None:
                raise ValueError(f"{name}: not a weight of {type(self).__name__}, so it has no GGUF name")
            t = tensors[name]
            if permuted and gguf.split(".")[2:3] in (["attn_q"], ["attn_k"]):
                heads = c.num_attention_heads if gguf.split(".")[2] == "attn_q" else c.num_key_value_heads
                t = take_rows(t, np.argsort(_unpermute_rows(heads, c.head_dim)))
            yield gguf, t
        scaling = dict(c.rope_scaling or {})
        if scaling.get("rope_type", scaling.get("type")) == "llama3" or "freq_factors" in scaling:
            plain = rope_inverse_frequencies(c.head_dim, c.rope_theta, None)
            yield "rope_freqs.weight", Tensor((plain / rope_inverse_frequencies(c.head_dim, c.rope_theta, scaling))
                                              .astype(np.float32))

    def _use_freq_factors(self, t: Any) -> None:
        """Divide the rotary frequencies by a GGUF's rope_freqs (convert_hf_to_gguf writes Llama 3's
        scaling as these factors, not as metadata), as llama.cpp's rope does."""
        c = self.config
        factors = (t.dequantize() if isinstance(t, QuantizedTensor) else t).float().numpy().reshape(-1)
        if factors.size != c.head_dim // 2:
            raise ValueError(f"rope_freqs.weight holds {factors.size} factors for {c.head_dim // 2} rotary frequencies")
        c.rope_scaling = {**(c.rope_scaling or {"rope_type": "default"}), "freq_factors": factors.tolist()}
        self._rope = None


_GGUF_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
               "output.weight": "lm_head.weight"}
_GGUF_LAYER = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
               "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj"}


_HF_NAMES = {hf: gguf for gguf, hf in _GGUF_NAMES.items()}
_HF_LAYER = {hf: gguf for gguf, hf in _GGUF_LAYER.items()}


def _hf_layer_name(name: str) -> str | None:
    """`model.layers.3.self_attn.q_proj.weight` -> `blk.3.attn_q.weight` (None for other names)."""
    parts = name.split(".")
    module = ".".join(parts[3:-1])
    if len(parts) > 4 and parts[:2] == ["model", "layers"] and module in _HF_LAYER:
        return f"blk.{parts[2]}.{_HF_LAYER[module]}.{parts[-1]}"
    return None


def _gguf_layer_name(name: str) -> str | None:
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _GGUF_LAYER:
        return f"model.layers.{parts[1]}.{_GGUF_LAYER[parts[2]]}.{parts[3]}"
    return None


def _unpermute_rows(heads: int, head_dim: int) -> np.ndarray:
    """Row order taking llama.cpp's interleaved rotary layout back to transformers' rotate-half one.

    The converter stores, within each head, row 2b + a at the place of row a * head_dim/2 + b.
    """
    half = head_dim // 2
    h, a, b = np.meshgrid(np.arange(heads), np.arange(2), np.arange(half), indexing="ij")
    return (h * head_dim + 2 * b + a).reshape(-1)


def take_rows(t: Any, rows: np.ndarray) -> Any:
    """Rows of a dense Tensor, or of a GGUF-quantized one (its blocks are per row: permuted, still packed)."""
    if isinstance(t, Tensor):
        return Tensor(np.ascontiguousarray(t.detach().numpy()[rows]))
    blocks = t.packed()["blocks"]  # GGUF block formats: one part, a row of blocks per weight row
    return QuantizedTensor(t.format, {"blocks": np.ascontiguousarray(blocks[rows])}, tuple(t.shape), t.dtype)
