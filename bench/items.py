"""What the benchmark sources yield: one kind of item per row of the in-process table.

Every implementation streams the same events, byte for byte (the worker hashes
the first frames and the driver compares the hashes):

* ``dict``: ``{"event": "tick", "data": "value 00042"}``;
* ``event``: a ``ServerSentEvent`` with ``id``, ``event`` and ``data``, built
  by the source for each item (the library's own class);
* ``bytes``: a pre-encoded frame, sent as it is;
* ``multiline``: an 8-line ``str``, one ``data:`` line per line.

The raw ASGI loop has no encoder: its sources format the same fields with one
f-string per item (``str.replace`` for the multi-line text) and yield bytes,
so the raw numbers include the cheapest possible encoding, not none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Final

__all__ = (
    "FRAMES",
    "KINDS",
    "KIND_LABELS",
    "library_source",
    "raw_source",
)

KINDS: Final[tuple[str, ...]] = ("dict", "event", "bytes", "multiline")
#: How each kind is named in the table.
KIND_LABELS: Final[dict[str, str]] = {
    "dict": "small dict",
    "event": "ServerSentEvent(id, event, data)",
    "bytes": "pre-encoded bytes",
    "multiline": "8-line data str",
}

#: Items cycle through this many distinct values (a power of two: ``i & MASK``).
_CYCLE: Final = 64
_MASK: Final = _CYCLE - 1

PAYLOADS: Final[tuple[str, ...]] = tuple(f"value {i:05d}" for i in range(_CYCLE))
IDS: Final[tuple[str, ...]] = tuple(str(1000 + i) for i in range(_CYCLE))
TEXTS: Final[tuple[str, ...]] = tuple(
    "\n".join(f"line {j} of event {i}: some text" for j in range(8)) for i in range(_CYCLE)
)
FRAMES: Final[tuple[bytes, ...]] = tuple(
    f"id: {IDS[i]}\r\nevent: tick\r\ndata: {PAYLOADS[i]}\r\n\r\n".encode() for i in range(_CYCLE)
)

#: Builds a library's ServerSentEvent: ``cls(data, id=..., event=...)``.
EventClass = Callable[..., Any]


async def _dicts(n: int) -> AsyncIterator[dict[str, str]]:
    payloads = PAYLOADS
    for i in range(n):
        yield {"event": "tick", "data": payloads[i & _MASK]}


async def _events(n: int, cls: EventClass) -> AsyncIterator[Any]:
    payloads, ids = PAYLOADS, IDS
    for i in range(n):
        j = i & _MASK
        yield cls(payloads[j], id=ids[j], event="tick")


async def _frames(n: int) -> AsyncIterator[bytes]:
    frames = FRAMES
    for i in range(n):
        yield frames[i & _MASK]


async def _texts(n: int) -> AsyncIterator[str]:
    texts = TEXTS
    for i in range(n):
        yield texts[i & _MASK]


def library_source(kind: str, n: int, event_cls: EventClass) -> AsyncIterator[Any]:
    """``n`` items of ``kind`` for sse_sm or sse-starlette."""
    if kind == "dict":
        return _dicts(n)
    if kind == "event":
        return _events(n, event_cls)
    if kind == "bytes":
        return _frames(n)
    if kind == "multiline":
        return _texts(n)
    raise ValueError(f"unknown kind {kind!r}")


async def _raw_dicts(n: int) -> AsyncIterator[bytes]:
    payloads = PAYLOADS
    for i in range(n):
        yield f"event: tick\r\ndata: {payloads[i & _MASK]}\r\n\r\n".encode()


async def _raw_events(n: int) -> AsyncIterator[bytes]:
    payloads, ids = PAYLOADS, IDS
    for i in range(n):
        j = i & _MASK
        yield f"id: {ids[j]}\r\nevent: tick\r\ndata: {payloads[j]}\r\n\r\n".encode()


async def _raw_texts(n: int) -> AsyncIterator[bytes]:
    texts = TEXTS
    for i in range(n):
        yield ("data: " + texts[i & _MASK].replace("\n", "\r\ndata: ") + "\r\n\r\n").encode()


def raw_source(kind: str, n: int) -> AsyncIterator[bytes]:
    """The same ``n`` events as :func:`library_source`, encoded by f-strings."""
    if kind == "dict":
        return _raw_dicts(n)
    if kind == "event":
        return _raw_events(n)
    if kind == "bytes":
        return _frames(n)
    if kind == "multiline":
        return _raw_texts(n)
    raise ValueError(f"unknown kind {kind!r}")
