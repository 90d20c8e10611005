"""One test per arc of the state diagram, named ``test_<from>_to_<to>_on_<trigger>``.

Each drives a real :class:`EventSourceResponse` through the arc on asyncio and
trio, then checks the history, the close reason, what reached the client and
that the source was closed.  ``test_every_arc_has_a_test`` keeps the list
complete when a row is added to the table.
"""

from __future__ import annotations

import sys
import types
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from starlette.types import Message, Receive, Scope, Send

from sse_sm import (
    TRANSITIONS,
    CloseReason,
    DrainCoordinator,
    EventSourceResponse,
    SendTimeoutError,
    ServerSentEvent,
    SlowConsumerError,
    State,
    Trigger,
)
from sse_sm.testing import Comment, Event, SSEStream, stream
from tests._support import http_scope, never_receive

pytestmark = pytest.mark.time_driven

LEGAL = {(arc.source, arc.trigger): arc for arc in TRANSITIONS}


def closed_before_starting(generator: object) -> bool:
    """An async generator closed without its body ever running (no frame left)."""
    return isinstance(generator, types.AsyncGeneratorType) and generator.ag_frame is None


class Endpoint:
    """An ASGI app serving one EventSourceResponse, kept for assertions."""

    def __init__(self, make: Callable[[], EventSourceResponse]) -> None:
        self._make = make
        self.response: EventSourceResponse | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.response = self._make()
        await self.response(scope, receive, send)

    @property
    def resp(self) -> EventSourceResponse:
        assert self.response is not None, "the endpoint was never called"
        return self.response


class Source:
    """A source whose cleanup is observable: ``closed`` is set in its ``finally``."""

    def __init__(self) -> None:
        self.closed = False
        self.produced = 0

    async def ticks(
        self, count: int | None = None, pause: float = 0.0
    ) -> AsyncGenerator[Any, None]:
        try:
            while count is None or self.produced < count:
                yield ServerSentEvent(str(self.produced), id=str(self.produced))
                self.produced += 1
                await anyio.sleep(pause)
        finally:
            self.closed = True

    async def then_wait(
        self, event: anyio.Event, farewell: str | None = None
    ) -> AsyncIterator[Any]:
        """One event, then wait for ``event``; say ``farewell`` and end if it is set."""
        try:
            yield "hello"
            self.produced += 1
            await event.wait()
            if farewell is not None:
                yield ServerSentEvent(farewell, event="farewell")
                self.produced += 1
        finally:
            self.closed = True

    async def falls_behind(self, after: int, wait: anyio.Event | None = None) -> AsyncIterator[Any]:
        """``after`` events, then (once ``wait`` is set) give up on a slow subscriber."""
        try:
            while self.produced < after:
                yield str(self.produced)
                self.produced += 1
            if wait is not None:
                await wait.wait()
            raise SlowConsumerError("64 events behind")
        finally:
            self.closed = True

    async def forever(self) -> AsyncIterator[Any]:
        """One event, then block until cancelled."""
        try:
            yield "hello"
            self.produced += 1
            await anyio.sleep_forever()
        finally:
            self.closed = True


def assert_path(response: EventSourceResponse, *triggers: Trigger) -> None:
    """The history is exactly these triggers, each a legal row from the previous state."""
    assert [t.trigger for t in response.history] == list(triggers)
    state = State.OPEN
    for record in response.history:
        assert record.source is state
        assert LEGAL[(record.source, record.trigger)].target is record.target
        state = record.target


def assert_clean(sse: SSEStream) -> None:
    assert sse.violations == []


async def wait_for_state(
    response_of: Callable[[], EventSourceResponse | None], state: State
) -> None:
    """Wait until the response exists and reaches ``state`` (bounded by the caller)."""
    while (response := response_of()) is None:
        await anyio.lowlevel.checkpoint()  # the app builds it at its next step
    await response.wait_until(state)


# --------------------------------------------------------------------- OPEN


