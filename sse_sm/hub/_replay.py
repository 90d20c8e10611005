"""Resume: the client's Last-Event-ID, a bounded replay store, and the gap signal.

A browser's ``EventSource`` reconnects on its own and sends the id of the last
event it saw in a ``Last-Event-ID`` header.  Resuming is the server's half:
find that id in what was published and send what came after it.  This module
holds that half, and nothing of the event loop (no anyio, no Starlette at run
time), so that it can be read and tested on its own.

Invariants:

* **Never a silent hole.**  :meth:`MemoryReplayStore.replay_nowait` either
  returns exactly the events after the requested id, or returns what it still
  holds together with a :class:`Gap` saying that something is missing (the id
  is older than the store's horizon, or it is unknown).  The hub turns a gap
  into an ``sse_sm.gap`` event ahead of the replayed events (docs/hub.md has
  the wire format), so a client can tell a clean resume from a lossy one.
* **Ids a client can hand back.**  An event published without an id gets
  ``<epoch>-<seq>``: ``epoch`` is 8 random hex digits drawn when the topic's
  log is created, ``seq`` is the event's number in that log as 16 decimal
  digits, so ids of one log sort as strings in publish order.  The epoch makes
  an id from an earlier process, or from a log that was pruned and created
  again, *unknown* instead of silently matching a different event.
* **Bounded.**  A store keeps at most ``max_events`` events per topic and none
  older than ``max_age`` seconds (by its injected clock); at least one of the
  two bounds must be set.  Age is enforced whenever a topic is written or
  read, and for every topic by :meth:`MemoryReplayStore.prune`.
* **An append is all or nothing.**  The event is encoded, and the clock
  read, before the store changes; an append that raises leaves no log, no
  sequence number, no position and no indexed id behind, so sequence numbers
  stay contiguous and a resume stays exact.
* **Positions never repeat.**  Every stored event gets a ``position`` from one
  counter per store, strictly increasing, so a subscriber can drop a live
  event that a replay already gave it by comparing two integers, even across
  a log that was dropped and created again.

Spec: https://html.spec.whatwg.org/multipage/server-sent-events.html#the-last-event-id-header

Why one module of this length: the store's log, the parsing of a client's
Last-Event-ID and the gap signal define one contract (what a resume
returns); they are pure (no event loop) and tested as one.
"""

from __future__ import annotations

import enum
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final, NamedTuple, Protocol, final
from urllib.parse import parse_qsl

from .._events import JSONServerSentEvent, ServerSentEvent, _encode_fields
from .._validation import check_count, check_seconds

__all__ = (
    "GAP_EVENT",
    "LAST_EVENT_ID_QUERY",
    "SEQ_DIGITS",
    "Entry",
    "Gap",
    "GapReason",
    "MemoryReplayStore",
    "Replay",
    "ReplayStatistics",
    "ReplayStore",
    "last_event_id",
    "random_epoch",
)

#: The event type of the gap signal; ``EventSource`` dispatches it only to
#: listeners of this name, so clients that do not care never see it.
GAP_EVENT: Final = "sse_sm.gap"
#: The query parameter read when a request has no ``Last-Event-ID`` header
#: (the name Mercure uses), for clients that cannot set headers.
LAST_EVENT_ID_QUERY: Final = "lastEventID"
#: Width of the sequence part of an automatic id: 10**16 events per log.
SEQ_DIGITS: Final = 16

_HEADER: Final = b"last-event-id"


# ------------------------------------------------------------------ the request


def _valid_id(text: str) -> str | None:
    """``text`` if a browser could have sent it as a last event ID, else ``None``.

    A browser sends the header only for a non-empty ID, and never one with NUL
    (the parser ignores an ``id`` field containing NUL); CR and LF cannot be in
    an id field at all.  Anything else is a client we should not trust.
    """
    if not text or "\0" in text or "\r" in text or "\n" in text:
        return None
    return text


