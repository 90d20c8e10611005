"""A test kit for SSE endpoints: a WHATWG event-stream parser and an in-process client.

Tests of streaming endpoints need two things that general HTTP test clients
do not give: a parser that reads ``text/event-stream`` exactly as a browser's
``EventSource`` does (``_parser``: pure, no I/O), and a client that hands
over each event as it arrives (``_client``: anyio, asyncio and trio).  The
two share only :class:`Event` and :class:`Comment`.
"""

from __future__ import annotations

from ._client import SSEStream as SSEStream
from ._client import stream as stream
from ._client import wait_for_close as wait_for_close
from ._client import wait_for_state as wait_for_state
from ._parser import Comment as Comment
from ._parser import Event as Event
from ._parser import EventStreamParser as EventStreamParser
from ._parser import parse_event_stream as parse_event_stream

__all__ = (
    "Event",
    "Comment",
    "EventStreamParser",
    "parse_event_stream",
    "stream",
    "SSEStream",
    "wait_for_state",
    "wait_for_close",
)
