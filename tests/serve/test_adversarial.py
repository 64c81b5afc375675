"""The server against a hostile or careless client: every bad request is a 4xx naming the problem.

Each case here was a bug: a 500, a misleading message, an option silently ignored, a 422 the
schema promised but the server never sent, a key check that came after the body was parsed,
a non-streamed request that kept its row after its client had gone.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from serve.tiny import client

from tensora.models.generation import SamplingOptions
from tensora.serve import BackgroundServer, Engine, QueueFull, Settings, ShuttingDown, create_app

USER = [{"role": "user", "content": "hello there"}]
CHAT, COMPLETIONS, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"


def _post(server, body, path=CHAT, headers=None, timeout=30):
    content = json.dumps(body) if isinstance(body, (dict, list)) else body
    return httpx.post(server.url + path, content=content,
                      headers={"content-type": "application/json"} if headers is None else headers, timeout=timeout)


def _error(r, status):
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def _chat(**kw):
    return {"model": "tiny", "messages": USER, "max_tokens": 2, **kw}


def _completion(**kw):
    return {"model": "tiny", "prompt": "abc", "max_tokens": 2, **kw}


BAD = [  # (path, body, param, message fragment, code)
    (CHAT, _chat(stop=""), "stop", "at least 1 character", "invalid_value"),
    (CHAT, _chat(stop=["ok", ""]), "stop.1", "at least 1 character", "invalid_value"),
    (CHAT, _chat(stop=[1, 2]), "stop.0", "valid string", "invalid_value"),
    (CHAT, _chat(stop=["s"] * 17), "stop", "at most 16", "invalid_value"),
    (CHAT, '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "temperature",
     "finite number", "invalid_value"),
    (CHAT, '{"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800"}]}', "messages.0.content",
     "unpaired UTF-16 surrogate", "invalid_value"),
    (COMPLETIONS, '{"model": "tiny", "prompt": "\\udfff", "max_tokens": 2}', "prompt", "unpaired UTF-16 surrogate",
     "invalid_value"),
    (CHAT, _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
     "messages.0.content.0.type", "'text'", "invalid_value"),
    (CHAT, _chat(messages=[{"role": "user", "content": None}]), "messages.0.content", "valid string",
     "invalid_value"),
    (CHAT, _chat(logprobs=True), "logprobs", "not supported", "unsupported_parameter"),
    (CHAT, _chat(top_logprobs=2), "top_logprobs", "not supported", "unsupported_parameter"),
    (CHAT, _chat(tools=[{"type": "function", "function": {"name": "f"}}]), "tools", "not supported",
     "unsupported_parameter"),
    (CHAT, _chat(tool_choice="required"), "tool_choice", "not supported", "unsupported_parameter"),
    (CHAT, _chat(response_format={"type": "json_object"}), "response_format", "not supported",
     "unsupported_parameter"),
    (CHAT, _chat(frequency_penalty=0.5), "frequency_penalty", "not supported", "unsupported_parameter"),
    (CHAT, _chat(logit_bias={"5": 100}), "logit_bias", "not supported", "unsupported_parameter"),
    (COMPLETIONS, _completion(echo=True), "echo", "not supported", "unsupported_parameter"),
    (COMPLETIONS, _completion(suffix="}"), "suffix", "not supported", "unsupported_parameter"),
    (COMPLETIONS, _completion(best_of=2), "best_of", "not supported", "unsupported_parameter"),
    (COMPLETIONS, _completion(logprobs=0), "logprobs", "not supported", "unsupported_parameter"),
    (CHAT, _chat(stream_options={"include_usage": True}), "stream_options", "only allowed with stream",
     "invalid_value"),
    (CHAT, _chat(max_tokens=None, max_completion_tokens=0), "max_completion_tokens", "at least 1", "invalid_value"),
    (COMPLETIONS, _completion(prompt=[[72, 105], [1]]), "prompt", "only one prompt", "invalid_value"),
    (COMPLETIONS, _completion(prompt=[True]), "prompt.0", "valid integer", "invalid_value"),
    (COMPLETIONS, {"model": "tiny", "prompt": "x" * 5000}, "prompt", "leaves no room", "context_length_exceeded"),
    (CHAT, "[1, 2]", None, "not a JSON object", "invalid_value"),
    (CHAT, "null", None, "not a JSON object", "invalid_value"),
    (CHAT, "", None, "body is empty", "invalid_value"),
    (CHAT, b'{"model": "tiny", "messages": [{"role": "user", "content": "\xff"}]}', None, "JSON", "invalid_json"),
    (CHAT, "[" * 100_000 + "]" * 100_000, None, "JSON", "invalid_json"),
]


@pytest.mark.parametrize("path,body,param,fragment,code", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests_are_400s_that_name_the_problem(tiny_server, path, body, param, fragment, code):
    error = _error(_post(tiny_server, body, path), 400)
    assert (error["param"], error["code"]) == (param, code)
    assert fragment in error["message"]
    assert not re.search(r"(?<!\w)-\d", error["message"])  # no "-5904 to generate"


def test_null_and_no_op_values_are_accepted_as_the_defaults(tiny_server, tiny_model):
    """OpenAI takes null for every optional field; clients that fill in every default must not be refused."""
    body = _chat(max_tokens=6, temperature=0, top_p=None, n=None, stream=None, seed=None, stop=None, user="u",
                 logprobs=False, top_logprobs=None, frequency_penalty=0, presence_penalty=0.0, logit_bias={},
                 tools=[], tool_choice="auto", response_format={"type": "text"}, parallel_tool_calls=True)
    r = _post(tiny_server, body)
    assert r.status_code == 200, r.text
    want = tiny_model.generate(tiny_model.chat_prompt(USER), max_new_tokens=6, temperature=0).text
    assert r.json()["choices"][0]["message"]["content"] == want
    r = _post(tiny_server, _chat(temperature=None, max_tokens=None, max_completion_tokens=3))
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


def test_top_k_is_honoured_not_ignored(tiny_server, tiny_model):
    """top_k=1 at temperature 1 is greedy; before, top_k was dropped and the reply was a random draw."""
    greedy = tiny_model.generate(tiny_model.chat_prompt(USER), max_new_tokens=8, temperature=0).text
    for seed in (1, 2):
        r = _post(tiny_server, _chat(max_tokens=8, temperature=1.0, top_k=1, seed=seed))
        assert r.json()["choices"][0]["message"]["content"] == greedy
    assert _error(_post(tiny_server, _chat(top_k=-2)), 400)["param"] == "top_k"
    assert _error(_post(tiny_server, _chat(repetition_penalty=0)), 400)["param"] == "repetition_penalty"


def test_a_subnormal_repetition_penalty_is_answered_and_the_server_goes_on(tiny_server, tiny_model):
    """1e-310 passes the schema (> 0); it once made the sampler's logits nan, and the failed
    row stayed in the batch: every later request got 500 until a restart."""
    r = _post(tiny_server, _chat(max_tokens=3, temperature=1.0, repetition_penalty=1e-310, seed=1))
    assert r.status_code == 200, r.text
    want = tiny_model.generate(tiny_model.chat_prompt(USER), max_new_tokens=4, temperature=0).text
    r = _post(tiny_server, _chat(max_tokens=4, temperature=0))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == want


def test_a_prompt_of_one_token_list_equals_its_ids(tiny_server):
    a = _post(tiny_server, _completion(prompt=[[72, 105]], temperature=0), COMPLETIONS).json()
    b = _post(tiny_server, _completion(prompt=[72, 105], temperature=0), COMPLETIONS).json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"] and a["usage"] == b["usage"]


@pytest.mark.parametrize("ctype", ["text/plain", None, "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_declared_json_is_a_415(tiny_server, ctype):
    headers = {} if ctype is None else {"content-type": ctype}
    error = _error(_post(tiny_server, _chat(), headers=headers), 415)
    assert "Content-Type: application/json" in error["message"] and error["code"] == "unsupported_media_type"
    assert (f"'{ctype}'" if ctype else "got none") in error["message"]


def test_json_with_a_charset_is_json(tiny_server):
    r = _post(tiny_server, _chat(), headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text


def test_wrong_method_and_unknown_route(tiny_server):
    error = _error(httpx.get(tiny_server.url + CHAT), 405)
    assert "does not take GET" in error["message"] and "POST" in error["message"]
    error = _error(httpx.post(tiny_server.url + "/v1/nope", json={}), 404)
    assert "/v1/nope" in error["message"]


def test_openapi_documents_the_statuses_the_server_sends(tiny_server):
    spec = httpx.get(tiny_server.url + "/openapi.json").json()
    assert "422" not in json.dumps(spec["paths"])  # validation errors are 400s, never 422s
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    post = spec["paths"][CHAT]["post"]["responses"]
    assert {"400", "401", "404", "413", "415", "429", "503"} <= set(post)
    assert set(spec["paths"]["/v1/models"]["get"]["responses"]) == {"200", "401"}
    props = spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert {"top_k", "min_p", "repetition_penalty"} <= set(props)


def test_the_key_is_checked_before_the_body_is_read(tiny_model):
    app = create_app(tiny_model, model_id="tiny", settings=Settings(api_key="clé-s3cret"))
    with BackgroundServer(app) as server:
        for body, headers in [("{not json", None), (_chat(), {"content-type": "text/plain"}), ("", None)]:
            error = _error(_post(server, body, headers=headers), 401)
            assert error["code"] == "invalid_api_key"
        assert _error(httpx.get(server.url + "/v1/nope"), 401)["type"] == "authentication_error"
        good = {"content-type": "application/json", "authorization": "Bearer clé-s3cret".encode()}
        assert _post(server, _chat(), headers=good).status_code == 200  # a non-ASCII key, sent as UTF-8
        assert _error(_post(server, "{not json", headers=good), 400)["code"] == "invalid_json"


def test_a_body_past_the_limit_is_a_413_before_it_is_parsed(tiny_model):
    app = create_app(tiny_model, model_id="tiny", settings=Settings(max_body_bytes=1000))
    with BackgroundServer(app) as server:
        big = _chat(messages=[{"role": "user", "content": "x" * 2000}])
        error = _error(_post(server, big), 413)
        assert "1000 bytes" in error["message"] and error["code"] == "request_too_large"

        def chunked():  # no Content-Length: counted as it arrives
            yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
            for _ in range(20):
                yield b"y" * 100
            yield b'"}]}'

        assert _error(_post(server, chunked()), 413)["code"] == "request_too_large"
        assert _post(server, _chat()).status_code == 200


def _slow_steps(monkeypatch, engine, seconds=0.005):
    step = engine.decoder.step

    def slow():
        time.sleep(seconds)
        return step()

    monkeypatch.setattr(engine.decoder, "step", slow)


def test_a_non_streamed_request_whose_client_leaves_frees_its_row(tiny_model, monkeypatch):
    app = create_app(tiny_model, model_id="tiny")
    engine = app.state.hosted.engine
    _slow_steps(monkeypatch, engine)  # 4000 steps would take 20 s
    with BackgroundServer(app) as server:
        with pytest.raises(httpx.TimeoutException):
            _post(server, _chat(max_tokens=4000, temperature=0), timeout=0.5)
        deadline = time.monotonic() + 5
        while engine.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.active == 0
        assert engine.rows_stepped < 1000  # dropped when the client left, not run to 4000 tokens
        assert _post(server, _chat(max_tokens=3)).json()["usage"]["completion_tokens"] == 3


def test_requests_whose_clients_left_while_waiting_do_not_hold_the_queue(tiny_model):
    async def run():
        engine = Engine(tiny_model, max_batch=1, max_queue=2)  # not started: requests stay waiting
        options = SamplingOptions(max_new_tokens=2)
        first, second = engine.submit([1, 2], options), engine.submit([1, 2], options)
        with pytest.raises(QueueFull):
            engine.submit([1, 2], options)
        first.cancel()
        second.cancel()
        assert engine.waiting == 0
        engine.submit([1, 2], options)
        engine.submit([1, 2], options)
        assert engine.waiting == 2

    asyncio.run(run())


def test_a_stopping_server_answers_503_with_retry_after(tiny_model, monkeypatch):
    async def stopped():
        engine = Engine(tiny_model).start()
        engine.stop()
        with pytest.raises(ShuttingDown):
            engine.submit([1, 2], SamplingOptions(max_new_tokens=2))

    asyncio.run(stopped())
    app = create_app(tiny_model, model_id="tiny")
    with BackgroundServer(app) as server:
        def refuse(*a, **k):
            raise ShuttingDown("the server is shutting down")

        monkeypatch.setattr(app.state.hosted.engine, "submit", refuse)
        r = _post(server, _chat())
        assert _error(r, 503)["code"] == "shutting_down" and r.headers["retry-after"]


class _FakeEmbedder:
    def __init__(self, tokenizer):
        self.tokenizer, self.config = tokenizer, SimpleNamespace(max_position_embeddings=512)
        self.max_input_tokens = 512

    def embed(self, texts):
        return np.ones((len(texts), 4), np.float32)


def test_embeddings_refuse_what_they_cannot_do(tiny_model):
    app = create_app(tiny_model, model_id="tiny", embedding_model=_FakeEmbedder(tiny_model.tokenizer),
                     embedding_id="emb")
    with BackgroundServer(app) as server:
        def post(**kw):
            return _post(server, {"model": "emb", **kw}, EMBEDDINGS)

        assert "token ids" in _error(post(input=[1, 2]), 400)["message"]
        assert _error(post(input=[[1, 2]]), 400)["param"] == "input"
        assert "at most 2048" in _error(post(input=["a"] * 2049), 400)["message"]
        assert _error(post(input="a", dimensions=2), 400)["code"] == "unsupported_parameter"
        assert _error(post(input=""), 400)["param"] == "input"
        assert _error(post(input="a", encoding_format="hex"), 400)["param"] == "encoding_format"
        r = _post(server, '{"model": "emb", "input": ["ok", "\\ud800"]}', EMBEDDINGS)
        assert _error(r, 400)["param"] == "input.1" and "surrogate" in r.json()["error"]["message"]
        r = post(input=["a", "b"], encoding_format=None)
        assert r.status_code == 200 and r.json()["data"][1]["embedding"] == [1.0] * 4


def test_the_openai_client_still_works_with_the_defaults_it_sends(tiny_server):
    c = client(tiny_server)
    r = c.chat.completions.create(model="tiny", messages=USER, max_tokens=2, frequency_penalty=0, logprobs=False)
    assert r.usage.completion_tokens == 2
    r = c.completions.create(model="tiny", prompt="abc", max_tokens=2, echo=False, best_of=1)
    assert r.usage.completion_tokens == 2


def test_many_clients_leaving_at_once_leave_the_engine_idle(tiny_model, monkeypatch):
    app = create_app(tiny_model, model_id="tiny", settings=Settings(max_batch=2, max_queue=16))
    engine = app.state.hosted.engine
    _slow_steps(monkeypatch, engine)

    async def leave(url, stream):
        body = _chat(max_tokens=3000, temperature=0, stream=stream)
        async with httpx.AsyncClient(timeout=30) as http:
            if not stream:
                with pytest.raises(httpx.TimeoutException):
                    await http.post(url + CHAT, json=body, timeout=0.5)
                return
            async with http.stream("POST", url + CHAT, json=body) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        return  # hang up after the first event: most of these are still waiting for a row

    async def run(url):
        await asyncio.gather(*[leave(url, i % 2 == 0) for i in range(10)])

    with BackgroundServer(app) as server:
        asyncio.run(run(server.url))
        deadline = time.monotonic() + 5
        while (engine.active or engine.waiting) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (engine.active, engine.waiting) == (0, 0)
        assert engine.rows_stepped < 2000  # ten requests of 3000 tokens were dropped, not run
        assert _post(server, _chat(max_tokens=3)).json()["usage"]["completion_tokens"] == 3


def test_error_bodies_escape_what_they_quote(tiny_server):
    """A lone surrogate in `model` is quoted by the 404's message; rendering it as UTF-8 raised (a 500)."""
    for path, body in ((CHAT, '{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}'),
                       (COMPLETIONS, '{"model": "a\\udfffb", "prompt": "hi"}'),
                       (EMBEDDINGS, '{"model": "\\ud800", "input": "x"}')):
        r = _post(tiny_server, body, path)
        error = _error(r, 404)
        assert error["code"] == "model_not_found"
        assert "\ud800" in error["message"] or "\udfff" in error["message"]  # quoted, escaped in the JSON


