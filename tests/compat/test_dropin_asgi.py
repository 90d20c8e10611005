"""Drop-in behaviours that code written for sse-starlette relies on, at the ASGI level.

Each test here reproduces a way real callers use the response that worked
with sse-starlette 3.7.x and once failed with sse_sm:

* the data sender runs beside the header send (the MCP SDK's streamable-HTTP
  transport feeds its stream through a zero-size memory stream while
  ``http.response.start`` is still blocked);
* a disconnect is noticed while the header send is blocked;
* the coroutine is built outside any event loop and run later
  (``asyncio.run(response(scope, receive, send))``);
* a response awaited as raw ASGI, with no Starlette app in its scope, is
  drained like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
import trio
from starlette.requests import Request
from starlette.routing import Route, Router
from starlette.types import Message, Scope, Send

from sse_sm import (
    CloseReason,
    DrainCoordinator,
    EventSourceResponse,
    State,
    default_drain_coordinator,
)
from sse_sm.sse import AppStatus
from sse_sm.testing import wait_for_state
from tests._support import http_scope, never_receive


async def _one_then_wait() -> AsyncIterator[str]:
    yield "hello"
    await anyio.sleep_forever()


# --------------------------------------------------- the data sender's start


async def test_data_sender_starts_before_the_header_send_returns() -> None:
    """A server that takes the headers only once the sender has begun (the MCP
    SDK's transport hands the sender an item through a zero-size memory stream
    while ``http.response.start`` waits)."""
    started = anyio.Event()
    order: list[str] = []

    async def sender() -> None:
        order.append("sender")
        started.set()
        await anyio.sleep_forever()

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            await started.wait()
            order.append("headers")
        elif not message.get("more_body", False):
            order.append("end")

    async def two() -> AsyncIterator[str]:
        yield "a"

    response = EventSourceResponse(two(), data_sender_callable=sender, ping=0)
    with anyio.fail_after(5):
        await response(http_scope(), never_receive, send)
    assert order == ["sender", "headers", "end"]
    assert response.close_reason is CloseReason.COMPLETED


async def test_data_sender_runs_even_when_the_header_send_fails() -> None:
    ran: list[str] = []

    async def sender() -> None:
        ran.append("sender")
        await anyio.sleep_forever()

    async def send(message: Message) -> None:
        raise OSError("connection reset by peer")

    response = EventSourceResponse(_one_then_wait(), data_sender_callable=sender)
    with anyio.fail_after(5):
        await response(http_scope(), never_receive, send)
    assert ran == ["sender"]
    assert response.close_reason is CloseReason.CLIENT_DISCONNECTED


async def test_disconnect_is_noticed_while_the_header_send_is_blocked() -> None:
    async def send(message: Message) -> None:
        await anyio.sleep_forever()  # a server that never takes the headers

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    handled: list[Message] = []

    async def on_close(message: Message) -> None:
        handled.append(message)

    response = EventSourceResponse(_one_then_wait(), client_close_handler_callable=on_close)
    with anyio.fail_after(5):
        await response(http_scope(), receive, send)
    assert response.close_reason is CloseReason.CLIENT_DISCONNECTED
    assert handled == [{"type": "http.disconnect"}]


# ----------------------------------------------------- built outside a loop


def _collect() -> tuple[list[Message], Send]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    return sent, send


async def _three() -> AsyncIterator[str]:
    for n in range(3):
        yield str(n)


def test_the_call_can_be_built_outside_a_loop_asyncio() -> None:
    sent, send = _collect()

    async def receive() -> Message:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    response = EventSourceResponse(_three(), ping=0)
    call = response(http_scope(), receive, send)  # no loop is running here
    asyncio.run(asyncio.wait_for(call, 5))
    assert response.close_reason is CloseReason.COMPLETED
    assert [m.get("body") for m in sent[1:]] == [
        b"data: 0\r\n\r\n",
        b"data: 1\r\n\r\n",
        b"data: 2\r\n\r\n",
        b"",
    ]


def test_the_call_can_be_built_outside_a_loop_trio() -> None:
    sent, send = _collect()

    async def receive() -> Message:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    response = EventSourceResponse(_three(), ping=0)
    call = response(http_scope(), receive, send)

    async def main() -> None:
        with trio.fail_after(5):
            await call

    trio.run(main)
    assert response.close_reason is CloseReason.COMPLETED
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


# ----------------------------------------------- raw ASGI has a coordinator


@pytest.fixture
def app_status() -> Iterator[type[AppStatus]]:
    AppStatus.should_exit = False
    yield AppStatus
    AppStatus.should_exit = False


async def _await_state(response: EventSourceResponse, state: State) -> None:
    await wait_for_state(response, state)


async def test_a_raw_asgi_stream_gets_the_process_default_coordinator() -> None:
    response = EventSourceResponse(_one_then_wait())
    _sent, send = _collect()
    coordinator = default_drain_coordinator()
    assert isinstance(coordinator, DrainCoordinator)
    assert default_drain_coordinator() is coordinator
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, send)
            await _await_state(response, State.STREAMING)
            assert coordinator.open_streams >= 1
            tasks.cancel_scope.cancel()


async def test_app_status_drains_a_raw_asgi_stream(app_status: type[AppStatus]) -> None:
    response = EventSourceResponse(_one_then_wait(), farewell_factory=lambda: "bye")
    sent, send = _collect()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, send)
            await _await_state(response, State.STREAMING)
            app_status.should_exit = True
    assert response.close_reason is CloseReason.SHUTDOWN_FORCED
    assert sent[-2]["body"] == b"data: bye\r\n\r\n"
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_app_status_drains_a_stream_under_a_bare_router(
    app_status: type[AppStatus],
) -> None:
    responses: list[EventSourceResponse] = []

    async def endpoint(request: Request) -> EventSourceResponse:
        response = EventSourceResponse(_one_then_wait())
        responses.append(response)
        return response

    router = Router(routes=[Route("/", endpoint)])
    sent, send = _collect()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(router, http_scope(), never_receive, send)
            while not responses:
                await anyio.lowlevel.checkpoint()  # the endpoint runs at the next step
            await wait_for_state(responses[0], State.STREAMING)
            app_status.should_exit = True
    assert responses[0].close_reason is CloseReason.SHUTDOWN_FORCED
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_an_explicit_coordinator_still_wins_over_the_default() -> None:
    mine = DrainCoordinator(automatic=False)
    response = EventSourceResponse(_one_then_wait(), drain_coordinator=mine)
    _sent, send = _collect()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, send)
            await _await_state(response, State.STREAMING)
            assert mine.open_streams == 1
            mine.request_drain("test")
    assert response.close_reason is CloseReason.SHUTDOWN_FORCED


def _scope_with(app: Any) -> Scope:
    return {**http_scope(), "app": app}


async def test_an_app_without_state_gets_the_default_coordinator() -> None:
    """An ASGI framework's app object with no ``.state``: not an error, the default."""

    class OtherFrameworkApp:
        pass

    response = EventSourceResponse(_one_then_wait())
    _sent, send = _collect()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, _scope_with(OtherFrameworkApp()), never_receive, send)
            await _await_state(response, State.STREAMING)
            default_drain_coordinator().request_drain_on_running_loops("test")
    assert response.close_reason is CloseReason.SHUTDOWN_FORCED