async def test_open_to_streaming_on_started() -> None:
    source = Source()
    endpoint = Endpoint(lambda: EventSourceResponse(source.ticks(1), ping=0))
    with anyio.fail_after(5):
        async with stream(endpoint) as sse:
            await sse.wait_started()
            assert sse.status == 200
            assert [e.data async for e in sse.events()] == ["0"]
    assert_path(endpoint.resp, Trigger.STARTED, Trigger.SOURCE_EXHAUSTED)
    assert endpoint.resp.history[0].reason == "status 200"
    assert_clean(sse)


async def test_open_to_closed_on_head_answered() -> None:
    source = Source()
    endpoint = Endpoint(lambda: EventSourceResponse(source.ticks()))
    with anyio.fail_after(5):
        async with stream(endpoint, method="HEAD") as sse:
            await sse.wait_finished()
    assert_path(endpoint.resp, Trigger.HEAD_ANSWERED)
    assert endpoint.resp.close_reason is CloseReason.HEAD
    assert sse.status == 200
    assert sse.complete
    assert sse.body == b""
    assert source.produced == 0, "HEAD must never start the source"
    assert_clean(sse)


async def test_open_to_closed_on_rejected() -> None:
    source = Source()
    generator = source.ticks()
    coordinator = DrainCoordinator(max_streams=0, retry_after=3)
    endpoint = Endpoint(lambda: EventSourceResponse(generator, drain_coordinator=coordinator))
    with anyio.fail_after(5):
        async with stream(endpoint) as sse:
            await sse.wait_finished()
    assert_path(endpoint.resp, Trigger.REJECTED)
    assert endpoint.resp.close_reason is CloseReason.REJECTED
    assert endpoint.resp.history[0].reason == "max_streams=0 reached; 503 with Retry-After: 3"
    assert sse.status == 503
    assert ("retry-after", "3") in sse.headers
    assert sse.complete
    assert sse.body == b"Too many open streams; retry after 3 s.\n"
    assert source.produced == 0, "a refused request must never start the source"
    assert closed_before_starting(generator), "closed (before it ever started)"
    assert coordinator.statistics().rejections == 1
    assert_clean(sse)


async def test_open_to_closed_on_disconnected() -> None:
    source = Source()
    response = EventSourceResponse(source.ticks())

    async def send(message: Message) -> None:
        raise OSError("connection reset by peer")

    with anyio.fail_after(5):
        await response(http_scope(), never_receive, send)
    assert_path(response, Trigger.DISCONNECTED)
    assert response.close_reason is CloseReason.CLIENT_DISCONNECTED
    assert source.produced == 0


async def test_open_to_closed_on_send_timed_out() -> None:
    source = Source()
    response = EventSourceResponse(source.ticks(), send_timeout=0.05)

    async def send(message: Message) -> None:
        await anyio.sleep_forever()

    with anyio.fail_after(5), pytest.raises(SendTimeoutError, match=r"headers not sent within"):
        await response(http_scope(), never_receive, send)
    assert_path(response, Trigger.SEND_TIMED_OUT)
    assert response.close_reason is CloseReason.SEND_TIMEOUT


async def test_open_to_closed_on_failed() -> None:
    source = Source()
    response = EventSourceResponse(source.ticks())

    async def send(message: Message) -> None:
        raise RuntimeError("the server refused the message")

    with anyio.fail_after(5), pytest.raises(RuntimeError, match="refused"):
        await response(http_scope(), never_receive, send)
    assert_path(response, Trigger.FAILED)
    assert response.close_reason is CloseReason.ERROR


async def test_open_to_closed_on_cancelled() -> None:
    source = Source()
    response = EventSourceResponse(source.ticks())
    sent: list[Message] = []
    headers_pending = anyio.Event()

    async def send(message: Message) -> None:
        sent.append(message)
        headers_pending.set()
        await anyio.sleep_forever()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, send)
            await headers_pending.wait()
            tasks.cancel_scope.cancel()
    assert_path(response, Trigger.CANCELLED)
    assert response.close_reason is CloseReason.CANCELLED
    assert [m["type"] for m in sent] == ["http.response.start"], "no body before the headers"


# ---------------------------------------------------------------- STREAMING


