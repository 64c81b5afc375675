"""GPT-2: learned positions, pre-LayerNorm blocks, fused QKV projection, GELU (tanh) MLP, tied head.

    h = wte(ids) + wpe(positions)
    for each block:  h = h + attn(ln_1(h));  h = h + mlp(ln_2(h))
    logits = ln_f(h) @ wte.T

transformers stores the projections as Conv1D, weight (in, out); they are transposed to
Linear's (out, in) on load. GGUF files (llama.cpp's converter transposes them already)
map onto the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from ..nn import LayerNorm, Module, ModuleList
from ..nn import functional as F
from ..tensor import Tensor
from .base import CausalLM
from .layers import CheckpointEmbedding, CheckpointLinear, KVCache, LayerCache
from .registry import register


@dataclass
class GPT2Config:
    vocab_size: int
    n_embd: int
    n_layer: int
    n_head: int
    n_inner: int
    max_position_embeddings: int
    layer_norm_epsilon: float = 1e-5
    eos_token_id: Any = None

    @classmethod
    def from_hf(cls, c: dict[str, Any], tensor_names: set[str] = frozenset()) -> GPT2Config:
        act = c.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"GPT-2 activation_function {act!r} is not supported (gelu_new)")
        return cls(vocab_size=c["vocab_size"], n_embd=c["n_embd"], n_layer=c["n_layer"], n_head=c["n_head"],
                   n_inner=c.get("n_inner") or 4 * c["n_embd"], max_position_embeddings=c["n_positions"],
                   layer_norm_epsilon=c.get("layer_norm_epsilon", 1e-5), eos_token_id=c.get("eos_token_id"))

    @classmethod
    def from_gguf(cls, meta: dict[str, Any], tensor_names: set[str]) -> GPT2Config:
        def key(name: str, default: Any = None) -> Any:
            return meta.get(f"gpt2.{name}", default)

        def need(name: str) -> Any:
            return meta[f"gpt2.{name}"]  # llama.cpp refuses a file without it too

        vocab = key("vocab_size") or len(meta.get("tokenizer.ggml.tokens") or ()) or need("vocab_size")
        return cls(vocab_size=vocab, n_embd=need("embedding_length"),
                   n_layer=need("block_count"), n_head=need("attention.head_count"),
                   n_inner=key("feed_forward_length") or 4 * need("embedding_length"),
                   max_position_embeddings=need("context_length"),
                   layer_norm_epsilon=key("attention.layer_norm_epsilon", 1e-5),
                   eos_token_id=meta.get("tokenizer.ggml.eos_token_id"))

    def to_hf(self) -> dict[str, Any]:
        """A transformers config.json that `from_hf` reads back as this config."""
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": self.vocab_size,
                "n_embd": self.n_embd, "n_layer": self.n_layer, "n_head": self.n_head, "n_inner": self.n_inner,
                "n_positions": self.max_position_embeddings, "layer_norm_epsilon": self.layer_norm_epsilon,
                "activation_function": "gelu_new", "eos_token_id": self.eos_token_id}

    def to_gguf(self) -> dict[str, Any]:
        """llama.cpp's gpt2 hyperparameter keys, as convert_hf_to_gguf writes them."""
        meta = {"vocab_size": self.vocab_size, "context_length": self.max_position_embeddings,
                "embedding_length": self.n_embd, "feed_forward_length": self.n_inner, "block_count": self.n_layer,
                "attention.head_count": self.n_head, "attention.layer_norm_epsilon": float(self.layer_norm_epsilon)}
        return {"general.architecture": "gpt2", **{f"gpt2.{k}": v for k, v in meta.items()}}


class GPT2Attention(Module):
    def __init__(self, c: GPT2Config) -> None:
        super().__init__()
        self.heads, self.head_dim = c.n_head, c.n_embd // c.n_head
        self.c_attn = CheckpointLinear(c.n_embd, 3 * c.n_embd)
        self.c_proj = CheckpointLinear(c.n_embd, c.n_embd)

    def forward(self, x: Tensor, mask: Tensor | None, cache: LayerCache | None, start: int) -> Tensor:
        b, t, d = x.shape
        q, k, v = (y.view(b, t, self.heads, self.head_dim).transpose(1, 2) for y in self.c_attn(x).split(d, dim=-1))
        if cache is not None:
            k, v = cache.update(start, k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and t > 1)
        return self.c_proj(out.transpose(1, 2).reshape(b, t, d))


