"""The sse_sm demo: a live ticker, and an explorer of the connection state machine.

Run it with ``bash scripts/demo.sh`` and open the URL it prints.  The page at
``/`` shows two things side by side:

* the events of ``/events`` as the browser's own ``EventSource`` receives
  them: a ticker published through a :class:`~sse_sm.hub._hub.Hub`, so a browser
  that reconnects sends ``Last-Event-ID`` and gets exactly what it missed;
* the state diagram, drawn server-side from ``sse_sm.TRANSITIONS``, with the
  number of connections in each state and the recent transitions, live from
  ``/explorer``.  Every response the demo creates carries an
  ``on_transition`` hook that feeds the explorer.

Its buttons make the server walk each arc: end a stream (``completed``, then
a resume), drain every stream (``DRAINING``, the farewell, then a reconnect),
refuse new streams for a moment (``rejected``: a 503 with ``Retry-After``,
which the page's ``EventSource`` gives up on, so the page retries itself),
stall a client that stops reading (``send_timeout``), disconnect, HEAD, and a
failing source (``error``).  The README's "The demo" section is the tour.

Admission control: the app's coordinator admits at most ``DEMO_MAX_STREAMS``
streams at once (default 50) and tells refused clients to come back after
1 to 3 seconds.

Everything is served by this module: the page is ``demo_page.html`` beside
it, with the diagram and the settings filled in; no CDN, no build step.
``tests/servers/test_demo.py`` runs it under uvicorn and hypercorn's trio worker, and
``tests/external/test_browser.py`` drives the page in headless Chromium.

Several workers can share the ticker through Redis (``bash
scripts/demo_redis.sh``): ``DEMO_REDIS_URL`` makes the hub use a
:class:`~sse_sm.redis.RedisBackend` on that URL (entered in the lifespan), and
``DEMO_TICKER=0`` keeps a worker from publishing ticks of its own, so that
exactly one worker ticks and every worker streams the same ticks with the
same ids.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sse_sm import (
    EventSourceResponse,
    Hub,
    MemoryBackend,
    SendTimeoutError,
    ServerSentEvent,
    Transition,
    drain_coordinator_for,
)

from ._diagram_svg import state_diagram_svg
from ._explorer import Explorer, Tracked

if TYPE_CHECKING:
    from sse_sm.redis import RedisBackend

__all__ = ("Demo", "app", "coordinator_stats", "create_app", "parse_interval", "parse_max_streams")

#: The hub topic of the ticker.
TOPIC: Final = "ticks"
#: Seconds between ticks, unless ``DEMO_TICK_SECONDS`` says otherwise.
DEFAULT_INTERVAL: Final = 1.0
#: Bounds for ``DEMO_TICK_SECONDS``: fast enough for tests, never a busy loop.
MIN_INTERVAL: Final = 0.05
MAX_INTERVAL: Final = 10.0
#: Ticks the hub keeps for resuming clients: 5 minutes at the default pace.
#: A client away for longer gets the ``sse_sm.gap`` event, then what is kept.
STORE_EVENTS: Final = 300
#: Seconds without traffic before a keep-alive comment.
PING_SECONDS: Final = 5

#: ``retry:`` sent with the goodbye when the server ends a ticker stream.
END_RETRY_MS: Final = 1500
#: ``retry:`` range sent with the farewell of a drain, drawn per stream.
DRAIN_RETRY_MS: Final = (1000, 2000)
#: Seconds after a drain request before new streams may stream again; shorter
#: than the smallest drain retry, so reconnecting browsers find it open.
DRAIN_RESET_SECONDS: Final = 0.5
#: How long a draining ticker stream may take to finish.  It ends at once (its
#: subscription is closed), so it always drains well within this.
TICKER_GRACE_SECONDS: Final = 2.0
#: A ticker stream drains by itself after a lifetime drawn from this range
#: (``LIFETIME_EXPIRED``), as a deployment does to spread clients over new
#: workers: the page sees the farewell, waits the ``retry:`` and resumes from
#: its last id, losing no tick.
TICKER_LIFETIME_SECONDS: Final = (60.0, 120.0)

#: A stalled client is cut after a send has waited this long.
STALL_SEND_TIMEOUT: Final = 1.0
#: Size of each event of the stall stream.
STALL_EVENT_BYTES: Final = 64 * 1024
#: Events the stall stream sends at most (32 MiB): far more than the buffers
#: between the server and a fetch() nobody reads (a few MiB), and a bound if a
#: client does read it all.
STALL_MAX_EVENTS: Final = 512
#: The page aborts its unread fetch() after this, freeing the connection.
STALL_RELEASE_MS: Final = 6000

#: Streams admitted at once, unless ``DEMO_MAX_STREAMS`` says otherwise.
DEFAULT_MAX_STREAMS: Final = 50
#: ``Retry-After`` of a refused request: seconds, drawn per refusal.
RETRY_AFTER_SECONDS: Final = (1, 3)
#: How long the "Full house" button makes the server refuse every new stream.
FULL_HOUSE_SECONDS: Final = 5.0

#: A page's id for itself, as it may appear in ``?client=``.
_CLIENT_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
PAGE_TEMPLATE: Final = Path(__file__).with_name("demo_page.html")


def _demo_logger() -> logging.Logger:
    """Return a logger that prints even though the server only configures its own.

    uvicorn and hypercorn set up their loggers, not the root logger, so INFO
    records from an application logger would be dropped.  A handler on this
    one logger (and nowhere else) makes the demo's lines visible without
    touching anybody else's logging configuration.
    """
    logger = logging.getLogger("examples.demo_app")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     [demo] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


log = _demo_logger()


def parse_interval(raw: str | None) -> float:
    """Turn ``DEMO_TICK_SECONDS`` into a safe tick interval in seconds.

    Anything unparsable (including ``nan`` and infinities) falls back to the
    default rather than failing: a demo should stream, not argue.
    """
    if raw is None:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_INTERVAL
    if not math.isfinite(value):
        return DEFAULT_INTERVAL
    return min(max(value, MIN_INTERVAL), MAX_INTERVAL)


def parse_max_streams(raw: str | None) -> int:
    """Turn ``DEMO_MAX_STREAMS`` into a limit: a whole number >= 0, else the default."""
    try:
        value = int(raw) if raw is not None else DEFAULT_MAX_STREAMS
    except ValueError:
        return DEFAULT_MAX_STREAMS
    return value if value >= 0 else DEFAULT_MAX_STREAMS


def client_id(raw: str | None) -> str | None:
    """The page's id from ``?client=``, or ``None`` if absent or malformed."""
    return raw if raw is not None and _CLIENT_ID.fullmatch(raw) else None


