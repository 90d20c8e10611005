"""Lifetime rotation: ``max_lifetime`` drains a stream as a shutdown would, at its drawn time.

Every async test here is ``time_driven``: it runs on asyncio, on trio, and on
trio with an autojumping ``MockClock``, where the drain's timing is checked
exactly and no test sleeps in real time.  On the real clocks the same
timings are checked with a slack for a busy machine.

What is pinned down:

* the argument: numbers and ``(min, max)`` ranges accepted, each refused
  value named ``max_lifetime``; ``inf`` means no limit; draws lie in the range;
* the rotation itself: ``LIFETIME_EXPIRED`` at ``STARTED`` + the drawn
  lifetime (with pings off and no send timeout too, where nothing else would
  wake the watcher), ``shutdown_event`` set, the farewell and the jittered
  ``retry:`` on the wire, a clean end, ``drained`` or, past the grace,
  ``shutdown_forced``;
* how it meets the other ways a stream ends: a shutdown before or after it,
  a send blocked when it runs out, a client leaving during it or at the same
  instant, the source ending at the same instant.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from starlette.types import Message

from sse_sm import (
    TRANSITIONS,
    CloseReason,
    DrainCoordinator,
    EventSourceResponse,
    ServerSentEvent,
    State,
    Trigger,
)
from sse_sm._lifetime import check_lifetime_range, draw_lifetime
from sse_sm._state import LATE_REPORTS
from sse_sm.testing import stream
from tests._support import http_scope, never_receive

pytestmark = pytest.mark.time_driven

LEGAL = {(arc.source, arc.trigger): arc for arc in TRANSITIONS}
#: How late a timer may fire on a busy machine's real clock.
SLACK = 0.5


def on_mock_clock(anyio_backend: Any) -> bool:
    return isinstance(anyio_backend, tuple) and "clock" in anyio_backend[1]


def assert_legal(response: EventSourceResponse) -> None:
    state = State.OPEN
    for record in response.history:
        assert record.source is state
        assert LEGAL[(record.source, record.trigger)].target is record.target
        state = record.target


def at(response: EventSourceResponse, trigger: Trigger) -> float:
    """When ``trigger`` changed the state, in the loop's clock."""
    (when,) = [t.at for t in response.history if t.trigger is trigger]
    return when


def assert_at(anyio_backend: Any, elapsed: float, expected: float) -> None:
    if on_mock_clock(anyio_backend):
        assert elapsed == pytest.approx(expected, abs=1e-6)
    else:
        assert expected - 1e-3 <= elapsed < expected + SLACK


class Ticker:
    """Ticks every ``pause`` seconds; honours ``shutdown`` with a goodbye unless told not to."""

    def __init__(self, *, honour: bool = True, pause: float = 0.01) -> None:
        self.shutdown = anyio.Event()
        self.honour = honour
        self.pause = pause
        self.sent = 0
        self.closed = False

    async def events(self) -> AsyncIterator[Any]:
        try:
            while not (self.honour and self.shutdown.is_set()):
                yield ServerSentEvent(str(self.sent), id=str(self.sent))
                self.sent += 1
                if not self.honour:
                    await anyio.sleep(self.pause)  # deaf: time must pass (MockClock)
                    continue
                with anyio.move_on_after(self.pause):
                    await self.shutdown.wait()
            yield ServerSentEvent("bye", event="goodbye")
        finally:
            self.closed = True


def farewell() -> ServerSentEvent:
    return ServerSentEvent("rotating", event="farewell")


