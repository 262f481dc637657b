"""Batcher work on behalf of an HTTP request: dropped when its client goes away, refused
with 429 + Retry-After when the queue is full, 503 when the server is shutting down."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable

from starlette.requests import Request

from easylm_imitate.inference.batcher import QueueFull, ShuttingDown
from easylm_imitate.inference.protocol import APIError

# Status for a request whose client disconnected (nginx's convention; nobody receives it).
CLIENT_CLOSED = 499


class ClientGone(Exception):
    """The client disconnected before its answer was ready; the work was dropped."""


def shutting_down() -> APIError:
    """The error every request still in flight gets while the server shuts down."""
    return APIError(503, "the server is shutting down", type="server_error", code="shutting_down")


def submit(start: Callable[[threading.Event], concurrent.futures.Future]) -> tuple[concurrent.futures.Future,
                                                                                    threading.Event]:
    """`start(cancel)` (a batcher call) with a fresh cancel event, its refusals as API errors."""
    cancel = threading.Event()
    try:
        return start(cancel), cancel
    except QueueFull as e:
        raise APIError(429, str(e), type="rate_limit_exceeded", code="queue_full",
                       headers={"Retry-After": str(e.retry_after_s)}) from None
    except ShuttingDown:
        raise shutting_down() from None


async def wait_for_client(request: Request | None, future: concurrent.futures.Future,
                          cancel: threading.Event):
    """The result of a batcher `future`. If the client disconnects first (or this task is
    cancelled), `cancel` is set, so the batcher drops the work, and `ClientGone` is raised.
    With `request` None the disconnect is not watched (a streaming response is cancelled
    by Starlette instead)."""
    waiting = asyncio.wrap_future(future)
    gone = asyncio.ensure_future(_disconnected(request)) if request is not None else None
    try:
        await asyncio.wait([t for t in (waiting, gone) if t is not None], return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        cancel.set()
        waiting.cancel()
        raise
    finally:
        if gone is not None:
            gone.cancel()
    if not waiting.done():
        cancel.set()
        waiting.cancel()
        raise ClientGone()
    try:
        return waiting.result()
    except ShuttingDown:
        raise shutting_down() from None


async def run_job(request: Request | None, start: Callable[[threading.Event], concurrent.futures.Future]):
    """Submit a batcher job (`start(cancel)`) and wait for it on behalf of `request`."""
    future, cancel = submit(start)
    return await wait_for_client(request, future, cancel)


async def _disconnected(request: Request) -> None:
    """Return once the client has disconnected (the request body was already read, so the
    next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # only if a server hands out more body messages: never spin
