"""BERT encoder with token-type embeddings and pooler, and sentence embeddings as sentence-transformers makes them.

    h = LayerNorm(word(ids) + position(positions) + token_type(types))
    for each layer:  h = LayerNorm(h + attn(h));  h = LayerNorm(h + ffn(h))      (post-norm)
    pooled = tanh(dense(h[:, 0]))

`embed(texts)` mean-pools the last hidden states over real tokens and L2-normalises
(sentence-transformers' Pooling + Normalize modules, as all-MiniLM-L6-v2 declares them).
Names are transformers' BertModel names; a "bert." prefix (BertFor* checkpoints) is dropped.
GGUF files (llama.cpp's "bert" architecture) map onto the same names; llama.cpp's
converter drops the pooler, so a model loaded from GGUF has none (`forward` returns
None for the pooled output) while `embed` is unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..autograd.grad_mode import no_grad
from ..nn import LayerNorm, Module, ModuleList
from ..nn import functional as F
from ..tensor import Tensor
from .layers import CheckpointEmbedding, CheckpointLinear
from .registry import register

POOLING_MEAN = 1  # llama.cpp's LLAMA_POOLING_TYPE_MEAN (bert.pooling_type)


@dataclass
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    pooler: bool = True

    @classmethod
    def from_hf(cls, c: dict[str, Any], tensor_names: set[str] = frozenset()) -> BertConfig:
        """From config.json; the pooler is there when the checkpoint holds it (BertForMaskedLM's has none,
        and config.json does not say), or as `add_pooling_layer` says."""
        if c.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"BERT position_embedding_type {c['position_embedding_type']!r} is not supported")
        if c.get("hidden_act", "gelu") not in ("gelu", "gelu_new"):
            raise ValueError(f"BERT hidden_act {c['hidden_act']!r} is not supported (gelu, gelu_new)")
        return cls(**{k: c[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                         "intermediate_size")},
                   max_position_embeddings=c.get("max_position_embeddings", 512),
                   type_vocab_size=c.get("type_vocab_size", 2), layer_norm_eps=c.get("layer_norm_eps", 1e-12),
                   hidden_act=c.get("hidden_act", "gelu"), pad_token_id=c.get("pad_token_id") or 0,
                   pooler=c.get("add_pooling_layer", not tensor_names or any(
                       n.endswith("pooler.dense.weight") for n in tensor_names)))

    @classmethod
    def from_gguf(cls, meta: dict[str, Any], tensor_names: set[str]) -> BertConfig:
        """From llama.cpp's "bert" metadata. GELU stays exact (erf), as the original checkpoint was
        trained; llama.cpp's graph uses the tanh approximation, a small difference (tests/models)."""
        def key(name: str, default: Any = None) -> Any:
            return meta.get(f"bert.{name}", default)

        if key("attention.causal", False):
            raise ValueError("GGUF BERT with bert.attention.causal = true is not an encoder tensora supports")

        def need(name: str) -> Any:
            return meta[f"bert.{name}"]  # llama.cpp refuses a file without it too

        return cls(vocab_size=key("vocab_size") or len(meta.get("tokenizer.ggml.tokens") or ()) or need("vocab_size"),
                   hidden_size=need("embedding_length"), num_hidden_layers=need("block_count"),
                   num_attention_heads=need("attention.head_count"), intermediate_size=need("feed_forward_length"),
                   max_position_embeddings=key("context_length", 512),
                   type_vocab_size=meta.get("tokenizer.ggml.token_type_count", 2),
                   layer_norm_eps=key("attention.layer_norm_epsilon", 1e-12),
                   pad_token_id=meta.get("tokenizer.ggml.padding_token_id", 0), pooler=False)

    def to_hf(self) -> dict[str, Any]:
        """A transformers config.json that `from_hf` reads back as this config. `add_pooling_layer` (BertModel's
        constructor argument, not a transformers config key) says whether the checkpoint has the pooler:
        a GGUF has none."""
        keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "hidden_act", "pad_token_id")
        return {"architectures": ["BertModel"], "model_type": "bert", "position_embedding_type": "absolute",
                **{k: getattr(self, k) for k in keys}, "add_pooling_layer": self.pooler}

    def to_gguf(self) -> dict[str, Any]:
        """llama.cpp's bert keys, as convert_hf_to_gguf writes them for a sentence-transformers model (mean
        pooling, what `BertModel.embed` computes)."""
        meta = {"vocab_size": self.vocab_size, "context_length": self.max_position_embeddings,
                "embedding_length": self.hidden_size, "feed_forward_length": self.intermediate_size,
                "block_count": self.num_hidden_layers, "attention.head_count": self.num_attention_heads,
                "attention.layer_norm_epsilon": float(self.layer_norm_eps), "attention.causal": False,
                "pooling_type": POOLING_MEAN}
        return {"general.architecture": "bert", **{f"bert.{k}": v for k, v in meta.items()},
                "tokenizer.ggml.token_type_count": self.type_vocab_size}


