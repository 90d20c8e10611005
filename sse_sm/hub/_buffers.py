"""What the fan-out keeps per topic and per subscriber, and the steps on one buffer.

Invariants:

* Only the hub's fan-out (appending) and the subscriber's own iterator
  (taking) touch a buffer, both on the hub's loop and neither suspending in
  between, so no lock guards it.
* ``SubscriberState.count`` counts the entries in ``buffer``; drop markers
  are not counted, so a full buffer holds ``size`` entries and at most one
  marker per hole.
* A ``SubscriberState`` never refers to its subscription, so a subscription
  that is dropped can be collected and its finalizer can hand this state back.
"""

from __future__ import annotations

from collections import deque
from typing import final

import anyio

from ._replay import Entry, Gap, GapReason
from ._types import SlowConsumerPolicy

__all__ = ("DropMarker", "SubscriberState", "Tally", "TopicState")


@final
class DropMarker:
    """A hole in a subscriber's buffer, kept where the hole is.

    ``count`` events a drop policy discarded here and, when ``lost`` is set,
    events the backend could not deliver to this hub at all (its gap says why
    and how many, if known).  Two holes that meet become one marker.
    """

    __slots__ = ("count", "lost")

    def __init__(self, count: int = 1) -> None:
        self.count = count
        self.lost: Gap | None = None

    def absorb(self, other: DropMarker) -> None:
        """Take in an adjacent hole: one gap signal for both."""
        self.count += other.count
        if other.lost is not None:
            self.add_lost(other.lost)

    def add_lost(self, gap: Gap) -> None:
        """Events the backend lost here; counts add up only while both are known."""
        known = self.lost
        if known is None:
            self.lost = gap
        else:
            missed = (
                None if known.missed is None or gap.missed is None else known.missed + gap.missed
            )
            reason = known.reason if known.reason is gap.reason else GapReason.UNKNOWN
            self.lost = Gap(reason, known.last_event_id, gap.next_id, missed)

    def gap(self, last_event_id: str | None, next_id: str | None) -> Gap:
        """This hole's ``sse_sm.gap``, for a subscriber whose last event was ``last_event_id``."""
        lost = self.lost
        if lost is None:
            return Gap(GapReason.DROPPED, last_event_id, next_id, self.count)
        missed = None if lost.missed is None else lost.missed + self.count
        return Gap(lost.reason, last_event_id, next_id, missed)


@final
class Tally:
    """Sums of subscribers' counters.

    The hub and each topic keep one for the subscribers that have left, so
    their counts survive them; a snapshot adds the live ones to a copy.
    """

    __slots__ = ("delivered", "dropped", "gaps", "replayed", "slow_disconnects")

    def __init__(self) -> None:
        self.delivered = 0
        self.replayed = 0
        self.dropped = 0
        self.gaps = 0
        self.slow_disconnects = 0

    def retire(self, state: SubscriberState | Tally) -> None:
        """Add the counters of a subscriber (or of another tally)."""
        self.delivered += state.delivered
        self.replayed += state.replayed
        self.dropped += state.dropped
        self.gaps += state.gaps
        if isinstance(state, Tally):
            self.slow_disconnects += state.slow_disconnects
        elif state.failure is not None:
            self.slow_disconnects += 1


@final
class TopicState:
    """A topic's subscribers, its BLOCK bookkeeping and its counters."""

    __slots__ = (
        "full_blockers",
        "name",
        "published",
        "retired",
        "room",
        "subscribers",
        "turn",
        "waiting",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        #: Insertion-ordered set: O(1) removal, iterated on every publish.
        self.subscribers: dict[SubscriberState, None] = {}
        #: BLOCK subscribers whose buffer is full right now.
        self.full_blockers = 0
        #: Set (and cleared) when ``full_blockers`` drops to zero.
        self.room: anyio.Event | None = None
        #: Orders publishers that have to wait; created on first need.
        self.turn: anyio.Lock | None = None
        self.waiting = 0
        self.published = 0
        self.retired = Tally()


@final
class SubscriberState:
    """What the hub keeps of a subscription; holds no reference to the subscription.

    That is what lets a subscription that was dropped be garbage collected,
    and its finalizer hand this state back to the hub.
    """

    __slots__ = (
        "after",
        "blocks",
        "buffer",
        "count",
        "delivered",
        "dropped",
        "ended",
        "failure",
        "gaps",
        "last_id",
        "live",
        "pending",
        "policy",
        "promised",
        "removed",
        "replayed",
        "size",
        "topic",
        "waiter",
    )

    def __init__(self, topic: TopicState, policy: SlowConsumerPolicy, size: int) -> None:
        self.topic = topic
        self.policy = policy
        self.blocks = policy is SlowConsumerPolicy.BLOCK
        self.size = size
        #: Live entries and drop markers, oldest first; ``count`` counts the entries.
        self.buffer: deque[Entry | DropMarker] = deque()
        self.count = 0
        #: The gap signal and replayed entries, yielded before the buffer.
        self.pending: deque[Entry | Gap] = deque()
        #: Entries at or below this position are already covered by the replay.
        self.after = 0
        #: True once joined with nothing pending and not let go: the fast path.
        self.live = False
        self.waiter: anyio.Event | None = None
        self.ended = False
        self.removed = False
        self.failure: str | None = None
        self.last_id: str | None = None
        self.delivered = 0
        self.replayed = 0
        self.dropped = 0
        self.gaps = 0
        #: The entry a yielded gap named as its ``next_id``, while it may still
        #: be in the buffer: :meth:`drop_oldest` never drops it.
        self.promised: Entry | None = None

    def drop_oldest(self, entry: Entry) -> None:
        """DROP_OLDEST on a full buffer: the oldest entry joins the hole at the
        head (a drop marker), and ``entry`` goes to the tail.

        Never the entry a gap already named (``promised``): that gap was
        yielded, so the entry is due next, and the hole opens right after it
        instead.  When nothing but that entry is held (a buffer of one), the
        new entry is the one that joins the hole.
        """
        buffer = self.buffer
        head = 1 if buffer[0] is self.promised else 0
        self.dropped += 1
        if head == len(buffer):
            buffer.append(DropMarker())  # only the promised entry is held
            return
        first = buffer[head]
        if type(first) is DropMarker:
            if head + 1 == len(buffer):
                first.count += 1  # no entry behind the hole: the new one joins it
                return
            del buffer[head + 1]  # the oldest entry, right after the marker
            first.count += 1
        else:
            first = buffer[head] = DropMarker()  # the oldest entry becomes the hole
        if len(buffer) > head + 1 and type(second := buffer[head + 1]) is DropMarker:
            first.absorb(second)  # a backend's hole met this one: one gap
            del buffer[head + 1]
        buffer.append(entry)

    def drop_newest(self) -> None:
        """DROP_NEWEST on a full buffer: the new entry joins the hole at the tail."""
        buffer = self.buffer
        last = buffer[-1]
        if type(last) is DropMarker:
            last.count += 1
        else:
            buffer.append(DropMarker())
        self.dropped += 1

    def free(self) -> None:
        """Drop everything held: the buffer, its count and what was pending."""
        self.buffer.clear()
        self.count = 0
        self.pending.clear()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.set()
