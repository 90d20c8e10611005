"""The Redis Streams backend against a real ``redis-server``, on asyncio and trio.

Two :class:`RedisBackend` instances on one loop stand for two processes: each
has its own client, connections and reader tasks, and they share nothing but
Redis.  Every wait is bounded by ``anyio.fail_after``; nothing asserts on
timing.  Each test gets a fresh server (about 20 ms to start), so no test sees
another's streams.
"""

from __future__ import annotations

import gc
import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from sse_sm import Hub, ServerSentEvent
from sse_sm.hub._replay import GAP_EVENT
from sse_sm.hub._subscription import Subscription
from sse_sm.testing import Event, parse_event_stream
from tests._redis import RedisServer, require_coredis, running_redis

require_coredis()

from sse_sm.redis import (  # noqa: E402  (after the skip: needs coredis)
    RedisBackend,
    RedisUnavailableError,
    parse_stream_id,
)

# coredis (6.9) opens three memory object streams per connection and closes
# them only from the connection's own task, which never runs when connecting
# fails: each refused connection warns when collected.  Harmless; collected
# here, under this filter, rather than in whichever test runs next.
pytestmark = pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")


@pytest.fixture(autouse=True)
def _collect_refused_connections() -> Iterator[None]:
    yield
    gc.collect()


#: Bound on any one wait of a test: generous for two shared, noisy cores.
WAIT = 20.0
#: Short reconnect pauses and blocks, so a restart is noticed quickly.
FAST: dict[str, Any] = {"reconnect_delay": (0.02, 0.2), "read_block": 1.0, "command_timeout": 2.0}


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


@asynccontextmanager
async def process(url: str, *topics: str, **options: Any) -> AsyncIterator[Hub]:
    """A "process": a running backend and its hub."""
    async with RedisBackend(url, topics=topics, **{**FAST, **options}) as backend:
        hub = Hub(backend)
        try:
            yield hub
        finally:
            hub.close()


def backend_of(hub: Hub) -> RedisBackend:
    backend = hub.backend
    assert isinstance(backend, RedisBackend)
    return backend


