"""The app ``tests/servers/test_real_servers.py`` and ``tests/servers/test_deployments.py`` run.

Written as an sse-starlette user would write it, with nothing that knows about
the server: no adapter, no lifespan hook, no signal handler.  Its streams
report what happened to them on the server's side, where the test cannot
look, in two ways:

* ``GET /closed?tag=T`` answers with what stream ``T`` recorded so far: the
  ``time.monotonic()`` at which its source's ``finally`` ran, and at which
  its connection reached ``CLOSED``, with the close reason.  CLOCK_MONOTONIC
  is one clock for the whole machine on Linux, so the test can subtract its
  own readings.
* Every close is also printed to stderr, one ``realserver_app: CLOSED ...``
  line each, for tests that need the facts after the server has exited.

Endpoints:

* ``/stream?tag=T``: an endless async source of ``tick`` events, one at once
  and then one every ``interval`` seconds (``0``: as fast as they can be
  sent), each ``size`` bytes of data if given.  ``ping`` and
  ``send_timeout`` are passed through.  ``farewell=1`` adds a
  ``shutdown_event`` the source waits on (it yields ``goodbye`` and returns
  when it is set), ``shutdown_grace_period=1``, a ``farewell_factory`` and
  ``drain_retry``.  ``max_lifetime=S`` or ``max_lifetime=MIN:MAX`` rotates
  the stream after that many seconds (``/closed`` then also says which
  trigger began the drain, as ``drained_by``).
* ``/sync?tag=T``: a plain generator: one ``tick`` at once, then
  ``time.sleep(pause)`` (default 3 s) before each next one.
* ``/closed?tag=T``, ``/memory`` (pid and VmRSS of the serving process),
  ``/health``.

``stamp=1`` on ``/stream`` makes each event's data ``"<n> <monotonic>"``,
the moment the source yielded it.  A source's ``finally`` also prints a
``realserver_app: FINALLY tag=T monotonic=... pid=...`` line: with several
worker processes, ``/closed`` may be answered by one that never saw the
stream, and the log is shared.

Besides ``app``, the same routes are served behind Starlette's
``GZipMiddleware`` (``gzip_app``) and behind a ``BaseHTTPMiddleware``
subclass (``base_http_app``), as ``tests/servers/test_deployments.py`` runs them.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sse_sm import TRANSITIONS, CloseReason, EventSourceResponse, ServerSentEvent, State
from sse_sm import Transition as SSETransition

__all__ = (
    "DRAIN_RETRY_MS",
    "FAREWELL_GRACE_SECONDS",
    "SYNC_PAUSE_SECONDS",
    "app",
    "base_http_app",
    "gzip_app",
)

#: ``shutdown_grace_period`` of ``/stream?farewell=1``.
FAREWELL_GRACE_SECONDS: Final = 1.0
#: ``drain_retry`` of ``/stream?farewell=1``: the farewell's ``retry:`` lies in it.
DRAIN_RETRY_MS: Final = (1000, 3000)
#: Default pause of ``/sync`` before each item after the first.
SYNC_PAUSE_SECONDS: Final = 3.0

_CLOSE_REASONS: Final = {
    (arc.source, arc.trigger): arc.close_reason
    for arc in TRANSITIONS
    if arc.close_reason is not None
}

#: ``SSE_SM_TRACE_TRANSITIONS=1`` prints every transition, not only the close
#: (to diagnose a deployment from its log).
_TRACE: Final = os.environ.get("SSE_SM_TRACE_TRANSITIONS") == "1"

#: What each tagged stream recorded; written from the event loop and, for
#: ``/sync``, from a worker thread.
_records: dict[str, dict[str, object]] = {}
_records_lock = threading.Lock()


def _record(tag: str, **facts: object) -> None:
    with _records_lock:
        _records.setdefault(tag, {}).update(facts)


def _on_transition(tag: str) -> Callable[[SSETransition], None]:
    """A listener that records the moment and the reason of the close."""

    def listener(transition: SSETransition) -> None:
        if transition.target is State.DRAINING:
            _record(tag, drained_by=transition.trigger.name)
        if transition.target is not State.CLOSED:
            if _TRACE:
                print(
                    f"realserver_app: TRANSITION tag={tag} {transition.source.name}->"
                    f"{transition.target.name} trigger={transition.trigger.name} "
                    f"monotonic={time.monotonic():.6f} detail={transition.reason!r}",
                    file=sys.stderr,
                    flush=True,
                )
            return
        now = time.monotonic()
        reason = _CLOSE_REASONS.get((transition.source, transition.trigger))
        reason_value = reason.value if isinstance(reason, CloseReason) else None
        _record(
            tag,
            closed_at=now,
            close_reason=reason_value,
            closed_from=transition.source.name,
            detail=transition.reason,
        )
        print(
            f"realserver_app: CLOSED tag={tag} reason={reason_value} "
            f"from={transition.source.name} monotonic={now:.6f} pid={os.getpid()} "
            f"detail={transition.reason!r}",
            file=sys.stderr,
            flush=True,
        )

    return listener


def _float_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    return None if raw is None else float(raw)


async def _ticks(
    tag: str, interval: float, size: int, shutdown: anyio.Event | None, stamp: bool = False
) -> AsyncIterator[ServerSentEvent]:
    payload = "x" * size
    n = 0
    try:
        while True:
            n += 1
            # With ``stamp``, the data is "<n> <monotonic at the yield>": the test
            # subtracts it from the arrival time to see whether anything held it.
            data = f"{n} {time.monotonic():.6f}" if stamp else payload or str(n)
            yield ServerSentEvent(data=data, id=str(n), event="tick")
            if shutdown is not None:
                with anyio.move_on_after(interval):
                    await shutdown.wait()
                if shutdown.is_set():
                    yield ServerSentEvent(data="the source saw the shutdown", event="goodbye")
                    return
            elif interval > 0:
                await anyio.sleep(interval)
    finally:
        now = time.monotonic()
        _record(tag, finally_at=now, events=n)
        # For servers with several workers, where /closed may ask another one.
        print(
            f"realserver_app: FINALLY tag={tag} monotonic={now:.6f} pid={os.getpid()}",
            file=sys.stderr,
            flush=True,
        )


def _farewell() -> ServerSentEvent:
    return ServerSentEvent(data="the server is draining", event="farewell")


async def stream(request: Request) -> EventSourceResponse:
    tag = request.query_params["tag"]
    interval = _float_param(request, "interval")
    size = int(request.query_params.get("size", "0"))
    shutdown = anyio.Event() if request.query_params.get("farewell") == "1" else None
    options: dict[str, Any] = {}
    if shutdown is not None:
        # Keyword arguments that only some versions of sse_sm have: passed by
        # name at run time so that this file type-checks against any of them.
        options = {
            "shutdown_event": shutdown,
            "shutdown_grace_period": FAREWELL_GRACE_SECONDS,
            "farewell_factory": _farewell,
            "drain_retry": DRAIN_RETRY_MS,
        }
    lifetime = request.query_params.get("max_lifetime")
    if lifetime is not None:
        low, _, high = lifetime.partition(":")
        options["max_lifetime"] = (float(low), float(high)) if high else float(low)
    _record(tag, opened_at=time.monotonic(), pid=os.getpid())
    return EventSourceResponse(
        _ticks(
            tag,
            0.1 if interval is None else interval,
            size,
            shutdown,
            stamp=request.query_params.get("stamp") == "1",
        ),
        ping=_float_param(request, "ping"),
        send_timeout=_float_param(request, "send_timeout"),
        on_transition=_on_transition(tag),
        **options,
    )


def _slow_items(tag: str, pause: float) -> Iterator[ServerSentEvent]:
    n = 1
    try:
        yield ServerSentEvent(data="1", id="1", event="tick")
        while True:
            time.sleep(pause)
            n += 1
            yield ServerSentEvent(data=str(n), id=str(n), event="tick")
    finally:
        _record(tag, finally_at=time.monotonic(), events=n)


async def sync_stream(request: Request) -> EventSourceResponse:
    tag = request.query_params["tag"]
    pause = _float_param(request, "pause")
    _record(tag, opened_at=time.monotonic(), pid=os.getpid())
    return EventSourceResponse(
        _slow_items(tag, SYNC_PAUSE_SECONDS if pause is None else pause),
        ping=_float_param(request, "ping"),
        on_transition=_on_transition(tag),
    )


async def closed(request: Request) -> JSONResponse:
    tag = request.query_params["tag"]
    with _records_lock:
        facts = dict(_records.get(tag, {}))
    return JSONResponse(facts)


def _own_rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


async def memory(request: Request) -> JSONResponse:
    return JSONResponse({"pid": os.getpid(), "rss_kib": _own_rss_kib()})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


_ROUTES: Final = [
    Route("/stream", stream),
    Route("/sync", sync_stream),
    Route("/closed", closed),
    Route("/memory", memory),
    Route("/health", health),
]

app = Starlette(routes=_ROUTES)


class _StampingMiddleware(BaseHTTPMiddleware):
    """A typical BaseHTTPMiddleware subclass: adds a header to every response.

    Such middleware runs the endpoint in a task of its own and relays the body
    through a memory stream, which is where streaming responses have lost
    their disconnects and their flushes before.
    """

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["X-Served-By"] = "realserver_app"
        return response


#: ``app`` behind Starlette's GZipMiddleware, which must pass event streams through.
gzip_app = Starlette(routes=_ROUTES, middleware=[Middleware(GZipMiddleware, minimum_size=10)])
#: ``app`` behind a :class:`BaseHTTPMiddleware` subclass.
base_http_app = Starlette(routes=_ROUTES, middleware=[Middleware(_StampingMiddleware)])
