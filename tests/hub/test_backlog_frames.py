"""A subscriber's backlog reaches the client in one ASGI send, counted event by event.

Each test drives an ``EventSourceResponse`` over a hub subscription by hand
(raw ASGI, no test client), with a ``send`` that can be held: the pump takes
one event and blocks in its send, the test publishes while it is blocked,
then lets it go.  What was published meanwhile is the backlog; the test
counts the ASGI messages it arrived in and checks every counter against the
bytes on the wire.  Nothing depends on scheduling: the pump is known to be
inside its send while the test publishes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.types import Message

from sse_sm import (
    GAP_EVENT,
    CloseReason,
    EventSourceResponse,
    Gap,
    GapReason,
    Hub,
    ServerSentEvent,
    SlowConsumerPolicy,
    Subscription,
)
from sse_sm.testing import Event, parse_event_stream
from tests._support import http_scope, never_receive
from tests.hub.test_hub import publish_all, wait_until


class Wire:
    """A server's ``send``: keeps every message; can hold the next body send."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._holding: anyio.Event | None = None
        self._release: anyio.Event | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and message["body"]:
            release = self._release
            if release is not None and self._holding is not None:
                self._holding.set()
                await release.wait()
                self._release = self._holding = None
        self.messages.append(dict(message))

    def hold(self) -> tuple[anyio.Event, anyio.Event]:
        """Hold the next body send: returns (it is being held, let it go)."""
        self._holding, self._release = anyio.Event(), anyio.Event()
        return self._holding, self._release

    @property
    def bodies(self) -> list[bytes]:
        """The non-empty body messages, in order."""
        return [m["body"] for m in self.messages if m["type"] == "http.response.body" and m["body"]]

    @property
    def events(self) -> list[Event]:
        return parse_event_stream(b"".join(self.bodies))


@asynccontextmanager
async def streaming(
    sub: Subscription, wire: Wire, **kwargs: Any
) -> AsyncIterator[EventSourceResponse]:
    """Run the response over ``sub`` in a task; the block's end waits for it (bounded)."""
    response = EventSourceResponse(sub, ping=0, **kwargs)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(response, http_scope(), never_receive, wire.send)
        yield response


async def first_event_held(hub: Hub, wire: Wire, topic: str = "t") -> anyio.Event:
    """Publish ``"0"`` once the stream has joined; return once its send is held.

    Returns the event that lets the held send go.
    """
    await wait_until(lambda: hub.statistics().subscribers == 1)
    holding, release = wire.hold()
    await hub.publish(topic, "0")
    await holding.wait()
    return release


def assert_counts_match_the_wire(response: EventSourceResponse, wire: Wire) -> None:
    """events_sent is the events on the wire; bytes_sent is the body bytes."""
    stats = response.statistics()
    assert stats.events_sent == len(wire.events)
    assert stats.bytes_sent == sum(len(body) for body in wire.bodies)


async def sent(response: EventSourceResponse, count: int) -> None:
    """Wait until the response has sent ``count`` events (the caller bounds the wait)."""
    await wait_until(lambda: response.statistics().events_sent == count)


def data_of(events: list[Event]) -> list[str]:
    return [event.data for event in events if event.event != GAP_EVENT]


def gaps_of(events: list[Event]) -> list[dict[str, Any]]:
    return [json.loads(event.data) for event in events if event.event == GAP_EVENT]


# ------------------------------------------------------------------ one send


async def test_a_backlog_arrives_in_one_send_and_every_event_is_counted() -> None:
    hub = Hub()
    wire = Wire()
    with anyio.fail_after(10):
        async with streaming(hub.subscribe("t"), wire) as response:
            release = await first_event_held(hub, wire)
            ids = await publish_all(hub, "t", 9, start=1)
            release.set()
            await wait_until(lambda: response.statistics().events_sent == 10)
            hub.close()
    assert [len(parse_event_stream(body)) for body in wire.bodies] == [1, 9]
    assert data_of(wire.events) == [str(n) for n in range(10)]
    assert wire.events[-1].id == ids[-1]  # the client's Last-Event-ID is the last one sent
    assert_counts_match_the_wire(response, wire)
    assert [m["type"] for m in wire.messages] == ["http.response.start"] + [
        "http.response.body"
    ] * 3  # headers, "0", the backlog, the final empty body
    assert hub.statistics().delivered == 10


