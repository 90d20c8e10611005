"""Resume without a hub: reading the client's last event id, and the replay store.

The store is synchronous and takes an injected clock, so these tests need no
event loop except where they check the coroutines of the ``ReplayStore``
protocol.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

import sse_sm
from sse_sm import JSONServerSentEvent, ServerSentEvent
from sse_sm.hub._replay import (
    GAP_EVENT,
    SEQ_DIGITS,
    Entry,
    Gap,
    GapReason,
    MemoryReplayStore,
    ReplayStore,
    last_event_id,
)
from sse_sm.testing import parse_event_stream
from tests._support import http_scope


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scope_with(
    headers: list[tuple[bytes, bytes]] | None = None, query: bytes = b""
) -> dict[str, Any]:
    scope = dict(http_scope())
    scope["headers"] = headers or []
    scope["query_string"] = query
    return scope


def ids(entries: Any) -> list[str]:
    return [entry.id for entry in entries]


def store_with(count: int, **kwargs: Any) -> tuple[MemoryReplayStore, list[Entry]]:
    store = MemoryReplayStore(new_epoch=lambda: "ep", **kwargs)
    entries = [store.append_nowait("t", ServerSentEvent(f"e{n}")) for n in range(count)]
    return store, entries


# ------------------------------------------------------------------ last_event_id


def test_the_header_gives_the_last_event_id() -> None:
    assert last_event_id(scope_with([(b"last-event-id", b"ep-42")])) == "ep-42"


def test_a_starlette_request_works_like_its_scope() -> None:
    request = Request(scope_with([(b"last-event-id", b"x")]))
    assert last_event_id(request) == "x"


def test_the_query_parameter_is_the_fallback_for_clients_without_headers() -> None:
    assert last_event_id(scope_with(query=b"topic=a&lastEventID=ep-7")) == "ep-7"
    assert last_event_id(scope_with(query=b"lastEventID=caf%C3%A9")) == "café"


def test_the_header_wins_over_the_query_even_when_it_is_refused() -> None:
    both = scope_with([(b"last-event-id", b"from-header")], b"lastEventID=from-query")
    assert last_event_id(both) == "from-header"
    refused = scope_with([(b"last-event-id", b"a\x00b")], b"lastEventID=from-query")
    assert last_event_id(refused) is None


def test_the_first_of_repeated_headers_counts() -> None:
    scope = scope_with([(b"last-event-id", b"first"), (b"last-event-id", b"second")])
    assert last_event_id(scope) == "first"


@pytest.mark.parametrize(
    "value",
    [b"", b"a\x00b", b"\xff\xfe", b"a\rb", b"a\nb"],
    ids=["empty", "NUL", "not UTF-8", "CR", "LF"],
)
def test_an_id_no_browser_would_send_is_ignored(value: bytes) -> None:
    assert last_event_id(scope_with([(b"last-event-id", value)])) is None


@pytest.mark.parametrize("query", [b"lastEventID=a%00b", b"lastEventID=%FF", b"lastEventID="])
def test_an_invalid_query_id_is_ignored(query: bytes) -> None:
    assert last_event_id(scope_with(query=query)) is None


def test_the_query_fallback_can_be_renamed_or_disabled() -> None:
    scope = scope_with(query=b"since=ep-3&lastEventID=ep-2")
    assert last_event_id(scope, query_parameter="since") == "ep-3"
    assert last_event_id(scope, query_parameter=None) is None


def test_a_header_is_decoded_as_utf8() -> None:
    assert last_event_id(scope_with([(b"last-event-id", "café".encode())])) == "café"


def test_no_id_at_all() -> None:
    assert last_event_id(scope_with()) is None
    assert last_event_id({"type": "http"}) is None


# ------------------------------------------------------------------ ids and frames


def test_automatic_ids_are_epoch_and_zero_padded_sequence_in_publish_order() -> None:
    _, entries = store_with(12)
    assert entries[0].id == "ep-" + "1".rjust(SEQ_DIGITS, "0")
    assert ids(entries) == sorted(ids(entries)), "ids of one log sort as strings"
    assert [int(e.id.rpartition("-")[2]) for e in entries] == list(range(1, 13))


def test_the_frame_carries_the_id_and_the_event_is_not_changed() -> None:
    store = MemoryReplayStore(new_epoch=lambda: "ep")
    event = ServerSentEvent("hello\nworld", event="greeting", retry=500, comment="c")
    entry = store.append_nowait("t", event)
    assert event.id is None
    [parsed] = parse_event_stream(entry.frame)
    assert (parsed.data, parsed.event, parsed.id, parsed.retry) == (
        "hello\nworld",
        "greeting",
        entry.id,
        500,
    )
    assert (
        entry.frame
        == ServerSentEvent(
            "hello\nworld", event="greeting", retry=500, comment="c", id=entry.id
        ).encode()
    )


def test_a_publisher_id_is_kept_and_can_be_resumed_from() -> None:
    store = MemoryReplayStore()
    store.append_nowait("t", ServerSentEvent("a", id="order-1"))
    second = store.append_nowait("t", JSONServerSentEvent({"n": 2}, id="order-2"))
    third = store.append_nowait("t", ServerSentEvent("c"))
    assert second.id == "order-2"
    assert parse_event_stream(second.frame)[0].data == '{"n":2}'
    assert ids(store.replay_nowait("t", "order-1").entries) == ["order-2", third.id]


def test_the_newest_of_duplicate_publisher_ids_counts() -> None:
    store = MemoryReplayStore()
    store.append_nowait("t", ServerSentEvent("a", id="same"))
    store.append_nowait("t", ServerSentEvent("b"))
    store.append_nowait("t", ServerSentEvent("c", id="same"))
    last = store.append_nowait("t", ServerSentEvent("d"))
    assert ids(store.replay_nowait("t", "same").entries) == [last.id]


def test_an_empty_publisher_id_is_sent_but_not_indexed() -> None:
    store = MemoryReplayStore()
    entry = store.append_nowait("t", ServerSentEvent("a", id=""))
    assert entry.id == ""
    assert b"id: \r\n" in entry.frame
    assert store.replay_nowait("t", "").gap is not None


def test_positions_increase_across_topics_and_never_repeat() -> None:
    store = MemoryReplayStore()
    positions = [store.append_nowait(t, ServerSentEvent("x")).position for t in "abab"]
    store.forget("a")
    positions.append(store.append_nowait("a", ServerSentEvent("x")).position)
    assert positions == [1, 2, 3, 4, 5]


# ------------------------------------------------------------------ replay


def test_replay_gives_exactly_the_events_after_the_id() -> None:
    store, entries = store_with(10)
    replay = store.replay_nowait("t", entries[3].id)
    assert replay.gap is None
    assert ids(replay.entries) == ids(entries[4:])
    assert replay.head == entries[-1].position


def test_replay_from_the_newest_id_is_empty_and_has_no_gap() -> None:
    store, entries = store_with(3)
    replay = store.replay_nowait("t", entries[-1].id)
    assert (list(replay.entries), replay.gap) == ([], None)


def test_an_id_older_than_the_count_bound_gives_an_expired_gap_with_the_count() -> None:
    store, entries = store_with(10, max_events=4)
    replay = store.replay_nowait("t", entries[1].id)
    assert ids(replay.entries) == ids(entries[6:])
    assert replay.gap == Gap(GapReason.EXPIRED, entries[1].id, entries[6].id, 4)


def test_the_id_just_before_the_oldest_held_is_not_a_gap() -> None:
    store, entries = store_with(10, max_events=4)
    replay = store.replay_nowait("t", entries[5].id)
    assert replay.gap is None
    assert ids(replay.entries) == ids(entries[6:])


def test_events_older_than_max_age_expire_by_the_injected_clock() -> None:
    clock = FakeClock()
    store = MemoryReplayStore(max_events=None, max_age=60, clock=clock, new_epoch=lambda: "ep")
    old = [store.append_nowait("t", ServerSentEvent(str(n))) for n in range(3)]
    clock.now += 30
    recent = store.append_nowait("t", ServerSentEvent("recent"))
    clock.now += 45  # the first three are 75 s old, the last 45 s
    replay = store.replay_nowait("t", old[0].id)
    assert ids(replay.entries) == [recent.id]
    assert replay.gap == Gap(GapReason.EXPIRED, old[0].id, recent.id, 2)
    clock.now += 60
    replay = store.replay_nowait("t", old[0].id)
    assert replay.gap == Gap(GapReason.EXPIRED, old[0].id, None, 3)
    assert store.replay_nowait("t", recent.id).gap is None, "the newest id needs nothing"


@pytest.mark.parametrize(
    "asked",
    ["garbage", "other-0000000000000001", "ep-0000000000000099", "ep-1", "order-9"],
    ids=["garbage", "another epoch", "from the future", "not padded", "unknown own id"],
)
def test_an_unknown_id_gives_everything_held_and_an_unknown_gap(asked: str) -> None:
    store, entries = store_with(5, max_events=3)
    replay = store.replay_nowait("t", asked)
    assert ids(replay.entries) == ids(entries[2:])
    assert replay.gap == Gap(GapReason.UNKNOWN, asked, entries[2].id, None)


def test_a_publisher_id_that_was_evicted_is_unknown() -> None:
    store = MemoryReplayStore(max_events=1)
    store.append_nowait("t", ServerSentEvent("a", id="mine"))
    newer = store.append_nowait("t", ServerSentEvent("b"))
    replay = store.replay_nowait("t", "mine")
    assert replay.gap == Gap(GapReason.UNKNOWN, "mine", newer.id, None)


def test_a_topic_never_written_is_an_unknown_gap_with_nothing() -> None:
    replay = MemoryReplayStore().replay_nowait("nobody", "x")
    assert (list(replay.entries), replay.head) == ([], 0)
    assert replay.gap == Gap(GapReason.UNKNOWN, "x", None, None)


def test_a_log_created_again_has_a_new_epoch_so_old_ids_are_unknown() -> None:
    epochs = iter(["one", "two"])
    clock = FakeClock()
    store = MemoryReplayStore(max_age=10, clock=clock, new_epoch=lambda: next(epochs))
    old = store.append_nowait("t", ServerSentEvent("a"))
    clock.now += 11
    assert store.prune() == 1
    new = store.append_nowait("t", ServerSentEvent("b"))
    assert new.id.startswith("two-")
    assert new.id.rpartition("-")[2] == old.id.rpartition("-")[2], "same sequence number"
    replay = store.replay_nowait("t", old.id)
    assert replay.gap is not None
    assert replay.gap.reason is GapReason.UNKNOWN
    assert ids(replay.entries) == [new.id]


def test_max_events_zero_keeps_nothing_but_still_knows_the_newest_id() -> None:
    store, entries = store_with(3, max_events=0)
    assert store.replay_nowait("t", entries[-1].id).gap is None
    assert store.replay_nowait("t", entries[0].id).gap == Gap(
        GapReason.EXPIRED, entries[0].id, None, 2
    )


def test_statistics_count_what_is_held_and_evicted() -> None:
    store, _ = store_with(10, max_events=4)
    store.append_nowait("u", ServerSentEvent("x"))
    stats = store.statistics()
    assert (stats.topics, stats.events, stats.appended, stats.evicted) == (2, 5, 11, 6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_events": None, "max_age": None},
        {"max_events": -1},
        {"max_age": -1.0},
        {"max_age": float("nan")},
    ],
)
def test_an_unbounded_or_negative_store_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="max_"):
        MemoryReplayStore(**kwargs)


def test_a_bound_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="max_events"):
        MemoryReplayStore(max_events=True)
    with pytest.raises(TypeError, match="max_age"):
        MemoryReplayStore(max_age="60")  # type: ignore[arg-type]


@pytest.mark.parametrize("epoch", ["", "a\nb", "a\x00b"])
def test_an_epoch_that_cannot_be_in_an_id_is_refused(epoch: str) -> None:
    store = MemoryReplayStore(new_epoch=lambda: epoch)
    with pytest.raises(ValueError, match="epoch"):
        store.append_nowait("t", ServerSentEvent("x"))


async def test_the_coroutines_satisfy_the_replay_store_protocol() -> None:
    store: ReplayStore = MemoryReplayStore()
    first = await store.append("t", ServerSentEvent("a"))
    second = await store.append("t", ServerSentEvent("b"))
    assert ids((await store.replay("t", first.id)).entries) == [second.id]


# ------------------------------------------------------------------ the gap signal


def test_the_gap_signal_on_the_wire() -> None:
    gap = Gap(GapReason.EXPIRED, "ep-0000000000000002", "ep-0000000000000006", 3)
    assert gap.to_event().encode() == (
        b"event: sse_sm.gap\r\n"
        b'data: {"reason":"expired","last_event_id":"ep-0000000000000002",'
        b'"next_id":"ep-0000000000000006","missed":3}\r\n'
        b"\r\n"
    )
    unknown = Gap(GapReason.UNKNOWN, "x", None, None).to_event("\n").encode()
    [event] = parse_event_stream(unknown)
    assert event.event == GAP_EVENT
    assert event.data == '{"reason":"unknown","last_event_id":"x","next_id":null,"missed":null}'
    assert event.id == "", "the gap carries no id: the client's last id stays put"


def test_the_replay_module_knows_nothing_of_the_event_loop() -> None:
    path = Path(sse_sm.__file__).resolve().parent / "hub" / "_replay.py"
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"anyio", "asyncio", "trio", "starlette"}
