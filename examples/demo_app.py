"""A small Starlette app that uses sse_sm exactly the way an sse-starlette user would.

Run it with ``bash scripts/demo.sh`` and open the URL it prints.  The page at
``/`` subscribes to ``/events`` with the browser's own ``EventSource`` and shows
every event and the connection status, so you can watch reconnection happen by
stopping and restarting the server.

The only sse_sm-specific line is the import: swap it for
``from sse_starlette import EventSourceResponse, ServerSentEvent`` and the app
behaves the same.  ``tests/test_demo.py`` runs this module under uvicorn and
under hypercorn's trio worker, so it doubles as an end-to-end check.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

from sse_sm import EventSourceResponse, ServerSentEvent

__all__ = ("app",)

#: Seconds between ticks when the client does not ask for anything else.
DEFAULT_INTERVAL = 1.0
#: Bounds for ``?interval=``: fast enough for tests, never a busy loop, never
#: so slow that the page looks dead.
MIN_INTERVAL = 0.05
MAX_INTERVAL = 10.0
#: Seconds between keep-alive comments, so proxies do not cut an idle stream.
PING_SECONDS = 5


def _demo_logger() -> logging.Logger:
    """Return a logger that prints even though the server only configures its own.

    uvicorn and hypercorn set up their loggers, not the root logger, so INFO
    records from an application logger would be dropped.  A handler on this
    one logger (and nowhere else) makes the "client left" lines visible without
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
    """Turn the ``interval`` query parameter into a safe sleep time in seconds.

    Anything unparsable (including ``nan`` and infinities) falls back to the
    default rather than failing the request: a demo should stream, not argue.
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


def parse_last_event_id(raw: str | None) -> int:
    """Return the tick number a reconnecting browser last saw, or 0.

    ``EventSource`` resends the last ``id`` it received in the ``Last-Event-ID``
    header when it reconnects; continuing from there shows in the page that
    event ids are what make a reconnect resumable.
    """
    if raw is None:
        return 0
    try:
        return max(int(raw), 0)
    except ValueError:
        return 0


#: How long a draining stream may take to say goodbye before it is cut.
SHUTDOWN_GRACE_SECONDS = 2.0
#: The reconnection delay sent with the farewell, in milliseconds.
FAREWELL_RETRY_MS = 2000


async def ticks(
    interval: float, start_after: int, client: str, shutdown: anyio.Event
) -> AsyncIterator[ServerSentEvent]:
    """Yield one ``tick`` event per ``interval`` seconds until a drain.

    The stream ends when the client goes away (the response cancels this
    generator) or when the server drains: ``shutdown`` is set, and the
    generator says goodbye with a ``retry`` so the browser reconnects to the
    next server, then returns.  ``finally`` runs on every path, which is
    where per-connection cleanup belongs.
    """
    n = start_after
    log.info("client %s connected (interval %gs, resuming after id %d)", client, interval, n)
    try:
        while True:
            n += 1
            payload = {
                "n": n,
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            }
            yield ServerSentEvent(data=json.dumps(payload), id=str(n), event="tick")
            with anyio.move_on_after(interval):
                await shutdown.wait()
            if shutdown.is_set():
                yield ServerSentEvent(
                    data="the server is shutting down", event="farewell", retry=FAREWELL_RETRY_MS
                )
                return
    finally:
        log.info("client %s left after id %d", client, n)


async def events(request: Request) -> EventSourceResponse:
    """Stream ticks to one client; ``?interval=SECONDS`` sets the pace."""
    interval = parse_interval(request.query_params.get("interval"))
    start_after = parse_last_event_id(request.headers.get("last-event-id"))
    client = f"{request.client.host}:{request.client.port}" if request.client else "unknown"
    shutdown = anyio.Event()
    return EventSourceResponse(
        ticks(interval, start_after, client, shutdown),
        ping=PING_SECONDS,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
    )


async def health(request: Request) -> PlainTextResponse:
    """Answer as soon as the app is up; the end-to-end test polls this before streaming."""
    return PlainTextResponse("ok")


async def index(request: Request) -> HTMLResponse:
    """Serve the viewer page: one self-contained file, no build step, no CDN."""
    return HTMLResponse(INDEX_HTML)


INDEX_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sse_sm demo</title>
<style>
  :root { color-scheme: light dark; font-family: system-ui, sans-serif; }
  body { margin: 2rem auto; max-width: 60rem; padding: 0 1rem; }
  h1 { font-size: 1.4rem; margin-bottom: 0.25rem; }
  #status { display: inline-block; padding: 0.2rem 0.6rem; border-radius: 1rem;
            font-weight: 600; background: #888; color: #fff; }
  #status.open { background: #2a7d3a; }
  #status.connecting { background: #b07b00; }
  #status.error { background: #b3261e; }
  table { border-collapse: collapse; width: 100%; margin-top: 1rem; font-size: 0.9rem; }
  th, td { text-align: left; padding: 0.25rem 0.5rem; border-bottom: 1px solid #8884; }
  td.data { font-family: ui-monospace, monospace; word-break: break-all; }
  .muted { opacity: 0.7; }
</style>
</head>
<body>
<h1>sse_sm demo</h1>
<p class="muted">Live events from <code id="url"></code>.
Add <code>?interval=0.2</code> to this page's URL to change the pace.
Stop the server to watch the browser reconnect.</p>
<p>Connection: <span id="status" class="connecting">connecting</span>
<span id="count" class="muted"></span></p>
<table>
  <thead><tr><th>received</th><th>id</th><th>type</th><th>data</th></tr></thead>
  <tbody id="rows"></tbody>
</table>
<script>
"use strict";
const MAX_ROWS = 200;
const interval = new URLSearchParams(location.search).get("interval");
const url = interval ? "/events?interval=" + encodeURIComponent(interval) : "/events";
const statusEl = document.getElementById("status");
const countEl = document.getElementById("count");
const rows = document.getElementById("rows");
let received = 0;
document.getElementById("url").textContent = url;

function setStatus(name, text) {
  statusEl.className = name;
  statusEl.textContent = text;
}

function show(ev) {
  received += 1;
  countEl.textContent = received + " events received";
  const tr = document.createElement("tr");
  const cells = [new Date().toLocaleTimeString(), ev.lastEventId, ev.type, ev.data];
  cells.forEach((value, i) => {
    const td = document.createElement("td");
    td.textContent = value;  // textContent, never innerHTML: data is untrusted
    if (i === 3) td.className = "data";
    tr.appendChild(td);
  });
  rows.prepend(tr);
  while (rows.children.length > MAX_ROWS) rows.lastChild.remove();
}

const source = new EventSource(url);
source.addEventListener("open", () => setStatus("open", "open"));
source.addEventListener("error", () => {
  if (source.readyState === EventSource.CLOSED) {
    setStatus("error", "closed");
  } else {
    setStatus("error", "error, reconnecting");
  }
});
source.addEventListener("tick", show);     // named events
source.addEventListener("message", show);  // events without an event: field
</script>
</body>
</html>
"""

app = Starlette(
    routes=[
        Route("/", index),
        Route("/events", events),
        Route("/health", health),
    ],
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
    config = uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        # uvicorn re-raises the Ctrl-C it captured once it has shut down cleanly.
        pass


if __name__ == "__main__":
    main()