async def test_a_subscriber_that_keeps_up_sends_one_message_per_event() -> None:
    hub = Hub()
    wire = Wire()
    with anyio.fail_after(10):
        async with streaming(hub.subscribe("t"), wire) as response:
            await wait_until(lambda: hub.statistics().subscribers == 1)
            for n in range(5):
                await hub.publish("t", str(n))
                await sent(response, n + 1)
            hub.close()
    assert wire.bodies == [
        f"id: {event.id}\r\ndata: {event.data}\r\n\r\n".encode() for event in wire.events
    ]
    assert len(wire.bodies) == 5
    assert_counts_match_the_wire(response, wire)


async def test_a_large_backlog_is_cut_into_sends_of_at_most_the_cap() -> None:
    from sse_sm._events import FRAMES_MAX_BYTES

    hub = Hub()
    wire = Wire()
    payload = "x" * 10_000
    with anyio.fail_after(10):
        async with streaming(hub.subscribe("t"), wire) as response:
            release = await first_event_held(hub, wire)
            for n in range(1, 31):
                await hub.publish("t", f"{n} {payload}")
            release.set()
            await wait_until(lambda: response.statistics().events_sent == 31)
            hub.close()
    bodies = wire.bodies
    assert all(len(body) <= FRAMES_MAX_BYTES for body in bodies)
    per_send = [len(parse_event_stream(body)) for body in bodies]
    assert per_send == [1, 6, 6, 6, 6, 6]  # each body holds whole events only
    assert [event.data.split()[0] for event in wire.events] == [str(n) for n in range(31)]
    assert_counts_match_the_wire(response, wire)


async def test_an_event_larger_than_the_cap_goes_alone() -> None:
    from sse_sm._events import FRAMES_MAX_BYTES

    hub = Hub()
    wire = Wire()
    with anyio.fail_after(10):
        async with streaming(hub.subscribe("t"), wire) as response:
            release = await first_event_held(hub, wire)
            await hub.publish("t", "small")
            await hub.publish("t", "y" * FRAMES_MAX_BYTES)
            await hub.publish("t", "after")
            release.set()
            await wait_until(lambda: response.statistics().events_sent == 4)
            hub.close()
    assert [len(parse_event_stream(body)) for body in wire.bodies] == [1, 1, 1, 1]
    assert [event.data[:5] for event in wire.events] == ["0", "small", "yyyyy", "after"]
    assert_counts_match_the_wire(response, wire)


# ------------------------------------------------------------------ gaps and policies


async def test_drop_oldest_the_gap_leads_the_backlog_in_the_same_send() -> None:
    hub = Hub(buffer_size=3, policy=SlowConsumerPolicy.DROP_OLDEST)
    wire = Wire()
    with anyio.fail_after(10):
        async with streaming(hub.subscribe("t"), wire) as response:
            release = await first_event_held(hub, wire)
            ids = await publish_all(hub, "t", 9, start=1)
            release.set()
            await wait_until(lambda: response.statistics().events_sent == 5)
            hub.close()
    assert [len(parse_event_stream(body)) for body in wire.bodies] == [1, 4]
    events = wire.events
    assert data_of(events) == ["0", "7", "8", "9"]
    first_id = events[0].id
    assert gaps_of(events) == [
        {"reason": "dropped", "last_event_id": first_id, "next_id": ids[6], "missed": 6}
    ]
    assert events[1].event == GAP_EVENT
    assert_counts_match_the_wire(response, wire)
    stats = hub.statistics()
    assert (stats.delivered, stats.dropped, stats.gaps) == (4, 6, 1)


