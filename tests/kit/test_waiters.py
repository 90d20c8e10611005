"""The kit's event-driven waiters: a state, or the close and its reason, without polling."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from starlette.types import Message

from sse_sm import CloseReason, DrainCoordinator, EventSourceResponse, State
from sse_sm.testing import wait_for_close, wait_for_state
from tests._support import http_scope, never_receive

pytestmark = pytest.mark.time_driven


async def _hello_then_wait() -> AsyncIterator[str]:
    yield "hello"
    await anyio.sleep_forever()


async def _discard(message: Message) -> None:
    pass


async def test_wait_for_state_returns_when_the_state_is_reached() -> None:
    response = EventSourceResponse(_hello_then_wait(), ping=0)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, _discard)
            await wait_for_state(response, State.STREAMING)
            assert response.state is State.STREAMING
            tasks.cancel_scope.cancel()
    assert await wait_for_close(response) is CloseReason.CANCELLED


async def test_waiting_for_a_state_never_reached_ends_at_the_close() -> None:
    """Waiting for DRAINING on a stream that completes returns at CLOSED."""

    async def one() -> AsyncIterator[str]:
        yield "only"

    response = EventSourceResponse(one(), ping=0)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, _discard)
            await wait_for_state(response, State.DRAINING)
    assert response.state is State.CLOSED
    assert response.close_reason is CloseReason.COMPLETED


async def test_wait_for_close_gives_the_reason_of_a_drain() -> None:
    coordinator = DrainCoordinator(automatic=False)
    response = EventSourceResponse(
        _hello_then_wait(), ping=0, drain_coordinator=coordinator, shutdown_grace_period=0
    )
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, _discard)
            await wait_for_state(response, State.STREAMING)
            coordinator.request_drain("test")
            assert await wait_for_close(response) is CloseReason.SHUTDOWN_FORCED


async def test_a_wait_already_satisfied_is_still_a_checkpoint() -> None:
    """A checkpoint: a pending cancellation is delivered even when nothing is awaited."""
    response = EventSourceResponse(_hello_then_wait(), ping=0)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await wait_for_state(response, State.OPEN)  # already there
    assert scope.cancelled_caught


async def test_a_cancelled_wait_leaves_no_listener_behind() -> None:
    response = EventSourceResponse(_hello_then_wait(), ping=0)
    listeners = response._machine._listeners  # white box: the machine's listener list
    with anyio.move_on_after(0.01):
        await wait_for_state(response, State.CLOSED)
    assert listeners == []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, _discard)
            await wait_for_state(response, State.STREAMING)
            tasks.cancel_scope.cancel()
    assert response.history[-1].target is State.CLOSED


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
async def test_every_state_can_be_waited_for(state: State) -> None:
    async def one() -> AsyncIterator[str]:
        yield "only"

    response = EventSourceResponse(one(), ping=0)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, _discard)
            await wait_for_state(response, state)
    assert await wait_for_close(response) is CloseReason.COMPLETED