# ------------------------------------------------ sse-starlette 3.7.1's fixes


async def test_an_unrelated_receive_message_does_not_cancel_the_closing_send() -> None:
    """sse-starlette 3.7.1: the final empty body is not cut by a non-disconnect message."""
    closing_send_started = anyio.Event()
    unrelated_delivered = anyio.Event()

    async def receive() -> Message:
        await closing_send_started.wait()
        unrelated_delivered.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        if message.get("more_body") is False:
            closing_send_started.set()
            with anyio.move_on_after(0.5):
                await unrelated_delivered.wait()
        sent.append(message)

    async def one() -> AsyncIterator[str]:
        yield "only"

    response = EventSourceResponse(one(), ping=0)
    with anyio.fail_after(5):
        await response(http_scope(), receive, send)
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert response.close_reason is CloseReason.COMPLETED


async def test_a_stream_cancelled_from_outside_still_ends_its_body() -> None:
    """sse-starlette 3.7.1 sends the closing empty body after a shutdown cancel; so do we."""
    sent, send = _collect()
    response = EventSourceResponse(_one_then_wait(), ping=0)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, send)
            await _await_state(response, State.STREAMING)
            while len(sent) < 2:  # noqa: ASYNC110 - messages are recorded by a plain send(); bounded by fail_after
                await anyio.sleep(0.001)
            tasks.cancel_scope.cancel()
    assert response.close_reason is CloseReason.CANCELLED
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_message_changed_in_place_by_middleware_reaches_no_other_stream() -> None:
    """Middleware may rewrite a message dict in place (a compressor replaces the
    body); every message a response sends must be its own."""

    async def rewriting_send(message: Message) -> None:
        if message["type"] == "http.response.body":
            message["body"] = b"rewritten"

    for method in ("GET", "HEAD"):
        first = EventSourceResponse(_three(), ping=0)
        with anyio.fail_after(5):
            await first(http_scope(method), never_receive, rewriting_send)
        sent, send = _collect()
        second = EventSourceResponse(_three(), ping=0)
        with anyio.fail_after(5):
            await second(http_scope(method), never_receive, send)
        assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
