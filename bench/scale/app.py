"""The ASGI app the scale server serves: ``/{impl}/{job}`` for each implementation.

Jobs (``impl`` is ``raw``, ``sse_sm``, ``sse_starlette`` or ``fastapi``):

* ``GET /{impl}/idle``: a stream that never sends an event; pings every 15 s
  (``raw`` sends its own ``: ping`` comment when ``receive()`` has been quiet
  for 15 s, in the one task the connection has).
* ``GET /{impl}/churn``: one event, then nothing until the client leaves.
* ``GET /{impl}/sub``: a subscriber of the one broadcast topic.
* ``GET /{impl}/publish?rate=R&seconds=S&tag=T``: publishes ``R`` events per
  second for ``S`` seconds to ``impl``'s subscribers, from this request's
  task, then answers ``{"published": n, "seconds": elapsed}``.  Each event's
  data is ``"T SEQ MONOTONIC_NS"``: the client computes the latency from the
  timestamp (one clock for every process of the machine).
* ``GET /{impl}/count``: how many subscribers ``impl`` has now.
* ``sse_sm_redis`` (``sub``, ``publish``, ``count``): when the environment
  variable ``REDIS_ENV`` names a Redis URL, the lifespan enters a
  :class:`sse_sm.redis.RedisBackend` and this hub (``policy=BLOCK``) runs on
  it: the cross-process section starts two servers on one redis-server.
* ``GET /ready``: ``ok``.

The broadcasters, one per implementation:

* ``raw``: a dict of per-connection queues (a deque and an ``anyio.Event``
  to wake the connection); the publisher encodes the frame once and appends
  it to every queue; each connection streams its queue through
  :func:`bench.apps.raw_stream`.  Unbounded, no pings.
* ``sse_sm``: :class:`sse_sm.Hub` with ``policy=BLOCK, block_timeout=None``
  (lossless, so the clients can check that nothing was lost; a full buffer
  holds the publisher back), each subscriber ``EventSourceResponse(
  hub.subscribe(...), ping=15)``.  The hub writes an ``id:`` per event.
* ``sse_starlette``: the per-client ``asyncio.Queue`` pattern of the
  library's broadcasting example: the publisher ``put_nowait``s one
  ``ServerSentEvent`` into every unbounded queue, each stream's generator
  awaits its queue.  The example's per-event ``is_disconnected()`` poll and
  1 s ``wait_for`` are left out (the library watches for the disconnect
  itself; the timeout would ping every second).  Queues are kept in a dict,
  not a list, so that leaving is O(1).
* ``fastapi``: the same queue pattern in a FastAPI path operation with
  ``response_class=fastapi.sse.EventSourceResponse`` (see
  :mod:`bench.scale.app_fastapi`).

Paths are dispatched by hand (no router) except under ``/fastapi/``, which
is FastAPI's own app, routing included: that is what a FastAPI user runs.
The queue patterns use asyncio queues, so ``sse_starlette`` and ``fastapi``
broadcast only on asyncio servers.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final
from urllib.parse import parse_qs

import anyio
import anyio.lowlevel
import sse_starlette
from starlette.types import Receive, Scope, Send

import sse_sm
from bench.apps import START_MESSAGE, raw_stream
from bench.scale import REDIS_ENV

__all__ = ("PING", "TOPIC", "app", "publish_paced")

#: Seconds without traffic before a keep-alive comment, for every implementation.
PING: Final = 15.0
TOPIC: Final = "scale"
_RAW_PING: Final = b": ping\r\n\r\n"
#: The paced publisher gives way to the loop after at most this many events in a row.
_BATCH: Final = 16

Publish = Callable[[str], Awaitable[None]]


# ------------------------------------------------------------------ idle and churn sources


async def never() -> AsyncIterator[Any]:
    """A source that never yields: the stream idles until the client leaves."""
    await anyio.sleep_forever()
    yield None  # pragma: no cover (never reached; makes this an async generator)


async def one_then_never(item: Any) -> AsyncIterator[Any]:
    """A source that yields ``item`` once, then waits until the client leaves."""
    yield item
    await anyio.sleep_forever()


async def _raw_idle(receive: Receive, send: Send) -> None:
    """The raw idle stream: one task; a ping whenever ``receive()`` was quiet for 15 s."""
    await send(START_MESSAGE)
    while True:
        with anyio.move_on_after(PING):
            if (await receive())["type"] == "http.disconnect":
                return
            continue
        await send({"type": "http.response.body", "body": _RAW_PING, "more_body": True})


# ------------------------------------------------------------------ broadcasters


class _RawQueue:
    """One raw connection's frames; the publisher appends, the connection pops."""

    __slots__ = ("frames", "waiter")

    def __init__(self) -> None:
        self.frames: deque[bytes] = deque()
        self.waiter: anyio.Event | None = None

    def put(self, frame: bytes) -> None:
        self.frames.append(frame)
        if self.waiter is not None:
            self.waiter.set()
            self.waiter = None


