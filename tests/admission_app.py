"""The app ``tests/servers/test_admission_server.py`` runs under a real server.

Endpoints:

* ``/stream``: an endless source, one ``tick`` event at once and then one
  every 50 ms, served by an :class:`EventSourceResponse` on the app's own
  coordinator, whose ``max_streams`` and ``retry_after`` come from the
  environment (``SSE_SM_MAX_STREAMS``, ``SSE_SM_RETRY_AFTER`` as ``low,high``).
* ``/stats``: the coordinator's :meth:`~sse_sm.DrainCoordinator.statistics`
  as JSON (streams per state, closes per reason, rejections).
* ``/health``: ``ok``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Final

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from sse_sm import EventSourceResponse, ServerSentEvent, drain_coordinator_for

__all__ = ("app",)

TICK_SECONDS: Final = 0.05


async def _ticks() -> AsyncIterator[ServerSentEvent]:
    n = 0
    while True:
        n += 1
        yield ServerSentEvent(data=str(n), id=str(n), event="tick")
        await anyio.sleep(TICK_SECONDS)


async def stream(request: Request) -> EventSourceResponse:
    return EventSourceResponse(_ticks(), ping=5)


async def stats(request: Request) -> JSONResponse:
    snapshot = drain_coordinator_for(request.app).statistics()
    return JSONResponse(
        {
            "streams": {state.value: n for state, n in snapshot.streams.items()},
            "closes": {reason.value: n for reason, n in snapshot.closes.items()},
            "rejections": snapshot.rejections,
            "events_sent": snapshot.events_sent,
        }
    )


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/stream", stream), Route("/stats", stats), Route("/health", health)])

_coordinator = drain_coordinator_for(app)
_coordinator.max_streams = int(os.environ.get("SSE_SM_MAX_STREAMS", "10"))
_low, _high = (int(part) for part in os.environ.get("SSE_SM_RETRY_AFTER", "1,5").split(","))
_coordinator.retry_after = (_low, _high)
