"""Small fakes shared by tests that drive a response without the test client."""

from __future__ import annotations

import anyio
from starlette.types import Message, Scope


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
