"""Admission control: ``max_streams`` on the coordinator and per response class.

A request over a limit is answered ``503`` with a jittered ``Retry-After``
and closes on the ``REJECTED`` arc; its source never starts, its data sender
never starts, its ``background`` never runs.  An admitted stream holds its
slot until it enters ``CLOSED``, however it gets there.  Raw ASGI calls and
a Starlette app, on both backends.
"""

from __future__ import annotations

import logging
import threading
import time
import types
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Message

from sse_sm import (
    CloseReason,
    DrainCoordinator,
    EventSourceResponse,
    ServerSentEvent,
    State,
    Transition,
    Trigger,
    drain_coordinator_for,
)
from sse_sm.testing import SSEStream, stream, wait_for_close, wait_for_state
from tests._support import http_scope, never_receive, websocket_scope


def closed_before_starting(generator: object) -> bool:
    """An async generator closed without its body ever running (no frame left)."""
    return isinstance(generator, types.AsyncGeneratorType) and generator.ag_frame is None


class Source:
    """A source that records whether it started and whether it was closed."""

    def __init__(self) -> None:
        self.started = False
        self.produced = 0

    async def ticks(self, count: int | None = None) -> AsyncGenerator[Any, None]:
        self.started = True
        while count is None or self.produced < count:
            yield ServerSentEvent(str(self.produced), id=str(self.produced))
            self.produced += 1
            await anyio.sleep(0.002)


