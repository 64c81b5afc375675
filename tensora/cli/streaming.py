"""Printing a model's streamed completion to the terminal (shared by demo, generate and chat)."""

from __future__ import annotations

import time


def stream_to_terminal(model: object, prompt: object, **options: object) -> str:
    """Print a completion as it is generated, then its speed; returns its text."""
    t0 = time.perf_counter()
    stream = model.stream(prompt, **options)
    for delta in stream:
        print(delta, end="", flush=True)
    c = stream.completion
    seconds = time.perf_counter() - t0
    print(f"\n[{c.completion_tokens} tokens, {c.completion_tokens / seconds:.1f} tok/s, finish: {c.finish_reason}]")
    return c.text
