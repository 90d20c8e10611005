"""Promise: nothing outlives a connection or a subscription.

docs/design.md section 4: "No task outlives Connection.run"; the pump
unregisters from its coordinator when it returns; the source is closed on
every path.  docs/hub.md section 4: "every way a stream ends takes its
subscriber out of the topic and frees its buffer", and a subscription
dropped without ``aclose()`` is released by a finalizer.

Each test runs thousands of connections that end in every way the driver
knows, then counts what is left: tasks on the loop (anyio's task
introspection), objects of ours in the garbage collector, coordinator
registrations, hub subscribers and topics, and traced memory.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from collections.abc import AsyncGenerator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from starlette.types import Message

from sse_sm import (
    CloseReason,
    DrainCoordinator,
    EventSourceResponse,
    Hub,
    ServerSentEvent,
    SlowConsumerPolicy,
)
from sse_sm._connection import Connection
from sse_sm.hub._subscription import Subscription
from tests._promise import drive

pytestmark = pytest.mark.anyio

STREAMS = 1500  # per round; two rounds
ENDINGS = ("completed", "disconnect", "error", "send_timeout", "drain", "oserror", "head")


def _task_count() -> int:
    """Tasks alive on this loop, by anyio's own introspection."""
    return len(anyio.get_running_tasks())


def _live(kind: type) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


async def _one_stream(
    ending: str, coordinator: DrainCoordinator, started: list[int], closed: list[int]
) -> None:
    """One connection that ends the given way; counts its source's start and finally.

    A drain uses a coordinator of its own, so that it drains only this stream.
    """
    if ending == "drain":
        coordinator = DrainCoordinator(automatic=False)

    async def source() -> AsyncGenerator[ServerSentEvent, None]:
        started.append(1)
        try:
            for n in range(3):
                yield ServerSentEvent(str(n))
            if ending == "error":
                raise RuntimeError("source failed")
            if ending in ("completed", "head"):
                return
            await anyio.sleep_forever()
        finally:
            closed.append(1)

    async def receive() -> Message:
        if ending == "disconnect":
            await anyio.sleep(0.001)
            return {"type": "http.disconnect"}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    sent = 0

    async def send(message: Message) -> None:
        nonlocal sent
        sent += 1
        await anyio.lowlevel.checkpoint()
        if sent == 3 and ending == "send_timeout":
            await anyio.sleep_forever()
        if sent == 3 and ending == "oserror":
            raise BrokenPipeError("gone")

    response = EventSourceResponse(
        source(), send_timeout=0.2, ping=0.02, drain_coordinator=coordinator
    )
    scope: dict[str, Any] = {
        "type": "http",
        "method": "HEAD" if ending == "head" else "GET",
        "headers": [],
    }
    async with anyio.create_task_group() as tasks:
        if ending == "drain":

            async def drain_soon() -> None:
                await anyio.sleep(0.002)
                coordinator.request_drain("test")

            tasks.start_soon(drain_soon)
        await drive(response, scope=scope, receive=receive, send=send)
    assert response.close_reason is not None


async def _round(coordinator: DrainCoordinator, started: list[int], closed: list[int]) -> None:
    """STREAMS connections, 250 at a time, cycling through every ending."""
    for start in range(0, STREAMS, 250):
        async with anyio.create_task_group() as tasks:
            for n in range(start, start + 250):
                ending = ENDINGS[n % len(ENDINGS)]
                tasks.start_soon(_one_stream, ending, coordinator, started, closed)


