"""sse-starlette's ``sse_starlette.event`` module path, so old imports keep working."""

from __future__ import annotations

from ._events import JSONServerSentEvent as JSONServerSentEvent
from ._events import ServerSentEvent as ServerSentEvent
from ._events import ensure_bytes as ensure_bytes

__all__ = ("JSONServerSentEvent", "ServerSentEvent", "ensure_bytes")
