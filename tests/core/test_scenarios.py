"""Whole connections under random behaviour: the invariants hold on every path.

Hypothesis draws a source script (yields, pauses, a raise, a blocking call; sync
or async; cooperative on shutdown or not), a client that may stall, a disconnect
time, an optional send timeout, an optional drain with a grace and an optional
lifetime (a rotation drains the same way).  Each example
runs in a fresh event loop (trio with an autojumping MockClock, so its timings
are exact and cost nothing; asyncio on the real clock with millisecond delays).
After each run:

* the connection is CLOSED and its history is a path through the table;
* the close reason is one that what happened allows, and the only one when a
  single cause was possible;
* the source's ``finally`` ran (if the source ever started);
* no task is left beyond those the test itself started;
* the client saw no message after the final empty body or after it left, and
  the final empty body arrived exactly when the close reason is a clean one.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.lowlevel
import pytest
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

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
from sse_sm._state import CLEAN_END_REASONS
from sse_sm.testing import SSEStream, parse_event_stream, stream
from tests._support import fresh_sync_pool

LEGAL = {(arc.source, arc.trigger): arc for arc in TRANSITIONS}

Step = tuple[Literal["yield", "pause", "raise", "fall_behind", "block"], float]


class ScriptError(Exception):
    """What a scripted source raises."""


@dataclass
class Scenario:
    sync_source: bool
    steps: list[Step]
    endless: bool
    cooperative: bool
    stall_after: int | None
    send_timeout: float | None
    disconnect_at: float
    drain_at: float | None
    grace: float
    ping: float
    #: ``farewell_factory`` and ``drain_retry`` are set.
    farewell: bool
    #: ``max_lifetime``, in units.
    lifetime: float | None = None


@dataclass
class Log:
    """What the source and the test did, written as it happens."""

    started: bool = False
    finally_ran: threading.Event = field(default_factory=threading.Event)
    raised: bool = False
    fell_behind: bool = False
    exhausted: bool = False
    drain_requested_at: float | None = None
    disconnect_requested_at: float | None = None


def source_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "sse_sm sync source"}


# Delays in units; one unit is 1 ms on asyncio and 1 s of mock time on trio.
delays = st.sampled_from([0.0, 0.0, 1.0, 3.0, 10.0])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("yield"), st.just(0.0)),
        st.tuples(st.just("pause"), delays),
        st.tuples(st.just("block"), delays),
    ),
    max_size=12,
).flatmap(
    lambda body: st.one_of(
        st.just(body), st.just([*body, ("raise", 0.0)]), st.just([*body, ("fall_behind", 0.0)])
    )
)

scenarios = st.builds(
    Scenario,
    sync_source=st.booleans(),
    steps=steps,
    endless=st.booleans(),
    cooperative=st.booleans(),
    stall_after=st.one_of(st.none(), st.integers(0, 3)),
    send_timeout=st.one_of(st.none(), st.sampled_from([2.0, 5.0])),
    disconnect_at=st.sampled_from([0.0, 2.0, 8.0, 30.0, 80.0]),
    drain_at=st.one_of(st.none(), st.sampled_from([0.0, 2.0, 8.0, 30.0])),
    grace=st.sampled_from([0.0, 3.0, 20.0]),
    ping=st.sampled_from([0.0, 2.0]),
    farewell=st.booleans(),
    lifetime=st.one_of(st.none(), st.sampled_from([0.5, 2.0, 8.0, 30.0])),
)


class ScriptedSource:
    """Plays a scenario's steps as an async or a sync generator."""

    def __init__(self, scenario: Scenario, log: Log, shutdown: anyio.Event, unit: float) -> None:
        self.scenario = scenario
        self.log = log
        self.shutdown = shutdown
        self.unit = unit

    def _items(self) -> Iterator[tuple[str, float]]:
        n = 0
        while True:
            for kind, delay in self.scenario.steps:
                yield kind, delay
                n += 1
            if not self.scenario.endless:
                return
            # An endless source still yields and awaits every round: a sync
            # next() that never returns can be abandoned but never closed.
            yield "yield", 0.0
            yield "pause", 1.0

    def _fail(self, kind: str, n: int) -> None:
        if kind == "fall_behind":
            self.log.fell_behind = True
            raise SlowConsumerError(f"step {n}")
        self.log.raised = True
        raise ScriptError(f"step {n}")

    async def run_async(self) -> AsyncIterator[Any]:
        self.log.started = True
        try:
            for n, (kind, delay) in enumerate(self._items()):
                if self.scenario.cooperative and self.shutdown.is_set():
                    yield {"data": "bye", "event": "farewell"}
                    self.log.exhausted = True
                    return
                if kind == "yield":
                    yield {"data": f"event {n}", "id": str(n)}
                elif kind in ("pause", "block"):
                    await anyio.sleep(delay * self.unit)
                else:
                    self._fail(kind, n)
            self.log.exhausted = True
        finally:
            self.log.finally_ran.set()

    def run_sync(self) -> Iterator[Any]:
        self.log.started = True
        try:
            for n, (kind, delay) in enumerate(self._items()):
                if self.scenario.cooperative and self.shutdown.is_set():
                    yield {"data": "bye", "event": "farewell"}
                    self.log.exhausted = True
                    return
                if kind == "yield":
                    yield {"data": f"event {n}", "id": str(n)}
                elif kind in ("pause", "block"):
                    # A blocking call in the worker thread: real time, always short.
                    time.sleep(min(delay, 3.0) / 1000)
                else:
                    self._fail(kind, n)
            self.log.exhausted = True
        finally:
            self.log.finally_ran.set()


