"""Stream metrics of ``sse_sm.otel``, read through the SDK's in-memory reader.

Real responses (raw ASGI and a Starlette app through ``sse_sm.testing``) on
asyncio and trio; every figure is checked against the response's own
``statistics()`` and the bytes on the wire, as a difference between two
readings (the instruments sum every coordinator in the process).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Message

from sse_sm import (
    CloseReason,
    DrainCoordinator,
    EventSourceResponse,
    ServerSentEvent,
    State,
    drain_coordinator_for,
)
from sse_sm.testing import stream, wait_for_state
from tests._support import http_scope
from tests.otel._metrics import Metrics, delta

EVENTS = "sse_sm.stream.sent.events"
BYTES = "sse_sm.stream.sent.bytes"
PINGS = "sse_sm.stream.sent.pings"
COUNT = "sse_sm.stream.count"
CLOSED = "sse_sm.stream.closed"
DURATION = "sse_sm.stream.send.duration"

#: Every instrument, its unit, and the attribute keys its series may carry.
STREAM_INSTRUMENTS = {
    COUNT: ("{stream}", {"sse_sm.stream.state"}),
    CLOSED: ("{stream}", {"sse_sm.stream.close_reason"}),
    "sse_sm.stream.rejected": ("{request}", set()),
    EVENTS: ("{event}", set()),
    PINGS: ("{ping}", set()),
    BYTES: ("By", set()),
    DURATION: ("s", set()),
}


async def numbers(count: int) -> AsyncIterator[ServerSentEvent]:
    for n in range(count):
        yield ServerSentEvent(f"event {n}", id=str(n), event="tick")
        await anyio.lowlevel.checkpoint()


class Wire:
    """A server's side of one response: the request, then nothing; records the body."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.requested = False

    async def receive(self) -> Message:
        if not self.requested:
            self.requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            self.body += message["body"]


async def test_a_raw_asgi_stream_is_counted_as_its_statistics_and_the_wire_say(
    metrics: Metrics,
) -> None:
    before = metrics.read()
    response = EventSourceResponse(numbers(25), ping=0, drain_coordinator=DrainCoordinator())
    wire = Wire()
    with anyio.fail_after(10):
        await response(http_scope(), wire.receive, wire.send)
    after = metrics.read()
    stats = response.statistics()
    assert stats.events_sent == 25
    assert delta(after, before, EVENTS) == stats.events_sent
    assert delta(after, before, BYTES) == stats.bytes_sent == len(wire.body)
    assert delta(after, before, PINGS) == 0
    assert delta(after, before, CLOSED, sse_sm__stream__close_reason="completed") == 1
    # Every event's send was timed: the stream started after instrument().
    assert delta(after, before, DURATION) == 25
    assert after.sums[(DURATION, ())] > before.sums.get((DURATION, ()), 0)
    for state in ("open", "streaming", "draining"):
        assert delta(after, before, COUNT, sse_sm__stream__state=state) == 0


async def test_every_stream_instrument_has_its_unit_and_only_its_attributes(
    metrics: Metrics,
) -> None:
    response = EventSourceResponse(numbers(1), ping=0)
    wire = Wire()
    with anyio.fail_after(10):
        await response(http_scope(), wire.receive, wire.send)
    reading = metrics.read()
    for name, (unit, keys) in STREAM_INSTRUMENTS.items():
        assert reading.units[name] == unit, name
        for attributes in reading.series(name):
            assert {key for key, _ in attributes} == keys, (name, attributes)
    states = {dict(a)["sse_sm.stream.state"] for a in reading.series(COUNT)}
    assert states == {"open", "streaming", "draining"}
    reasons = {dict(a)["sse_sm.stream.close_reason"] for a in reading.series(CLOSED)}
    assert reasons == {reason.value for reason in CloseReason}


def app_with(responses: list[EventSourceResponse], **options: Any) -> Starlette:
    """A Starlette app whose ``/events`` ticks every 30 ms until the client leaves.

    Each response is kept for the test to read its statistics.
    """

    async def forever(request: Request) -> EventSourceResponse:
        async def ticks() -> AsyncIterator[str]:
            n = 0
            while True:
                yield f"tick {n}"
                n += 1
                await anyio.sleep(0.03)

        response = EventSourceResponse(ticks(), **options)
        responses.append(response)
        return response

    return Starlette(routes=[Route("/events", forever)])


async def test_a_starlette_stream_is_counted_while_it_streams_and_when_the_client_leaves(
    metrics: Metrics,
) -> None:
    responses: list[EventSourceResponse] = []
    app = app_with(responses, ping=0.01)
    before = metrics.read()
    with anyio.fail_after(10):
        async with stream(app, "/events") as sse:
            await sse.wait_started()
            for _ in range(3):
                await sse.next_event()
            during = metrics.read()
            assert delta(during, before, COUNT, sse_sm__stream__state="streaming") == 1
            # Every comment (ping) the client saw is counted by then.
            while responses[0].statistics().pings_sent < 1:  # noqa: ASYNC110 - the ping is sent by the stream's own task; bounded by fail_after
                await anyio.sleep(0.005)
    after = metrics.read()
    stats = responses[0].statistics()
    assert stats.close_reason is CloseReason.CLIENT_DISCONNECTED
    assert delta(after, before, COUNT, sse_sm__stream__state="streaming") == 0
    assert delta(after, before, CLOSED, sse_sm__stream__close_reason="client_disconnected") == 1
    assert delta(after, before, EVENTS) == stats.events_sent >= 3
    assert delta(after, before, PINGS) == stats.pings_sent >= 1
    assert delta(after, before, BYTES) == stats.bytes_sent == len(sse.body)
    assert delta(after, before, DURATION) == stats.events_sent  # pings are not timed


