"""The Redis backend's publish path under load: shared round trips, ``publish_many``, failures.

Publishes issued while a batch is on its way to Redis go together in the
next script call.  These tests check what that must not change: each
topic's order, exactly one entry per successful publish, dense entry numbers
(``n``), an error for exactly the publishes Redis refused, and no publisher
left waiting.  Round trips are counted from the server's own
``INFO commandstats``.  Every wait is bounded by ``anyio.fail_after``.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from sse_sm import ServerSentEvent
from tests._redis import RedisServer, require_coredis, running_redis

require_coredis()

import coredis  # noqa: E402
from coredis.tokens import PureToken  # noqa: E402

from sse_sm.redis import RedisBackend, RedisUnavailableError  # noqa: E402

from .test_redis_backend import FAST, WAIT, Reader, backend_of, joined, process  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")


@pytest.fixture(autouse=True)
def _collect_refused_connections() -> Iterator[None]:
    yield
    gc.collect()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


@asynccontextmanager
async def raw(url: str) -> AsyncIterator[coredis.Redis[bytes]]:
    client: coredis.Redis[bytes] = coredis.Redis.from_url(url, decode_responses=False)
    async with client:
        yield client


def script_calls(redis: RedisServer) -> int:
    """``EVALSHA`` and ``EVAL`` calls the server has answered, from ``INFO commandstats``."""
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as probe:
        probe.sendall(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        reply = b""
        while not reply.endswith(b"\r\n\r\n") and b"cmdstat_" not in reply[-200:]:
            chunk = probe.recv(65536)
            assert chunk, "redis-server closed the probe"
            reply += chunk
            if reply.count(b"\r\n") > 2 and reply.endswith(b"\r\n"):
                break
    calls = 0
    for line in reply.split(b"\r\n"):
        if line.startswith((b"cmdstat_evalsha:", b"cmdstat_eval:")):
            calls += int(line.split(b"calls=")[1].split(b",")[0])
    return calls


async def stream(client: coredis.Redis[bytes], topic: str) -> list[tuple[str, str, int]]:
    """``(id, data, n)`` of each entry of the topic's stream, in stream order."""
    found = await client.xrange(f"sse_sm:{topic}", "-", "+")
    out = []
    for item in found:
        fields = item.field_values
        frame, ident = fields[b"f"], item.identifier
        assert isinstance(frame, bytes)
        assert isinstance(ident, bytes)
        data = frame.decode().split("data: ", 1)[1].split("\r\n", 1)[0]
        out.append((ident.decode(), data, int(fields[b"n"])))
    return out


# ------------------------------------------------------------------ sharing round trips


async def test_concurrent_publishers_share_round_trips_and_keep_each_topics_order(
    redis: RedisServer,
) -> None:
    """40 publishers on 10 topics, 50 events each: every event once, in order, numbered densely."""
    topics = [f"t{i}" for i in range(10)]
    per_publisher, publishers = 50, 4
    ids: dict[tuple[str, int], list[str]] = {}

    async def publisher(hub: object, topic: str, p: int) -> None:
        mine = ids.setdefault((topic, p), [])
        for i in range(per_publisher):
            mine.append(await hub.publish(topic, f"{p}:{i}"))  # type: ignore[attr-defined]

    with anyio.fail_after(WAIT * 2):
        async with (
            raw(redis.url) as client,
            process(redis.url, *topics) as hub,
            anyio.create_task_group() as tasks,
        ):
            readers = {topic: Reader(hub.subscribe(topic)) for topic in topics}
            for reader in readers.values():
                tasks.start_soon(reader.run)
            await joined(hub, len(topics))
            before = script_calls(redis)
            async with anyio.create_task_group() as publishing:
                for topic in topics:
                    for p in range(publishers):
                        publishing.start_soon(publisher, hub, topic, p)
            calls = script_calls(redis) - before
            for reader in readers.values():
                await reader.wait_for(per_publisher * publishers)
            stored = {topic: await stream(client, topic) for topic in topics}
            tasks.cancel_scope.cancel()
    total = len(topics) * publishers * per_publisher
    # Unbatched, every publish was its own script call (2,000 here).
    assert calls <= total // 4, f"{calls} script calls for {total} publishes"
    for topic in topics:
        entries = stored[topic]
        assert [n for _, _, n in entries] == list(range(1, len(entries) + 1))
        assert len(entries) == publishers * per_publisher
        events = readers[topic].events
        assert [(e.id, e.data) for e in events] == [(i, d) for i, d, _ in entries]
        for p in range(publishers):
            mine = [(i, d) for i, d, _ in entries if d.startswith(f"{p}:")]
            assert [d for _, d in mine] == [f"{p}:{i}" for i in range(per_publisher)]
            assert [i for i, _ in mine] == ids[(topic, p)]


