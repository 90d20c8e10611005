"""What ``sse_sm.otel`` exports from a short real run: ``python -m examples.otel_run``.

Serves a hub-fed ticker under uvicorn on a loopback port, in this process,
with ``sse_sm.otel`` reporting to an SDK provider read by an in-memory
reader.  Over real sockets, four clients ask for the stream while the app
admits three (``max_streams=3``): one gets a 503.  The three read ten ticks
each and leave; one HEAD request; then one stream is drained.  Then every
data point the reader collected is printed, one line each.

Needs the ``test`` extra (uvicorn, httpx, opentelemetry-sdk).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

import anyio
import httpx
import uvicorn
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

import sse_sm.otel
from sse_sm import EventSourceResponse, Hub, ServerSentEvent, drain_coordinator_for

__all__ = ("main", "run")

TOPIC = "ticks"
ADMITTED = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _app(hub: Hub) -> Starlette:
    async def events(request: Request) -> EventSourceResponse:
        return EventSourceResponse(
            hub.subscribe(TOPIC, request),
            ping=0.2,
            farewell_factory=lambda: ServerSentEvent("bye", event="farewell"),
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def tick() -> None:
            n = 0
            while True:
                n += 1
                await hub.publish(TOPIC, f"tick {n}")
                await anyio.sleep(0.02)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(tick)
            yield
            tasks.cancel_scope.cancel()

    app = Starlette(routes=[Route("/events", events, methods=["GET", "HEAD"])], lifespan=lifespan)
    drain_coordinator_for(app).max_streams = ADMITTED
    return app


async def _read(client: httpx.AsyncClient, url: str, count: int, seen: list[int]) -> None:
    async with client.stream("GET", url) as response:
        seen.append(response.status_code)
        if response.status_code != 200:
            return
        got = 0
        async for line in response.aiter_lines():
            got += line.startswith("data: tick")
            if got >= count:
                return  # leaving mid-stream: the server sees a disconnect


async def run() -> tuple[InMemoryMetricReader, list[int]]:
    """The run described above; returns the reader to collect from, and the statuses seen."""
    reader = InMemoryMetricReader()
    sse_sm.otel.instrument(MeterProvider(metric_readers=[reader], shutdown_on_exit=False))
    hub = Hub()
    app = _app(hub)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/events"
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="on"))
    statuses: list[int] = []
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.serve)
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
                await anyio.sleep(0.01)
            async with httpx.AsyncClient(timeout=10) as client:
                async with anyio.create_task_group() as clients:
                    for _ in range(ADMITTED + 1):
                        clients.start_soon(_read, client, url, 10, statuses)
                statuses.append((await client.head(url)).status_code)
                async with client.stream("GET", url) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: tick"):
                            drain_coordinator_for(app).request_drain("the run is over")
                        if line == "event: farewell":
                            break
            server.should_exit = True
    return reader, sorted(statuses)


def render(reader: InMemoryMetricReader) -> str:
    """Every data point of the ``sse_sm`` meter, one line each."""
    lines = []
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = ", ".join(
                        f"{k}={v!s}" for k, v in (point.attributes or {}).items()
                    )
                    if isinstance(point, HistogramDataPoint):
                        value = f"count={point.count} sum={point.sum:.6f}s max={point.max:.6f}s"
                    elif isinstance(point, NumberDataPoint):
                        value = f"{point.value:g}"
                    else:
                        continue  # no exponential histogram here
                    label = f"{metric.name}{{{attributes}}}" if attributes else metric.name
                    lines.append(f"{label} [{metric.unit}] = {value}")
    return "\n".join(lines)


def main() -> None:
    reader, statuses = anyio.run(run)
    print(f"statuses seen by the clients: {statuses}")
    print(render(reader))


if __name__ == "__main__":
    main()
