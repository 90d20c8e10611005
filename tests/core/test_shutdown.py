"""The drain protocol and automatic shutdown detection, in process, on both backends.

The same behaviour against real uvicorn and hypercorn processes is in
``test_real_servers.py``; here each piece is pinned down on its own:

* the farewell and the jittered ``retry:`` on each way a drain can end
  (within the grace, past it, by an outside cancellation) and their absence
  on the other close reasons;
* chaining the server's signal handler: a signal drains the streams of the
  loop that received it, then reaches the server's own handler; ``SIG_DFL``
  and ``SIG_IGN`` are left alone; opting out per app works;
* loop scoping: a drain of one loop never reaches a stream on another;
* the legacy ``AppStatus`` shim.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import AsyncIterator, Iterator
from types import FrameType
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from sse_sm import (
    CloseReason,
    DrainCoordinator,
    EventSourceResponse,
    SendTimeoutError,
    ServerSentEvent,
    State,
    Trigger,
    drain_coordinator_for,
)
from sse_sm._server_shutdown import (
    ChainedSignalHandler,
    follow_server_shutdown,
    hypercorn_worker_shutdown_event,
)
from sse_sm.sse import AppStatus
from sse_sm.testing import stream
from tests._support import fresh_sync_pool, http_scope, never_receive


class Ticker:
    """A source that ticks until asked to stop, then (optionally) says goodbye itself."""

    def __init__(self, *, goodbye: str | None = None, ignore_shutdown: bool = False) -> None:
        self.shutdown = anyio.Event()
        self.goodbye = goodbye
        self.ignore_shutdown = ignore_shutdown
        self.closed = False
        self.started = anyio.Event()

    async def events(self) -> AsyncIterator[Any]:
        try:
            n = 0
            while self.ignore_shutdown or not self.shutdown.is_set():
                yield ServerSentEvent(str(n), id=str(n))
                self.started.set()
                n += 1
                with anyio.move_on_after(0.01):
                    await self.shutdown.wait()
            if self.goodbye is not None:
                yield ServerSentEvent(self.goodbye, event="goodbye")
        finally:
            self.closed = True


def farewell() -> ServerSentEvent:
    return ServerSentEvent("server restarting", event="farewell")


def app_serving(make: Any) -> tuple[Starlette, list[EventSourceResponse]]:
    """A Starlette app whose ``/events`` returns ``make()``; keeps the responses."""
    responses: list[EventSourceResponse] = []

    async def events(request: Request) -> EventSourceResponse:
        response: EventSourceResponse = make()
        responses.append(response)
        return response

    return Starlette(routes=[Route("/events", events)]), responses


async def wait_until(predicate: Any) -> None:
    while not predicate():  # noqa: ASYNC110 - a thread's progress has no event on the loop
        await anyio.sleep(0.002)


# ------------------------------------------------------------------ farewell


async def test_a_drain_within_the_grace_ends_with_retry_then_farewell() -> None:
    ticker = Ticker(goodbye="bye from the source")
    app, responses = app_serving(
        lambda: EventSourceResponse(
            ticker.events(),
            shutdown_event=ticker.shutdown,
            shutdown_grace_period=5,
            farewell_factory=farewell,
            drain_retry=(1000, 3000),
        )
    )
    with anyio.fail_after(5):
        async with stream(app, "/events") as sse:
            events = [await sse.next_event()]
            sse.request_shutdown("deploy")
            events += [e async for e in sse.events()]
            await sse.wait_finished()
    assert [e.event for e in events[-2:]] == ["goodbye", "farewell"]
    assert events[-1].data == "server restarting"
    retry = events[-1].retry
    assert retry is not None
    assert 1000 <= retry <= 3000
    assert sse.complete
    response = responses[0]
    assert [t.trigger for t in response.history] == [
        Trigger.STARTED,
        Trigger.SHUTDOWN_REQUESTED,
        Trigger.SOURCE_EXHAUSTED,
    ]
    assert response.close_reason is CloseReason.DRAINED
    assert response.statistics().events_sent == len(events)
    assert ticker.closed
    assert sse.violations == []


async def test_a_forced_drain_still_says_farewell_and_ends_cleanly() -> None:
    ticker = Ticker(ignore_shutdown=True)  # the sse-starlette user: no shutdown_event
    app, responses = app_serving(
        lambda: EventSourceResponse(ticker.events(), farewell_factory=farewell, drain_retry=2000)
    )
    with anyio.fail_after(5):
        async with stream(app, "/events") as sse:
            await sse.next_event()
            sse.request_shutdown()
            events = [e async for e in sse.events()]
            await sse.wait_finished()
    assert events[-1].event == "farewell"
    assert events[-1].retry == 2000
    assert sse.complete
    assert responses[0].close_reason is CloseReason.SHUTDOWN_FORCED
    assert ticker.closed


async def test_an_outside_cancellation_says_farewell_before_the_final_body() -> None:
    ticker = Ticker(ignore_shutdown=True)
    response = EventSourceResponse(ticker.events(), ping=0, farewell_factory=farewell)
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, send)
            await ticker.started.wait()
            tasks.cancel_scope.cancel()
    assert response.close_reason is CloseReason.CANCELLED
    assert sent[-2]["body"] == b"event: farewell\r\ndata: server restarting\r\n\r\n"
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert ticker.closed


@pytest.mark.parametrize("ending", ["completed", "client_disconnected"])
async def test_no_farewell_when_the_stream_ends_for_another_reason(ending: str) -> None:
    async def three() -> AsyncIterator[str]:
        for n in range(3):
            yield str(n)
        if ending == "client_disconnected":
            await anyio.sleep_forever()

    app, responses = app_serving(
        lambda: EventSourceResponse(three(), farewell_factory=farewell, drain_retry=1000)
    )
    with anyio.fail_after(5):
        async with stream(app, "/events") as sse:
            events = [await sse.next_event() for _ in range(3)]
            if ending == "client_disconnected":
                await sse.disconnect()
            await sse.wait_finished()
    assert [e.data for e in events] == ["0", "1", "2"]
    assert b"farewell" not in sse.body
    assert b"retry" not in sse.body
    assert responses[0].close_reason is CloseReason(ending)


async def test_a_farewell_factory_that_raises_closes_with_error() -> None:
    def broken() -> ServerSentEvent:
        raise LookupError("no farewell today")

    ticker = Ticker(ignore_shutdown=True)
    app, responses = app_serving(
        lambda: EventSourceResponse(ticker.events(), farewell_factory=broken)
    )
    with anyio.fail_after(5):
        async with stream(app, "/events", raise_app_exceptions=False) as sse:
            await sse.next_event()
            sse.request_shutdown()
            await sse.wait_finished()
    assert isinstance(sse.app_exception, LookupError)
    assert responses[0].close_reason is CloseReason.ERROR
    assert ticker.closed


async def test_a_farewell_to_a_stalled_reader_is_bounded_by_send_timeout() -> None:
    ticker = Ticker(ignore_shutdown=True)
    coordinator = DrainCoordinator()
    response = EventSourceResponse(
        ticker.events(),
        farewell_factory=farewell,
        send_timeout=0.2,
        ping=0,
        drain_coordinator=coordinator,
    )

    async def send(message: Any) -> None:
        if response.state is State.DRAINING:
            await anyio.sleep_forever()  # the reader stalls as the drain begins

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:

            async def serve() -> None:
                with pytest.raises(SendTimeoutError):
                    await response(http_scope(), never_receive, send)

            tasks.start_soon(serve)
            await ticker.started.wait()
            coordinator.request_drain()
    assert response.close_reason is CloseReason.SEND_TIMEOUT
    assert ticker.closed


async def test_without_send_timeout_a_stuck_farewell_is_dropped_not_a_timeout() -> None:
    ticker = Ticker(ignore_shutdown=True)
    coordinator = DrainCoordinator()
    response = EventSourceResponse(
        ticker.events(), farewell_factory=farewell, ping=0, drain_coordinator=coordinator
    )
    sent: list[Any] = []

    async def send(message: Any) -> None:
        if response.state is State.DRAINING:
            await anyio.sleep_forever()  # the reader stalls as the drain begins
        sent.append(message)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, send)
            await ticker.started.wait()
            coordinator.request_drain()
    assert response.close_reason is CloseReason.SHUTDOWN_FORCED
    assert not any(m.get("more_body") is False for m in sent), "nothing after a stuck send"
    assert ticker.closed


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("1000", TypeError),
        (True, TypeError),
        ((1, 2, 3), TypeError),
        ((1.5, 2), TypeError),
        (-1, ValueError),
        ((3000, 1000), ValueError),
    ],
)
def test_drain_retry_is_checked(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="drain_retry"):
        EventSourceResponse(iter(()), drain_retry=value)


def test_farewell_factory_must_be_callable() -> None:
    with pytest.raises(TypeError, match="farewell_factory"):
        EventSourceResponse(iter(()), farewell_factory="bye")  # type: ignore[arg-type]


# ------------------------------------------------------------------ signals


@pytest.fixture
def server_handler() -> Iterator[list[int]]:
    """Install a Python-level SIGTERM handler, as uvicorn does; restore the old one after."""
    calls: list[int] = []

    def handle_exit(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)

    original = signal.signal(signal.SIGTERM, handle_exit)
    try:
        yield calls
    finally:
        signal.signal(signal.SIGTERM, original)


async def test_a_signal_drains_the_stream_then_reaches_the_server_handler(
    server_handler: list[int],
) -> None:
    ticker = Ticker()
    app, responses = app_serving(
        lambda: EventSourceResponse(
            ticker.events(), shutdown_event=ticker.shutdown, shutdown_grace_period=5
        )
    )
    with anyio.fail_after(5):
        async with stream(app, "/events") as sse:
            await sse.next_event()
            assert isinstance(signal.getsignal(signal.SIGTERM), ChainedSignalHandler)
            signal.raise_signal(signal.SIGTERM)
            await sse.wait_finished()
    assert server_handler == [signal.SIGTERM]
    response = responses[0]
    assert response.history[1].trigger is Trigger.SHUTDOWN_REQUESTED
    assert response.history[1].reason == "SIGTERM received"
    assert response.close_reason is CloseReason.DRAINED
    assert sse.complete


async def test_an_app_that_opts_out_is_not_drained_by_a_signal(server_handler: list[int]) -> None:
    ticker = Ticker()
    app, responses = app_serving(lambda: EventSourceResponse(ticker.events()))
    drain_coordinator_for(app).automatic = False
    with anyio.fail_after(5):
        async with stream(app, "/events") as sse:
            await sse.next_event()
            signal.raise_signal(signal.SIGTERM)
            for _ in range(5):
                await sse.next_event()
            assert responses[0].state is State.STREAMING
    assert server_handler == [signal.SIGTERM]
    assert responses[0].close_reason is CloseReason.CLIENT_DISCONNECTED


async def test_default_and_ignored_dispositions_are_left_alone() -> None:
    original = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        follow_server_shutdown(DrainCoordinator())
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        follow_server_shutdown(DrainCoordinator())
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, original)


async def test_a_handler_left_from_another_loop_is_re_aimed_not_stacked(
    server_handler: list[int],
) -> None:
    server = signal.getsignal(signal.SIGTERM)
    assert callable(server)
    stale = ChainedSignalHandler(server, loop=DrainCoordinator())  # any weakref-able object
    signal.signal(signal.SIGTERM, stale)
    follow_server_shutdown(DrainCoordinator())
    installed = signal.getsignal(signal.SIGTERM)
    assert isinstance(installed, ChainedSignalHandler)
    assert installed is not stale
    assert installed.previous is server


async def test_each_stream_follows_once_per_loop(server_handler: list[int]) -> None:
    follow_server_shutdown(DrainCoordinator())
    first = signal.getsignal(signal.SIGTERM)
    follow_server_shutdown(DrainCoordinator())
    assert signal.getsignal(signal.SIGTERM) is first


def test_this_test_process_is_not_a_hypercorn_worker() -> None:
    assert hypercorn_worker_shutdown_event() is None


# --------------------------------------------------------------- loop scope


async def test_a_drain_of_another_loop_leaves_this_loops_streams_alone() -> None:
    coordinator = DrainCoordinator()
    other_loop = DrainCoordinator()  # stands in for another loop's native token
    ticker = Ticker()
    app, responses = app_serving(
        lambda: EventSourceResponse(ticker.events(), drain_coordinator=coordinator)
    )
    with anyio.fail_after(5):
        async with stream(app, "/events") as sse:
            await sse.next_event()
            coordinator.request_drain_on_loop(other_loop, "the other server stops")
            for _ in range(3):
                await sse.next_event()
            assert responses[0].state is State.STREAMING
            assert not coordinator.draining


async def test_a_loop_drain_also_drains_later_streams_on_that_loop() -> None:
    coordinator = DrainCoordinator()
    app, responses = app_serving(
        lambda: EventSourceResponse(Ticker().events(), drain_coordinator=coordinator)
    )
    coordinator.request_drain_on_loop(_this_loop(), "SIGTERM received")
    with anyio.fail_after(5):
        async with stream(app, "/events") as sse:
            await sse.wait_finished()
    assert responses[0].close_reason is CloseReason.SHUTDOWN_FORCED
    assert responses[0].history[1].reason == "SIGTERM received"
    coordinator.reset()
    with anyio.fail_after(5):
        async with stream(app, "/events") as sse:
            await sse.next_event()
            assert responses[1].state is State.STREAMING


def _this_loop() -> object:
    return anyio.lowlevel.current_token().native_token


# ----------------------------------------------------------------- AppStatus


@pytest.fixture
def app_status() -> Iterator[type[AppStatus]]:
    AppStatus.should_exit = False
    try:
        yield AppStatus
    finally:
        AppStatus.should_exit = False
        AppStatus.enable_automatic_graceful_drain_mode()


async def test_app_status_should_exit_drains_open_streams(app_status: type[AppStatus]) -> None:
    def make() -> EventSourceResponse:
        ticker = Ticker()
        return EventSourceResponse(
            ticker.events(), shutdown_event=ticker.shutdown, farewell_factory=farewell
        )

    app, responses = app_serving(make)
    with anyio.fail_after(5):
        async with stream(app, "/events") as sse:
            await sse.next_event()
            app_status.should_exit = True
            events = [e async for e in sse.events()]
            await sse.wait_finished()
    assert app_status.should_exit is True
    assert events[-1].event == "farewell"
    assert responses[0].history[1].reason == "AppStatus.should_exit was set"
    # Later streams on this loop drain at once, as they did with sse-starlette...
    with anyio.fail_after(5):
        async with stream(app, "/events") as sse:
            await sse.wait_finished()
    assert responses[1].close_reason in {CloseReason.DRAINED, CloseReason.SHUTDOWN_FORCED}
    # ...until a fixture resets the flag.
    app_status.should_exit = False
    with anyio.fail_after(5):
        async with stream(app, "/events") as sse:
            await sse.next_event()
            assert responses[2].state is State.STREAMING


async def test_app_status_leaves_no_app_wide_latch(app_status: type[AppStatus]) -> None:
    app, _ = app_serving(lambda: EventSourceResponse(Ticker().events()))
    coordinator = drain_coordinator_for(app)
    app_status.should_exit = True
    assert not coordinator.draining, "a stream on the next test's loop must start normally"


async def test_app_status_disable_automatic_graceful_drain(
    app_status: type[AppStatus], server_handler: list[int]
) -> None:
    app_status.should_exit_event = None  # what old fixtures do; accepted
    app_status.disable_automatic_graceful_drain()
    assert app_status.enable_automatic_graceful_drain is False
    app, responses = app_serving(lambda: EventSourceResponse(Ticker().events()))
    with anyio.fail_after(5):
        async with stream(app, "/events") as sse:
            await sse.next_event()
            signal.raise_signal(signal.SIGTERM)
            await sse.next_event()
            await sse.next_event()
            assert responses[0].state is State.STREAMING
            app_status.handle_exit()  # disabled: does nothing either
            await sse.next_event()
            assert responses[0].state is State.STREAMING
    app_status.enable_automatic_graceful_drain_mode()
    assert app_status.enable_automatic_graceful_drain is True


def test_app_status_is_importable_from_the_old_path() -> None:
    import sse_sm.sse

    assert sse_sm.sse.AppStatus is AppStatus
    assert isinstance(AppStatus.should_exit, bool)


# ------------------------------------------------- servers that shield sends


@pytest.mark.parametrize("sync_source", [False, True], ids=["async", "sync"])
async def test_a_send_timeout_closes_the_source_while_the_send_is_stuck(
    sync_source: bool,
) -> None:
    """hypercorn's trio worker shields its socket writes, so a timed-out send
    cannot be cancelled: the source must still be closed at the timeout, not
    whenever the stalled client finally leaves."""
    finally_ran = anyio.Event()
    closed_in_thread = threading.Event()

    async def async_ticks() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: x\r\n\r\n"
        finally:
            finally_ran.set()

    def sync_ticks() -> Iterator[bytes]:
        try:
            while True:
                yield b"data: x\r\n\r\n"
        finally:
            closed_in_thread.set()

    response = EventSourceResponse(
        sync_ticks() if sync_source else async_ticks(), send_timeout=0.2, ping=0
    )
    release = anyio.Event()
    bodies = 0

    async def shielded_send(message: Any) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body":
            bodies += 1
            if bodies == 3:  # the client stops reading; the write cannot be cancelled
                with anyio.CancelScope(shield=True), anyio.move_on_after(4):
                    await release.wait()

    async def serve() -> None:
        with pytest.raises(SendTimeoutError):
            await response(http_scope(), never_receive, shielded_send)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(serve)
        try:
            with anyio.fail_after(3):
                await wait_until(lambda: response.state is State.CLOSED)
                if sync_source:
                    while not closed_in_thread.is_set():  # noqa: ASYNC110 - a thread's progress has no event on the loop
                        await anyio.sleep(0.005)
                else:
                    await finally_ran.wait()
        finally:
            release.set()  # unstick the send, whatever happened
    assert response.close_reason is CloseReason.SEND_TIMEOUT


async def test_a_sync_source_blocked_in_next_never_holds_the_process_open() -> None:
    """Its worker is a daemon thread (an interpreter joins the others before it
    exits), and the thread ends once the source is closed and it has been idle
    for the pool's idle time (short here)."""
    unblock = threading.Event()
    in_next = threading.Event()
    closed = threading.Event()

    def blocking() -> Iterator[str]:
        try:
            yield "first"
            in_next.set()
            unblock.wait(5)  # a next() that blocks, as time.sleep or queue.get would
            yield "second"
        finally:
            closed.set()

    def source_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "sse_sm sync source"}

    earlier = source_threads()  # other tests' sources may still be finishing
    app, responses = app_serving(lambda: EventSourceResponse(blocking(), ping=0))
    with fresh_sync_pool(idle_seconds=0.05) as pool, anyio.fail_after(5):
        async with stream(app, "/events") as sse:
            await sse.next_event()
            while not in_next.is_set():  # noqa: ASYNC110 - a thread's progress has no event on the loop
                await anyio.sleep(0.005)
            workers = list(source_threads() - earlier)
            assert workers, "no worker thread"
            assert all(worker.daemon for worker in workers)
            assert pool.busy == 1
            await sse.disconnect()
            await sse.wait_finished()
        assert responses[0].close_reason is CloseReason.CLIENT_DISCONNECTED
        assert not closed.is_set(), "next() is still blocked: it closes when that returns"
        unblock.set()
        while any(worker.is_alive() for worker in workers) or not closed.is_set():  # noqa: ASYNC110 - a thread's progress has no event on the loop
            await anyio.sleep(0.005)
        assert pool.threads == 0