async def test_publish_many_is_one_round_trip_with_ids_in_order(redis: RedisServer) -> None:
    with anyio.fail_after(WAIT):
        async with process(redis.url, "t") as hub, anyio.create_task_group() as tasks:
            reader = Reader(hub.subscribe("t"))
            tasks.start_soon(reader.run)
            await joined(hub)
            before = script_calls(redis)
            ids = await hub.publish_many("t", [f"m{i}" for i in range(100)])
            calls = script_calls(redis) - before
            assert await hub.publish_many("t", []) == []
            await reader.wait_for(100)
            tasks.cancel_scope.cancel()
            stats = backend_of(hub).statistics()
    assert calls == 1
    assert [(e.id, e.data) for e in reader.events] == list(
        zip(ids, [f"m{i}" for i in range(100)], strict=True)
    )
    assert stats.published == 100


async def test_publish_many_checks_its_events(redis: RedisServer) -> None:
    async with RedisBackend(redis.url, **FAST) as backend:
        with pytest.raises(TypeError, match=r"^events must be a sequence"):
            await backend.publish_many("t", ServerSentEvent("x"))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^events\[1\] must be a ServerSentEvent, got str"):
            await backend.publish_many("t", [ServerSentEvent("a"), "b"])  # type: ignore[list-item]
        with pytest.raises(ValueError, match=r"^events\[1\]: the Redis backend gives every"):
            await backend.publish_many("t", [ServerSentEvent("a"), ServerSentEvent("b", id="x")])
        with pytest.raises(TypeError, match=r"^topic must be a str"):
            await backend.publish(3, ServerSentEvent("a"))  # type: ignore[arg-type]
        assert backend.statistics().published == 0
    with pytest.raises(RuntimeError, match="not running"):
        await backend.publish_many("t", [ServerSentEvent("a")])


# ------------------------------------------------------------------ failures


async def test_a_refused_topic_fails_only_its_own_publishes_of_the_batch(
    redis: RedisServer,
) -> None:
    """One batch holds publishes to a key of the wrong type and to good topics."""
    outcomes: dict[str, list[str | BaseException]] = {}

    async def publisher(hub: object, topic: str, p: int) -> None:
        mine = outcomes.setdefault(f"{topic}/{p}", [])
        for i in range(20):
            try:
                mine.append(await hub.publish(topic, f"{p}:{i}"))  # type: ignore[attr-defined]
            except RedisUnavailableError as exc:
                mine.append(exc)

    with anyio.fail_after(WAIT):
        async with raw(redis.url) as client, process(redis.url) as hub:
            await client.set("sse_sm:bad", "a string")
            before = script_calls(redis)
            async with anyio.create_task_group() as publishing:
                for topic in ("good", "bad", "also"):
                    for p in range(3):
                        publishing.start_soon(publisher, hub, topic, p)
                with pytest.raises(RedisUnavailableError) as many:
                    await hub.publish_many("bad", ["x", "y"])
            calls = script_calls(redis) - before
            stored = {topic: await stream(client, topic) for topic in ("good", "also")}
            assert await client.get("sse_sm:bad") == b"a string"
            stats = backend_of(hub).statistics()
    assert calls < 9 * 20 + 1  # they did share batches
    assert "publish to 'bad'" in str(many.value)
    assert "WRONGTYPE" in str(many.value)
    for name, results in outcomes.items():
        if name.startswith("bad/"):
            assert all(isinstance(r, RedisUnavailableError) for r in results)
            assert all("publish to 'bad'" in str(r) and "holds a string" in str(r) for r in results)
        else:
            assert all(isinstance(r, str) for r in results), results
    for topic, entries in stored.items():
        assert [n for _, _, n in entries] == list(range(1, 61))
        for p in range(3):
            mine = [(i, d) for i, d, _ in entries if d.startswith(f"{p}:")]
            assert [i for i, _ in mine] == outcomes[f"{topic}/{p}"]
    assert stats.published == 120
    assert stats.publish_failures == 61


