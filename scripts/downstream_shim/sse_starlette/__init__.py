"""``import sse_starlette`` served by sse_sm (scripts/downstream.sh only).

The same names sse-starlette's package exports, each the sse_sm object itself
(not a copy or a subclass), so a downstream project that imports them runs
sse_sm's code unchanged.  The script checks, before its tests run, that this
file is what ``sse_starlette`` resolves to.
"""

from sse_sm import EventSourceResponse as EventSourceResponse
from sse_sm import JSONServerSentEvent as JSONServerSentEvent
from sse_sm import ServerSentEvent as ServerSentEvent
from sse_sm import __version__ as __version__

from . import event as event
from . import sse as sse

__all__ = ["EventSourceResponse", "ServerSentEvent", "JSONServerSentEvent"]
