"""Running the app under uvicorn: in the foreground (`tensora serve`) or in a background thread.

The background form binds a free port on 127.0.0.1 (port 0) and is what the tests and
benchmarks/serve.py use: a real HTTP server, shut down when the `with` block ends.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    """uvicorn's server, which tells the app first when shutdown begins (`app.state.begin_shutdown`,
    create_app's engine stop): streams in flight then end with an error event (503 shutting_down) and
    `data: [DONE]` within the graceful timeout. uvicorn alone runs the lifespan shutdown only after
    the timeout has cancelled them, so their clients saw a cut connection."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        begin = getattr(getattr(self.config.app, "state", None), "begin_shutdown", None)
        if begin is not None:
            await asyncio.to_thread(begin)
        await super().shutdown(sockets)


def run(app: Any, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve `app` until interrupted."""
    _Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)).run()


class BackgroundServer:
    """`with BackgroundServer(app) as server:` serves `app` at `server.url` on a free local port."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 30.0) -> None:
        self.app = app
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
        self._server = _Server(config)
        self._thread = threading.Thread(target=self._server.run, name="tensora-uvicorn", daemon=True)
        self._timeout = startup_timeout
        self.url = ""

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self._timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