async def test_streaming_to_streaming_on_event_sent() -> None:
    source = Source()
    endpoint = Endpoint(lambda: EventSourceResponse(source.ticks(5), ping=0))
    with anyio.fail_after(5):
        async with stream(endpoint) as sse:
            events = [e async for e in sse.events()]
    assert [(e.id, e.data) for e in events] == [(str(n), str(n)) for n in range(5)]
    stats = endpoint.resp.statistics()
    assert stats.events_sent == 5
    assert stats.bytes_sent == len(sse.body)
    assert len(endpoint.resp.history) == 2, "self-loops are counted, not recorded"


async def test_streaming_to_streaming_on_ping_sent() -> None:
    source = Source()
    quiet = anyio.Event()
    endpoint = Endpoint(lambda: EventSourceResponse(source.then_wait(quiet), ping=0.02))
    with anyio.fail_after(5):
        async with stream(endpoint) as sse:
            seen: list[Event | Comment] = []
            async for item in sse.items():
                seen.append(item)
                if sum(isinstance(i, Comment) for i in seen) == 2:
                    break
    assert isinstance(seen[0], Event)
    pings = [i for i in seen if isinstance(i, Comment)]
    assert all(p.text.startswith("ping - ") for p in pings)
    assert endpoint.resp.statistics().pings_sent >= 2
    assert endpoint.resp.state is State.CLOSED
    assert_clean(sse)


async def test_streaming_to_draining_on_shutdown_requested() -> None:
    source = Source()
    coordinator = DrainCoordinator()
    goodbye = anyio.Event()
    endpoint = Endpoint(
        lambda: EventSourceResponse(
            source.then_wait(goodbye, "bye"),
            shutdown_event=goodbye,
            shutdown_grace_period=5,
            drain_coordinator=coordinator,
        )
    )
    with anyio.fail_after(5):
        async with stream(endpoint) as sse:
            assert (await sse.next_event()).data == "hello"
            coordinator.request_drain("deploy")
            farewell = await sse.next_event()
            # Stay for the end: a client that leaves right after the last
            # event may beat the close (a late SOURCE_EXHAUSTED would lose to
            # its DISCONNECTED, which is right, but not this arc).
            await sse.wait_finished()
    assert farewell.event == "farewell"
    assert_path(
        endpoint.resp, Trigger.STARTED, Trigger.SHUTDOWN_REQUESTED, Trigger.SOURCE_EXHAUSTED
    )
    assert endpoint.resp.history[1].reason == "deploy"
    assert goodbye.is_set()


async def test_streaming_to_draining_on_lifetime_expired() -> None:
    source = Source()
    goodbye = anyio.Event()
    endpoint = Endpoint(
        lambda: EventSourceResponse(
            source.then_wait(goodbye, "bye"),
            shutdown_event=goodbye,
            shutdown_grace_period=5,
            drain_coordinator=DrainCoordinator(),
            max_lifetime=0.05,
            ping=0,
        )
    )
    with anyio.fail_after(5):
        async with stream(endpoint) as sse:
            assert (await sse.next_event()).data == "hello"
            farewell = await sse.next_event()
            await sse.wait_finished()
    assert farewell.event == "farewell"
    assert_path(endpoint.resp, Trigger.STARTED, Trigger.LIFETIME_EXPIRED, Trigger.SOURCE_EXHAUSTED)
    assert endpoint.resp.history[1].reason == "its lifetime of 0.05 s ran out"
    assert endpoint.resp.close_reason is CloseReason.DRAINED
    assert goodbye.is_set()
    assert sse.complete
    assert source.closed
    assert_clean(sse)


async def test_streaming_to_closed_on_source_exhausted() -> None:
    source = Source()
    endpoint = Endpoint(lambda: EventSourceResponse(source.ticks(3)))
    with anyio.fail_after(5):
        async with stream(endpoint) as sse:
            assert len([e async for e in sse.events()]) == 3
            await sse.wait_finished()
    assert_path(endpoint.resp, Trigger.STARTED, Trigger.SOURCE_EXHAUSTED)
    assert endpoint.resp.close_reason is CloseReason.COMPLETED
    assert sse.complete, "a completed stream ends with the final empty body"
    assert source.closed
    assert_clean(sse)


