"""FastAPI's native SSE (``fastapi.sse``, FastAPI >= 0.135) for :mod:`bench.scale.app`.

Path operations with ``response_class=EventSourceResponse`` that are async
generators: FastAPI encodes what they yield and pings every 15 s (fixed).

* ``/fastapi/idle``: never yields;
* ``/fastapi/churn``: yields one event, then waits until the client leaves;
* ``/fastapi/sub``: the per-client ``asyncio.Queue`` pattern: :func:`publish`
  puts one ``ServerSentEvent(raw_data=...)`` into every subscriber's queue
  (``raw_data``: sent as is, not JSON-encoded, like the other implementations).

Importing this module raises ImportError when fastapi or ``fastapi.sse`` is missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final

import anyio
from fastapi import FastAPI
from fastapi.sse import EventSourceResponse, ServerSentEvent

__all__ = ("QUEUES", "app", "publish")

app: Final = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
#: Every subscriber's queue, by ``id``.
QUEUES: Final[dict[int, asyncio.Queue[ServerSentEvent]]] = {}


def publish(data: str) -> None:
    """Put one event into every subscriber's queue (never waits: queues are unbounded)."""
    event = ServerSentEvent(raw_data=data)
    for queue in QUEUES.values():
        queue.put_nowait(event)


@app.get("/fastapi/idle", response_class=EventSourceResponse)
async def idle() -> AsyncIterator[ServerSentEvent]:
    await anyio.sleep_forever()
    yield ServerSentEvent(raw_data="never")  # pragma: no cover (never reached)


@app.get("/fastapi/churn", response_class=EventSourceResponse)
async def churn() -> AsyncIterator[ServerSentEvent]:
    yield ServerSentEvent(raw_data="first")
    await anyio.sleep_forever()


@app.get("/fastapi/sub", response_class=EventSourceResponse)
async def sub() -> AsyncIterator[ServerSentEvent]:
    queue: asyncio.Queue[ServerSentEvent] = asyncio.Queue()
    QUEUES[id(queue)] = queue
    try:
        while True:
            yield await queue.get()
    finally:
        del QUEUES[id(queue)]
