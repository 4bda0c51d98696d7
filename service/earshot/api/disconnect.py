"""Run an engine call while watching the connection: if the client goes away, cancel the call
(the engine then drops the request's windows that have not run yet)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from earshot.engine.errors import ClientDisconnected

T = TypeVar("T")


async def unless_disconnected(request: Request, call: Awaitable[T]) -> T:
    """Await `call`; call this only once the body has been read (the next message is a disconnect)."""
    work = asyncio.ensure_future(call)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not work.done() and not watcher.done():  # we were cancelled ourselves
            work.cancel()
        watcher.cancel()
    if work.done():
        return work.result()
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)
    raise ClientDisconnected("the client closed the connection before its answer was ready")


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
