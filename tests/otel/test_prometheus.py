"""The Prometheus route docs/metrics.md shows: the exporter's reader and
prometheus_client's ASGI app mounted on the Starlette app that streams."""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount, Route

pytest.importorskip("opentelemetry.exporter.prometheus")

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, make_asgi_app

import sse_sm.otel
from sse_sm import EventSourceResponse
from sse_sm.testing import stream


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    if "registry" not in inspect.signature(PrometheusMetricReader).parameters:
        pytest.skip("this opentelemetry-exporter-prometheus has no registry= argument")
    registry = CollectorRegistry()
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader(registry=registry)], shutdown_on_exit=False
    )
    sse_sm.otel.instrument(provider)
    try:
        yield registry
    finally:
        sse_sm.otel.uninstrument()
        provider.shutdown()


async def scrape(app: Starlette) -> str:
    """GET /metrics/ in process (the test kit's client plays the server for any ASGI app)."""
    async with stream(app, "/metrics/") as response:
        await response.wait_finished()
    assert response.status == 200
    return response.body.decode()


def sample(text: str, name: str, labels: str = "") -> float:
    """One sample's value from the exposition text (labels: a substring of the label set)."""
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if match and labels in (match.group(1) or ""):
            return float(match.group(2))
    raise AssertionError(f"{name} {{{labels}}} not exposed:\n{text}")


async def test_metrics_are_exposed_to_prometheus_on_the_app(registry: CollectorRegistry) -> None:
    async def events(request: Request) -> EventSourceResponse:
        async def three() -> AsyncIterator[str]:
            for n in range(3):
                yield f"event {n}"

        return EventSourceResponse(three(), ping=0)

    app = Starlette(
        routes=[Route("/events", events), Mount("/metrics", make_asgi_app(registry=registry))]
    )
    with anyio.fail_after(10):
        before = await scrape(app)
        async with stream(app, "/events") as sse:
            await sse.wait_finished()
        after = await scrape(app)
    assert sse.body.count(b"data: event") == 3
    events_sent = "sse_sm_stream_sent_events_total"
    assert sample(after, events_sent) - sample(before, events_sent) == 3
    completed = 'sse_sm_stream_close_reason="completed"'
    closed = "sse_sm_stream_closed_total"
    assert sample(after, closed, completed) - sample(before, closed, completed) == 1
    assert sample(after, "sse_sm_stream_count", 'sse_sm_stream_state="streaming"') == 0
    assert "sse_sm_stream_send_duration_seconds_bucket" in after
    assert "sse_sm_stream_sent_bytes_total" in after