class DemoFailure(RuntimeError):
    """Raised on purpose by the ``/fail`` stream's source."""


def farewell() -> ServerSentEvent:
    """The last event of a drained stream; ``drain_retry`` puts a ``retry:`` before it."""
    return ServerSentEvent(
        json.dumps({"message": "the server is draining: reconnecting in a moment"}),
        event="farewell",
    )


class TickSubscription(Protocol):
    """What the ticker needs of ``hub.subscribe(...)``: encoded events, and a way to leave."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class _EndSwitch:
    """Lets the ``End my stream`` button end one ticker stream from the server side."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> None:
        self.requested = True


async def ticker_source(
    subscription: TickSubscription, end: _EndSwitch, shutdown: anyio.Event
) -> AsyncIterator[bytes | ServerSentEvent]:
    """The hub's ticks for one client, ended by the server on request.

    ``End my stream`` takes effect right after the next tick, so the stream
    always ends after an event with an id: the browser reconnects after
    ``END_RETRY_MS`` with that id as ``Last-Event-ID``, and the hub replays
    exactly the ticks published in between.  The goodbye has no id, so the
    browser's last event id stays the tick's.

    A drain closes the subscription (see :meth:`Demo.events`): the loop ends
    and the source returns, which is ``SOURCE_EXHAUSTED`` in ``DRAINING``
    (close reason ``drained``); the response then sends the farewell.

    The subscription is left on every path: the response closes this
    generator when the client goes, which runs the ``finally``.
    """
    try:
        async for frame in subscription:
            yield frame
            if end.requested:
                break
    finally:
        await subscription.aclose()  # never suspends
    if end.requested and not shutdown.is_set():
        yield ServerSentEvent(
            json.dumps({"message": "the server ended this stream", "retry_ms": END_RETRY_MS}),
            event="stream-end",
            retry=END_RETRY_MS,
        )


