"""Hub metrics of ``sse_sm.otel``: every counter against ``Hub.statistics()``.

Read on the hub's loop, from another thread (handed to the loop), from a
thread while the loop is blocked (left out after the timeout, never waited
on forever), and after the loop has ended (read directly).
"""

from __future__ import annotations

import gc
import threading
import time

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

import sse_sm.otel
from sse_sm import EventSourceResponse, Hub, HubStatistics, SlowConsumerPolicy, Subscription
from sse_sm.testing import stream
from tests.hub.test_hub import join, publish_all, read_available
from tests.otel._metrics import Metrics, Reading, delta

COUNTERS = ("published", "delivered", "replayed", "dropped", "gaps", "slow_disconnects")
UNITS = {
    "published": "{event}",
    "delivered": "{event}",
    "replayed": "{event}",
    "dropped": "{event}",
    "gaps": "{gap}",
    "slow_disconnects": "{subscriber}",
    "subscribers": "{subscriber}",
    "buffered": "{event}",
}


async def busy_hub() -> tuple[Hub, list[Subscription]]:
    """A hub with deliveries, replays, drops, a gap and a slow disconnect; subscribers left open."""
    hub = Hub(buffer_size=2, policy=SlowConsumerPolicy.DROP_OLDEST)
    quick, slow = hub.subscribe("t"), hub.subscribe("t")
    other = hub.subscribe("u", policy=SlowConsumerPolicy.DISCONNECT, buffer_size=1)
    hello = await join(hub, quick, slow, other)
    await publish_all(hub, "t", 4)
    await publish_all(hub, "u", 2)
    await read_available(quick)
    resuming = hub.subscribe("t", last_event_id=hello.id, buffer_size=16)
    await read_available(resuming)  # the events after hello, replayed
    return hub, [quick, slow, resuming]


def assert_matches(after: Reading, before: Reading, stats: HubStatistics) -> None:
    for name in COUNTERS:
        assert delta(after, before, f"sse_sm.hub.{name}") == getattr(stats, name), name
    assert delta(after, before, "sse_sm.hub.subscribers") == stats.subscribers
    assert delta(after, before, "sse_sm.hub.buffered") == stats.buffered


async def test_hub_counters_match_its_statistics(metrics: Metrics) -> None:
    before = metrics.read()
    with anyio.fail_after(10):
        hub, subs = await busy_hub()
        stats = hub.statistics()
        after = metrics.read()
        for sub in subs:
            await sub.aclose()
    assert (stats.slow_disconnects, stats.subscribers) == (1, 3)
    assert min(stats.replayed, stats.gaps, stats.dropped) > 0
    assert_matches(after, before, stats)
    for name, unit in UNITS.items():
        assert after.units[f"sse_sm.hub.{name}"] == unit


async def test_a_hub_read_from_another_thread_is_read_on_its_loop(metrics: Metrics) -> None:
    before = await anyio.to_thread.run_sync(metrics.read)
    with anyio.fail_after(10):
        hub, subs = await busy_hub()
        after = await anyio.to_thread.run_sync(metrics.read)
        stats = hub.statistics()
        for sub in subs:
            await sub.aclose()
    assert_matches(after, before, stats)


async def test_per_topic_series_add_up_to_the_hubs_totals(
    provider: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    gc.collect()
    sse_sm.otel.instrument(provider[0], per_topic=True)
    metrics = Metrics(provider[1])
    before = metrics.read()
    with anyio.fail_after(10):
        hub, subs = await busy_hub()
        stats = hub.statistics()
        after = metrics.read()
        for sub in subs:
            await sub.aclose()
    topic = stats.topics["t"]
    for name in COUNTERS:
        series = after.series(f"sse_sm.hub.{name}")
        assert {dict(a)["sse_sm.hub.topic"] for a in series} >= {"t", "_OTHER"}
        assert after.value(f"sse_sm.hub.{name}", {"sse_sm.hub.topic": "t"}) == getattr(topic, name)
        earlier = sum(before.series(f"sse_sm.hub.{name}").values())
        assert sum(series.values()) - earlier == getattr(stats, name), name
    # "u" lost its only subscriber: its counts went to the other topics' series.
    assert after.value("sse_sm.hub.subscribers", {"sse_sm.hub.topic": "t"}) == 3
    assert after.get("sse_sm.hub.subscribers", sse_sm__hub__topic="u") is None


async def test_a_hub_whose_loop_is_blocked_is_left_out_not_waited_on(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse_sm.otel, "HUB_READ_TIMEOUT", 0.05)
    readings: list[Reading] = []
    with anyio.fail_after(10):
        hub = Hub()
        await hub.publish("t", "bound to this loop")
        thread = threading.Thread(target=lambda: readings.append(metrics.read()))
        started = time.monotonic()
        thread.start()
        time.sleep(0.5)  # noqa: ASYNC251 - blocking the loop on purpose: its hub cannot be read
        thread.join(timeout=5)
        assert not thread.is_alive()
    assert time.monotonic() - started < 5
    [reading] = readings
    assert reading.get("sse_sm.stream.sent.events") is not None, "streams still read"
    after = metrics.read()  # on the loop: this hub is read again
    # Any other live hub (on an ended loop) is in both readings; this one only in the second.
    assert after.value("sse_sm.hub.published") - reading.value("sse_sm.hub.published") == 1
    hub.close()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_hub_whose_loop_has_ended_is_read_directly(metrics: Metrics, backend: str) -> None:
    async def use() -> Hub:
        hub = Hub()
        sub = hub.subscribe("t")
        await join(hub, sub)
        await publish_all(hub, "t", 3)
        await read_available(sub)
        await sub.aclose()
        return hub

    before = metrics.read()
    hub = anyio.run(use, backend=backend)
    after = metrics.read()
    assert delta(after, before, "sse_sm.hub.published") == hub.statistics().published == 4
    assert delta(after, before, "sse_sm.hub.delivered") == 4


async def test_a_hub_stream_through_starlette_is_counted_on_both_sides(metrics: Metrics) -> None:
    hub = Hub()
    responses: list[EventSourceResponse] = []

    async def events(request: Request) -> EventSourceResponse:
        response = EventSourceResponse(hub.subscribe("news", request), ping=0)
        responses.append(response)
        return response

    async def subscribed() -> None:
        while hub.statistics().subscribers < 1:  # noqa: ASYNC110 - joined by the app's task; bounded by fail_after
            await anyio.sleep(0.001)

    app = Starlette(routes=[Route("/news", events)])
    before = metrics.read()
    with anyio.fail_after(10):
        async with stream(app, "/news") as sse:
            await sse.wait_started()
            await subscribed()
            for n in range(5):
                await hub.publish("news", f"item {n}")
            received = [(await sse.next_event()).data for _ in range(5)]
            during = metrics.read()
    after = metrics.read()
    assert received == [f"item {n}" for n in range(5)]
    assert delta(during, before, "sse_sm.hub.subscribers") == 1
    assert delta(after, before, "sse_sm.hub.subscribers") == 0
    assert delta(after, before, "sse_sm.hub.published") == 5
    assert delta(after, before, "sse_sm.hub.delivered") == 5
    assert (
        delta(after, before, "sse_sm.stream.sent.events") == responses[0].statistics().events_sent
    )
    assert delta(after, before, "sse_sm.stream.sent.bytes") == len(sse.body)
    hub.close()