class Reader:
    """Iterates a subscription in a task and keeps what it parsed."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.frames: list[bytes] = []

    @property
    def events(self) -> list[Event]:
        return parse_event_stream(b"".join(self.frames))

    def data(self) -> list[str]:
        return [event.data for event in self.events if event.event != GAP_EVENT]

    def gaps(self) -> list[dict[str, Any]]:
        return [json.loads(event.data) for event in self.events if event.event == GAP_EVENT]

    async def run(self) -> None:
        async for frame in self.subscription:
            self.frames.append(frame)

    async def wait_for(self, count: int) -> None:
        """Until ``count`` non-gap events arrived (the caller's ``fail_after`` bounds it)."""
        while len(self.data()) < count:  # noqa: ASYNC110 - Redis and the reader run outside this task; bounded by fail_after
            await anyio.sleep(0.005)


async def joined(hub: Hub, count: int = 1) -> None:
    while hub.statistics().subscribers < count:  # noqa: ASYNC110 - Redis and the reader run outside this task; bounded by fail_after
        await anyio.sleep(0.001)


# ------------------------------------------------------------------ delivery


async def test_publish_then_subscribe_delivers_in_order(redis: RedisServer) -> None:
    with anyio.fail_after(WAIT):
        async with process(redis.url, "chat") as hub, anyio.create_task_group() as tasks:
            reader = Reader(hub.subscribe("chat"))
            tasks.start_soon(reader.run)
            await joined(hub)
            ids = [await hub.publish("chat", f"m{i}") for i in range(50)]
            await reader.wait_for(50)
            tasks.cancel_scope.cancel()
    assert reader.data() == [f"m{i}" for i in range(50)]
    assert [event.id for event in reader.events] == ids
    parsed = [parse_stream_id(event_id) for event_id in ids]
    assert None not in parsed
    assert parsed == sorted(parsed)  # type: ignore[type-var]
    assert len(set(ids)) == 50


async def test_event_fields_survive_the_round_trip(redis: RedisServer) -> None:
    """Event type, multi-line data, retry and a comment (the id then ends the block)."""
    event = ServerSentEvent("line 1\nline 2", event="tick", retry=1500, comment="note", sep="\n")
    with anyio.fail_after(WAIT):
        async with process(redis.url, "t") as hub, anyio.create_task_group() as tasks:
            reader = Reader(hub.subscribe("t"))
            tasks.start_soon(reader.run)
            await joined(hub)
            event_id = await hub.publish("t", event)
            await reader.wait_for(1)
            tasks.cancel_scope.cancel()
    [got] = reader.events
    assert (got.data, got.event, got.id, got.retry, got.comments) == (
        "line 1\nline 2",
        "tick",
        event_id,
        1500,
        ("note",),
    )
    assert b"\r" not in b"".join(reader.frames)


async def test_two_processes_both_receive_every_event(redis: RedisServer) -> None:
    with anyio.fail_after(WAIT):
        async with (
            process(redis.url, "t") as one,
            process(redis.url, "t") as two,
            anyio.create_task_group() as tasks,
        ):
            readers = [Reader(one.subscribe("t")), Reader(two.subscribe("t"))]
            for reader in readers:
                tasks.start_soon(reader.run)
            await joined(one)
            await joined(two)
            for i in range(20):
                await (one if i % 2 else two).publish("t", str(i))
            for reader in readers:
                await reader.wait_for(20)
            tasks.cancel_scope.cancel()
    expected = [str(i) for i in range(20)]
    assert [reader.data() for reader in readers] == [expected, expected]
    assert readers[0].events == readers[1].events


# ------------------------------------------------------------------ resume


async def test_resume_in_another_process_gets_exactly_what_was_missed(
    redis: RedisServer,
) -> None:
    with anyio.fail_after(WAIT):
        async with process(redis.url) as publisher, process(redis.url) as other:
            ids = [await publisher.publish("t", f"m{i}") for i in range(10)]
            async with anyio.create_task_group() as tasks:
                # "other" has no reader for "t" yet: the resume starts it.
                reader = Reader(other.subscribe("t", last_event_id=ids[3]))
                tasks.start_soon(reader.run)
                await reader.wait_for(6)
                assert backend_of(other).statistics().topics == ("t",)
                await publisher.publish("t", "live")
                await reader.wait_for(7)
                tasks.cancel_scope.cancel()
    assert reader.gaps() == []
    assert reader.data() == [f"m{i}" for i in range(4, 10)] + ["live"]
    assert [event.id for event in reader.events][:6] == ids[4:]


async def test_resume_from_the_newest_id_replays_nothing(redis: RedisServer) -> None:
    with anyio.fail_after(WAIT):
        async with process(redis.url, "t") as hub:
            last = [await hub.publish("t", str(i)) for i in range(3)][-1]
            replay = await backend_of(hub).replay("t", last)
    assert (list(replay.entries), replay.gap) == ([], None)
    parsed = parse_stream_id(last)
    assert parsed is not None
    ms, seq = parsed
    assert replay.head == ms << 64 | seq


async def test_trimmed_id_is_an_expired_gap(redis: RedisServer) -> None:
    with anyio.fail_after(WAIT):
        async with process(redis.url, "t", max_events=3, exact=True) as hub:
            ids = [await hub.publish("t", f"m{i}") for i in range(6)]
            async with anyio.create_task_group() as tasks:
                reader = Reader(hub.subscribe("t", last_event_id=ids[0]))
                tasks.start_soon(reader.run)
                await reader.wait_for(3)
                tasks.cancel_scope.cancel()
    assert reader.events[0].event == GAP_EVENT
    assert reader.gaps() == [
        {"reason": "expired", "last_event_id": ids[0], "next_id": ids[3], "missed": None}
    ]
    assert reader.data() == ["m3", "m4", "m5"]


@pytest.mark.parametrize(
    "bad_id",
    ["not-an-id", "a1-0000000000000007", "99999999999999-0", "18446744073709551616-0"],
)
async def test_unknown_or_malformed_id_is_an_unknown_gap(redis: RedisServer, bad_id: str) -> None:
    with anyio.fail_after(WAIT):
        async with process(redis.url, "t") as hub:
            ids = [await hub.publish("t", f"m{i}") for i in range(2)]
            replay = await backend_of(hub).replay("t", bad_id)
            empty = await backend_of(hub).replay("never-published", bad_id)
    assert replay.gap is not None
    assert replay.gap.reason.value == "unknown"
    assert (replay.gap.last_event_id, replay.gap.next_id) == (bad_id, ids[0])
    assert [entry.id for entry in replay.entries] == ids
    assert empty.gap is not None
    assert empty.gap.reason.value == "unknown"
    assert (list(empty.entries), empty.head) == ([], 0)


async def test_id_trimmed_by_age_is_expired(redis: RedisServer) -> None:
    with anyio.fail_after(WAIT):
        async with process(redis.url, "t", max_events=None, max_age=0.05, exact=True) as hub:
            first = await hub.publish("t", "old")
            await anyio.sleep(0.2)
            await hub.publish("t", "new")  # trims "old" (MINID is 50 ms ago)
            replay = await backend_of(hub).replay("t", first)
    assert replay.gap is not None
    assert replay.gap.reason.value == "expired"
    assert [entry.id for entry in replay.entries] != []


# ------------------------------------------------------------------ failures


async def test_publish_fails_promptly_when_redis_is_gone(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        url = server.url
    # The server is gone and its port is closed: connecting is refused.
    with anyio.fail_after(WAIT):
        async with RedisBackend(url, topics=["t"], **FAST) as backend:
            with pytest.raises(RedisUnavailableError, match="publish to 't' failed"):
                await backend.publish("t", ServerSentEvent("lost"))
            while backend.statistics().errors < 3:  # the reader keeps trying  # noqa: ASYNC110 - Redis and the reader run outside this task; bounded by fail_after
                await anyio.sleep(0.01)
            stats = backend.statistics()
    assert not stats.connected
    assert stats.publish_failures == 1
    assert stats.last_error is not None
    assert stats.reconnects == 0


async def test_redis_restart_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """SIGKILL redis mid-stream (appendfsync always), restart it: every reply was durable."""
    with running_redis(tmp_path, durable=True) as server, anyio.fail_after(WAIT * 2):
        async with (
            process(server.url, "t") as publisher,
            process(server.url, "t") as subscriber,
            anyio.create_task_group() as tasks,
        ):
            reader = Reader(subscriber.subscribe("t"))
            tasks.start_soon(reader.run)
            await joined(subscriber)
            acknowledged = [await publisher.publish("t", f"before {i}") for i in range(20)]
            server.kill()  # without waiting for delivery: the reader may be behind
            with pytest.raises(RedisUnavailableError):
                await publisher.publish("t", "refused")
            server.start()
            while not backend_of(subscriber).statistics().reconnects:  # noqa: ASYNC110 - Redis and the reader run outside this task; bounded by fail_after
                await anyio.sleep(0.01)
            for i in range(20):
                while True:  # the publisher's pool may still hold a dead connection
                    try:
                        acknowledged.append(await publisher.publish("t", f"after {i}"))
                        break
                    except RedisUnavailableError:
                        await anyio.sleep(0.05)
            await reader.wait_for(40)
            tasks.cancel_scope.cancel()
            stats = backend_of(subscriber).statistics()
    assert reader.data() == [f"before {i}" for i in range(20)] + [f"after {i}" for i in range(20)]
    assert [event.id for event in reader.events] == acknowledged
    assert stats.connected
    assert stats.reconnects >= 1
    assert stats.last_error is not None


# ------------------------------------------------------------------ ownership


async def test_leaving_the_backend_stops_every_task(redis: RedisServer) -> None:
    before = {task.id for task in anyio.get_running_tasks()}
    with anyio.fail_after(WAIT):
        backend = RedisBackend(redis.url, topics=["a", "b"], **FAST)
        async with backend:
            await backend.watch("c")
            await backend.watch("c")  # idempotent
            during = {task.id for task in anyio.get_running_tasks()} - before
            assert backend.statistics().topics == ("a", "b", "c")
            assert backend.running
    after = {task.id for task in anyio.get_running_tasks()} - before
    assert len(during) >= 3  # a reader per topic (plus the client's own)
    assert after == set()
    assert not backend.running
    assert backend.statistics().topics == ()
    with pytest.raises(RuntimeError, match="not running"):
        await backend.publish("a", ServerSentEvent("x"))


def connected_clients(redis: RedisServer) -> int:
    """``connected_clients`` from the server's ``INFO clients``, not counting this probe."""
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as probe:
        probe.sendall(b"*2\r\n$4\r\nINFO\r\n$7\r\nclients\r\n")
        reply = b""
        while b"connected_clients:" not in reply or not reply.endswith(b"\r\n"):
            chunk = probe.recv(65536)
            assert chunk, "redis-server closed the probe"
            reply += chunk
    line = next(x for x in reply.split(b"\r\n") if x.startswith(b"connected_clients:"))
    return int(line.split(b":")[1]) - 1


async def test_leaving_the_backend_closes_every_connection(redis: RedisServer) -> None:
    baseline = connected_clients(redis)
    with anyio.fail_after(WAIT):
        async with process(redis.url, "a", "b") as hub:
            subscription = hub.subscribe("a")
            reader = Reader(subscription)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(reader.run)
                await joined(hub)
                await hub.publish("a", ServerSentEvent("x"))
                await hub.publish("b", ServerSentEvent("y"))
                await reader.wait_for(1)
                assert connected_clients(redis) > baseline
                await subscription.aclose()
        # The server notices a closed socket a moment later.
        while connected_clients(redis) != baseline:  # noqa: ASYNC110 - Redis and the reader run outside this task; bounded by fail_after
            await anyio.sleep(0.02)


async def test_a_failing_start_leaves_nothing_running(redis: RedisServer) -> None:
    before = {task.id for task in anyio.get_running_tasks()}
    backend = RedisBackend(redis.url, topics=["a"], **FAST)
    with anyio.fail_after(WAIT):
        async with backend:
            with pytest.raises(RuntimeError, match="already entered"):
                await backend.__aenter__()
    assert {task.id for task in anyio.get_running_tasks()} == before


# ------------------------------------------------------------------ arguments


def test_events_with_their_own_id_are_refused() -> None:
    backend = RedisBackend()
    with pytest.raises(ValueError, match="without an id"):
        anyio.run(backend.publish, "t", ServerSentEvent("x", id="1"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_events": None}, "exactly one"),
        ({"max_age": 10.0}, "exactly one"),
        ({"max_events": 0}, "max_events"),
        ({"command_timeout": 0}, "command_timeout"),
        ({"read_block": float("inf")}, "read_block"),
        ({"read_count": 0}, "read_count"),
        ({"reconnect_delay": (2.0, 1.0)}, "reconnect_delay"),
    ],
)
def test_arguments_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisBackend(**options)


def test_stream_ids() -> None:
    assert parse_stream_id("0-0") == (0, 0)
    assert parse_stream_id("18446744073709551615-18446744073709551615") is not None
    for bad in ("", "1", "1-", "-1", "1-2-3", "1-x", " 1-2", "1-2\n", "\u0661-2"):
        assert parse_stream_id(bad) is None