async def test_drop_newest_the_gap_ends_the_backlog_and_the_stream_goes_on() -> None:
    hub = Hub(buffer_size=3, policy=SlowConsumerPolicy.DROP_NEWEST)
    wire = Wire()
    with anyio.fail_after(10):
        async with streaming(hub.subscribe("t"), wire) as response:
            release = await first_event_held(hub, wire)
            ids = await publish_all(hub, "t", 9, start=1)
            release.set()
            await wait_until(lambda: response.statistics().events_sent == 5)
            later = await hub.publish("t", "10")
            await wait_until(lambda: response.statistics().events_sent == 6)
            hub.close()
    assert [len(parse_event_stream(body)) for body in wire.bodies] == [1, 4, 1]
    events = wire.events
    assert data_of(events) == ["0", "1", "2", "3", "10"]
    assert gaps_of(events) == [
        {"reason": "dropped", "last_event_id": ids[2], "next_id": None, "missed": 6}
    ]
    assert events[-1].id == later
    assert_counts_match_the_wire(response, wire)


async def test_a_backend_hole_in_the_middle_of_a_backlog_is_in_its_place() -> None:
    hub = Hub()
    wire = Wire()
    hole = Gap(GapReason.UNKNOWN, None, None, 2)
    with anyio.fail_after(10):
        async with streaming(hub.subscribe("t"), wire) as response:
            release = await first_event_held(hub, wire)
            before = await publish_all(hub, "t", 2, start=1)
            hub._fanout.deliver_gap("t", hole, None)  # what a lossy backend reports
            after = await publish_all(hub, "t", 2, start=3)
            release.set()
            await wait_until(lambda: response.statistics().events_sent == 6)
            hub.close()
    assert [len(parse_event_stream(body)) for body in wire.bodies] == [1, 5]
    events = wire.events
    assert [event.event for event in events] == ["message"] * 3 + [GAP_EVENT] + ["message"] * 2
    assert data_of(events) == ["0", "1", "2", "3", "4"]
    assert gaps_of(events) == [
        {"reason": "unknown", "last_event_id": before[-1], "next_id": after[0], "missed": 2}
    ]
    assert_counts_match_the_wire(response, wire)


async def test_block_the_publisher_waiting_for_room_goes_on_once_the_backlog_is_taken() -> None:
    hub = Hub(buffer_size=2, policy=SlowConsumerPolicy.BLOCK, block_timeout=None)
    wire = Wire()
    published = anyio.Event()
    with anyio.fail_after(10):
        async with (
            streaming(hub.subscribe("t"), wire) as response,
            anyio.create_task_group() as tasks,
        ):
            release = await first_event_held(hub, wire)
            await publish_all(hub, "t", 2, start=1)  # the buffer is full

            async def third() -> None:
                await hub.publish("t", "3")
                published.set()

            tasks.start_soon(third)
            await wait_until(lambda: hub.statistics().publishers_waiting == 1)
            release.set()
            await published.wait()
            await wait_until(lambda: response.statistics().events_sent == 4)
            hub.close()
    assert [len(parse_event_stream(body)) for body in wire.bodies] == [1, 2, 1]
    assert data_of(wire.events) == ["0", "1", "2", "3"]
    assert_counts_match_the_wire(response, wire)
    stats = hub.statistics()
    assert (stats.delivered, stats.dropped, stats.slow_disconnects) == (4, 0, 0)


async def test_disconnect_a_subscriber_let_go_during_a_send_sends_no_backlog() -> None:
    """DISCONNECT: the buffer is freed when it overflows; the stream ends, nothing more sent."""
    hub = Hub(buffer_size=3, policy=SlowConsumerPolicy.DISCONNECT)
    wire = Wire()
    with anyio.fail_after(10):
        async with streaming(hub.subscribe("t"), wire) as response:
            release = await first_event_held(hub, wire)
            await publish_all(hub, "t", 4, start=1)  # the fourth overflows: let go
            release.set()
    assert [len(parse_event_stream(body)) for body in wire.bodies] == [1]
    assert response.close_reason is CloseReason.SLOW_CONSUMER
    assert_counts_match_the_wire(response, wire)
    assert hub.statistics().slow_disconnects == 1


