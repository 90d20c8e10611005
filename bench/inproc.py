"""In-process measurements: each app called as ``await app(scope, receive, send)``.

No sockets and no server: ``send`` discards (or counts) and ``receive``
returns the request, then blocks until the harness disconnects the client.
Three measurements live here:

* :func:`throughput`: events/s and process CPU per event for ``n`` events;
* :func:`idle`: ``n`` connections open with nothing to send: tasks and
  traced memory per connection, time to open them all and to tear them down;
* :func:`disconnect`: ``n`` streams blocked in a slow source; the time from
  a client's disconnect to its source's ``finally``, all at once and staggered.
"""

from __future__ import annotations

import gc
import hashlib
import math
import os
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any, Final

import anyio
from starlette.types import Message, Scope

from bench.apps import connection, event_class
from bench.items import FRAMES, KIND_LABELS, library_source, raw_source

__all__ = ("SCOPE", "disconnect", "idle", "throughput")

SCOPE: Final[Scope] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/events",
    "raw_path": b"/events",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1"), (b"accept", b"text/event-stream")],
    "client": ("127.0.0.1", 40000),
    "server": ("127.0.0.1", 8000),
}
REQUEST: Final[Message] = {"type": "http.request", "body": b"", "more_body": False}
DISCONNECT: Final[Message] = {"type": "http.disconnect"}

#: Ping for idle and disconnect runs: pings are configured but never fire.
IDLE_PING: Final = 3600.0
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
#: Bound on any one phase (open, idle wait, teardown), in seconds.
PHASE_LIMIT: Final = 120.0


# ------------------------------------------------------------------ throughput


async def _discard(message: Message) -> None:
    return None


class _Blocking:
    """``receive``: the request, then nothing until cancelled."""

    __slots__ = ("_requested",)

    def __init__(self) -> None:
        self._requested = False

    async def __call__(self) -> Message:
        if not self._requested:
            self._requested = True
            return REQUEST
        await anyio.sleep_forever()
        raise AssertionError("sleep_forever returned")


def _source(impl: str, kind: str, n: int) -> AsyncIterator[Any]:
    if impl == "raw":
        return raw_source(kind, n)
    return library_source(kind, n, event_class(impl))


async def _digest(impl: str, kind: str, n: int) -> str:
    """Hash of the body of an ``n``-event stream, with a check of its length."""
    bodies: list[bytes] = []

    async def collect(message: Message) -> None:
        if message["type"] == "http.response.body":
            bodies.append(bytes(message["body"]))

    await connection(impl, _source(impl, kind, n), ping=0)(SCOPE, _Blocking(), collect)
    if len(bodies) != n + 1 or bodies[-1] != b"":
        raise RuntimeError(f"{impl} sent {len(bodies)} body messages for {n} events")
    return hashlib.sha256(b"".join(bodies)).hexdigest()[:16]


async def _stream_once(
    impl: str, kind: str, n: int, send_timeout: float | None
) -> tuple[float, float]:
    app = connection(impl, _source(impl, kind, n), ping=0, send_timeout=send_timeout)
    gc.collect()
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    await app(SCOPE, _Blocking(), _discard)
    wall = time.perf_counter() - wall0
    return wall, time.process_time() - cpu0


