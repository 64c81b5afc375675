"""A `tokenizers.Tokenizer` built from a GGUF file's metadata that tokenizes the way llama.cpp does.

A GGUF carries no tokenizer.json, only the vocabulary and llama.cpp's key names
(`tokenizer.ggml.model`, `.pre`, `.tokens`, `.scores`, `.merges`, `.token_type`, the special
ids and flags). llama.cpp's src/llama-vocab.cpp defines what those mean; this module
configures the `tokenizers` library to do the same, one builder per `tokenizer.ggml.model`:

- "gpt2": byte-level BPE. Text is split by the regexes llama.cpp lists for the file's
  `tokenizer.ggml.pre` (each regex splits the previous pieces further, keeping the text
  between matches), then mapped to GPT-2's byte alphabet and merged by merge rank.
- "llama": SentencePiece-style BPE. Spaces become U+2581, one is prefixed to every stretch
  of text after the start or a special token (`add_space_prefix`), the pair whose merged
  token has the highest score merges first, and characters outside the vocabulary fall back
  to the <0xNN> byte tokens.
- "bert": WordPiece. The GGUF spells word-initial pieces with a U+2581 prefix and
  continuations bare; they are respelled the Hugging Face way (bare and "##") for
  `tokenizers.models.WordPiece`.

Tokens typed CONTROL or UNKNOWN become special added tokens and USER_DEFINED ones plain
added tokens, so both are matched whole in text, as llama.cpp's special-token partition does.

    >>> import tensora, tensora.models
    >>> path = tensora.models.default_model_path()   # SmolLM2: a "gpt2" (byte-level BPE) vocabulary
    >>> spec = gguf_tokenizer_spec(tensora.io.load_gguf(path).metadata, str(path))
    >>> spec.backend.encode("Hello world").tokens
    ['Hello', 'Ġworld']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

from ..io import FormatError, UnsupportedError

# llama_token_type values stored in tokenizer.ggml.token_type (gguf-py's TokenType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SPACE = "\u2581"  # SentencePiece's visible space, llama.cpp's "escaped whitespace"

# Token texts llama.cpp treats as end of generation whatever the file's eos id says
# (llama_vocab::impl::load, "special_eog_ids"), fill-in-the-middle pad/repo/file-separator included.
EOG_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>",
    "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>",
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
})


@dataclass(frozen=True)
class GGUFVocab:
    """The tokenizer.* metadata of one GGUF file, with llama.cpp's per-model defaults applied."""

    path: str
    model: str
    pre: str
    tokens: list[str]
    token_types: list[int]
    scores: list[float]
    merges: list[str]
    ids: dict[str, int | None]      # role ("bos", "eos", "unk", "sep", "pad", "mask", "eot", "eom") -> id
    add_bos: bool
    closing: str                    # "eos", or "sep" for BERT
    add_closing: bool
    add_space_prefix: bool
    lowercase: bool
    strip_accents: bool
    chat_template: str | None

    def text(self, role: str) -> str | None:
        """The token text of a special role, None when the file has no such token."""
        i = self.ids.get(role)
        return None if i is None else self.tokens[i]


@dataclass(frozen=True)
class GGUFTokenizerSpec:
    """What `Tokenizer` needs: the configured backend, named special ids, end-of-generation ids, template."""

    backend: Backend
    special_ids: dict[str, int]     # "bos_token", "eos_token", ... -> id (transformers' names)
    eos_token_ids: list[int]
    chat_template: str | None


# ---------------------------------------------------------------------------------------------
# Pre-tokenizers of byte-level BPE: one table keyed by tokenizer.ggml.pre (llm_tokenizer_bpe)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PreTokenizer:
    """How llama.cpp splits text before byte-level BPE for one family of `tokenizer.ggml.pre` names."""

    regexes: tuple[str, ...]
    ignore_merges: bool = False     # a piece that is itself a token skips the merges (llama 3)
    add_bos: bool = False           # llama.cpp's default when the file has no add_bos_token


PRE_TOKENIZERS: dict[str, PreTokenizer] = {}


def register_pre_tokenizer(names: Sequence[str], regexes: Sequence[str], **flags: bool) -> None:
    """Register one split recipe under every `pre` name llama.cpp maps onto it."""
    for name in names:
        PRE_TOKENIZERS[name] = PreTokenizer(tuple(regexes), **flags)


_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
# llama.cpp spells (?i:'s|...) with explicit case classes because std::regex has no (?i:)
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_LLAMA3 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

