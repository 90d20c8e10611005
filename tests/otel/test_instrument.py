"""``instrument()`` and ``uninstrument()``: idempotence, moving providers, and attacks.

A meter provider whose instruments raise, or a reading that fails, must
never break a stream: metrics are advisory.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import opentelemetry.metrics
import pytest
from opentelemetry.context import Context
from opentelemetry.metrics import NoOpHistogram, NoOpMeter, NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.util.types import Attributes

import sse_sm._hooks
import sse_sm.otel
from sse_sm import CloseReason, DrainCoordinator, EventSourceResponse
from tests._support import http_scope
from tests.otel._metrics import Metrics
from tests.otel.test_streams import Wire, numbers

Provider = tuple[MeterProvider, InMemoryMetricReader]


async def run_stream(count: int = 5) -> tuple[EventSourceResponse, Wire]:
    response = EventSourceResponse(numbers(count), ping=0)
    wire = Wire()
    with anyio.fail_after(10):
        await response(http_scope(), wire.receive, wire.send)
    return response, wire


def test_instrument_twice_makes_the_instruments_once(provider: Provider) -> None:
    """An SDK keeps the first instrument of a name and drops the callbacks of a
    second: instruments made anew after an uninstrument would observe nothing."""
    sdk, reader = provider
    sse_sm.otel.instrument(sdk)
    sse_sm.otel.instrument(sdk)
    assert "sse_sm.stream.count" in Metrics(reader).read().names()
    sse_sm.otel.uninstrument()
    sse_sm.otel.instrument(sdk)  # again after uninstrument: the same instruments, active again
    assert sse_sm.otel.is_instrumented()
    reading = Metrics(reader).read()
    assert len(reading.series("sse_sm.stream.count")) == 3
    assert "sse_sm.stream.sent.events" in reading.names()


def test_uninstrument_is_idempotent_and_stops_observing(provider: Provider) -> None:
    sdk, reader = provider
    sse_sm.otel.uninstrument()  # before any instrument: nothing to do
    sse_sm.otel.instrument(sdk)
    assert sse_sm._hooks.send_recorder is not None
    sse_sm.otel.uninstrument()
    sse_sm.otel.uninstrument()
    assert not sse_sm.otel.is_instrumented()
    assert sse_sm._hooks.send_recorder is None
    assert not {n for n in Metrics(reader).read().names() if not n.endswith(".duration")}


async def test_uninstrument_stops_timing_streams_already_running(provider: Provider) -> None:
    sdk, reader = provider
    sse_sm.otel.instrument(sdk)
    metrics = Metrics(reader)
    go = anyio.Event()
    halfway = anyio.Event()

    async def source() -> AsyncIterator[str]:
        for n in range(6):
            if n == 3:
                halfway.set()
                await go.wait()
            yield str(n)

    response = EventSourceResponse(source(), ping=0)
    wire = Wire()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), wire.receive, wire.send)
            await halfway.wait()
            timed = metrics.read().value("sse_sm.stream.send.duration")
            sse_sm.otel.uninstrument()
            go.set()
    assert response.statistics().events_sent == 6
    assert metrics.read().value("sse_sm.stream.send.duration") == timed == 3


def test_instrument_on_another_provider_moves_the_metrics(provider: Provider) -> None:
    sdk, reader = provider
    other_reader = InMemoryMetricReader()
    other = MeterProvider(metric_readers=[other_reader], shutdown_on_exit=False)
    try:
        sse_sm.otel.instrument(sdk)
        assert "sse_sm.stream.count" in Metrics(reader).read().names()
        sse_sm.otel.instrument(other)
        assert "sse_sm.stream.count" in Metrics(other_reader).read().names()
        assert "sse_sm.stream.count" not in Metrics(reader).read().names()
    finally:
        sse_sm.otel.uninstrument()
        other.shutdown()


def test_the_global_provider_is_the_default(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdk, reader = provider
    monkeypatch.setattr(opentelemetry.metrics, "get_meter_provider", lambda: sdk)
    sse_sm.otel.instrument()
    assert "sse_sm.stream.count" in Metrics(reader).read().names()


def test_options_must_be_bools(provider: Provider) -> None:
    with pytest.raises(TypeError, match="per_topic must be a bool, got str"):
        sse_sm.otel.instrument(provider[0], per_topic="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="send_duration must be a bool, got int"):
        sse_sm.otel.instrument(provider[0], send_duration=1)  # type: ignore[arg-type]
    assert not sse_sm.otel.is_instrumented()


async def test_without_send_duration_the_streams_path_is_the_one_with_metrics_off(
    provider: Provider,
) -> None:
    sdk, reader = provider
    sse_sm.otel.instrument(sdk, send_duration=False)
    assert sse_sm._hooks.send_recorder is None
    metrics = Metrics(reader)
    before = metrics.read()
    await run_stream(7)
    after = metrics.read()
    assert after.value("sse_sm.stream.sent.events") - before.value("sse_sm.stream.sent.events") == 7
    assert after.value("sse_sm.stream.send.duration") == 0
    # Asked again with the histogram: timing resumes for new streams.
    sse_sm.otel.instrument(sdk)
    await run_stream(2)
    assert metrics.read().value("sse_sm.stream.send.duration") == 2


# ------------------------------------------------------------------ attacks


class RaisingHistogram(NoOpHistogram):
    def record(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        raise RuntimeError("the exporter is broken")


class RaisingMeter(NoOpMeter):
    def create_histogram(self, *args: Any, **kwargs: Any) -> RaisingHistogram:
        return RaisingHistogram(args[0] if args else kwargs["name"])


class RaisingProvider(NoOpMeterProvider):
    """A provider whose histogram raises on every record."""

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> NoOpMeter:
        return RaisingMeter(name, version=version, schema_url=schema_url)


class BrokenProvider(NoOpMeterProvider):
    """A provider that cannot make a meter at all."""

    def get_meter(self, *args: Any, **kwargs: Any) -> NoOpMeter:
        raise RuntimeError("no meter for you")


async def test_an_instrument_that_raises_does_not_break_a_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sse_sm.otel.instrument(RaisingProvider())
    try:
        with caplog.at_level(logging.DEBUG, logger="sse_sm.metrics"):
            first, wire = await run_stream(20)
            second, _ = await run_stream(5)
    finally:
        sse_sm.otel.uninstrument()
    for response, count in ((first, 20), (second, 5)):
        stats = response.statistics()
        assert stats.close_reason is CloseReason.COMPLETED
        assert stats.events_sent == count
    assert wire.body.count(b"event: tick") == 20
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "logged once with its traceback, then at DEBUG"
    assert warnings[0].exc_info is not None


async def test_a_provider_that_cannot_make_a_meter_changes_nothing(provider: Provider) -> None:
    with pytest.raises(RuntimeError, match="no meter for you"):
        sse_sm.otel.instrument(BrokenProvider())
    assert not sse_sm.otel.is_instrumented()
    assert sse_sm._hooks.send_recorder is None
    response, _ = await run_stream(3)
    assert response.statistics().events_sent == 3
    # A provider already in effect stays in effect.
    sse_sm.otel.instrument(provider[0])
    with pytest.raises(RuntimeError):
        sse_sm.otel.instrument(BrokenProvider())
    assert sse_sm.otel.is_instrumented()
    assert "sse_sm.stream.count" in Metrics(provider[1]).read().names()


async def test_a_reading_that_raises_is_skipped_and_logged_once(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: DrainCoordinator) -> Any:
        raise RuntimeError("statistics broke")

    monkeypatch.setattr(DrainCoordinator, "statistics", broken)
    with caplog.at_level(logging.WARNING, logger="sse_sm.metrics"):
        response, _ = await run_stream(4)
        first = metrics.read()
        second = metrics.read()
    assert response.statistics().events_sent == 4
    for reading in (first, second):
        assert reading.get("sse_sm.stream.sent.events") is None
        assert reading.value("sse_sm.stream.send.duration") >= 4  # the hook still works
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reading metric")]
    # One warning per instrument whose reading failed (the six stream instruments
    # read from the coordinators), not one per collection.
    assert len(failed) == len(set(failed)) == 6


def test_instrument_before_the_application_sets_its_global_provider() -> None:
    """The API's proxy provider forwards to the one set later (in a fresh process:
    a global provider can be set only once)."""
    code = textwrap.dedent(
        """
        import anyio
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        import sse_sm.otel
        from sse_sm import EventSourceResponse
        from tests._support import http_scope
        from tests.otel.test_streams import Wire, numbers

        sse_sm.otel.instrument()
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        wire = Wire()
        anyio.run(EventSourceResponse(numbers(4), ping=0), http_scope(), wire.receive, wire.send)
        found = {}
        for resource in reader.get_metrics_data().resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    point = metric.data.data_points[0]
                    found[metric.name] = getattr(point, "count", None) or point.value
        print(found["sse_sm.stream.sent.events"], found["sse_sm.stream.send.duration"])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["4", "4"]
