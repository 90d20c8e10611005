"""A hub backend on Redis Streams, for hubs in several processes: ``pip install sse_sm[redis]``.

>>> backend = RedisBackend("redis://localhost:6379/0")  # doctest: +SKIP
>>> hub = Hub(backend)  # doctest: +SKIP
>>> async with backend:  # in the app's lifespan  # doctest: +SKIP
...     await hub.publish("chat", "hello")

A public module of its own, not a name in ``sse_sm``: it is the one module
that needs the optional ``coredis`` dependency, so ``import sse_sm`` never
imports it, and a missing extra fails here, at the import that asks for it.

Theory of operation
-------------------
Each topic is one stream, ``<prefix><topic>``.  :meth:`RedisBackend.publish`
queues the event for the backend's flusher task, which sends every queued
publish in one script call around ``XADD`` (with the retention bound) that
also stores each entry's number in its stream (``n``: ``entries-added``
after it, Redis 7), so publishes issued together share a round trip; each
publisher gets its own id or its own error.  The stream id Redis assigns,
``<ms>-<seq>``, is the event's SSE id, and its position is the same pair as
one integer, ``ms << 64 | seq``, so positions increase with ids.  Every
process runs one reader task for all the topics it watches (listed, or
watched when a hub's subscriber first joins one): one ``XREAD BLOCK`` over
all of them, after the last id it has seen in each, a hole signalled
wherever an entry's number is not the next one, and the hubs' listeners
(their fan-out) called with every entry, in stream order per topic, on the
loop the backend was entered on.  Where numbers cannot tell (another writer's entries, a stream
that vanished or went back, the first read), it reads through a script that
returns the entries and the stream's counters (``XINFO STREAM``) atomically.
A process's own publishes reach its subscribers the same way, through its
reader, so there is exactly one delivery path and one order.

Invariants:

* **Owned, structured tasks.**  The reader and the flusher live in a task
  group that ``async with backend:`` opens and closes; nothing runs before
  it is entered or after it exits (both are cancelled, the connections
  closed, publishes still queued failed).
* **Per topic, in order, once.**  The flusher sends one batch at a time, its
  entries in the order they were queued, in one atomic script; a publish
  whose topic's earlier entry in the batch failed is not attempted, and one
  cancelled before its batch was sent is skipped.  Every publisher is
  answered: by its batch, by its own deadline while still queued, or when
  the backend stops.
* **No hole after a reconnect.**  The reader keeps, per topic, the id of the
  last entry it delivered and asks for what follows it after any error, so
  an entry stored while it was disconnected is delivered once it reconnects.
* **No silent hole** (Redis 7 and newer).  Entries the reader can no longer
  read (trimmed by the retention before it got to them, lost with a stream
  that was deleted, replaced or not persisted across a restart) reach the
  hubs' gap listeners (:meth:`RedisBackend.listen_gaps`) before the entries
  that follow, so every live subscriber yields an ``sse_sm.gap`` event at
  the place of the hole; each is also logged.  The check is exact: entries
  are numbered densely (``entries-added``), and Redis trims from the oldest
  entry, so when the oldest entry held is after the last one read, the
  missing ones are that count's growth less what is held.
* **The reader never dies.**  Redis failures, malformed replies, foreign or
  malformed entries and listeners that raise are logged (a failure once per
  topic and run of failures) and skipped or retried with that topic's own
  backoff, so one topic's trouble does not hold up the others; only
  cancellation ends the reader.
* **Fair.**  The reader hands the loop back every ``FAIRNESS_SLICE`` seconds
  or ``FAIRNESS_EVENTS`` entries while it delivers, a stream's slice, not
  ``Hub.publish``'s longer one: with the longer one, a reconnect storm of
  5,000 streams onto one worker made that worker's publishes time out
  (``python -m bench.scale --sections storm --storm-streams 5000``; the
  cause is not pinned down).
* **No hole after a watch.**  :meth:`RedisBackend.watch` returns once the
  topic's starting id is fixed; the hub's subscription joins right after it
  (no checkpoint between), so it gets every entry stored after it joined.
  A watch wakes the blocked ``XREAD`` (an entry in the backend's own wake
  stream) so the next one includes the new key.
* **No hole between replay and live.**  A topic is watched (from the
  stream's newest id) before the replay is read, and the replay's
  ``head`` is the position of its last entry, so the hub drops what both give.
* **Bounded waits.**  Every command runs under a deadline: a publish that
  Redis does not answer raises :class:`RedisUnavailableError` after
  ``command_timeout`` seconds instead of hanging.

Why one module of this length: the publish script, the reader's snapshot
script and the reader itself share one storage format (the frame, its
separator, its number ``n``) and one idea of a hole; keeping them together
keeps that format in one place.  The reader (with its failure logging and
fairness) is the part to move out first if it grows.
"""

from __future__ import annotations

import logging
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, final

import anyio
import anyio.abc
import anyio.lowlevel

try:
    import coredis
    import coredis.exceptions
    from coredis.response.types import StreamEntry
    from coredis.retry import NoRetryPolicy
    from coredis.tokens import PureToken
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("sse_sm.redis needs coredis: pip install 'sse_sm[redis]'") from exc

from .._events import ServerSentEvent
from .._fairness import FAIRNESS_EVENTS, FAIRNESS_SLICE
from .._validation import check_count, check_seconds
from ._backend import EntryListener, GapListener, Listeners, check_events
from ._replay import Entry, Gap, GapReason, Replay

__all__ = ("RedisBackend", "RedisBackendStatistics", "RedisUnavailableError", "parse_stream_id")

#: A stream id as Redis writes it: two decimal 64-bit numbers.
_STREAM_ID: Final = re.compile(r"\A([0-9]{1,20})-([0-9]{1,20})\Z")
_MAX_PART: Final = 2**64 - 1
#: Field names of a stored event: the frame without its id line, and the event's separator.
_FRAME: Final = b"f"
_SEP: Final = b"s"
#: The entry's number in its stream, ``entries-added`` after it (Redis 7; absent before).
_SEQ: Final = b"n"
logger = logging.getLogger("sse_sm.redis")

#: One atomic look at a stream: KEYS[1], the entries from id ARGV[1] on, at most
#: ARGV[2] of them (none for 0).  Returns {} when the key does not exist, else
#: {last-generated-id, max-deleted-entry-id, entries-added, length, first
#: entry's id, entries}; the second and third are "" before Redis 7, the fifth
#: is "" for an empty stream.  A key of another type is an error that names it.
_SNAPSHOT: Final = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return {} end
if kind ~= 'stream' then
  return redis.error_reply(
    'WRONGTYPE the key ' .. KEYS[1] .. ' holds a ' .. kind .. ', not a stream')
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local fields = {}
for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
local first = fields['first-entry']
local found = {}
if tonumber(ARGV[2]) > 0 then
  found = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
