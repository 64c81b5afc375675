"""Request and response bodies of the OpenAI-compatible API, as pydantic models.

They are the OpenAPI schema (FastAPI derives /openapi.json from them) and the validation:
a body that does not fit is a 400 with an OpenAI-style error (see errors.py). Types are
strict (no "5" for 5). Unknown fields are ignored, as OpenAI's own server does, except
the OpenAI options that change what a reply means (logprobs, tools, response_format,
penalties, echo, suffix, best_of, ...): set to anything but their no-op value, this
server cannot honour them and says so (`unsupported_options`) instead of answering as
if it had. Text fields refuse unpaired UTF-16 surrogates ("\\ud800"), which no
tokenizer can encode.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator
from typing_extensions import Annotated


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"the text holds an unpaired UTF-16 surrogate at character {exc.start}, "
                         "which is not valid Unicode") from None
    return text


def _shaped(members: dict[str, Any]) -> Any:
    """A union that picks its member by the value's shape, so that its errors speak of that member alone
    ("stop.1: String should have at least 1 character", not one complaint per member it could have been).
    The tags are named like types; errors.py leaves them out of the reported parameter."""
    lists = [k for k in members if k.startswith("list")]

    def pick(value: Any) -> str:
        if not isinstance(value, list):
            return "str" if "str" in members else next(iter(members))
        first = value[0] if value else None
        kind = ("list[str]" if isinstance(first, str) else "list[list[int]]" if isinstance(first, list)
                else "list[part]" if isinstance(first, dict) else "list[int]")
        return kind if value and kind in members else lists[0]

    return Annotated[Union[tuple(Annotated[t, Tag(k)] for k, t in members.items())], Discriminator(pick)]


Text = Annotated[str, AfterValidator(_valid_unicode)]
StopText = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_valid_unicode)]
MAX_STOP = 16
MAX_EMBED_INPUTS = 2048
Stop = _shaped({"str": StopText, "list[str]": Annotated[list[StopText], Field(max_length=MAX_STOP)]})
Prompt = _shaped({"str": Text, "list[int]": list[int], "list[str]": list[Text], "list[list[int]]": list[list[int]]})
EmbedInput = _shaped({"str": Text, "list[str]": Annotated[list[Text], Field(max_length=MAX_EMBED_INPUTS)],
                      "list[int]": list[int], "list[list[int]]": list[list[int]]})


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


# OpenAI options this server does not implement, with the values that ask for nothing (sent by
# clients that fill in every default). Anything else is refused: silently ignoring logprobs or
# tools would answer a different question than the one asked.
_NO_OP: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False), "top_logprobs": (None, 0), "logit_bias": (None, {}),
    "frequency_penalty": (None, 0), "presence_penalty": (None, 0), "tools": (None, []), "functions": (None, []),
    "tool_choice": (None, "none", "auto"), "function_call": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}), "best_of": (None, 1), "echo": (None, False), "suffix": (None, ""),
    "audio": (None,), "prediction": (None,), "modalities": (None, ["text"]), "dimensions": (None,),
}


class _OpenAIRequest(_Request):
    model_config = ConfigDict(strict=True, extra="allow")  # extras are looked at, then dropped

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        """OpenAI takes null for any optional field and means its default; many clients send them."""
        if isinstance(data, dict):
            fields = cls.model_fields
            data = {k: v for k, v in data.items() if v is not None or k not in fields or fields[k].is_required()}
        return data

    def unsupported_options(self) -> list[str]:
        """The OpenAI options of this request that ask for something this server does not do."""
        extra = self.model_extra or {}
        return [name for name, no_op in _NO_OP.items()
                if name in extra and not any(_same(extra[name], v) for v in no_op)]


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (type(a) in (int, float) and type(b) is int and a == b)


class SamplingRequest(_OpenAIRequest):
    model: str
    max_tokens: Optional[int] = Field(None, description="tokens to generate at most (default: the server's)")
    temperature: Optional[float] = Field(1.0, ge=0, le=2, allow_inf_nan=False)
    top_p: Optional[float] = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    # vLLM's extensions, which tensora's sampler has too
    top_k: Optional[int] = Field(0, ge=-1, description="sample from the k likeliest tokens (0 or -1: all)")
    min_p: Optional[float] = Field(0.0, ge=0, le=1, allow_inf_nan=False,
                                   description="drop tokens under min_p times the likeliest's probability")
    repetition_penalty: Optional[float] = Field(1.0, gt=0, le=10, allow_inf_nan=False,
                                                description="scale the logits of tokens seen so far down")
    stop: Optional[Stop] = Field(
        None, description=f"up to {MAX_STOP} non-empty strings; the reply ends before the first one")
    seed: Optional[int] = Field(None, ge=0)
    n: Optional[int] = Field(1, ge=1, le=1, description="only 1 is supported")
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = Field(None, description="only with stream: true")

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class StreamOptions(_Request):
    include_usage: bool = False


class TextPart(_Request):
    type: Literal["text"] = Field(description="only text parts are supported")
    text: Text


Content = _shaped({"str": Text, "list[part]": list[TextPart]})


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: Content

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = None


class CompletionRequest(SamplingRequest):
    prompt: Prompt = Field(
        description="text or token ids; a list of one prompt is taken too (one prompt per request)")


class EmbeddingRequest(_OpenAIRequest):
    model: str
    input: EmbedInput = Field(
        description=f"a string or up to {MAX_EMBED_INPUTS} strings (token ids are refused: send text)")
    encoding_format: Optional[Literal["float", "base64"]] = "float"


# -- responses ------------------------------------------------------------------------------

def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChunkDelta(BaseModel):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: Optional[Literal["stop", "length"]] = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion (`data: {...}`)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Optional[Usage] = None


class TextChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Optional[Literal["stop", "length"]] = None
    logprobs: None = None


class Completion(BaseModel):
    """A text completion; also each streamed event of one (`object` is "text_completion" in both)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Optional[Usage] = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str] = Field(description="floats, or base64 of little-endian float32")


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tensora"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    """Liveness, the engine's load now, and its decode counters since start (for load tests)."""

    status: Literal["ok"] = "ok"
    active: int
    waiting: int
    decode_steps: int = Field(description="batched decode steps run since the server started")
    decode_rows: int = Field(description="sequence rows those steps decoded (rows / steps = mean batch)")


class MemoryReportBody(BaseModel):
    """tensora.quant.memory_report of each hosted model, the KV cache the engine holds now, and the tiers."""

    model: str
    dense_bytes: int
    held_bytes: int
    multiplier: float
    by_format: dict[str, tuple[int, int]]
    kv_cache_bytes: int
    text: str
    tiers: Optional[str] = Field(None, description="tensora.memory.report of a model loaded with a memory budget")


class MemoryReports(BaseModel):
    models: list[MemoryReportBody]


SamplingRequest.model_rebuild()
ChatCompletionRequest.model_rebuild()
CompletionRequest.model_rebuild()
