"""What a hub needs from where events are kept: the backend protocol, and the in-memory one.

The :class:`~sse_sm.Hub` does everything that is local to one process: it
turns an item into an event, keeps each subscriber's bounded buffer, applies
the slow-consumer policy and counts.  A backend does the rest: it gives each
event its id and position, keeps it for replay, and carries it to every hub
listening, in every process.  User code talks to the hub only, so swapping
:class:`MemoryBackend` for a multi-process backend (Redis Streams, say) changes
one constructor argument.

Invariants of the contract (:class:`HubBackend`):

* **Listeners are synchronous.**  A listener is the hub's fan-out; it never
  suspends, so it can run inside :meth:`HubBackend.publish` or inside a
  backend's reader task without either waiting on a slow subscriber.  Back
  pressure is the hub's business, applied before it calls ``publish``.  Nor
  does it raise: the entry is stored when it runs.
* **A failed publish used nothing.**  :meth:`HubBackend.publish` encodes the
  event before it gives it an id, a sequence number or a position; if it
  raises, the store is as it was, so the next event takes the failed one's
  place and a resume from the event before it stays exact.
* **Per topic, in position order.**  A backend calls a hub's listener on that
  hub's event loop, one entry at a time, in increasing position within a
  topic.  Entries may repeat (a subscriber drops what it already has).
* **The memory backend is atomic.**  :meth:`MemoryBackend.publish` stores the
  event and calls the listeners without suspending in between or at all, so on
  one event loop nothing can observe an event stored but not yet fanned out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar, final

from .._events import ServerSentEvent
from ._replay import Entry, Gap, MemoryReplayStore, Replay, random_epoch

__all__ = (
    "EntryListener",
    "GapListener",
    "HubBackend",
    "Listeners",
    "MemoryBackend",
    "check_events",
)


def check_events(events: object) -> None:
    """What a backend's ``publish_many`` takes: a sequence of :class:`ServerSentEvent`.

    Raises:
        TypeError: naming ``events``, or the first bad item (``events[3]``); a
            ``str`` or ``bytes`` is refused although it is a sequence.
    """
    if isinstance(events, (str, bytes)) or not isinstance(events, Sequence):
        raise TypeError(
            f"events must be a sequence of ServerSentEvent, got {type(events).__name__}"
        )
    for index, event in enumerate(events):
        if not isinstance(event, ServerSentEvent):
            raise TypeError(
                f"events[{index}] must be a ServerSentEvent, got {type(event).__name__}"
            )


#: A hub's fan-out: called with every entry published to any topic.
EntryListener = Callable[[Entry], None]
#: A hub's hole signal: ``(topic, gap, position)``, events of ``topic`` the
#: backend could not deliver, lost before the entry at ``position`` (``None``
#: when that entry is not known yet).  ``gap.last_event_id`` is the backend's
#: last delivered id; the hub tells each subscriber its own.
GapListener = Callable[[str, Gap, "int | None"], None]


class HubBackend(Protocol):
    """Stores events for replay and carries them to every hub that listens.

    A multi-process backend implements these three methods; its reader task
    (if it has one) is its own to start and stop, and calls the listeners on
    the hub's event loop.

    A backend that can lose events on their way to a hub (a reader that fell
    behind the retention, a store that lost its data) may also have
    ``listen_gaps(listener: GapListener) -> Callable[[], None]``: the hub
    registers its hole signal there when the method exists, and each live
    subscriber of the topic then yields one ``sse_sm.gap`` event at the place
    of the hole, as after a lossy resume.

    Two more methods are optional too, and used when present:

    * ``async publish_many(topic, events: Sequence[ServerSentEvent]) ->
      list[Entry]``: store several events of one topic in one call (one
      round trip), in order, and return their entries in order;
      :meth:`Hub.publish_many <sse_sm.Hub.publish_many>` publishes one at a
      time without it.
    * ``async watch(topic) -> None``: start carrying ``topic``'s entries to
      this process's listeners, from now on; the hub calls it when a
      subscriber first joins the topic and waits for it before the
      subscriber is live, so nothing published after that is missed.
      Idempotent, and cheap once the topic is watched.
    """

    async def publish(self, topic: str, event: ServerSentEvent) -> Entry:
        """Store ``event`` (an automatic id if it has none) and deliver it to every listener.

        Returns the stored entry.  If this raises, the event was not stored
        and no id, sequence number or position was used.
        """
        ...

    async def replay(self, topic: str, last_event_id: str) -> Replay:
        """The events of ``topic`` after ``last_event_id``, or what is held and a gap."""
        ...

    def listen(self, listener: EntryListener) -> Callable[[], None]:
        """Call ``listener`` with every entry from now on; returns the function that stops it."""
        ...


_L = TypeVar("_L", bound=Callable[..., None])


@final
class Listeners(Generic[_L]):
    """The callbacks a backend calls: added and stopped at any time, even during a call.

    ``current`` is a tuple replaced on every change, so a backend iterates it
    without a copy, and a listener that stops another (or itself) while being
    called cannot upset the iteration.  On the backend's loop only.
    """

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: tuple[_L, ...] = ()

    def add(self, listener: _L) -> Callable[[], None]:
        """Add ``listener``; returns the function that stops it (idempotent)."""
        self.current = (*self.current, listener)

        def stop() -> None:
            self.current = tuple(known for known in self.current if known is not listener)

        return stop


@final
class MemoryBackend:
    """The embedded backend: a :class:`~sse_sm.MemoryReplayStore` and in-process fan-out.

    >>> backend = MemoryBackend(max_events=100, max_age=300)
    >>> backend.store.max_events
    100

    One process, one event loop.  Every hub attached to it (usually one)
    receives every entry before :meth:`publish` returns.

    Args:
        max_events, max_age, clock, new_epoch: passed to the
            :class:`~sse_sm.MemoryReplayStore` it creates.
    """

    __slots__ = ("_listeners", "store")

    def __init__(
        self,
        *,
        max_events: int | None = 1024,
        max_age: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        new_epoch: Callable[[], str] = random_epoch,
    ) -> None:
        #: Where the events are kept; read it for statistics, prune it if needed.
        self.store = MemoryReplayStore(
            max_events=max_events, max_age=max_age, clock=clock, new_epoch=new_epoch
        )
        self._listeners = Listeners[EntryListener]()

    async def publish(self, topic: str, event: ServerSentEvent) -> Entry:
        """Store and fan out at once; never suspends (see the module's invariants).

        The store's append is all or nothing (see
        :meth:`~sse_sm.MemoryReplayStore.append_nowait`); the listeners run
        only once the entry is stored, and do not raise.
        """
        entry = self.store.append_nowait(topic, event)
        for listener in self._listeners.current:
            listener(entry)
        return entry

    async def publish_many(self, topic: str, events: Sequence[ServerSentEvent]) -> list[Entry]:
        """Store the events of ``topic`` in order, then fan each out; never suspends.

        Each append is all or nothing (see
        :meth:`~sse_sm.MemoryReplayStore.append_nowait`).  Only a failing
        ``clock`` or ``new_epoch`` can make one raise; then the events before
        it stay stored and are fanned out before the error propagates, so
        what is stored is always what was delivered.

        Raises:
            TypeError: ``events`` is not a sequence of ``ServerSentEvent``;
                the message names the bad item (``events[3]``).
        """
        check_events(events)
        entries: list[Entry] = []
        try:
            for event in events:
                entries.append(self.store.append_nowait(topic, event))
        finally:
            listeners = self._listeners.current
            for entry in entries:
                for listener in listeners:
                    listener(entry)
        return entries

    async def replay(self, topic: str, last_event_id: str) -> Replay:
        """Never suspends, so no event can be published between a replay and going live."""
        return self.store.replay_nowait(topic, last_event_id)

    def listen(self, listener: EntryListener) -> Callable[[], None]:
        return self._listeners.add(listener)
