"""The Redis backend's reader under attack: holes, bursts, foreign data, restarts, many topics.

Each test runs against a real ``redis-server`` (``tests/_redis.py``), on
asyncio and trio, bounded by ``anyio.fail_after``.  What they hold the reader
to: every loss reaches live subscribers as an ``sse_sm.gap`` event (never a
silent hole), every bad input is a logged error or warning (never a crashed
reader with subscribers left hanging), and a burst never holds the event
loop for a whole ``XREAD`` reply.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from sse_sm import Hub, MemoryBackend, ServerSentEvent, SlowConsumerPolicy
from sse_sm.hub._backend import GapListener
from sse_sm.hub._replay import Entry, Gap, GapReason, Replay
from sse_sm.hub._subscription import Subscription
from sse_sm.testing import parse_event_stream
from tests._redis import RedisServer, require_coredis, running_redis
from tests.external.test_redis_backend import FAST, WAIT, Reader, backend_of, joined, process

require_coredis()

import coredis  # noqa: E402  (after the skip)

from sse_sm.hub.redis import _MalformedReplyError, _Snapshot  # noqa: E402
from sse_sm.redis import RedisBackend, RedisUnavailableError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")

LOGGER = "sse_sm.redis"

#: Adds ARGV[1] events in our format to KEYS[1] in one atomic step, trimming to
#: exactly ARGV[2]: no reader can see any of them before the trimming.  With
#: ARGV[3] = "n", each carries its number as the backend's publish writes it.
_BURST = """
for i = 1, tonumber(ARGV[1]) do
  local fields = {'f', 'data: b' .. i .. '\\r\\n\\r\\n', 's', '\\r\\n'}
  if ARGV[3] == 'n' then
    local n = 1
    if redis.call('EXISTS', KEYS[1]) == 1 then
      local info = redis.call('XINFO', 'STREAM', KEYS[1])
      for j = 1, #info, 2 do
        if info[j] == 'entries-added' then n = info[j + 1] + 1 end
      end
    end
    fields[5] = 'n'
    fields[6] = tostring(n)
  end
  redis.call('XADD', KEYS[1], 'MAXLEN', '=', ARGV[2], '*', unpack(fields))
