"""`tensora serve`: the OpenAI-compatible HTTP server (with the chat page at /) for a model."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from . import activation_bits_arg, apply_activation_bits, command, int_at_least


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="HF directory or .gguf file (default: the embedded SmolLM2-135M)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8000, help="0: any free port")
    p.add_argument("--quantize", default=None, help="quantize while loading: nf4, q4_0, int8, ...")
    p.add_argument("--memory-budget", default=None, help="RAM budget for the weights, e.g. 2GiB")
    activation_bits_arg(p)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/*")
    p.add_argument("--max-batch", type=int_at_least(1), default=8,
                   help="requests decoded together (continuous batching)")
    p.add_argument("--max-queue", type=int_at_least(0), default=64, help="requests that may wait; more get 429")
    p.add_argument("--max-context", type=int_at_least(1), default=None, help="cap on prompt + completion tokens")
    p.add_argument("--embedding-model", default=None, help="a BERT-style HF directory to serve /v1/embeddings")
    p.add_argument("--model-id", default=None, help="the name clients use (default: the file or folder name)")


def _port(text: str) -> int:
    port = int_at_least(0)(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {port}")
    return port


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port: a port that cannot be listened on fails now, in one clear line (before a
    model takes minutes to load), the port is held while it loads, and port 0 becomes the free port chosen."""
    s = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        s = socket.socket(family, kind, proto)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does, so it can bind it again
        s.bind(address)
        return s
    except OSError as exc:
        if s is not None:
            s.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def load_model(path: str | None, quantize: str | None = None, memory_budget: str | None = None):
    """The named model, or the embedded default; with a budget, its weights are tiered (tensora.memory)."""
    from tensora.models import default_model_path, load

    return load(path or default_model_path(), quantize=quantize, memory_budget=memory_budget)


def model_name(path: str | None) -> str:
    from tensora.models import default_model_path

    p = Path(path) if path else default_model_path()
    return p.stem if p.suffix == ".gguf" else p.name


@command("serve", "serve a model over an OpenAI-compatible HTTP API, with a chat page at /", _serve_args)
def serve(args: argparse.Namespace) -> int:
    from tensora.serve import run

    with reserve_port(args.host, args.port) as reserved:  # held while the model loads; port 0 gets its number
        port = reserved.getsockname()[1]
        app, model_id = _app(args)
    print(f"serving '{model_id}' on http://{args.host}:{port}  (chat page at /, API at /v1)", flush=True)
    run(app, host=args.host, port=port)  # released just above for uvicorn to bind (SO_REUSEADDR, as reserved)
    return 0


def _app(args: argparse.Namespace) -> tuple[object, str]:
    """The server app for the command's model (and embedding model), and the model's id."""
    from tensora.models import load
    from tensora.serve import Settings, create_app

    apply_activation_bits(args)
    model = load_model(args.model, args.quantize, args.memory_budget)
    embedder = load(args.embedding_model) if args.embedding_model else None
    settings = Settings(max_batch=args.max_batch, max_queue=args.max_queue, max_context=args.max_context,
                        api_key=args.api_key)
    model_id = args.model_id or model_name(args.model)
    app = create_app(model, model_id=model_id, embedding_model=embedder,
                     embedding_id=model_name(args.embedding_model) if args.embedding_model else None,
                     settings=settings)
    return app, model_id
