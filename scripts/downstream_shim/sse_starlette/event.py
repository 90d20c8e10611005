"""``sse_starlette.event`` served by sse_sm's module of the same path."""

from sse_sm.event import JSONServerSentEvent as JSONServerSentEvent
from sse_sm.event import ServerSentEvent as ServerSentEvent
from sse_sm.event import ensure_bytes as ensure_bytes

__all__ = ["JSONServerSentEvent", "ServerSentEvent", "ensure_bytes"]