# ------------------------------------------------------------------ resume


async def test_a_resume_sends_the_replay_in_one_send_after_the_first() -> None:
    hub = Hub()
    ids = await publish_all(hub, "t", 12)
    wire = Wire()
    with anyio.fail_after(10):
        async with streaming(hub.subscribe("t", last_event_id=ids[1]), wire) as response:
            await wait_until(lambda: response.statistics().events_sent == 10)
            hub.close()
    assert [len(parse_event_stream(body)) for body in wire.bodies] == [1, 9]
    assert data_of(wire.events) == [str(n) for n in range(2, 12)]
    assert wire.events[-1].id == ids[-1]
    assert_counts_match_the_wire(response, wire)
    assert (hub.statistics().replayed, hub.statistics().delivered) == (10, 10)


async def test_a_resume_with_a_gap_then_the_replay_then_live_events() -> None:
    hub = Hub()
    await publish_all(hub, "t", 3)
    wire = Wire()
    with anyio.fail_after(10):
        async with streaming(hub.subscribe("t", last_event_id="unknown-id"), wire) as response:
            await wait_until(lambda: response.statistics().events_sent == 4)
            await publish_all(hub, "t", 2, start=3)
            await wait_until(lambda: response.statistics().events_sent == 6)
            hub.close()
    events = wire.events
    assert events[0].event == GAP_EVENT
    assert gaps_of(events)[0]["reason"] == "unknown"
    assert data_of(events) == ["0", "1", "2", "3", "4"]
    assert sum(len(parse_event_stream(body)) for body in wire.bodies) == 6
    assert len(wire.bodies) < 6  # the replay behind the gap went out joined
    assert_counts_match_the_wire(response, wire)


# ------------------------------------------------------------------ separators


async def test_mixed_separators_each_event_keeps_its_own_bytes_in_a_joined_send() -> None:
    """The hub's ``sep`` for str items, an event's own ``sep``, the response's for pings.

    A backlog is the events' own frames end to end, so each keeps the line
    ends it was encoded with; the event-stream grammar accepts any of the
    three per line, and no frame starts with LF, so a CR-ended frame and
    the next cannot merge into one CRLF.
    """
    hub = Hub(sep="\r")
    wire = Wire()
    with anyio.fail_after(10):
        async with streaming(hub.subscribe("t"), wire, sep="\n") as response:
            release = await first_event_held(hub, wire)
            a = await hub.publish("t", "a\nb")
            b = await hub.publish("t", ServerSentEvent("c", event="kind", sep="\r\n"))
            c = await hub.publish("t", {"data": "d"})
            release.set()
            await wait_until(lambda: response.statistics().events_sent == 4)
            hub.close()
    assert len(wire.bodies) == 2
    assert wire.bodies[1] == (
        f"id: {a}\rdata: a\rdata: b\r\r".encode()
        + f"id: {b}\r\nevent: kind\r\ndata: c\r\n\r\n".encode()
        + f"id: {c}\rdata: d\r\r".encode()
    )
    assert [(e.event, e.data) for e in wire.events] == [
        ("message", "0"),
        ("message", "a\nb"),
        ("kind", "c"),
        ("message", "d"),
    ]
    assert_counts_match_the_wire(response, wire)


# ------------------------------------------------------------------ direct iteration


async def test_a_subscription_iterated_directly_still_yields_one_event_per_item() -> None:
    hub = Hub()
    sub = hub.subscribe("t")
    frames: list[bytes] = []
    with anyio.fail_after(5):
        async with sub:
            async with anyio.create_task_group() as tasks:

                async def first() -> None:
                    frames.append(await sub.__anext__())

                tasks.start_soon(first)
                await wait_until(lambda: sub.statistics().joined)
                await hub.publish("t", "0")
            await publish_all(hub, "t", 5, start=1)
            for _ in range(5):
                frames.append(await sub.__anext__())
    assert all(type(frame) is bytes for frame in frames)
    assert [len(parse_event_stream(frame)) for frame in frames] == [1] * 6