async def test_thousands_of_streams_leave_no_task_object_or_registration() -> None:
    coordinator = DrainCoordinator(automatic=False)
    started: list[int] = []
    closed: list[int] = []
    baseline_tasks = _task_count()
    baseline_connections = _live(Connection)
    with anyio.fail_after(120):
        # A first round fills what grows once (weak dicts, sets, interned
        # strings); the second must leave (almost) nothing behind.
        await _round(coordinator, [], [])
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            await _round(coordinator, started, closed)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    # trio keeps cancelled and finished scopes in its deadline heap until their
    # deadline passes or the heap is pruned (lazily): bounded, and not ours.
    lazy = (f"{os.sep}trio{os.sep}_core{os.sep}", f"{os.sep}anyio{os.sep}_backends{os.sep}_trio.py")
    ours = [
        stat
        for stat in after.compare_to(before, "filename")
        if not any(part in stat.traceback[0].filename for part in lazy)
    ]
    grown = sum(stat.size_diff for stat in ours)
    top = sorted(ours, key=lambda stat: -stat.size_diff)[:5]
    assert _task_count() == baseline_tasks
    assert _live(Connection) == baseline_connections
    # Every source that started had its finally run.  (HEAD never starts one,
    # nor does a stream whose headers time out on the crowded loop.)
    assert len(started) > STREAMS // 4
    assert len(closed) == len(started)
    assert coordinator._registrations == type(coordinator._registrations)()
    # Measured on asyncio: about 11 kB for the second 1,500 (the first: about
    # 78 kB), up to 84 kB when a dict or set happens to double its capacity in
    # the second round.  Leaking one Connection (with its machine, scopes and
    # events, far over 80 bytes) per stream would show.
    assert grown < 120_000, f"{grown} bytes still allocated after {STREAMS} streams: {top}"


async def test_hub_streams_ending_every_way_release_every_subscriber() -> None:
    hub = Hub(buffer_size=4, policy=SlowConsumerPolicy.DISCONNECT)
    coordinator = DrainCoordinator(automatic=False)
    outcomes: dict[CloseReason | None, int] = {}
    quick_ones = 0
    quick_done = anyio.Event()

    async def one(n: int) -> None:
        kind = n % 4
        response = EventSourceResponse(
            hub.subscribe(f"topic-{n % 7}"), send_timeout=0.02, drain_coordinator=coordinator
        )

        async def receive() -> Message:
            if kind == 0:
                await anyio.sleep(0.005)
                return {"type": "http.disconnect"}
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            await anyio.lowlevel.checkpoint()
            if kind == 1 and message.get("body"):
                await anyio.sleep_forever()  # a stalled client: send_timeout

        await drive(response, receive=receive, send=send)
        outcomes[response.close_reason] = outcomes.get(response.close_reason, 0) + 1
        if kind in (0, 1):
            nonlocal quick_ones
            quick_ones += 1
            if quick_ones == 400:
                quick_done.set()

    async def publisher() -> None:
        n = 0
        while True:
            await hub.publish(f"topic-{n % 7}", str(n))
            n += 1
            if n % 7 == 0:
                await anyio.sleep(0.001)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as outer:
            outer.start_soon(publisher)
            async with anyio.create_task_group() as tasks:
                for n in range(800):
                    tasks.start_soon(one, n)
                await quick_done.wait()  # the departures and the stalls have ended
                # What is still open (kinds 2 and 3) ends by the drain.
                coordinator.request_drain("test")
            outer.cancel_scope.cancel()
    stats = hub.statistics()
    assert stats.subscribers == 0
    assert dict(stats.topics) == {}
    assert stats.buffered == 0
    assert _live(Subscription) == 0
    assert None not in outcomes
    assert CloseReason.CLIENT_DISCONNECTED in outcomes
    assert CloseReason.SEND_TIMEOUT in outcomes
    hub.close()


async def test_abandoned_subscriptions_are_released_after_collection() -> None:
    hub = Hub()
    for n in range(500):
        sub = hub.subscribe(f"t{n % 10}")
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sub.__anext__)
            await anyio.lowlevel.checkpoint()
            while hub.statistics().subscribers == 0:
                await anyio.lowlevel.checkpoint()
            tasks.cancel_scope.cancel()
        del sub  # dropped without aclose()
    gc.collect()
    await anyio.sleep(0.01)  # the finalizers scheduled their release on this loop
    stats = hub.statistics()
    assert stats.subscribers == 0
    assert dict(stats.topics) == {}
    hub.close()
