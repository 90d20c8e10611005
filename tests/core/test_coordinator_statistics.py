"""``DrainCoordinator.statistics()``: the coordinator's books of its streams.

Each connection reports itself to its coordinator when it starts (``OPEN``)
and at each change of state; these tests drive real responses (raw ASGI and a
Starlette app) through each kind of end and check the per-state counts, the
per-reason closes and the traffic, and that the live counts return to zero.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
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
    CoordinatorStatistics,
    DrainCoordinator,
    EventSourceResponse,
    ServerSentEvent,
    State,
    drain_coordinator_for,
)
from sse_sm._state import TRANSITIONS
from sse_sm.testing import stream, wait_for_close, wait_for_state
from tests._support import http_scope, never_receive

LIVE = (State.OPEN, State.STREAMING, State.DRAINING)


def live(stats: CoordinatorStatistics) -> dict[State, int]:
    return dict(stats.streams)


def closes(stats: CoordinatorStatistics) -> dict[CloseReason, int]:
    """Only the reasons that happened, for short assertions."""
    return {reason: n for reason, n in stats.closes.items() if n}


async def ticking(count: int | None = None, *, fail_after: int | None = None) -> AsyncIterator[Any]:
    """``count`` events (forever if None), raising after ``fail_after`` of them."""
    n = 0
    while count is None or n < count:
        if fail_after is not None and n == fail_after:
            raise LookupError("the source broke")
        yield ServerSentEvent(str(n), id=str(n))
        n += 1
        await anyio.sleep(0.001)


class Recorder:
    """An ASGI send that records messages, and can hold the headers until released."""

    def __init__(self, *, hold_headers: bool = False) -> None:
        self.messages: list[Message] = []
        self.release = anyio.Event()
        if not hold_headers:
            self.release.set()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self.release.wait()
        self.messages.append(message)
        await anyio.lowlevel.checkpoint()


def test_a_new_coordinator_has_every_reason_at_zero_and_nothing_alive() -> None:
    stats = DrainCoordinator().statistics()
    assert dict(stats.streams) == dict.fromkeys(LIVE, 0)
    assert dict(stats.closes) == dict.fromkeys(CloseReason, 0)
    assert set(stats.closes) == {a.close_reason for a in TRANSITIONS if a.close_reason}
    assert (stats.rejections, stats.events_sent, stats.pings_sent, stats.bytes_sent) == (0,) * 4
    assert stats.active == 0


def test_the_statistics_are_a_frozen_snapshot() -> None:
    stats = DrainCoordinator().statistics()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.rejections = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.closes[CloseReason.HEAD] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        stats.streams[State.OPEN] = 1  # type: ignore[index]


async def test_a_stream_is_counted_in_each_state_then_by_its_close_reason() -> None:
    coordinator = DrainCoordinator()
    send = Recorder(hold_headers=True)
    shutdown = anyio.Event()

    async def source() -> AsyncIterator[str]:
        yield "one"
        await shutdown.wait()
        yield "bye"

    response = EventSourceResponse(
        source(),
        ping=0,
        drain_coordinator=coordinator,
        shutdown_event=shutdown,
        shutdown_grace_period=5,
    )
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, send)
            # The headers are held: the stream is counted OPEN already.
            await anyio.sleep(0.01)
            assert response.state is State.OPEN
            assert live(coordinator.statistics()) == {
                State.OPEN: 1,
                State.STREAMING: 0,
                State.DRAINING: 0,
            }
            send.release.set()
            await wait_for_state(response, State.STREAMING)
            assert live(coordinator.statistics())[State.STREAMING] == 1
            assert coordinator.statistics().active == 1
            coordinator.request_drain("test")
            await wait_for_state(response, State.DRAINING)
            assert live(coordinator.statistics()) == {
                State.OPEN: 0,
                State.STREAMING: 0,
                State.DRAINING: 1,
            }
            assert await wait_for_close(response) is CloseReason.DRAINED
    stats = coordinator.statistics()
    assert live(stats) == dict.fromkeys(LIVE, 0)
    assert closes(stats) == {CloseReason.DRAINED: 1}
    own = response.statistics()
    assert (stats.events_sent, stats.pings_sent, stats.bytes_sent) == (
        own.events_sent,
        own.pings_sent,
        own.bytes_sent,
    )
    assert stats.events_sent == 2
    assert stats.bytes_sent > 0


async def test_a_failing_source_is_counted_as_an_error_and_leaves_nothing_alive() -> None:
    coordinator = DrainCoordinator()
    response = EventSourceResponse(ticking(fail_after=3), ping=0, drain_coordinator=coordinator)
    with anyio.fail_after(5), pytest.raises(LookupError):
        await response(http_scope(), never_receive, Recorder())
    stats = coordinator.statistics()
    assert live(stats) == dict.fromkeys(LIVE, 0)
    assert closes(stats) == {CloseReason.ERROR: 1}
    assert stats.events_sent == 3


async def test_a_head_request_is_counted_as_head_and_never_as_streaming() -> None:
    coordinator = DrainCoordinator()
    seen: list[State] = []
    response = EventSourceResponse(
        ticking(), drain_coordinator=coordinator, on_transition=lambda t: seen.append(t.target)
    )
    with anyio.fail_after(5):
        await response(http_scope("HEAD"), never_receive, Recorder())
    stats = coordinator.statistics()
    assert seen == [State.CLOSED]
    assert live(stats) == dict.fromkeys(LIVE, 0)
    assert closes(stats) == {CloseReason.HEAD: 1}
    assert (stats.events_sent, stats.bytes_sent) == (0, 0)


async def test_a_disconnect_is_counted_and_a_starlette_apps_coordinator_keeps_the_books() -> None:
    responses: list[EventSourceResponse] = []

    async def events(request: Request) -> EventSourceResponse:
        response = EventSourceResponse(ticking(), ping=0)
        responses.append(response)
        return response

    app = Starlette(routes=[Route("/events", events)])
    coordinator = drain_coordinator_for(app)
    with anyio.fail_after(5):
        async with stream(app, "/events") as first, stream(app, "/events") as second:
            await first.next_event()
            await second.next_event()
            stats = coordinator.statistics()
            assert live(stats)[State.STREAMING] == 2
            # Live streams' traffic is in the figures before they close.
            assert stats.events_sent >= 2
            await first.disconnect()
            await first.wait_finished()
            stats = coordinator.statistics()
            assert live(stats)[State.STREAMING] == 1
            assert closes(stats) == {CloseReason.CLIENT_DISCONNECTED: 1}
    stats = coordinator.statistics()
    assert live(stats) == dict.fromkeys(LIVE, 0)
    assert closes(stats) == {CloseReason.CLIENT_DISCONNECTED: 2}
    assert stats.events_sent == sum(r.statistics().events_sent for r in responses)
    assert stats.bytes_sent == sum(r.statistics().bytes_sent for r in responses)


async def test_completed_and_cancelled_streams_count_out_and_totals_add_up() -> None:
    coordinator = DrainCoordinator()
    done = EventSourceResponse(ticking(4), ping=0, drain_coordinator=coordinator)
    with anyio.fail_after(5):
        await done(http_scope(), never_receive, Recorder())
        cancelled = EventSourceResponse(ticking(), ping=0, drain_coordinator=coordinator)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(cancelled, http_scope(), never_receive, Recorder())
            await wait_for_state(cancelled, State.STREAMING)
            assert coordinator.statistics().active == 1
            tasks.cancel_scope.cancel()
    stats = coordinator.statistics()
    assert live(stats) == dict.fromkeys(LIVE, 0)
    assert closes(stats) == {CloseReason.COMPLETED: 1, CloseReason.CANCELLED: 1}
    assert stats.events_sent == 4 + cancelled.statistics().events_sent
    assert stats.bytes_sent == done.statistics().bytes_sent + cancelled.statistics().bytes_sent


@pytest.mark.time_driven
async def test_pings_are_counted() -> None:
    coordinator = DrainCoordinator()

    async def quiet() -> AsyncIterator[str]:
        await anyio.sleep(0.35)
        yield "late"

    response = EventSourceResponse(quiet(), ping=0.1, drain_coordinator=coordinator)
    with anyio.fail_after(10):
        await response(http_scope(), never_receive, Recorder())
    stats = coordinator.statistics()
    assert stats.pings_sent == response.statistics().pings_sent >= 1  # 3 on the MockClock
    assert stats.events_sent == 1
    assert closes(stats) == {CloseReason.COMPLETED: 1}


async def test_statistics_may_be_read_from_another_thread() -> None:
    coordinator = DrainCoordinator()
    response = EventSourceResponse(ticking(), ping=0, drain_coordinator=coordinator)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, Recorder())
            await wait_for_state(response, State.STREAMING)
            seen = await anyio.to_thread.run_sync(coordinator.statistics)
            assert seen.streams[State.STREAMING] == 1
            tasks.cancel_scope.cancel()


def test_a_stream_that_never_closes_is_counted_out_at_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The driver's last word is a safety net: a path that ended without CLOSED
    (a bug) must not leave a stream counted alive forever."""

    class Stuck:
        def sent_counts(self) -> tuple[int, int, int]:
            return (5, 1, 100)

    coordinator = DrainCoordinator()
    stuck = Stuck()
    assert coordinator._books.admit(stuck) is None
    assert coordinator.statistics().streams[State.OPEN] == 1
    with caplog.at_level(logging.ERROR, logger="sse_sm.shutdown"):
        coordinator._books.done(stuck, None)
        coordinator._books.done(stuck, None)  # idempotent
    stats = coordinator.statistics()
    assert stats.active == 0
    assert (stats.events_sent, stats.pings_sent, stats.bytes_sent) == (5, 1, 100)
    assert [r.message for r in caplog.records] == [
        "a stream ended in state OPEN without closing; counted out"
    ]


def test_concurrent_books_from_threads_stay_consistent() -> None:
    """The lock keeps the books whole when streams on several threads report at once."""

    class Quiet:
        def sent_counts(self) -> tuple[int, int, int]:
            return (1, 0, 10)

    coordinator = DrainCoordinator()
    started = next(a for a in TRANSITIONS if a.source is State.OPEN and a.target is State.STREAMING)
    done = next(a for a in TRANSITIONS if a.close_reason is CloseReason.COMPLETED)

    def run_streams() -> None:
        for _ in range(500):
            stream = Quiet()
            assert coordinator._books.admit(stream) is None
            coordinator._books.moved(stream, started)
            coordinator._books.moved(stream, done)
            coordinator._books.done(stream, CloseReason.COMPLETED)

    threads = [threading.Thread(target=run_streams) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    stats = coordinator.statistics()
    assert stats.active == 0
    assert stats.closes[CloseReason.COMPLETED] == 2000
    assert (stats.events_sent, stats.bytes_sent) == (2000, 20000)
