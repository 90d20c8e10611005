"""Promise: one stream cannot starve the others.

docs/design.md section 7 ("Fairness"): a source that never awaits, behind a
``send()`` that does not yield (uvicorn below its high-water mark), would
hold the loop; the pump checkpoints once ``FAIRNESS_SLICE`` (2 ms) has passed
or ``FAIRNESS_EVENTS`` (1024) events were sent.  docs/hub.md section 3: a
publishing loop yields after 20 ms or 256 publishes, so it cannot starve the
subscribers it feeds.

Every test here bounds the attacker itself (it gives up after a number of
events or a wall-clock second), so a starved loop makes the test fail, not
hang: a fail_after cannot fire while one task holds the loop.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

import anyio
import anyio.lowlevel
import pytest
from starlette.types import Message

from sse_sm import CloseReason, EventSourceResponse, Hub, ServerSentEvent, SlowConsumerPolicy
from tests._promise import drive, numbers

pytestmark = pytest.mark.anyio

HOG_SECONDS = 1.5


async def _hog() -> AsyncGenerator[str, None]:
    """A source that never awaits, for at most HOG_SECONDS of wall time."""
    give_up = time.monotonic() + HOG_SECONDS
    while time.monotonic() < give_up:
        yield "x"


async def _non_yielding_send(message: Message) -> None:
    """A server send below its high-water mark: no checkpoint."""


async def test_a_source_that_never_awaits_does_not_starve_another_stream() -> None:
    arrivals: list[float] = []

    async def record(message: Message) -> None:
        await anyio.lowlevel.checkpoint()
        if message.get("body"):
            arrivals.append(time.monotonic())

    async def leave_later() -> Message:
        await anyio.sleep(0.2)
        return {"type": "http.disconnect"}

    hog = EventSourceResponse(_hog())
    polite = EventSourceResponse(numbers(40, delay=0.002))
    started = time.monotonic()
    async with anyio.create_task_group() as tasks:

        async def run_polite() -> None:
            await drive(polite, receive=_never_leave, send=record)

        tasks.start_soon(run_polite)
        hog_outcome = await drive(hog, receive=leave_later, send=_non_yielding_send)
        hog_ended = time.monotonic() - started
    # The hog noticed its client leaving (its watcher ran) before it gave up.
    assert hog.close_reason is CloseReason.CLIENT_DISCONNECTED
    assert hog_outcome.error is None
    assert hog_ended < HOG_SECONDS * 0.6
    # The polite stream kept flowing meanwhile: no silence near the hog's length
    # (the slice is 2 ms; 150 ms leaves room for a loaded machine).
    assert len(arrivals) == 40
    gaps = [b - a for a, b in zip([started, *arrivals[:-1]], arrivals, strict=True)]
    assert max(gaps) < 0.15, max(gaps)


async def _never_leave() -> Message:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def test_a_receive_that_never_suspends_does_not_starve_the_stream() -> None:
    calls = 0
    spin_for = 20_000  # then it behaves, so that a starved test ends and fails

    async def busy_receive() -> Message:
        nonlocal calls
        calls += 1
        if calls > spin_for:
            await anyio.sleep_forever()
        return {"type": "http.request", "body": b"", "more_body": True}

    calls_at_send: list[int] = []

    async def send(message: Message) -> None:
        await anyio.lowlevel.checkpoint()
        calls_at_send.append(calls)

    response = EventSourceResponse(numbers(5))
    outcome = await drive(response, receive=busy_receive, send=send)
    assert outcome.error is None
    assert response.close_reason is CloseReason.COMPLETED
    # The stream finished long before the receive stopped spinning.
    assert calls_at_send[-1] < spin_for // 2, calls_at_send


async def test_a_huge_single_event_is_sent_whole_and_the_loop_recovers() -> None:
    size = 8 * 1024 * 1024
    payload = "x" * size

    async def one_huge() -> AsyncGenerator[ServerSentEvent, None]:
        yield ServerSentEvent(payload, id="big")
        yield ServerSentEvent("after", id="small")

    response = EventSourceResponse(one_huge())
    started = time.monotonic()
    outcome = await drive(response, limit=20)
    elapsed = time.monotonic() - started
    assert outcome.error is None
    assert response.close_reason is CloseReason.COMPLETED
    bodies = outcome.wire.bodies
    assert bodies[0] == b"id: big\r\ndata: " + payload.encode() + b"\r\n\r\n"
    assert bodies[1] == b"id: small\r\ndata: after\r\n\r\n"
    # Linear, not quadratic: 8 MiB is encoded in in seconds, not minutes.
    assert elapsed < 5.0, elapsed


async def test_a_huge_multiline_event_is_linear() -> None:
    lines = 200_000
    payload = "ab\n" * lines

    async def one() -> AsyncGenerator[ServerSentEvent, None]:
        yield ServerSentEvent(payload)

    response = EventSourceResponse(one())
    started = time.monotonic()
    outcome = await drive(response, limit=20)
    elapsed = time.monotonic() - started
    assert outcome.error is None
    assert outcome.wire.bodies[0].count(b"data: ab\r\n") == lines
    assert elapsed < 5.0, elapsed


async def test_a_tight_publishing_loop_does_not_starve_its_subscriber() -> None:
    """With a buffer larger than the publish budget, a subscriber is never let go."""
    hub = Hub(buffer_size=1100, policy=SlowConsumerPolicy.DISCONNECT)
    total = 30_000
    received = 0
    with anyio.fail_after(20):
        async with hub.subscribe("t") as sub, anyio.create_task_group() as tasks:

            async def consume() -> None:
                nonlocal received
                async for _ in sub:
                    received += 1
                    if received == total:
                        return

            tasks.start_soon(consume)
            while hub.statistics().subscribers == 0:  # noqa: ASYNC110 - joining has no event of its own; bounded by fail_after
                await anyio.sleep(0.001)
            for n in range(total):
                await hub.publish("t", str(n))  # never waits: only the fairness yield
    stats = hub.statistics()
    assert stats.slow_disconnects == 0
    assert received == total
    hub.close()
