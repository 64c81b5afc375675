"""Serving throughput: aggregate tokens/s with 1, 8 and 32 concurrent streaming clients, and TTFT.

A real server (uvicorn on 127.0.0.1, continuous batching up to --max-batch rows) hosts
SmolLM2-135M-Instruct (the embedded Q4_1 GGUF) or --model. Each client streams
--rounds chat completions one after another through the official `openai` client (greedy,
--new tokens at most, distinct questions); all clients of a level start together.
Aggregate tok/s = completion tokens of every request / wall time of the level; the ratio
column divides it by the 1-client figure (the target is >= 4x at 8 clients). TTFT is
request start -> first streamed text, p50 and p99 over all requests of the level.

    PYTHONPATH=. .venv/bin/python benchmarks/serve.py [--new 64] [--clients 1,8,32] [--rounds 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import table  # noqa: E402

from tensora.models import default_model_path, load  # noqa: E402
from tensora.serve import BackgroundServer, Settings, create_app  # noqa: E402

TOPICS = ["the sea", "a city at night", "an old clock", "mountains", "a library", "the first snow", "a robot",
          "a long train ride", "bees", "the moon", "a market", "a storm"]


async def _level(url: str, clients: int, rounds: int, new: int) -> tuple[float, int, list[float]]:
    """(wall seconds, completion tokens, TTFTs) of `clients` concurrent clients, `rounds` requests each."""
    import openai

    api = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    ttfts: list[float] = []

    async def client(k: int) -> int:
        tokens = 0
        for r in range(rounds):
            topic = TOPICS[(k + r * clients) % len(TOPICS)]
            messages = [{"role": "user", "content": f"Write a long story about {topic} (client {k}, round {r})."}]
            start, first = time.perf_counter(), None
            stream = await api.chat.completions.create(model="bench", messages=messages, max_tokens=new,
                                                       temperature=0, stream=True,
                                                       stream_options={"include_usage": True})
            async for event in stream:
                if first is None and event.choices and event.choices[0].delta.content:
                    first = time.perf_counter() - start
                if event.usage is not None:
                    tokens += event.usage.completion_tokens
            ttfts.append(first if first is not None else time.perf_counter() - start)
        return tokens

    try:
        t0 = time.perf_counter()
        tokens = sum(await asyncio.gather(*(client(k) for k in range(clients))))
        return time.perf_counter() - t0, tokens, ttfts
    finally:
        await api.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="HF directory or GGUF (default: the embedded SmolLM2)")
    ap.add_argument("--new", type=int, default=64, help="max_tokens of each request")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=2, help="requests per client, one after another")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the levels this many times, interleaved, and keep each level's fastest run "
                         "(steadier on a shared machine)")
    args = ap.parse_args()
    model = load(args.model or default_model_path())
    app = create_app(model, model_id="bench", settings=Settings(max_batch=args.max_batch, max_queue=256))
    levels = [int(c) for c in args.clients.split(",")]
    best: dict[int, tuple] = {}
    with BackgroundServer(app) as server:
        asyncio.run(_level(server.url, 1, 1, 4))  # warm up
        engine = server.app.state.hosted.engine
        for _ in range(args.repeat):
            for clients in levels:
                steps, stepped = engine.steps, engine.rows_stepped
                wall, tokens, ttfts = asyncio.run(_level(server.url, clients, args.rounds, args.new))
                batch = (engine.rows_stepped - stepped) / max(engine.steps - steps, 1)
                if clients not in best or tokens / wall > best[clients][1] / best[clients][0]:
                    best[clients] = (wall, tokens, ttfts, batch)
    rows, base = [], None
    for clients in levels:
        wall, tokens, ttfts, batch = best[clients]
        rate = tokens / wall
        base = base or rate
        rows.append((clients, clients * args.rounds, tokens, wall, rate, rate / base, batch,
                     1000 * float(np.percentile(ttfts, 50)), 1000 * float(np.percentile(ttfts, 99))))
    print(f"model: {args.model or default_model_path().name}, max_tokens {args.new}, {args.rounds} rounds per client,"
          f" max batch {args.max_batch}, best of {args.repeat}, {os.cpu_count()} CPUs")
    print(table(rows, ("clients", "requests", "tokens", "wall s", "agg tok/s", "vs 1 client", "mean batch",
                       "TTFT p50 ms", "TTFT p99 ms")))


if __name__ == "__main__":
    main()