def last_event_id(
    request: Mapping[str, Any], *, query_parameter: str | None = LAST_EVENT_ID_QUERY
) -> str | None:
    """The id the client last saw, from its ``Last-Event-ID`` header or query string.

    >>> last_event_id({"type": "http", "headers": [(b"last-event-id", b"a1-7")]})
    'a1-7'
    >>> last_event_id({"type": "http", "headers": [], "query_string": b"lastEventID=a1-7"})
    'a1-7'

    Args:
        request: a Starlette ``Request`` (any ``HTTPConnection``) or an ASGI scope.
        query_parameter: the query parameter read when there is no header, for
            clients that cannot set headers; ``None`` reads the header only.

    Returns:
        The id, or ``None`` when the client sent none, or sent one that no
        browser would: empty, not UTF-8, or containing NUL, CR or LF.  When
        the header is present it decides, even if it is refused; when it is
        repeated the first one counts.
    """
    for name, value in request.get("headers", ()):
        if name == _HEADER:
            try:
                return _valid_id(value.decode("utf-8"))
            except UnicodeDecodeError:
                return None
    if query_parameter is None:
        return None
    query = request.get("query_string", b"")
    if not query:
        return None
    try:
        # As Starlette reads it: latin-1 bytes, then percent-escapes as UTF-8.
        pairs = parse_qsl(
            query.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        return None
    for name, value in pairs:
        if name == query_parameter:
            return _valid_id(value)
    return None


# ------------------------------------------------------------------ values


class Entry(NamedTuple):
    """One stored event, encoded once and shared by every subscriber.

    A tuple rather than a frozen dataclass because one is built per publish,
    and a tuple is built in a fraction of the time.
    """

    #: The topic it was published to.
    topic: str
    #: Its id on the wire; ``""`` if the publisher reset the client's id.
    id: str
    #: Strictly increasing per topic and never reused by one backend.
    position: int
    #: The encoded event, ``id:`` line included.
    frame: bytes


class GapReason(enum.Enum):
    """Why a subscriber may have missed events."""

    #: The requested id is older than the oldest event the store still holds.
    EXPIRED = "expired"
    #: The store does not know the id: from an earlier process, another topic,
    #: a log that was pruned, or a publisher's own id no longer retained.
    UNKNOWN = "unknown"
    #: The subscriber's buffer was full and its policy dropped events.
    DROPPED = "dropped"

    __hash__ = object.__hash__


@final
@dataclass(frozen=True, slots=True)
class Gap:
    """Events a subscriber may have missed, and where its stream picks up again."""

    reason: GapReason
    #: The last id the subscriber had before the gap (for a resume, the one it asked for).
    last_event_id: str | None
    #: The id of the first event after the gap, if one is already known.
    next_id: str | None
    #: How many events were lost, when that is known.
    missed: int | None

    def to_event(self, sep: str = "\r\n") -> ServerSentEvent:
        """The ``sse_sm.gap`` event: no ``id`` field, so the client's last id stays put."""
        return JSONServerSentEvent(
            {
                "reason": self.reason.value,
                "last_event_id": self.last_event_id,
                "next_id": self.next_id,
                "missed": self.missed,
            },
            event=GAP_EVENT,
            sep=sep,
        )


@final
@dataclass(frozen=True, slots=True)
class Replay:
    """What a store answers to "the events after id X"."""

    #: The events to send, oldest first.
    entries: Sequence[Entry]
    #: Set when ``entries`` does not start right after the requested id.
    gap: Gap | None
    #: The newest position the store had assigned in the topic when it answered
    #: (0 if none): a live event at or below it is either in ``entries`` or
    #: older than what the client asked for.
    head: int


@final
@dataclass(frozen=True, slots=True)
class ReplayStatistics:
    """A snapshot of a :class:`MemoryReplayStore`."""

    #: Topics with a log.
    topics: int
    #: Events held, over all topics.
    events: int
    #: Events appended since the store was created.
    appended: int
    #: Events dropped by ``max_events`` or ``max_age``.
    evicted: int


class ReplayStore(Protocol):
    """Where events are kept for replay: the half of a backend a resume needs.

    :class:`MemoryReplayStore` is the embedded one.  A multi-process store
    (Redis Streams, say) implements the same two coroutines.
    """

    async def append(self, topic: str, event: ServerSentEvent) -> Entry:
        """Store ``event``, giving it an automatic id if it has none; return its entry."""
        ...

    async def replay(self, topic: str, last_event_id: str) -> Replay:
        """The events after ``last_event_id``, or what is held and a :class:`Gap`."""
        ...


# ------------------------------------------------------------------ the memory store


def random_epoch() -> str:
    """8 random lowercase hex digits: the first part of a log's automatic ids."""
    return secrets.token_hex(4)


@final
class _Log:
    """One topic's retained events; ``entries[i]`` has sequence number ``first_seq + i``."""

    __slots__ = ("by_id", "entries", "epoch", "head", "next_seq", "times")

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.next_seq = 1
        self.entries: deque[Entry] = deque()
        #: Append time of each entry, kept only when the store has a ``max_age``.
        self.times: deque[float] = deque()
        #: Publisher-given ids of retained entries -> sequence number (the latest wins).
        self.by_id: dict[str, int] = {}
        #: Position of the newest entry ever appended, retained or not.
        self.head = 0

    @property
    def first_seq(self) -> int:
        return self.next_seq - len(self.entries)

    def evict_oldest(self) -> None:
        seq = self.first_seq
        entry = self.entries.popleft()
        if self.times:
            self.times.popleft()
        if self.by_id and self.by_id.get(entry.id) == seq:
            del self.by_id[entry.id]

    def seq_of(self, event_id: str) -> int | None:
        """The sequence number ``event_id`` names in this log, retained or not, if known."""
        seq = self.by_id.get(event_id)
        if seq is not None:
            return seq
        epoch, dash, digits = event_id.rpartition("-")
        if (
            dash
            and epoch == self.epoch
            and len(digits) == SEQ_DIGITS
            and digits.isascii()
            and digits.isdigit()
        ):
            return int(digits)
        return None


def _check_epoch(epoch: object) -> str:
    if not isinstance(epoch, str) or not epoch or any(c in epoch for c in "\r\n\0"):
        raise ValueError(f"an epoch must be a non-empty str without CR, LF or NUL: {epoch!r}")
    return epoch


@final
class MemoryReplayStore:
    """The embedded replay store: per topic, the newest events in memory.

    >>> store = MemoryReplayStore(max_events=2, new_epoch=lambda: "e")
    >>> first = store.append_nowait("t", ServerSentEvent("a"))
    >>> first.id
    'e-0000000000000001'
    >>> [e.id for e in store.replay_nowait("t", first.id).entries]
    []

    Everything runs synchronously: the ``*_nowait`` methods never suspend,
    and the coroutines that satisfy :class:`ReplayStore` only call them.  The
    store is therefore atomic on one event loop; it is not thread-safe.

    Args:
        max_events: most events kept per topic; ``None`` for no count bound.
        max_age: seconds an event is kept; ``None`` for no age bound.
        clock: monotonic seconds, for ``max_age`` (inject a fake one in tests).
        new_epoch: draws the epoch of each new topic log (random by default).

    Raises:
        ValueError: both bounds are ``None`` (the store would grow forever),
            or a bound is negative.
    """

    __slots__ = (
        "_appended",
        "_clock",
        "_evicted",
        "_logs",
        "_max_age",
        "_max_events",
        "_new_epoch",
        "_position",
    )

    def __init__(
        self,
        *,
        max_events: int | None = 1024,
        max_age: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        new_epoch: Callable[[], str] = random_epoch,
    ) -> None:
        if max_events is None and max_age is None:
            raise ValueError("a replay store needs max_events, max_age or both")
        if max_events is not None:
            check_count("max_events", max_events, minimum=0)
        if max_age is not None:
            check_seconds("max_age", max_age, allow_zero=True)
        self._max_events = max_events
        self._max_age = max_age
        self._clock = clock
        self._new_epoch = new_epoch
        self._logs: dict[str, _Log] = {}
        self._position = 0
        self._appended = 0
        self._evicted = 0

    @property
    def max_events(self) -> int | None:
        return self._max_events

    @property
    def max_age(self) -> float | None:
        return self._max_age

    # ------------------------------------------------------------ writing

    def append_nowait(self, topic: str, event: ServerSentEvent) -> Entry:
        """Store ``event`` and return its entry, encoded once with its id.

        An event without an id gets the next automatic id of the topic's log;
        the event object itself is not changed.  An event with an id keeps
        it, and a later resume from that id works while the event is held
        (if two held events share an id, the newer one counts).

        All or nothing: everything that can fail (drawing a new log's epoch,
        encoding the event, reading the clock) happens before the store is
        changed.  If it raises, the store is exactly as it was: no log
        created, no sequence number or position used, no id indexed, so the
        next event takes the place this one never had and a resume from the
        event before it is still exact.
        """
        log = self._logs.get(topic)
        new_log = log is None
        if log is None:
            log = _Log(_check_epoch(self._new_epoch()))  # kept only if the event is
        seq = log.next_seq
        given_id = event_id = event.id
        if event_id is None:
            event_id = f"{log.epoch}-{seq:016d}"  # SEQ_DIGITS, written out: 20% faster
            frame = _encode_fields(
                event.data, event.event, event_id, event.retry, event.comment, event.sep
            )
        else:
            frame = event.encode()
        max_age = self._max_age
        now = 0.0 if max_age is None else self._clock()
        # Nothing below raises: the event is stored whole.
        if new_log:
            self._logs[topic] = log
        log.next_seq = seq + 1
        if given_id:  # a publisher's own id ("" resets the client's id: not indexed)
            log.by_id[given_id] = seq
        self._position += 1
        entry = Entry(topic, event_id, self._position, frame)
        log.head = self._position
        log.entries.append(entry)
        self._appended += 1
        if max_age is not None:
            log.times.append(now)
            self._expire(log, now)
        max_events = self._max_events
        if max_events is not None and len(log.entries) > max_events:
            if not log.by_id and not log.times:
                log.entries.popleft()  # the common case, inline: one event in, one out
                self._evicted += 1
            else:
                while len(log.entries) > max_events:
                    log.evict_oldest()
                    self._evicted += 1
        return entry

    async def append(self, topic: str, event: ServerSentEvent) -> Entry:
        """:meth:`append_nowait`, as :class:`ReplayStore` asks; never suspends."""
        return self.append_nowait(topic, event)

    def _expire(self, log: _Log, now: float | None = None) -> None:
        """Evict ``log``'s events older than ``max_age`` at ``now`` (the clock's, if not given)."""
        if self._max_age is None:
            return
        horizon = (self._clock() if now is None else now) - self._max_age
        times = log.times
        while times and times[0] <= horizon:
            log.evict_oldest()
            self._evicted += 1

    def prune(self) -> int:
        """Evict expired events in every topic and drop logs left empty.

        For a store with ``max_age`` and many short-lived topics: age is
        otherwise enforced only when a topic is written or read.  A dropped
        log starts again with a new epoch, so its old ids become unknown.

        Returns:
            The number of logs dropped.
        """
        empty = []
        for topic, log in self._logs.items():
            self._expire(log)
            if not log.entries:
                empty.append(topic)
        for topic in empty:
            del self._logs[topic]
        return len(empty)

    def forget(self, topic: str) -> None:
        """Drop a topic's log; its ids become unknown (a resume gets a gap)."""
        self._logs.pop(topic, None)

    # ------------------------------------------------------------ reading

    def replay_nowait(self, topic: str, last_event_id: str) -> Replay:
        """The events after ``last_event_id``, oldest first.

        When the id is the newest event, nothing.  When it is older than the
        oldest event held, or unknown, everything held, with a :class:`Gap`
        (``missed`` is exact when the id is an automatic id of this log).
        """
        log = self._logs.get(topic)
        if log is None:
            return Replay((), Gap(GapReason.UNKNOWN, last_event_id, None, None), 0)
        self._expire(log)
        entries = log.entries
        first_seq = log.first_seq
        seq = log.seq_of(last_event_id)
        if seq is not None and first_seq - 1 <= seq < log.next_seq:
            after = islice(entries, seq - first_seq + 1, None)
            return Replay(tuple(after), None, log.head)
        next_id = entries[0].id if entries else None
        if seq is not None and seq < first_seq - 1:
            gap = Gap(GapReason.EXPIRED, last_event_id, next_id, first_seq - 1 - seq)
        else:
            gap = Gap(GapReason.UNKNOWN, last_event_id, next_id, None)
        return Replay(tuple(entries), gap, log.head)

    async def replay(self, topic: str, last_event_id: str) -> Replay:
        """:meth:`replay_nowait`, as :class:`ReplayStore` asks; never suspends."""
        return self.replay_nowait(topic, last_event_id)

    def statistics(self) -> ReplayStatistics:
        return ReplayStatistics(
            topics=len(self._logs),
            events=sum(len(log.entries) for log in self._logs.values()),
            appended=self._appended,
            evicted=self._evicted,
        )