async def throughput(
    impl: str,
    backend: str,
    *,
    kinds: list[str],
    timeouts: list[float | None],
    n: int,
    inner: int,
) -> list[dict[str, Any]]:
    """Per kind and send timeout: the fastest of ``inner`` timed runs of ``n`` events."""
    records: list[dict[str, Any]] = []
    for kind in kinds:
        digest = await _digest(impl, kind, 128)
        for send_timeout in timeouts:
            await _stream_once(impl, kind, max(n // 2, 1), send_timeout)  # warm up
            runs = [await _stream_once(impl, kind, n, send_timeout) for _ in range(inner)]
            wall = min(w for w, _ in runs)
            cpu = min(c for _, c in runs)
            timeout_label = f"send_timeout={send_timeout:g}" if send_timeout else "no send_timeout"
            records.append(
                {
                    "case": ["in process", backend, KIND_LABELS[kind], timeout_label],
                    "metrics": {"events_per_s": n / wall, "cpu_ns": cpu / n * 1e9},
                    "digest": digest,
                }
            )
    return records


# ----------------------------------------------------- idle and disconnects


class _Tally:
    """Counts, over all connections, how far each has got; ``idle`` when all are idle."""

    __slots__ = (
        "_closed_enough",
        "_closed_target",
        "closed",
        "headers",
        "idle",
        "listening",
        "n",
        "waiting",
    )

    def __init__(self, n: int) -> None:
        self.n = n
        self.headers = 0
        self.listening = 0
        self.waiting = 0
        self.closed = 0
        self.idle = anyio.Event()
        self._closed_target = n + 1
        self._closed_enough = anyio.Event()

    def check(self) -> None:
        n = self.n
        if self.headers >= n and self.listening >= n and self.waiting >= n:
            self.idle.set()

    def source_closed(self) -> None:
        self.closed += 1
        if self.closed >= self._closed_target:
            self._closed_enough.set()

    def closed_reached(self, count: int) -> anyio.Event:
        """An event set once ``count`` sources have closed."""
        self._closed_target = count
        self._closed_enough = anyio.Event()
        if self.closed >= count:
            self._closed_enough.set()
        return self._closed_enough


class _Peer:
    """One client: ``receive`` gives the request, then waits for :meth:`leave`."""

    __slots__ = ("_gone", "_stage", "_tally")

    def __init__(self, tally: _Tally) -> None:
        self._tally = tally
        self._gone = anyio.Event()
        self._stage = 0

    def leave(self) -> None:
        self._gone.set()

    async def __call__(self) -> Message:
        if self._stage == 0:
            self._stage = 1
            return REQUEST
        if self._stage == 1:
            self._stage = 2
            self._tally.listening += 1
            self._tally.check()
        await self._gone.wait()
        return DISCONNECT


async def _slow_source(
    tally: _Tally, first: object | None, marks: list[float] | None, index: int
) -> AsyncIterator[object]:
    """Yields ``first`` (if any), then waits for an item that never comes."""
    try:
        if first is not None:
            yield first
        tally.waiting += 1
        tally.check()
        await anyio.sleep_forever()
        yield first
    finally:
        if marks is not None:
            marks[index] = time.perf_counter()
        tally.source_closed()


def _counting_send(tally: _Tally) -> Any:
    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            tally.headers += 1
            tally.check()

    return send


async def _open(
    impl: str,
    n: int,
    *,
    traced: bool,
    first: object | None = None,
    stagger: float | None = None,
    rss: bool = False,
) -> dict[str, Any]:
    """Open ``n`` connections, wait until all are idle, then disconnect them all.

    ``stagger=None`` disconnects every client at once; otherwise one at a
    time, each after the previous stream's source has closed, then
    ``stagger`` seconds more.
    """
    tally = _Tally(n)
    peers = [_Peer(tally) for _ in range(n)]
    marks = [0.0] * n
    triggers = [0.0] * n
    send = _counting_send(tally)
    gc.collect()
    tasks_before = len(anyio.get_running_tasks())
    rss_before = _rss() if rss else 0
    if traced:
        tracemalloc.start()
    memory_before = tracemalloc.get_traced_memory()[0] if traced else 0
    result: dict[str, Any] = {}
    with anyio.fail_after(PHASE_LIMIT):
        opened_at = time.perf_counter()
        async with anyio.create_task_group() as tasks:
            for index, peer in enumerate(peers):
                source = _slow_source(tally, first, marks, index)
                tasks.start_soon(connection(impl, source, ping=IDLE_PING), SCOPE, peer, send)
            await tally.idle.wait()
            result["open_s"] = time.perf_counter() - opened_at
            result["tasks"] = (len(anyio.get_running_tasks()) - tasks_before) / n
            if rss:
                result["rss"] = (_rss() - rss_before) / n
            if traced:
                result["memory"] = (tracemalloc.get_traced_memory()[0] - memory_before) / n
                tracemalloc.stop()
            # Start the teardown with the collector's counters at zero, for
            # every implementation alike: otherwise whether a full collection
            # owed by the opening phase lands inside the disconnects depends
            # on how many objects each implementation allocated while
            # opening, and that one collection (30 to 40 ms at 1,000 streams)
            # is most of an at-once p99.
            gc.collect()
            closing_at = time.perf_counter()
            if stagger is None:
                for index, peer in enumerate(peers):
                    triggers[index] = closing_at
                    peer.leave()
            else:
                for index, peer in enumerate(peers):
                    closed = tally.closed_reached(index + 1)
                    triggers[index] = time.perf_counter()
                    peer.leave()
                    await closed.wait()
                    if stagger > 0:
                        await anyio.sleep(stagger)
        result["close_s"] = time.perf_counter() - closing_at
    if tally.closed != n or 0.0 in marks:
        raise RuntimeError(f"{impl}: {tally.closed} of {n} sources were closed")
    result["latencies"] = [mark - trigger for mark, trigger in zip(marks, triggers, strict=True)]
    return result


def _rss() -> int:
    """This process's resident set size in bytes (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


#: Whether nothing big has been allocated and freed yet in this process, so an
#: RSS delta measures new memory rather than reused free blocks.
_fresh_heap = True


async def idle(
    impl: str, backend: str, *, sizes: list[int], traced_sizes: list[int], rss: bool
) -> list[dict[str, Any]]:
    """Idle connections: tasks, memory, open and teardown time per size.

    RSS per connection is reported (if ``rss``) only for the first size
    measured in the process (later ones would reuse the memory freed by
    earlier ones); traced
    memory (tracemalloc, a separate run, since tracing slows everything down)
    for the sizes in ``traced_sizes``.
    """
    global _fresh_heap
    await _open(impl, 16, traced=False)  # imports, caches and first-use costs
    records: list[dict[str, Any]] = []
    for n in sizes:
        timed = await _open(impl, n, traced=False, rss=rss and _fresh_heap)
        _fresh_heap = False
        metrics: dict[str, float] = {
            name: timed[name] for name in ("tasks", "rss", "open_s", "close_s") if name in timed
        }
        if n in traced_sizes:
            metrics["memory"] = (await _open(impl, n, traced=True))["memory"]
        records.append({"case": ["idle", backend, f"{n:,} connections"], "metrics": metrics})
    return records


def _percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


async def disconnect(
    impl: str, backend: str, *, streams: int, stagger: float
) -> list[dict[str, Any]]:
    """Disconnect latency for ``streams`` streams: all at once, then staggered."""
    await _open(impl, 16, traced=False, first=FRAMES[0])  # first-use costs
    records: list[dict[str, Any]] = []
    for mode, spacing in (("at once", None), ("staggered", stagger)):
        run = await _open(impl, streams, traced=False, first=FRAMES[0], stagger=spacing)
        latencies: list[float] = run["latencies"]
        records.append(
            {
                "case": ["disconnect", backend, f"{streams:,} streams {mode}"],
                "metrics": {
                    "median_s": _percentile(latencies, 0.5),
                    "p99_s": _percentile(latencies, 0.99),
                },
            }
        )
    return records
