"""A model's tokenizer written in the other format: Hugging Face files from a GGUF vocabulary,
GGUF tokenizer metadata from a Hugging Face tokenizer.json (used by tensora.models.convert).

- GGUF -> folder: the `tokenizers` backend gguf_tokenizer.py built (it tokenizes as llama.cpp
  does) is saved as tokenizer.json; tokenizer_config.json names the special tokens and holds
  the chat template; generation_config.json lists every id that ends generation.
- folder -> GGUF: byte-level BPE becomes llama.cpp's "gpt2" vocabulary (tokens, token types,
  merges) and WordPiece its "bert" one (pieces respelled as convert_hf_to_gguf spells them).
  The `tokenizer.ggml.pre` name is chosen, as llama.cpp's converter chooses it, by behaviour
  rather than by name: the converter hashes how the tokenizer splits a probe text; here each
  split recipe tensora knows is built from the would-be metadata, and the first that tokenizes
  the probe texts exactly as the source does is written. Every vocabulary written is checked
  that way before it is returned, so a GGUF never tokenizes differently from its source.
  SentencePiece-style vocabularies (Llama 2, Mistral: llama.cpp's "llama" model, which needs
  the scores of the original tokenizer.model) are refused with a pointer to llama.cpp's converter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .gguf_tokenizer import (CONTROL, NORMAL, PRE_TOKENIZERS, ROLE_KEYS, SPACE, UNUSED, USER_DEFINED,
                             gguf_tokenizer_spec)
from .tokenizer import Tokenizer

#: Texts a written vocabulary must tokenize exactly as its source does: the cases where split
#: recipes differ (runs of digits, spaces, newlines, contractions, letters after punctuation,
#: non-Latin scripts, emoji), in the spirit of llama.cpp's converter's `chktxt`.
PROBE_TEXTS = (
    "Hello world! It's 2026-12-07; we'll see 3.14159 and 1234567890 items, not 12 345.",
    "  leading spaces,\ttabs\t\tand\n\nnewlines \n  \r\n trailing   ",
    "I'M SHOUTING, YOU'RE 'RE 'S 'll 've 'd don't. can't!?",
    "ÀÉÎõü naïve café — “quotes” ‘single’ «guillemets» ...!!! ???",
    "中文字符和日本語のテキスト 한국어 텍스트 Ελληνικά русский עברית العربية हिन्दी",
    "emoji 🦙🚀🏳️‍🌈 and symbols $%^&*()_+{}|:\"<>?~`\\ ©®™",
    "def f(x):\n    return x**2  # code\n\tif a>=b: print('ok')\n",
    "numbers 1 12 123 1234 12345 123456 1,234,567.89 3rd 4th 0x1F",
    "a  b   c    d\u00a0e\u3000f",
)

_ROLES_OF_HF = {"bos_token": "bos", "eos_token": "eos", "unk_token": "unk", "sep_token": "sep",
                "pad_token": "pad", "mask_token": "mask"}


class VocabularyExportError(ValueError):
    """A tokenizer that cannot be written in the requested format (the message says why)."""


# -- GGUF -> Hugging Face folder ---------------------------------------------------------------

def write_hf_tokenizer(tokenizer: Tokenizer, folder: Path, max_length: int) -> None:
    """tokenizer.json, tokenizer_config.json and generation_config.json for `tokenizer` in `folder`
    (`Tokenizer.from_hf_dir` and transformers' AutoTokenizer read them back)."""
    tokenizer.backend.save(str(folder / "tokenizer.json"))
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
                              "clean_up_tokenization_spaces": False}
    config |= {role: tokenizer.backend.id_to_token(i) for role, i in tokenizer.special_ids.items()}
    if tokenizer.chat_template is not None:
        config["chat_template"] = tokenizer.chat_template
    _write_json(folder / "tokenizer_config.json", config)
    eos = tokenizer.eos_token_ids
    _write_json(folder / "generation_config.json",
                {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": eos[0] if len(eos) == 1 else eos})


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# -- Hugging Face tokenizer -> GGUF metadata -----------------------------------------------------

def gguf_tokenizer_metadata(tokenizer: Tokenizer, vocab_size: int) -> dict[str, Any]:
    """The tokenizer.* GGUF keys for `tokenizer`, padded to the model's `vocab_size` embedding rows
    (llama.cpp's converter fills the gap with UNUSED "[PAD{i}]" tokens); see the module docstring."""
    data = json.loads(tokenizer.backend.to_str())
    kind = data["model"]["type"]
    tokens, types = _token_table(tokenizer, vocab_size)
    meta: dict[str, Any] = {"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types}
    if kind == "BPE" and _has_component(data, "ByteLevel"):
        meta["tokenizer.ggml.model"] = "gpt2"
        merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
        if merges:
            meta["tokenizer.ggml.merges"] = merges
        candidates = _pre_names(_split_patterns(data.get("pre_tokenizer")))
    elif kind == "WordPiece":
        prefix = data["model"].get("continuing_subword_prefix") or "##"
        meta |= {"tokenizer.ggml.model": "bert",
                 "tokenizer.ggml.tokens": [_gguf_wordpiece(t, k, prefix) for t, k in zip(tokens, types)]}
        if not _lowercases(data):
            meta["tokenizer.ggml.normalizer.lowercase"] = False
        candidates = [None]
    else:
        raise VocabularyExportError(
            f"a {kind} tokenizer{' with byte fallback' if data['model'].get('byte_fallback') else ''} cannot be "
            "written as a GGUF vocabulary here (tensora writes byte-level BPE and WordPiece ones); convert "
            "SentencePiece models with llama.cpp's convert_hf_to_gguf.py, which reads tokenizer.model's scores")
    meta |= _special_metadata(tokenizer, meta["tokenizer.ggml.model"])
    if tokenizer.chat_template is not None:
        meta["tokenizer.chat_template"] = tokenizer.chat_template
    for pre in candidates:
        candidate = meta if pre is None else {**meta, "tokenizer.ggml.pre": pre}
        if _tokenizes_alike(tokenizer, candidate):
            return candidate
    raise VocabularyExportError(
        "no GGUF vocabulary tensora can write tokenizes like this tokenizer (tried the split recipes "
        f"{', '.join(str(c) for c in candidates)} on the probe texts); llama.cpp would tokenize it differently")


def _token_table(tokenizer: Tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token text and llama_token_type per id: NORMAL, CONTROL (special added tokens), USER_DEFINED (other
    added tokens), UNUSED for the ids between the tokenizer's last and the embedding's last row."""
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    if max(vocab.values()) >= vocab_size:
        raise VocabularyExportError(f"the tokenizer has ids up to {max(vocab.values())}, beyond the model's "
                                    f"{vocab_size} embedding rows (llama.cpp refuses such a file)")
    n = vocab_size
    tokens, types = [f"[PAD{i}]" for i in range(n)], [UNUSED] * n
    for text, i in vocab.items():
        tokens[i], types[i] = text, NORMAL
    for i, added in tokenizer.backend.get_added_tokens_decoder().items():
        tokens[i], types[i] = added.content, CONTROL if added.special else USER_DEFINED
    return tokens, types


def _gguf_wordpiece(token: str, token_type: int, prefix: str) -> str:
    """convert_hf_to_gguf's BERT spelling: a continuation loses its prefix, a word-initial piece gains U+2581
    (gguf_tokenizer._wordpiece_spelling reads it back)."""
    if token_type != NORMAL:
        return token
    return token[len(prefix):] if token.startswith(prefix) else SPACE + token


def _special_metadata(tokenizer: Tokenizer, model: str) -> dict[str, Any]:
    """Special token ids, and whether encode() adds the first/last token, read from what it does."""
    ids = {_ROLES_OF_HF[name]: i for name, i in tokenizer.special_ids.items() if name in _ROLES_OF_HF}
    if model == "bert" and "cls_token" in tokenizer.special_ids:
        ids["bos"] = tokenizer.special_ids["cls_token"]  # llama.cpp's BERT starts a text with bos: [CLS]
    meta: dict[str, Any] = {f"tokenizer.ggml.{ROLE_KEYS[role]}": i for role, i in ids.items()}
    framed = tokenizer.backend.encode("a").ids
    bare = tokenizer.backend.encode("a", add_special_tokens=False).ids
    closing = "sep" if model == "bert" else "eos"
    meta["tokenizer.ggml.add_bos_token"] = "bos" in ids and framed[:1] == [ids["bos"]] and bare[:1] != framed[:1]
    meta[f"tokenizer.ggml.add_{closing}_token"] = (closing in ids and framed[-1:] == [ids[closing]]
                                                   and bare[-1:] != framed[-1:])
    return meta


def _pre_names(patterns: list[str]) -> list[str]:
    """One `tokenizer.ggml.pre` name per split recipe tensora knows, in the order to try them: first the
    recipe whose regexes are the tokenizer's own Split patterns (a tokenizer.json written from a GGUF keeps
    its recipe's name, even where a vocabulary cannot tell two recipes apart), "default" last (llama.cpp
    warns on it)."""
    names: dict[Any, str] = {}
    for name, recipe in PRE_TOKENIZERS.items():
        names.setdefault(recipe, name)
    return sorted(names.values(), key=lambda n: (list(PRE_TOKENIZERS[n].regexes) != patterns, n == "default"))


def _split_patterns(node: Any) -> list[str]:
    """The regexes of a tokenizer.json pre-tokenizer's Split steps, in order."""
    if isinstance(node, dict):
        if node.get("type") == "Split":
            return [node["pattern"].get("Regex") or node["pattern"].get("String")]
        return [p for v in node.values() for p in _split_patterns(v)]
    if isinstance(node, list):
        return [p for v in node for p in _split_patterns(v)]
    return []


def _tokenizes_alike(tokenizer: Tokenizer, metadata: dict[str, Any]) -> bool:
    written = gguf_tokenizer_spec(metadata, "<the GGUF being written>").backend
    specials = "".join(a.content for a in tokenizer.backend.get_added_tokens_decoder().values() if a.special)
    for text in PROBE_TEXTS + (specials + PROBE_TEXTS[0] + specials,):
        for add in (False, True):
            if written.encode(text, add_special_tokens=add).ids != tokenizer.backend.encode(
                    text, add_special_tokens=add).ids:
                return False
    return True


def _has_component(node: Any, kind: str) -> bool:
    """Whether a tokenizer.json (sub)tree has a component of type `kind` (a ByteLevel pre-tokenizer/decoder)."""
    if isinstance(node, dict):
        return node.get("type") == kind or any(_has_component(v, kind) for v in node.values())
    if isinstance(node, list):
        return any(_has_component(v, kind) for v in node)
    return False


def _lowercases(data: dict[str, Any]) -> bool:
    normalizer = data.get("normalizer") or {}
    return bool(normalizer.get("lowercase", True)) if normalizer.get("type") == "BertNormalizer" else True