async def test_streaming_to_closed_on_disconnected() -> None:
    source = Source()
    endpoint = Endpoint(lambda: EventSourceResponse(source.ticks(pause=0.001)))
    with anyio.fail_after(5):
        async with stream(endpoint) as sse:
            await sse.next_event()
            await sse.next_event()
            await sse.disconnect()
            await sse.wait_finished()
    assert_path(endpoint.resp, Trigger.STARTED, Trigger.DISCONNECTED)
    assert endpoint.resp.close_reason is CloseReason.CLIENT_DISCONNECTED
    assert endpoint.resp.history[-1].reason == "client sent http.disconnect"
    assert not sse.complete, "no final body to a client that left"
    assert source.closed
    assert_clean(sse)


async def test_streaming_to_closed_on_disconnected_when_send_raises_oserror() -> None:
    """ASGI spec 2.4 servers may raise OSError from send() instead of sending http.disconnect."""
    source = Source()
    response = EventSourceResponse(source.ticks(), ping=0)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        if len(sent) == 3:
            raise OSError("broken pipe")
        sent.append(message)

    with anyio.fail_after(5):
        await response(http_scope(), never_receive, send)
    assert_path(response, Trigger.STARTED, Trigger.DISCONNECTED)
    assert "broken pipe" in response.history[-1].reason
    assert source.closed


async def test_streaming_to_closed_on_send_timed_out() -> None:
    source = Source()
    endpoint = Endpoint(lambda: EventSourceResponse(source.ticks(), send_timeout=0.05, ping=0))

    opened: list[SSEStream] = []

    async def never_read() -> None:
        async with stream(endpoint, max_buffered_messages=2) as sse:
            opened.append(sse)
            await sse.wait_started()
            await sse.wait_finished()  # never reading: the app's send() stalls

    with anyio.fail_after(5), pytest.raises(SendTimeoutError):
        await never_read()
    (sse,) = opened
    assert_path(endpoint.resp, Trigger.STARTED, Trigger.SEND_TIMED_OUT)
    assert endpoint.resp.close_reason is CloseReason.SEND_TIMEOUT
    assert source.closed
    assert not sse.complete


async def test_streaming_to_closed_on_failed() -> None:
    async def broken() -> AsyncIterator[str]:
        yield "one"
        raise ValueError("the database went away")

    endpoint = Endpoint(lambda: EventSourceResponse(broken()))

    opened: list[SSEStream] = []

    async def read() -> None:
        async with stream(endpoint) as sse:
            opened.append(sse)
            assert (await sse.next_event()).data == "one"
            await sse.wait_finished()

    with anyio.fail_after(5), pytest.raises(ValueError, match="database"):
        await read()
    (sse,) = opened
    assert_path(endpoint.resp, Trigger.STARTED, Trigger.FAILED)
    assert endpoint.resp.close_reason is CloseReason.ERROR
    assert "database" in endpoint.resp.history[-1].reason
    assert not sse.complete, "an error is not dressed up as a clean end"


async def test_streaming_to_closed_on_cancelled() -> None:
    source = Source()
    response = EventSourceResponse(source.forever(), ping=0)
    sent: list[Message] = []
    first_event = anyio.Event()

    async def send(message: Message) -> None:
        sent.append(message)
        if message.get("body"):
            first_event.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, send)
            await first_event.wait()
            tasks.cancel_scope.cancel()
    assert_path(response, Trigger.STARTED, Trigger.CANCELLED)
    assert response.close_reason is CloseReason.CANCELLED
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert source.closed


async def test_streaming_to_closed_on_fell_behind() -> None:
    source = Source()
    endpoint = Endpoint(lambda: EventSourceResponse(source.falls_behind(2)))
    with anyio.fail_after(5):
        async with stream(endpoint) as sse:
            assert [e.data async for e in sse.events()] == ["0", "1"]
            await sse.wait_finished()
    assert_path(endpoint.resp, Trigger.STARTED, Trigger.FELL_BEHIND)
    assert endpoint.resp.close_reason is CloseReason.SLOW_CONSUMER
    assert endpoint.resp.history[-1].reason == "64 events behind"
    assert sse.complete, "a slow consumer is let go cleanly, so EventSource reconnects"
    assert source.closed
    assert_clean(sse)


# ----------------------------------------------------------------- DRAINING


