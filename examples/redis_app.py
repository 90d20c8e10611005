"""A chat stream shared by several processes through Redis: the Redis backend's smallest app.

Run two (or more) copies on different ports against one Redis::

    REDIS_URL=redis://127.0.0.1:6379/0 uvicorn examples.redis_app:app --port 8000
    REDIS_URL=redis://127.0.0.1:6379/0 hypercorn -k trio --bind 127.0.0.1:8001 \\
        examples.redis_app:app

then ``curl -N localhost:8000/events`` and ``curl -N localhost:8001/events``
in two terminals, and ``curl -d hello localhost:8000/publish``: both streams
show the event with the same id, and a client that moves from one process to
the other with ``Last-Event-ID`` gets exactly what it missed.

Endpoints:

* ``GET /events``: the ``chat`` topic, resumed after ``Last-Event-ID`` (or
  ``?lastEventID=``) if given;
* ``POST /publish``: the request body (UTF-8) becomes one ``message`` event;
  answers ``{"id": ...}``, or 503 when Redis did not store it (or may not have);
* ``GET /stats``: this process's pid and the backend's statistics;
* ``GET /health``: ``ok`` once the app is up.

The app knows nothing of the other processes: the backend is entered in the
lifespan (it owns its reader task there) and the hub is all the endpoints use.
``tests/external/test_redis_apps.py`` runs it under uvicorn and hypercorn's trio worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from typing import Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from sse_sm import EventSourceResponse, Hub, ServerSentEvent
from sse_sm.redis import RedisBackend

__all__ = ("TOPIC", "app", "create_app")

#: The one topic of the app.
TOPIC: Final = "chat"
#: Events Redis keeps for resuming clients (at least this many: ``MAXLEN ~``).
MAX_EVENTS: Final = 10_000
#: Seconds without traffic before a keep-alive comment.
PING_SECONDS: Final = 15
#: The reader retries after 50 ms, backing off to at most this many seconds,
#: so a restarted Redis is noticed within about a second.
RECONNECT_MAX_SECONDS: Final = 1.0


def create_app(url: str) -> Starlette:
    """The app on the Redis at ``url`` (``redis://host:port/db``)."""
    backend = RedisBackend(
        url,
        topics=[TOPIC],
        max_events=MAX_EVENTS,
        reconnect_delay=(0.05, RECONNECT_MAX_SECONDS),
    )
    hub = Hub(backend)

    async def events(request: Request) -> EventSourceResponse:
        return EventSourceResponse(hub.subscribe(TOPIC, request), ping=PING_SECONDS)

    async def publish(request: Request) -> JSONResponse:
        text = (await request.body()).decode("utf-8", errors="replace")
        try:
            event_id = await hub.publish(TOPIC, ServerSentEvent(text, event="message"))
        except ConnectionError as exc:  # RedisUnavailableError: not stored, or maybe not
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse({"id": event_id})

    async def stats(request: Request) -> JSONResponse:
        backend_stats = dataclasses.asdict(backend.statistics())
        return JSONResponse({"pid": os.getpid(), "backend": backend_stats})

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with backend:  # opens the client, starts the reader of TOPIC
            try:
                yield
            finally:
                hub.close()  # open streams end before the reader stops

    return Starlette(
        routes=[
            Route("/events", events),
            Route("/publish", publish, methods=["POST"]),
            Route("/stats", stats),
            Route("/health", health),
        ],
        lifespan=lifespan,
    )


app = create_app(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
