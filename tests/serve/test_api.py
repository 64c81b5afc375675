"""The OpenAI-compatible API through the official `openai` client against a real uvicorn server."""

from __future__ import annotations

import base64
import json
import time

import httpx
import numpy as np
import openai
import pytest
from serve.tiny import client, needs_smollm2

from tensora.serve import BackgroundServer, Settings, create_app
from tensora.serve import schemas

USER = [{"role": "user", "content": "hello there"}]


def _alone(model, messages, n):
    return model.generate(model.chat_prompt(messages), max_new_tokens=n, temperature=0)


def test_models_and_health(tiny_server):
    assert [m.id for m in client(tiny_server).models.list()] == ["tiny"]
    health = httpx.get(tiny_server.url + "/health").json()
    assert health == {"status": "ok", "active": 0, "waiting": 0, "decode_steps": health["decode_steps"],
                      "decode_rows": health["decode_rows"]}
    client(tiny_server).completions.create(model="tiny", prompt="a b", max_tokens=3, temperature=0)
    after = httpx.get(tiny_server.url + "/health").json()
    # the first token comes from the prefill, the other two from decode steps of one row
    assert after["decode_steps"] - health["decode_steps"] == 2
    assert after["decode_rows"] - health["decode_rows"] == 2


def test_chat_completion_equals_generate(tiny_server, tiny_model):
    r = client(tiny_server).chat.completions.create(model="tiny", messages=USER, max_tokens=12, temperature=0)
    want = _alone(tiny_model, USER, 12)
    assert r.choices[0].message.content == want.text and r.choices[0].finish_reason == want.finish_reason
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (want.prompt_tokens, want.completion_tokens)
    assert r.usage.total_tokens == want.prompt_tokens + want.completion_tokens


def test_streamed_chat_equals_non_streamed(tiny_server, tiny_model):
    events = list(client(tiny_server).chat.completions.create(
        model="tiny", messages=USER, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True}))
    assert events[0].choices[0].delta.role == "assistant"
    text = "".join(e.choices[0].delta.content or "" for e in events if e.choices)
    want = _alone(tiny_model, USER, 12)
    assert text == want.text
    assert [e.choices[0].finish_reason for e in events if e.choices][-1] == "length"
    assert events[-1].usage.completion_tokens == 12 and not events[-1].choices