_RAW_QUEUES: dict[int, _RawQueue] = {}


async def _raw_frames() -> AsyncIterator[bytes]:
    queue = _RawQueue()
    _RAW_QUEUES[id(queue)] = queue
    try:
        while True:
            while queue.frames:
                yield queue.frames.popleft()
            queue.waiter = anyio.Event()
            await queue.waiter.wait()
    finally:
        del _RAW_QUEUES[id(queue)]


async def _raw_publish(data: str) -> None:
    frame = f"data: {data}\r\n\r\n".encode()
    for queue in _RAW_QUEUES.values():
        queue.put(frame)


_HUB: Final = sse_sm.Hub(policy=sse_sm.SlowConsumerPolicy.BLOCK, block_timeout=None)


async def _hub_publish(data: str) -> None:
    await _HUB.publish(TOPIC, data)


_STARLETTE_QUEUES: dict[int, Any] = {}


async def _starlette_events() -> AsyncIterator[Any]:
    import asyncio

    queue: asyncio.Queue[sse_starlette.ServerSentEvent] = asyncio.Queue()
    _STARLETTE_QUEUES[id(queue)] = queue
    try:
        while True:
            yield await queue.get()
    finally:
        del _STARLETTE_QUEUES[id(queue)]


async def _starlette_publish(data: str) -> None:
    event = sse_starlette.ServerSentEvent(data=data)
    for queue in _STARLETTE_QUEUES.values():
        queue.put_nowait(event)


#: The Redis-backed hub, once the lifespan has entered its backend (``REDIS_ENV`` set).
_REDIS_HUB: list[sse_sm.Hub] = []
#: Events each topic's Redis stream keeps.
_REDIS_KEEP: Final = 100_000


async def _redis_publish(data: str) -> None:
    await _REDIS_HUB[0].publish(TOPIC, data)


async def _redis_publish_many(data: list[str]) -> None:
    await _REDIS_HUB[0].publish_many(TOPIC, data)


def _redis_count() -> int:
    return _REDIS_HUB[0].statistics().subscribers if _REDIS_HUB else 0


try:
    from bench.scale import app_fastapi
except ImportError:  # fastapi is not installed (or too old for fastapi.sse)
    app_fastapi = None  # type: ignore[assignment]


async def _fastapi_publish(data: str) -> None:
    if app_fastapi is not None:
        app_fastapi.publish(data)


def _fastapi_count() -> int:
    return 0 if app_fastapi is None else len(app_fastapi.QUEUES)


PUBLISHERS: Final[dict[str, Publish]] = {
    "raw": _raw_publish,
    "sse_sm": _hub_publish,
    "sse_starlette": _starlette_publish,
    "fastapi": _fastapi_publish,
    "sse_sm_redis": _redis_publish,
}
#: Publishers that take every event due at once in one call (one Redis round
#: trip for the batch, as an application publishing bursts would): the
#: others publish one event at a time.
BATCH_PUBLISHERS: Final[dict[str, Callable[[list[str]], Awaitable[None]]]] = {
    "sse_sm_redis": _redis_publish_many,
}
COUNTERS: Final[dict[str, Callable[[], int]]] = {
    "raw": lambda: len(_RAW_QUEUES),
    "sse_sm": lambda: _HUB.statistics().subscribers,
    "sse_starlette": lambda: len(_STARLETTE_QUEUES),
    "fastapi": _fastapi_count,
    "sse_sm_redis": _redis_count,
}


