"""Text <-> token ids for the models: encode, decode, chat templates and streaming decode.

`Tokenizer` wraps a `tokenizers.Tokenizer` (the Rust library behind transformers' fast
tokenizers), configured from a Hugging Face folder (tokenizer.json) or from a GGUF file's
metadata (see gguf_tokenizer.py, which reproduces llama.cpp's tokenization). Chat templates
render with jinja2 exactly as transformers' `apply_chat_template` does (the sandbox
they run in lives in chat_template.py).

    >>> from tensora.models import default_model_path
    >>> tok = load_tokenizer(default_model_path())   # SmolLM2-135M-Instruct's GGUF
    >>> ids = tok.encode("Hello world")
    >>> ids, tok.decode(ids)
    ([19556, 905], 'Hello world')
    >>> stream = tok.stream()
    >>> "".join(stream.push(i) for i in ids) + stream.flush()
    'Hello world'
"""

from __future__ import annotations

import functools
import operator
import os
from typing import Any, Iterable, Mapping

from tokenizers import Tokenizer as Backend
from tokenizers import processors

from ..errors import TensoraError
from ..io import FormatError, load_gguf, read_json_object
from ..io.files import SETTINGS_LIMIT, open_regular
from .chat_template import ChatTemplateError, compile_template, plain_template_data, render  # noqa: F401 - ChatTemplateError re-exported
from .gguf_tokenizer import framing_processor, gguf_tokenizer_spec

# transformers' names of the special tokens a chat template sees as variables (special_tokens_map)
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
GGUF_MAGIC = b"GGUF"


class TokenizerError(TensoraError, ValueError):
    """A tokenizer that cannot be loaded or cannot do what was asked (no chat template, missing files)."""


