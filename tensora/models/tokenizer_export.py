"""A model's tokenizer written in the other format: Hugging Face files from a GGUF vocabulary,
GGUF tokenizer metadata from a Hugging Face tokenizer.json (used by tensora.models.convert).

- GGUF -> folder: the `tokenizers` backend gguf_tokenizer.py built (it tokenizes as llama.cpp
  does) is saved as tokenizer.json; tokenizer_config.json names the special tokens and holds
  the chat template; generation_config.json lists every id that ends generation.
- folder -> GGUF: one writer per kind of tokenizer.json (`VOCABULARY_WRITERS`): byte-level BPE
  becomes llama.cpp's "gpt2" vocabulary (tokens, token types, merges), SentencePiece-style BPE
  with byte fallback (Llama 2, Mistral) its "llama" one (a token's score is minus the rank of the
  merge that makes it, as llama.cpp merges the best-scoring pair), and WordPiece its "bert" one
  (pieces respelled as convert_hf_to_gguf spells them). What the file cannot say by name is
  chosen by behaviour, as llama.cpp's converter chooses the `tokenizer.ggml.pre` name by hashing
  how the tokenizer splits a probe text: each variant (every split recipe tensora knows; a space
  before the text or not) is built from the would-be metadata, and the first that tokenizes the
  probe texts exactly as the source does is written. So a GGUF never tokenizes differently from
  its source on them, except where llama.cpp's own SentencePiece rule puts spaces (see
  `_probes_inside_text`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..io.atomic import atomic_path, atomic_write_json
from .gguf_tokenizer import (BYTE, CONTROL, NORMAL, PRE_TOKENIZERS, ROLE_KEYS, SPACE, UNKNOWN, UNUSED,
                             USER_DEFINED, gguf_tokenizer_spec)
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
    with atomic_path(folder / "tokenizer.json") as tmp:
        tokenizer.backend.save(str(tmp))
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
                              "clean_up_tokenization_spaces": False}
    config |= {role: tokenizer.backend.id_to_token(i) for role, i in tokenizer.special_ids.items()}
    if tokenizer.chat_template is not None:
        config["chat_template"] = tokenizer.chat_template
    atomic_write_json(folder / "tokenizer_config.json", config)
    eos = tokenizer.eos_token_ids
    atomic_write_json(folder / "generation_config.json",
                {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": eos[0] if len(eos) == 1 else eos})


# -- Hugging Face tokenizer -> GGUF metadata -----------------------------------------------------

def gguf_tokenizer_metadata(tokenizer: Tokenizer, vocab_size: int, config_ids: dict[str, int] | None = None
                            ) -> dict[str, Any]:
    """The tokenizer.* GGUF keys for `tokenizer`, padded to the model's `vocab_size` embedding rows
    (llama.cpp's converter fills the gap with UNUSED "[PAD{i}]" tokens); see the module docstring.
    config_ids: role ("bos", "eos") -> id from the model's config, for roles the tokenizer files leave unnamed."""
    data = json.loads(tokenizer.backend.to_str())
    tokens, types = _token_table(tokenizer, vocab_size)
    writer = next((w for w in VOCABULARY_WRITERS if w.accepts(data)), None)
    if writer is None:
        kind = data["model"]["type"]
        raise VocabularyExportError(f"a {kind} tokenizer cannot be written as a GGUF vocabulary here (tensora writes "
                                    "byte-level BPE, SentencePiece-style BPE and WordPiece ones)")
    meta, variants = writer.metadata(data, tokens, types, tokenizer)
    meta |= _special_metadata(tokenizer, meta["tokenizer.ggml.model"], config_ids or {})
    if tokenizer.chat_template is not None:
        meta["tokenizer.chat_template"] = tokenizer.chat_template
    texts = writer.probes(tokenizer)
    for variant in variants:
        if _tokenizes_alike(tokenizer, meta | variant, texts):
            return meta | variant
    raise VocabularyExportError(
        f"no GGUF vocabulary tensora can write tokenizes like this tokenizer (tried {variants} on the probe "
        "texts); llama.cpp would tokenize it differently")


@dataclass(frozen=True)
class VocabularyWriter:
    """How one kind of tokenizer.json becomes one `tokenizer.ggml.model`.

    accepts(tokenizer.json) says whether it applies; metadata(tokenizer.json, tokens, token types, tokenizer)
    gives the keys and the variants (key sets) to try, most likely first; probes(tokenizer) the texts on
    which the written vocabulary must tokenize as the source does.
    """

    accepts: Callable[[dict[str, Any]], bool]
    metadata: Callable[[dict[str, Any], list[str], list[int], Tokenizer],
                       tuple[dict[str, Any], list[dict[str, Any]]]]
    probes: Callable[[Tokenizer], list[str]]


def _byte_level_bpe(data: dict[str, Any], tokens: list[str], types: list[int], tokenizer: Tokenizer
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """llama.cpp's "gpt2": tokens and merges as they are; the split recipe is the variant."""
    meta: dict[str, Any] = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens,
                            "tokenizer.ggml.token_type": types}
    merges = _merges(data)
    if merges:
        meta["tokenizer.ggml.merges"] = merges
    return meta, [{"tokenizer.ggml.pre": name} for name in _pre_names(_split_patterns(data.get("pre_tokenizer")))]


def _sentencepiece_bpe(data: dict[str, Any], tokens: list[str], types: list[int], tokenizer: Tokenizer
                       ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """llama.cpp's "llama": it merges the pair whose merged token scores highest, so a token's score is minus
    the rank of the merge that makes it (what transformers' converter read the ranks from); <0xNN> tokens
    are BYTE and the unknown token UNKNOWN. Whether a space is put before the text is the variant."""
    rank: dict[str, int] = {}
    for i, merge in enumerate(_merges(data)):
        left, _, right = merge.partition(" ")
        rank.setdefault(left + right, i)
    unknown = tokenizer.special_ids.get("unk_token")
    types = [BYTE if _is_byte_token(t) else UNKNOWN if i == unknown and k == CONTROL else k
             for i, (t, k) in enumerate(zip(tokens, types))]
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.scores": [-float(rank[t]) if t in rank else -float(len(rank)) for t in tokens]}
    prefixed = _prepends_space(data)
    return meta, [{"tokenizer.ggml.add_space_prefix": prefixed}, {"tokenizer.ggml.add_space_prefix": not prefixed}]


def _wordpiece(data: dict[str, Any], tokens: list[str], types: list[int], tokenizer: Tokenizer
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """llama.cpp's "bert": pieces respelled as convert_hf_to_gguf spells them."""
    prefix = data["model"].get("continuing_subword_prefix") or "##"
    meta: dict[str, Any] = {"tokenizer.ggml.model": "bert", "tokenizer.ggml.token_type": types,
                            "tokenizer.ggml.tokens": [_gguf_wordpiece(t, k, prefix) for t, k in zip(tokens, types)]}
    if not _lowercases(data):
        meta["tokenizer.ggml.normalizer.lowercase"] = False
    return meta, [{}]


def _all_probes(tokenizer: Tokenizer) -> list[str]:
    specials = "".join(a.content for a in tokenizer.backend.get_added_tokens_decoder().values() if a.special)
    return [*PROBE_TEXTS, specials + PROBE_TEXTS[0] + specials]


def _probes_inside_text(tokenizer: Tokenizer) -> list[str]:
    """The probe texts without leading spaces or special tokens: where llama.cpp puts spaces before text
    (every stretch after a special token gets one, a leading space gets another) is its own rule, which
    no Hugging Face SentencePiece tokenizer follows, and llama.cpp's converter writes such files as they are."""
    return [text.lstrip() for text in PROBE_TEXTS]


#: Tried in order; the first that accepts a tokenizer.json writes it.
VOCABULARY_WRITERS = (
    VocabularyWriter(lambda d: d["model"]["type"] == "BPE" and _has_component(d, "ByteLevel"),
                     _byte_level_bpe, _all_probes),
    VocabularyWriter(lambda d: d["model"]["type"] == "BPE" and bool(d["model"].get("byte_fallback")),
                     _sentencepiece_bpe, _probes_inside_text),
    VocabularyWriter(lambda d: d["model"]["type"] == "WordPiece", _wordpiece, _all_probes),
)


def _merges(data: dict[str, Any]) -> list[str]:
    """tokenizer.json's merges as GGUF stores them: "left right" (newer files hold [left, right] pairs)."""
    return [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges") or ()]


def _is_byte_token(token: str) -> bool:
    return len(token) == 6 and token.startswith("<0x") and token.endswith(">") and all(
        c in "0123456789ABCDEFabcdef" for c in token[3:5])


def _prepends_space(data: dict[str, Any]) -> bool:
    """Whether the tokenizer puts U+2581 before the text: a Prepend normalizer (transformers' legacy Llama
    tokenizers) or a Metaspace pre-tokenizer that prepends."""
    found = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Prepend" or (node.get("type") == "Metaspace"
                                                 and node.get("prepend_scheme", "always") != "never"
                                                 and node.get("add_prefix_space", True)):
                found.append(node)
            for v in node.values():
                visit(v)
        elif isinstance(node, list):
            for v in node:
                visit(v)

    visit({"normalizer": data.get("normalizer"), "pre_tokenizer": data.get("pre_tokenizer")})
    return bool(found)


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


def _special_metadata(tokenizer: Tokenizer, model: str, config_ids: dict[str, int]) -> dict[str, Any]:
    """Special token ids, and whether encode() adds the first/last token, read from what it does."""
    ids = {_ROLES_OF_HF[name]: i for name, i in tokenizer.special_ids.items() if name in _ROLES_OF_HF}
    ids = {role: i for role, i in config_ids.items() if 0 <= i < tokenizer.vocab_size} | ids
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


def _tokenizes_alike(tokenizer: Tokenizer, metadata: dict[str, Any], texts: list[str]) -> bool:
    written = gguf_tokenizer_spec(metadata, "<the GGUF being written>").backend
    for text in texts:
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
