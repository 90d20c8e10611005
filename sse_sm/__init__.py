"""Server-Sent Events for Starlette and FastAPI, as an explicit state machine on anyio.

The public surface is re-exported here; the modules behind it are private:

* ``_state``: the pure state machine and its transition table (no I/O);
* ``_events``: event values and the wire encoder (no I/O);
* ``_sources``, ``_shutdown``, ``_connection``: the anyio driver and its parts;
* ``responses``: :class:`EventSourceResponse`, the Starlette response;
* ``testing``: a WHATWG parser and an in-process streaming client for tests;
* ``sse`` and ``event``: sse-starlette's module paths, for one-line migration.
"""

from __future__ import annotations

from ._events import JSONServerSentEvent as JSONServerSentEvent
from ._events import ServerSentEvent as ServerSentEvent
from ._events import ensure_bytes as ensure_bytes
from ._exceptions import SendTimeoutError as SendTimeoutError
from ._exceptions import SlowConsumerError as SlowConsumerError
from ._shutdown import DrainCoordinator as DrainCoordinator
from ._shutdown import drain_coordinator_for as drain_coordinator_for
from ._state import TRANSITIONS as TRANSITIONS
from ._state import Arc as Arc
from ._state import CloseReason as CloseReason
from ._state import State as State
from ._state import StateMachine as StateMachine
from ._state import Transition as Transition
from ._state import TransitionError as TransitionError
from ._state import Trigger as Trigger
from .responses import EventSourceResponse as EventSourceResponse
from .responses import StreamStatistics as StreamStatistics

__version__ = "0.1.0"

__all__ = (
    "EventSourceResponse",
    "ServerSentEvent",
    "JSONServerSentEvent",
    "SendTimeoutError",
    "SlowConsumerError",
    "ensure_bytes",
    "DrainCoordinator",
    "drain_coordinator_for",
    "StreamStatistics",
    "State",
    "Trigger",
    "CloseReason",
    "Arc",
    "TRANSITIONS",
    "Transition",
    "TransitionError",
    "StateMachine",
)
