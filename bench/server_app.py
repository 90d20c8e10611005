"""The ASGI app the real-server section serves: one path per implementation.

``/raw``, ``/sse_sm`` and ``/sse_starlette`` each stream ``{"event": "tick",
"data": "value 000NN"}`` events as fast as the server takes them, until the
client leaves (``raw`` writes the same bytes with an f-string); ``/ready``
answers ``ok``.  Paths are dispatched by hand, not by a router, so the only
per-event difference between the paths is the implementation.  Pings are off
(``ping=0``), as in the in-process section.

The sources never wait for data, so each one yields to the event loop every
256 events (``anyio.lowlevel.checkpoint``), like any cooperative producer.
Without it a loop that never awaits anything that suspends starves the
server: under uvicorn the raw loop then spins forever after the client has
left, because the server's own disconnect callback never gets to run.
sse_sm has such a checkpoint of its own (every 2 ms); the raw loop and
sse-starlette have none.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Final

import anyio.lowlevel
import sse_starlette
from starlette.types import Receive, Scope, Send

import sse_sm
from bench.apps import raw_stream
from bench.items import PAYLOADS

__all__ = ("app",)

_MASK: Final = len(PAYLOADS) - 1
#: A source checkpoints once every this many + 1 events.
_YIELD_MASK: Final = 255


async def _ticks() -> AsyncIterator[dict[str, str]]:
    payloads = PAYLOADS
    checkpoint = anyio.lowlevel.checkpoint
    for i in itertools.count():
        if i & _YIELD_MASK == 0:
            await checkpoint()
        yield {"event": "tick", "data": payloads[i & _MASK]}


async def _raw_ticks() -> AsyncIterator[bytes]:
    payloads = PAYLOADS
    checkpoint = anyio.lowlevel.checkpoint
    for i in itertools.count():
        if i & _YIELD_MASK == 0:
            await checkpoint()
        yield f"event: tick\r\ndata: {payloads[i & _MASK]}\r\n\r\n".encode()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _text(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path = scope["path"]
    if path == "/raw":
        await raw_stream(_raw_ticks(), scope, receive, send)
    elif path == "/sse_sm":
        await sse_sm.EventSourceResponse(_ticks(), ping=0)(scope, receive, send)
    elif path == "/sse_starlette":
        await sse_starlette.EventSourceResponse(_ticks(), ping=0)(scope, receive, send)
    elif path == "/ready":
        await _text(send, 200, b"ok")
    else:
        await _text(send, 404, b"no such path")