def test_completions_stream_and_not(tiny_server, tiny_model):
    c = client(tiny_server)
    want = tiny_model.generate("abc", max_new_tokens=8, temperature=0)
    r = c.completions.create(model="tiny", prompt="abc", max_tokens=8, temperature=0)
    assert (r.choices[0].text, r.usage.prompt_tokens) == (want.text, want.prompt_tokens)
    chunks = list(c.completions.create(model="tiny", prompt="abc", max_tokens=8, temperature=0, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == want.text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_seed_and_stop(tiny_server, tiny_model):
    c = client(tiny_server)
    kw = dict(model="tiny", messages=USER, max_tokens=10, temperature=1.0, top_p=0.9, seed=11)
    a, b = (c.chat.completions.create(**kw).choices[0].message.content for _ in range(2))
    assert a == b == tiny_model.generate(tiny_model.chat_prompt(USER), max_new_tokens=10, temperature=1.0,
                                         top_p=0.9, seed=11).text
    full = _alone(tiny_model, USER, 12).text
    stop = full[3:5]
    r = c.chat.completions.create(model="tiny", messages=USER, max_tokens=12, temperature=0, stop=[stop])
    assert r.choices[0].message.content == full[:full.find(stop)] and r.choices[0].finish_reason == "stop"
    # streamed: the same text, no piece of the stop string shown first, the same finish reason
    chunks = list(c.chat.completions.create(model="tiny", messages=USER, max_tokens=12, temperature=0,
                                            stop=[stop], stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == full[:full.find(stop)]
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["stop"]


def _post(server, body, path="/v1/chat/completions", **kw):
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(server.url + path, content=content, headers={"content-type": "application/json"}, **kw)


BAD = [  # (body, status, param, message fragment)
    ("{not json", 400, None, "not valid JSON"),
    ({"model": "tiny", "messages": []}, 400, "messages", "at least 1"),
    ({"model": "tiny", "messages": [{"role": "user"}]}, 400, "messages.0.content", "Field required"),
    ({"model": "tiny", "messages": "hi"}, 400, "messages", "valid list"),
    ({"model": "tiny", "messages": USER, "temperature": "hot"}, 400, "temperature", "valid number"),
    ({"model": "tiny", "messages": USER, "max_tokens": "5"}, 400, "max_tokens", "valid integer"),
    ({"model": "tiny", "messages": USER, "temperature": 3}, 400, "temperature", "less than or equal to 2"),
    ({"model": "tiny", "messages": USER, "n": 2}, 400, "n", "less than or equal to 1"),
    ({"model": "nope", "messages": USER}, 404, "model", "'nope' does not exist"),
    ({"model": "tiny", "messages": USER, "max_tokens": 0}, 400, "max_tokens", "at least 1"),
    ({"model": "tiny", "messages": USER, "max_tokens": 10 ** 6}, 400, "max_tokens", "maximum context length"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x" * 5000}]}, 400, "messages", "maximum context"),
    ({"model": "tiny", "messages": USER, "stream": True, "max_tokens": -1}, 400, "max_tokens", "at least 1"),
    ({"model": "tiny", "messages": USER, "seed": -1}, 400, "seed", "greater than or equal to 0"),
    ({"model": "tiny", "messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role", "Input should be"),
]


@pytest.mark.parametrize("body,status,param,fragment", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests_get_openai_errors(tiny_server, body, status, param, fragment):
    r = _post(tiny_server, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and fragment in error["message"]


def test_bad_completion_prompts(tiny_server):
    for prompt, fragment in [("", "empty"), ([10 ** 6], "token ids"), (["a", "b"], "one prompt")]:
        r = _post(tiny_server, {"model": "tiny", "prompt": prompt}, "/v1/completions")
        assert r.status_code == 400 and fragment in r.json()["error"]["message"]


def test_the_client_raises_on_errors(tiny_server):
    c = client(tiny_server)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        c.chat.completions.create(model="missing", messages=USER)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        c.chat.completions.create(model="tiny", messages=USER, max_tokens=10 ** 6, stream=True)
    with pytest.raises(openai.NotFoundError, match="embedding model"):
        c.embeddings.create(model="tiny", input="x")


def test_disconnected_stream_frees_its_row(tiny_server):
    engine = tiny_server_engine(tiny_server)
    body = {"model": "tiny", "messages": USER, "max_tokens": 4000, "temperature": 0, "stream": True}
    with httpx.stream("POST", tiny_server.url + "/v1/chat/completions", json=body) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        before = engine.rows_stepped
    deadline = time.monotonic() + 5
    while engine.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.active == 0
    assert engine.rows_stepped - before < 1000  # it was dropped, not run to its 4000 tokens


def tiny_server_engine(server):
    return server.app.state.hosted.engine


def test_a_failing_model_ends_streams_with_an_error_event(tiny_model, monkeypatch):
    app = create_app(tiny_model, model_id="tiny")
    with BackgroundServer(app) as server:
        def boom():
            raise RuntimeError("boom")

        monkeypatch.setattr(app.state.hosted.engine.decoder, "step", boom)
        c = client(server, timeout=10)
        with pytest.raises(openai.APIError, match="boom"):
            for _ in c.chat.completions.create(model="tiny", messages=USER, max_tokens=5, stream=True):
                pass
        r = _post(server, {"model": "tiny", "messages": USER, "max_tokens": 5})
        assert r.status_code == 500 and "boom" in r.json()["error"]["message"]
        monkeypatch.undo()
        assert c.chat.completions.create(model="tiny", messages=USER, max_tokens=3).usage.completion_tokens == 3


def test_full_queue_answers_429_with_retry_after(tiny_model):
    app = create_app(tiny_model, model_id="tiny", settings=Settings(max_queue=0))
    with BackgroundServer(app) as server:
        r = _post(server, {"model": "tiny", "messages": USER, "max_tokens": 3})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "queue_full"


def test_api_key(tiny_model):
    app = create_app(tiny_model, model_id="tiny", settings=Settings(api_key="s3cret"))
    with BackgroundServer(app) as server:
        with pytest.raises(openai.AuthenticationError, match="API key"):
            client(server, api_key="wrong").models.list()
        assert httpx.get(server.url + "/v1/models").status_code == 401
        r = client(server, api_key="s3cret").chat.completions.create(model="tiny", messages=USER, max_tokens=2)
        assert r.usage.completion_tokens <= 2
        assert httpx.get(server.url + "/health").status_code == 200


def test_a_model_is_retrieved_by_its_id(tiny_server):
    c = client(tiny_server)
    card = c.models.retrieve("tiny")
    assert card.id == "tiny" and card.object == "model"
    with pytest.raises(openai.NotFoundError, match="'nope' does not exist"):
        c.models.retrieve("nope")
    spec = httpx.get(tiny_server.url + "/openapi.json").json()
    assert set(spec["paths"]["/v1/models/{model}"]["get"]["responses"]) >= {"200", "401", "404"}


def test_an_empty_api_key_is_refused(tiny_model):
    """An empty key would match every 'Authorization: Bearer' header with an empty token."""
    for key in ("", "  "):
        with pytest.raises(ValueError, match="API key is empty"):
            create_app(tiny_model, model_id="tiny", settings=Settings(api_key=key))


def test_openapi_schema_matches_the_responses(tiny_server):
    spec = httpx.get(tiny_server.url + "/openapi.json").json()
    for path in ("/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/health"):
        assert path in spec["paths"]
    post = spec["paths"]["/v1/chat/completions"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("ChatCompletionRequest")
    assert set(post["responses"]) >= {"200", "400", "401", "404", "429"}
    assert {"messages", "max_tokens", "temperature", "top_p", "stop", "seed", "n", "stream"} <= set(
        spec["components"]["schemas"]["ChatCompletionRequest"]["properties"])
    r = _post(tiny_server, {"model": "tiny", "messages": USER, "max_tokens": 3})
    schemas.ChatCompletion.model_validate(r.json())  # what the schema promises is what comes back
    r = _post(tiny_server, {"model": "tiny", "prompt": "hi", "max_tokens": 3, "stream": True}, "/v1/completions")
    events = [json.loads(line[6:]) for line in r.text.split("\n\n") if line.startswith("data: {")]
    for event in events:
        schemas.Completion.model_validate(event)
    assert r.text.rstrip().endswith("data: [DONE]")


def test_embeddings_equal_the_model(tiny_model, minilm):
    app = create_app(tiny_model, model_id="tiny", embedding_model=minilm, embedding_id="minilm")
    texts = ["A man is eating food.", "Tensora serves models."]
    with BackgroundServer(app) as server:
        c = client(server)
        assert [m.id for m in c.models.list()] == ["tiny", "minilm"]
        default = c.embeddings.create(model="minilm", input=texts)  # the client asks for base64
        floats = c.embeddings.create(model="minilm", input=texts[0], encoding_format="float")
        raw = _post(server, {"model": "minilm", "input": texts, "encoding_format": "base64"}, "/v1/embeddings")
        bad = _post(server, {"model": "minilm", "input": ["ok", ""]}, "/v1/embeddings")
        # more tokens than embed() reads (its max_seq_length, below the position limit): refused, not cut
        words = " ".join(["word"] * minilm.max_input_tokens)
        long = _post(server, {"model": "minilm", "input": words}, "/v1/embeddings")
    want = minilm.embed(texts)
    np.testing.assert_allclose(np.array([d.embedding for d in default.data]), want, atol=1e-6)
    np.testing.assert_allclose(floats.data[0].embedding, want[0], atol=1e-6)
    decoded = np.frombuffer(base64.b64decode(raw.json()["data"][1]["embedding"]), "<f4")
    np.testing.assert_array_equal(decoded, want[1])
    assert default.usage.prompt_tokens == sum(len(minilm.tokenizer.encode(t)) for t in texts)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
    assert minilm.max_input_tokens < minilm.config.max_position_embeddings
    assert long.status_code == 400 and long.json()["error"]["code"] == "context_length_exceeded"
    assert f"maximum is {minilm.max_input_tokens}" in long.json()["error"]["message"]


@needs_smollm2
def test_smollm2_answers_through_the_server(smollm2):
    app = create_app(smollm2, model_id="smollm2")
    question = [{"role": "user", "content": "What is the capital of France?"}]
    with BackgroundServer(app) as server:
        c = client(server)
        r = c.chat.completions.create(model="smollm2", messages=question, max_tokens=24, temperature=0)
        streamed = "".join(e.choices[0].delta.content or "" for e in c.chat.completions.create(
            model="smollm2", messages=question, max_tokens=24, temperature=0, stream=True))
    assert "Paris" in r.choices[0].message.content and r.choices[0].finish_reason == "stop"
    assert streamed == r.choices[0].message.content == smollm2.chat(question, max_new_tokens=24, temperature=0).text