async def publish_paced(
    publish: Publish,
    rate: float,
    seconds: float,
    tag: str,
    publish_many: Callable[[list[str]], Awaitable[None]] | None = None,
) -> dict[str, float]:
    """Publish ``rate`` events/s for ``seconds``, catching up when late, in bounded batches.

    Event ``i`` is due at ``start + i / rate``; every due event is published
    (at most ``_BATCH`` in a row before a checkpoint), then the task sleeps
    until the next is due; with ``publish_many``, each batch is one call.
    A publisher that falls behind (a saturated loop,
    or a hub holding it back) publishes fewer than ``rate * seconds``: the
    answer says how many, and the driver reads that as saturation.
    """
    total = max(1, round(rate * seconds))
    start = time.perf_counter()
    deadline = start + seconds
    published = 0
    while published < total:
        now = time.perf_counter()
        if now >= deadline:
            break
        due = min(total, int((now - start) * rate) + 1)
        batch_end = min(due, published + _BATCH)
        if publish_many is not None:
            stamp = time.monotonic_ns()
            await publish_many([f"{tag} {n} {stamp}" for n in range(published, batch_end)])
            published = batch_end
        while published < batch_end:
            await publish(f"{tag} {published} {time.monotonic_ns()}")
            published += 1
        if published < due:
            await anyio.lowlevel.checkpoint()
        else:
            await anyio.sleep(max(0.0, start + published / rate - time.perf_counter()))
    return {"published": published, "seconds": time.perf_counter() - start}


# ------------------------------------------------------------------ dispatch


async def _text(send: Send, status: int, body: bytes, kind: bytes = b"text/plain") -> None:
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    """With ``REDIS_ENV`` set, the Redis backend lives from startup to shutdown, in this task."""
    url = os.environ.get(REDIS_ENV)
    async with contextlib.AsyncExitStack() as stack:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if url:
                    from sse_sm.redis import RedisBackend

                    # command_timeout 30 s, not 5: in a reconnect storm of 10,000
                    # streams the receiving worker's loop is busy for seconds, and
                    # a publish waiting there is slow, not lost (Redis is fine).
                    backend = RedisBackend(
                        url, topics=[TOPIC], max_events=_REDIS_KEEP, command_timeout=30.0
                    )
                    await stack.enter_async_context(backend)
                    _REDIS_HUB.append(
                        sse_sm.Hub(
                            backend, policy=sse_sm.SlowConsumerPolicy.BLOCK, block_timeout=None
                        )
                    )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await stack.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _stream(
    impl: str, job: str, scope: Scope
) -> Callable[[Scope, Receive, Send], Awaitable[None]] | None:
    """The ASGI callable of one stream of ``impl`` doing ``job``, or None."""
    if impl == "sse_sm" or impl == "sse_starlette":
        library: Any = sse_sm if impl == "sse_sm" else sse_starlette
        if job == "idle":
            source: AsyncIterator[Any] = never()
        elif job == "churn":
            source = one_then_never({"data": "first"})
        elif job == "sub":
            source = _HUB.subscribe(TOPIC) if impl == "sse_sm" else _starlette_events()
        else:
            return None
        response: Callable[[Scope, Receive, Send], Awaitable[None]] = library.EventSourceResponse(
            source, ping=PING
        )
        return response
    if impl == "sse_sm_redis" and job == "sub" and _REDIS_HUB:
        # drain_retry: when this server drains, its clients come back 1 to 5 s later.
        redis_response: Callable[[Scope, Receive, Send], Awaitable[None]] = (
            sse_sm.EventSourceResponse(
                _REDIS_HUB[0].subscribe(TOPIC, scope), ping=PING, drain_retry=(1000, 5000)
            )
        )
        return redis_response
    if impl == "raw":
        if job == "idle":
            return lambda scope, receive, send: _raw_idle(receive, send)
        if job == "churn":
            first = one_then_never(b"data: first\r\n\r\n")
            return lambda scope, receive, send: raw_stream(first, scope, receive, send)
        if job == "sub":
            frames = _raw_frames()
            return lambda scope, receive, send: raw_stream(frames, scope, receive, send)
    return None


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path: str = scope["path"]
    if path == "/ready":
        await _text(send, 200, b"ok")
        return
    impl, _, job = path.strip("/").partition("/")
    if job == "publish" and impl in PUBLISHERS:
        query = {key: values[0] for key, values in parse_qs(scope["query_string"].decode()).items()}
        result = await publish_paced(
            PUBLISHERS[impl],
            float(query["rate"]),
            float(query["seconds"]),
            query.get("tag", "x"),
            BATCH_PUBLISHERS.get(impl),
        )
        await _text(send, 200, json.dumps(result).encode(), b"application/json")
        return
    if job == "count" and impl in COUNTERS:
        await _text(send, 200, str(COUNTERS[impl]()).encode())
        return
    if impl == "fastapi" and app_fastapi is not None:
        await app_fastapi.app(scope, receive, send)
        return
    stream = _stream(impl, job, scope)
    if stream is None:
        await _text(send, 404, b"no such path")
        return
    await stream(scope, receive, send)
