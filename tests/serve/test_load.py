"""Load: 32 concurrent streaming clients all finish, each with what its prompt gives alone (greedy)."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from tensora.serve import BackgroundServer, Settings, create_app

CLIENTS = 32


def _questions(n):
    return [[{"role": "user", "content": f"Question {i}: what comes after {i * 7}?"}] for i in range(n)]


async def _stream_all(url, model_id, conversations, max_tokens):
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)

    async def one(messages):
        start, first, parts, finish = time.perf_counter(), None, [], None
        stream = await client.chat.completions.create(model=model_id, messages=messages, max_tokens=max_tokens,
                                                      temperature=0, stream=True)
        async for event in stream:
            if event.choices and event.choices[0].delta.content:
                first = first or time.perf_counter() - start
                parts.append(event.choices[0].delta.content)
            if event.choices and event.choices[0].finish_reason:
                finish = event.choices[0].finish_reason
        return "".join(parts), finish

    try:
        return await asyncio.gather(*(one(m) for m in conversations))
    finally:
        await client.close()


def _check(server, model, model_id, max_tokens, seconds):
    conversations = _questions(CLIENTS)
    engine = server.app.state.hosted.engine
    t0 = time.perf_counter()
    results = asyncio.run(_stream_all(server.url, model_id, conversations, max_tokens))
    elapsed = time.perf_counter() - t0
    for messages, (text, finish) in zip(conversations, results):
        want = model.generate(model.chat_prompt(messages), max_new_tokens=max_tokens, temperature=0)
        assert (text, finish) == (want.text, want.finish_reason)
    assert elapsed < seconds
    assert engine.rows_stepped / engine.steps > 8  # the clients were decoded together
    assert engine.active == 0 and engine.waiting == 0


def test_32_streaming_clients_tiny_model(tiny_model):
    app = create_app(tiny_model, model_id="tiny", settings=Settings(max_batch=CLIENTS))
    with BackgroundServer(app) as server:
        _check(server, tiny_model, "tiny", 24, seconds=30)


@pytest.mark.slow
def test_32_streaming_clients_smollm2(smollm2):
    app = create_app(smollm2, model_id="smollm2", settings=Settings(max_batch=CLIENTS))
    with BackgroundServer(app) as server:
        _check(server, smollm2, "smollm2", 8, seconds=120)