def test_model_ids_with_slashes_can_be_retrieved(tiny_model):
    app = create_app(tiny_model, model_id="HuggingFaceTB/SmolLM2-135M-Instruct")
    with BackgroundServer(app) as server:
        r = httpx.get(server.url + "/v1/models/HuggingFaceTB/SmolLM2-135M-Instruct", timeout=30)
        assert r.status_code == 200 and r.json()["id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert _error(httpx.get(server.url + "/v1/models/HuggingFaceTB/other", timeout=30), 404)["param"] == "model"


def test_text_that_cannot_fit_is_refused_before_it_is_tokenized(tiny_server, tiny_model):
    """Megabytes of prompt took seconds to tokenize only to be refused; past context x the longest token's
    characters no tokenization can make it fit."""
    chars = tiny_model.max_positions * tiny_model.tokenizer.longest_token_chars + 1
    start = time.perf_counter()
    for path, body in ((COMPLETIONS, _completion(prompt="x" * chars)),
                       (CHAT, _chat(messages=[{"role": "user", "content": "x" * chars}]))):
        error = _error(_post(tiny_server, body, path), 400)
        assert error["code"] == "context_length_exceeded" and f"{chars} characters" in error["message"]
    assert time.perf_counter() - start < 10


class _GatedEmbedder(_FakeEmbedder):
    """Embeds only when the test opens the gate: the embedding thread stays busy until then."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        self.gate, self.calls = __import__("threading").Event(), 0

    def embed(self, texts):
        self.calls += 1
        assert self.gate.wait(30)
        return super().embed(texts)


def test_the_embedding_queue_is_bounded_and_drops_requests_whose_clients_left(tiny_model):
    """Embedding requests queued without bound (never a 429), and ran after their clients had gone."""
    embedder = _GatedEmbedder(tiny_model.tokenizer)
    app = create_app(tiny_model, model_id="tiny", embedding_model=embedder, embedding_id="emb",
                     settings=Settings(max_queue=1))
    body = {"model": "emb", "input": "a"}

    async def scenario(url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            running = asyncio.create_task(http.post(EMBEDDINGS, json=body))
            while embedder.calls == 0:  # the first is running in the embedding thread
                await asyncio.sleep(0.01)
            waiting = asyncio.create_task(http.post(EMBEDDINGS, json=body))
            await asyncio.sleep(0.3)
            refused = await http.post(EMBEDDINGS, json=body)  # one running, one waiting: full
            assert refused.status_code == 429 and refused.headers["retry-after"]
            assert refused.json()["error"]["code"] == "queue_full"
            waiting.cancel()  # this client hangs up before its turn
            await asyncio.sleep(0.3)
            embedder.gate.set()
            assert (await running).status_code == 200
            r = await http.post(EMBEDDINGS, json=body)
            assert r.status_code == 200
        assert embedder.calls == 2  # the first and the last: the abandoned one never ran

    with BackgroundServer(app) as server:
        asyncio.run(scenario(server.url))


def test_shutting_down_ends_open_streams_with_an_error_event(tiny_model, monkeypatch):
    """uvicorn ran the lifespan shutdown (which stops the engine) only after its graceful timeout had
    cancelled the open streams: their clients saw a cut connection instead of an error event."""
    app = create_app(tiny_model, model_id="tiny")
    _slow_steps(monkeypatch, app.state.hosted.engine, seconds=0.02)
    server = BackgroundServer(app).__enter__()
    events = []
    with httpx.stream("POST", server.url + COMPLETIONS, json=_completion(max_tokens=3000, temperature=0, stream=True),
                      timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[len("data: "):])
            if len(events) == 3:
                server._server.should_exit = True  # what SIGINT / SIGTERM does
    server._thread.join(timeout=30)
    error = json.loads(events[-1])["error"]
    assert error["code"] == "shutting_down" and len(events) < 3000
