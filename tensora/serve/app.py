"""The OpenAI-compatible app: /v1/models, /v1/completions, /v1/chat/completions, /v1/embeddings.

    >>> app = create_app(tensora.models.load(path), model_id="smollm2")     # doctest: +SKIP
    >>> uvicorn.run(app)                                                      # doctest: +SKIP

The event loop only validates, tokenizes (in a thread) and relays text: the chat model runs
in the engine's worker thread (continuous batching, see engine.py), the embedding model in a
one-thread executor of its own. Streams are server-sent events ending in `data: [DONE]`; a
failure mid-stream is sent as an `error` event, so no stream is left hanging.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from ..models.generation import Completion as ModelCompletion
from ..models.generation import SamplingOptions
from . import errors
from . import schemas as s
from .engine import Engine, QueueFull
from .engine import Request as Generation
from .errors import APIError

PAGE = Path(__file__).parent / "static" / "chat.html"
ERRORS = {status: {"model": s.ErrorResponse} for status in (400, 401, 404, 429)}
STREAM_DOC = {"text/event-stream": {"schema": {"type": "string", "description": "server-sent events, `data: {json}`"
                                                                                  " then `data: [DONE]`"}}}


@dataclass
class Settings:
    """How the server limits work: batch rows, waiting requests, context and default max_tokens."""

    max_batch: int = 8
    max_queue: int = 64
    max_context: int | None = None  # None: the model's own context length
    default_max_tokens: int = 256
    api_key: str | None = None


class _Hosted:
    """A chat/completion model with its engine, and an optional embedding model with its thread."""

    def __init__(self, model: Any, model_id: str, embedder: Any, embedder_id: str | None, settings: Settings) -> None:
        self.model, self.model_id, self.embedder, self.embedder_id = model, model_id, embedder, embedder_id
        self.settings = settings
        self.context = min(model.max_positions, settings.max_context or model.max_positions)
        self.engine = Engine(model, max_batch=settings.max_batch, max_queue=settings.max_queue)
        self.embed_pool = ThreadPoolExecutor(1, thread_name_prefix="tensora-embed") if embedder is not None else None
        self.created = s.now()


def create_app(model: Any, *, model_id: str = "tensora", embedding_model: Any = None,
               embedding_id: str | None = None, settings: Settings | None = None) -> FastAPI:
    """The FastAPI app serving `model` (a CausalLM with its tokenizer) and optionally an embedding model."""
    if getattr(model, "tokenizer", None) is None:
        raise ValueError("serving needs a model loaded with its tokenizer")
    if embedding_model is not None and not hasattr(embedding_model, "embed"):
        raise ValueError(f"{type(embedding_model).__name__} has no embed(); pass a BERT-style encoder")
    settings = settings or Settings()
    embedding_id = embedding_id or ("embeddings" if embedding_model is not None else None)
    hosted = _Hosted(model, model_id, embedding_model, embedding_id, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hosted.engine.start()
        try:
            yield
        finally:
            hosted.engine.stop()
            if hosted.embed_pool is not None:
                hosted.embed_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="tensora", version="1", lifespan=lifespan,
                  description="OpenAI-compatible completions, chat and embeddings served by tensora")
    app.state.hosted = hosted
    errors.install(app)
    auth = [Depends(_auth(settings.api_key))]
    page = PAGE.read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page() -> str:
        return page

    @app.get("/health", response_model=s.Health)
    async def health() -> s.Health:
        return s.Health(active=hosted.engine.active, waiting=hosted.engine.waiting)

    @app.get("/v1/models", response_model=s.ModelList, dependencies=auth, responses=ERRORS)
    async def models() -> s.ModelList:
        ids = [hosted.model_id] + ([hosted.embedder_id] if hosted.embedder_id else [])
        return s.ModelList(data=[s.ModelCard(id=i, created=hosted.created) for i in ids])

    @app.get("/v1/memory", response_model=s.MemoryReports, dependencies=auth, responses=ERRORS)
    async def memory() -> s.MemoryReports:
        return await asyncio.to_thread(_memory_reports, hosted)

    @app.post("/v1/chat/completions", response_model=s.ChatCompletion, dependencies=auth,
              responses={**ERRORS, 200: {"content": STREAM_DOC}})
    async def chat_completions(body: s.ChatCompletionRequest) -> Any:
        _check_model(hosted, body.model)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        ids = await asyncio.to_thread(_chat_ids, hosted.model, messages)
        limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        request = _submit(hosted, body, ids, limit, "messages")
        if body.stream:
            return _sse(_chat_events(request, body), request)
        completion = await _result(request)
        return s.ChatCompletion(id=s.new_id("chatcmpl"), created=s.now(), model=body.model, usage=_usage(completion),
                                choices=[s.ChatChoice(message=s.AssistantMessage(content=completion.text),
                                                      finish_reason=completion.finish_reason)])

    @app.post("/v1/completions", response_model=s.Completion, dependencies=auth,
              responses={**ERRORS, 200: {"content": STREAM_DOC}})
    async def completions(body: s.CompletionRequest) -> Any:
        _check_model(hosted, body.model)
        ids = await asyncio.to_thread(_prompt_ids, hosted.model, body.prompt)
        request = _submit(hosted, body, ids, body.max_tokens, "prompt")
        if body.stream:
            return _sse(_completion_events(request, body), request)
        completion = await _result(request)
        return s.Completion(id=s.new_id("cmpl"), created=s.now(), model=body.model, usage=_usage(completion),
                            choices=[s.TextChoice(text=completion.text, finish_reason=completion.finish_reason)])

    @app.post("/v1/embeddings", response_model=s.EmbeddingList, dependencies=auth, responses=ERRORS)
    async def embeddings(body: s.EmbeddingRequest) -> s.EmbeddingList:
        if hosted.embedder is None or body.model != hosted.embedder_id:
            known = (f"'{hosted.embedder_id}'" if hosted.embedder_id
                     else "none (start the server with --embedding-model)")
            raise APIError(404, f"the embedding model '{body.model}' does not exist; this server has {known}",
                           param="model", code="model_not_found")
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts or any(not t for t in texts):
            raise APIError(400, "input must be a non-empty string or a non-empty list of non-empty strings",
                           param="input", code="invalid_value")
        counts = await asyncio.to_thread(lambda: [len(hosted.embedder.tokenizer.encode(t)) for t in texts])
        limit = hosted.embedder.config.max_position_embeddings
        if max(counts) > limit:
            raise APIError(400, f"an input holds {max(counts)} tokens; this model's maximum is {limit}",
                           param="input", code="context_length_exceeded")
        vectors = await asyncio.get_running_loop().run_in_executor(hosted.embed_pool, hosted.embedder.embed, texts)
        data = [s.Embedding(index=i, embedding=_encode(v, body.encoding_format)) for i, v in enumerate(vectors)]
        total = sum(counts)
        return s.EmbeddingList(data=data, model=body.model, usage=s.Usage(prompt_tokens=total, total_tokens=total))

    return app


# -- helpers ---------------------------------------------------------------------------------

def _auth(key: str | None) -> Callable[[Request], None]:
    def check(request: Request) -> None:
        if key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), key.encode()):
            raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           type="authentication_error", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
    return check


def _check_model(hosted: _Hosted, name: str) -> None:
    if name != hosted.model_id:
        raise APIError(404, f"the model '{name}' does not exist; this server generates with '{hosted.model_id}'",
                       param="model", code="model_not_found")


def _chat_ids(model: Any, messages: list[dict[str, str]]) -> list[int]:
    try:
        return model.chat_prompt(messages)
    except Exception as exc:  # e.g. a template that refuses a system message: the request's fault
        raise APIError(400, f"the model's chat template refused these messages: {exc}", param="messages",
                       code="invalid_value") from exc


def _prompt_ids(model: Any, prompt: str | list[int] | list[str]) -> list[int]:
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        if len(prompt) != 1:
            raise APIError(400, "only one prompt per request is supported", param="prompt", code="invalid_value")
        prompt = prompt[0]
    if isinstance(prompt, str):
        ids = model.tokenizer.encode(prompt) if prompt else []
    else:
        vocab = model.config.vocab_size
        if any(not 0 <= i < vocab for i in prompt):
            raise APIError(400, f"prompt token ids must lie in [0, {vocab})", param="prompt", code="invalid_value")
        ids = list(prompt)
    if not ids:
        raise APIError(400, "the prompt is empty", param="prompt", code="invalid_value")
    return ids


def _submit(hosted: _Hosted, body: s.SamplingRequest, ids: list[int], max_tokens: int | None,
            prompt_param: str) -> Generation:
    """Check the lengths and queue the request: 400 for what cannot fit, 429 when the queue is full."""
    n, context = len(ids), hosted.context
    if max_tokens is not None and max_tokens < 1:
        raise APIError(400, f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens",
                       code="invalid_value")
    if max_tokens is None:
        max_tokens = min(hosted.settings.default_max_tokens, context - n)
    if n + max(max_tokens, 1) > context:
        raise APIError(400, f"this model's maximum context length is {context} tokens; the request asks for "
                            f"{n + max_tokens} ({n} in the {prompt_param}, {max_tokens} to generate)",
                       param=prompt_param if n >= context else "max_tokens", code="context_length_exceeded")
    options = SamplingOptions(max_new_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                              stop=tuple(body.stop_list()), seed=body.seed)
    try:
        return hosted.engine.submit(ids, options)
    except QueueFull as exc:
        raise APIError(429, f"the server is busy: {exc}", type="rate_limit_error", code="queue_full",
                       headers={"Retry-After": "1"}) from None


async def _result(request: Generation) -> ModelCompletion:
    try:
        return await request.result()
    except APIError:
        raise
    except Exception as exc:
        raise APIError(500, f"generation failed: {type(exc).__name__}: {exc}", type="server_error") from exc
    finally:
        request.cancel()  # a no-op when finished; frees the row if this handler was cancelled


def _usage(c: ModelCompletion) -> s.Usage:
    return s.Usage(prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
                   total_tokens=c.prompt_tokens + c.completion_tokens)


def _sse(events: AsyncIterator[dict], request: Generation) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        except Exception as exc:  # the stream has started: the error goes in-band, then the stream ends
            error = APIError(500, f"generation failed: {type(exc).__name__}: {exc}", type="server_error")
            yield f"data: {json.dumps(error.body())}\n\n"
        else:
            yield "data: [DONE]\n\n"
        finally:
            request.cancel()  # the client went away (or we are done): free its row now

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _chat_events(request: Generation, body: s.ChatCompletionRequest) -> AsyncIterator[dict]:
    base = {"id": s.new_id("chatcmpl"), "object": "chat.completion.chunk", "created": s.now(), "model": body.model}

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return s.ChatCompletionChunk(**base, choices=[s.ChunkChoice(delta=s.ChunkDelta(**delta),
                                                                    finish_reason=finish)]).model_dump(
            exclude_none=True)

    yield chunk({"role": "assistant", "content": ""})
    async for delta in request:
        if delta.text:
            yield chunk({"content": delta.text})
        if delta.completion is not None:
            yield chunk({}, delta.completion.finish_reason)
            if body.stream_options is not None and body.stream_options.include_usage:
                yield {**base, "choices": [], "usage": _usage(delta.completion).model_dump()}


async def _completion_events(request: Generation, body: s.CompletionRequest) -> AsyncIterator[dict]:
    base = {"id": s.new_id("cmpl"), "object": "text_completion", "created": s.now(), "model": body.model}
    async for delta in request:
        finish = delta.completion.finish_reason if delta.completion is not None else None
        if delta.text or finish:
            yield {**base, "choices": [{"index": 0, "text": delta.text, "finish_reason": finish, "logprobs": None}]}
        if finish and body.stream_options is not None and body.stream_options.include_usage:
            yield {**base, "choices": [], "usage": _usage(delta.completion).model_dump()}


def _encode(v: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in v]


def _memory_reports(hosted: _Hosted) -> s.MemoryReports:
    from ..memory import report as tier_report
    from ..quant import memory_report

    out = []
    for name, model, kv in [(hosted.model_id, hosted.model, hosted.engine.decoder.cache.nbytes),
                            (hosted.embedder_id, hosted.embedder, 0)]:
        if model is None:
            continue
        r = memory_report(model)
        tiered = getattr(model, "memory", None)  # loaded with a memory budget: the tiers' report too
        tiers = None if tiered is None else tier_report(tiered.manager)
        out.append(s.MemoryReportBody(model=name, dense_bytes=r.dense_bytes, held_bytes=r.held_bytes,
                                      multiplier=r.multiplier, by_format=r.by_format, kv_cache_bytes=kv, text=str(r),
                                      tiers=tiers))
    return s.MemoryReports(models=out)