class Tokenizer:
    """Token ids for text and back, the model's chat template, and the ids that end generation.

    backend: a configured `tokenizers.Tokenizer`; special_ids: transformers' role names
    ("bos_token", "eos_token", "pad_token", ...) -> id; eos_token_ids: every id generation stops
    on (eos_token is always among them); chat_template: Jinja source or None.
    Build one with `load_tokenizer(path)`.
    """

    def __init__(self, backend: Backend, *, special_ids: Mapping[str, int] | None = None,
                 eos_token_ids: Iterable[int] = (), chat_template: str | None = None) -> None:
        self.backend = backend
        self.special_ids = dict(special_ids or {})
        eos = self.special_ids.get("eos_token")
        self._eos_token_ids = sorted({int(i) for i in eos_token_ids} | ({eos} if eos is not None else set()))
        self.chat_template = chat_template
        self._special_added: frozenset[int] | None = None
        self._vocab_size = backend.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_gguf_metadata(cls, metadata: Mapping[str, Any], path: str | None = None) -> Tokenizer:
        """The tokenizer a GGUF file's metadata describes, tokenizing as llama.cpp does."""
        spec = gguf_tokenizer_spec(metadata, path)
        return cls(spec.backend, special_ids=spec.special_ids, eos_token_ids=spec.eos_token_ids,
                   chat_template=spec.chat_template)

    @classmethod
    def from_hf_dir(cls, folder: str | os.PathLike) -> Tokenizer:
        """A Hugging Face folder: tokenizer.json, plus tokenizer_config.json / special_tokens_map.json for the
        special tokens and chat template, and generation_config.json for the ids that end generation."""
        folder = os.fspath(folder)
        path = os.path.join(folder, "tokenizer.json")
        if not os.path.isfile(path):
            raise TokenizerError(f"{folder}: no tokenizer.json (tensora reads Hugging Face fast-tokenizer folders)")
        try:
            backend = Backend.from_file(path)
        except Exception as exc:  # the tokenizers library raises a bare Exception for a malformed file
            raise TokenizerError(f"{path}: not a tokenizer.json the tokenizers library can read ({exc})") from None
        backend.no_padding()        # a tokenizer.json may pin padding/truncation for training; encode() never pads
        backend.no_truncation()
        config = {**_read_json(folder, "special_tokens_map.json"), **_read_json(folder, "tokenizer_config.json")}
        special_ids = _hf_special_ids(backend, config)
        if "add_bos_token" in config or "add_eos_token" in config or backend.post_processor is None:
            backend.post_processor = _bos_eos_processor(backend, config, special_ids)
        generation = _read_json(folder, "generation_config.json").get("eos_token_id")
        return cls(backend, special_ids=special_ids, eos_token_ids=_as_id_list(generation),
                   chat_template=_hf_chat_template(folder, config))

    # -- ids ------------------------------------------------------------------------------------

    @property
    def bos_token_id(self) -> int | None:
        return self.special_ids.get("bos_token")

    @property
    def eos_token_ids(self) -> list[int]:
        """Every id that ends generation (eos, end-of-turn markers, generation_config's eos_token_id)."""
        return list(self._eos_token_ids)

    @property
    def pad_token_id(self) -> int | None:
        return self.special_ids.get("pad_token")

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (the embedding table may be padded beyond it)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @functools.cached_property
    def longest_token_chars(self) -> int:
        """The most characters of text one token can stand for (its spelling in the vocabulary: a byte-level
        token spells one byte per character, a byte-fallback token such as <0x41> more). A text longer
        than n times this cannot be n tokens or fewer, which a server can tell without tokenizing it."""
        return max((len(t) for t in self.backend.get_vocab(with_added_tokens=True)), default=1)

    # -- text <-> ids ---------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True, max_length: int | None = None) -> list[int]:
        """Token ids of `text`; special tokens written in the text are matched whole.

        add_special_tokens: add the BOS/EOS (or [CLS]/[SEP]) the tokenizer is configured to add.
        max_length: keep at most this many ids, cutting the text's tokens, never the added BOS/EOS
        ([CLS] ... [SEP] stay whole), as transformers' truncation=True does.
        """
        _check_text(text)
        if max_length is None:
            return self.backend.encode(text, add_special_tokens=add_special_tokens).ids
        if max_length < 0:
            raise ValueError(f"max_length must be >= 0, got {max_length}")
        encoding = self.backend.encode(text, add_special_tokens=False)
        added = self.backend.num_special_tokens_to_add(False) if add_special_tokens else 0
        if len(encoding.ids) + added > max_length:
            encoding.truncate(max(max_length - added, 0))
        if add_special_tokens:
            encoding = self.backend.post_process(encoding, add_special_tokens=True)
        return encoding.ids[:max_length]

    def decode(self, ids: Iterable[int] | int, skip_special_tokens: bool = False) -> str:
        """Text of `ids` (a list, array or single id); bytes that do not form UTF-8 come out as U+FFFD.

        Ids past the vocabulary decode to nothing, as in transformers (an embedding table may be
        padded beyond the vocabulary); negative and non-integer ids are a TokenizerError.
        """
        return self.backend.decode(_token_ids(ids), skip_special_tokens=skip_special_tokens)

    def is_silent(self, token_id: int, skip_special_tokens: bool = False) -> bool:
        """Whether `token_id` decodes to no text wherever it stands: a special token that is skipped,
        or an id past the vocabulary. StreamDecoder keeps such ids out of its window."""
        if skip_special_tokens:
            if self._special_added is None:
                self._special_added = frozenset(i for i, t in self.backend.get_added_tokens_decoder().items()
                                                if t.special)
            if token_id in self._special_added:
                return True
        return token_id >= self._vocab_size and self.backend.id_to_token(token_id) is None

    def stream(self, skip_special_tokens: bool = False) -> StreamDecoder:
        """An incremental decoder for generated ids: `push(id)` returns only newly completed text."""
        return StreamDecoder(self, skip_special_tokens)

    # -- chat -----------------------------------------------------------------------------------

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            tokenize: bool = False, *, tools: list[dict] | None = None,
                            documents: list[dict] | None = None, **extra: Any) -> str | list[int]:
        """Render `messages` ([{"role": ..., "content": ...}]) with the model's chat template.

        Same environment and variables as transformers' `apply_chat_template`: a sandboxed
        jinja2 with trim_blocks/lstrip_blocks, `raise_exception`, `strftime_now`, a `tojson`
        that does not escape HTML, the named special tokens (bos_token, eos_token, ...) and
        `**extra`, all passed as plain JSON-like data (None-valued message keys dropped, a
        message's reasoning also under `reasoning_content` and `thinking`). The template is
        untrusted: it renders within TEMPLATE_MAX_SIZE and TEMPLATE_TIME_LIMIT (see below).
        tokenize=True returns ids (no BOS added: templates write their own).
        """
        if not self.chat_template:
            raise TokenizerError("this tokenizer has no chat template")
        chat = _chat_messages(messages)
        if documents is not None and not all(isinstance(d, Mapping) for d in documents):
            raise TokenizerError("documents must be a list of dicts (with 'title' and 'text' keys)")
        names = {name: self.backend.id_to_token(i) for name, i in self.special_ids.items()}
        variables = {**names, **plain_template_data(extra)}
        variables.update(messages=chat, tools=plain_template_data(tools), documents=plain_template_data(documents),
                         add_generation_prompt=add_generation_prompt)
        text = render(compile_template(self.chat_template), variables)
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, bos_token_id={self.bos_token_id}, "
                f"eos_token_ids={self.eos_token_ids}, chat_template={self.chat_template is not None})")


