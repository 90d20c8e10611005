"""Promise: every connection ends CLOSED with a close reason, whatever is raised where.

The source, a callback or a setup step may raise any ``BaseException``, not
only an ``Exception``; the client may leave at any moment, including while
the headers are being sent; a client-close handler may hang.  In every case
the machine reaches CLOSED with a reason, ``on_transition`` sees the closing
transition, the source is closed, and what ``run`` raises matches the reason.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from starlette.applications import Starlette
from starlette.types import Message

import sse_sm._connection
from sse_sm import (
    CloseReason,
    DrainCoordinator,
    EventSourceResponse,
    State,
    Transition,
    Trigger,
)
from sse_sm.testing import wait_for_state
from tests._support import http_scope, never_receive

pytestmark = pytest.mark.time_driven

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup


class Raising:
    """An async iterator that yields one event, then raises ``exc`` from ``__anext__``."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0
        self.closed = False

    def __aiter__(self) -> Raising:
        return self

    async def __anext__(self) -> str:
        self.calls += 1
        if self.calls == 1:
            return "first"
        raise self.exc

    async def aclose(self) -> None:
        self.closed = True


def _exceptions() -> list[Any]:
    return [
        pytest.param(lambda: KeyboardInterrupt(), id="KeyboardInterrupt"),
        pytest.param(lambda: SystemExit(3), id="SystemExit"),
        pytest.param(lambda: GeneratorExit(), id="GeneratorExit"),
        pytest.param(
            lambda: BaseExceptionGroup("many", [KeyboardInterrupt(), ValueError("x")]),
            id="BaseExceptionGroup",
        ),
        pytest.param(lambda: ExceptionGroup("many", [ValueError("x")]), id="ExceptionGroup"),
    ]


@pytest.mark.parametrize("make", _exceptions())
async def test_a_source_raising_any_base_exception_closes_with_error(
    make: Callable[[], BaseException],
) -> None:
    exc = make()
    source = Raising(exc)
    seen: list[Transition] = []
    response = EventSourceResponse(source, ping=0, on_transition=seen.append)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(5), pytest.raises(type(exc)) as raised:
        await response(http_scope(), never_receive, send)
    assert raised.value is exc
    assert response.state is State.CLOSED
    assert response.close_reason is CloseReason.ERROR
    assert seen[-1].trigger is Trigger.FAILED
    assert seen[-1].target is State.CLOSED
    assert source.closed
    # The first event went out; no clean end after an error.
    assert sent[1]["body"] == b"data: first\r\n\r\n"
    assert all(m.get("more_body", True) for m in sent[1:])


@pytest.mark.parametrize("make", _exceptions())
async def test_a_data_sender_raising_any_base_exception_closes_with_error(
    make: Callable[[], BaseException],
) -> None:
    exc = make()

    async def sender() -> None:
        await anyio.lowlevel.checkpoint()
        raise exc

    async def forever() -> AsyncIterator[str]:
        await anyio.sleep_forever()
        yield "never"

    response = EventSourceResponse(forever(), ping=0, data_sender_callable=sender)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(5), pytest.raises(type(exc)) as raised:
        await response(http_scope(), never_receive, send)
    assert raised.value is exc
    assert response.close_reason is CloseReason.ERROR


@pytest.mark.parametrize("make", _exceptions())
async def test_a_receive_raising_any_base_exception_closes_with_error(
    make: Callable[[], BaseException],
) -> None:
    exc = make()

    async def receive() -> Message:
        await anyio.lowlevel.checkpoint()
        raise exc

    async def forever() -> AsyncIterator[str]:
        await anyio.sleep_forever()
        yield "never"

    response = EventSourceResponse(forever(), ping=0)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(5), pytest.raises(type(exc)) as raised:
        await response(http_scope(), receive, send)
    assert raised.value is exc
    assert response.close_reason is CloseReason.ERROR


# ---------------------------------------------------- the client-close handler


async def test_a_hanging_close_handler_does_not_keep_the_source_open() -> None:
    source_closed = anyio.Event()
    handler_entered = anyio.Event()
    source_closed_first: list[bool] = []

    async def source() -> AsyncIterator[str]:
        try:
            yield "hello"
            await anyio.sleep_forever()
        finally:
            source_closed.set()

    async def hanging_handler(message: Message) -> None:
        source_closed_first.append(source_closed.is_set())
        handler_entered.set()
        await anyio.sleep_forever()

    leave = anyio.Event()

    async def receive() -> Message:
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message.get("body") == b"data: hello\r\n\r\n":
            leave.set()

    response = EventSourceResponse(
        source(), ping=0, client_close_handler_callable=hanging_handler, cleanup_timeout=0.2
    )
    with anyio.fail_after(5):
        await response(http_scope(), receive, send)
    assert source_closed_first == [True]
    assert response.close_reason is CloseReason.CLIENT_DISCONNECTED