register_pre_tokenizer(["default"], [r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"])
register_pre_tokenizer(["gpt-2", "phi-2", "mpt", "olmo", "jais", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de",
                        "gigachat", "exaone4", "trillion", "granite-docling", "mellum", "modern-bert"], [_GPT2])
register_pre_tokenizer(["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                        "dbrx", "smaug-bpe"], [_LLAMA3], ignore_merges=True, add_bos=True)
register_pre_tokenizer(["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"],
                       [r"\p{N}", _GPT2])
register_pre_tokenizer(["qwen2", "deepseek-r1-qwen", "stablelm2", "megrez", "hunyuan"], [_QWEN2])
register_pre_tokenizer(["falcon"], [r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, r"[0-9][0-9][0-9]"])
register_pre_tokenizer(["deepseek-coder"], [r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}"])
register_pre_tokenizer(["bloom", "poro-chat", "gpt3-finnish"], [r" ?[^(\s|.,!?…。，、।۔،)]+"])


def pre_tokenizer_for(vocab: GGUFVocab) -> PreTokenizer:
    """The split recipe for the file's `tokenizer.ggml.pre`; an empty name means "default", as in llama.cpp."""
    name = vocab.pre or "default"
    if name not in PRE_TOKENIZERS:
        raise UnsupportedError(vocab.path, f"tokenizer.ggml.pre {name!r} is not a pre-tokenizer tensora knows "
                                           f"(known: {', '.join(sorted(PRE_TOKENIZERS))})")
    return PRE_TOKENIZERS[name]


# ---------------------------------------------------------------------------------------------
# Builders: one per tokenizer.ggml.model
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelType:
    """A `tokenizer.ggml.model` value: llama.cpp's default special ids and flags, and the builder."""

    defaults: dict[str, int | None]
    add_bos: bool
    add_space_prefix: bool
    build: Callable[[GGUFVocab], Backend]
    closing: str                    # the role appended after the text: "eos", or "sep" for BERT
    add_closing: bool


MODEL_TYPES: dict[str, ModelType] = {}


Builder = Callable[[GGUFVocab], Backend]


def register_model_type(name: str, *, defaults: dict[str, int | None], add_bos: bool, add_space_prefix: bool,
                        closing: str = "eos", add_closing: bool = False) -> Callable[[Builder], Builder]:
    """Decorator: `build(vocab)` makes the backend for files whose tokenizer.ggml.model is `name`."""
    def add(build: Builder) -> Builder:
        MODEL_TYPES[name] = ModelType(defaults, add_bos, add_space_prefix, build, closing, add_closing)
        return build
    return add


@register_model_type("gpt2", defaults={"bos": 11, "eos": 11}, add_bos=False, add_space_prefix=False)
def build_byte_level_bpe(vocab: GGUFVocab) -> Backend:
    """llm_tokenizer_bpe: regex splits, GPT-2 byte alphabet, rank-ordered merges; unknown bytes are dropped."""
    pre = pre_tokenizer_for(vocab)
    table = _token_ids(vocab.tokens)
    backend = Backend(models.BPE(table, _parse_merges(vocab, table), ignore_merges=pre.ignore_merges))
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
    backend.pre_tokenizer = pre_tokenizers.Sequence(splits + [pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                          use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    return backend


@register_model_type("llama", defaults={"bos": 1, "eos": 2, "unk": 0}, add_bos=True, add_space_prefix=True)
def build_sentencepiece_bpe(vocab: GGUFVocab) -> Backend:
    """llm_tokenizer_spm: score-ordered merges over the whole text, byte fallback, escaped spaces.

    The normalizer (not a Metaspace pre-tokenizer) prepends the space: it runs on every stretch
    of text between added tokens and prepends even when the text already starts with a space,
    which is what llama.cpp does (`"  hi"` -> `▁▁▁hi`, `"<s>hi"` -> `<s> ▁hi`).
    """
    table = _token_ids(vocab.tokens)
    unk = vocab.text("unk")
    backend = Backend(models.BPE(table, _merges_from_scores(vocab, table), unk_token=unk, byte_fallback=True))
    steps = [normalizers.Prepend(SPACE)] if vocab.add_space_prefix else []
    backend.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", SPACE)])
    strip = [decoders.Strip(" ", 1, 0)] if vocab.add_space_prefix else []
    backend.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
                                        + strip)
    return backend


@register_model_type("bert", defaults={"bos": 101, "unk": 100, "sep": 102, "pad": 0, "mask": 103},
                     add_bos=True, add_space_prefix=False, closing="sep", add_closing=True)
def build_wordpiece(vocab: GGUFVocab) -> Backend:
    """llm_tokenizer_wpm: BERT's normalizer and punctuation split, then greedy longest-match pieces.

    llama.cpp has no 100-character word limit, so neither does this WordPiece.
    """
    table = _token_ids([_wordpiece_spelling(t, k) for t, k in zip(vocab.tokens, vocab.token_types)])
    backend = Backend(models.WordPiece(table, unk_token=vocab.text("unk") or "[UNK]",
                                       max_input_chars_per_word=1 << 30))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=vocab.strip_accents, lowercase=vocab.lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return backend


def _wordpiece_spelling(token: str, token_type: int) -> str:
    """GGUF's BERT spelling back to Hugging Face's: `▁word` -> `word`, `piece` -> `##piece` (convert_hf_to_gguf)."""
    if token_type != NORMAL:
        return token
    return token[len(SPACE):] if token.startswith(SPACE) else "##" + token


def _token_ids(tokens: list[str]) -> dict[str, int]:
    """Token text -> id. A text spelled twice keeps its first id (llama.cpp refuses such a file; here it can
    only arise from respelling a BERT vocabulary, where the later twin is unreachable)."""
    table: dict[str, int] = {}
    for i, t in enumerate(tokens):
        table.setdefault(t, i)
    return table


def _parse_merges(vocab: GGUFVocab, table: dict[str, int]) -> list[tuple[str, str]]:
    """Split each "left right" merge at the first space after its first character, as llama.cpp does.

    Merges whose parts or result are not tokens are dropped: they could only produce text
    llama.cpp then re-spells byte by byte, and `tokenizers` refuses them.
    """
    merges = []
    for rule in vocab.merges:
        cut = rule.find(" ", 1)
        if cut < 0:
            raise FormatError(vocab.path, f"tokenizer.ggml.merges entry {rule!r} has no space between its two parts")
        left, right = rule[:cut], rule[cut + 1:]
        if left in table and right in table and left + right in table:
            merges.append((left, right))
    return merges


# Building the merges looks up every split of every token: sum(len**2) characters. Real
# vocabularies (Llama 2's 32K, Gemma's 256K tokens) need a few million; a file of long tokens
# (2000 tokens "a" .. "a" * 2000) would need billions, and gigabytes of merges.
MERGE_WORK_LIMIT = 200_000_000


def _merges_from_scores(vocab: GGUFVocab, table: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges that reproduce llama.cpp's SentencePiece merge order.

    llm_tokenizer_spm merges whichever adjacent pair forms the token with the highest score.
    As merges: every split of every token into two tokens, ranked by the score of the whole;
    equal scores keep transformers' `generate_merges` order (longer left part first), so both
    libraries build the same tokenizer from the same file.
    """
    work = sum(len(t) ** 2 for t, i in table.items() if vocab.token_types[i] != BYTE)
    if work > MERGE_WORK_LIMIT:
        raise FormatError(vocab.path, f"its tokens are too long to turn into merges (the sum of their squared "
                                      f"lengths is {work}, above {MERGE_WORK_LIMIT}): not a SentencePiece "
                                      f"vocabulary tensora can build")
    candidates = []
    for token, token_id in table.items():
        if vocab.token_types[token_id] == BYTE:
            continue
        splits = [(token[:k], token[k:]) for k in range(1, len(token)) if token[:k] in table and token[k:] in table]
        splits.sort(key=lambda lr: (table[lr[0]], table[lr[1]]))
        candidates += [(vocab.scores[token_id], left, right) for left, right in splits]
    candidates.sort(key=lambda c: (-c[0], -len(c[1]), -len(c[2])))
    return [(left, right) for _, left, right in candidates]


# ---------------------------------------------------------------------------------------------
# Metadata -> vocab -> spec
# ---------------------------------------------------------------------------------------------

ROLE_KEYS = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id",
              "sep": "seperator_token_id",  # sic: llama.cpp's and gguf-py's spelling
              "pad": "padding_token_id", "mask": "mask_token_id", "eot": "eot_token_id", "eom": "eom_token_id"}

# transformers' names for the roles a chat template can see
_HF_NAMES = {"bos": "bos_token", "eos": "eos_token", "unk": "unk_token", "sep": "sep_token",
             "pad": "pad_token", "mask": "mask_token"}


def read_vocab(metadata: Mapping[str, Any], path: str | None = None) -> GGUFVocab:
    """Validate the tokenizer metadata and fill in llama.cpp's defaults for the model type."""
    where = path or "<gguf metadata>"
    model = metadata.get("tokenizer.ggml.model")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if model is None or tokens is None:
        raise FormatError(where, "has no tokenizer metadata (tokenizer.ggml.model and tokenizer.ggml.tokens); "
                                 "it cannot be tokenized without a separate tokenizer")
    _check_types(metadata, where)
    if model not in MODEL_TYPES:
        raise UnsupportedError(where, f"tokenizer.ggml.model {model!r} is not supported "
                                      f"(supported: {', '.join(sorted(MODEL_TYPES))})")
    kind = MODEL_TYPES[model]
    n = len(tokens)
    _check_rows_have_tokens(metadata, n, where)
    tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]  # llama.cpp's name for empty tokens
    lowercase = bool(metadata.get("tokenizer.ggml.normalizer.lowercase", True))
    pre = str(metadata.get("tokenizer.ggml.pre") or "")
    pre_adds_bos = model == "gpt2" and pre in PRE_TOKENIZERS and PRE_TOKENIZERS[pre].add_bos
    return GGUFVocab(
        path=where, model=model, pre=pre, tokens=tokens,
        token_types=_per_token(metadata, "tokenizer.ggml.token_type", n, NORMAL, int, where),
        scores=_per_token(metadata, "tokenizer.ggml.scores", n, 0.0, float, where),
        merges=list(metadata.get("tokenizer.ggml.merges") or ()),
        ids=_special_ids(metadata, kind.defaults, n),
        add_bos=bool(metadata.get("tokenizer.ggml.add_bos_token", kind.add_bos or pre_adds_bos)),
        closing=kind.closing,
        add_closing=bool(metadata.get(f"tokenizer.ggml.add_{kind.closing}_token", kind.add_closing)),
        add_space_prefix=bool(metadata.get("tokenizer.ggml.add_space_prefix", kind.add_space_prefix)),
        lowercase=lowercase,
        strip_accents=bool(metadata.get("tokenizer.ggml.normalizer.strip_accents", lowercase)),
        chat_template=metadata.get("tokenizer.chat_template"))


# The kind of value each tokenizer key must hold (GGUF types as gguf-py reads them). A file is
# data: a string where a flag goes, or a float where an id goes, is a FormatError naming the key.
_STR, _FLAG, _ID, _STRS, _NUMBERS = "a string", "a boolean", "a token id", "an array of strings", "an array of numbers"
_KEY_KINDS = {"model": _STR, "pre": _STR, "tokens": _STRS, "merges": _STRS, "scores": _NUMBERS,
              "token_type": _NUMBERS, "add_bos_token": _FLAG, "add_eos_token": _FLAG, "add_sep_token": _FLAG,
              "add_space_prefix": _FLAG, "normalizer.lowercase": _FLAG, "normalizer.strip_accents": _FLAG,
              **{key: _ID for key in ROLE_KEYS.values()}}


def _is_kind(value: Any, kind: str) -> bool:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)

    if kind == _STR:
        return isinstance(value, str)
    if kind == _FLAG:
        return isinstance(value, (bool, np.bool_, int, np.integer))
    if kind == _ID:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if isinstance(value, np.ndarray):  # gguf-py's numeric arrays: checked whole
        return kind == _NUMBERS and value.dtype.kind in "iuf" and bool(np.isfinite(value).all())
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return False
    return all(isinstance(v, str) for v in value) if kind == _STRS else all(number(v) for v in value)


def _check_types(metadata: Mapping[str, Any], where: str) -> None:
    for key, kind in _KEY_KINDS.items():
        value = metadata.get(f"tokenizer.ggml.{key}")
        if value is not None and not _is_kind(value, kind):
            shown = repr(value) if not isinstance(value, (list, tuple, np.ndarray)) else f"a {type(value).__name__}"
            raise FormatError(where, f"tokenizer.ggml.{key} must be {kind}, got {shown[:80]}")
    template = metadata.get("tokenizer.chat_template")
    if template is not None and not isinstance(template, str):
        raise FormatError(where, f"tokenizer.chat_template must be a string, got {type(template).__name__}")


def _check_rows_have_tokens(metadata: Mapping[str, Any], n: int, where: str) -> None:
    """FormatError if the model has more embedding rows (`{arch}.vocab_size`, which the token_embd and output
    tensors are checked against) than the file has tokens: the ids past the list have no text, so the model
    would generate them as nothing, silently. llama.cpp sizes those tensors by the token count and refuses
    the file; converters pad the list instead ([PAD{id}] tokens), as convert_hf_to_gguf.py and
    tokenizer_export.py do. (A Hugging Face folder may pad only the embedding: its ids past the tokenizer's
    are never trained to be likely.)"""
    arch = metadata.get("general.architecture")
    rows = metadata.get(f"{arch}.vocab_size") if isinstance(arch, str) else None
    if isinstance(rows, (int, np.integer)) and not isinstance(rows, bool) and rows > n:
        raise FormatError(where, f"tokenizer.ggml.tokens has {n} tokens, fewer than the model's {rows} embedding "
                                 f"rows ({arch}.vocab_size): ids {n} to {rows - 1} have no text (llama.cpp refuses "
                                 "such a file too)")


def _per_token(metadata: Mapping[str, Any], key: str, n: int, default: Any, cast: Callable, where: str) -> list:
    values = metadata.get(key)
    if values is None:
        return [default] * n
    if len(values) < n:
        raise FormatError(where, f"{key} has {len(values)} entries for {n} tokens")
    return [cast(v) for v in values[:n]]


def _special_ids(metadata: Mapping[str, Any], defaults: dict[str, int | None], n: int) -> dict[str, int | None]:
    """Role -> id: the file's value when in range, else the model type's default when in range (llama.cpp's rule)."""
    ids: dict[str, int | None] = {}
    for role, key in ROLE_KEYS.items():
        default = defaults.get(role)
        value = metadata.get(f"tokenizer.ggml.{key}")
        chosen = value if value is not None and 0 <= int(value) < n else default
        ids[role] = int(chosen) if chosen is not None and 0 <= chosen < n else None
    return ids


def gguf_tokenizer_spec(metadata: Mapping[str, Any], path: str | None = None) -> GGUFTokenizerSpec:
    """Build the tokenizer a GGUF file's metadata describes (see the module docstring)."""
    vocab = read_vocab(metadata, path)
    backend = MODEL_TYPES[vocab.model].build(vocab)
    _add_special_tokens(backend, vocab)
    backend.post_processor = _post_processor(vocab)
    special = {_HF_NAMES[role]: i for role, i in vocab.ids.items() if role in _HF_NAMES and i is not None}
    return GGUFTokenizerSpec(backend, special, end_of_generation_ids(vocab), vocab.chat_template)


def _add_special_tokens(backend: Backend, vocab: GGUFVocab) -> None:
    """CONTROL/UNKNOWN tokens as special added tokens, USER_DEFINED as plain ones: both matched whole."""
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, k in zip(vocab.tokens, vocab.token_types) if k in (CONTROL, UNKNOWN)])
    backend.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, k in zip(vocab.tokens, vocab.token_types) if k == USER_DEFINED])


def _post_processor(vocab: GGUFVocab) -> processors.TemplateProcessing:
    """BOS and EOS (BERT: [CLS] and [SEP]) around the text, as the add_*_token flags say."""
    first, last = _required(vocab, "bos", vocab.add_bos), _required(vocab, vocab.closing, vocab.add_closing)
    return framing_processor(first, last)


def framing_processor(first: tuple[str, int] | None, last: tuple[str, int] | None) -> processors.TemplateProcessing:
    """A post-processor putting token `first` (text, id) before each sequence and `last` after it; None: nothing."""
    head = [first[0]] if first else []
    tail = [last[0]] if last else []

    def template(sequence: str, type_id: int) -> list[str]:
        return [f"{piece}:{type_id}" for piece in head + [f"${sequence}"] + tail]

    specials = sorted({t for t in (first, last) if t})
    return processors.TemplateProcessing(single=template("A", 0), pair=template("A", 0) + template("B", 1),
                                         special_tokens=specials)


def _required(vocab: GGUFVocab, role: str, wanted: bool) -> tuple[str, int] | None:
    """(text, id) of a token the flags say to add; llama.cpp refuses a flag without its token id."""
    if not wanted:
        return None
    token_id = vocab.ids.get(role)
    if token_id is None:
        raise FormatError(vocab.path, f"the tokenizer adds a {role} token but tokenizer.ggml.{ROLE_KEYS[role]} "
                                      "is not set")
    return vocab.tokens[token_id], token_id


def end_of_generation_ids(vocab: GGUFVocab) -> list[int]:
    """Ids that end generation: eos, eot, eom, plus tokens named like an end marker (llama.cpp's EOG set)."""
    eog = {i for role in ("eos", "eot", "eom") if (i := vocab.ids.get(role)) is not None}
    eog.update(i for i, t in enumerate(vocab.tokens) if t in EOG_TEXTS)
    return sorted(eog)
