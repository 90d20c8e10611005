"""sse-starlette's ``sse_starlette.sse`` module path, so old imports keep working.

``from sse_starlette.sse import EventSourceResponse`` becomes
``from sse_sm.sse import EventSourceResponse`` with nothing else changed.
"""

from __future__ import annotations

from ._events import JSONServerSentEvent as JSONServerSentEvent
from ._events import ServerSentEvent as ServerSentEvent
from ._events import ensure_bytes as ensure_bytes
from ._exceptions import SendTimeoutError as SendTimeoutError
from .responses import EventSourceResponse as EventSourceResponse

__all__ = (
    "EventSourceResponse",
    "ServerSentEvent",
    "JSONServerSentEvent",
    "SendTimeoutError",
    "ensure_bytes",
)