def draining_endpoint(
    source_factory: Callable[[anyio.Event], AsyncIterator[Any]],
    coordinator: DrainCoordinator,
    **kwargs: Any,
) -> Endpoint:
    def make() -> EventSourceResponse:
        shutdown = anyio.Event()
        return EventSourceResponse(
            source_factory(shutdown),
            shutdown_event=shutdown,
            drain_coordinator=coordinator,
            **kwargs,
        )

    return Endpoint(make)


async def read_one_then_drain(
    endpoint: Endpoint, coordinator: DrainCoordinator, *, max_buffered_messages: int | None = None
) -> None:
    """Read the first event, request a drain, then wait (without reading) for the end."""
    async with stream(endpoint, max_buffered_messages=max_buffered_messages) as sse:
        await sse.next_event()
        coordinator.request_drain()
        await sse.wait_finished()


async def test_draining_to_draining_on_event_sent() -> None:
    source = Source()
    coordinator = DrainCoordinator()
    endpoint = draining_endpoint(
        lambda shutdown: source.then_wait(shutdown, "bye"),
        coordinator,
        shutdown_grace_period=5,
    )
    with anyio.fail_after(5):
        async with stream(endpoint) as sse:
            await sse.next_event()
            coordinator.request_drain()
            assert (await sse.next_event()).data == "bye"
    assert endpoint.resp.statistics().events_sent == 2
    assert State.DRAINING in [t.target for t in endpoint.resp.history]


async def test_draining_to_draining_on_ping_sent() -> None:
    source = Source()
    coordinator = DrainCoordinator()
    endpoint = draining_endpoint(
        lambda _: source.forever(), coordinator, ping=0.02, shutdown_grace_period=5
    )
    with anyio.fail_after(5):
        async with stream(endpoint) as sse:
            await sse.next_event()
            coordinator.request_drain()
            async for item in sse.items():
                if isinstance(item, Comment):
                    break
            assert endpoint.resp.state is State.DRAINING
            assert endpoint.resp.statistics().pings_sent >= 1


async def test_draining_to_draining_on_shutdown_requested() -> None:
    source = Source()
    coordinator = DrainCoordinator()
    endpoint = draining_endpoint(lambda _: source.forever(), coordinator, shutdown_grace_period=5)
    with anyio.fail_after(5):
        async with stream(endpoint) as sse:
            await sse.next_event()
            coordinator.request_drain("first")
            await wait_for_state(lambda: endpoint.response, State.DRAINING)
            coordinator.reset()
            coordinator.request_drain("second")
            while endpoint.resp._machine.count(Trigger.SHUTDOWN_REQUESTED) == 0:  # noqa: ASYNC110 - a self-loop (SHUTDOWN_REQUESTED again) calls no listener
                await anyio.sleep(0.001)
            assert endpoint.resp.state is State.DRAINING
            assert [t.reason for t in endpoint.resp.history] == ["status 200", "first"]


async def test_draining_to_closed_on_source_exhausted() -> None:
    source = Source()
    coordinator = DrainCoordinator()
    endpoint = draining_endpoint(
        lambda shutdown: source.then_wait(shutdown, "bye"), coordinator, shutdown_grace_period=5
    )
    with anyio.fail_after(5):
        async with stream(endpoint) as sse:
            await sse.next_event()
            coordinator.request_drain()
            assert [e.data async for e in sse.events()] == ["bye"]
            await sse.wait_finished()
    assert_path(
        endpoint.resp, Trigger.STARTED, Trigger.SHUTDOWN_REQUESTED, Trigger.SOURCE_EXHAUSTED
    )
    assert endpoint.resp.close_reason is CloseReason.DRAINED
    assert sse.complete
    assert source.closed
    assert_clean(sse)


async def test_draining_to_closed_on_grace_expired() -> None:
    source = Source()
    coordinator = DrainCoordinator()
    endpoint = draining_endpoint(
        lambda _: source.forever(), coordinator, shutdown_grace_period=0.05
    )
    with anyio.fail_after(5):
        async with stream(endpoint) as sse:
            await sse.next_event()
            coordinator.request_drain()
            await sse.wait_finished()
    assert_path(endpoint.resp, Trigger.STARTED, Trigger.SHUTDOWN_REQUESTED, Trigger.GRACE_EXPIRED)
    assert endpoint.resp.close_reason is CloseReason.SHUTDOWN_FORCED
    assert sse.complete, "a forced close still ends the body cleanly"
    assert source.closed
    assert_clean(sse)