async def stall_source() -> AsyncIterator[ServerSentEvent]:
    """Large events as fast as the connection takes them, up to ``STALL_MAX_EVENTS``."""
    blob = "x" * STALL_EVENT_BYTES
    for n in range(1, STALL_MAX_EVENTS + 1):
        yield ServerSentEvent(blob, event="filler", id=str(n))


async def failing_source() -> AsyncIterator[ServerSentEvent]:
    """One event, then an exception: the ``FAILED`` arc."""
    yield ServerSentEvent("this stream is about to fail", event="doomed")
    await anyio.sleep(0.2)
    raise DemoFailure("the 'Fail a stream' button")


def coordinator_stats(app: Starlette) -> dict[str, Any]:
    """``drain_coordinator_for(app).statistics()`` as JSON: what ``/stats`` serves.

    Streams alive per state, closes per reason (the reasons that happened
    only), rejections, and the events, pings and bytes sent.
    """
    stats = drain_coordinator_for(app).statistics()
    return {
        "streams": {state.value: count for state, count in stats.streams.items()},
        "closes": {reason.value: count for reason, count in stats.closes.items() if count},
        "rejections": stats.rejections,
        "events_sent": stats.events_sent,
        "pings_sent": stats.pings_sent,
        "bytes_sent": stats.bytes_sent,
    }


