"""A publish that fails leaves the store exactly as it was: the replay store never lies.

The scenario of every test: publish ``a``, a publish that fails, publish ``b``.
Whatever failed, and wherever, ``b`` must take the place the failed event
never had: the sequence goes on from ``a``'s, a client resuming after ``a``
gets exactly ``b`` (no duplicate ``a``, no gap), and a live subscriber gets
``a`` then ``b``.  The store is checked directly, through the hub on asyncio
and trio, and through a real Redis.

Failures tried: values the constructor refuses (a retry no client can read,
data whose ``str()`` raises, the same as dict fields), and failures past
validation, which the public API can no longer produce but a subclass or a
bug can (an encoder that raises, a clock that raises, a subscriber's buffer
that raises).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from sse_sm import Hub, MemoryBackend, ServerSentEvent, SlowConsumerError
from sse_sm.hub._buffers import DropMarker
from sse_sm.hub._replay import Entry, MemoryReplayStore
from tests._redis import RedisServer, require_coredis, running_redis
from tests.hub.test_hub import data_of, gaps_of, join, parse, read_available

#: More decimal digits than Python writes by default: no encoder can write it.
HUGE = 10**5000


class Unprintable:
    """Data whose ``str()`` raises."""

    def __str__(self) -> str:
        raise ValueError("no text for this value")


class EncoderFails(ServerSentEvent):
    """An event whose own encoder raises: a failure past the constructor's checks."""

    __slots__ = ()

    def encode(self) -> bytes:
        raise RuntimeError("this encoder is broken")


def unwritable_retry() -> ServerSentEvent:
    """An event holding a retry no encoder can write, its checks bypassed (as a bug could)."""
    event = ServerSentEvent("x")
    event._retry = HUGE  # the slot itself: the setter would refuse it
    return event


#: What a failed publish is given, how it fails, and what the error must say.
REFUSED: list[tuple[Callable[[], object], type[Exception], str]] = [
    (lambda: ServerSentEvent("x", retry=HUGE), ValueError, r"^retry\b"),
    (lambda: ServerSentEvent("x", retry=2**64), ValueError, r"^retry\b"),
    (lambda: {"data": "x", "retry": HUGE}, ValueError, r"^retry\b"),
    (lambda: {"data": "x", "id": HUGE}, ValueError, r"^id\b"),
    (lambda: {"data": Unprintable()}, ValueError, r"^data\b"),
    (Unprintable, ValueError, r"^data\b"),
    (lambda: ServerSentEvent(Unprintable()), ValueError, r"^data\b"),
]
REFUSED_IDS = [
    "event-retry-1e5000",
    "event-retry-2**64",
    "dict-retry-1e5000",
    "dict-id-1e5000",
    "dict-data-str-raises",
    "item-str-raises",
    "event-data-str-raises",
]
#: Failures past validation: the store itself must not consume anything.
PAST_VALIDATION: list[tuple[Callable[[], object], type[Exception], str]] = [
    (unwritable_retry, ValueError, "digits"),
    (lambda: EncoderFails("x", id="mine"), RuntimeError, "broken"),
]
PAST_VALIDATION_IDS = ["retry-unchecked", "encoder-raises"]
FAILURES = REFUSED + PAST_VALIDATION
FAILURE_IDS = REFUSED_IDS + PAST_VALIDATION_IDS


# ------------------------------------------------------------------ the store


