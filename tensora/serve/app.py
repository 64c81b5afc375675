"""The OpenAI-compatible app: /v1/models (and /v1/models/{id}), /v1/completions,
/v1/chat/completions, /v1/embeddings.

    >>> app = create_app(tensora.models.load(path), model_id="smollm2")     # doctest: +SKIP
    >>> uvicorn.run(app)                                                      # doctest: +SKIP

The event loop only validates, tokenizes (in a thread) and relays text: the chat model runs
in the engine's worker thread (continuous batching, see engine.py), the embedding model in a
one-thread executor of its own. Streams are server-sent events ending in `data: [DONE]`; a
failure mid-stream is sent as an `error` event, so no stream is left hanging. A client that
hangs up, streaming or not, has its request dropped at once (its row or queue place freed).
In front of /v1/* a small ASGI gate checks the API key (401), then the content type (415) and
the body's size (413) before anything parses the body.
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
from typing import Any, AsyncIterator

import numpy as np
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..models.generation import Completion as ModelCompletion
from ..models.generation import SamplingOptions
from . import errors
from . import schemas as s
from .engine import Engine, QueueFull, ShuttingDown
from .engine import Request as Generation
from .errors import APIError

PAGE = Path(__file__).parent / "static" / "chat.html"
GET_ERRORS = {401: {"model": s.ErrorResponse}}
ERRORS = {status: {"model": s.ErrorResponse} for status in (400, 401, 404, 413, 415, 429, 500, 503)}
POST_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
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
    max_body_bytes: int = 16 * 2**20  # a request body past this is refused (413) before it is parsed


class _Hosted:
    """A chat/completion model with its engine, and an optional embedding model with its thread."""

    def __init__(self, model: Any, model_id: str, embedder: Any, embedder_id: str | None, settings: Settings) -> None:
        self.model, self.model_id, self.embedder, self.embedder_id = model, model_id, embedder, embedder_id
        self.settings = settings
        self.context = min(model.max_positions, settings.max_context or model.max_positions)
        self.engine = Engine(model, max_batch=settings.max_batch, max_queue=settings.max_queue)
        self.embed_pool = ThreadPoolExecutor(1, thread_name_prefix="tensora-embed") if embedder is not None else None
        self.embed_jobs = 0  # embedding requests running or waiting for embed_pool (the event loop's count)
        self.created = s.now()


def create_app(model: Any, *, model_id: str = "tensora", embedding_model: Any = None,
               embedding_id: str | None = None, settings: Settings | None = None) -> FastAPI:
    """The FastAPI app serving `model` (a CausalLM with its tokenizer) and optionally an embedding model."""
    if getattr(model, "tokenizer", None) is None:
        raise ValueError("serving needs a model loaded with its tokenizer")
    if embedding_model is not None and not hasattr(embedding_model, "embed"):
        raise ValueError(f"{type(embedding_model).__name__} has no embed(); pass a BERT-style encoder")
    settings = settings or Settings()
    if settings.api_key is not None and not settings.api_key.strip():
        raise ValueError("the API key is empty: every 'Bearer' header would match it; pass a key, or none")
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
    app.state.begin_shutdown = hosted.engine.stop  # server.py: before open streams are cut
    app.state.hosted = hosted
    errors.install(app)
    # The key, the content type and the body's size are checked before the body is read or parsed,
    # so that a client without the key learns nothing about the API (not even that its JSON is bad).
    app.add_middleware(_Gate, key=settings.api_key, max_body=settings.max_body_bytes)
    app.openapi = lambda: _openapi(app)
    page = PAGE.read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page() -> str:
        return page

    @app.get("/health", response_model=s.Health)
    async def health() -> s.Health:
        engine = hosted.engine
        return s.Health(active=engine.active, waiting=engine.waiting, decode_steps=engine.steps,
                        decode_rows=engine.rows_stepped)

    def model_ids() -> list[str]:
        return [hosted.model_id] + ([hosted.embedder_id] if hosted.embedder_id else [])

    @app.get("/v1/models", response_model=s.ModelList, responses=GET_ERRORS)
    async def models() -> s.ModelList:
        return s.ModelList(data=[s.ModelCard(id=i, created=hosted.created) for i in model_ids()])

    # {model:path}: ids such as "HuggingFaceTB/SmolLM2-135M-Instruct" hold slashes
    @app.get("/v1/models/{model:path}", response_model=s.ModelCard, responses={**GET_ERRORS, 404: ERRORS[404]})
    async def model_card(model: str) -> s.ModelCard:
        if model not in model_ids():
            raise APIError(404, f"the model '{model}' does not exist; this server has "
                                + ", ".join(f"'{i}'" for i in model_ids()), param="model", code="model_not_found")
        return s.ModelCard(id=model, created=hosted.created)

    @app.get("/v1/memory", response_model=s.MemoryReports, responses=GET_ERRORS)
    async def memory() -> s.MemoryReports:
        return await asyncio.to_thread(_memory_reports, hosted)

    @app.post("/v1/chat/completions", response_model=s.ChatCompletion,
              responses={**ERRORS, 200: {"content": STREAM_DOC}})
    async def chat_completions(body: s.ChatCompletionRequest, http: Request) -> Any:
        _check_model(hosted, body.model)
        _check_options(body)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        _refuse_surely_too_long(hosted.model, sum(len(m["content"]) for m in messages), hosted.context, "messages")
        ids = await asyncio.to_thread(_chat_ids, hosted.model, messages)
        if body.max_completion_tokens is not None:
            request = _submit(hosted, body, ids, body.max_completion_tokens, "messages", "max_completion_tokens")
        else:
            request = _submit(hosted, body, ids, body.max_tokens, "messages")
        if body.stream:
            return _sse(_chat_events(request, body), request)
        completion = await _result(request, http)
        return s.ChatCompletion(id=s.new_id("chatcmpl"), created=s.now(), model=body.model, usage=_usage(completion),
                                choices=[s.ChatChoice(message=s.AssistantMessage(content=completion.text),
                                                      finish_reason=completion.finish_reason)])

    @app.post("/v1/completions", response_model=s.Completion,
              responses={**ERRORS, 200: {"content": STREAM_DOC}})
    async def completions(body: s.CompletionRequest, http: Request) -> Any:
        _check_model(hosted, body.model)
        _check_options(body)
        if isinstance(body.prompt, str):
            _refuse_surely_too_long(hosted.model, len(body.prompt), hosted.context, "prompt")
        ids = await asyncio.to_thread(_prompt_ids, hosted.model, body.prompt)
        request = _submit(hosted, body, ids, body.max_tokens, "prompt")
        if body.stream:
            return _sse(_completion_events(request, body), request)
        completion = await _result(request, http)
        return s.Completion(id=s.new_id("cmpl"), created=s.now(), model=body.model, usage=_usage(completion),
                            choices=[s.TextChoice(text=completion.text, finish_reason=completion.finish_reason)])

    @app.post("/v1/embeddings", response_model=s.EmbeddingList, responses=ERRORS)
    async def embeddings(body: s.EmbeddingRequest, http: Request) -> s.EmbeddingList:
        if hosted.embedder is None or body.model != hosted.embedder_id:
            known = (f"'{hosted.embedder_id}'" if hosted.embedder_id
                     else "none (start the server with --embedding-model)")
            raise APIError(404, f"the embedding model '{body.model}' does not exist; this server has {known}",
                           param="model", code="model_not_found")
        _check_options(body)
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if any(not isinstance(t, str) for t in texts):
            raise APIError(400, "input as token ids is not supported: send the text", param="input",
                           code="invalid_value")
        if not texts or any(not t for t in texts):
            raise APIError(400, "input must be a non-empty string or a non-empty list of non-empty strings",
                           param="input", code="invalid_value")
        # embed() would cut a longer text silently (as sentence-transformers does); an API caller
        # is told instead, as OpenAI's embeddings endpoint does
        limit = hosted.embedder.max_input_tokens
        _refuse_surely_too_long(hosted.embedder, max(len(t) for t in texts), limit, "input")
        counts = await asyncio.to_thread(lambda: [len(hosted.embedder.tokenizer.encode(t)) for t in texts])
        if max(counts) > limit:
            raise APIError(400, f"an input holds {max(counts)} tokens; this model's maximum is {limit}",
                           param="input", code="context_length_exceeded")
        vectors = await _embedded(hosted, texts, http)
        data = [s.Embedding(index=i, embedding=_encode(v, body.encoding_format)) for i, v in enumerate(vectors)]
        total = sum(counts)
        return s.EmbeddingList(data=data, model=body.model, usage=s.Usage(prompt_tokens=total, total_tokens=total))

    return app


# -- helpers ---------------------------------------------------------------------------------

class _Gate:
    """ASGI middleware in front of /v1/*: the API key (401), then for the POST routes a JSON content
    type (415) and a bounded body (413), all before anything reads or parses the body."""

    def __init__(self, app: ASGIApp, key: str | None, max_body: int) -> None:
        self.app, self.key, self.max_body = app, None if key is None else key.encode("utf-8"), max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        headers = {name.lower(): value for name, value in scope["headers"]}
        if self.key is not None and not _key_matches(headers.get(b"authorization", b""), self.key):
            error = APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                             type="authentication_error", code="invalid_api_key",
                             headers={"WWW-Authenticate": "Bearer"})
            return await error.response()(scope, receive, send)
        if scope["method"] != "POST" or scope["path"] not in POST_ROUTES:
            return await self.app(scope, receive, send)
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode("latin-1")
        if ctype != "application/json" and not ctype.endswith("+json"):
            got = f"'{ctype}'" if ctype else "none"
            error = APIError(415, f"send the body as JSON with 'Content-Type: application/json' (got {got})",
                             code="unsupported_media_type")
            return await error.response()(scope, receive, send)
        length = headers.get(b"content-length", b"")
        declared = int(length) if length.isdigit() else None
        chunks, size, more = [], 0, True
        while more and size <= self.max_body and (declared is None or declared <= self.max_body):
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
        if size > self.max_body or (declared is not None and declared > self.max_body):
            error = APIError(413, f"the request body is over this server's limit of {self.max_body} bytes"
                                  + (f" ({declared} bytes)" if declared is not None else ""),
                             code="request_too_large")
            return await error.response()(scope, receive, send)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


def _key_matches(header: bytes, key: bytes) -> bool:
    scheme, _, token = header.strip().partition(b" ")
    return scheme.lower() == b"bearer" and secrets.compare_digest(token.strip(), key)


def _openapi(app: FastAPI) -> dict:
    """FastAPI's schema without its 422 responses: every validation error here is a 400 (errors.py)."""
    if app.openapi_schema is None:
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path in spec.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            spec.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = spec
    return app.openapi_schema


def _check_options(body: s.SamplingRequest | s.EmbeddingRequest) -> None:
    """400 for what this server cannot honour, rather than an answer to a different request."""
    for name in body.unsupported_options():
        raise APIError(400, f"'{name}' is not supported by this server (leave it out, or send its default)",
                       param=name, code="unsupported_parameter")
    if isinstance(body, s.SamplingRequest) and body.stream_options is not None and not body.stream:
        raise APIError(400, "stream_options is only allowed with stream: true", param="stream_options",
                       code="invalid_value")


def _refuse_surely_too_long(model: Any, chars: int, limit: int, param: str) -> None:
    """400 before tokenizing text that cannot fit in `limit` tokens whatever its tokens are: no token
    spells more characters than the longest in the vocabulary. Tokenizing megabytes takes seconds
    that the request would spend only to be refused."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return
    longest = tokenizer.longest_token_chars
    if chars > limit * max(longest, 1):
        raise APIError(400, f"the {param} holds {chars} characters, more than {limit} tokens can spell "
                            f"(at most {longest} characters each)", param=param, code="context_length_exceeded")


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


def _prompt_ids(model: Any, prompt: str | list[int] | list[str] | list[list[int]]) -> list[int]:
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):  # a batch of prompts
        if len(prompt) != 1:
            raise APIError(400, f"only one prompt per request is supported, got {len(prompt)}", param="prompt",
                           code="invalid_value")
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
            prompt_param: str, limit_param: str = "max_tokens") -> Generation:
    """Check the lengths and queue the request: 400 for what cannot fit, 429 when the queue is full."""
    n, context = len(ids), hosted.context
    if max_tokens is not None and max_tokens < 1:
        raise APIError(400, f"{limit_param} must be at least 1, got {max_tokens}", param=limit_param,
                       code="invalid_value")
    if max_tokens is None and n >= context:
        raise APIError(400, f"this model's maximum context length is {context} tokens; the {prompt_param} alone "
                            f"holds {n}, which leaves no room to generate", param=prompt_param,
                       code="context_length_exceeded")
    if max_tokens is None:
        max_tokens = min(hosted.settings.default_max_tokens, context - n)
    if n + max_tokens > context:
        raise APIError(400, f"this model's maximum context length is {context} tokens; the request asks for "
                            f"{n + max_tokens} ({n} in the {prompt_param}, {max_tokens} to generate)",
                       param=prompt_param if n >= context else limit_param, code="context_length_exceeded")
    options = SamplingOptions(max_new_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                              top_k=max(body.top_k, 0), min_p=body.min_p, repetition_penalty=body.repetition_penalty,
                              stop=tuple(body.stop_list()), seed=body.seed)
    try:
        return hosted.engine.submit(ids, options)
    except QueueFull as exc:
        raise APIError(429, f"the server is busy: {exc}", type="rate_limit_error", code="queue_full",
                       headers={"Retry-After": "1"}) from None
    except ShuttingDown as exc:
        raise _unavailable(exc) from None


def _unavailable(exc: Exception) -> APIError:
    return APIError(503, f"the server is unavailable: {exc}", type="server_error", code="shutting_down",
                    headers={"Retry-After": "5"})


async def _result(request: Generation, http: Request) -> ModelCompletion:
    """The whole completion; if the client hangs up first, its request is dropped (its row freed) at once."""
    done = asyncio.ensure_future(request.result())
    try:
        return await _unless_gone(done, http)
    except (APIError, asyncio.CancelledError):
        raise
    except ShuttingDown as exc:
        raise _unavailable(exc) from exc
    except Exception as exc:
        raise APIError(500, f"generation failed: {type(exc).__name__}: {exc}", type="server_error") from exc
    finally:
        done.cancel()
        request.cancel()  # a no-op when finished; frees the row if this handler was cancelled


async def _embedded(hosted: _Hosted, texts: list[str], http: Request) -> Any:
    """The embeddings of `texts` from the embedding thread, with the generation queue's rules: 429 when
    max_queue requests already wait for it, and a request whose client hangs up before its turn is dropped."""
    if hosted.embed_jobs > hosted.settings.max_queue:  # the one running plus max_queue waiting
        raise APIError(429, f"the server is busy: {hosted.embed_jobs} embedding requests are running or waiting",
                       type="rate_limit_error", code="queue_full", headers={"Retry-After": "1"})
    hosted.embed_jobs += 1
    job = hosted.embed_pool.submit(hosted.embedder.embed, texts)
    try:
        return await _unless_gone(asyncio.wrap_future(job), http)
    finally:
        hosted.embed_jobs -= 1
        job.cancel()  # a job not yet started never runs; a running one finishes unread


async def _unless_gone(done: asyncio.Future, http: Request) -> Any:
    """`done`'s result, or APIError 499 if the client hangs up first (nobody will read the answer;
    uvicorn drops it)."""
    gone = asyncio.ensure_future(_disconnected(http))
    try:
        await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            raise APIError(499, "the client closed the connection", code="client_closed_request")
        return done.result()
    finally:
        gone.cancel()


async def _disconnected(http: Request) -> None:
    """Returns when the client has gone (the body is read by then, so what comes next is the disconnect)."""
    while (await http.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # not expected (the body is read); never spin on it


def _usage(c: ModelCompletion) -> s.Usage:
    return s.Usage(prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
                   total_tokens=c.prompt_tokens + c.completion_tokens)


def _sse(events: AsyncIterator[dict], request: Generation) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        except Exception as exc:  # the stream has started: the error goes in-band, then the stream ends
            error = (_unavailable(exc) if isinstance(exc, ShuttingDown)
                     else APIError(500, f"generation failed: {type(exc).__name__}: {exc}", type="server_error"))
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
