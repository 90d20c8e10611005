"""Server-Sent Events for Starlette and FastAPI, as an explicit state machine on anyio.

The public surface is re-exported here; the modules behind it are private:

* ``_state``: the pure state machine and its transition table (no I/O);
* ``_events``: event values and the wire encoder (no I/O);
* ``_sources``, ``_shutdown``, ``_connection``: the anyio driver and its parts;
* ``responses``: :class:`EventSourceResponse`, the Starlette response;
* ``hub``: the broadcast hub, resume (Last-Event-ID, the replay store, the
  gap signal) and the hub's backends;
* ``testing``: a WHATWG parser and an in-process streaming client for tests;
* ``redis``: the hub's backend on Redis Streams (``sse_sm.hub.redis``; the
  ``sse_sm[redis]`` extra, not imported here, so coredis stays optional);
* ``sse`` and ``event``: sse-starlette's module paths, for one-line migration.
"""

from __future__ import annotations

from ._admission import CoordinatorStatistics as CoordinatorStatistics
from ._events import JSONServerSentEvent as JSONServerSentEvent
from ._events import ServerSentEvent as ServerSentEvent
from ._events import ensure_bytes as ensure_bytes
from ._exceptions import SendTimeoutError as SendTimeoutError
from ._exceptions import SlowConsumerError as SlowConsumerError
from ._exceptions import SseSmError as SseSmError
from ._exceptions import TransitionError as TransitionError
from ._shutdown import DrainCoordinator as DrainCoordinator
from ._shutdown import default_drain_coordinator as default_drain_coordinator
from ._shutdown import drain_coordinator_for as drain_coordinator_for
from ._sources import SyncSourceThreadError as SyncSourceThreadError
from ._sources import set_sync_source_threads as set_sync_source_threads
from ._state import TRANSITIONS as TRANSITIONS
from ._state import Arc as Arc
from ._state import CloseReason as CloseReason
from ._state import State as State
from ._state import StateMachine as StateMachine
from ._state import Transition as Transition
from ._state import Trigger as Trigger
from .hub._backend import HubBackend as HubBackend
from .hub._backend import MemoryBackend as MemoryBackend
from .hub._hub import Hub as Hub
from .hub._replay import GAP_EVENT as GAP_EVENT
from .hub._replay import Entry as Entry
from .hub._replay import Gap as Gap
from .hub._replay import GapReason as GapReason
from .hub._replay import MemoryReplayStore as MemoryReplayStore
from .hub._replay import Replay as Replay
from .hub._replay import ReplayStatistics as ReplayStatistics
from .hub._replay import ReplayStore as ReplayStore
from .hub._replay import last_event_id as last_event_id
from .hub._subscription import Subscription as Subscription
from .hub._types import HubStatistics as HubStatistics
from .hub._types import SlowConsumerPolicy as SlowConsumerPolicy
from .hub._types import SubscriptionStatistics as SubscriptionStatistics
from .hub._types import TopicStatistics as TopicStatistics
from .responses import EventSourceResponse as EventSourceResponse
from .responses import StreamStatistics as StreamStatistics

__version__ = "0.1.0"

__all__ = (
    "EventSourceResponse",
    "ServerSentEvent",
    "JSONServerSentEvent",
    "SseSmError",
    "SendTimeoutError",
    "SlowConsumerError",
    "ensure_bytes",
    "DrainCoordinator",
    "CoordinatorStatistics",
    "drain_coordinator_for",
    "default_drain_coordinator",
    "set_sync_source_threads",
    "SyncSourceThreadError",
    "StreamStatistics",
    "State",
    "Trigger",
    "CloseReason",
    "Arc",
    "TRANSITIONS",
    "Transition",
    "TransitionError",
    "StateMachine",
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
