"""Promise: the hub resumes exactly, never hides a loss, and holds under abuse.

docs/hub.md: "Between the replay and the live events there is no hole and no
duplicate"; "a lost stretch is always signalled" (one ``sse_sm.gap`` where
the hole is, with ``missed``); a buffer "holds at most buffer_size events plus
one marker per hole"; ``__anext__`` "waits otherwise; cancelling the wait
loses nothing"; "One task at a time may iterate it"; a closed hub ends every
subscription after what it holds.  A ``Last-Event-ID`` from a client is
untrusted input: malformed, huge, from the future or from another topic, it
must give an ``unknown`` gap and never an error or a wrong replay.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_sm import Hub, MemoryBackend, SlowConsumerError, SlowConsumerPolicy
from sse_sm.testing import Event, parse_event_stream

pytestmark = pytest.mark.anyio

GAP = "sse_sm.gap"


def _event(frame: bytes) -> Event:
    events = parse_event_stream(frame)
    assert len(events) == 1, frame
    return events[0]


def _scope(last_event_id: bytes | None) -> dict[str, Any]:
    headers = [] if last_event_id is None else [(b"last-event-id", last_event_id)]
    return {"type": "http", "headers": headers, "query_string": b""}


async def _take_available(sub: Any, limit: int = 10_000) -> list[Event]:
    """Everything the subscription yields without waiting more than a moment."""
    out: list[Event] = []
    while len(out) < limit:
        with anyio.move_on_after(0.01):  # buffered events need no wait at all
            out.append(_event(await sub.__anext__()))
            continue
        break
    return out


# ------------------------------------------------------------ Last-Event-ID


async def _resume_with(header: bytes | None) -> tuple[list[Event], list[str]]:
    """Publish 5 events on "a" (and 3 on "b"), resume on "a" with ``header``, then 2 live."""
    hub = Hub(MemoryBackend(max_events=100))
    ids = [await hub.publish("a", f"a{n}") for n in range(5)]
    for n in range(3):
        await hub.publish("b", f"b{n}")
    with anyio.fail_after(5):
        async with hub.subscribe("a", _scope(header)) as sub:
            head = await _take_available(sub)
            ids.append(await hub.publish("a", "live1"))
            ids.append(await hub.publish("a", "live2"))
            tail = await _take_available(sub)
    hub.close()
    return head + tail, ids


async def test_resuming_from_a_held_id_replays_exactly_what_follows() -> None:
    hub = Hub()
    ids = [await hub.publish("a", f"a{n}") for n in range(5)]
    with anyio.fail_after(5):
        async with hub.subscribe("a", _scope(ids[1].encode())) as sub:
            got = await _take_available(sub)
    assert [e.data for e in got] == ["a2", "a3", "a4"]
    hub.close()


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"garbage", id="garbage"),
        pytest.param(b"-0000000000000001", id="no-epoch"),
        pytest.param(b"x" * 1_000_000, id="one-megabyte"),
        pytest.param(("9" * 5000).encode(), id="5000-digits"),
        pytest.param(b"\xe2\x82\xac-0000000000000001", id="non-ascii-epoch"),
        pytest.param(b" ", id="space"),
    ],
)
async def test_an_unknown_last_event_id_gives_an_unknown_gap_then_all_held(
    header: bytes,
) -> None:
    got, ids = await _resume_with(header)
    assert got[0].event == GAP
    gap = json.loads(got[0].data)
    assert gap["reason"] == "unknown"
    assert gap["missed"] is None
    assert gap["last_event_id"] == header.decode()
    assert got[0].id == ""  # the gap carries no id field
    assert [e.data for e in got[1:]] == ["a0", "a1", "a2", "a3", "a4", "live1", "live2"]
    assert [e.id for e in got[1:]] == ids


async def test_an_id_from_the_future_or_another_topic_is_unknown() -> None:
    hub = Hub()
    a_ids = [await hub.publish("a", f"a{n}") for n in range(3)]
    b_ids = [await hub.publish("b", f"b{n}") for n in range(3)]
    epoch = a_ids[0].rpartition("-")[0]
    for resume in (f"{epoch}-{'9' * 16}", f"{epoch}-{4:016d}", b_ids[0], b_ids[-1]):
        with anyio.fail_after(5):
            async with hub.subscribe("a", last_event_id=resume) as sub:
                got = await _take_available(sub)
        assert got[0].event == GAP, resume
        assert json.loads(got[0].data)["reason"] == "unknown", resume
        assert [e.data for e in got[1:]] == ["a0", "a1", "a2"], resume
    hub.close()


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="none"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"a\x00b", id="nul"),
    ],
)
async def test_no_usable_last_event_id_means_live_only(header: bytes | None) -> None:
    got, ids = await _resume_with(header)
    assert [e.data for e in got] == ["live1", "live2"]
    assert [e.id for e in got] == ids[-2:]


async def test_the_newest_id_means_live_only_without_a_gap() -> None:
    hub = Hub()
    ids = [await hub.publish("a", f"a{n}") for n in range(3)]
    with anyio.fail_after(5):
        async with hub.subscribe("a", last_event_id=ids[-1]) as sub:
            assert await _take_available(sub) == []
            await hub.publish("a", "live")
            got = await _take_available(sub)
    assert [e.data for e in got] == ["live"]
    hub.close()


async def test_an_evicted_id_gives_an_expired_gap_with_the_exact_count() -> None:
    hub = Hub(MemoryBackend(max_events=3))
    ids = [await hub.publish("a", f"a{n}") for n in range(10)]
    with anyio.fail_after(5):
        async with hub.subscribe("a", last_event_id=ids[2]) as sub:
            got = await _take_available(sub)
    gap = json.loads(got[0].data)
    assert gap == {"reason": "expired", "last_event_id": ids[2], "next_id": ids[7], "missed": 4}
    assert [e.data for e in got[1:]] == ["a7", "a8", "a9"]
    hub.close()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    resume=st.text(min_size=1, max_size=60)
    | st.sampled_from(
        [
            "ep-0000000000000001",
            "ep-0000000000000002",
            "ep-0000000000000006",
            "ep-0000000000000007",
            "ep-000000000000002",
        ]
    )
)
def test_any_text_as_last_event_id_never_raises_and_never_loses(backend: str, resume: str) -> None:
    async def scenario() -> None:
        hub = Hub(MemoryBackend(max_events=4, new_epoch=lambda: "ep"))
        ids = [await hub.publish("a", f"a{n}") for n in range(6)]  # holds a2..a5
        scope = _scope(resume.encode("utf-8", "surrogatepass"))
        with anyio.fail_after(5):
            async with hub.subscribe("a", scope) as sub:
                got = await _take_available(sub)
        hub.close()
        data = [e.data for e in got if e.event != GAP]
        gaps = [json.loads(e.data) for e in got if e.event == GAP]
        if resume in ids[1:]:  # a held id, or the one just before the oldest held
            assert gaps == []
            assert data == [f"a{n}" for n in range(ids.index(resume) + 1, 6)]
        elif resume in ids[:1]:
            assert gaps[0]["reason"] == "expired"
            assert gaps[0]["missed"] == 1
        else:
            # Unknown or not a usable id at all: never a partial replay.
            assert data in ([], ["a2", "a3", "a4", "a5"]), (resume, data)
            assert len(gaps) == (1 if data else 0)

    anyio.run(scenario, backend=backend)


# ------------------------------------------------------------ slow consumers


BURSTS = st.lists(
    st.tuples(st.integers(0, 12), st.integers(0, 12)),  # (publish n, then read m)
    min_size=1,
    max_size=12,
)


async def _policy_run(policy: SlowConsumerPolicy, size: int, bursts: list[Any]) -> None:
    hub = Hub(buffer_size=size, policy=policy)
    published: list[str] = []
    got: list[Event] = []
    async with hub.subscribe("t") as sub, anyio.create_task_group() as tasks:
        joined = anyio.Event()

        async def join() -> None:
            try:
                got.append(_event(await sub.__anext__()))
            finally:
                joined.set()

        # Join without consuming: the first publish is read by this first call.
        tasks.start_soon(join)
        while hub.statistics().subscribers == 0:
            await anyio.lowlevel.checkpoint()
        published.append(await hub.publish("t", "first"))
        await joined.wait()
        for publish, read in bursts:
            for _ in range(publish):
                published.append(await hub.publish("t", str(len(published))))
            stats = sub.statistics()
            # At most buffer_size events, plus one marker per hole.
            assert stats.buffered <= size
            for _ in range(read):
                with anyio.move_on_after(0.005):
                    got.append(_event(await sub.__anext__()))
                    continue
                break
        got.extend(await _take_available(sub))
    # Walk what arrived: ids strictly increase, and every jump is announced by a
    # gap right before it, whose fields name both sides and count the hole.
    index = {event_id: n for n, event_id in enumerate(published)}
    last = -1
    gaps: list[dict[str, Any]] = []  # announced since the last event
    total_missed = 0
    for event in got:
        if event.event == GAP:
            gap = json.loads(event.data)
            assert gap["reason"] == "dropped"
            assert gap["last_event_id"] == published[last]
            total_missed += gap["missed"]
            gaps.append(gap)
            continue
        position = index[event.id]
        if position != last + 1:
            assert gaps, f"silent hole before {event.id}"
            # (Two gaps in a row for one hole is a bug of its own, tested below.)
            assert sum(g["missed"] for g in gaps) == position - last - 1
            assert gaps[-1]["next_id"] in (None, event.id)
        gaps = []
        last = position
    totals = hub.statistics()
    if gaps:
        assert gaps[-1]["next_id"] is None
    assert last == len(published) - 1 or gaps
    assert totals.dropped == total_missed
    assert totals.slow_disconnects == 0
    hub.close()


@pytest.mark.parametrize("policy", [SlowConsumerPolicy.DROP_OLDEST, SlowConsumerPolicy.DROP_NEWEST])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(1, 5), bursts=BURSTS)
def test_drop_policies_never_hide_a_hole_under_bursts(
    policy: SlowConsumerPolicy, backend: str, size: int, bursts: list[Any]
) -> None:
    anyio.run(_policy_run, policy, size, bursts, backend=backend)


async def test_drop_oldest_never_names_a_next_id_that_does_not_arrive() -> None:
    hub = Hub(buffer_size=1, policy=SlowConsumerPolicy.DROP_OLDEST)
    got: list[Event] = []
    sub = hub.subscribe("t")
    async with anyio.create_task_group() as tasks:

        async def first() -> None:
            got.append(_event(await sub.__anext__()))

        tasks.start_soon(first)
        while hub.statistics().subscribers == 0:
            await anyio.lowlevel.checkpoint()
        await hub.publish("t", "e1")
    await hub.publish("t", "e2")
    await hub.publish("t", "e3")  # e2 dropped: [gap, e3]
    got.append(_event(await sub.__anext__()))  # the gap: next_id is e3's
    await hub.publish("t", "e4")  # e3 is the oldest now, but the gap promised it
    got.extend(await _take_available(sub))
    await sub.aclose()
    hub.close()
    # e3, named by the gap, arrives; e4 is the event this overflow lets go.
    assert [e.data for e in got if e.event != GAP] == ["e1", "e3"]
    gaps = [json.loads(e.data) for e in got if e.event == GAP]
    assert sum(gap["missed"] for gap in gaps) == 2  # e2 and e4: no silent hole
    for n, event in enumerate(got):
        if event.event == GAP:
            named = json.loads(event.data)["next_id"]
            if named is not None:  # a gap at the end of what is held names none
                following = got[n + 1]
                assert following.event != GAP, [e.data for e in got]
                assert named == following.id


async def test_disconnect_policy_lets_go_at_once_and_counts_the_loss() -> None:
    hub = Hub(buffer_size=3)
    async with hub.subscribe("t") as sub:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sub.__anext__)
            while hub.statistics().subscribers == 0:
                await anyio.lowlevel.checkpoint()
            await hub.publish("t", "read by the joining call")
        for n in range(10):
            await hub.publish("t", str(n))
        stats = hub.statistics()
        assert stats.subscribers == 0  # let go at the 4th, buffer freed
        assert stats.buffered == 0
        assert stats.dropped == 4
        assert stats.slow_disconnects == 1
        with pytest.raises(SlowConsumerError, match="3 events behind"):
            await sub.__anext__()
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()
    hub.close()


async def test_block_policy_is_lossless_and_lets_go_only_after_the_timeout() -> None:
    hub = Hub(buffer_size=2, policy=SlowConsumerPolicy.BLOCK, block_timeout=0.05)
    got: list[str] = []
    with anyio.fail_after(10):
        async with hub.subscribe("t") as sub, anyio.create_task_group() as tasks:

            async def slow_reader() -> None:
                async for frame in sub:
                    got.append(_event(frame).data)
                    await anyio.sleep(0.001)
                    if len(got) == 50:
                        return

            tasks.start_soon(slow_reader)
            while hub.statistics().subscribers == 0:
                await anyio.lowlevel.checkpoint()
            for n in range(50):
                await hub.publish("t", str(n))
        assert got == [str(n) for n in range(50)]
        # Now nobody reads: the next publishes wait, then the full reader is let go.
        async with hub.subscribe("t") as stalled, anyio.create_task_group() as tasks:
            tasks.start_soon(stalled.__anext__)
            while hub.statistics().subscribers == 0:
                await anyio.lowlevel.checkpoint()
            started = anyio.current_time()
            for n in range(4):
                await hub.publish("t", f"s{n}")
            waited = anyio.current_time() - started
            tasks.cancel_scope.cancel()
        assert waited >= 0.05
        assert hub.statistics().slow_disconnects == 1
    hub.close()


# ------------------------------------------------------------ cancellation


async def test_a_subscriber_cancelled_at_every_await_loses_nothing() -> None:
    hub = Hub(buffer_size=10_000)
    total = 400
    got: list[str] = []
    rng = random.Random(7)
    with anyio.fail_after(20):
        async with hub.subscribe("t") as sub, anyio.create_task_group() as tasks:

            async def nervous_reader() -> None:
                while len(got) < total:
                    # Cancelled at a random point: mid-checkpoint, mid-wait, or not at all.
                    with anyio.CancelScope() as scope:
                        if rng.random() < 0.5:
                            scope.cancel()
                        got.append(_event(await sub.__anext__()).data)

            tasks.start_soon(nervous_reader)
            for n in range(total):
                if n == 0:
                    while hub.statistics().subscribers == 0:
                        await anyio.lowlevel.checkpoint()
                await hub.publish("t", str(n))
                if rng.random() < 0.3:
                    await anyio.lowlevel.checkpoint()
    assert got == [str(n) for n in range(total)]
    hub.close()


async def test_cancelling_a_resuming_subscriber_while_it_joins_releases_it() -> None:
    hub = Hub()
    ids = [await hub.publish("t", str(n)) for n in range(5)]
    for _ in range(20):
        sub = hub.subscribe("t", last_event_id=ids[0])
        with anyio.CancelScope() as scope:
            scope.cancel()
            await sub.__anext__()
        await sub.aclose()
    stats = hub.statistics()
    assert stats.subscribers == 0
    assert dict(stats.topics) == {}
    hub.close()


# ------------------------------------------------------------ misuse


async def test_two_tasks_iterating_one_subscription_is_refused() -> None:
    hub = Hub()
    async with hub.subscribe("t") as sub:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(sub.__anext__)
                while hub.statistics().subscribers == 0:
                    await anyio.lowlevel.checkpoint()
                await anyio.sleep(0.01)  # the first is parked now
                with pytest.raises(anyio.BusyResourceError):
                    await sub.__anext__()
                tasks.cancel_scope.cancel()
    hub.close()


async def test_iterating_after_aclose_or_after_the_hub_closed_ends_at_once() -> None:
    hub = Hub()
    sub = hub.subscribe("t")
    await sub.aclose()
    with pytest.raises(StopAsyncIteration):
        await sub.__anext__()
    # Closed hub: what is buffered is still yielded, then the end, every time.
    other = hub.subscribe("t")
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(other.__anext__)
        while hub.statistics().subscribers == 0:
            await anyio.lowlevel.checkpoint()
        await hub.publish("t", "joined")
    await hub.publish("t", "kept")
    hub.close()
    assert _event(await other.__anext__()).data == "kept"
    for _ in range(3):
        with pytest.raises(StopAsyncIteration):
            await other.__anext__()
    late = hub.subscribe("t")
    with pytest.raises(StopAsyncIteration):
        await late.__anext__()
    with pytest.raises(anyio.ClosedResourceError):
        await hub.publish("t", "too late")
    assert hub.statistics().subscribers == 0


async def test_a_closed_hub_releases_a_publisher_waiting_for_room() -> None:
    hub = Hub(buffer_size=1, policy=SlowConsumerPolicy.BLOCK, block_timeout=None)
    with anyio.fail_after(5):
        async with hub.subscribe("t") as sub, anyio.create_task_group() as tasks:
            tasks.start_soon(sub.__anext__)
            while hub.statistics().subscribers == 0:
                await anyio.lowlevel.checkpoint()
            await hub.publish("t", "read")
            await hub.publish("t", "fills the buffer")
            outcome: list[BaseException] = []

            async def waiting_publisher() -> None:
                try:
                    await hub.publish("t", "waits forever")
                except anyio.ClosedResourceError as exc:
                    outcome.append(exc)

            tasks.start_soon(waiting_publisher)
            while hub.statistics().publishers_waiting == 0:
                await anyio.lowlevel.checkpoint()
            hub.close()
    assert len(outcome) == 1
    assert hub.backend.store.statistics().appended == 2  # type: ignore[attr-defined]


# ------------------------------------------------------------ scale


@pytest.mark.parametrize(("topics", "per_topic"), [(1, 2000), (2000, 1)])
async def test_thousands_of_subscribers_and_topics_get_everything_and_leave_nothing(
    topics: int, per_topic: int
) -> None:
    hub = Hub(buffer_size=8)
    received = 0
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tasks:

            async def reader(topic: str) -> None:
                nonlocal received
                async with hub.subscribe(topic) as sub:
                    async for frame in sub:
                        received += 1
                        if frame.endswith(b"data: 2\r\n\r\n"):
                            return

            for t in range(topics):
                for _ in range(per_topic):
                    tasks.start_soon(reader, f"topic-{t}")
            while hub.statistics().subscribers < topics * per_topic:  # noqa: ASYNC110 - joining has no event of its own; bounded by fail_after
                await anyio.sleep(0.01)
            for n in range(3):
                for t in range(topics):
                    await hub.publish(f"topic-{t}", str(n))
    assert received == 3 * topics * per_topic
    stats = hub.statistics()
    assert stats.subscribers == 0
    assert dict(stats.topics) == {}
    assert stats.buffered == 0
    assert stats.delivered == received
    hub.close()


def test_infinite_block_timeout_is_not_nan() -> None:
    assert Hub(policy=SlowConsumerPolicy.BLOCK, block_timeout=math.inf).statistics().closed is False


async def test_a_publisher_cancelled_while_waiting_for_room_stored_nothing() -> None:
    hub = Hub(buffer_size=1, policy=SlowConsumerPolicy.BLOCK, block_timeout=None)
    store = hub.backend.store  # type: ignore[attr-defined]
    got: list[str] = []
    with anyio.fail_after(5):
        async with hub.subscribe("t") as sub, anyio.create_task_group() as tasks:
            tasks.start_soon(sub.__anext__)
            while hub.statistics().subscribers == 0:
                await anyio.lowlevel.checkpoint()
            await hub.publish("t", "read")
            await hub.publish("t", "fills")
            appended = store.statistics().appended
            with anyio.move_on_after(0.02):
                await hub.publish("t", "cancelled while waiting")
            assert store.statistics().appended == appended
            # Waiting publishers are served in order once there is room.

            async def publish(text: str) -> None:
                await hub.publish("t", text)

            for text in ("p1", "p2", "p3"):
                tasks.start_soon(publish, text)
                while hub.statistics().publishers_waiting < int(text[1]):
                    await anyio.lowlevel.checkpoint()
            async for frame in sub:
                got.append(_event(frame).data)
                if got[-1] == "p3":
                    break
    # (When each publish() returns may differ; the subscriber's order may not.)
    assert got == ["fills", "p1", "p2", "p3"]
    hub.close()
