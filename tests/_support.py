"""Small fakes shared by tests that drive a response without the test client,
and a private pool for tests of sync sources."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import anyio
from starlette.types import Message, Scope

from sse_sm import _sources
from sse_sm._sources import _WorkerPool


def http_scope(method: str = "GET", http_version: str = "1.1") -> Scope:
    """A realistic HTTP scope for calling an ASGI app by hand (no ``app`` key:
    a response finds no drain coordinator in it)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": http_version,
        "method": method,
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }


def websocket_scope() -> Scope:
    """The same connection, as a WebSocket handshake."""
    scope = http_scope()
    del scope["method"]
    return {**scope, "type": "websocket", "scheme": "ws", "subprotocols": []}


async def never_receive() -> Message:
    """An ASGI receive for a client that never leaves."""
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


@contextlib.contextmanager
def fresh_sync_pool(limit: int = 1000, idle_seconds: float = 10.0) -> Iterator[_WorkerPool]:
    """Run sync sources on a pool of their own while the block runs.

    No idle thread of an earlier test is reused, and a short ``idle_seconds``
    lets a test watch the threads end.  Sources already running keep the
    pool they started on only for the call in flight.
    """
    pool = _WorkerPool(limit, idle_seconds)
    previous = _sources._pool
    _sources._pool = pool
    try:
        yield pool
    finally:
        _sources._pool = previous
