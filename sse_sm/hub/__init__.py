"""Fan-out beyond one stream: the broadcast hub, resume, and the hub's backends.

The modules, each one job:

* ``_replay``: the replay store protocol and its memory implementation,
  Last-Event-ID parsing, and the gap signal;
* ``_backend``: the backend protocol a hub stores and fans out through, and
  the in-process ``MemoryBackend``;
* ``_buffers``: what the fan-out keeps per topic and per subscriber, and the
  steps on one buffer (drop oldest, drop newest, free);
* ``_fanout``: :class:`FanOut`, the one owner of topics, subscribers and
  buffers, which the hub and every subscription go through (neither reaches
  into the other);
* ``_subscription``: one subscriber's async iterator;
* ``_types``: the slow-consumer policies and the statistics records;
* ``_hub``: :class:`Hub`, which publishes and fans out;
* ``redis``: the backend on Redis Streams (the ``sse_sm[redis]`` extra, never
  imported from here; ``sse_sm.redis`` is the same module's public path).

The public names are re-exported by ``sse_sm``; import them from there.
"""

from __future__ import annotations

from ._backend import HubBackend as HubBackend
from ._backend import MemoryBackend as MemoryBackend
from ._hub import Hub as Hub
from ._replay import GAP_EVENT as GAP_EVENT
from ._replay import Entry as Entry
from ._replay import Gap as Gap
from ._replay import GapReason as GapReason
from ._replay import MemoryReplayStore as MemoryReplayStore
from ._replay import Replay as Replay
from ._replay import ReplayStatistics as ReplayStatistics
from ._replay import ReplayStore as ReplayStore
from ._replay import last_event_id as last_event_id
from ._subscription import Subscription as Subscription
from ._types import HubStatistics as HubStatistics
from ._types import SlowConsumerPolicy as SlowConsumerPolicy
from ._types import SubscriptionStatistics as SubscriptionStatistics
from ._types import TopicStatistics as TopicStatistics

__all__ = (
    "Hub",
    "Subscription",
    "SlowConsumerPolicy",
    "HubStatistics",
    "TopicStatistics",
    "SubscriptionStatistics",
    "HubBackend",
    "MemoryBackend",
    "ReplayStore",
    "MemoryReplayStore",
    "ReplayStatistics",
    "Entry",
    "Replay",
    "Gap",
    "GapReason",
    "GAP_EVENT",
    "last_event_id",
)