@dataclass
class Outcome:
    response: EventSourceResponse
    sse: SSEStream
    log: Log
    leftover_tasks: int
    #: Sync-source worker threads this run started that are still alive.
    new_threads: set[threading.Thread]
    closed_at: float
    #: Seconds of the longest stall of the whole event loop seen by a probe
    #: (0 on a virtual clock, where the machine cannot stall anything).
    longest_stall: float = 0.0
    #: Seconds per scenario time unit.
    unit: float = 1.0


#: Seconds between two looks at the loop's lateness, on a real clock.
STALL_PROBE = 0.0002


async def probe_stalls(longest: list[float]) -> None:
    """Record how late the loop wakes a sleeper: a stall of the whole machine.

    On asyncio the scenarios run on the real clock at a thousandth of a
    second per unit, so a send timeout is a few milliseconds; a garbage
    collection of a large heap or another process holding the core can
    stall the loop for that long with a send in flight, and the watcher then
    rightly finds the send overdue.  The probe tells such a run apart.
    """
    while True:
        expected = anyio.current_time() + STALL_PROBE
        await anyio.sleep(STALL_PROBE)
        longest[0] = max(longest[0], anyio.current_time() - expected)


async def play(scenario: Scenario, unit: float, *, real_clock: bool = False) -> Outcome:
    baseline = len(anyio.get_running_tasks())
    threads_before = source_threads()
    log = Log()
    coordinator = DrainCoordinator()
    shutdown = anyio.Event()
    source = ScriptedSource(scenario, log, shutdown, unit)
    responses: list[EventSourceResponse] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        content = source.run_sync() if scenario.sync_source else source.run_async()
        response = EventSourceResponse(
            content,
            ping=scenario.ping * unit,
            send_timeout=None if scenario.send_timeout is None else scenario.send_timeout * unit,
            shutdown_event=shutdown,
            shutdown_grace_period=scenario.grace * unit,
            drain_coordinator=coordinator,
            cleanup_timeout=5,
            farewell_factory=(lambda: ServerSentEvent("so long", event="so_long"))
            if scenario.farewell
            else None,
            drain_retry=(10, 20) if scenario.farewell else None,
            max_lifetime=None if scenario.lifetime is None else scenario.lifetime * unit,
        )
        responses.append(response)
        await response(scope, receive, send)

    async def read(sse: SSEStream) -> None:
        count = 0
        async for _ in sse.items():
            count += 1
            if scenario.stall_after is not None and count >= scenario.stall_after:
                await anyio.sleep_forever()  # the reader stops reading

    async def drain_later() -> None:
        assert scenario.drain_at is not None
        await anyio.sleep(scenario.drain_at * unit)
        log.drain_requested_at = anyio.current_time()
        coordinator.request_drain("scenario")

    buffered = None if scenario.stall_after is None else 1
    closed_at = 0.0
    async with (
        stream(
            app, max_buffered_messages=buffered, raise_app_exceptions=False, finish_timeout=10
        ) as sse,
        anyio.create_task_group() as helpers,
    ):
        helpers.start_soon(read, sse)
        longest_stall = [0.0]
        if real_clock:
            helpers.start_soon(probe_stalls, longest_stall)
        if scenario.drain_at is not None:
            helpers.start_soon(drain_later)
        with anyio.move_on_after(scenario.disconnect_at * unit):
            await sse.wait_finished()
        if not sse.finished:
            log.disconnect_requested_at = anyio.current_time()
            await sse.disconnect()
        await sse.wait_finished()
        closed_at = anyio.current_time()
        helpers.cancel_scope.cancel()
    await anyio.lowlevel.checkpoint()
    leftover = len(anyio.get_running_tasks()) - baseline
    (response,) = responses
    return Outcome(
        response,
        sse,
        log,
        leftover,
        source_threads() - threads_before,
        closed_at,
        longest_stall[0],
        unit,
    )