end
return {
  fields['last-generated-id'],
  fields['max-deleted-entry-id'] or '',
  tostring(fields['entries-added'] or ''),
  tostring(fields['length']),
  first and first[1] or '',
  found,
}
"""


#: How long a process's wake stream outlives its last use (a crashed process's goes away).
_WAKE_TTL_MS: Final = 60_000

#: Seconds between two warnings about foreign entries in one stream.
_WARN_EVERY: Final = 60.0


#: XADD of a batch of entries, each with its number: KEYS are the batch's
#: streams; ARGV[1..3]: MAXLEN or MINID, = or ~, the threshold; then three
#: per entry: its key's index in KEYS, the frame, the separator.  Returns one
#: string per entry, in order: its stream id, or ``!`` and the error that
#: kept it out.  Entries are added in order, and once one entry of a stream
#: fails, the later ones of that stream are not attempted (a publish never
#: lands after an earlier one of its topic failed).  Atomic: the numbers are
#: exact, and no other client's entry falls between two of one batch.
_PUBLISH: Final = """
local numbered = redis.REDIS_VERSION_NUM ~= nil and redis.REDIS_VERSION_NUM >= 0x070000
local count = {}
local failed = {}
local out = {}
for i = 4, #ARGV, 3 do
  local k = tonumber(ARGV[i])
  local key = KEYS[k]
  if count[k] == nil and failed[k] == nil then
    local kind = redis.call('TYPE', key)['ok']
    if kind == 'none' then
      count[k] = 0
    elseif kind == 'stream' then
      count[k] = 0
      if numbered then
        local info = redis.call('XINFO', 'STREAM', key)
        for j = 1, #info, 2 do
          if info[j] == 'entries-added' then count[k] = info[j + 1] end
        end
      end
    else
      failed[k] = 'WRONGTYPE the key ' .. key .. ' holds a ' .. kind .. ', not a stream'
    end
  end
  if failed[k] ~= nil then
    out[#out + 1] = '!' .. failed[k]
  else
    local fields = {'f', ARGV[i + 1], 's', ARGV[i + 2]}
    if numbered then
      fields[5] = 'n'
      fields[6] = tostring(count[k] + 1)
    end
    local id = redis.pcall('XADD', key, ARGV[1], ARGV[2], ARGV[3], '*', unpack(fields))
    if type(id) == 'table' and id.err then
      failed[k] = id.err
      out[#out + 1] = '!' .. id.err
    else
      count[k] = count[k] + 1
      out[#out + 1] = id
    end
  end
end
return out
"""

#: Most entries, and most bytes of frames, one batch sends (a bigger publish goes alone).
_BATCH_ENTRIES: Final = 512
_BATCH_BYTES: Final = 1 << 20


@final
class _Job:
    """One publish (or ``publish_many``) waiting in the queue: its entries land together."""

    __slots__ = ("cancelled", "done", "error", "frames", "ids", "sent", "size", "topic")

    def __init__(self, topic: str, frames: list[tuple[bytes, bytes]]) -> None:
        self.topic = topic
        #: ``(frame, separator)`` of each event, in order.
        self.frames = frames
        self.size = sum(len(frame) for frame, _ in frames)
        #: Set when the flusher took it: from then on its outcome is Redis's.
        self.sent = False
        #: Set by a publisher that stopped waiting before it was sent: skipped.
        self.cancelled = False
        self.ids: list[bytes] = []
        self.error: BaseException | None = None
        self.done = anyio.Event()

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class _MalformedReplyError(ValueError):
    """Redis answered the snapshot script with something it cannot have sent."""


def _parse(text: str) -> tuple[int, int]:
    parsed = parse_stream_id(text)
    if parsed is None:
        raise _MalformedReplyError(f"not a stream id: {text!r}")
    return parsed


@final
@dataclass(slots=True)
class _Cursor:
    """Where one topic's reader is."""

    #: The id of the last entry read (delivered or skipped), or where reading starts.
    last: str = "0-0"
    #: The stream's ``entries-added`` count up to ``last``, when known.
    index: int | None = None
    #: Whether ``last`` was read from the stream as it is now (not a guess).
    seen: bool = False
    #: Foreign entries skipped and not yet logged, and when they last were.
    skipped: int = 0
    warned_at: float = float("-inf")
    #: Whether the next round is a snapshot (see ``RedisBackend._read``).
    snapshot: bool = True
    #: Failures in a row, the last one logged, the backoff, and when to try again.
    failures: int = 0
    logged: str | None = None
    delay: float = 0.0
    retry_at: float = 0.0


@final
@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What the snapshot script saw, checked."""

    missing: bool
    last_generated: tuple[int, int] = (0, 0)
    #: ``None`` before Redis 7, which does not report it.
    max_deleted: tuple[int, int] | None = None
    #: ``entries-added``: entries ever added to the stream; ``None`` before Redis 7.
    added: int | None = None
    length: int = 0
    #: The oldest entry held; ``None`` when the stream is empty.
    first: tuple[int, int] | None = None
    entries: tuple[tuple[bytes, dict[bytes, bytes]], ...] = ()

    @classmethod
    def parse(cls, reply: object) -> _Snapshot:
        """The reply, checked field by field; :class:`_MalformedReplyError` names the bad one."""
        if not isinstance(reply, list):
            raise _MalformedReplyError(f"snapshot: a list expected, got {type(reply).__name__}")
        if not reply:
            return cls(missing=True)
        if len(reply) != 6:
            raise _MalformedReplyError(f"snapshot: 6 items expected, got {len(reply)}")
        generated, deleted, added, length, first, found = reply
        if not all(isinstance(v, bytes) for v in (generated, deleted, added, length, first)):
            raise _MalformedReplyError("snapshot: the stream's counters are not strings")
        if not isinstance(found, list):
            raise _MalformedReplyError("snapshot: entries: a list expected")
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        for item in found:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes)):
                raise _MalformedReplyError(f"snapshot: an entry is not [id, fields]: {item!r:.80}")
            ident, flat = item
            if not isinstance(flat, list) or len(flat) % 2:
                raise _MalformedReplyError(f"snapshot: entry {ident!r}: fields are not pairs")
            entries.append((ident, dict(zip(flat[::2], flat[1::2], strict=True))))
        for name, number in (("entries-added", added), ("length", length)):
            if number and not number.isdigit():
                raise _MalformedReplyError(f"snapshot: {name} is not a number: {number!r}")
        return cls(
            missing=False,
            last_generated=_parse(_text(generated)),
            max_deleted=_parse(_text(deleted)) if deleted else None,
            added=int(added) if added else None,
            length=int(length or 0),
            first=_parse(_text(first)) if first else None,
            entries=tuple(entries),
        )


#: Errors that mean "Redis cannot be reached or did not answer", retried by the reader.
_UNAVAILABLE: Final = (
    coredis.exceptions.RedisError,
    OSError,
    TimeoutError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


class RedisUnavailableError(ConnectionError):
    """Redis refused, failed or did not answer in time; the message says which and why.

    A :class:`ConnectionError`, so ``except ConnectionError`` catches it too.
    After a timeout the command's outcome is unknown: a publish may or may
    not have been stored.
    """


@final
@dataclass(frozen=True, slots=True)
class RedisBackendStatistics:
    """A snapshot of a :class:`RedisBackend`'s link to Redis."""

    #: Whether the last command to Redis (a read or a publish) succeeded.
    connected: bool
    #: Topics this process reads.
    topics: tuple[str, ...]
    #: Events this process stored.
    published: int
    #: Publishes that raised :class:`RedisUnavailableError`.
    publish_failures: int
    #: Entries the readers delivered to the listeners.
    received: int
    #: Times a reader read again after one or more failures.
    reconnects: int
    #: Failed commands, of readers and publishers.
    errors: int
    #: The last failure, as ``"ExceptionType: message"``; ``None`` if none yet.
    last_error: str | None
    #: ``time.monotonic()`` of the last failure; ``None`` if none yet.
    last_error_at: float | None
    #: Stream entries skipped because they were not written by this backend.
    foreign: int
    #: Holes the readers signalled: entries trimmed before they were read, or lost with the stream.
    gaps: int = 0
    #: Seconds from Redis storing the newest entry a reader read to this process reading it,
    #: as of the last read (Redis's clock against this host's, so skew shows too); 0.0 once
    #: a reader waited and found nothing new; ``None`` before the first read.
    lag: float | None = None


def parse_stream_id(text: str) -> tuple[int, int] | None:
    """``(ms, seq)`` of a Redis stream id, or ``None`` if ``text`` is not one.

    >>> parse_stream_id("1700000000000-3")
    (1700000000000, 3)
    >>> parse_stream_id("a1-0000000000000007") is None
    True
    """
    match = _STREAM_ID.match(text)
    if match is None:
        return None
    ms, seq = int(match[1]), int(match[2])
    if ms > _MAX_PART or seq > _MAX_PART:
        return None
    return ms, seq


def _position(ms: int, seq: int) -> int:
    return ms << 64 | seq


def _sequence(fields: Mapping[Any, object]) -> int | None:
    """An entry's number (``n``): ``None`` when it has none, ``-1`` when it is malformed."""
    value = fields.get(_SEQ)
    if value is None:
        return None
    if isinstance(value, bytes) and value.isdigit() and len(value) <= 20:
        return int(value)
    return -1


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@final
class RedisBackend:
    """Stores events in Redis Streams and carries them to the hubs of every process.

    >>> backend = RedisBackend("redis://localhost:6379/0")
    >>> backend.running
    False

    Use it as an async context manager in the task (usually the app's
    lifespan) that owns it, on the event loop of the hubs that listen::

        backend = RedisBackend(url)
        hub = Hub(backend)

        @contextlib.asynccontextmanager
        async def lifespan(app):
            async with backend:
                yield

    Entering it opens the Redis client and a task group, starts the reader
    and the flusher, and watches each of ``topics``; leaving it cancels both
    and closes the client.  A topic not listed is watched when a hub's
    subscriber first joins it (the hub calls :meth:`watch`), when a
    subscriber resumes on it (:meth:`replay`) or on :meth:`watch`.

    Args:
        url: where Redis is (``redis://[:password@]host:port/db``,
            ``rediss://`` for TLS, ``unix://path``).
        topics: topics watched as soon as the backend is entered (optional:
            a hub watches a topic on its first subscriber).
        prefix: prepended to a topic to name its stream.
        max_events: events kept per topic (``XADD MAXLEN``); ``None`` to
            bound by ``max_age`` instead.
        max_age: seconds an event is kept (``XADD MINID``, from this
            process's clock); ``None`` to bound by ``max_events``.
        exact: trim exactly (``=``) instead of whole stream nodes at a time
            (``~``, the default and much cheaper; it keeps a few more).
        command_timeout: seconds any command, publish included, may take
            (connecting included) before it fails.
        read_block: seconds one ``XREAD BLOCK`` waits for new entries; the
            reader notices a silently dead connection within this plus
            ``command_timeout``.
        read_count: most entries one ``XREAD`` returns.
        reconnect_delay: first and longest pause of the reader's
            exponential backoff after a failure, in seconds (jittered).
        max_connections: size of the client's connection pool; the reader
            holds one connection while it waits, the flusher one per batch.

    Raises:
        ValueError: an argument is out of range, or both or neither
            retention bound is set.
    """

    __slots__ = (
        "_blocked",
        "_client",
        "_command_timeout",
        "_connected",
        "_cursors",
        "_errors",
        "_exact",
        "_foreign",
        "_gap_listeners",
        "_gaps",
        "_initial_topics",
        "_lag",
        "_last_error",
        "_last_error_at",
        "_listeners",
        "_max_age",
        "_max_connections",
        "_max_events",
        "_prefix",
        "_publish_digest",
        "_publish_failures",
        "_published",
        "_queue",
        "_read_block",
        "_read_count",
        "_readers",
        "_received",
        "_reconnect_delay",
        "_reconnects",
        "_sending",
        "_snapshot_digest",
        "_stack",
        "_task_group",
        "_topics_changed",
        "_url",
        "_wake_flusher",
        "_wake_key",
        "_warned_old_redis",
    )

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        topics: Iterable[str] = (),
        prefix: str = "sse_sm:",
        max_events: int | None = 1024,
        max_age: float | None = None,
        exact: bool = False,
        command_timeout: float = 5.0,
        read_block: float = 5.0,
        read_count: int = 512,
        reconnect_delay: tuple[float, float] = (0.05, 5.0),
        max_connections: int = 64,
    ) -> None:
        if (max_events is None) == (max_age is None):
            raise ValueError("set exactly one of max_events and max_age (Redis trims by one)")
        if max_events is not None:
            check_count("max_events", max_events, minimum=1)
        if max_age is not None:
            check_seconds("max_age", max_age, allow_zero=False)
        check_seconds("command_timeout", command_timeout, allow_zero=False, finite=True)
        check_seconds("read_block", read_block, allow_zero=False, finite=True)
        check_count("read_count", read_count, minimum=1)
        first, longest = reconnect_delay
        if not (_positive(first) and _positive(longest) and first <= longest):
            raise ValueError(
                "reconnect_delay must be (first, longest) with 0 < first <= longest, "
                f"got {reconnect_delay!r}"
            )
        names = tuple(dict.fromkeys(topics))
        for topic in names:
            if not isinstance(topic, str):
                raise TypeError(f"a topic must be a str, got {type(topic).__name__}")
        self._url = url
        self._initial_topics = names
        self._prefix = prefix
        self._max_events = max_events
        self._max_age = max_age
        self._exact = exact
        self._command_timeout = float(command_timeout)
        self._read_block = float(read_block)
        self._read_count = read_count
        self._reconnect_delay = (float(first), float(longest))
        self._max_connections = max_connections
        self._listeners = Listeners[EntryListener]()
        self._gap_listeners = Listeners[GapListener]()
        self._gaps = 0
        self._snapshot_digest: str | None = None
        self._publish_digest: str | None = None
        self._warned_old_redis = False
        self._client: coredis.Redis[bytes] | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        #: Topics with a reader (or one starting), in the order they were watched.
        #: Topics watched (or being watched: the event is set once positioned), in order.
        self._readers: dict[str, anyio.Event] = {}
        #: Where the reader is in each watched topic.
        self._cursors: dict[str, _Cursor] = {}
        #: Whether the reader is in its ``XREAD BLOCK`` (so a new topic must wake it).
        self._blocked = False
        self._topics_changed = anyio.Event()
        #: A stream of this backend's own, read with the topics: an entry there ends the block.
        self._wake_key = f"{prefix}{{wake}}:{uuid.uuid4().hex}"
        #: Publishes waiting for the flusher, in the order they were issued.
        self._queue: deque[_Job] = deque()
        #: Whether a batch is on its way to Redis (sent by the flusher or by a lone publisher).
        self._sending = False
        self._wake_flusher = anyio.Event()
        self._connected = False
        self._published = 0
        self._publish_failures = 0
        self._received = 0
        self._reconnects = 0
        self._errors = 0
        self._foreign = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._lag: float | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        """Whether the backend is entered (and not yet left)."""
        return self._task_group is not None

    async def __aenter__(self) -> RedisBackend:
        """Open the client and the readers' task group; start the listed topics' readers.

        Does not wait for Redis: when it cannot be reached the readers
        retry with backoff (see :meth:`statistics`).  Not reentrant.
        """
        if self._stack is not None:
            raise RuntimeError("this RedisBackend is already entered")
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            client: coredis.Redis[bytes] = coredis.Redis.from_url(
                self._url,
                decode_responses=False,
                # A retried XADD whose reply was lost would store the event twice.
                retry_policy=NoRetryPolicy(),
                connect_timeout=self._command_timeout,
                max_connections=self._max_connections,
            )
            self._client = await stack.enter_async_context(client)
            # After the tasks are stopped, before the client closes (reverse order).
            stack.push_async_callback(self._drop_wake_key)
            self._task_group = await stack.enter_async_context(anyio.create_task_group())
            # The tasks are cancelled before the client closes (the stack unwinds in reverse).
            stack.callback(self._stop_readers)
            self._queue.clear()
            self._sending = False
            self._task_group.start_soon(self._flush, name="sse_sm.redis flusher")
            self._task_group.start_soon(self._read, name="sse_sm.redis reader")
            for topic in self._initial_topics:
                await self.watch(topic)
        except BaseException:
            self._client = self._task_group = None
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Cancel the readers, then close the client.  Returns once both are done."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        try:
            await stack.__aexit__(exc_type, exc, tb)
        finally:
            self._client = self._task_group = None
            self._readers.clear()
            self._cursors.clear()
            self._connected = False

    def _stop_readers(self) -> None:
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    def _require_client(self) -> coredis.Redis[bytes]:
        client = self._client
        if client is None:
            raise RuntimeError("the RedisBackend is not running: use it as `async with backend:`")
        return client

    # ------------------------------------------------------------ the protocol

    def listen(self, listener: EntryListener) -> Callable[[], None]:
        """Call ``listener`` with every entry the readers receive; returns its stop function."""
        return self._listeners.add(listener)

    def listen_gaps(self, listener: GapListener) -> Callable[[], None]:
        """Call ``listener`` with every hole a reader finds; returns its stop function.

        A hole is entries of a topic that a reader could not deliver: trimmed
        by the retention before it read them, or lost with the stream (Redis
        restarted without them, the key was deleted or replaced).  The
        :class:`~sse_sm.Hub` registers here, and each live subscriber of the
        topic yields one ``sse_sm.gap`` event at the place of the hole.
        """
        return self._gap_listeners.add(listener)

    async def publish(self, topic: str, event: ServerSentEvent) -> Entry:
        """``XADD`` the event; its stream id becomes its SSE id.

        The entry reaches this process's listeners through its reader, like
        every other process's, shortly after this returns (if the topic is
        read here).  Publishes issued while another batch is on its way to
        Redis share the next round trip (one script call), in the order they
        were issued; each still gets its own id or its own error.  Safe to
        cancel: cancelled before its batch was sent, it was not stored;
        after, it may or may not have been, as after a timeout (and, sent
        alone from its own task, it may then land after publishes issued
        later).  Either way the other publishes of its batch are unaffected.

        Raises:
            ValueError: the event has an ``id``: Redis assigns ids here.
            RedisUnavailableError: Redis failed, refused this entry (a key of
                another type, say; the message says why) or did not answer
                within ``command_timeout`` seconds (then the event may be
                stored).
            RuntimeError: the backend is not running.
        """
        [entry] = await self._publish(topic, (event,), "event")
        return entry

    async def publish_many(self, topic: str, events: Sequence[ServerSentEvent]) -> list[Entry]:
        """``XADD`` several events of ``topic`` in one round trip; their entries, in order.

        The events are stored in order, next to each other (no other
        publish of any process falls between them), in one script call.
        Redis refuses them together (a key of another type) or, in the rare
        case that a write fails half-way (Redis out of memory), keeps those
        before the failure: the error then says how many were stored.
        Otherwise as :meth:`publish`; an empty ``events`` returns ``[]``
        without asking Redis.

        Raises:
            TypeError: ``events`` is not a sequence of ``ServerSentEvent``;
                the message names the bad item (``events[3]``).
            ValueError: an event has an ``id``.
            RedisUnavailableError, RuntimeError: as :meth:`publish`.
        """
        check_events(events)
        if not events:
            self._require_client()
            return []
        return await self._publish(topic, events, "events[{}]")

    async def _publish(
        self, topic: str, events: Sequence[ServerSentEvent], name: str
    ) -> list[Entry]:
        """Queue ``events`` as one job for the flusher and wait for its outcome."""
        if not isinstance(topic, str):
            raise TypeError(f"topic must be a str, got {type(topic).__name__}")
        frames: list[tuple[bytes, bytes]] = []
        for index, event in enumerate(events):
            if event.id is not None:
                raise ValueError(
                    f"{name.format(index)}: the Redis backend gives every event its stream "
                    "id; publish events without an id"
                )
            frames.append((event.encode(), event.sep.encode()))
        client = self._require_client()
        job = _Job(topic, frames)
        if not self._sending and not self._queue:
            # Nothing queued or on its way: send it from this task, sparing the
            # two task switches through the flusher (a busy loop makes each
            # one long).  Publishes issued meanwhile queue for the flusher,
            # which waits for this one: one batch in flight keeps the order.
            self._sending = job.sent = True
            try:
                await self._send(client, [job])
            finally:
                self._sending = False
                if self._queue:
                    self._wake_flusher.set()
        else:
            await self._queued(job)
        if job.error is not None:
            raise job.error
        return [
            self._entry(topic, ident, {_FRAME: frame, _SEP: sep})
            for ident, (frame, sep) in zip(job.ids, frames, strict=True)
        ]

    async def _queued(self, job: _Job) -> None:
        """Queue ``job`` for the flusher and wait until it is answered (or given up unsent)."""
        topic = job.topic
        self._queue.append(job)
        self._wake_flusher.set()
        try:
            # Queued too long (Redis slow, a long queue): give up unsent, so nothing was stored.
            with anyio.move_on_after(self._command_timeout):
                await job.done.wait()
            if not job.done.is_set():
                if not job.sent:
                    job.cancelled = True
                    self._publish_failures += 1
                    raise self._unavailable(
                        f"publish to {topic!r}",
                        TimeoutError(),
                        f"not sent within {self._command_timeout} s (Redis is slow or "
                        "the queue long); not stored",
                    )
                await job.done.wait()  # sent: the flusher answers within its own deadline
        except BaseException:
            if not job.sent:
                job.cancelled = True  # the flusher skips it: nothing stored
            raise

    async def _flush(self) -> None:
        """The flusher, until cancelled: sends the queued publishes, a batch per round trip.

        While one batch is on its way, publishes queue; the next batch takes
        them all (up to ``_BATCH_ENTRIES`` entries or ``_BATCH_BYTES``), in
        order, so publishes issued together share a round trip and each
        topic's entries keep the order they were issued in.  Every job it
        takes is answered (ids or an error) before the next batch goes, and
        on the way out (cancelled) every job left is failed: no publisher
        waits forever.
        """
        client = self._require_client()
        queue = self._queue
        try:
            while True:
                while queue and queue[0].cancelled:
                    queue.popleft()
                if not queue or self._sending:  # a publisher sends its own: wait for it
                    self._wake_flusher = anyio.Event()
                    await self._wake_flusher.wait()
                    continue
                batch: list[_Job] = []
                entries = size = 0
                while queue:
                    job = queue[0]
                    if not job.cancelled:
                        if batch and (
                            entries + len(job.frames) > _BATCH_ENTRIES
                            or size + job.size > _BATCH_BYTES
                        ):
                            break
                        job.sent = True
                        batch.append(job)
                        entries += len(job.frames)
                        size += job.size
                    queue.popleft()
                self._sending = True
                try:
                    await self._send(client, batch)
                finally:
                    self._sending = False
        finally:
            stopped = RuntimeError("the RedisBackend stopped before this publish was sent")
            while queue:
                queue.popleft().fail(stopped)

    async def _send(self, client: coredis.Redis[bytes], batch: list[_Job]) -> None:
        """One script call for ``batch``; answers each job with its ids or its error."""
        keys: dict[str, int] = {}
        if self._max_events is not None:
            trim = ["MAXLEN", self._trim_operator(), str(self._max_events)]
        else:
            assert self._max_age is not None
            horizon = int((time.time() - self._max_age) * 1000)
            trim = ["MINID", self._trim_operator(), f"{max(horizon, 0)}-0"]
        args: list[str | bytes] = list(trim)
        for job in batch:
            index = keys.setdefault(self._key(job.topic), len(keys) + 1)
            for frame, sep in job.frames:
                args += (str(index), frame, sep)
        try:
            try:
                with anyio.fail_after(self._command_timeout):
                    reply = await self._script(
                        client, "_publish_digest", _PUBLISH, list(keys), args
                    )
                results = _publish_results(reply, len(args) // 3 - 1)
            except (*_UNAVAILABLE, _MalformedReplyError) as exc:
                self._failed(exc)
                for job in batch:
                    self._publish_failures += 1
                    job.fail(self._unavailable(f"publish to {job.topic!r}", exc, count=False))
                return
        except BaseException:
            outcome = RedisUnavailableError(
                f"Redis at {self._url}: the backend stopped while this publish was on its "
                "way; it may or may not be stored"
            )
            for job in batch:
                job.fail(outcome)
            raise
        self._connected = True
        position = 0
        for job in batch:
            mine = results[position : position + len(job.frames)]
            position += len(job.frames)
            errors = [item for item in mine if item.startswith(b"!")]
            if not errors:
                self._published += len(mine)
                job.ids = mine
                job.done.set()
                continue
            stored = len(mine) - len(errors)
            self._published += stored
            self._publish_failures += 1
            reason = _text(errors[0][1:])
            if stored:
                reason += f" ({stored} of its {len(mine)} events were stored before it)"
            refused = coredis.exceptions.ResponseError(reason)
            job.fail(self._unavailable(f"publish to {job.topic!r}", refused))

    async def replay(self, topic: str, last_event_id: str) -> Replay:
        """The events of ``topic`` after ``last_event_id`` (``XRANGE``), or all held and a gap.

        Starts the topic's reader first if it has none.  The gap is
        ``expired`` when the id is older than the oldest event held (it was
        trimmed), ``unknown`` when it is not a stream id, is newer than the
        stream, or names no entry.

        Raises:
            RedisUnavailableError: Redis failed or did not answer in time.
            RuntimeError: the backend is not running.
        """
        client = self._require_client()
        if topic not in self._readers:
            await self.watch(topic)
        key = self._key(topic)
        parsed = parse_stream_id(last_event_id)
        try:
            with anyio.fail_after(self._command_timeout):
                if parsed is not None:
                    found = await client.xrange(key, last_event_id, "+")
                    if found and parse_stream_id(_text(found[0].identifier)) == parsed:
                        entries = self._entries(topic, found[1:])
                        head = entries[-1].position if entries else _position(*parsed)
                        return Replay(entries, None, head)
                held = await client.xrange(key, "-", "+")
                reason = GapReason.UNKNOWN
                if parsed is not None:
                    if held:
                        first = parse_stream_id(_text(held[0].identifier))
                        if first is not None and parsed < first:
                            reason = GapReason.EXPIRED
                    elif await client.exists([key]):
                        # Everything was trimmed: expired if the id is not from the future.
                        info = await client.xinfo_stream(key)
                        newest = parse_stream_id(str(info["last-generated-id"]))
                        if newest is not None and parsed <= newest:
                            reason = GapReason.EXPIRED
        except _UNAVAILABLE as exc:
            raise self._unavailable(f"replay of {topic!r}", exc) from exc
        self._connected = True
        entries = self._entries(topic, held)
        next_id = entries[0].id if entries else None
        head = entries[-1].position if entries else 0
        return Replay(entries, Gap(reason, last_event_id, next_id, None), head)

    # ------------------------------------------------------------ readers

    async def watch(self, topic: str) -> None:
        """Read ``topic`` from the newest entry now on, unless it is read already.

        Idempotent, and returns at once for a topic already read; a second
        call while the first is positioning waits for it.  Returns once the
        topic's starting id is fixed: every entry stored after this returns
        reaches the listeners, or a gap does.  The starting id and the
        stream's count are read together, so the first hole is counted
        exactly.  When Redis cannot be reached, reading starts from this
        process's clock (``<now ms>-0``), with the count unknown until the
        first read, and is retried.  The process's one reader reads every
        watched topic in one ``XREAD``; this wakes it (an entry in a wake
        stream of its own) so the new topic's entries are not held up until
        its current block ends.

        Raises:
            RuntimeError: the backend is not running.
        """
        if not isinstance(topic, str):
            raise TypeError(f"a topic must be a str, got {type(topic).__name__}")
        while True:
            client = self._require_client()
            starting = self._readers.get(topic)
            if starting is None:
                break
            if starting.is_set():
                return
            await starting.wait()  # another call is positioning it; it may have failed
        ready = self._readers[topic] = anyio.Event()
        cursor = _Cursor()
        try:
            with anyio.fail_after(self._command_timeout):
                # Its newest id and its count, together: the hole check starts exact.
                snapshot = await self._snapshot(client, self._key(topic), "0-0", 0)
        except (*_UNAVAILABLE, _MalformedReplyError) as exc:
            self._failed(exc)
            cursor.last = f"{int(time.time() * 1000)}-0"
        except BaseException:
            del self._readers[topic]  # cancelled: not watched, a later call starts again
            ready.set()
            raise
        else:
            self._connected = True
            if snapshot.missing:
                cursor.index = 0  # a stream created from now on counts its entries from 0
            else:
                cursor.last = "{}-{}".format(*snapshot.last_generated)
                cursor.index = snapshot.added
                cursor.seen = True
        self._cursors[topic] = cursor
        ready.set()
        self._topics_changed.set()
        if self._blocked:
            await self._wake_reader(client)

    async def _wake_reader(self, client: coredis.Redis[bytes]) -> None:
        """End the reader's ``XREAD BLOCK`` now: one entry in its wake stream.

        Best effort: when it fails, the reader takes the new topic up after
        its block ends (``read_block``), still from its starting id.
        """
        try:
            with anyio.fail_after(self._command_timeout):
                await client.xadd(
                    self._wake_key,
                    {b"w": b""},
                    trim_strategy=PureToken.MAXLEN,
                    threshold=1,
                    trim_operator=PureToken.EQUAL,
                )
                await client.pexpire(self._wake_key, _WAKE_TTL_MS)
        except (*_UNAVAILABLE, _MalformedReplyError) as exc:
            self._failed(exc)

    async def _drop_wake_key(self) -> None:
        client = self._client
        if client is None:
            return
        with anyio.move_on_after(self._command_timeout, shield=True):
            try:
                await client.delete([self._wake_key])
            except _UNAVAILABLE:
                pass  # it expires by itself

    async def _read(self) -> None:
        """The process's one reader, until cancelled: never raises, never stops on bad data.

        Every watched topic is read here.  A topic's round is a snapshot
        (its entries after ``cursor.last`` and its stream's counters, in one
        atomic script) first, after a failure, after a block that found
        nothing (a stream that vanished or went back shows only there) and
        until it is caught up; then the caught-up topics wait together in one
        ``XREAD BLOCK`` (one key each, plus the wake stream :meth:`watch`
        writes to), one command per batch.  Each topic's entries are
        delivered in stream order, its holes signalled, and the loop handed
        back every ``FAIRNESS_SLICE`` seconds or ``FAIRNESS_EVENTS`` entries.
        A failure of one topic (a key of another type, a listener that
        raises, a bug) is logged once per run of failures and retried with
        its own backoff while the others go on; a failure of Redis fails
        every topic's next round the same way.  Nothing ends the task, so
        subscribers are never left waiting on a reader that is gone.
        """
        client = self._require_client()
        block_ms = int(self._read_block * 1000)
        wait_deadline = self._read_block + self._command_timeout
        cursors = self._cursors
        wake_last = "0-0"
        while True:
            if not cursors:
                self._topics_changed = anyio.Event()
                await self._topics_changed.wait()
                continue
            now = time.monotonic()
            due = [
                (topic, cursor)
                for topic, cursor in cursors.items()
                if cursor.snapshot and cursor.retry_at <= now
            ]
            if due:
                for topic, cursor in due:
                    await self._snapshot_round(client, topic, cursor)
                continue
            waiting = {
                self._key(topic): (topic, cursor)
                for topic, cursor in cursors.items()
                if not cursor.snapshot
            }
            backoff = [c.retry_at for c in cursors.values() if c.snapshot]
            block = block_ms
            if backoff:
                block = max(1, min(block, int((min(backoff) - now) * 1000) + 1))
            if not waiting:
                self._topics_changed = anyio.Event()
                with anyio.move_on_after(block / 1000):
                    await self._topics_changed.wait()
                continue
            streams: dict[str, str] = {key: cursor.last for key, (_, cursor) in waiting.items()}
            streams[self._wake_key] = wake_last
            try:
                self._blocked = True
                try:
                    with anyio.fail_after(wait_deadline):
                        reply = await client.xread(streams, count=self._read_count, block=block)
                finally:
                    self._blocked = False
            except coredis.exceptions.ResponseError as exc:
                # Redis refused one of the keys (of another type, say): each
                # topic's snapshot round tells which, and logs it.
                self._failed(exc)
                for _, cursor in waiting.values():
                    cursor.snapshot = True
                await anyio.sleep(self._reconnect_delay[0] * random.uniform(0.5, 1.0))
                continue
            except (*_UNAVAILABLE, _MalformedReplyError) as exc:
                for topic, cursor in waiting.values():  # Redis itself: every topic's failure
                    self._topic_failed(topic, self._key(topic), cursor, exc, traceback=False)
                continue
            self._connected = True
            woken = False
            for name, items in (reply or {}).items():
                key = _text(name)
                if key == self._wake_key:
                    woken = True
                    if items:
                        wake_last = _text(items[-1].identifier)
                    continue
                known = waiting.get(key)
                if known is None or not items:
                    continue
                topic, cursor = known
                found = [(item.identifier, item.field_values) for item in items]
                try:
                    # An entry without its number stops the batch: the snapshot reads on.
                    complete = await self._deliver_entries(topic, key, cursor, found, numbered=True)
                except Exception as exc:  # a bug: logged with its traceback, then retried
                    self._topic_failed(topic, key, cursor, exc, traceback=True)
                    continue
                cursor.snapshot = not complete
            if not reply or (not woken and not any(reply.values())):
                self._lag = 0.0  # waited and found nothing: caught up
                for _, cursor in waiting.values():
                    cursor.snapshot = True

    async def _snapshot_round(
        self, client: coredis.Redis[bytes], topic: str, cursor: _Cursor
    ) -> None:
        """One snapshot round of ``topic``; a failure is the topic's own (logged, backed off)."""
        key = self._key(topic)
        try:
            with anyio.fail_after(self._command_timeout):
                snapshot = await self._snapshot(client, key, cursor.last, self._read_count)
            self._connected = True
            self._recovered(topic, cursor)
            cursor.snapshot = not await self._deliver(topic, key, cursor, snapshot)
        except (*_UNAVAILABLE, _MalformedReplyError) as exc:
            self._topic_failed(topic, key, cursor, exc, traceback=False)
        except Exception as exc:  # a bug: logged with its traceback, never the reader's end
            self._topic_failed(topic, key, cursor, exc, traceback=True)

    def _recovered(self, topic: str, cursor: _Cursor) -> None:
        if cursor.failures:
            self._reconnects += 1
            logger.info(
                "Redis backend: the reader of topic %r reads again after %d failure(s)",
                topic,
                cursor.failures,
            )
            cursor.failures = 0
            cursor.logged = None
            cursor.delay = 0.0

    def _topic_failed(
        self, topic: str, key: str, cursor: _Cursor, failure: Exception, *, traceback: bool
    ) -> None:
        """Count, log (once per run of failures) and back off ``topic``'s reading."""
        first_delay, longest_delay = self._reconnect_delay
        cursor.failures += 1
        self._failed(failure)
        message = _describe(failure)
        if message != cursor.logged:
            cursor.logged = message
            logger.error(
                "Redis backend: the reader of topic %r (stream %r) failed: %s; "
                "retrying with backoff",
                topic,
                key,
                message,
                exc_info=failure if traceback else None,
            )
        delay = cursor.delay = min(cursor.delay * 2, longest_delay) if cursor.delay else first_delay
        cursor.snapshot = True
        cursor.retry_at = time.monotonic() + delay * random.uniform(0.5, 1.0)

    async def _deliver(self, topic: str, key: str, cursor: _Cursor, snapshot: _Snapshot) -> bool:
        """Signal the hole ``snapshot`` shows, if any, then deliver its entries.

        Returns whether the reader is caught up (it read everything after
        ``cursor.last``).  Updates ``cursor`` as it goes, so a cancellation
        at one of its checkpoints loses nothing.
        """
        if snapshot.missing:
            if cursor.seen:
                self._signal_gap(
                    topic,
                    Gap(GapReason.UNKNOWN, cursor.last, None, None),
                    None,
                    f"the stream {key!r} is gone (deleted, or Redis lost its data): "
                    "entries after the last one read may be lost",
                )
            cursor.seen = False
            cursor.index = 0
            return True
        if snapshot.last_generated < _parse(cursor.last) and (cursor.seen or cursor.index == 0):
            # The stream's ids are behind the last one read: it is a new stream
            # under the same key.  Read it from its start, after saying so.
            if cursor.seen:
                self._signal_gap(
                    topic,
                    Gap(GapReason.UNKNOWN, cursor.last, None, None),
                    None,
                    f"the stream {key!r} was replaced (its ids restart below the last one read)",
                )
            cursor.last, cursor.index, cursor.seen = "0-0", 0, True
            return False
        found = snapshot.entries
        drained = len(found) < self._read_count
        cursor.index = self._check_hole(topic, key, cursor, snapshot, drained)
        cursor.seen = True
        if found:
            await self._deliver_entries(topic, key, cursor, found, numbered=False)
        return drained

    async def _deliver_entries(
        self,
        topic: str,
        key: str,
        cursor: _Cursor,
        found: Sequence[tuple[str | bytes, Mapping[Any, object]]],
        *,
        numbered: bool,
    ) -> bool:
        """Deliver ``found`` (the entries right after ``cursor.last``), in slices.

        With ``numbered`` (entries from a plain ``XREAD``, which says nothing
        of what is missing), stop before an entry without a valid number,
        unless the count is unknown anyway (Redis < 7), and return ``False``:
        the snapshot script then reads from there, and its counters tell
        whether something before that entry is missing.  Otherwise returns
        ``True``.

        Each entry written by this backend on Redis 7 carries its number in
        the stream (``n``, ``entries-added`` after it): one that is not the
        next number after ``cursor.index`` means entries between were trimmed
        or deleted unread (a bigger one: ``expired``, with the count) or the
        stream was replaced (a smaller one: ``unknown``), and the hole is
        signalled before the entry is delivered.  Hands the loop back every
        ``FAIRNESS_SLICE`` seconds or ``FAIRNESS_EVENTS`` entries, and once
        at the end.  Updates ``cursor`` as it goes, so a cancellation at one
        of its checkpoints loses nothing.
        """
        budget = FAIRNESS_EVENTS
        yield_at = time.monotonic() + FAIRNESS_SLICE
        before = cursor.last
        foreign: list[str] = []
        complete = True
        for ident, fields in found:
            text = _text(ident)
            seq = _sequence(fields)
            index = cursor.index
            if numbered and (seq is None or seq < 0) and index is not None:
                complete = False
                break
            if seq is not None and seq >= 0 and index is not None and seq != index + 1:
                position = _position(*_parse(text))
                gap, why = _hole(
                    cursor.last,
                    text,
                    seq - index - 1,
                    f"the stream {key!r} was replaced (its count went back to {seq})",
                )
                self._signal_gap(topic, gap, position, why)
            cursor.last = text
            cursor.seen = True
            if seq is not None and seq >= 0:
                cursor.index = seq
            elif index is not None:
                cursor.index = index + 1  # another writer's entry counts too
            entry = None if seq == -1 else self._entry_or_none(topic, ident, fields)
            if entry is None:
                if seq == -1:
                    self._foreign += 1
                foreign.append(f"{text} {sorted(map(_text, fields))}")
                continue
            self._received += 1
            for listener in self._listeners.current:
                try:
                    listener(entry)
                except Exception:
                    logger.exception(
                        "Redis backend: a listener raised on entry %s of topic %r", entry.id, topic
                    )
            budget -= 1
            if budget <= 0 or time.monotonic() >= yield_at:
                await anyio.lowlevel.checkpoint()
                budget = FAIRNESS_EVENTS
                yield_at = time.monotonic() + FAIRNESS_SLICE
        if foreign:
            cursor.skipped += len(foreign)
            now = time.monotonic()
            if now - cursor.warned_at >= _WARN_EVERY:  # a foreign writer must not flood the log
                logger.warning(
                    "Redis backend: skipped %d entries of stream %r not written by sse_sm "
                    "(no frame, a bad separator or number, or an unterminated frame); "
                    "the first: %s",
                    cursor.skipped,
                    key,
                    foreign[0],
                )
                cursor.skipped = 0
                cursor.warned_at = now
        if cursor.last != before:  # once per batch: the newest entry's age (its id's ms)
            self._lag = max(0.0, time.time() - _parse(cursor.last)[0] / 1000)
        # Between two reads of a burst, hand the loop back even if the slice is not used up.
        await anyio.lowlevel.checkpoint()
        return complete

    def _check_hole(
        self, topic: str, key: str, cursor: _Cursor, snapshot: _Snapshot, drained: bool
    ) -> int | None:
        """Signal the entries after ``cursor.last`` that Redis no longer holds, if any.

        Returns the ``entries-added`` count just before the snapshot's first
        entry, when known.  Redis trims a stream from its oldest entry, so:
        when the oldest entry held is after the last one read, every entry
        held is after it, and ``entries-added`` minus the count at the last
        read minus the length is the number trimmed unread (``expired``; a
        negative number means the stream was replaced: ``unknown``).  When
        the oldest entry held is not after it, nothing unread was trimmed,
        and an entry deleted by hand shows in ``max-deleted-entry-id``.
        Exact on Redis 7 and newer; older Redis reports neither counter.
        """
        found = snapshot.entries
        added = snapshot.added
        last = _parse(cursor.last)
        trimmed_past = snapshot.first is None or snapshot.first > last
        first_seq = _sequence(found[0][1]) if found else None
        base: int | None
        if first_seq is not None and first_seq > 0:
            base = first_seq - 1  # the first entry's own number: exact even after an XDEL
        elif added is None:
            base = None
            if not self._warned_old_redis:
                self._warned_old_redis = True
                logger.warning(
                    "Redis backend: this Redis reports no entries-added (Redis < 7): "
                    "a reader that falls behind the retention cannot signal the hole"
                )
        elif trimmed_past:
            base = added - snapshot.length
        elif drained:
            base = added - len(found)
        else:
            base = cursor.index
        known = cursor.index
        lost = None if base is None or known is None else base - known
        if not lost:
            return base
        next_id = found[0][0].decode() if found else None
        position = _position(*_parse(next_id)) if next_id is not None else None
        assert lost is not None
        gap, why = _hole(
            cursor.last,
            next_id,
            lost,
            f"the stream {key!r} was replaced (it counts fewer entries than were read)",
        )
        self._signal_gap(topic, gap, position, why)
        return base

    def _signal_gap(self, topic: str, gap: Gap, position: int | None, why: str) -> None:
        self._gaps += 1
        logger.warning(
            "Redis backend: topic %r: %s; live subscribers get an sse_sm.gap event", topic, why
        )
        for listener in self._gap_listeners.current:
            try:
                listener(topic, gap, position)
            except Exception:
                logger.exception("Redis backend: a gap listener raised on topic %r", topic)

    async def _snapshot(
        self, client: coredis.Redis[bytes], key: str, last: str, count: int
    ) -> _Snapshot:
        """Run the snapshot script (loading it first if Redis does not have it).

        Reads the entries after ``last`` (from its successor: the exclusive
        ``(`` range needs Redis 6.2).
        """
        ms, seq = _parse(last)
        after = f"{ms}-{seq + 1}" if seq < _MAX_PART else f"{ms + 1}-0"
        args: list[str | bytes] = [after, str(count)]
        reply = await self._script(client, "_snapshot_digest", _SNAPSHOT, [key], args)
        return _Snapshot.parse(reply)

    async def _script(
        self,
        client: coredis.Redis[bytes],
        slot: Literal["_snapshot_digest", "_publish_digest"],
        script: str,
        keys: list[str],
        args: list[str | bytes],
    ) -> object:
        """``EVALSHA`` of ``script``, loading it first when Redis does not have it.

        Retrying after ``NOSCRIPT`` is safe, for a publish too: the script did not run.
        """
        digest: str | None = getattr(self, slot)
        if digest is not None:
            try:
                return await client.evalsha(digest, keys, args)
            except coredis.exceptions.NoScriptError:
                pass  # a restarted Redis forgot it
        digest = _text(await client.script_load(script))
        setattr(self, slot, digest)
        return await client.evalsha(digest, keys, args)

    # ------------------------------------------------------------ helpers

    def _key(self, topic: str) -> str:
        return self._prefix + topic

    def _trim_operator(self) -> str:
        return "=" if self._exact else "~"

    def _failed(self, exc: BaseException) -> None:
        self._connected = False
        self._errors += 1
        self._last_error = _describe(exc)
        self._last_error_at = time.monotonic()

    def _unavailable(
        self, what: str, exc: BaseException, reason: str | None = None, *, count: bool = True
    ) -> RedisUnavailableError:
        """The error a publisher or a replay raises; ``count`` records the failure too."""
        if count:
            self._failed(exc)
        if reason is None and isinstance(exc, TimeoutError):
            reason = f"no answer within {self._command_timeout} s; its outcome is unknown"
        elif reason is None:
            reason = _describe(exc)
        return RedisUnavailableError(f"Redis at {self._url}: {what} failed: {reason}")

    def _entry(self, topic: str, ident: bytes, fields: dict[bytes, bytes]) -> Entry:
        parsed = parse_stream_id(ident.decode())
        assert parsed is not None
        frame = fields[_FRAME]
        sep = fields.get(_SEP, b"\r\n")
        id_line = b"id: " + ident + sep
        # A comment comes first in an encoded event: then the id goes at the end of the block.
        frame = frame[: -len(sep)] + id_line + sep if frame.startswith(b":") else id_line + frame
        return Entry(topic, ident.decode(), _position(*parsed), frame)

    def _entry_or_none(
        self, topic: str, ident: object, fields: Mapping[Any, object]
    ) -> Entry | None:
        """The entry, or ``None`` (counted in ``foreign``) if another writer's or malformed.

        Ours has a frame (``f``) ending with a blank line, or a lone line end
        (an empty event), and a separator (``s``) that is a line end: a frame
        without its blank line would run into the next event on the wire.
        """
        frame = fields.get(_FRAME)
        sep = fields.get(_SEP, b"\r\n")
        if (
            not isinstance(ident, bytes)
            or not isinstance(frame, bytes)
            or not isinstance(sep, bytes)
            or sep not in (b"\r\n", b"\n", b"\r")
            or not (frame == sep or frame.endswith(sep + sep))
        ):
            self._foreign += 1
            return None
        return self._entry(topic, ident, {_FRAME: frame, _SEP: sep})

    def _entries(self, topic: str, found: Sequence[StreamEntry]) -> tuple[Entry, ...]:
        entries = (self._entry_or_none(topic, item.identifier, item.field_values) for item in found)
        return tuple(entry for entry in entries if entry is not None)

    # ------------------------------------------------------------ inspection

    def statistics(self) -> RedisBackendStatistics:
        """The link's state and counters now; never suspends."""
        return RedisBackendStatistics(
            connected=self._connected,
            topics=tuple(self._readers),
            published=self._published,
            publish_failures=self._publish_failures,
            received=self._received,
            reconnects=self._reconnects,
            errors=self._errors,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            foreign=self._foreign,
            gaps=self._gaps,
            lag=self._lag,
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisBackend {state} {self._url!r}: {len(self._readers)} topic(s)>"


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode()


def _hole(last: str, next_id: str | None, missed: int, replaced: str) -> tuple[Gap, str]:
    """The gap for entries the reader did not get, and what to log about it.

    ``missed`` > 0: that many were trimmed or deleted before this process
    read them (``expired``); otherwise the stream was replaced under the
    reader (``unknown``), as ``replaced`` says.
    """
    if missed > 0:
        why = (
            f"{missed} entries after {last} were trimmed or deleted before this "
            "process read them (it fell behind the retention)"
        )
        return Gap(GapReason.EXPIRED, last, next_id, missed), why
    return Gap(GapReason.UNKNOWN, last, next_id, None), replaced


def _publish_results(reply: object, count: int) -> list[bytes]:
    """The publish script's reply, checked: ``count`` ids or ``!``-errors."""
    if not (isinstance(reply, list) and len(reply) == count):
        raise _MalformedReplyError(f"publish: {count} results expected, got {reply!r:.80}")
    results: list[bytes] = []
    for item in reply:
        if not isinstance(item, bytes) or not (
            item.startswith(b"!") or parse_stream_id(_text(item)) is not None
        ):
            raise _MalformedReplyError(f"publish: a stream id expected, got {item!r:.80}")
        results.append(item)
    return results


def _positive(value: object) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and value > 0
        and value != float("inf")
    )