async def test_draining_to_closed_on_disconnected() -> None:
    source = Source()
    coordinator = DrainCoordinator()
    endpoint = draining_endpoint(lambda _: source.forever(), coordinator, shutdown_grace_period=5)
    with anyio.fail_after(5):
        async with stream(endpoint) as sse:
            await sse.next_event()
            coordinator.request_drain()
            await wait_for_state(lambda: endpoint.response, State.DRAINING)
            await sse.disconnect()
            await sse.wait_finished()
    assert_path(endpoint.resp, Trigger.STARTED, Trigger.SHUTDOWN_REQUESTED, Trigger.DISCONNECTED)
    assert source.closed
    assert_clean(sse)


async def test_draining_to_closed_on_send_timed_out() -> None:
    async def flood(shutdown: anyio.Event) -> AsyncIterator[str]:
        yield "hello"
        await shutdown.wait()
        while True:
            yield "goodbye " * 100

    coordinator = DrainCoordinator()
    endpoint = draining_endpoint(
        flood, coordinator, shutdown_grace_period=5, send_timeout=0.05, ping=0
    )

    with anyio.fail_after(5), pytest.raises(SendTimeoutError):
        await read_one_then_drain(endpoint, coordinator, max_buffered_messages=2)
    assert_path(endpoint.resp, Trigger.STARTED, Trigger.SHUTDOWN_REQUESTED, Trigger.SEND_TIMED_OUT)
    assert endpoint.resp.close_reason is CloseReason.SEND_TIMEOUT


async def test_draining_to_closed_on_failed() -> None:
    async def fails_on_drain(shutdown: anyio.Event) -> AsyncIterator[str]:
        yield "hello"
        await shutdown.wait()
        raise LookupError("no farewell template")

    coordinator = DrainCoordinator()
    endpoint = draining_endpoint(fails_on_drain, coordinator, shutdown_grace_period=5)

    with anyio.fail_after(5), pytest.raises(LookupError):
        await read_one_then_drain(endpoint, coordinator)
    assert_path(endpoint.resp, Trigger.STARTED, Trigger.SHUTDOWN_REQUESTED, Trigger.FAILED)
    assert endpoint.resp.close_reason is CloseReason.ERROR


async def test_draining_to_closed_on_cancelled() -> None:
    source = Source()
    coordinator = DrainCoordinator()
    shutdown = anyio.Event()
    response = EventSourceResponse(
        source.forever(),
        shutdown_event=shutdown,
        shutdown_grace_period=5,
        drain_coordinator=coordinator,
        ping=0,
    )
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, send)
            await wait_for_state(lambda: response, State.STREAMING)
            coordinator.request_drain()
            await shutdown.wait()
            tasks.cancel_scope.cancel()
    assert_path(response, Trigger.STARTED, Trigger.SHUTDOWN_REQUESTED, Trigger.CANCELLED)
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert source.closed


async def test_draining_to_closed_on_fell_behind() -> None:
    source = Source()
    coordinator = DrainCoordinator()
    endpoint = draining_endpoint(
        lambda shutdown: source.falls_behind(1, shutdown), coordinator, shutdown_grace_period=5
    )
    with anyio.fail_after(5):
        await read_one_then_drain(endpoint, coordinator)
    assert_path(endpoint.resp, Trigger.STARTED, Trigger.SHUTDOWN_REQUESTED, Trigger.FELL_BEHIND)
    assert endpoint.resp.close_reason is CloseReason.SLOW_CONSUMER
    assert source.closed


# ------------------------------------------------------------ completeness


def test_every_arc_has_a_test() -> None:
    module = sys.modules[__name__]
    for arc in TRANSITIONS:
        name = f"test_{arc.source.value}_to_{arc.target.value}_on_{arc.trigger.value}"
        assert callable(getattr(module, name, None)), f"no test for the arc {name}"


def _unused(_: Callable[[], Awaitable[None]]) -> None:  # pragma: no cover
    """Keeps the Awaitable import meaningful for readers of the helper types."""