class Recorder:
    """An ASGI send that records every message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.started = anyio.Event()

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self.started.set()
        await anyio.lowlevel.checkpoint()

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.messages[0]["headers"]).get(name)


def app_with(
    make: Callable[[], EventSourceResponse],
) -> tuple[Starlette, list[EventSourceResponse]]:
    responses: list[EventSourceResponse] = []

    async def events(request: Request) -> EventSourceResponse:
        response = make()
        responses.append(response)
        return response

    return Starlette(routes=[Route("/events", events)]), responses


def header(sse: SSEStream, name: str) -> str | None:
    return {k.lower(): v for k, v in sse.headers}.get(name)


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1, ValueError, "max_streams must be an int >= 0, got -1"),
        (1.5, TypeError, "max_streams must be an int, got float"),
        (True, TypeError, "max_streams must be an int, got bool"),
        ("3", TypeError, "max_streams must be an int, got str"),
    ],
)
def test_max_streams_is_checked_in_the_constructor_and_the_setter(
    value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{message}$"):
        DrainCoordinator(max_streams=value)  # type: ignore[arg-type]
    coordinator = DrainCoordinator(max_streams=4)
    with pytest.raises(error, match=f"^{message}$"):
        coordinator.max_streams = value  # type: ignore[assignment]
    assert coordinator.max_streams == 4, "a refused value changes nothing"


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1, ValueError, "retry_after must satisfy 0 <= low <= high"),
        ((5, 1), ValueError, "retry_after must satisfy 0 <= low <= high"),
        (86_401, ValueError, "retry_after must be at most 86400 seconds"),
        (1.5, TypeError, "retry_after must be whole seconds"),
        (True, TypeError, "retry_after must be whole seconds"),
        ((1, 2, 3), TypeError, "retry_after must be whole seconds"),
        ([1, 2], TypeError, "retry_after must be whole seconds"),
        ((1, 2.0), TypeError, "retry_after must be whole seconds"),
    ],
)
def test_retry_after_is_checked_in_the_constructor_and_the_setter(
    value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{message}"):
        DrainCoordinator(retry_after=value)  # type: ignore[arg-type]
    coordinator = DrainCoordinator()
    with pytest.raises(error, match=f"^{message}"):
        coordinator.retry_after = value  # type: ignore[assignment]
    assert coordinator.retry_after == (1, 5)


def test_defaults_and_accepted_values() -> None:
    coordinator = DrainCoordinator()
    assert coordinator.max_streams is None
    assert coordinator.retry_after == (1, 5)
    coordinator.max_streams = 0
    coordinator.retry_after = 7
    assert (coordinator.max_streams, coordinator.retry_after) == (0, (7, 7))
    coordinator.max_streams = None
    coordinator.retry_after = (0, 86_400)
    assert (coordinator.max_streams, coordinator.retry_after) == (None, (0, 86_400))


def test_a_class_limit_is_checked_where_the_class_is_written() -> None:
    with pytest.raises(ValueError, match=r"^Bad\.max_streams must be an int >= 0, got -2$"):

        class Bad(EventSourceResponse):
            max_streams = -2

    with pytest.raises(TypeError, match=r"^Worse\.max_streams must be an int, got float$"):

        class Worse(EventSourceResponse):
            max_streams = 2.0  # type: ignore[assignment]


async def test_a_class_limit_reassigned_badly_fails_the_request_not_the_process() -> None:
    class Feed(EventSourceResponse):
        max_streams = 1

    Feed.max_streams = -1
    with pytest.raises(ValueError, match=r"^Feed\.max_streams must be an int >= 0"):
        await Feed(Source().ticks())(http_scope(), never_receive, Recorder())


# ------------------------------------------------------------------ the refusal


async def test_limit_zero_refuses_with_503_and_never_starts_anything() -> None:
    coordinator = DrainCoordinator(max_streams=0, retry_after=(2, 4))
    source = Source()
    generator = source.ticks()
    sender_ran = anyio.Event()
    background_ran = anyio.Event()
    seen: list[Transition] = []

    async def data_sender() -> None:
        sender_ran.set()

    async def background() -> None:
        background_ran.set()

    response = EventSourceResponse(
        generator,
        drain_coordinator=coordinator,
        data_sender_callable=data_sender,
        background=BackgroundTask(background),
        on_transition=seen.append,
        headers={"X-Stream": "yes"},
    )
    send = Recorder()
    with anyio.fail_after(5):
        await response(http_scope(), never_receive, send)
        await anyio.sleep(0.01)  # anything wrongly started gets a chance to run
    assert send.status == 503
    retry_after = send.header(b"retry-after")
    assert retry_after is not None
    assert 2 <= int(retry_after) <= 4
    body = b"Too many open streams; retry after " + retry_after + b" s.\n"
    assert send.messages[1:] == [{"type": "http.response.body", "body": body, "more_body": False}]
    assert send.header(b"content-length") == str(len(body)).encode()
    assert send.header(b"content-type") == b"text/plain; charset=utf-8"
    assert send.header(b"x-stream") is None, "a stream's headers do not go on the 503"
    assert [(t.source, t.trigger, t.target) for t in seen] == [
        (State.OPEN, Trigger.REJECTED, State.CLOSED)
    ]
    assert response.close_reason is CloseReason.REJECTED
    assert not source.started
    assert closed_before_starting(generator), "the generator is closed"
    assert not sender_ran.is_set()
    assert not background_ran.is_set()
    stats = coordinator.statistics()
    assert stats.rejections == stats.closes[CloseReason.REJECTED] == 1
    assert stats.active == 0


async def test_a_refused_head_gets_503_headers_and_no_body() -> None:
    coordinator = DrainCoordinator(max_streams=0, retry_after=1)
    response = EventSourceResponse(Source().ticks(), drain_coordinator=coordinator)
    send = Recorder()
    with anyio.fail_after(5):
        await response(http_scope("HEAD"), never_receive, send)
    assert send.status == 503
    assert send.header(b"retry-after") == b"1"
    assert send.messages[1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert response.close_reason is CloseReason.REJECTED


async def test_a_refusal_is_logged_like_any_transition(caplog: pytest.LogCaptureFixture) -> None:
    coordinator = DrainCoordinator(max_streams=0, retry_after=2)
    response = EventSourceResponse(Source().ticks(), drain_coordinator=coordinator)
    with caplog.at_level(logging.DEBUG, logger="sse_sm"), anyio.fail_after(5):
        await response(http_scope(), never_receive, Recorder())
    (line,) = [r.getMessage() for r in caplog.records if "--REJECTED-->" in r.getMessage()]
    assert line.endswith(
        ": OPEN --REJECTED--> CLOSED (max_streams=0 reached; 503 with Retry-After: 2)"
    )


async def test_a_refused_websocket_handshake_gets_a_503_denial_response() -> None:
    coordinator = DrainCoordinator(max_streams=0, retry_after=1)
    response = EventSourceResponse(Source().ticks(), drain_coordinator=coordinator)
    send = Recorder()
    with anyio.fail_after(5):
        await response(websocket_scope(), never_receive, send)
    assert [m["type"] for m in send.messages] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    assert send.status == 503
    assert response.close_reason is CloseReason.REJECTED


async def test_retry_after_is_drawn_within_its_range_and_jittered() -> None:
    coordinator = DrainCoordinator(max_streams=0, retry_after=(2, 4))
    seen: set[int] = set()
    with anyio.fail_after(10):
        for _ in range(60):
            send = Recorder()
            await EventSourceResponse(Source().ticks(), drain_coordinator=coordinator)(
                http_scope(), never_receive, send
            )
            value = send.header(b"retry-after")
            assert value is not None
            seen.add(int(value))
    assert seen == {2, 3, 4}  # each has a 1 - (2/3)**60 chance: about 1 - 3e-11
    assert coordinator.statistics().rejections == 60


async def test_a_refusal_whose_send_fails_closes_on_that_and_counts_no_rejection() -> None:
    coordinator = DrainCoordinator(max_streams=0)

    async def gone(message: Message) -> None:
        raise OSError("connection reset by peer")

    response = EventSourceResponse(Source().ticks(), drain_coordinator=coordinator)
    with anyio.fail_after(5):
        await response(http_scope(), never_receive, gone)
    assert [t.trigger for t in response.history] == [Trigger.DISCONNECTED]
    stats = coordinator.statistics()
    assert (stats.rejections, stats.closes[CloseReason.CLIENT_DISCONNECTED]) == (0, 1)


# ------------------------------------------------------------------ limits in a Starlette app


async def test_a_burst_over_the_limit_gets_exactly_the_excess_refused() -> None:
    admitted, excess = 5, 3
    app, responses = app_with(lambda: EventSourceResponse(Source().ticks(), ping=0))
    coordinator = drain_coordinator_for(app)
    coordinator.max_streams = admitted
    statuses: list[int] = []
    events_seen: list[int] = []
    everyone_in = anyio.Event()

    async def client() -> None:
        async with stream(app, "/events") as sse:
            await sse.wait_started()
            statuses.append(sse.status)
            if len(statuses) == admitted + excess:
                everyone_in.set()
            if sse.status == 200:
                await everyone_in.wait()
                # Still streaming after every refusal went out.
                events_seen.append(len([await sse.next_event() for _ in range(3)]))
            else:
                await sse.wait_finished()
                assert header(sse, "retry-after") in {"1", "2", "3", "4", "5"}

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            for _ in range(admitted + excess):
                tasks.start_soon(client)
    assert sorted(statuses) == [200] * admitted + [503] * excess
    assert events_seen == [3] * admitted
    stats = coordinator.statistics()
    assert stats.rejections == excess
    assert stats.closes[CloseReason.CLIENT_DISCONNECTED] == admitted
    assert stats.active == 0
    assert sum(r.close_reason is CloseReason.REJECTED for r in responses) == excess


async def test_raising_the_limit_admits_more_and_lowering_it_ends_no_stream() -> None:
    app, responses = app_with(lambda: EventSourceResponse(Source().ticks(), ping=0))
    coordinator = drain_coordinator_for(app)
    coordinator.max_streams = 1
    with anyio.fail_after(10):
        async with stream(app, "/events") as first:
            await first.next_event()
            async with stream(app, "/events") as refused:
                await refused.wait_finished()
            assert refused.status == 503
            coordinator.max_streams = 2  # raised at run time: one more gets in
            async with stream(app, "/events") as second:
                await second.next_event()
                coordinator.max_streams = 0  # lowered below the streams alive
                async with stream(app, "/events") as refused_again:
                    await refused_again.wait_finished()
                assert refused_again.status == 503
                # The admitted streams go on as if nothing happened.
                for sse in (first, second):
                    await sse.next_event()
                    await sse.next_event()
                assert coordinator.statistics().streams[State.STREAMING] == 2
        coordinator.max_streams = None
        async with stream(app, "/events") as unlimited:
            await unlimited.next_event()
    assert coordinator.statistics().rejections == 2
    assert [r.close_reason for r in responses].count(CloseReason.CLIENT_DISCONNECTED) == 3


async def test_the_drain_still_reaches_admitted_streams() -> None:
    shutdown = anyio.Event()

    async def until_shutdown() -> AsyncIterator[str]:
        yield "hello"
        await shutdown.wait()
        yield "bye"

    app, _ = app_with(
        lambda: EventSourceResponse(
            until_shutdown(), ping=0, shutdown_event=shutdown, shutdown_grace_period=5
        )
    )
    coordinator = drain_coordinator_for(app)
    coordinator.max_streams = 2
    with anyio.fail_after(10):
        async with stream(app, "/events") as a, stream(app, "/events") as b:
            await a.next_event()
            await b.next_event()
            async with stream(app, "/events") as refused:
                await refused.wait_finished()
            assert refused.status == 503
            a.request_shutdown("deploy")
            assert [e.data async for e in a.events()] == ["bye"]
            assert [e.data async for e in b.events()] == ["bye"]
            await a.wait_finished()
            await b.wait_finished()
    stats = coordinator.statistics()
    assert stats.closes[CloseReason.DRAINED] == 2
    assert stats.rejections == 1
    assert stats.active == 0


# ------------------------------------------------------------------ per response class


async def test_a_class_limit_counts_the_class_and_subclasses_that_do_not_set_their_own() -> None:
    class Feed(EventSourceResponse):
        max_streams = 1

    class SpecialFeed(Feed):
        pass

    class OwnLimit(Feed):
        max_streams = 2

    coordinator = DrainCoordinator()
    other = DrainCoordinator()

    async def start(cls: type[EventSourceResponse], on: DrainCoordinator) -> Recorder:
        send = Recorder()
        tasks.start_soon(
            cls(Source().ticks(), ping=0, drain_coordinator=on), http_scope(), never_receive, send
        )
        await send.started.wait()
        return send

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            assert (await start(Feed, coordinator)).status == 200
            assert (await start(Feed, coordinator)).status == 503
            assert (await start(SpecialFeed, coordinator)).status == 503, "shares Feed's count"
            assert (await start(OwnLimit, coordinator)).status == 200
            assert (await start(OwnLimit, coordinator)).status == 200
            assert (await start(OwnLimit, coordinator)).status == 503
            assert (await start(EventSourceResponse, coordinator)).status == 200, "no class limit"
            assert (await start(Feed, other)).status == 200, "counted per coordinator"
            assert coordinator.statistics().active == 4
            assert coordinator.statistics().rejections == 3
            tasks.cancel_scope.cancel()
    assert coordinator.statistics().active == other.statistics().active == 0
    assert coordinator._books._owner_counts == {}, "no entry kept per class once its streams closed"


async def test_the_coordinator_limit_applies_to_every_class_together() -> None:
    class Feed(EventSourceResponse):
        max_streams = 10

    coordinator = DrainCoordinator(max_streams=1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            first = EventSourceResponse(Source().ticks(), ping=0, drain_coordinator=coordinator)
            tasks.start_soon(first, http_scope(), never_receive, Recorder())
            await wait_for_state(first, State.STREAMING)
            send = Recorder()
            await Feed(Source().ticks(), drain_coordinator=coordinator)(
                http_scope(), never_receive, send
            )
            assert send.status == 503
            tasks.cancel_scope.cancel()


# ------------------------------------------------------------------ the slot is given back


class Boom(BaseException):
    """Not an Exception: the kind a bare ``except Exception`` would let leak a slot."""


async def _completes() -> AsyncIterator[str]:
    yield "one"


async def _raises() -> AsyncIterator[str]:
    yield "one"
    raise LookupError("the source broke")


async def _raises_base() -> AsyncIterator[str]:
    yield "one"
    raise Boom


async def _forever() -> AsyncIterator[str]:
    yield "one"
    await anyio.sleep_forever()


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("completed", CloseReason.COMPLETED),
        ("error", CloseReason.ERROR),
        ("base_exception", CloseReason.ERROR),
        ("disconnect", CloseReason.CLIENT_DISCONNECTED),
        ("cancelled", CloseReason.CANCELLED),
        ("cancelled_in_open", CloseReason.CANCELLED),
        ("head", CloseReason.HEAD),
        ("head_cancelled", CloseReason.CANCELLED),
        ("drained", CloseReason.SHUTDOWN_FORCED),
        ("listener_raises_base", CloseReason.COMPLETED),
    ],
)
async def test_the_slot_is_given_back_after_each_kind_of_close(
    kind: str, reason: CloseReason
) -> None:
    coordinator = DrainCoordinator(max_streams=1)
    method = "HEAD" if kind.startswith("head") else "GET"
    source = {
        "completed": _completes,
        "error": _raises,
        "base_exception": _raises_base,
        "listener_raises_base": _completes,
    }.get(kind, _forever)()
    hold_start = anyio.Event()

    def listener(transition: Transition) -> None:
        if kind == "listener_raises_base" and transition.target is State.CLOSED:
            raise Boom

    async def send(message: Message) -> None:
        if kind in ("cancelled_in_open", "head_cancelled"):
            await hold_start.wait()  # never set: the answer is cut by the cancellation
        if kind == "disconnect" and message.get("body"):
            raise OSError("connection reset by peer")
        await anyio.lowlevel.checkpoint()

    response = EventSourceResponse(source, ping=0, drain_coordinator=coordinator)
    if kind == "listener_raises_base":
        # Not through on_transition, whose guard only catches Exception anyway:
        # straight on the machine, as a BaseException from any listener would.
        response._machine.add_listener(listener)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:

            async def run() -> None:
                try:
                    await response(http_scope(method), never_receive, send)
                except (LookupError, Boom):
                    pass

            tasks.start_soon(run)
            await anyio.sleep(0.01)
            assert coordinator.statistics().active <= 1
            if kind in ("cancelled", "cancelled_in_open", "head_cancelled"):
                tasks.cancel_scope.cancel()
            elif kind == "drained":
                coordinator.request_drain("test")
        assert await wait_for_close(response) is reason
        stats = coordinator.statistics()
        assert stats.active == 0, kind
        assert stats.closes[reason] == 1, "counted once, by the close that won"
        # The slot is free: the next request is admitted.
        coordinator.reset()  # after "drained": later streams would drain at once
        after = EventSourceResponse(_completes(), ping=0, drain_coordinator=coordinator)
        recorder = Recorder()
        await after(http_scope(), never_receive, recorder)
        assert recorder.status == 200
        assert after.close_reason is CloseReason.COMPLETED


def test_admission_from_many_threads_never_overshoots_the_limit() -> None:
    """The check and the taking of the slot are one step under the lock: streams
    on several event loops (threads) racing for the last slots never overshoot."""

    class Slow:
        """Hashing it lets other threads run: inside ``_admit`` that falls between
        the check of the limit and the taking of the slot, the window a lock
        must close."""

        def sent_counts(self) -> tuple[int, int, int]:
            return (0, 0, 0)

        def __hash__(self) -> int:
            time.sleep(0.0001)
            return id(self)

    limit, threads_count, attempts = 50, 8, 20
    coordinator = DrainCoordinator(max_streams=limit)
    admitted: list[int] = []
    barrier = threading.Barrier(threads_count)

    def race() -> None:
        mine = 0
        barrier.wait(timeout=30)
        for _ in range(attempts):
            if coordinator._books.admit(Slow()) is None:
                mine += 1
        admitted.append(mine)

    threads = [threading.Thread(target=race) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(admitted) == limit
    assert coordinator.statistics().streams[State.OPEN] == limit