def allowed_reasons(scenario: Scenario, outcome: Outcome) -> set[CloseReason]:
    """The close reasons that what happened in this run can explain."""
    log = outcome.log
    history = outcome.response.history
    drained = any(t.target is State.DRAINING for t in history)
    allowed: set[CloseReason] = set()
    if log.exhausted and not drained:
        allowed.add(CloseReason.COMPLETED)
    if log.exhausted and drained:
        allowed.add(CloseReason.DRAINED)
    if drained:
        allowed.add(CloseReason.SHUTDOWN_FORCED)
    if log.disconnect_requested_at is not None:
        allowed.add(CloseReason.CLIENT_DISCONNECTED)
    if scenario.send_timeout is not None and (
        scenario.stall_after is not None
        # The machine stalled the loop for most of the send timeout (asyncio
        # wakes sleepers up to 1 ms late anyway, epoll counting milliseconds).
        or outcome.longest_stall >= scenario.send_timeout * outcome.unit * 0.75
    ):
        allowed.add(CloseReason.SEND_TIMEOUT)
    if log.raised:
        allowed.add(CloseReason.ERROR)
    if log.fell_behind:
        allowed.add(CloseReason.SLOW_CONSUMER)
    return allowed


def check(scenario: Scenario, outcome: Outcome) -> None:
    response, sse, log = outcome.response, outcome.sse, outcome.log
    assert response.state is State.CLOSED
    state = State.OPEN
    for record in response.history:
        assert record.source is state
        assert LEGAL[(record.source, record.trigger)].target is record.target
        state = record.target
    reason = response.close_reason
    assert reason is not None
    assert reason in allowed_reasons(scenario, outcome), (reason, log)
    for record in response.history:
        if record.trigger is Trigger.LIFETIME_EXPIRED:
            assert scenario.lifetime is not None
            lived = record.at - response.history[0].at
            assert lived >= scenario.lifetime * outcome.unit * (1 - 1e-9), (lived, scenario)
        if record.trigger is Trigger.SHUTDOWN_REQUESTED:
            assert log.drain_requested_at is not None
    if (
        scenario.drain_at is None
        and scenario.lifetime is None
        and scenario.stall_after is None
        and log.disconnect_requested_at is None
    ):
        assert reason is (
            CloseReason.ERROR
            if log.raised
            else CloseReason.SLOW_CONSUMER
            if log.fell_behind
            else CloseReason.COMPLETED
        )
    assert sse.violations == []
    if scenario.stall_after is None:
        assert sse.complete == (reason in CLEAN_END_REASONS)
    elif reason not in CLEAN_END_REASONS:
        assert not sse.complete
    if reason is CloseReason.ERROR:
        assert isinstance(sse.app_exception, ScriptError)
    elif reason is CloseReason.SEND_TIMEOUT:
        assert isinstance(sse.app_exception, SendTimeoutError)
    else:
        assert sse.app_exception is None
    events = parse_event_stream(sse.body)
    farewells = [e for e in events if e.event == "so_long"]
    drained = any(t.target is State.DRAINING for t in response.history)
    assert len(farewells) <= 1
    if not drained:
        assert farewells == [], "a farewell only ends a drain"
    if (
        scenario.farewell
        and scenario.stall_after is None
        and reason in (CloseReason.DRAINED, CloseReason.SHUTDOWN_FORCED)
    ):
        # A drained or forced stream says its farewell last, with the retry.
        assert events[-1].event == "so_long"
        retry = events[-1].retry
        assert retry is not None
        assert 10 <= retry <= 20
    assert outcome.leftover_tasks == 0
    # A sync source's daemon workers end once the source is closed and they
    # are idle (a blocked next() first returns; here every block is a few
    # milliseconds, and the pool keeps no idle thread).
    for thread in outcome.new_threads:
        thread.join(timeout=5)
        assert not thread.is_alive(), "a sync source's worker thread was left running"
    # A generator that never started has no finally to run.  A sync source
    # blocked in its worker thread closes itself when the call returns.
    if log.started:
        assert log.finally_ran.wait(timeout=5), "the source's finally never ran"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios)
def test_every_connection_ends_closed_clean_and_leak_free(backend: str, scenario: Scenario) -> None:
    outcome: Outcome
    # A pool of its own whose idle threads end at once, so each run's
    # threads can be seen to end.
    with fresh_sync_pool(idle_seconds=0.0):
        if backend == "trio":
            clock = trio.testing.MockClock(autojump_threshold=0)
            outcome = anyio.run(
                play, scenario, 1.0, backend="trio", backend_options={"clock": clock}
            )
        else:
            outcome = anyio.run(
                functools.partial(play, real_clock=True), scenario, 0.001, backend="asyncio"
            )
    check(scenario, outcome)