class Clock:
    """Seconds that stand still, and raise while ``broken`` is set."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.broken = False

    def __call__(self) -> float:
        if self.broken:
            raise OSError("the clock is unavailable")
        return self.now


def snapshot(store: MemoryReplayStore, topic: str, after: str) -> tuple[Any, ...]:
    replay = store.replay_nowait(topic, after)
    return (store.statistics(), replay.entries, replay.gap, replay.head)


@pytest.mark.parametrize(("make", "error", "match"), PAST_VALIDATION, ids=PAST_VALIDATION_IDS)
def test_a_failed_append_leaves_the_store_as_it_was(
    make: Callable[[], ServerSentEvent], error: type[Exception], match: str
) -> None:
    store = MemoryReplayStore(new_epoch=lambda: "ep")
    a = store.append_nowait("t", ServerSentEvent("a"))
    before = snapshot(store, "t", a.id)
    with pytest.raises(error, match=match):
        store.append_nowait("t", make())
    assert snapshot(store, "t", a.id) == before
    b = store.append_nowait("t", ServerSentEvent("b"))
    assert (a.id, b.id) == ("ep-0000000000000001", "ep-0000000000000002")
    assert b.position == a.position + 1
    replay = store.replay_nowait("t", a.id)
    assert (replay.entries, replay.gap) == ((b,), None)


def test_a_failed_first_append_creates_no_log() -> None:
    epochs = iter(["first", "second"])
    store = MemoryReplayStore(new_epoch=lambda: next(epochs))
    with pytest.raises(ValueError, match="digits"):
        store.append_nowait("t", unwritable_retry())
    assert store.statistics().topics == 0
    assert store.append_nowait("t", ServerSentEvent("a")).id.endswith("-0000000000000001")


def test_a_failed_publisher_id_is_not_indexed() -> None:
    store = MemoryReplayStore(new_epoch=lambda: "ep")
    store.append_nowait("t", ServerSentEvent("a"))
    with pytest.raises(RuntimeError):
        store.append_nowait("t", EncoderFails("x", id="mine"))
    replay = store.replay_nowait("t", "mine")
    assert replay.gap is not None  # unknown: nothing was stored under that id
    assert [entry.id for entry in replay.entries] == ["ep-0000000000000001"]


def test_a_clock_that_fails_during_an_append_stores_nothing() -> None:
    clock = Clock()
    store = MemoryReplayStore(max_age=60, clock=clock, new_epoch=lambda: "ep")
    a = store.append_nowait("t", ServerSentEvent("a"))
    before = snapshot(store, "t", a.id)
    clock.broken = True
    with pytest.raises(OSError, match="clock"):
        store.append_nowait("t", ServerSentEvent("x"))
    clock.broken = False
    assert snapshot(store, "t", a.id) == before
    b = store.append_nowait("t", ServerSentEvent("b"))
    assert b.id == "ep-0000000000000002"
    assert store.replay_nowait("t", a.id).entries == (b,)


# ------------------------------------------------------------------ the hub


@pytest.mark.parametrize(("make", "error", "match"), FAILURES, ids=FAILURE_IDS)
async def test_resume_after_a_failed_publish_gets_exactly_what_followed(
    make: Callable[[], object], error: type[Exception], match: str
) -> None:
    hub = Hub(MemoryBackend(new_epoch=lambda: "ep"))
    live = hub.subscribe("t")
    with anyio.fail_after(5):
        hello = await join(hub, live)
        a = await hub.publish("t", "a")
        with pytest.raises(error, match=match):
            await hub.publish("t", make())
        b = await hub.publish("t", "b")
        assert (hello.id, a, b) == (
            "ep-0000000000000001",
            "ep-0000000000000002",
            "ep-0000000000000003",
        )
        assert data_of(parse(await read_available(live))) == ["a", "b"]
        await live.aclose()
        async with hub.subscribe("t", last_event_id=a) as resumed:
            events = parse(await read_available(resumed))
    assert [(event.id, event.data) for event in events] == [(b, "b")]
    assert gaps_of(events) == []
    statistics = hub.statistics()
    assert statistics.published == 3  # hello, a and b
    assert statistics.buffered == 0


class BrokenBuffer(deque[Entry | DropMarker]):
    """A subscriber's buffer that cannot take an entry (memory exhausted, say)."""

    def append(self, item: Entry | DropMarker) -> None:
        raise MemoryError("no room for one more entry")


async def test_a_subscriber_whose_buffer_fails_is_let_go_and_resumes_without_a_hole() -> None:
    """The event is stored; the others get it; the failing one is let go and resumes."""
    hub = Hub(MemoryBackend(new_epoch=lambda: "ep"))
    failing, healthy = hub.subscribe("t"), hub.subscribe("t")
    with anyio.fail_after(5):
        hello = await join(hub, failing, healthy)
        state = failing._state
        assert state is not None
        state.buffer = BrokenBuffer()
        x = await hub.publish("t", "x")
        assert data_of(parse(await read_available(healthy))) == ["x"]
        with pytest.raises(SlowConsumerError, match="MemoryError") as caught:
            await failing.__anext__()
        assert x in str(caught.value)  # names the event it could not take
        async with hub.subscribe("t", last_event_id=hello.id) as resumed:
            events = parse(await read_available(resumed))
        await healthy.aclose()
    assert [(event.id, event.data) for event in events] == [(x, "x")]
    assert hub.statistics().subscribers == 0


# ------------------------------------------------------------------ Redis


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    require_coredis()
    with running_redis(tmp_path) as server:
        yield server


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [*REFUSED, PAST_VALIDATION[0]],
    ids=[*REFUSED_IDS, PAST_VALIDATION_IDS[0]],
)
async def test_redis_resume_after_a_failed_publish_gets_exactly_what_followed(
    redis: RedisServer, make: Callable[[], object], error: type[Exception], match: str
) -> None:
    from sse_sm.redis import RedisBackend

    options: dict[str, Any] = {"read_block": 1.0, "command_timeout": 5.0}
    with anyio.fail_after(20):
        async with RedisBackend(redis.url, topics=["t"], **options) as backend:
            hub = Hub(backend)
            try:
                a = await hub.publish("t", "a")
                with pytest.raises(error, match=match):
                    await hub.publish("t", make())
                b = await hub.publish("t", "b")
                async with hub.subscribe("t", last_event_id=a) as resumed:
                    events = parse(await read_available(resumed))
            finally:
                hub.close()
    assert [(event.id, event.data) for event in events] == [(b, "b")]
    assert gaps_of(events) == []