class StreamDecoder:
    """Incremental detokenizer: `push(id)` returns the text that id completes, `flush()` what is held back.

    Decoding each token alone would be wrong: a byte-level or <0xNN> byte token can hold part
    of a UTF-8 character, and SentencePiece/WordPiece decoders drop or add the space before a
    token depending on its neighbours. So each push re-decodes a short window (the new tokens
    after a context of already-emitted tokens) and returns what it adds to the context's text,
    holding everything back while the window ends in U+FFFD (an unfinished character). The
    context is the shortest run of emitted tokens whose text is whole and not empty, so a
    skipped special token or a lone stripped space never becomes the anchor of the space
    rules. The pieces concatenate to `decode(all ids)`. It needs only the tokenizer's `decode`
    (a model may carry any object with encode/decode), and uses `is_silent` where it has one.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._window: list[int] = []
        self._context_text = ""
        self._is_silent = getattr(tokenizer, "is_silent", None)

    def push(self, token_id: int) -> str:
        token_id = _token_id(token_id)
        # Ids that add no text wherever they stand never enter the window: a run of them would grow it
        # without an anchor, and every push would re-decode all of it and rescan every tail (cubic time).
        if self._is_silent is not None and self._is_silent(token_id, self._skip):
            return ""
        self._window.append(token_id)
        text = self._decode(self._window)
        if text.endswith("\ufffd"):
            return ""
        return self._emit(text)

    def flush(self) -> str:
        """Everything held back, unfinished characters included (as U+FFFD); the stream can go on."""
        return self._emit(self._decode(self._window))

    def _emit(self, text: str) -> str:
        new = text[len(self._context_text):]
        self._rebase(text)
        return new

    def _rebase(self, text: str) -> None:
        """Keep as context the shortest tail of the window whose text is non-empty and whole (no U+FFFD:
        a tail starting inside a character would decode differently once more bytes follow)."""
        for start in range(len(self._window) - 1, 0, -1):
            tail = self._decode(self._window[start:])
            if tail and "\ufffd" not in tail:
                self._window, self._context_text = self._window[start:], tail
                return
        self._context_text = text

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip)


_MAX_ID = (1 << 32) - 1  # tokenizers stores ids as u32


def _token_id(value: Any) -> int:
    """One token id: an int (numpy ints too) in [0, 2**32), else a TokenizerError naming it."""
    try:
        i = operator.index(value)
    except TypeError:
        raise TokenizerError(f"token ids must be integers, got {value!r} ({type(value).__name__})") from None
    if not 0 <= i <= _MAX_ID:
        raise TokenizerError(f"token id {i} is out of range (ids are 0 .. {_MAX_ID})")
    return i


def _token_ids(ids: Any) -> list[int]:
    if isinstance(ids, (str, bytes)):
        raise TokenizerError(f"decode takes token ids, not {type(ids).__name__}")
    if not isinstance(ids, Iterable):
        return [_token_id(ids)]
    if getattr(ids, "ndim", 1) > 1:
        raise TokenizerError(f"decode takes one sequence of ids, got an array of shape {tuple(ids.shape)}")
    return [_token_id(i) for i in ids]


def _check_text(text: Any) -> None:
    """encode's input: a str that is valid Unicode (an unpaired UTF-16 surrogate such as '\\ud800' is not)."""
    if not isinstance(text, str):
        raise TokenizerError(f"encode takes a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TokenizerError(f"the text holds an unpaired UTF-16 surrogate ({text[exc.start]!r} at character "
                             f"{exc.start}), which is not valid Unicode and cannot be tokenized") from None


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """A Hugging Face folder (tokenizer.json, ...) or a .gguf file -> Tokenizer."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return Tokenizer.from_hf_dir(path)
    if not os.path.isfile(path):
        raise TokenizerError(f"{path}: no such file or folder")
    with open(path, "rb") as fh:
        magic = fh.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise TokenizerError(f"{path}: neither a folder with tokenizer.json nor a GGUF file")
    return Tokenizer.from_gguf_metadata(load_gguf(path).metadata, path)


# -- Hugging Face folders -------------------------------------------------------------------------

def _read_json(folder: str, name: str) -> dict[str, Any]:
    path = os.path.join(folder, name)
    if not os.path.lexists(path):
        return {}
    try:
        return read_json_object(path)
    except FormatError as exc:
        raise TokenizerError(str(exc)) from None


def _hf_special_ids(backend: Backend, config: Mapping[str, Any]) -> dict[str, int]:
    """Role -> id for the named special tokens; values are strings or AddedToken dicts ({"content": ...})."""
    ids = {}
    for name in SPECIAL_TOKEN_NAMES:
        value = config.get(name)
        text = value.get("content") if isinstance(value, dict) else value
        token_id = backend.token_to_id(text) if isinstance(text, str) else None
        if token_id is not None:
            ids[name] = token_id
    return ids


def _bos_eos_processor(backend: Backend, config: Mapping[str, Any], special_ids: Mapping[str, int]
                       ) -> processors.TemplateProcessing:
    """transformers' `update_post_processor`: BOS/EOS as tokenizer_config's add_bos_token/add_eos_token say."""
    def token(name: str, flag: str) -> tuple[str, int] | None:
        if not config.get(flag) or name not in special_ids:
            return None
        return backend.id_to_token(special_ids[name]), special_ids[name]

    return framing_processor(token("bos_token", "add_bos_token"), token("eos_token", "add_eos_token"))


def _hf_chat_template(folder: str, config: Mapping[str, Any]) -> str | None:
    """chat_template.jinja if present (newer transformers save it there), else tokenizer_config's entry,
    which may also be a list of named templates: the one named "default" is the chat template."""
    path = os.path.join(folder, "chat_template.jinja")
    if os.path.lexists(path):
        try:
            with open_regular(path, "a chat template") as fh:
                return fh.read(SETTINGS_LIMIT).decode("utf-8")
        except (FormatError, UnicodeDecodeError) as exc:
            raise TokenizerError(f"{path}: not a UTF-8 chat template ({exc})") from None
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template
                 if isinstance(t, dict) and isinstance(t.get("name"), str)}
        template = named.get("default")
    if template is not None and not isinstance(template, str):
        raise TokenizerError(f"{folder}: chat_template must be a string, got {type(template).__name__}")
    return template


def _as_id_list(value: Any) -> list[int]:
    """generation_config's eos_token_id: an id or a list of ids; anything else is a TokenizerError."""
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise TokenizerError(f"generation_config.json: eos_token_id must be a token id or a list of them, "
                             f"got {value!r}")
    return values


# -- chat data as transformers hands it to a template (chat_template_utils.render_jinja_template) -----

# Names a message's reasoning goes under; templates read the first (transformers' _REASONING_FIELDS).
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _chat_messages(messages: Any) -> list[dict[str, Any]]:
    """Plain copies of the messages, None-valued keys dropped, reasoning aliased (transformers' rules)."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Iterable):
        raise TokenizerError(f"messages must be a list of dicts, got {type(messages).__name__}")
    chat = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TokenizerError(f"messages[{i}] must be a dict with 'role' and 'content', "
                                 f"got {type(message).__name__}")
        message = {k: v for k, v in plain_template_data(message).items() if v is not None}
        reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        chat.append(message)
    return chat
