"""sse-starlette's ``sse_starlette.sse`` module path, so old imports keep working.

``from sse_starlette.sse import EventSourceResponse`` becomes
``from sse_sm.sse import EventSourceResponse`` with nothing else changed, and
code that sets ``AppStatus.should_exit`` keeps working through a small shim
(see ``_app_status``).
"""

from __future__ import annotations

from ._app_status import AppStatus as AppStatus
from ._events import JSONServerSentEvent as JSONServerSentEvent
from ._events import ServerSentEvent as ServerSentEvent
from ._events import ensure_bytes as ensure_bytes
from ._exceptions import SendTimeoutError as SendTimeoutError
from .responses import EventSourceResponse as EventSourceResponse

__all__ = (
    "AppStatus",
    "EventSourceResponse",
    "ServerSentEvent",
    "JSONServerSentEvent",
    "SendTimeoutError",
    "ensure_bytes",
)
