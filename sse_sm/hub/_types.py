"""The hub's public value types: the slow-consumer policy and the statistics snapshots.

Plain data, no behaviour: what a user passes to a :class:`~sse_sm.Hub` and
what its ``statistics()`` methods return.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import final

__all__ = (
    "HubStatistics",
    "SlowConsumerPolicy",
    "SubscriptionStatistics",
    "TopicStatistics",
)


class SlowConsumerPolicy(enum.Enum):
    """What the hub does when a subscriber's buffer is full and an event arrives."""

    #: Make room by discarding the subscriber's oldest buffered event.
    DROP_OLDEST = "drop_oldest"
    #: Keep what is buffered and discard the new event for this subscriber.
    DROP_NEWEST = "drop_newest"
    #: Let the subscriber go: its iterator raises :class:`~sse_sm.SlowConsumerError`,
    #: the stream ends cleanly (``FELL_BEHIND``) and the client resumes from the store.
    DISCONNECT = "disconnect"
    #: Make the publisher wait for room, up to ``block_timeout``; then let the
    #: subscribers still full go, as ``DISCONNECT`` does.
    BLOCK = "block"

    __hash__ = object.__hash__


# ------------------------------------------------------------------ statistics


@final
@dataclass(frozen=True, slots=True)
class TopicStatistics:
    """One topic as the hub sees it; counters run while the topic has subscribers."""

    #: Subscriptions that have joined and not yet left.
    subscribers: int
    #: Events waiting in those subscriptions' buffers.
    buffered: int
    #: Events published to the topic through this hub.
    published: int
    #: Events yielded to consumers, replayed ones included (gap signals are not events).
    delivered: int
    #: Of ``delivered``, those that came from the replay store.
    replayed: int
    #: Events a slow-consumer policy discarded for one subscriber (counted once per subscriber).
    dropped: int
    #: ``sse_sm.gap`` signals yielded.
    gaps: int
    #: Subscribers let go for being slow (``DISCONNECT``, or ``BLOCK`` after its timeout).
    slow_disconnects: int
    #: ``publish`` calls waiting for room (``BLOCK``) or behind one that is.
    publishers_waiting: int


@final
@dataclass(frozen=True, slots=True)
class HubStatistics:
    """A snapshot of a :class:`Hub` (trio's ``statistics()`` style)."""

    #: Subscriptions that have joined and not yet left, over all topics.
    subscribers: int
    #: Topics with subscribers or waiting publishers.
    topics: Mapping[str, TopicStatistics]
    #: Events published through this hub since it was created.
    published: int
    #: Events yielded to consumers (replayed ones included).
    delivered: int
    #: Of ``delivered``, those that came from the replay store.
    replayed: int
    #: Events discarded by a slow-consumer policy, summed over subscribers.
    dropped: int
    #: ``sse_sm.gap`` signals yielded.
    gaps: int
    #: Subscribers let go for being slow.
    slow_disconnects: int
    #: Events held in subscribers' buffers now.
    buffered: int
    #: ``publish`` calls waiting now.
    publishers_waiting: int
    #: ``publish`` calls that had to wait since the hub was created.
    publish_waits: int
    #: Whether :meth:`Hub.close` was called.
    closed: bool


@final
@dataclass(frozen=True, slots=True)
class SubscriptionStatistics:
    """A snapshot of one :class:`Subscription`."""

    topic: str
    #: The id it resumes after, from the request or given explicitly.
    last_event_id: str | None
    policy: SlowConsumerPolicy
    buffer_size: int
    #: Whether it has joined its topic (it does on first iteration).
    joined: bool
    #: Whether it has ended or been closed.
    closed: bool
    #: Live events waiting in its buffer.
    buffered: int
    #: Replayed events and gap signals not yet yielded.
    pending: int
    delivered: int
    replayed: int
    dropped: int
    gaps: int
    #: Why it was let go (the ``SlowConsumerError`` message), if it was.
    failure: str | None
