"""``sse_starlette.sse`` served by sse_sm's module of the same path."""

from sse_sm.sse import AppStatus as AppStatus
from sse_sm.sse import EventSourceResponse as EventSourceResponse
from sse_sm.sse import JSONServerSentEvent as JSONServerSentEvent
from sse_sm.sse import SendTimeoutError as SendTimeoutError
from sse_sm.sse import ServerSentEvent as ServerSentEvent
from sse_sm.sse import ensure_bytes as ensure_bytes

__all__ = [
    "AppStatus",
    "EventSourceResponse",
    "JSONServerSentEvent",
    "SendTimeoutError",
    "ServerSentEvent",
    "ensure_bytes",
]