class GPT2MLP(Module):
    def __init__(self, c: GPT2Config) -> None:
        super().__init__()
        self.c_fc = CheckpointLinear(c.n_embd, c.n_inner)
        self.c_proj = CheckpointLinear(c.n_inner, c.n_embd)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class GPT2Block(Module):
    def __init__(self, c: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(c.n_embd, eps=c.layer_norm_epsilon)
        self.attn = GPT2Attention(c)
        self.ln_2 = LayerNorm(c.n_embd, eps=c.layer_norm_epsilon)
        self.mlp = GPT2MLP(c)

    def forward(self, h: Tensor, mask: Tensor | None, cache: LayerCache | None, start: int) -> Tensor:
        h = h + self.attn(self.ln_1(h), mask, cache, start)
        return h + self.mlp(self.ln_2(h))


class GPT2Backbone(Module):
    def __init__(self, c: GPT2Config) -> None:
        super().__init__()
        self.wte = CheckpointEmbedding(c.vocab_size, c.n_embd)
        self.wpe = CheckpointEmbedding(c.max_position_embeddings, c.n_embd)
        self.h = ModuleList([GPT2Block(c) for _ in range(c.n_layer)])
        self.ln_f = LayerNorm(c.n_embd, eps=c.layer_norm_epsilon)


@register("gpt2", hf_model_types=("gpt2",), gguf_architectures=("gpt2",))
class GPT2LMHeadModel(CausalLM):
    """GPT-2 causal LM; `forward(ids)` gives logits (B, T, vocab)."""

    config_class = GPT2Config

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = config
        self.transformer = GPT2Backbone(config)
        self.lm_head = CheckpointLinear(config.n_embd, config.vocab_size, bias=False)

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        c = self.config
        return KVCache(c.n_layer, batch, c.n_head, capacity, c.n_embd // c.n_head, self.transformer.ln_f.weight.dtype)

    def hidden_states(self, ids: Tensor, positions: np.ndarray, mask: Tensor | None, cache: KVCache | None,
                      start: int) -> Tensor:
        if positions.size and int(positions.max()) >= self.config.max_position_embeddings:
            raise ValueError(f"position {int(positions.max())} is beyond GPT-2's "
                             f"{self.config.max_position_embeddings} learned positions")
        t = self.transformer
        h = t.wte(ids) + t.wpe(Tensor(positions.astype(np.int64)))
        for i, block in enumerate(t.h):
            h = block(h, mask, None if cache is None else cache[i], start)
        return t.ln_f(h)

    def tied_weights(self) -> dict[str, str]:
        return {"lm_head.weight": "transformer.wte.weight"}

    def hf_state_dict(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """transformers' names, with the Conv1D weights (in, out) transposed to Linear's (out, in)."""
        out = {}
        for name, t in tensors.items():
            name = name if name.startswith(("transformer.", "lm_head.")) else f"transformer.{name}"
            if name.endswith(_CONV1D):
                t = Tensor(np.ascontiguousarray(t.numpy().T))
            out[name] = t
        return out

    def hf_layout(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """`hf_state_dict` inverted for dense tensors: the Conv1D weights back to transformers' (in, out)."""
        return {name: Tensor(np.ascontiguousarray(t.numpy().T)) if name.endswith(_CONV1D) else t
                for name, t in tensors.items()}

    def gguf_state_dict(self, tensors: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, t in tensors.items():
            parts = name.split(".")
            if name in _GGUF_NAMES:
                out[_GGUF_NAMES[name]] = t
            elif len(parts) == 4 and parts[0] == "blk" and parts[2] in _GGUF_LAYER:
                out[f"transformer.h.{parts[1]}.{_GGUF_LAYER[parts[2]]}.{parts[3]}"] = t
            else:  # a tensor this model has no place for: the loader names it as unexpected
                out[name] = t
        return out


    def gguf_tensors(self, tensors: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
        """(GGUF name, tensor) for each of the model's weights, one at a time (`gguf_state_dict` inverted;
        the tied lm_head left out, as llama.cpp reuses token_embd). Both keep Linear's (out, in) layout."""
        for name in tensors:
            if name in self.tied_weights():
                continue
            parts = name.split(".")
            module = ".".join(parts[3:-1])
            if name in _HF_NAMES:
                yield _HF_NAMES[name], tensors[name]
            elif len(parts) > 4 and parts[:2] == ["transformer", "h"] and module in _HF_LAYER:
                yield f"blk.{parts[2]}.{_HF_LAYER[module]}.{parts[-1]}", tensors[name]
            else:
                raise ValueError(f"{name}: not a weight of {type(self).__name__}, so it has no GGUF name")


_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_GGUF_NAMES = {"token_embd.weight": "transformer.wte.weight", "position_embd.weight": "transformer.wpe.weight",
               "output_norm.weight": "transformer.ln_f.weight", "output_norm.bias": "transformer.ln_f.bias",
               "output.weight": "lm_head.weight"}
_GGUF_LAYER = {"attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj", "ffn_norm": "ln_2",
               "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}
_HF_NAMES = {hf: gguf for gguf, hf in _GGUF_NAMES.items()}
_HF_LAYER = {hf: gguf for gguf, hf in _GGUF_LAYER.items()}
