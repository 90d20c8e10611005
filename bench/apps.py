"""The three implementations as per-connection ASGI callables.

``raw`` is a hand-written ASGI loop with no framework: it sends
``http.response.start``, then one ``http.response.body`` per frame, with a
disconnect listener as small as anyio allows (one task awaiting
``receive()``, so two tasks per connection, the connection's own included).
It has no pings, no send timeout and no shutdown handling: it is the floor.

``sse_sm`` and ``sse_starlette`` are each library's ``EventSourceResponse``,
called directly as the ASGI app; sources come from :mod:`bench.items`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Final

import anyio
from starlette.types import Message, Receive, Scope, Send

__all__ = ("START_MESSAGE", "AsgiCall", "connection", "event_class", "raw_stream")

AsgiCall = Callable[[Scope, Receive, Send], Coroutine[Any, Any, None]]

#: The raw loop's headers: the ones both libraries send, in their order.
START_MESSAGE: Final[Message] = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-store"),
        (b"connection", b"keep-alive"),
        (b"x-accel-buffering", b"no"),
    ],
}
_END: Final[Message] = {"type": "http.response.body", "body": b"", "more_body": False}

_MODULES: Final = {"sse_sm": "sse_sm", "sse_starlette": "sse_starlette"}


async def _raw_watch(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def raw_stream(
    source: AsyncIterator[bytes], scope: Scope, receive: Receive, send: Send
) -> None:
    """The raw ASGI loop: headers, one body message per frame, end on disconnect."""
    await send(START_MESSAGE)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_raw_watch, receive, tasks.cancel_scope)
        async for frame in source:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send(_END)
        tasks.cancel_scope.cancel()


def _library(impl: str) -> Any:
    try:
        return importlib.import_module(_MODULES[impl])
    except KeyError:
        raise ValueError(f"unknown implementation {impl!r}") from None


def event_class(impl: str) -> Callable[..., Any]:
    """The library's ``ServerSentEvent`` class."""
    cls: Callable[..., Any] = _library(impl).ServerSentEvent
    return cls


def connection(
    impl: str,
    source: AsyncIterator[Any],
    *,
    ping: float,
    send_timeout: float | None = None,
) -> AsgiCall:
    """One connection's ASGI callable, streaming ``source``.

    ``ping=0`` disables pings in both libraries; ``send_timeout`` is ignored
    by ``raw``, which has none.
    """
    if impl == "raw":
        # A partial, not a closure: calling it is the raw coroutine itself.
        return functools.partial(raw_stream, source)
    response: AsgiCall = _library(impl).EventSourceResponse(
        source, ping=ping, send_timeout=send_timeout
    )
    return response
