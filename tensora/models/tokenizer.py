"""Text <-> token ids for the models: encode, decode, chat templates and streaming decode.

`Tokenizer` wraps a `tokenizers.Tokenizer` (the Rust library behind transformers' fast
tokenizers), configured from a Hugging Face folder (tokenizer.json) or from a GGUF file's
metadata (see gguf_tokenizer.py, which reproduces llama.cpp's tokenization). Chat templates
render with jinja2 exactly as transformers' `apply_chat_template` does.

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

import json
import os
from datetime import datetime
from functools import lru_cache
from typing import Any, Iterable, Mapping

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as Backend
from tokenizers import processors

from ..errors import TensoraError
from ..io import load_gguf
from .gguf_tokenizer import framing_processor, gguf_tokenizer_spec

# transformers' names of the special tokens a chat template sees as variables (special_tokens_map)
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
GGUF_MAGIC = b"GGUF"


class TokenizerError(TensoraError, ValueError):
    """A tokenizer that cannot be loaded or cannot do what was asked (no chat template, missing files)."""


class ChatTemplateError(TensoraError, jinja2.TemplateError):
    """Raised by a chat template's `raise_exception(...)`; a jinja2.TemplateError, as in transformers."""


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
        backend = Backend.from_file(path)
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

    # -- text <-> ids ---------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True, max_length: int | None = None) -> list[int]:
        """Token ids of `text`; special tokens written in the text are matched whole.

        add_special_tokens: add the BOS/EOS (or [CLS]/[SEP]) the tokenizer is configured to add.
        max_length: keep at most this many ids, cutting the text's tokens, never the added BOS/EOS
        ([CLS] ... [SEP] stay whole), as transformers' truncation=True does.
        """
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

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`; bytes that do not form UTF-8 come out as U+FFFD."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

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
        `**extra`. tokenize=True returns ids (no BOS added: templates write their own).
        """
        if not self.chat_template:
            raise TokenizerError("this tokenizer has no chat template")
        chat = [{k: v for k, v in m.items() if v is not None} for m in messages]  # as transformers: None = absent
        names = {name: self.backend.id_to_token(i) for name, i in self.special_ids.items()}
        text = _compile(self.chat_template).render(messages=chat, tools=tools, documents=documents,
                                                   add_generation_prompt=add_generation_prompt,
                                                   **{**names, **extra})
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
    rules. The pieces concatenate to `decode(all ids)`.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._window: list[int] = []
        self._context_text = ""

    def push(self, token_id: int) -> str:
        self._window.append(int(token_id))
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
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        try:
            return json.load(fh)
        except json.JSONDecodeError as exc:
            raise TokenizerError(f"{path}: not valid JSON ({exc})") from None


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
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        return named.get("default")
    return template


def _as_id_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


# -- chat template environment (transformers.utils.chat_template_utils._cached_compile_jinja_template) ----

class _GenerationBlock(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for training masks; rendering keeps the body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        return caller()


class _TemplateNamespace(jinja2.utils.Namespace):
    """`namespace()` that refuses underscore attributes, so a template cannot reach Python internals."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _check_attribute(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _check_attribute(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)


class _TemplateDict:
    """`dict(...)` and `dict.fromkeys(...)` for templates, without exposing the dict type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any) -> dict:
        return dict.fromkeys(*args)


def _check_attribute(name: Any) -> None:
    if isinstance(name, str) and name.startswith("_"):
        raise jinja2.exceptions.SecurityError(f"chat templates cannot set underscore attributes ({name!r})")


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # jinja's own tojson escapes <, >, & for HTML; templates expect plain JSON
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env.from_string(template)
