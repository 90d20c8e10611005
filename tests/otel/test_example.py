"""``python -m examples.otel_run``: a real uvicorn run whose metrics docs/metrics.md quotes."""

from __future__ import annotations

import anyio
import pytest

import sse_sm.otel
from examples.otel_run import ADMITTED, render, run


@pytest.mark.real_server
def test_the_example_run_refuses_the_excess_and_exports_every_stream_metric() -> None:
    try:
        reader, statuses = anyio.run(run)
        text = render(reader)  # before uninstrument(), which stops the observable instruments
    finally:
        sse_sm.otel.uninstrument()
    # The admitted streams and the HEAD answer 200; the excess gets a 503.
    assert statuses == [200] * (ADMITTED + 1) + [503]
    for name in ("sse_sm.stream.count", "sse_sm.stream.closed", "sse_sm.stream.sent.events"):
        assert name in text
    assert "sse_sm.stream.closed{sse_sm.stream.close_reason=rejected} [{stream}] = 0" not in text
    assert "sse_sm.stream.send.duration [s] = count=" in text
    assert "sse_sm.hub.delivered [{event}]" in text
