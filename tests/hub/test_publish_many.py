"""``Hub.publish_many`` and ``MemoryBackend.publish_many``: several events in one call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from sse_sm import Entry, Hub, MemoryBackend, ServerSentEvent, SlowConsumerPolicy

from .test_hub import data_of, join, parse, read_available


async def test_publish_many_returns_the_ids_in_order_and_delivers_them_in_order() -> None:
    hub = Hub()
    sub = hub.subscribe("t")
    await join(hub, sub)
    ids = await hub.publish_many("t", ["a", {"data": "b", "event": "x"}, ServerSentEvent("c")])
    events = parse(await read_available(sub))
    assert [event.data for event in events] == ["a", "b", "c"]
    assert [event.id for event in events] == ids
    assert events[1].event == "x"
    assert hub.statistics().published == 4  # the hello too
    assert hub.statistics().topics["t"].published == 4


async def test_publish_many_takes_any_iterable_and_an_empty_one() -> None:
    hub = Hub()
    ids = await hub.publish_many("t", (str(n) for n in range(3)))
    assert [entry.id for entry in (await hub.backend.replay("t", "")).entries] == ids
    assert await hub.publish_many("t", []) == []
    assert hub.statistics().published == 3


async def test_a_bad_item_stores_nothing_and_the_error_names_its_place() -> None:
    backend = MemoryBackend()
    hub = Hub(backend)
    first = await hub.publish("t", "first")
    with pytest.raises(TypeError, match=r"^items\[1\]: .*bytes"):
        await hub.publish_many("t", ["ok", b"raw"])
    with pytest.raises(ValueError, match=r"^items\[0\]: "):
        await hub.publish_many("t", [{"data": "x", "event": "a\nb"}])
    with pytest.raises(TypeError, match=r"^items\[0\]: unknown ServerSentEvent field"):
        await hub.publish_many("t", [{"nope": 1}])
    replay = await backend.replay("t", first)
    assert replay.entries == ()
    assert replay.gap is None
    nxt = await hub.publish("t", "next")
    assert [e.id for e in (await backend.replay("t", first)).entries] == [nxt]


@pytest.mark.parametrize(
    ("items", "kind"),
    [("abc", "str"), (b"abc", "bytes"), ({"data": "x"}, "dict"), (42, "int")],
)
async def test_one_item_instead_of_several_is_refused(items: Any, kind: str) -> None:
    hub = Hub()
    with pytest.raises(TypeError, match=rf"^items must be an iterable of items, got {kind}"):
        await hub.publish_many("t", items)
    with pytest.raises(TypeError, match=r"^topic must be a str"):
        await hub.publish_many(1, ["x"])  # type: ignore[arg-type]


async def test_a_closed_hub_refuses_publish_many() -> None:
    hub = Hub()
    hub.close()
    with pytest.raises(anyio.ClosedResourceError):
        await hub.publish_many("t", ["x"])


async def test_the_memory_backend_checks_its_events() -> None:
    backend = MemoryBackend()
    with pytest.raises(TypeError, match=r"^events must be a sequence"):
        await backend.publish_many("t", "abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^events\[1\] must be a ServerSentEvent, got str"):
        await backend.publish_many("t", [ServerSentEvent("a"), "b"])  # type: ignore[list-item]
    assert backend.store.statistics().events == 0


async def test_a_failing_clock_half_way_delivers_exactly_what_was_stored() -> None:
    calls = 0

    def clock() -> float:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError("clock broke")
        return float(calls)

    backend = MemoryBackend(max_age=1000, max_events=None, clock=clock)
    seen: list[Entry] = []
    backend.listen(seen.append)
    events = [ServerSentEvent(str(n)) for n in range(4)]
    with pytest.raises(OSError, match="clock broke"):
        await backend.publish_many("t", events)
    stored = (await backend.replay("t", "")).entries
    assert [entry.frame for entry in seen] == [entry.frame for entry in stored]
    assert len(seen) == 2


async def test_a_block_subscriber_makes_publish_many_wait_for_room_event_by_event() -> None:
    hub = Hub(policy=SlowConsumerPolicy.BLOCK, block_timeout=None, buffer_size=2)
    sub = hub.subscribe("t")
    await join(hub, sub)
    frames: list[bytes] = []
    async with anyio.create_task_group() as tasks:

        async def consume() -> None:
            async for frame in sub:
                frames.append(frame)
                if len(frames) == 10:
                    return

        tasks.start_soon(consume)
        with anyio.fail_after(10):
            await hub.publish_many("t", [str(n) for n in range(10)])
    assert data_of(parse(frames)) == [str(n) for n in range(10)]
    assert hub.statistics().slow_disconnects == 0


class _OnlyThree:
    """A backend with the three required methods only: publish_many falls back to publish."""

    def __init__(self) -> None:
        self.inner = MemoryBackend()
        self.calls = 0

    async def publish(self, topic: str, event: ServerSentEvent) -> Entry:
        self.calls += 1
        return await self.inner.publish(topic, event)

    async def replay(self, topic: str, last_event_id: str) -> Any:
        return await self.inner.replay(topic, last_event_id)

    def listen(self, listener: Any) -> Any:
        return self.inner.listen(listener)


async def test_a_backend_without_publish_many_gets_one_publish_per_item() -> None:
    backend = _OnlyThree()
    hub = Hub(backend)
    ids = await hub.publish_many("t", ["a", "b"])
    assert backend.calls == 2
    entries: Sequence[Entry] = (await backend.replay("t", "")).entries
    assert [entry.id for entry in entries] == ids