class Recorder:
    """An ASGI ``send`` that records every message and can block or fail on one of them."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.block_from: int | None = None
        self.blocked = anyio.Event()
        self.fail_at: float | None = None
        #: Seconds the headers take to go out (a slow first write).
        self.start_delay = 0.0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and self.start_delay:
            await anyio.sleep(self.start_delay)
        if self.block_from is not None and len(self.messages) >= self.block_from:
            self.blocked.set()
            await anyio.sleep_forever()
        if self.fail_at is not None and anyio.current_time() >= self.fail_at:
            raise OSError("connection reset by peer")
        self.messages.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])

    @property
    def ended_cleanly(self) -> bool:
        return bool(self.messages) and self.messages[-1].get("more_body") is False


def response_with(ticker: Ticker, **kwargs: Any) -> EventSourceResponse:
    options: dict[str, Any] = {
        "shutdown_event": ticker.shutdown,
        "farewell_factory": farewell,
        "drain_retry": (1000, 3000),
        "drain_coordinator": DrainCoordinator(),
        "ping": 0,
    }
    options.update(kwargs)
    return EventSourceResponse(ticker.events(), **options)


# ------------------------------------------------------------------ the table


def test_a_rotation_is_one_arc_into_draining_and_nothing_else() -> None:
    """One row; no row from DRAINING (the lifetime is disarmed by any drain) and
    no late report (the watcher checks CLOSED and fires in one step)."""
    rows = [arc for arc in TRANSITIONS if arc.trigger is Trigger.LIFETIME_EXPIRED]
    assert [(a.source, a.target, a.close_reason) for a in rows] == [
        (State.STREAMING, State.DRAINING, None)
    ]
    assert Trigger.LIFETIME_EXPIRED not in LATE_REPORTS


# ------------------------------------------------------------------ the argument


@pytest.mark.parametrize(
    ("value", "bounds"),
    [
        (5, (5, 5)),
        (0.25, (0.25, 0.25)),
        ((1, 2), (1, 2)),
        ((1.5, 1.5), (1.5, 1.5)),
        (1e-9, (1e-9, 1e-9)),
        (1e300, (1e300, 1e300)),
        (None, None),
        (math.inf, None),
    ],
    ids=repr,
)
def test_accepted_values(value: Any, bounds: tuple[float, float] | None) -> None:
    assert check_lifetime_range("max_lifetime", value) == bounds
    response = EventSourceResponse(iter(()), max_lifetime=value)
    if bounds is None:
        assert response.lifetime is None
    else:
        assert response.lifetime is not None
        assert bounds[0] <= response.lifetime <= bounds[1]


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, ValueError, r"^max_lifetime must be > 0 seconds, got 0$"),
        (-1.5, ValueError, r"^max_lifetime must be > 0 seconds"),
        (math.nan, ValueError, r"^max_lifetime must be > 0 seconds, got nan$"),
        (-math.inf, ValueError, r"^max_lifetime must be > 0 seconds"),
        (True, TypeError, r"^max_lifetime must be seconds as a number or a \(min, max\) tuple"),
        ("600", TypeError, r"^max_lifetime must be seconds"),
        ([1, 2], TypeError, r"^max_lifetime must be seconds"),
        ((1,), TypeError, r"^max_lifetime must be seconds as a number or a \(min, max\) tuple"),
        ((1, 2, 3), TypeError, r"^max_lifetime must be seconds"),
        ((2, 1), ValueError, r"^max_lifetime must satisfy min <= max, got \(2, 1\)$"),
        ((0, 1), ValueError, r"^max_lifetime\[0\] must be > 0 seconds"),
        ((1, math.inf), ValueError, r"^max_lifetime\[1\] must be a finite number of seconds"),
        ((math.inf, math.inf), ValueError, r"^max_lifetime\[0\] must be a finite number"),
        ((math.nan, 1), ValueError, r"^max_lifetime\[0\] must be > 0 seconds, got nan$"),
        ((False, 1), TypeError, r"^max_lifetime\[0\] must be a number of seconds, got bool$"),
        ((1, "2"), TypeError, r"^max_lifetime\[1\] must be a number of seconds, got str$"),
    ],
    ids=repr,
)
def test_refused_values_name_max_lifetime(value: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        EventSourceResponse(iter(()), max_lifetime=value)


def test_each_response_draws_its_own_lifetime_within_the_range() -> None:
    drawn = [EventSourceResponse(iter(()), max_lifetime=(10, 20)).lifetime for _ in range(200)]
    assert all(d is not None and 10 <= d <= 20 for d in drawn)
    assert len(set(drawn)) > 150, "drawn per response, not once"
    assert min(d for d in drawn if d is not None) < 12
    assert max(d for d in drawn if d is not None) > 18


def test_the_draw_is_uniform_repeatable_and_clamped() -> None:
    first = [draw_lifetime((1.0, 2.0), random.Random(7).uniform) for _ in range(3)]
    again = [draw_lifetime((1.0, 2.0), random.Random(7).uniform) for _ in range(3)]
    assert first == again
    assert draw_lifetime((3.0, 3.0), lambda a, b: pytest.fail("no draw for min == max")) == 3.0
    # random.uniform computes a + (b - a) * random(), which may round past b.
    assert draw_lifetime((1.0, 2.0), lambda a, b: math.nextafter(b, math.inf)) == 2.0
    assert draw_lifetime((1.0, 2.0), lambda a, b: math.nextafter(a, -math.inf)) == 1.0


def test_random_seed_makes_a_response_s_draw_repeatable() -> None:
    random.seed(1234)
    first = EventSourceResponse(iter(()), max_lifetime=(1, 100)).lifetime
    random.seed(1234)
    assert EventSourceResponse(iter(()), max_lifetime=(1, 100)).lifetime == first
    random.seed()


# ------------------------------------------------------------------ the rotation


@pytest.mark.parametrize("ping", [0, 0.02], ids=["no-pings", "pings"])
async def test_the_stream_drains_at_its_drawn_lifetime(anyio_backend: Any, ping: float) -> None:
    """With pings off and no send timeout nothing else wakes the watcher: the
    lifetime alone must bring its wait forward when the headers go out."""
    ticker = Ticker()
    response = response_with(ticker, max_lifetime=(0.2, 0.3), ping=ping, shutdown_grace_period=5)
    lifetime = response.lifetime
    assert lifetime is not None
    assert 0.2 <= lifetime <= 0.3
    with anyio.fail_after(10):
        async with stream(response) as sse:
            events = [e async for e in sse.events()]
            await sse.wait_finished()
    assert [t.trigger for t in response.history] == [
        Trigger.STARTED,
        Trigger.LIFETIME_EXPIRED,
        Trigger.SOURCE_EXHAUSTED,
    ]
    assert_at(
        anyio_backend, at(response, Trigger.LIFETIME_EXPIRED) - response.history[0].at, lifetime
    )
    assert response.history[1].reason == f"its lifetime of {lifetime:.6g} s ran out"
    assert ticker.shutdown.is_set()
    assert response.close_reason is CloseReason.DRAINED
    # The source's own goodbye, then the farewell with its jittered retry, then a clean end.
    assert [e.event for e in events[-2:]] == ["goodbye", "farewell"]
    retry = events[-1].retry
    assert retry is not None
    assert 1000 <= retry <= 3000
    assert [e.data for e in events[:-2]] == [str(n) for n in range(ticker.sent)]
    assert sse.complete
    assert sse.violations == []
    assert ticker.closed
    stats = response.statistics()
    assert stats.drained_by is Trigger.LIFETIME_EXPIRED
    assert stats.events_sent == len(events)


@pytest.mark.parametrize("ping", [0, 5], ids=["no-pings", "pings-later"])
async def test_a_watcher_already_waiting_before_the_headers_sees_the_lifetime(
    anyio_backend: Any, ping: float
) -> None:
    """The watcher starts before the headers and waits in ``receive()`` with a
    deadline computed in OPEN, when there was no lifetime yet (none at all
    with pings off and no send timeout): arming the lifetime at STARTED must
    bring that wait forward, or the stream rotates late or never."""
    ticker = Ticker()
    response = response_with(ticker, max_lifetime=0.1, shutdown_grace_period=1, ping=ping)
    recorder = Recorder()
    recorder.start_delay = 0.05
    with anyio.fail_after(10):
        await response(http_scope(), never_receive, recorder.send)
    assert [t.trigger for t in response.history] == [
        Trigger.STARTED,
        Trigger.LIFETIME_EXPIRED,
        Trigger.SOURCE_EXHAUSTED,
    ]
    assert_at(anyio_backend, at(response, Trigger.LIFETIME_EXPIRED) - response.history[0].at, 0.1)
    assert recorder.ended_cleanly


async def test_a_source_that_ignores_the_rotation_is_cut_at_the_grace(anyio_backend: Any) -> None:
    ticker = Ticker(honour=False)
    response = response_with(ticker, max_lifetime=0.1, shutdown_grace_period=0.2)
    with anyio.fail_after(10):
        async with stream(response) as sse:
            events = [e async for e in sse.events()]
            await sse.wait_finished()
    assert [t.trigger for t in response.history] == [
        Trigger.STARTED,
        Trigger.LIFETIME_EXPIRED,
        Trigger.GRACE_EXPIRED,
    ]
    assert response.close_reason is CloseReason.SHUTDOWN_FORCED
    started = response.history[0].at
    assert_at(anyio_backend, at(response, Trigger.LIFETIME_EXPIRED) - started, 0.1)
    assert_at(anyio_backend, at(response, Trigger.GRACE_EXPIRED) - started, 0.3)
    assert events[-1].event == "farewell"
    assert "goodbye" not in [e.event for e in events]
    assert sse.complete, "a forced rotation still ends the body cleanly"
    assert ticker.closed


async def test_the_default_grace_cuts_a_rotation_at_once() -> None:
    """``shutdown_grace_period`` defaults to 0: a source that waits on nothing
    but its next event is cut at its next await, and the farewell still goes out."""

    async def endless() -> AsyncIterator[str]:
        while True:
            yield "tick"
            await anyio.sleep(0.01)

    response = EventSourceResponse(
        endless(), max_lifetime=0.05, farewell_factory=farewell, drain_retry=500, ping=0
    )
    with anyio.fail_after(10):
        async with stream(response) as sse:
            events = [e async for e in sse.events()]
    assert response.close_reason is CloseReason.SHUTDOWN_FORCED
    assert (events[-1].event, events[-1].retry) == ("farewell", 500)
    assert sse.complete


async def test_a_shutdown_during_the_rotation_is_a_self_loop(anyio_backend: Any) -> None:
    ticker = Ticker(honour=False)
    coordinator = DrainCoordinator()
    response = response_with(
        ticker, max_lifetime=0.1, shutdown_grace_period=0.3, drain_coordinator=coordinator
    )
    with anyio.fail_after(10):
        async with stream(response) as sse:
            await response.wait_until(State.DRAINING)
            await anyio.sleep(0.1)
            coordinator.request_drain("deploy")
            await sse.wait_finished()
    assert [t.trigger for t in response.history] == [
        Trigger.STARTED,
        Trigger.LIFETIME_EXPIRED,
        Trigger.GRACE_EXPIRED,
    ]
    assert response._machine.count(Trigger.SHUTDOWN_REQUESTED) == 1
    # The shutdown did not move the grace: it ends lifetime + grace after the start.
    assert_at(anyio_backend, at(response, Trigger.GRACE_EXPIRED) - response.history[0].at, 0.4)
    assert response.statistics().drained_by is Trigger.LIFETIME_EXPIRED
    assert sse.complete


async def test_a_shutdown_first_disarms_the_lifetime(anyio_backend: Any) -> None:
    """Once draining, the lifetime is not armed: it runs out during the grace
    and nothing fires (a LIFETIME_EXPIRED in DRAINING would be a TransitionError)."""
    ticker = Ticker(honour=False)
    coordinator = DrainCoordinator()
    response = response_with(
        ticker, max_lifetime=0.1, shutdown_grace_period=0.5, drain_coordinator=coordinator
    )
    with anyio.fail_after(10):
        async with stream(response) as sse:
            await sse.next_event()
            coordinator.request_drain("deploy")
            await sse.wait_finished()
    assert [t.trigger for t in response.history] == [
        Trigger.STARTED,
        Trigger.SHUTDOWN_REQUESTED,
        Trigger.GRACE_EXPIRED,
    ]
    drained_at = at(response, Trigger.SHUTDOWN_REQUESTED)
    assert_at(anyio_backend, at(response, Trigger.GRACE_EXPIRED) - drained_at, 0.5)
    assert response.statistics().drained_by is Trigger.SHUTDOWN_REQUESTED
    assert sse.complete


async def test_a_drain_requested_before_the_stream_started_leaves_no_lifetime() -> None:
    """Registering with a coordinator that already drains drains at once, after
    the lifetime was armed: the drain disarms it."""
    ticker = Ticker()
    coordinator = DrainCoordinator()
    coordinator.request_drain("already shutting down")
    response = response_with(
        ticker, max_lifetime=0.05, shutdown_grace_period=1, drain_coordinator=coordinator
    )
    with anyio.fail_after(10):
        async with stream(response) as sse:
            await sse.wait_finished()
    assert [t.trigger for t in response.history] == [
        Trigger.STARTED,
        Trigger.SHUTDOWN_REQUESTED,
        Trigger.SOURCE_EXHAUSTED,
    ]
    assert response.close_reason is CloseReason.DRAINED


async def test_the_lifetime_runs_out_while_a_send_is_blocked(anyio_backend: Any) -> None:
    """A client that stopped reading: the rotation still begins (the source is
    told), the grace cuts the blocked send, the farewell cannot go out and is
    dropped (no send_timeout), nothing more is sent, and the source is closed."""
    ticker = Ticker(honour=False)
    response = response_with(ticker, max_lifetime=0.1, shutdown_grace_period=0.2)
    recorder = Recorder()
    recorder.block_from = 3  # the headers and two events, then the client stalls
    with anyio.fail_after(10):
        await response(http_scope(), never_receive, recorder.send)
    assert recorder.blocked.is_set()
    assert [t.trigger for t in response.history] == [
        Trigger.STARTED,
        Trigger.LIFETIME_EXPIRED,
        Trigger.GRACE_EXPIRED,
    ]
    started = response.history[0].at
    assert_at(anyio_backend, at(response, Trigger.LIFETIME_EXPIRED) - started, 0.1)
    # The grace, then the farewell's 1 s bound (FAREWELL_SEND_BOUND) before giving up.
    assert_at(anyio_backend, at(response, Trigger.GRACE_EXPIRED) - started, 1.3)
    assert ticker.shutdown.is_set()
    assert response.close_reason is CloseReason.SHUTDOWN_FORCED
    assert len(recorder.messages) == 3
    assert not recorder.ended_cleanly
    assert ticker.closed


async def test_a_send_overdue_when_the_lifetime_runs_out_is_a_send_timeout() -> None:
    """An overdue send closes the connection; the lifetime found due at the same
    look does not turn that into a drain."""
    ticker = Ticker(honour=False)
    response = response_with(ticker, max_lifetime=0.1, send_timeout=0.05)
    recorder = Recorder()
    recorder.block_from = 2
    with anyio.fail_after(10), pytest.raises(TimeoutError):
        await response(http_scope(), never_receive, recorder.send)
    assert [t.trigger for t in response.history] == [Trigger.STARTED, Trigger.SEND_TIMED_OUT]


async def test_the_client_leaving_during_the_rotation_ends_it_there() -> None:
    ticker = Ticker(honour=False)
    response = response_with(ticker, max_lifetime=0.05, shutdown_grace_period=5)
    with anyio.fail_after(10):
        async with stream(response) as sse:
            await response.wait_until(State.DRAINING)
            await sse.disconnect()
            await sse.wait_finished()
    assert [t.trigger for t in response.history] == [
        Trigger.STARTED,
        Trigger.LIFETIME_EXPIRED,
        Trigger.DISCONNECTED,
    ]
    assert response.close_reason is CloseReason.CLIENT_DISCONNECTED
    assert b"farewell" not in sse.body, "nothing is said to a client that left"
    assert not sse.complete
    assert sse.violations == []
    assert ticker.closed


async def test_a_client_gone_before_the_lifetime_runs_out_is_not_rotated() -> None:
    ticker = Ticker()
    response = response_with(ticker, max_lifetime=0.2, shutdown_grace_period=5)
    with anyio.fail_after(10):
        async with stream(response) as sse:
            await sse.next_event()
            await sse.disconnect()
            await sse.wait_finished()
        await anyio.sleep(0.3)  # past the lifetime: nothing may fire on the closed machine
    assert [t.trigger for t in response.history] == [Trigger.STARTED, Trigger.DISCONNECTED]
    assert not ticker.shutdown.is_set()
    assert response.statistics().drained_by is None


RACES = ["source ends", "client sends http.disconnect", "send raises OSError"]


@pytest.mark.parametrize("other", RACES)
async def test_the_lifetime_and_another_ending_at_the_same_instant(other: str) -> None:
    """Whichever the loop runs first wins; either way the path is legal, nothing
    is raised, nothing is said after the client left, and the source is closed."""
    lifetime = 0.1
    shutdown = anyio.Event()
    closed = anyio.Event()

    async def source() -> AsyncIterator[str]:
        try:
            yield "first"
            if other == "source ends":
                await anyio.sleep(lifetime)
                return
            while True:
                with anyio.move_on_after(0.01):
                    await shutdown.wait()
                yield "tick"
        finally:
            closed.set()

    recorder = Recorder()
    disconnect_sent_at: list[int] = []

    async def receive() -> Message:
        if other != "client sends http.disconnect":
            return await never_receive()
        await anyio.sleep(lifetime)
        disconnect_sent_at.append(len(recorder.messages))
        return {"type": "http.disconnect"}

    response = EventSourceResponse(
        source(),
        shutdown_event=shutdown,
        farewell_factory=farewell,
        drain_coordinator=DrainCoordinator(),
        max_lifetime=lifetime,
        ping=0,
    )
    if other == "send raises OSError":
        recorder.fail_at = 0.0  # set below, once the loop's clock can be read
    with anyio.fail_after(10):
        if other == "send raises OSError":
            recorder.fail_at = anyio.current_time() + lifetime
        await response(http_scope(), receive, recorder.send)
    assert response.state is State.CLOSED
    assert_legal(response)
    assert closed.is_set()
    reason = response.close_reason
    if other == "source ends":
        assert reason in {CloseReason.COMPLETED, CloseReason.DRAINED}
    elif other == "client sends http.disconnect":
        assert reason in {CloseReason.CLIENT_DISCONNECTED, CloseReason.SHUTDOWN_FORCED}
        if reason is CloseReason.CLIENT_DISCONNECTED:
            assert disconnect_sent_at == [len(recorder.messages)], "nothing after the disconnect"
    else:
        assert reason in {CloseReason.CLIENT_DISCONNECTED, CloseReason.SHUTDOWN_FORCED}
    if reason in (CloseReason.DRAINED, CloseReason.SHUTDOWN_FORCED):
        assert response.history[1].trigger is Trigger.LIFETIME_EXPIRED


# ------------------------------------------------------------------ extremes


async def test_a_tiny_lifetime_rotates_right_after_the_headers() -> None:
    ticker = Ticker()
    response = response_with(ticker, max_lifetime=1e-9, shutdown_grace_period=5)
    with anyio.fail_after(10):
        async with stream(response) as sse:
            events = [e async for e in sse.events()]
            await sse.wait_finished()
    assert [t.trigger for t in response.history] == [
        Trigger.STARTED,
        Trigger.LIFETIME_EXPIRED,
        Trigger.SOURCE_EXHAUSTED,
    ]
    assert events[-1].event == "farewell"
    assert sse.complete


@pytest.mark.parametrize("lifetime", [1e6, 1e300, sys.float_info.max, math.inf], ids=repr)
@pytest.mark.parametrize("ping", [0, 0.01], ids=["no-pings", "pings"])
async def test_a_huge_lifetime_never_gets_in_the_way(lifetime: float, ping: float) -> None:
    async def three() -> AsyncIterator[str]:
        for n in range(3):
            yield str(n)
            await anyio.sleep(0.03)

    response = EventSourceResponse(three(), max_lifetime=lifetime, ping=ping)
    with anyio.fail_after(10):
        async with stream(response) as sse:
            events = [e.data async for e in sse.events()]
    assert events == ["0", "1", "2"]
    assert response.close_reason is CloseReason.COMPLETED
    assert sse.complete
    assert (response.lifetime is None) == math.isinf(lifetime)


async def test_a_range_with_min_equal_to_max_is_exact(anyio_backend: Any) -> None:
    ticker = Ticker()
    response = response_with(ticker, max_lifetime=(0.15, 0.15), shutdown_grace_period=1)
    assert response.lifetime == 0.15
    with anyio.fail_after(10):
        async with stream(response) as sse:
            await sse.wait_finished()
    assert_at(anyio_backend, at(response, Trigger.LIFETIME_EXPIRED) - response.history[0].at, 0.15)


async def test_streams_opened_together_rotate_spread_over_the_range(anyio_backend: Any) -> None:
    """The point of a range: streams opened at once do not all reconnect at once."""
    tickers = [Ticker() for _ in range(8)]
    responses = [
        response_with(ticker, max_lifetime=(0.2, 0.6), shutdown_grace_period=1)
        for ticker in tickers
    ]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            for response in responses:
                tasks.start_soon(response, http_scope(), never_receive, Recorder().send)
    rotated_after = [at(r, Trigger.LIFETIME_EXPIRED) - r.history[0].at for r in responses]
    for response, elapsed in zip(responses, rotated_after, strict=True):
        assert response.lifetime is not None
        assert_at(anyio_backend, elapsed, response.lifetime)
        assert response.close_reason is CloseReason.DRAINED
    assert len({round(e, 3) for e in rotated_after}) > 1