async def test_a_draining_stream_is_counted_as_draining(metrics: Metrics) -> None:
    finish = anyio.Event()
    draining: list[EventSourceResponse] = []

    async def endpoint(request: Request) -> EventSourceResponse:
        shutdown = anyio.Event()

        async def source() -> AsyncIterator[str]:
            yield "hello"
            await shutdown.wait()
            await finish.wait()  # goodbye only when the test says so
            yield "goodbye"

        response = EventSourceResponse(
            source(), ping=0, shutdown_event=shutdown, shutdown_grace_period=30
        )
        draining.append(response)
        return response

    app = Starlette(routes=[Route("/", endpoint)])
    before = metrics.read()
    with anyio.fail_after(10):
        async with stream(app, "/") as sse:
            await sse.next_event()
            drain_coordinator_for(app).request_drain("test")
            await wait_for_state(draining[0], State.DRAINING)
            during = metrics.read()
            assert delta(during, before, COUNT, sse_sm__stream__state="draining") == 1
            assert delta(during, before, COUNT, sse_sm__stream__state="streaming") == 0
            finish.set()
            assert (await sse.next_event()).data == "goodbye"
            await sse.wait_finished()
    after = metrics.read()
    assert delta(after, before, COUNT, sse_sm__stream__state="draining") == 0
    assert delta(after, before, CLOSED, sse_sm__stream__close_reason="drained") == 1


async def test_a_head_request_is_counted_as_a_head_close(metrics: Metrics) -> None:
    before = metrics.read()
    response = EventSourceResponse(numbers(3), ping=0)
    wire = Wire()
    with anyio.fail_after(10):
        await response(http_scope("HEAD"), wire.receive, wire.send)
    after = metrics.read()
    assert delta(after, before, CLOSED, sse_sm__stream__close_reason="head") == 1
    assert delta(after, before, EVENTS) == 0
    assert delta(after, before, DURATION) == 0


async def test_a_request_over_the_limit_is_counted_as_rejected(metrics: Metrics) -> None:
    coordinator = DrainCoordinator(max_streams=0)
    before = metrics.read()
    statuses = []
    for _ in range(2):
        response = EventSourceResponse(numbers(3), ping=0, drain_coordinator=coordinator)
        started: list[int] = []

        async def send(message: Message, started: list[int] = started) -> None:
            if message["type"] == "http.response.start":
                started.append(message["status"])

        with anyio.fail_after(10):
            await response(http_scope(), Wire().receive, send)
        statuses += started
    after = metrics.read()
    assert statuses == [503, 503]
    assert coordinator.statistics().rejections == 2
    assert delta(after, before, "sse_sm.stream.rejected") == 2
    assert delta(after, before, CLOSED, sse_sm__stream__close_reason="rejected") == 2
    assert delta(after, before, EVENTS) == 0


# ------------------------------------------------------------------ the hook


async def _caller_of_send(response: EventSourceResponse) -> set[str]:
    """The functions that called ``send`` with an event's body."""
    callers: set[str] = set()

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and message["body"]:
            frame = inspect.currentframe()
            caller = frame.f_back if frame is not None else None
            assert caller is not None
            callers.add(caller.f_code.co_name)

    with anyio.fail_after(10):
        await response(http_scope(), Wire().receive, send)
    return callers


async def test_with_metrics_off_the_pump_calls_the_servers_send_itself() -> None:
    """Zero cost when off: no wrapper between the pump and the server's send."""
    import sse_sm._hooks

    assert sse_sm._hooks.send_recorder is None
    assert await _caller_of_send(EventSourceResponse(numbers(3), ping=0)) == {"_stream"}


async def test_with_metrics_on_each_event_send_goes_through_the_timer(metrics: Metrics) -> None:
    assert await _caller_of_send(EventSourceResponse(numbers(3), ping=0)) == {"send_timed"}


@pytest.mark.parametrize("count", [0, 1])
async def test_a_stream_that_started_before_instrument_is_counted_but_not_timed(
    provider: Any, count: int
) -> None:
    import sse_sm.otel

    sdk, reader = provider
    started = anyio.Event()
    go = anyio.Event()

    async def source() -> AsyncIterator[str]:
        started.set()
        await go.wait()
        for n in range(count):
            yield str(n)

    response = EventSourceResponse(source(), ping=0)
    wire = Wire()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), wire.receive, wire.send)
            await started.wait()
            sse_sm.otel.instrument(sdk)
            metrics = Metrics(reader)
            before = metrics.read()
            go.set()
    after = metrics.read()
    assert delta(after, before, EVENTS) == count
    assert delta(after, before, DURATION) == 0