async def test_publishers_in_flight_when_redis_dies_all_fail_promptly(tmp_path: Path) -> None:
    """Kill the server under 20 publishing tasks: each gets an error, none waits forever."""
    failures: list[BaseException] = []
    published = 0
    with running_redis(tmp_path) as server, anyio.fail_after(WAIT * 2):
        async with process(server.url, command_timeout=1.0) as hub:

            async def publisher(p: int) -> None:
                nonlocal published
                for i in range(10_000):
                    try:
                        await hub.publish(f"t{p % 4}", f"{p}:{i}")
                        published += 1
                    except RedisUnavailableError as exc:
                        failures.append(exc)
                        return

            async with anyio.create_task_group() as publishing:
                for p in range(20):
                    publishing.start_soon(publisher, p)
                while published < 200:  # noqa: ASYNC110 - bounded by fail_after
                    await anyio.sleep(0.005)
                server.kill()
            assert len(failures) == 20
            server.start()
            while True:  # the pool may still hold a dead connection
                try:
                    await hub.publish("t0", "after")
                    break
                except RedisUnavailableError:
                    await anyio.sleep(0.05)
    assert all("publish to 't" in str(exc) for exc in failures)


async def test_a_cancelled_publisher_loses_and_duplicates_nothing_of_the_others(
    redis: RedisServer,
) -> None:
    """Redis paused: one publish in flight, three queued; cancel one of each kind.

    The one cancelled in flight may land (it is Redis's now); the one
    cancelled while queued never does; the others land exactly once, in order.
    """
    results: dict[str, str] = {}
    scopes: dict[str, anyio.CancelScope] = {}

    async def publisher(hub: object, name: str) -> None:
        with anyio.CancelScope() as scope:
            scopes[name] = scope
            results[name] = await hub.publish("t", name)  # type: ignore[attr-defined]

    with anyio.fail_after(WAIT):
        async with (
            raw(redis.url) as client,
            process(redis.url, command_timeout=5.0) as hub,
            anyio.create_task_group() as tasks,
        ):
            await hub.publish("t", "first")
            await client.client_pause(5000, PureToken.WRITE)
            tasks.start_soon(publisher, hub, "in flight")
            await anyio.sleep(0.1)  # the flusher sent it; Redis holds it
            for name in ("queued 1", "queued 2", "queued 3"):
                tasks.start_soon(publisher, hub, name)
                await anyio.sleep(0.02)  # queued in this order (trio starts tasks in any order)
            scopes["in flight"].cancel()
            scopes["queued 2"].cancel()
            await anyio.sleep(0.05)
            await client.client_unpause()
        async with raw(redis.url) as client:
            entries = await stream(client, "t")
    assert [d for _, d, _ in entries] == ["first", "in flight", "queued 1", "queued 3"]
    assert [n for _, _, n in entries] == [1, 2, 3, 4]
    assert set(results) == {"queued 1", "queued 3"}
    assert results["queued 1"] == entries[2][0]
    assert results["queued 3"] == entries[3][0]


async def test_a_publish_queued_too_long_gives_up_unsent_and_is_not_stored(
    redis: RedisServer,
) -> None:
    """Redis paused: one batch times out, the next holds 512; the rest give up unsent.

    Every publisher is answered within about two ``command_timeout``\\ s, and
    the ones told "not stored" are indeed not in the stream.
    """
    outcomes: dict[int, str | BaseException] = {}

    async def publisher(hub: object, i: int) -> None:
        try:
            outcomes[i] = await hub.publish("t", f"m{i}")  # type: ignore[attr-defined]
        except RedisUnavailableError as exc:
            outcomes[i] = exc

    with anyio.fail_after(WAIT):
        async with raw(redis.url) as client, process(redis.url, command_timeout=0.5) as hub:
            await hub.publish("t", "first")
            await client.client_pause(10_000, PureToken.WRITE)
            try:
                async with anyio.create_task_group() as publishing:
                    publishing.start_soon(publisher, hub, 0)  # sent at once, held by Redis
                    await anyio.sleep(0.05)
                    for i in range(1, 601):
                        publishing.start_soon(publisher, hub, i)
            finally:
                await client.client_unpause()
        async with raw(redis.url) as client:
            stored = {d for _, d, _ in await stream(client, "t")}
    unsent = [
        i
        for i, outcome in outcomes.items()
        if isinstance(outcome, RedisUnavailableError) and "not stored" in str(outcome)
    ]
    assert len(outcomes) == 601
    assert all(not isinstance(outcome, str) for outcome in outcomes.values())
    assert len(unsent) >= 600 - 512
    assert not stored & {f"m{i}" for i in unsent}
