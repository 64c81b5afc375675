"""Serving throughput: aggregate tokens/s with 1, 8 and 32 concurrent streaming clients, and TTFT.

The server is the shipped command, `tensora serve` (uvicorn on 127.0.0.1, continuous
batching up to --max-batch rows), started as its own process as a user would run it,
hosting SmolLM2-135M-Instruct (the embedded Q4_1 GGUF) or --model. Each client streams
--rounds chat completions one after another (greedy, --new tokens at most, distinct
questions); all clients of a level start together. Aggregate tok/s = completion tokens of
every request / wall time of the level; the ratio column divides it by the 1-client
figure (the target is >= 4x at 8 clients). TTFT is request start -> first streamed text,
p50 and p99 over all requests of the level; "mean batch" is rows per decode step, from
the server's /health counters.

The load generator shares this machine's cores with the server, so it is kept lean:
httpx streams each response and every server-sent event is parsed with json.loads (the
official `openai` client, which the tests use, builds a pydantic object per event: on 2
cores its 8 streams took ~1.6 s of CPU per 1024 tokens, a seventh of what the server had,
against ~0.5 s for this one). Clients and server in one interpreter, as an earlier version
ran them, also share one GIL, which no deployment does.

    PYTHONPATH=. .venv/bin/python benchmarks/serve.py [--new 64] [--clients 1,8,32] [--rounds 2] [--repeat 3]
        [--activation-bits 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import table  # noqa: E402

TOPICS = ["the sea", "a city at night", "an old clock", "mountains", "a library", "the first snow", "a robot",
          "a long train ride", "bees", "the moon", "a market", "a storm"]


async def _stream(http: httpx.AsyncClient, body: dict) -> tuple[int, float | None]:
    """(completion tokens, seconds to the first text) of one streamed chat completion."""
    start, first, tokens = time.perf_counter(), None, 0
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread()).decode()[:300]}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if first is None and event["choices"] and event["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
            if event.get("usage"):
                tokens += event["usage"]["completion_tokens"]
    return tokens, first


async def _level(url: str, clients: int, rounds: int, new: int) -> tuple[float, int, list[float]]:
    """(wall seconds, completion tokens, TTFTs) of `clients` concurrent clients, `rounds` requests each."""
    ttfts: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:

        async def client(k: int) -> int:
            total = 0
            for r in range(rounds):
                topic = TOPICS[(k + r * clients) % len(TOPICS)]
                body = {"model": "bench", "max_tokens": new, "temperature": 0, "stream": True,
                        "stream_options": {"include_usage": True},
                        "messages": [{"role": "user",
                                      "content": f"Write a long story about {topic} (client {k}, round {r})."}]}
                start = time.perf_counter()
                tokens, first = await _stream(http, body)
                total += tokens
                ttfts.append(first if first is not None else time.perf_counter() - start)
            return total

        t0 = time.perf_counter()
        tokens = sum(await asyncio.gather(*(client(k) for k in range(clients))))
        return time.perf_counter() - t0, tokens, ttfts


class ServerProcess:
    """`tensora serve` in a child process on a free local port, until the `with` block ends."""

    def __init__(self, model: str | None, max_batch: int, activation_bits: int = 15) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.cmd = [sys.executable, "-m", "tensora.cli", "serve", *([model] if model else []), "--port",
                    str(self.port), "--max-batch", str(max_batch), "--max-queue", "256", "--model-id", "bench",
                    "--activation-bits", str(activation_bits)]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stdout.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/health").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the server did not come up in 300 s")
            time.sleep(0.2)

    def counters(self) -> tuple[int, int]:
        """(decode steps, rows decoded in them) so far."""
        health = httpx.get(self.url + "/health").json()
        return health["decode_steps"], health["decode_rows"]

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="HF directory or GGUF (default: the embedded SmolLM2)")
    ap.add_argument("--new", type=int, default=64, help="max_tokens of each request")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=2, help="requests per client, one after another")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--activation-bits", type=int, choices=(15, 8), default=15,
                    help="the server's --activation-bits (8: llama.cpp's activations, the byte kernel)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the levels this many times, interleaved, and keep each level's fastest run "
                         "(steadier on a shared machine)")
    args = ap.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    best: dict[int, tuple] = {}
    with ServerProcess(args.model, args.max_batch, args.activation_bits) as server:
        asyncio.run(_level(server.url, 1, 1, 4))  # warm up
        for _ in range(args.repeat):
            for clients in levels:
                steps, rows = server.counters()
                wall, tokens, ttfts = asyncio.run(_level(server.url, clients, args.rounds, args.new))
                steps_after, rows_after = server.counters()
                batch = (rows_after - rows) / max(steps_after - steps, 1)
                if clients not in best or tokens / wall > best[clients][1] / best[clients][0]:
                    best[clients] = (wall, tokens, ttfts, batch)
    rows, base = [], None
    for clients in levels:
        wall, tokens, ttfts, batch = best[clients]
        rate = tokens / wall
        base = base or rate
        rows.append((clients, clients * args.rounds, tokens, wall, rate, rate / base, batch,
                     1000 * float(np.percentile(ttfts, 50)), 1000 * float(np.percentile(ttfts, 99))))
    print(f"model: {args.model or 'SmolLM2-135M-Instruct.Q4_1.gguf (embedded)'}, max_tokens {args.new}, "
          f"{args.rounds} rounds per client, max batch {args.max_batch}, best of {args.repeat}, {os.cpu_count()} CPUs")
    print(table(rows, ("clients", "requests", "tokens", "wall s", "agg tok/s", "vs 1 client", "mean batch",
                       "TTFT p50 ms", "TTFT p99 ms")))


if __name__ == "__main__":
    main()
