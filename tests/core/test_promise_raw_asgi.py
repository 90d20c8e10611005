"""Promise: a response works as a bare ASGI app, whatever the server hands it.

docs/design.md sections 4-6 say what the driver does with each message and
each failure of ``receive`` and ``send``; section 10: "Running one response
twice raises TransitionError before anything is sent".  These tests call the
response with no framework around it and a server that misbehaves in each
way a real one might (or a test double would).
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from starlette.types import Message

from sse_sm import CloseReason, EventSourceResponse, State, TransitionError
from tests._promise import drive, leaf, numbers
from tests._support import http_scope, websocket_scope

pytestmark = pytest.mark.anyio


async def test_a_receive_that_raises_closes_with_error_and_reraises() -> None:
    for raised in (RuntimeError("receive broke"), ConnectionResetError("receive broke")):

        async def receive(raised: Exception = raised) -> Message:
            await anyio.sleep(0.01)
            raise raised

        response = EventSourceResponse(numbers(5, delay=0.02))
        outcome = await drive(response, receive=receive)
        assert response.close_reason is CloseReason.ERROR
        assert leaf(outcome.error) is raised
        assert not outcome.wire.ended_cleanly


async def test_a_disconnect_before_anything_is_sent_sends_no_event() -> None:
    async def receive() -> Message:
        return {"type": "http.disconnect"}

    handled: list[Message] = []

    async def on_close(message: Message) -> None:
        handled.append(message)

    response = EventSourceResponse(numbers(5), client_close_handler_callable=on_close)
    outcome = await drive(response, receive=receive)
    assert outcome.error is None
    assert response.close_reason is CloseReason.CLIENT_DISCONNECTED
    # The watcher runs beside the header send (as in sse-starlette), so a
    # disconnect that is already there may cut the headers too: either way
    # no event and no end of body reaches a client that left.
    assert [m["type"] for m in outcome.wire.messages] in (["http.response.start"], [])
    assert handled == [{"type": "http.disconnect"}]


@pytest.mark.parametrize(
    "message",
    [
        {"type": "http.request", "body": b"more", "more_body": True},
        {"type": "lifespan.startup"},
        {"type": "websocket.receive", "text": "hi"},
        {"type": "http.disconnected"},  # a near miss is not a disconnect
    ],
)
async def test_unexpected_messages_from_receive_are_ignored(message: Message) -> None:
    async def receive() -> Message:
        await anyio.sleep(0.005)
        return message

    response = EventSourceResponse(numbers(4, delay=0.01))
    outcome = await drive(response, receive=receive)
    assert outcome.error is None
    assert response.close_reason is CloseReason.COMPLETED
    assert b"".join(outcome.wire.bodies).count(b"data: ") == 4
    assert outcome.wire.ended_cleanly


@pytest.mark.parametrize("message", [{}, None, "http.disconnect"])
async def test_a_malformed_message_from_receive_closes_with_error(message: Any) -> None:
    async def receive() -> Any:
        await anyio.sleep(0.005)
        return message

    response = EventSourceResponse(numbers(4, delay=0.02))
    outcome = await drive(response, receive=receive)
    assert response.close_reason is CloseReason.ERROR
    assert isinstance(leaf(outcome.error), (KeyError, TypeError))


@pytest.mark.parametrize(
    ("raised", "reason"),
    [
        (ConnectionResetError, CloseReason.CLIENT_DISCONNECTED),
        (BrokenPipeError, CloseReason.CLIENT_DISCONNECTED),
        (OSError, CloseReason.CLIENT_DISCONNECTED),
        (RuntimeError, CloseReason.ERROR),
        (anyio.BrokenResourceError, CloseReason.ERROR),
        (anyio.ClosedResourceError, CloseReason.ERROR),
    ],
)
@pytest.mark.parametrize("at", [1, 2])
async def test_a_send_that_raises_closes_by_the_documented_rule(
    raised: type[Exception], reason: CloseReason, at: int
) -> None:
    """``OSError`` is a client that left; anything else is an error, re-raised."""
    calls = 0

    async def send(message: Message) -> None:
        nonlocal calls
        calls += 1
        await anyio.lowlevel.checkpoint()
        if calls == at + 1:  # the at-th body message
            raise raised("send broke")

    response = EventSourceResponse(numbers(5))
    outcome = await drive(response, send=send)
    assert response.close_reason is reason
    if reason is CloseReason.ERROR:
        assert isinstance(leaf(outcome.error), raised)
    else:
        assert outcome.error is None
    assert calls == at + 1  # nothing was sent after the failure


async def test_a_response_awaited_twice_in_turn_refuses_the_second_time() -> None:
    response = EventSourceResponse(numbers(2))
    first = await drive(response)
    assert first.error is None
    second = await drive(response)
    assert isinstance(second.error, TransitionError)
    assert second.wire.messages == []


async def test_a_head_response_refuses_to_stream_afterwards() -> None:
    response = EventSourceResponse(numbers(2))
    head = await drive(response, scope=http_scope("HEAD"))
    assert response.close_reason is CloseReason.HEAD
    assert [m.get("more_body", False) for m in head.wire.messages] == [False, False]
    again = await drive(response)
    assert isinstance(again.error, TransitionError)
    assert again.wire.messages == []


async def test_a_response_awaited_twice_at_once_sends_nothing_the_second_time() -> None:
    response = EventSourceResponse(numbers(50, delay=0.001))
    outcomes: list[Any] = []

    async def run_once() -> None:
        outcomes.append(await drive(response))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run_once)
        tasks.start_soon(run_once)
    refused = [o for o in outcomes if isinstance(o.error, TransitionError)]
    streamed = [o for o in outcomes if o.error is None]
    assert len(refused) == 1
    assert len(streamed) == 1
    assert refused[0].wire.messages == []  # "before anything is sent"
    assert b"".join(streamed[0].wire.bodies).count(b"data: ") == 50


async def test_a_websocket_scope_gets_a_denial_response_and_its_disconnect_counts() -> None:
    arrivals = iter([{"type": "websocket.connect"}])

    async def receive() -> Message:
        for message in arrivals:
            return message
        await anyio.sleep(0.03)
        return {"type": "websocket.disconnect", "code": 1001}

    response = EventSourceResponse(numbers(100, delay=0.005))
    outcome = await drive(response, scope=websocket_scope(), receive=receive)
    assert outcome.error is None
    assert response.close_reason is CloseReason.CLIENT_DISCONNECTED
    kinds = {m["type"] for m in outcome.wire.messages}
    assert kinds == {"websocket.http.response.start", "websocket.http.response.body"}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_receive_raising_cancelled_error_by_itself_still_closes(
    anyio_backend: str,
) -> None:
    import asyncio

    async def receive() -> Message:
        await anyio.sleep(0.02)
        raise asyncio.CancelledError  # e.g. a middleware's own cancelled wait

    response = EventSourceResponse(numbers(5, delay=0.01))
    await drive(response, receive=receive)
    assert response.state is State.CLOSED
    assert response.close_reason is not None


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_send_raising_cancelled_error_by_itself_is_a_failure(
    anyio_backend: str,
) -> None:
    import asyncio

    calls = 0

    async def send(message: Message) -> None:
        nonlocal calls
        calls += 1
        await anyio.lowlevel.checkpoint()
        if calls == 3:
            raise asyncio.CancelledError

    response = EventSourceResponse(numbers(5, delay=0.01))
    outcome = await drive(response, send=send)
    # No cancel scope and no cancel() of the task caused it: a failure like
    # any other, recorded as such and re-raised.
    assert response.close_reason is CloseReason.ERROR
    assert isinstance(outcome.error, asyncio.CancelledError)


async def test_an_app_without_state_in_the_scope_streams_without_a_coordinator() -> None:
    for app in (object(), None, "not an app"):
        response = EventSourceResponse(numbers(2))
        outcome = await drive(response, scope={**http_scope(), "app": app})
        assert outcome.error is None
        assert response.close_reason is CloseReason.COMPLETED
