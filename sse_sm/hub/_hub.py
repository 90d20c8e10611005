"""The broadcast hub: publish once, deliver to every subscriber of a topic.

Theory of operation
-------------------
:meth:`Hub.publish` turns an item into a :class:`~sse_sm.ServerSentEvent` and
hands it to the backend, which stores it (giving it an id and a position),
encodes it once, and calls the hub's fan-out with the entry.  The fan-out
appends that one entry (the same ``bytes`` for everybody) to each
subscriber's bounded buffer, or applies the subscriber's
:class:`SlowConsumerPolicy` when the buffer is full.  A :class:`Subscription`
is the async iterator a response streams: it yields frames (``bytes``),
which the connection sends as they are.

Invariants:

* **Unsubscribed on every path.**  A subscription joins its topic when it is
  first iterated, and leaves it in :meth:`Subscription.aclose`, which the
  connection driver calls on every close path (bounded and shielded), when it
  ends (hub closed, slow consumer let go), or, if it is dropped without being
  closed, when it is garbage collected: a finalizer hands it back to the hub
  on the hub's loop.  A subscription that is never iterated never joins.
* **No duplicate, no hole.**  A resuming subscription joins first and asks
  the backend for the replay second; live entries at or below the replay's
  ``head`` position are dropped.  With the memory backend nothing can even
  interleave: neither step suspends.
* **Every loss is visible.**  A replay that cannot start right after the
  client's id, and every run of events a drop policy discarded, reaches the
  client as one ``sse_sm.gap`` event at the place of the hole, and is
  counted in :meth:`Hub.statistics`.
* **All or nothing.**  An item that cannot be an event is refused by
  :class:`~sse_sm.ServerSentEvent` (a ``TypeError`` or ``ValueError`` naming
  the field) before the backend sees it, and the backend encodes before it
  assigns an id or a sequence number, so a publish that raises has stored
  nothing and used nothing: a resume after the event before it stays exact.
  Once an entry is stored the fan-out never raises: a subscriber that cannot
  take it is let go (it resumes from the store), the others get it.
* **Lossless when asked.**  Under ``BLOCK`` the publisher waits for room in
  every ``BLOCK`` subscriber's buffer before the backend stores the event, so
  a cancelled publish has stored nothing; after ``block_timeout`` the
  subscribers still full are let go (their clients resume from the store).
* **One event loop.**  Only the fan-out and the consumer touch a buffer, and
  neither suspends while doing so, so no lock guards a buffer.  Publishers of
  one topic that have to wait queue in order behind one ``anyio.Lock``.

Why one module of this length: it is the hub's public surface (subscribe,
publish, publish_many, the thread entry, close, statistics), most of it
docstrings that state each method's contract; the machinery behind it
already lives in ``_fanout``, ``_buffers`` and ``_subscription``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, Final, final

import anyio
import anyio.from_thread
import anyio.lowlevel

from .._events import DEFAULT_SEPARATOR, ServerSentEvent, validate_sep
from .._fairness import PUBLISH_EVENTS, PUBLISH_SLICE
from .._validation import check_count, check_instance, check_seconds
from ._backend import HubBackend, MemoryBackend
from ._buffers import Tally, TopicState
from ._fanout import FanOut
from ._replay import Entry, last_event_id
from ._subscription import Subscription
from ._types import HubStatistics, SlowConsumerPolicy, TopicStatistics

__all__ = ("Hub", "every_hub")

_FIELDS: Final = frozenset({"data", "event", "id", "retry", "comment", "sep"})

#: Every hub alive in the process, for metrics exporters (``sse_sm.otel``).
_every_hub: weakref.WeakSet[Hub] = weakref.WeakSet()


def _as_event(item: object, sep: str) -> ServerSentEvent:
    """What :meth:`Hub.publish` accepts, as an event (the item itself is never changed)."""
    if isinstance(item, ServerSentEvent):
        return item
    if type(item) is str:
        return ServerSentEvent(item, sep=sep)
    if isinstance(item, Mapping):
        unknown = sorted(map(str, item.keys() - _FIELDS))
        if unknown:
            raise TypeError(f"unknown ServerSentEvent field(s) in dict item: {unknown}")
        fields = {key: value for key, value in item.items() if key != "sep"}
        return ServerSentEvent(**fields, sep=sep)
    if isinstance(item, (bytes, bytearray, memoryview)):
        raise TypeError(
            "a hub cannot publish pre-encoded bytes: it writes each event's id; "
            "publish a ServerSentEvent, a str or a dict of its fields"
        )
    return ServerSentEvent(item, sep=sep)


@final
class Hub:
    """Publish once, deliver to every subscriber of a topic, with bounded buffers.

    >>> hub = Hub()
    >>> async def ticker(request):  # doctest: +SKIP
    ...     return EventSourceResponse(hub.subscribe("ticker", request))
    >>> async def tick(price):  # doctest: +SKIP
    ...     await hub.publish("ticker", ServerSentEvent(price, event="tick"))

    A hub belongs to one event loop: call :meth:`publish`, :meth:`subscribe`,
    :meth:`close` and :meth:`statistics` from tasks on that loop.  From
    another thread, use :meth:`publish_from_thread`.  A hub with no
    subscribers left may be used on a later loop (each test of a suite).

    Args:
        backend: stores events for replay and carries them to every hub;
            a :class:`~sse_sm.MemoryBackend` with its defaults if omitted.
        buffer_size: events each subscriber may hold unread (default 256).
        policy: what happens when a subscriber's buffer is full (default
            ``DISCONNECT``: the client reconnects and resumes from the store).
        block_timeout: seconds a publisher waits for room under ``BLOCK``
            before the subscribers still full are let go; ``None`` waits forever.
        sep: line terminator for items given as ``str`` or ``dict``.

    Raises:
        TypeError, ValueError: an argument is out of range; the message names it.
    """

    __slots__ = (
        "__weakref__",
        "_backend",
        "_block_timeout",
        "_budget",
        "_buffer_size",
        "_fanout",
        "_policy",
        "_publish_waits",
        "_published",
        "_sep",
        "_stop_gaps",
        "_stop_listening",
        "_yield_at",
    )

    def __init__(
        self,
        backend: HubBackend | None = None,
        *,
        buffer_size: int = 256,
        policy: SlowConsumerPolicy = SlowConsumerPolicy.DISCONNECT,
        block_timeout: float | None = 5.0,
        sep: str = DEFAULT_SEPARATOR,
    ) -> None:
        self._buffer_size = check_count("buffer_size", buffer_size, minimum=1)
        self._policy = check_instance("policy", policy, SlowConsumerPolicy)
        self._block_timeout = (
            None
            if block_timeout is None
            else check_seconds("block_timeout", block_timeout, allow_zero=True)
        )
        self._sep = validate_sep(sep)
        self._backend: HubBackend = MemoryBackend() if backend is None else backend
        #: Topics, subscribers and their buffers: shared with every Subscription.
        self._fanout = fanout = FanOut()
        self._published = 0
        self._publish_waits = 0
        self._yield_at = 0.0
        self._budget = PUBLISH_EVENTS
        self._stop_listening = self._backend.listen(fanout.deliver)
        # Optional in the protocol: a backend that can lose events on their way here.
        listen_gaps = getattr(self._backend, "listen_gaps", None)
        self._stop_gaps: Callable[[], None] | None = (
            None if listen_gaps is None else listen_gaps(fanout.deliver_gap)
        )
        try:
            fanout.bind()
        except RuntimeError:
            pass  # created outside a loop: bound when first used
        _every_hub.add(self)

    @property
    def backend(self) -> HubBackend:
        return self._backend

    @property
    def closed(self) -> bool:
        return self._fanout.closed

    # ------------------------------------------------------------ subscribing

    def subscribe(
        self,
        topic: str,
        request: Mapping[str, Any] | None = None,
        *,
        last_event_id: str | None = None,
        buffer_size: int | None = None,
        policy: SlowConsumerPolicy | None = None,
    ) -> Subscription:
        """A subscription to ``topic``: an async iterator of encoded events.

        >>> async def ticker(request):  # doctest: +SKIP
        ...     return EventSourceResponse(hub.subscribe("ticker", request))

        Nothing happens until it is first iterated: then it asks the backend
        to watch the topic if the backend has ``watch`` (the Redis backend:
        so a topic needs no listing in advance), joins the topic, and if the
        client gave a last event id, yields the gap signal (if any) and the
        replayed events before the live ones.

        Args:
            topic: the topic's name.
            request: the Starlette request (or ASGI scope) whose
                ``Last-Event-ID`` header, or ``lastEventID`` query parameter,
                says where to resume.
            last_event_id: resume after this id instead (``""`` or ``None``:
                no resume, unless ``request`` has one).
            buffer_size, policy: this subscriber's, instead of the hub's.

        Raises:
            TypeError, ValueError: an argument is invalid.
        """
        if not isinstance(topic, str):
            raise TypeError(f"topic must be a str, got {type(topic).__name__}")
        resume: str | None = None
        if last_event_id:
            if not isinstance(last_event_id, str) or any(c in last_event_id for c in "\0\r\n"):
                raise ValueError(
                    f"last_event_id must be a str without NUL, CR or LF: {last_event_id!r}"
                )
            resume = last_event_id
        elif request is not None:
            resume = _last_event_id(request)
        return Subscription(
            self._fanout,
            self._backend,
            self._sep,
            topic,
            resume,
            self._buffer_size
            if buffer_size is None
            else check_count("buffer_size", buffer_size, minimum=1),
            self._policy
            if policy is None
            else check_instance("policy", policy, SlowConsumerPolicy),
        )

    # ------------------------------------------------------------ publishing

    async def publish(self, topic: str, item: object) -> str:
        """Store ``item`` as an event of ``topic`` and deliver it to every subscriber.

        ``item`` is a :class:`~sse_sm.ServerSentEvent`, a ``str`` (the data),
        a ``dict`` of ``ServerSentEvent`` fields, or any other value (the
        data, as ``ServerSentEvent`` writes it).  Without an ``id`` it gets
        the store's next automatic id.

        Returns at once unless a ``BLOCK`` subscriber of the topic is full;
        then it waits, in order with other waiting publishers, up to
        ``block_timeout``.  Cancelled while waiting, it has stored and
        delivered nothing.  It yields to the loop at least every 20 ms
        (``PUBLISH_SLICE``), so a publishing loop cannot starve the
        subscribers it feeds.

        Returns:
            The event's id.

        All or nothing: if it raises, nothing was stored and no id or
        sequence number was used, so the next event takes this one's place
        and a client resuming after the previous event misses nothing and
        sees nothing twice.

        Raises:
            anyio.ClosedResourceError: the hub is closed (also if it closes
                while this call waits).
            TypeError, ValueError: the item cannot be an event; the message
                starts with the name of the field at fault.
        """
        fanout = self._fanout
        if fanout.closed:
            raise anyio.ClosedResourceError
        event = _as_event(item, self._sep)
        if fanout.token is None:
            fanout.bind()
        hub_topic = fanout.topics.get(topic)
        if hub_topic is None:
            entry = await self._backend.publish(topic, event)
        else:
            if hub_topic.full_blockers or hub_topic.waiting:
                entry = await self._publish_when_room(hub_topic, event)
            else:
                entry = await self._backend.publish(topic, event)
            hub_topic.published += 1
        self._published += 1
        self._budget -= 1
        if self._budget <= 0 or fanout.clock() >= self._yield_at:
            await anyio.lowlevel.checkpoint()
            self._budget = PUBLISH_EVENTS
            self._yield_at = fanout.clock() + PUBLISH_SLICE
        return entry.id

    async def publish_many(self, topic: str, items: Iterable[object]) -> list[str]:
        """Store several items as events of ``topic``, in order; their ids, in order.

        Each item is what :meth:`publish` accepts.  Every item is turned
        into an event before any is stored, so an item that cannot be one
        stores nothing.  The backend stores them in one call when it can
        (``publish_many`` of :class:`~sse_sm.MemoryBackend` and of the Redis
        backend: one round trip); another backend, or a topic with a
        ``BLOCK`` subscriber (each event waits for room on its own), gets
        them one :meth:`publish` at a time.  Yields to the loop at least once
        per call, and at least every 20 ms as :meth:`publish` does.

        If it raises once the backend was called, the events before the
        failing one may be stored (and delivered): the memory backend fails
        only with a failing clock or epoch function, the Redis backend only
        when Redis refuses a write half-way (its error says how many were
        stored; see ``RedisBackend.publish_many``), and one at a time, the
        events before a failing publish stay stored.  None is ever stored
        twice or out of order.

        Raises:
            anyio.ClosedResourceError: the hub is closed.
            TypeError: ``items`` is a ``str``, ``bytes`` or mapping (one
                item, not several) or not iterable.
            TypeError, ValueError: an item cannot be an event; the message
                starts with its place (``items[3]:``) and the field at fault.
        """
        fanout = self._fanout
        if fanout.closed:
            raise anyio.ClosedResourceError
        if not isinstance(topic, str):
            raise TypeError(f"topic must be a str, got {type(topic).__name__}")
        if isinstance(items, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(
            items, Iterable
        ):
            raise TypeError(f"items must be an iterable of items, got {type(items).__name__}")
        events: list[ServerSentEvent] = []
        for index, item in enumerate(items):
            try:
                events.append(_as_event(item, self._sep))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"items[{index}]: {exc}") from exc
        if fanout.token is None:
            fanout.bind()
        hub_topic = fanout.topics.get(topic)
        many = getattr(self._backend, "publish_many", None)
        if (
            many is None
            or not events
            or (hub_topic is not None and any(s.blocks for s in hub_topic.subscribers))
        ):
            ids = [await self.publish(topic, event) for event in events]
            await anyio.lowlevel.checkpoint()
            return ids
        entries: list[Entry] = await many(topic, events)
        if hub_topic is not None:
            hub_topic.published += len(entries)
        self._published += len(entries)
        await anyio.lowlevel.checkpoint()  # after every batch: a new slice and budget
        self._budget = PUBLISH_EVENTS
        self._yield_at = fanout.clock() + PUBLISH_SLICE
        return [entry.id for entry in entries]

    async def _publish_when_room(self, topic: TopicState, event: ServerSentEvent) -> Entry:
        fanout = self._fanout
        topic.waiting += 1
        self._publish_waits += 1
        try:
            if topic.turn is None:
                topic.turn = anyio.Lock()
            async with topic.turn:
                if topic.full_blockers and not fanout.closed:
                    with anyio.move_on_after(self._block_timeout):
                        while topic.full_blockers and not fanout.closed:
                            if topic.room is None:
                                topic.room = anyio.Event()
                            await topic.room.wait()
                if fanout.closed:
                    raise anyio.ClosedResourceError
                if topic.full_blockers:
                    reason = (
                        f"the subscriber to {topic.name!r} did not make room "
                        f"within {self._block_timeout} s"
                    )
                    for state in [s for s in topic.subscribers if s.blocks and s.count >= s.size]:
                        fanout.let_go(state, reason, refused=0)
                return await self._backend.publish(topic.name, event)
        finally:
            topic.waiting -= 1
            fanout.discard_if_idle(topic)

    def publish_from_thread(self, topic: str, item: object) -> str:
        """:meth:`publish` from a thread that is not the hub's loop; blocks until done.

        Runs ``publish`` on the loop the hub is bound to (the one it was
        created on, or on which a subscription last joined, or its first
        ``publish`` ran) through ``anyio.from_thread.run``; needs anyio 4.11
        or newer.  The loop is not looked up on every publish: that costs
        about 1 us, a quarter of a publish to one subscriber.

        Raises:
            RuntimeError: the hub has not been used on a loop yet, or this is
                the loop's own thread (``await hub.publish(...)`` there).
            anyio.RunFinishedError: that loop is no longer running.
        """
        token = self._fanout.token
        if token is None:
            raise RuntimeError("the hub has not been used on an event loop yet")
        if threading.get_ident() == self._fanout.loop_thread:
            raise RuntimeError("on the hub's own loop thread, await hub.publish() instead")
        return anyio.from_thread.run(self.publish, topic, item, token=token)

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """End every subscription and refuse new events.  Idempotent; never blocks.

        Each subscription still yields what it already holds, then ends (its
        response completes, or drains when a drain is under way).  Publishers
        waiting for room raise ``anyio.ClosedResourceError``; subscriptions
        iterated later end at once.
        """
        if self._fanout.closed:
            return
        self._stop_listening()
        if self._stop_gaps is not None:
            self._stop_gaps()
        self._fanout.close()

    async def __aenter__(self) -> Hub:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def statistics(self) -> HubStatistics:
        """Counters and gauges now; call it on the hub's loop."""
        fanout = self._fanout
        fanout.reap()
        topics: dict[str, TopicStatistics] = {}
        totals = Tally()
        totals.retire(fanout.retired)
        for name, topic in fanout.topics.items():
            tally = Tally()
            tally.retire(topic.retired)
            buffered = 0
            for state in topic.subscribers:
                tally.retire(state)
                totals.retire(state)
                buffered += state.count
            topics[name] = TopicStatistics(
                subscribers=len(topic.subscribers),
                buffered=buffered,
                published=topic.published,
                delivered=tally.delivered,
                replayed=tally.replayed,
                dropped=tally.dropped,
                gaps=tally.gaps,
                slow_disconnects=tally.slow_disconnects,
                publishers_waiting=topic.waiting,
            )
        return HubStatistics(
            subscribers=fanout.subscribers,
            topics=MappingProxyType(topics),
            published=self._published,
            delivered=totals.delivered,
            replayed=totals.replayed,
            dropped=totals.dropped,
            gaps=totals.gaps,
            slow_disconnects=totals.slow_disconnects,
            buffered=sum(t.buffered for t in topics.values()),
            publishers_waiting=sum(t.publishers_waiting for t in topics.values()),
            publish_waits=self._publish_waits,
            closed=fanout.closed,
        )

    def __repr__(self) -> str:
        fanout = self._fanout
        state = "closed" if fanout.closed else "open"
        return f"<Hub {state}: {fanout.subscribers} subscriber(s) on {len(fanout.topics)} topic(s)>"


_last_event_id = last_event_id  # subscribe() has an argument of the same name


def every_hub() -> list[Hub]:
    """The hubs alive in this process (weakly held: a hub is not kept alive by this)."""
    return list(_every_hub)
