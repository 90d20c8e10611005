"""Fixtures for ``sse_sm.otel``: an SDK meter provider read by an in-memory reader."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

pytest.importorskip("opentelemetry.sdk", reason="pip install 'sse_sm[test]' (opentelemetry-sdk)")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import sse_sm.otel
from tests.otel._metrics import Metrics


@pytest.fixture
def provider() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    """A fresh SDK provider and its reader; sse_sm.otel is uninstrumented afterwards."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    try:
        yield provider, reader
    finally:
        sse_sm.otel.uninstrument()
        provider.shutdown()


@pytest.fixture
def metrics(provider: tuple[MeterProvider, InMemoryMetricReader]) -> Metrics:
    """sse_sm.otel instrumented on a fresh provider; earlier tests' garbage collected first.

    Every figure is a sum over the live coordinators, hubs and backends of the
    process, so the tests compare differences between two readings, taken
    after a collection so that no earlier test's object dies in between.
    """
    gc.collect()
    sdk, reader = provider
    sse_sm.otel.instrument(sdk)
    return Metrics(reader)