end
return redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1][1]
"""


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
    """A plain client: another writer, foreign to the backend."""
    client: coredis.Redis[bytes] = coredis.Redis.from_url(url, decode_responses=False)
    async with client:
        yield client


async def burst(
    client: coredis.Redis[bytes], key: str, count: int, keep: int, *, numbered: bool = False
) -> str:
    """``count`` events ``b1``..``b<count>`` in one step, ``keep`` retained; the oldest id kept."""
    oldest = await client.eval(_BURST, keys=[key], args=[count, keep, "n" if numbered else ""])
    assert isinstance(oldest, bytes)
    return oldest.decode()


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


# ------------------------------------------------------------------ the silent hole


@pytest.mark.parametrize("numbered", [True, False], ids=["numbered", "unnumbered"])
async def test_a_reader_behind_the_retention_signals_an_expired_gap(
    redis: RedisServer, numbered: bool
) -> None:
    """Another writer bursts 1,000 events into a topic that keeps 10: 990 are lost, and said so.

    Numbered as this backend writes them (the entry's own number shows the
    hole), or not (the stream's counters show it).
    """
    with anyio.fail_after(WAIT):
        async with (
            raw(redis.url) as client,
            process(redis.url, "t", max_events=10, exact=True) as hub,
            anyio.create_task_group() as tasks,
        ):
            reader = Reader(hub.subscribe("t"))
            tasks.start_soon(reader.run)
            await joined(hub)
            first = await hub.publish("t", "first")
            await reader.wait_for(1)
            oldest = await burst(client, "sse_sm:t", 1000, 10, numbered=numbered)
            await reader.wait_for(11)
            tasks.cancel_scope.cancel()
    assert reader.data() == ["first"] + [f"b{i}" for i in range(991, 1001)]
    assert reader.gaps() == [
        {"reason": "expired", "last_event_id": first, "next_id": oldest, "missed": 990}
    ]
    assert [event.event for event in reader.events][1] == "sse_sm.gap"  # at the hole
    assert hub.statistics().gaps == 1


#: b1, b2, b3 (numbered when ARGV[1] = "n"), then b2 deleted: all in one atomic step.
_DELETED_UNREAD = """
local ids = {}
for i = 1, 3 do
  local fields = {'f', 'data: b' .. i .. '\\r\\n\\r\\n', 's', '\\r\\n'}
  if ARGV[1] == 'n' then
    local info = redis.call('XINFO', 'STREAM', KEYS[1])
    for j = 1, #info, 2 do
      if info[j] == 'entries-added' then fields[5] = 'n'; fields[6] = tostring(info[j + 1] + 1) end
    end
  end
  ids[i] = redis.call('XADD', KEYS[1], '*', unpack(fields))
end
redis.call('XDEL', KEYS[1], ids[2])
return ids
"""


@pytest.mark.parametrize("numbered", [True, False], ids=["numbered", "unnumbered"])
async def test_an_entry_deleted_unread_is_a_gap(redis: RedisServer, numbered: bool) -> None:
    """``XDEL`` of an entry before the reader got to it: one gap, counted."""
    with anyio.fail_after(WAIT):
        async with (
            raw(redis.url) as client,
            process(redis.url, "t") as hub,
            anyio.create_task_group() as tasks,
        ):
            reader = Reader(hub.subscribe("t"))
            tasks.start_soon(reader.run)
            await joined(hub)
            first = await hub.publish("t", "first")
            await reader.wait_for(1)
            reply = await client.eval(
                _DELETED_UNREAD, keys=["sse_sm:t"], args=["n" if numbered else ""]
            )
            assert isinstance(reply, list)
            b1, b2, b3 = (item.decode() for item in reply)
            await reader.wait_for(3)
            tasks.cancel_scope.cancel()
    assert reader.data() == ["first", "b1", "b3"]
    kinds = [event.event for event in reader.events]
    if numbered:  # b3's number shows the hole, right where it is
        assert reader.gaps() == [
            {"reason": "expired", "last_event_id": b1, "next_id": b3, "missed": 1}
        ]
        assert kinds.index("sse_sm.gap") == 2
    else:  # the counters show one entry missing after "first", not where: before b1
        assert reader.gaps() == [
            {"reason": "expired", "last_event_id": first, "next_id": b1, "missed": 1}
        ]
        assert kinds.index("sse_sm.gap") == 1
    assert b2 not in [event.id for event in reader.events]


async def test_many_topics_each_get_their_gap(redis: RedisServer) -> None:
    topics = [f"t{i}" for i in range(12)]
    with anyio.fail_after(WAIT * 2):
        async with (
            raw(redis.url) as client,
            process(redis.url, *topics, max_events=5, exact=True) as hub,
            anyio.create_task_group() as tasks,
        ):
            readers = {topic: Reader(hub.subscribe(topic)) for topic in topics}
            for reader in readers.values():
                tasks.start_soon(reader.run)
            await joined(hub, len(topics))
            for topic in topics:
                await burst(client, f"sse_sm:{topic}", 200, 5)
            for reader in readers.values():
                await reader.wait_for(5)
            tasks.cancel_scope.cancel()
    for reader in readers.values():
        assert reader.data() == [f"b{i}" for i in range(196, 201)]
        [gap] = reader.gaps()
        assert (gap["reason"], gap["last_event_id"], gap["missed"]) == ("expired", None, 195)


# ------------------------------------------------------------------ fairness


async def test_the_reader_yields_within_a_burst(redis: RedisServer) -> None:
    """A probe task runs between deliveries of one ``XREAD`` reply, not only after it."""
    ticks = 0
    seen: list[int] = []

    async def probe() -> None:
        nonlocal ticks
        while True:
            await anyio.lowlevel.checkpoint()
            ticks += 1

    def slow_listener(entry: Entry) -> None:
        seen.append(ticks)
        time.sleep(0.0005)  # a fan-out to a few thousand subscribers costs about this

    with anyio.fail_after(WAIT):
        async with (
            raw(redis.url) as client,
            RedisBackend(redis.url, topics=["t"], **FAST) as backend,
            anyio.create_task_group() as tasks,
        ):
            backend.listen(slow_listener)
            tasks.start_soon(probe)
            await burst(client, "sse_sm:t", 1000, 10_000)
            while len(seen) < 1000:  # noqa: ASYNC110 - Redis and the reader run outside this task; bounded by fail_after
                await anyio.sleep(0.01)
            tasks.cancel_scope.cancel()
    longest = max(sum(1 for _ in run) for run in _runs(seen))
    # Unfixed, a whole reply (512 entries, about 0.25 s here) went by without the probe.
    assert longest < 100, f"{longest} entries delivered without yielding"


def _runs(values: list[int]) -> Iterator[list[int]]:
    run: list[int] = []
    for value in values:
        if run and value != run[-1]:
            yield run
            run = []
        run.append(value)
    if run:
        yield run


# ------------------------------------------------------------------ foreign data


async def test_foreign_and_malformed_entries_are_skipped_and_logged(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry without our fields, with a bad separator, an unterminated frame, a bad number."""
    caplog.set_level(logging.WARNING, LOGGER)
    with anyio.fail_after(WAIT):
        async with (
            raw(redis.url) as client,
            process(redis.url, "t") as hub,
            anyio.create_task_group() as tasks,
        ):
            reader = Reader(hub.subscribe("t"))
            tasks.start_soon(reader.run)
            await joined(hub)
            await client.xadd("sse_sm:t", {b"foo": b"bar"})
            await client.xadd("sse_sm:t", {b"f": b"data: sep\r\n\r\n", b"s": b"12"})
            await client.xadd("sse_sm:t", {b"f": b"data: unterminated"})
            await client.xadd("sse_sm:t", {b"f": b"data: n\r\n\r\n", b"s": b"\r\n", b"n": b"x"})
            ok = await hub.publish("t", "ok")
            await reader.wait_for(1)
            tasks.cancel_scope.cancel()
            stats = backend_of(hub).statistics()
    assert [(event.data, event.id) for event in reader.events] == [("ok", ok)]
    assert stats.foreign == 4
    # One warning at first; later ones within a minute are summed into the next (none here).
    [warning] = records(caplog, logging.WARNING)
    assert "stream 'sse_sm:t'" in warning.getMessage()
    assert "['foo']" in warning.getMessage()


async def test_a_key_of_the_wrong_type_is_a_logged_error_and_the_reader_recovers(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    with anyio.fail_after(WAIT):
        async with raw(redis.url) as client:
            await client.set("sse_sm:t", "not a stream")
            async with process(redis.url, "t") as hub, anyio.create_task_group() as tasks:
                reader = Reader(hub.subscribe("t"))
                tasks.start_soon(reader.run)
                await joined(hub)
                while backend_of(hub).statistics().errors < 4:  # noqa: ASYNC110 - Redis and the reader run outside this task; bounded by fail_after
                    await anyio.sleep(0.01)
                errors = records(caplog, logging.ERROR)
                # One error for the run of failures, not one per retry.
                assert len(errors) == 1, [r.getMessage() for r in errors]
                assert "'t'" in errors[0].getMessage()
                assert "holds a string, not a stream" in errors[0].getMessage()
                await client.delete(["sse_sm:t"])
                await anyio.sleep(0.01)  # a new id after the reader's fallback start
                event_id = await hub.publish("t", "back")
                await reader.wait_for(1)
                tasks.cancel_scope.cancel()
    assert [(event.data, event.id) for event in reader.events] == [("back", event_id)]
    assert any("again" in r.getMessage() for r in records(caplog, logging.INFO))


async def test_a_failing_listener_is_logged_and_others_still_receive(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, LOGGER)

    def broken(entry: Entry) -> None:
        raise RuntimeError("listener bug")

    with anyio.fail_after(WAIT):
        async with process(redis.url, "t") as hub, anyio.create_task_group() as tasks:
            backend_of(hub).listen(broken)
            reader = Reader(hub.subscribe("t"))
            tasks.start_soon(reader.run)
            await joined(hub)
            for i in range(3):
                await hub.publish("t", f"m{i}")
            await reader.wait_for(3)
            tasks.cancel_scope.cancel()
    assert reader.data() == ["m0", "m1", "m2"]
    assert records(caplog, logging.ERROR)
    assert "listener bug" in caplog.text


async def test_an_unexpected_error_in_the_reader_is_logged_and_it_goes_on(
    redis: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug inside a round (here: delivery raising once) is logged, then retried."""
    caplog.set_level(logging.ERROR, LOGGER)
    original = RedisBackend._deliver_entries
    calls = 0

    async def flaky(self: RedisBackend, *args: Any, **options: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyError("a bug")
        return await original(self, *args, **options)

    monkeypatch.setattr(RedisBackend, "_deliver_entries", flaky)
    with anyio.fail_after(WAIT):
        async with process(redis.url, "t") as hub, anyio.create_task_group() as tasks:
            reader = Reader(hub.subscribe("t"))
            tasks.start_soon(reader.run)
            await joined(hub)
            for i in range(3):
                await hub.publish("t", f"m{i}")
                await reader.wait_for(i + 1)
            tasks.cancel_scope.cancel()
    assert reader.data() == ["m0", "m1", "m2"]
    assert reader.gaps() == []
    [error] = records(caplog, logging.ERROR)
    assert "KeyError" in error.getMessage()
    assert error.exc_info is not None


def test_malformed_snapshot_replies_name_the_bad_field() -> None:
    good = [b"5-0", b"0-0", b"3", b"1", b"5-0", [[b"5-0", [b"f", b"data: x\r\n\r\n"]]]]
    assert _Snapshot.parse(good).added == 3
    assert _Snapshot.parse([]).missing
    for bad, field in [
        (b"x", "a list expected"),
        ([b"5-0"], "6 items"),
        ([b"x-0", *good[1:]], "not a stream id"),
        ([*good[:2], b"three", *good[3:]], "entries-added"),
        ([*good[:3], b"-1", *good[4:]], "length"),
        ([*good[:5], [[b"5-0", [b"f"]]]], "not pairs"),
        ([*good[:5], [b"5-0"]], r"not \[id, fields\]"),
        ([*good[:5], b"entries"], "entries: a list"),
        ([1, *good[1:]], "not strings"),
    ]:
        with pytest.raises(_MalformedReplyError, match=field):
            _Snapshot.parse(bad)


# ------------------------------------------------------------------ restarts


async def test_a_restart_that_lost_the_stream_is_an_unknown_gap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No persistence: the stream is gone after the restart; the reader says so, then goes on."""
    caplog.set_level(logging.WARNING, LOGGER)
    with running_redis(tmp_path) as server, anyio.fail_after(WAIT * 2):
        async with (
            process(server.url, "t") as publisher,
            process(server.url, "t") as subscriber,
            anyio.create_task_group() as tasks,
        ):
            reader = Reader(subscriber.subscribe("t"))
            tasks.start_soon(reader.run)
            await joined(subscriber)
            ids = [await publisher.publish("t", f"before {i}") for i in range(5)]
            await reader.wait_for(5)
            server.kill()
            with pytest.raises(RedisUnavailableError):
                await publisher.publish("t", "refused")
            server.start()  # same port, empty: nothing was saved
            while not backend_of(subscriber).statistics().reconnects:  # noqa: ASYNC110 - Redis and the reader run outside this task; bounded by fail_after
                await anyio.sleep(0.01)
            for i in range(5):
                while True:  # the publisher's pool may still hold a dead connection
                    try:
                        ids.append(await publisher.publish("t", f"after {i}"))
                        break
                    except RedisUnavailableError:
                        await anyio.sleep(0.05)
            await reader.wait_for(10)
            tasks.cancel_scope.cancel()
    assert reader.data() == [f"before {i}" for i in range(5)] + [f"after {i}" for i in range(5)]
    [gap] = reader.gaps()
    assert (gap["reason"], gap["last_event_id"], gap["missed"]) == ("unknown", ids[4], None)
    assert gap["next_id"] in (None, ids[5])
    assert [event.event for event in reader.events].index("sse_sm.gap") == 5
    assert any("sse_sm:t" in r.getMessage() for r in records(caplog, logging.WARNING))


async def test_a_durable_restart_is_no_gap(tmp_path: Path) -> None:
    """``appendfsync always``: the stream comes back whole, so no gap is signalled."""
    with running_redis(tmp_path, durable=True) as server, anyio.fail_after(WAIT * 2):
        async with (
            process(server.url, "t", max_events=10, exact=True) as hub,
            anyio.create_task_group() as tasks,
        ):
            reader = Reader(hub.subscribe("t"))
            tasks.start_soon(reader.run)
            await joined(hub)
            ids = [await hub.publish("t", f"m{i}") for i in range(20)]
            await reader.wait_for(20)
            server.kill()
            server.start()
            # No wait for statistics().reconnects: coredis may retry the
            # reader's blocked XREAD on a new connection by itself, and then
            # the reader sees no failure to count (1 run in 6 under load).
            while True:
                try:
                    ids.append(await hub.publish("t", "after"))
                    break
                except RedisUnavailableError:
                    await anyio.sleep(0.05)
            await reader.wait_for(21)
            tasks.cancel_scope.cancel()
    assert reader.gaps() == []
    assert [event.id for event in reader.events] == ids


# ------------------------------------------------------------------ the hub's side of a hole


class HoleyBackend:
    """The memory backend plus ``listen_gaps``, with holes made by hand (no Redis)."""

    def __init__(self) -> None:
        self.memory = MemoryBackend()
        self.gap_listeners: list[GapListener] = []

    async def publish(self, topic: str, event: ServerSentEvent) -> Entry:
        return await self.memory.publish(topic, event)

    async def replay(self, topic: str, last_event_id: str) -> Replay:
        return await self.memory.replay(topic, last_event_id)

    def listen(self, listener: Callable[[Entry], None]) -> Callable[[], None]:
        return self.memory.listen(listener)

    def listen_gaps(self, listener: GapListener) -> Callable[[], None]:
        self.gap_listeners.append(listener)
        return lambda: self.gap_listeners.remove(listener)

    def hole(self, topic: str, missed: int | None, position: int | None = None) -> None:
        for listener in self.gap_listeners:
            listener(topic, Gap(GapReason.EXPIRED, "backend's last", None, missed), position)


async def _joined(subscription: Subscription) -> None:
    """Join without consuming: cancelling a waiting ``__anext__`` loses nothing."""
    with anyio.move_on_after(0.05):
        await subscription.__anext__()


async def _drain(subscription: Subscription) -> list[tuple[str | None, Any]]:
    """What is buffered, as (event type or ``None``, data; a gap's parsed)."""
    frames: list[bytes] = []
    while subscription.statistics().buffered or subscription._state.buffer:  # type: ignore[union-attr]
        frames.append(await subscription.__anext__())
    return [
        ("sse_sm.gap", json.loads(event.data))
        if event.event == "sse_sm.gap"
        else (None, event.data)
        for event in parse_event_stream(b"".join(frames))
    ]


def _gap(**fields: object) -> tuple[str, dict[str, object]]:
    return ("sse_sm.gap", fields)


async def test_a_hole_is_a_gap_at_its_place_for_live_subscribers() -> None:
    backend = HoleyBackend()
    hub = Hub(backend)
    async with hub.subscribe("t") as subscription:
        await _joined(subscription)
        first = await hub.publish("t", "e1")
        backend.hole("t", 7)
        second = await hub.publish("t", "e2")
        got = await _drain(subscription)
    assert got == [
        (None, "e1"),
        _gap(reason="expired", last_event_id=first, next_id=second, missed=7),
        (None, "e2"),
    ]
    assert hub.statistics().gaps == 1


async def test_a_hole_the_replay_covers_is_not_signalled_twice() -> None:
    backend = HoleyBackend()
    hub = Hub(backend)
    ids = [await hub.publish("t", f"e{i}") for i in range(3)]
    async with hub.subscribe("t", last_event_id=ids[0]) as subscription:
        await subscription.__anext__()  # joins, replays e1
        backend.hole("t", 1, position=3)  # before e2: the replay has it
        backend.hole("t", None, position=4)  # after the replay: a hole
        await hub.publish("t", "e3")
        got = await _drain(subscription)
    assert [kind for kind, _ in got] == [None, "sse_sm.gap", None]


@pytest.mark.parametrize("buffer_size", [1, 2, 3])
async def test_a_hole_in_a_full_drop_oldest_buffer_keeps_the_count(buffer_size: int) -> None:
    """Drop markers and a backend's hole meet and merge; the buffer never exceeds its size."""
    backend = HoleyBackend()
    hub = Hub(backend, buffer_size=buffer_size, policy=SlowConsumerPolicy.DROP_OLDEST)
    async with hub.subscribe("t") as subscription:
        await _joined(subscription)
        for i in range(buffer_size):
            await hub.publish("t", f"a{i}")
        backend.hole("t", 10)
        for i in range(6):
            await hub.publish("t", f"b{i}")
            state = subscription._state
            assert state is not None
            entries = [item for item in state.buffer if type(item) is Entry]
            assert len(entries) == state.count == buffer_size
        got = await _drain(subscription)
    kept = [f"b{i}" for i in range(6 - buffer_size, 6)]
    assert [data for kind, data in got if kind is None] == kept
    [gap] = [data for kind, data in got if kind == "sse_sm.gap"]
    assert (gap["reason"], gap["missed"]) == ("expired", 10 + buffer_size + 6 - buffer_size)


async def test_a_hole_after_drops_in_a_drop_newest_buffer_is_one_gap() -> None:
    backend = HoleyBackend()
    hub = Hub(backend, buffer_size=2, policy=SlowConsumerPolicy.DROP_NEWEST)
    async with hub.subscribe("t") as subscription:
        await _joined(subscription)
        for i in range(4):
            await hub.publish("t", f"e{i}")  # e2, e3 dropped
        backend.hole("t", None)  # then lost, count unknown: one hole, count unknown
        await hub.publish("t", "e4")  # dropped too
        got = await _drain(subscription)
    assert [data for kind, data in got if kind is None] == ["e0", "e1"]
    [gap] = [data for kind, data in got if kind == "sse_sm.gap"]
    assert (gap["reason"], gap["missed"]) == ("expired", None)