class Demo:
    """The demo's state: the hub and its ticker, the explorer, and the endpoints.

    One per app (see :func:`create_app`).  ``tick_interval`` is the pace of
    the ticker, in seconds.
    """

    def __init__(
        self,
        tick_interval: float = DEFAULT_INTERVAL,
        hub: Hub | None = None,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        self.tick_interval = tick_interval
        #: The coordinator's limit, restored after a "Full house".
        self.max_streams = max_streams
        self.full_house_seconds = FULL_HOUSE_SECONDS
        self.hub = Hub(MemoryBackend(max_events=STORE_EVENTS)) if hub is None else hub
        self.explorer = Explorer()
        self.ticks = 0
        self.app: Starlette | None = None

    # ------------------------------------------------------------ the ticker

    async def tick(self) -> str:
        """Publish the next tick; returns its id (the hub's ``<epoch>-<seq>``)."""
        self.ticks += 1
        now = datetime.now(timezone.utc)
        payload = {"n": self.ticks, "time": now.strftime("%H:%M:%S.%f")[:-3] + "Z"}
        data = json.dumps(payload, separators=(",", ":"))
        return await self.hub.publish(TOPIC, ServerSentEvent(data, event="tick"))

    async def tick_forever(self) -> None:
        while True:
            try:
                await self.tick()
            except ConnectionError as exc:  # the Redis backend's RedisUnavailableError
                log.warning("tick %d not published: %s", self.ticks, exc)
            await anyio.sleep(self.tick_interval)

    # ------------------------------------------------------------ tracking

    def _track(self, kind: str, request: Request, resumed_from: str | None = None) -> Tracked:
        client = client_id(request.query_params.get("client"))
        tracked = self.explorer.track(kind, client=client, resumed_from=resumed_from)
        return tracked

    def _on_transition(self, tracked: Tracked) -> Callable[[Transition], None]:
        record = self.explorer.hook(tracked)

        def on_transition(transition: Transition) -> None:
            record(transition)
            if tracked.kind != "explorer":
                log.info(
                    "#%d %s: %s --%s--> %s (%s)",
                    tracked.number,
                    tracked.kind,
                    transition.source.name,
                    transition.trigger.name,
                    transition.target.name,
                    transition.reason,
                )

        return on_transition

    def snapshot(self) -> dict[str, Any]:
        """What the explorer shows, plus the hub's and the coordinator's view."""
        snapshot = self.explorer.snapshot()
        hub = self.hub.statistics()
        snapshot["hub"] = {
            "published": hub.published,
            "subscribers": hub.subscribers,
            "replayed": hub.replayed,
            "gaps": hub.gaps,
        }
        snapshot["draining"] = False
        if self.app is not None:
            coordinator = drain_coordinator_for(self.app)
            snapshot["draining"] = coordinator.draining
            snapshot["admission"] = {
                "max_streams": coordinator.max_streams,
                "retry_after": list(coordinator.retry_after),
                "rejections": coordinator.statistics().rejections,
            }
            snapshot["coordinator"] = coordinator_stats(self.app)
        return snapshot

    # ------------------------------------------------------------ streams

    async def events(self, request: Request) -> EventSourceResponse:
        """The ticker: live ticks, after a replay of what the client missed."""
        subscription = self.hub.subscribe(TOPIC, request)
        tracked = self._track("ticker", request, resumed_from=subscription.last_event_id)
        end = _EndSwitch()
        tracked.end = end
        shutdown = anyio.Event()

        async def close_on_drain() -> None:
            # Runs beside the stream: a drain ends the subscription, so the
            # source returns by itself (DRAINING --SOURCE_EXHAUSTED--> drained).
            await shutdown.wait()
            await subscription.aclose()

        response = EventSourceResponse(
            ticker_source(subscription, end, shutdown),
            ping=PING_SECONDS,
            data_sender_callable=close_on_drain,
            shutdown_event=shutdown,
            shutdown_grace_period=TICKER_GRACE_SECONDS,
            on_transition=self._on_transition(tracked),
            farewell_factory=farewell,
            drain_retry=DRAIN_RETRY_MS,
            max_lifetime=TICKER_LIFETIME_SECONDS,
        )
        tracked.response = response
        return response

    async def explorer_stream(self, request: Request) -> EventSourceResponse:
        """Snapshots of the explorer: at each change, at most ten a second, and every second."""
        tracked = self._track("explorer", request)

        async def snapshots() -> AsyncIterator[ServerSentEvent]:
            while True:
                seen = self.explorer.version
                yield ServerSentEvent(json.dumps(self.snapshot()), event="snapshot")
                await anyio.sleep(0.1)
                with anyio.move_on_after(1.0):
                    await self.explorer.wait_for_change(seen)

        # No goodbye of its own and no grace: a drain cancels it at once
        # (DRAINING --GRACE_EXPIRED--> shutdown_forced); the farewell still goes out.
        response = EventSourceResponse(
            snapshots(),
            ping=PING_SECONDS,
            on_transition=self._on_transition(tracked),
            farewell_factory=farewell,
            drain_retry=DRAIN_RETRY_MS,
        )
        tracked.response = response
        return response

    def stall_response(self, request: Request) -> EventSourceResponse:
        """Megabytes of events for a client that reads none: ``SEND_TIMED_OUT``."""
        tracked = self._track("stall", request)
        response = EventSourceResponse(
            stall_source(),
            ping=0,
            send_timeout=STALL_SEND_TIMEOUT,
            on_transition=self._on_transition(tracked),
        )
        tracked.response = response
        return response

    def fail_response(self, request: Request) -> EventSourceResponse:
        """A stream whose source raises: ``FAILED``."""
        tracked = self._track("fail", request)
        response = EventSourceResponse(
            failing_source(), ping=0, on_transition=self._on_transition(tracked)
        )
        tracked.response = response
        return response

    # ------------------------------------------------------------ controls

    async def end_streams(self, request: Request) -> JSONResponse:
        """``POST /api/end?client=ID``: end that page's ticker streams (all, without ``client``)."""
        client = client_id(request.query_params.get("client"))
        ended = self._end_tickers(client)
        log.info("end requested for %s: connection(s) %s", client or "every client", ended)
        return JSONResponse({"ended": ended, "retry_ms": END_RETRY_MS})

    def _end_tickers(self, client: str | None) -> list[int]:
        ended = []
        for tracked in self.explorer.open_connections("ticker"):
            if tracked.end is not None and (client is None or tracked.client == client):
                tracked.end()
                ended.append(tracked.number)
        return ended

    async def full_house(self, request: Request) -> JSONResponse:
        """``POST /api/full?client=ID``: refuse every new stream for a few seconds.

        Lowers the coordinator's ``max_streams`` to 0 (the streams already
        admitted stream on) and ends that page's ticker, whose reconnect then
        meets a 503 with a ``Retry-After``; the limit comes back afterwards.
        """
        coordinator = drain_coordinator_for(request.app)
        coordinator.max_streams = 0
        ended = self._end_tickers(client_id(request.query_params.get("client")))
        seconds = self.full_house_seconds

        async def restore_later() -> None:
            await anyio.sleep(seconds)
            coordinator.max_streams = self.max_streams
            log.info("full house over: up to %s streams again", self.max_streams)

        log.info("full house: new streams refused for %s s", seconds)
        return JSONResponse(
            {"refusing_for": seconds, "ended": ended}, background=BackgroundTask(restore_later)
        )

    async def drain(self, request: Request) -> JSONResponse:
        """``POST /api/drain``: drain every stream, then accept new ones again."""
        coordinator = drain_coordinator_for(request.app)
        coordinator.request_drain("the 'Drain' button")

        async def reset_later() -> None:
            # request_drain() drains every later stream too, until reset().
            await anyio.sleep(DRAIN_RESET_SECONDS)
            coordinator.reset()
            log.info("drain over: new streams stream again")

        return JSONResponse(
            {"draining": True, "reset_in": DRAIN_RESET_SECONDS},
            background=BackgroundTask(reset_later),
        )

    async def state(self, request: Request) -> JSONResponse:
        """``GET /api/state``: the explorer's snapshot as JSON (for curl and tests)."""
        return JSONResponse(self.snapshot())

    async def stats(self, request: Request) -> JSONResponse:
        """``GET /stats``: the coordinator statistics as JSON (the page gets them streamed)."""
        return JSONResponse(coordinator_stats(request.app))

    async def health(self, request: Request) -> PlainTextResponse:
        """Answer as soon as the app is up; the end-to-end tests poll this before streaming."""
        return PlainTextResponse("ok")

    async def index(self, request: Request) -> HTMLResponse:
        """The page: one self-contained file, no build step, no CDN."""
        return HTMLResponse(render_page(self.tick_interval))


class _QuietStream:
    """An ASGI endpoint whose response is expected to end with an exception.

    ``EventSourceResponse`` raises ``SendTimeoutError`` after a send timeout
    and re-raises the source's exception after ``FAILED``; the server would
    log a traceback for either.  Here both are the point of the button, so
    they become one line in the log.
    """

    def __init__(self, make: Callable[[Request], EventSourceResponse]) -> None:
        self._make = make

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self._make(Request(scope, receive))
        try:
            await response(scope, receive, send)
        except (SendTimeoutError, DemoFailure) as exc:
            log.info("the stream ended with %s, as the button meant it to", type(exc).__name__)


def render_page(tick_interval: float) -> str:
    """The page, with the diagram and the settings the script needs filled in."""
    settings = {
        "tickSeconds": tick_interval,
        "storeEvents": STORE_EVENTS,
        "stallReleaseMs": STALL_RELEASE_MS,
    }
    # "</" would end the <script> element early; JSON allows "<\/".
    settings_json = json.dumps(settings).replace("</", "<\\/")
    page = PAGE_TEMPLATE.read_text(encoding="utf-8")
    return page.replace("{{ diagram }}", state_diagram_svg()).replace(
        "{{ settings }}", settings_json
    )


def _redis_backend(url: str) -> RedisBackend:
    """The backend of a demo worker that shares its ticker with others through Redis."""
    from sse_sm.redis import RedisBackend  # needs the optional coredis: imported on demand

    return RedisBackend(url, topics=[TOPIC], max_events=STORE_EVENTS, reconnect_delay=(0.05, 1.0))


def create_app(
    tick_interval: float = DEFAULT_INTERVAL,
    *,
    redis_url: str | None = None,
    ticker: bool = True,
    max_streams: int = DEFAULT_MAX_STREAMS,
) -> Starlette:
    """The demo app; its lifespan runs the ticker (unless ``ticker`` is false).

    With ``redis_url`` the hub's backend is a ``RedisBackend`` on it, which the
    lifespan enters (and leaves after the ticker has stopped).  At most
    ``max_streams`` streams are admitted at once.
    """
    backend = _redis_backend(redis_url) if redis_url else None
    demo = Demo(tick_interval, None if backend is None else Hub(backend), max_streams)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if backend is not None:
                await stack.enter_async_context(backend)
            tasks = await stack.enter_async_context(anyio.create_task_group())
            if ticker:
                tasks.start_soon(demo.tick_forever)
            yield
            tasks.cancel_scope.cancel()

    app = Starlette(
        routes=[
            Route("/", demo.index),
            Route("/events", demo.events),
            Route("/explorer", demo.explorer_stream),
            Route("/stall", _QuietStream(demo.stall_response)),
            Route("/fail", _QuietStream(demo.fail_response)),
            Route("/api/end", demo.end_streams, methods=["POST"]),
            Route("/api/drain", demo.drain, methods=["POST"]),
            Route("/api/full", demo.full_house, methods=["POST"]),
            Route("/api/state", demo.state),
            Route("/stats", demo.stats),
            Route("/health", demo.health),
        ],
        lifespan=lifespan,
    )
    app.state.demo = demo
    demo.app = app
    # Admission control: beyond the limit, a 503 with a jittered Retry-After.
    coordinator = drain_coordinator_for(app)
    coordinator.max_streams = max_streams
    coordinator.retry_after = RETRY_AFTER_SECONDS
    return app


app = create_app(
    parse_interval(os.environ.get("DEMO_TICK_SECONDS")),
    redis_url=os.environ.get("DEMO_REDIS_URL") or None,
    ticker=os.environ.get("DEMO_TICKER", "1") != "0",
    max_streams=parse_max_streams(os.environ.get("DEMO_MAX_STREAMS")),
)


def main() -> None:
    """Serve the demo with plain uvicorn; Ctrl-C or SIGTERM drains every stream.

    uvicorn waits for open connections before it exits, and an endless stream
    never ends by itself.  Nothing here handles that: sse_sm chains uvicorn's
    signal handler when the first stream starts, so each browser gets its
    farewell and a clean end of stream, then the server exits.
    """
    import uvicorn

    host, port = "127.0.0.1", int(os.environ.get("PORT", "8000"))
    print(f"sse_sm demo: open http://{host}:{port}/", flush=True)
    if os.environ.get("DEMO_REDIS_URL"):
        role = "runs the ticker" if os.environ.get("DEMO_TICKER", "1") != "0" else "no ticker"
        print(f"sse_sm demo: hub on Redis {os.environ['DEMO_REDIS_URL']} ({role})", flush=True)
    config = uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        # uvicorn re-raises the Ctrl-C it captured once it has shut down cleanly.
        pass


if __name__ == "__main__":
    main()
