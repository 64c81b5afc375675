"""OpenAI-compatible HTTP serving: continuous batching engine, FastAPI app, web chat page.

    engine.py    the worker thread: a bounded queue in front of a continuous-batching decoder
    schemas.py   request/response bodies (pydantic): the OpenAPI schema and its validation
    errors.py    OpenAI-style error bodies for every failure
    app.py       the FastAPI app: /v1/models, /v1/completions, /v1/chat/completions,
                 /v1/embeddings, /v1/memory, /health, and the chat page at /
    server.py    uvicorn in the foreground, or in a background thread on a free port
    static/      the chat page (plain HTML + JS, no CDN)
"""

from .app import Settings, create_app
from .engine import Engine, QueueFull, ShuttingDown
from .server import BackgroundServer, run

__all__ = ["BackgroundServer", "Engine", "QueueFull", "Settings", "ShuttingDown", "create_app", "run"]
