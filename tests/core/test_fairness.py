"""One stream never starves the others.

uvicorn's ``send()`` returns without yielding while the transport buffer is
below its high-water mark, so a source that produces without awaiting would
hold the event loop: other streams stall and the client's disconnect is never
read.  The fake ``send`` here behaves the same way (no checkpoint).  A source
that never awaits is bounded by a guard count, so that without the pump's
fairness checkpoint this test fails instead of hanging.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
from starlette.types import Message

from sse_sm import CloseReason, EventSourceResponse
from tests._support import http_scope

GUARD = 3_000_000  # far more events than a fair loop needs before the disconnect lands


class GreedySource:
    """Yields as fast as it can and never awaits anything."""

    def __init__(self) -> None:
        self.produced = 0
        self.closed = False

    async def events(self) -> AsyncIterator[str]:
        try:
            while self.produced < GUARD:
                self.produced += 1
                yield "x"
        finally:
            self.closed = True


class Peer:
    """The server side of one connection: a send that never yields, a disconnect on demand."""

    def __init__(self) -> None:
        self.bodies = 0
        self.first_body = anyio.Event()
        self.leave = anyio.Event()

    async def receive(self) -> Message:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            self.bodies += 1
            self.first_body.set()


async def test_a_source_that_never_awaits_leaves_the_loop_to_others() -> None:
    greedy, greedy_peer = GreedySource(), Peer()
    greedy_response = EventSourceResponse(greedy.events(), ping=0)

    async def ticks() -> AsyncIterator[str]:
        for n in range(5):
            yield str(n)
            await anyio.sleep(0.01)

    polite_peer = Peer()
    polite_response = EventSourceResponse(ticks(), ping=0)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(greedy_response, http_scope(), greedy_peer.receive, greedy_peer.send)
            await greedy_peer.first_body.wait()
            # With the greedy stream running, another stream still makes progress...
            await polite_response(http_scope(), polite_peer.receive, polite_peer.send)
            assert polite_peer.bodies == 5
            # ...and the greedy stream's client can still leave.
            greedy_peer.leave.set()
    assert greedy_response.close_reason is CloseReason.CLIENT_DISCONNECTED
    assert greedy.produced < GUARD, "the disconnect was only seen after the guard ran out"
    assert greedy.closed


async def test_a_blocking_sync_source_does_not_delay_the_disconnect() -> None:
    import threading
    import time

    blocked = threading.Event()
    released = threading.Event()
    finished = threading.Event()

    def blocking() -> Iterator[Any]:
        try:
            yield "first"
            blocked.set()
            released.wait(timeout=5)  # a next() that blocks until the test lets it go
            yield "second"
        finally:
            finished.set()

    peer = Peer()
    response = EventSourceResponse(blocking(), ping=0)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), peer.receive, peer.send)
            await peer.first_body.wait()
            assert await anyio.to_thread.run_sync(blocked.wait, 5)
            started = anyio.current_time()
            peer.leave.set()
        elapsed = anyio.current_time() - started
    assert response.close_reason is CloseReason.CLIENT_DISCONNECTED
    assert elapsed < 1.0, f"the response waited {elapsed:.2f} s for a blocked next()"
    assert not finished.is_set(), "the generator is still blocked in its worker thread"
    released.set()
    deadline = time.monotonic() + 5
    while not finished.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110 - measures the loop itself: a wait on the event would not sample it
        await anyio.sleep(0.01)
    assert finished.is_set(), "the worker closed the generator once next() returned"


# ------------------------------------------- the hub's slice, on the loop's clock


def test_the_hubs_publish_slice_is_measured_on_the_loops_clock() -> None:
    """Under a MockClock that runs a billion times faster than real time, a
    publisher's 20 ms slice passes in about 20 ns of real time, so it yields on
    nearly every publish; measured with time.monotonic it would yield only
    after PUBLISH_EVENTS (256) publishes, once in 500."""
    import trio
    import trio.testing

    from sse_sm import Hub

    probe_runs = 0

    async def main() -> None:
        nonlocal probe_runs
        hub = Hub()
        publishing = True

        async def probe() -> None:
            nonlocal probe_runs
            while publishing:
                probe_runs += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe)
            await trio.lowlevel.checkpoint()
            start = probe_runs
            for n in range(500):
                await hub.publish("t", {"data": str(n)})
            publishing = False
            probe_runs -= start

    trio.run(main, clock=trio.testing.MockClock(rate=1e9))
    assert probe_runs > 50, probe_runs
