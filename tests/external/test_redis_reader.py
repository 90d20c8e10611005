"""One reader per Redis backend: every watched topic in one ``XREAD``; topics watched on demand.

Two backends on one loop stand for two processes, as in
``test_redis_backend``.  Every wait is bounded by ``anyio.fail_after``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from sse_sm.hub._replay import Entry
from tests._redis import RedisServer, require_coredis, running_redis

require_coredis()

from sse_sm.redis import RedisBackend  # noqa: E402

from .test_redis_backend import (  # noqa: E402
    FAST,
    WAIT,
    Reader,
    backend_of,
    connected_clients,
    joined,
    process,
)
from .test_redis_batching import raw, stream  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")


@pytest.fixture(autouse=True)
def _collect_refused_connections() -> Iterator[None]:
    yield
    gc.collect()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


async def blocked(backend: RedisBackend) -> None:
    """Until the backend's reader waits in its ``XREAD BLOCK`` (setup only)."""
    while not backend._blocked:  # noqa: ASYNC110 - the reader runs in another task; bounded by fail_after
        await anyio.sleep(0.005)
    await anyio.sleep(0.05)  # the server has the command


async def test_a_topic_not_listed_is_watched_on_its_first_subscriber(redis: RedisServer) -> None:
    with anyio.fail_after(WAIT):
        async with (
            process(redis.url) as publisher,
            process(redis.url) as subscriber,
            anyio.create_task_group() as tasks,
        ):
            reader = Reader(subscriber.subscribe("t"))
            tasks.start_soon(reader.run)
            await joined(subscriber)
            ids = [await publisher.publish("t", f"m{i}") for i in range(3)]
            await reader.wait_for(3)
            tasks.cancel_scope.cancel()
            topics = backend_of(subscriber).statistics().topics
    assert [(e.id, e.data) for e in reader.events] == list(
        zip(ids, ["m0", "m1", "m2"], strict=True)
    )
    assert topics == ("t",)


async def test_watching_a_topic_wakes_the_blocked_reader(redis: RedisServer) -> None:
    """The reader blocks 30 s on another topic: the new one's entries come long before that."""
    async with (
        process(redis.url) as publisher,
        process(redis.url, "other", read_block=30.0) as subscriber,
        anyio.create_task_group() as tasks,
    ):
        with anyio.fail_after(WAIT):
            await blocked(backend_of(subscriber))
            reader = Reader(subscriber.subscribe("t"))
            tasks.start_soon(reader.run)
            await joined(subscriber)
        with anyio.fail_after(5):
            await publisher.publish("t", "soon")
            await reader.wait_for(1)
        tasks.cancel_scope.cancel()
    assert reader.data() == ["soon"]


async def test_a_topic_watched_during_a_burst_gets_a_contiguous_run_and_all_after_its_join(
    redis: RedisServer,
) -> None:
    """Another process bursts 3,000 events; a subscriber arrives in the middle of it.

    What it receives is one run of the stream without a hole or a repeat, up
    to the last event, and it includes every event issued after it joined.
    """
    after_join: list[str] = []
    is_joined = False

    async def burst(hub: object) -> None:
        for start in range(0, 3000, 20):
            late = is_joined
            ids = await hub.publish_many("t", [str(i) for i in range(start, start + 20)])  # type: ignore[attr-defined]
            if late:
                after_join.extend(ids)
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(WAIT * 2):
        async with (
            raw(redis.url) as client,
            process(redis.url, max_events=10_000) as publisher,
            process(redis.url, "other") as subscriber,
            anyio.create_task_group() as tasks,
        ):
            reader = Reader(subscriber.subscribe("t", buffer_size=4000))
            async with anyio.create_task_group() as publishing:
                publishing.start_soon(burst, publisher)
                while len(await client.xrange("sse_sm:t", "-", "+", count=200)) < 200:  # noqa: ASYNC110 - Redis is outside this task; bounded by fail_after
                    await anyio.sleep(0.001)
                tasks.start_soon(reader.run)
                await joined(subscriber)
                is_joined = True
            stored = await stream(client, "t")
            await reader.wait_for(
                len(stored) - [i for i, _, _ in stored].index(reader.events[0].id)
            )
            tasks.cancel_scope.cancel()
    received = [(e.id, e.data) for e in reader.events]
    ids = [i for i, _, _ in stored]
    start = ids.index(received[0][0])
    assert start > 0  # it did arrive in the middle
    assert received == [(i, d) for i, d, _ in stored[start:]]
    assert after_join
    assert set(after_join) <= {i for i, _ in received}
    assert reader.gaps() == []


async def test_a_hundred_topics_share_one_reader_connection(redis: RedisServer) -> None:
    topics = [f"t{i}" for i in range(100)]
    seen: dict[str, list[str]] = {}

    def listener(entry: Entry) -> None:
        seen.setdefault(entry.topic, []).append(entry.id)

    with anyio.fail_after(WAIT * 2):
        async with process(redis.url) as publisher:
            await publisher.publish("warm", "up")  # its pool's connection is open
            baseline = connected_clients(redis)
            async with RedisBackend(redis.url, topics=topics, **FAST) as backend:
                backend.listen(listener)
                await blocked(backend)
                idle = connected_clients(redis) - baseline
                ids: dict[str, list[str]] = {}

                async def publish(topic: str) -> None:
                    for i in range(5):
                        ids.setdefault(topic, []).append(await publisher.publish(topic, str(i)))

                async with anyio.create_task_group() as publishing:
                    for topic in topics:
                        publishing.start_soon(publish, topic)
                while sum(map(len, seen.values())) < 500:  # noqa: ASYNC110 - bounded by fail_after
                    await anyio.sleep(0.01)
                stats = backend.statistics()
    # Unfixed, one reader (and its connection) per topic: 100 here.
    assert idle <= 2, f"{idle} connections for 100 idle topics"
    assert seen == ids
    assert stats.topics == tuple(topics)
    assert stats.received == 500


async def test_a_key_of_the_wrong_type_does_not_stall_the_other_topics(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "sse_sm.redis")
    topics = [f"t{i}" for i in range(5)]
    with anyio.fail_after(WAIT):
        async with raw(redis.url) as client:
            await client.set("sse_sm:t2", "not a stream")
            async with (
                process(redis.url) as publisher,
                process(redis.url, *topics) as subscriber,
                anyio.create_task_group() as tasks,
            ):
                readers = {topic: Reader(subscriber.subscribe(topic)) for topic in topics}
                for reader in readers.values():
                    tasks.start_soon(reader.run)
                await joined(subscriber, len(topics))
                for topic in topics:
                    if topic != "t2":
                        await publisher.publish(topic, f"{topic} ok")
                for topic in topics:
                    if topic != "t2":
                        await readers[topic].wait_for(1)
                await client.delete(["sse_sm:t2"])
                await anyio.sleep(0.01)  # a new id after the reader's fallback start
                await publisher.publish("t2", "t2 back")
                await readers["t2"].wait_for(1)
                tasks.cancel_scope.cancel()
    for topic in topics:
        assert readers[topic].data() == [f"{topic} {'back' if topic == 't2' else 'ok'}"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors
    assert all("'t2'" in message for message in errors), errors