async def test_a_close_handler_raising_a_base_exception_is_reported_not_swallowed() -> None:
    async def handler(message: Message) -> None:
        raise KeyboardInterrupt

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def forever() -> AsyncIterator[str]:
        await anyio.sleep_forever()
        yield "never"

    response = EventSourceResponse(forever(), ping=0, client_close_handler_callable=handler)

    async def send(message: Message) -> None:
        pass

    with anyio.fail_after(5), pytest.raises(KeyboardInterrupt):
        await response(http_scope(), receive, send)
    assert response.close_reason is CloseReason.CLIENT_DISCONNECTED


async def test_an_oserror_on_the_header_send_calls_the_close_handler() -> None:
    handled: list[Message] = []

    async def handler(message: Message) -> None:
        handled.append(message)

    async def send(message: Message) -> None:
        raise OSError("connection reset by peer")

    async def forever() -> AsyncIterator[str]:
        await anyio.sleep_forever()
        yield "never"

    response = EventSourceResponse(forever(), client_close_handler_callable=handler)
    with anyio.fail_after(5):
        await response(http_scope(), never_receive, send)
    assert response.close_reason is CloseReason.CLIENT_DISCONNECTED
    assert handled == [{"type": "http.disconnect"}]


# -------------------------------------------------------------- setup steps


class _Closable:
    def __init__(self) -> None:
        self.closed = False

    def __aiter__(self) -> _Closable:
        return self

    async def __anext__(self) -> str:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        self.closed = True


async def test_a_failing_server_shutdown_hook_up_closes_with_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(coordinator: DrainCoordinator) -> None:
        raise RuntimeError("signal.signal failed")

    monkeypatch.setattr(sse_sm._connection, "follow_server_shutdown", broken)
    source = _Closable()
    seen: list[Transition] = []
    response = EventSourceResponse(source, on_transition=seen.append)
    scope = {**http_scope(), "app": Starlette()}

    async def send(message: Message) -> None:
        pass

    with anyio.fail_after(5), pytest.raises(RuntimeError, match=r"signal\.signal failed"):
        await response(scope, never_receive, send)
    assert response.close_reason is CloseReason.ERROR
    assert seen[-1].trigger is Trigger.FAILED
    assert source.closed


async def test_a_failing_coordinator_registration_closes_with_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: DrainCoordinator, callback: Any) -> Any:
        raise MemoryError("no room")

    monkeypatch.setattr(DrainCoordinator, "register", broken)
    source = _Closable()
    response = EventSourceResponse(source, drain_coordinator=DrainCoordinator(automatic=False))

    async def send(message: Message) -> None:
        pass

    with anyio.fail_after(5), pytest.raises(MemoryError, match="no room"):
        await response(http_scope(), never_receive, send)
    assert response.close_reason is CloseReason.ERROR
    assert source.closed


@pytest.mark.parametrize("make", _exceptions())
async def test_a_head_answer_whose_send_raises_any_base_exception_closes_with_error(
    make: Callable[[], BaseException],
) -> None:
    exc = make()
    source = _Closable()

    async def send(message: Message) -> None:
        raise exc

    response = EventSourceResponse(source)
    with anyio.fail_after(5), pytest.raises(type(exc)) as raised:
        await response(http_scope("HEAD"), never_receive, send)
    assert raised.value is exc
    assert response.close_reason is CloseReason.ERROR
    assert source.closed


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("where", ["source", "farewell"])
async def test_a_server_cancelling_the_task_itself_is_a_cancellation(
    anyio_backend: str, where: str
) -> None:
    """daphne stops by calling ``cancel()`` on each request's asyncio task, with
    no anyio scope involved: that is a cancellation (not a failure), whether it
    reaches the source's await or the farewell's send."""
    import asyncio

    goodbye = anyio.Event()

    async def source() -> AsyncIterator[str]:
        yield "a"
        await goodbye.wait()
        yield "goodbye"
        await anyio.sleep_forever()

    farewell_started = asyncio.Event()

    async def send(message: Message) -> None:
        if b"bye!" in message.get("body", b""):
            farewell_started.set()
            await asyncio.sleep(3600)

    coordinator = DrainCoordinator(automatic=False)
    response = EventSourceResponse(
        source(),
        ping=0,
        shutdown_event=goodbye,
        shutdown_grace_period=0.05 if where == "farewell" else 30,
        drain_coordinator=coordinator,
        farewell_factory=lambda: "bye!",
    )
    task = asyncio.ensure_future(response(http_scope(), never_receive, send))
    with anyio.fail_after(5):
        await wait_for_state(response, State.STREAMING)
        coordinator.request_drain("test")
        if where == "farewell":
            await farewell_started.wait()
        else:
            await wait_for_state(response, State.DRAINING)
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert response.close_reason is CloseReason.CANCELLED
