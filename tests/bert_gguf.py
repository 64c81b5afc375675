"""A BERT GGUF written the way llama.cpp's convert_hf_to_gguf.py writes one, for tests.

gguf-py's own GGUFWriter does the writing (the reference for the file layout); the
tokenizer respelling and tensor names follow the converter, so llama.cpp loads the file.
"""

from __future__ import annotations

import json
import os

import gguf
import numpy as np
from safetensors.numpy import load_file

S = "\u2581"
NORMAL, CONTROL = 1, 3
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

_LAYER = {"attention.self.query": "attn_q", "attention.self.key": "attn_k", "attention.self.value": "attn_v",
          "attention.output.dense": "attn_output", "attention.output.LayerNorm": "attn_output_norm",
          "intermediate.dense": "ffn_up", "output.dense": "ffn_down", "output.LayerNorm": "layer_output_norm"}
_EMBEDDINGS = {"word_embeddings": "token_embd", "position_embeddings": "position_embd",
               "token_type_embeddings": "token_types", "LayerNorm": "token_embd_norm"}


def phantom(token: str, token_type: int) -> str:
    """convert_hf_to_gguf's BERT spelling: word-initial pieces get U+2581, "##" continuations lose the "##"."""
    if token_type == CONTROL:
        return token
    return token[2:] if token.startswith("##") else S + token


def gguf_name(hf: str) -> str | None:
    """llama.cpp's name for a transformers BertModel tensor (None: the pooler and position_ids buffer,
    which the converter drops)."""
    parts = hf.removeprefix("bert.").split(".")
    if parts[0] == "embeddings" and parts[1] in _EMBEDDINGS:
        return f"{_EMBEDDINGS[parts[1]]}.{parts[-1]}"
    if parts[0] == "encoder":
        return f"blk.{parts[2]}.{_LAYER['.'.join(parts[3:-1])]}.{parts[-1]}"
    return None


def write_bert_gguf(folder: str, path: os.PathLike, weight_type: str = "F32") -> str:
    """The BERT checkpoint in `folder` (config.json, model.safetensors, vocab.txt) as a GGUF file."""
    config = json.load(open(os.path.join(folder, "config.json"), encoding="utf-8"))
    with open(os.path.join(folder, "vocab.txt"), encoding="utf-8") as fh:
        vocab = fh.read().splitlines()
    types = [CONTROL if t in SPECIAL else NORMAL for t in vocab]
    w = gguf.GGUFWriter(os.fspath(path), "bert")
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_block_count(config["num_hidden_layers"])
    w.add_head_count(config["num_attention_heads"])
    w.add_layer_norm_eps(config["layer_norm_eps"])
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType.MEAN)
    w.add_tokenizer_model("bert")
    w.add_token_list([phantom(t, k) for t, k in zip(vocab, types)])
    w.add_token_types(types)
    w.add_token_type_count(config.get("type_vocab_size", 2))
    # [CLS] is BOS to llama.cpp (convert_hf_to_gguf writes it as bos_token_id)
    for field, token in (("pad", "[PAD]"), ("unk", "[UNK]"), ("sep", "[SEP]"), ("mask", "[MASK]"),
                         ("bos", "[CLS]")):
        getattr(w, f"add_{field}_token_id")(vocab.index(token))
    qtype = gguf.GGMLQuantizationType[weight_type]
    for hf, value in load_file(os.path.join(folder, "model.safetensors")).items():
        name = gguf_name(hf)
        if name is None:
            continue
        value = value.astype(np.float32)
        if value.ndim == 2 and name.startswith("blk.") and qtype != gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, gguf.quants.quantize(value, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return os.fspath(path)
