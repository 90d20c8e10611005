"""A backend with ``watch``: the hub's subscriptions ask it to watch their topic before joining."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from sse_sm import Entry, Hub, MemoryBackend, ServerSentEvent

from .test_hub import data_of, parse, read_available


class _Watching:
    """The memory backend, plus a ``watch`` that records its calls and can be held."""

    def __init__(self) -> None:
        self.inner = MemoryBackend()
        self.watched: list[str] = []
        self.hold: anyio.Event | None = None
        self.fail: BaseException | None = None

    async def watch(self, topic: str) -> None:
        self.watched.append(topic)
        if self.fail is not None:
            raise self.fail
        if self.hold is not None:
            await self.hold.wait()

    async def publish(self, topic: str, event: ServerSentEvent) -> Entry:
        return await self.inner.publish(topic, event)

    async def replay(self, topic: str, last_event_id: str) -> Any:
        return await self.inner.replay(topic, last_event_id)

    def listen(self, listener: Any) -> Any:
        return self.inner.listen(listener)


async def test_the_topic_is_watched_before_the_subscription_joins() -> None:
    backend = _Watching()
    backend.hold = anyio.Event()
    hub = Hub(backend)
    sub = hub.subscribe("t")
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(sub.__anext__)
        try:
            with anyio.fail_after(5):
                while not backend.watched:  # noqa: ASYNC110 - bounded by fail_after
                    await anyio.sleep(0.001)
            assert hub.statistics().subscribers == 0  # not joined while the watch is under way
            backend.hold.set()
            with anyio.fail_after(5):
                while hub.statistics().subscribers == 0:  # noqa: ASYNC110 - bounded by fail_after
                    await anyio.sleep(0.001)
            await hub.publish("t", "x")
        finally:
            tasks.cancel_scope.cancel()
    assert backend.watched == ["t"]
    await sub.aclose()


async def test_a_subscription_cancelled_while_watching_starts_again_on_its_next_read() -> None:
    backend = _Watching()
    backend.hold = anyio.Event()
    hub = Hub(backend)
    sub = hub.subscribe("t")
    with anyio.move_on_after(0.05):
        await sub.__anext__()
    assert not sub.statistics().joined
    assert not sub.statistics().closed
    backend.hold = None
    with anyio.move_on_after(0.05):
        await sub.__anext__()  # joins, then waits for an event
    assert sub.statistics().joined
    await hub.publish("t", "after")
    assert data_of(parse(await read_available(sub))) == ["after"]
    assert backend.watched == ["t", "t"]


async def test_a_failing_watch_reaches_the_reader_and_joins_nothing() -> None:
    backend = _Watching()
    backend.fail = RuntimeError("the backend is not running")
    hub = Hub(backend)
    sub = hub.subscribe("t")
    with anyio.fail_after(5), pytest.raises(RuntimeError, match="not running"):
        await sub.__anext__()
    assert hub.statistics().subscribers == 0
    await sub.aclose()


async def test_the_memory_backend_has_no_watch_and_joins_without_suspending() -> None:
    assert not hasattr(MemoryBackend(), "watch")
