"""Running the server app with uvicorn: a shutdown (SIGTERM, Ctrl-C) stops generation first,
so requests in flight are answered 503 at once instead of being waited for."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

# After this many seconds of a shutdown, uvicorn cancels whatever requests still run.
GRACEFUL_SHUTDOWN_S = 5


class AppServer(uvicorn.Server):
    """uvicorn server for an app made by `create_app`: shutting down first shuts its batcher
    down (queued requests fail at once, running rows stop at the next decode chunk), then
    lets uvicorn close the connections, waiting at most GRACEFUL_SHUTDOWN_S."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop generation, then shut uvicorn down."""
        batcher = getattr(self.config.app.state, "batcher", None)
        if batcher is not None:
            batcher.shutdown()
        await super().shutdown(sockets=sockets)


def make_server(app: FastAPI, host: str, port: int, log_level: str = "info") -> AppServer:
    """An `AppServer` for `app` on host:port."""
    return AppServer(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1", port: int | None = None):
    """Run `app` with uvicorn in a background thread; yields the base URL; shuts it down on exit."""
    port = port or free_port(host)
    server = make_server(app, host, port, log_level="warning")
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server on {host}:{port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