class _Dense(Module):
    """dense -> dropout (a no-op in inference) -> LayerNorm(x + residual): BERT's output sublayers."""

    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = CheckpointLinear(d_in, d_out)
        self.LayerNorm = LayerNorm(d_out, eps=eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertSelfAttention(Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = CheckpointLinear(c.hidden_size, c.hidden_size)
        self.key = CheckpointLinear(c.hidden_size, c.hidden_size)
        self.value = CheckpointLinear(c.hidden_size, c.hidden_size)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.heads, d // self.heads).transpose(1, 2) for p in (self.query, self.key,
                                                                                              self.value))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, t, d)


class BertAttention(Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = _Dense(c.hidden_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.output(self.self(x, mask), x)


class BertIntermediate(Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = CheckpointLinear(c.hidden_size, c.intermediate_size)
        self.approximate = "tanh" if c.hidden_act == "gelu_new" else "none"

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x), approximate=self.approximate)


class BertLayer(Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = _Dense(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, h: Tensor, mask: Tensor | None) -> Tensor:
        h = self.attention(h, mask)
        return self.output(self.intermediate(h), h)


class BertEmbeddings(Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = CheckpointEmbedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = CheckpointEmbedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = CheckpointEmbedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids: Tensor, types: Tensor) -> Tensor:
        positions = Tensor(np.arange(ids.shape[1], dtype=np.int64))
        h = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings(types)
        return self.LayerNorm(h)


class BertEncoder(Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.layer = ModuleList([BertLayer(c) for _ in range(c.num_hidden_layers)])


class BertPooler(Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = CheckpointLinear(c.hidden_size, c.hidden_size)

    def forward(self, h: Tensor) -> Tensor:
        return self.dense(h[:, 0]).tanh()


@register("bert", hf_model_types=("bert",), gguf_architectures=("bert",))
class BertModel(Module):
    """BERT encoder: `forward(ids, attention_mask, token_type_ids)` -> (last hidden states, pooled)."""

    config_class = BertConfig
    tokenizer: Any = None
    #: The longest input `embed` gives the encoder (sentence-transformers' max_seq_length, read from
    #: sentence_bert_config.json by the loader); None: the model's max_position_embeddings.
    max_seq_length: int | None = None

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if config.pooler else None

    def forward(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None
                ) -> tuple[Tensor, Tensor | None]:
        ids = _ids(input_ids)
        if ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"input of {ids.shape[1]} tokens exceeds BERT's {self.config.max_position_embeddings}")
        types = _ids(np.zeros(ids.shape, np.int64) if token_type_ids is None else token_type_ids)
        mask = None if attention_mask is None else Tensor(_bool(attention_mask)[:, None, None, :])
        h = self.embeddings(ids, types)
        for layer in self.encoder.layer:
            h = layer(h, mask)
        return h, None if self.pooler is None else self.pooler(h)

    @property
    def max_input_tokens(self) -> int:
        """The most tokens of one text that `embed` reads ([CLS] and [SEP] included)."""
        return min(self.max_seq_length or self.config.max_position_embeddings, self.config.max_position_embeddings)

    def embed(self, texts: str | Sequence[str], normalize: bool = True, batch_size: int = 32) -> np.ndarray:
        """Sentence embeddings (N, hidden): mean over real tokens of the last hidden states, L2-normalised.

        Each text is cut to `max_seq_length` tokens ([CLS] and [SEP] kept), as sentence-transformers does."""
        if self.tokenizer is None:
            raise ValueError("embed() needs a model loaded with its tokenizer")
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        out = [self._embed_batch(texts[i:i + batch_size], normalize) for i in range(0, len(texts), batch_size)]
        result = np.concatenate(out) if out else np.zeros((0, self.config.hidden_size), np.float32)
        return result[0] if single else result

    def _embed_batch(self, texts: list[str], normalize: bool) -> np.ndarray:
        limit = self.max_input_tokens
        # truncated as sentence-transformers does: the text's tokens are cut, [CLS] and [SEP] stay
        encoded = [self.tokenizer.encode(t, max_length=limit) for t in texts]
        longest = max(len(e) for e in encoded)
        ids = np.full((len(encoded), longest), self.config.pad_token_id, np.int64)
        mask = np.zeros((len(encoded), longest), bool)
        for i, e in enumerate(encoded):
            ids[i, :len(e)], mask[i, :len(e)] = e, True
        with no_grad():
            h, _ = self(ids, mask)
        h = h.float().numpy()
        pooled = (h * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
        if normalize:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32)

    def tied_weights(self) -> dict[str, str]:
        return {}

    def hf_state_dict(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """BertModel names: a "bert." prefix dropped, task heads (cls.*, classifier.*) left out."""
        out = {}
        for name, t in tensors.items():
            name = name.removeprefix("bert.")
            if name.startswith(("embeddings.", "encoder.", "pooler.")):
                out[name] = t
        return out

    def gguf_state_dict(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """llama.cpp's BERT tensor names under transformers' (classifier heads, `cls.*`, left out)."""
        out = {}
        for name, t in tensors.items():
            parts = name.split(".")
            if len(parts) == 4 and parts[0] == "blk" and parts[2] in _GGUF_LAYER:
                out[f"encoder.layer.{parts[1]}.{_GGUF_LAYER[parts[2]]}.{parts[3]}"] = t
            elif len(parts) == 2 and parts[0] in _GGUF_EMBEDDINGS:
                out[f"embeddings.{_GGUF_EMBEDDINGS[parts[0]]}.{parts[-1]}"] = t
        return out


    def gguf_tensors(self, tensors: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
        """(GGUF name, tensor) for each encoder weight, one at a time (`gguf_state_dict` inverted); the pooler
        is left out, as convert_hf_to_gguf leaves it (llama.cpp pools the hidden states itself)."""
        for name in tensors:
            parts = name.split(".")
            module = ".".join(parts[3:-1])
            if parts[0] == "pooler":
                continue
            if len(parts) == 3 and parts[0] == "embeddings" and parts[1] in _HF_EMBEDDINGS:
                yield f"{_HF_EMBEDDINGS[parts[1]]}.{parts[2]}", tensors[name]
            elif len(parts) > 4 and parts[:2] == ["encoder", "layer"] and module in _HF_LAYER:
                yield f"blk.{parts[2]}.{_HF_LAYER[module]}.{parts[-1]}", tensors[name]
            else:
                raise ValueError(f"{name}: not a weight of {type(self).__name__}, so it has no GGUF name")


_GGUF_EMBEDDINGS = {"token_embd": "word_embeddings", "position_embd": "position_embeddings",
                    "token_types": "token_type_embeddings", "token_embd_norm": "LayerNorm"}
_GGUF_LAYER = {"attn_q": "attention.self.query", "attn_k": "attention.self.key", "attn_v": "attention.self.value",
               "attn_output": "attention.output.dense", "attn_output_norm": "attention.output.LayerNorm",
               "ffn_up": "intermediate.dense", "ffn_down": "output.dense", "layer_output_norm": "output.LayerNorm"}
_HF_EMBEDDINGS = {hf: gguf for gguf, hf in _GGUF_EMBEDDINGS.items()}
_HF_LAYER = {hf: gguf for gguf, hf in _GGUF_LAYER.items()}


def _ids(x: Any) -> Tensor:
    t = x if isinstance(x, Tensor) else Tensor(np.asarray(x, dtype=np.int64))
    return t.unsqueeze(0) if t.ndim == 1 else t


def _bool(x: Any) -> np.ndarray:
    a = np.asarray(x.numpy() if isinstance(x, Tensor) else x).astype(bool)
    return a[None] if a.ndim == 1 else a
