"""``python -m bench.scale.client SPEC``: one load-client process, driven over stdin.

``SPEC`` is JSON: ``{"port": int, "path": str, "sources": [ip, ...],
"sample_every": int, "resume_port": int}`` (the last optional).  Each
stream connects from the next source address in turn (several 127.0.0.x
addresses, so that ephemeral ports do not run out), sends ``GET path``
and counts ``data: `` in what arrives (one per event; pings are
comments).  One stream in ``sample_every`` also parses the events tagged
``l`` (data ``"l SEQ MONOTONIC_NS"``) and records the publish-to-client
latency; the clock is the machine's monotonic clock, shared with the
server.

The client is as cheap as this file can make it: asyncio protocols (no
streams, no tasks per connection) on uvloop when it is installed.

With ``resume_port``, every stream parses every line instead: it checks
that the sequence numbers in the data go up by one (``lost``, and
``duplicates``), keeps the last ``id:`` and ``retry:``, and when the server
ends the stream (a drain) waits ``retry`` milliseconds and reconnects to
``resume_port`` with ``Last-Event-ID``.  ``count`` then also answers
``duplicates``, ``gaps`` (``sse_sm.gap`` events), ``reconnected``,
``resumed`` (streams with an event since their reconnection), and
``lost`` counts lost events (not streams);
``last_resumed_ns`` (when the last of those arrived), ``min_seq`` and
``reconnects_failed``.

Commands, one per line on stdin; each is answered by one JSON line on stdout:

* ``open N CONCURRENCY``: open ``N`` more streams, at most ``CONCURRENCY``
  connecting at once; answers when every one has its response head (or
  failed): ``{"opened", "failed", "seconds", "cpu", "wait", "errors"}`` (failed
  connections by cause since the start, ``EADDRNOTAVAIL`` meaning out of
  ports);
* ``count``: ``{"events", "open", "lost", "cpu", "wait", "last_event_ns",
  "latencies_us"}`` (``last_event_ns``: when the last read with events came)
  (CPU seconds and seconds spent waiting for a CPU so far, and the
  latencies recorded since the last ``count``);
* ``churn SECONDS CONCURRENCY``: for ``SECONDS``, ``CONCURRENCY`` loops
  each open a stream on ``path``, wait for its first event and close it:
  ``{"completed", "failed", "seconds", "cpu", "wait", "errors"}``;
* ``close``: close every stream: ``{"closed"}``;
* ``quit``, or the end of stdin: exit.

Every wait is bounded (``LIMIT`` seconds per connection); the process
raises RLIMIT_NOFILE first.
"""

from __future__ import annotations

import asyncio
import errno
import json
import sys
import time
from collections.abc import Callable
from typing import Any, Final, cast

from bench.scale import raise_nofile

__all__ = ("main",)

_MARK: Final = b"data: "
_TAIL: Final = len(_MARK) - 1
_LATENCY_MARK: Final = b"data: l "
_STATUS_OK: Final = b"HTTP/1.1 200"
#: Seconds a connection may take to connect and get its head (or first event).
LIMIT: Final = 30.0


def _run_wait() -> float:
    """Seconds this process has waited for a CPU while runnable (0 where unknown)."""
    try:
        with open("/proc/self/schedstat") as stats:
            return int(stats.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


class _Stream(asyncio.Protocol):
    """One stream: counts events; a sampled one records latencies."""

    __slots__ = ("buffer", "client", "events", "first", "head", "sampled", "tail", "transport")

    def __init__(self, client: Client, sampled: bool, first: asyncio.Future[bool] | None) -> None:
        self.client = client
        self.sampled = sampled
        #: Resolved on the head (``open``) or on the first event (``churn``).
        self.first = first
        self.head = False
        self.events = 0
        self.tail = b""
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        transport = self.transport
        self.client.transports.add(transport)
        transport.write(self.client.request)

    def _resolve(self, value: bool) -> None:
        if self.first is not None and not self.first.done():
            self.first.set_result(value)

    def data_received(self, data: bytes) -> None:
        if not self.head:
            self.head = True
            if not data.startswith(_STATUS_OK):
                self._resolve(False)
                assert self.transport is not None
                self.transport.close()
                return
            if not self.client.resolve_on_event:
                self._resolve(True)
        count = data.count(_MARK)
        if self.tail:
            count += (self.tail + data[:_TAIL]).count(_MARK)
        self.tail = data[-_TAIL:]
        if count:
            self.events += count
            self.client.events += count
            self.client.last_event_ns = time.monotonic_ns()
            if self.client.resolve_on_event:
                self._resolve(True)
        if self.sampled:
            self._latencies(data)

    def _latencies(self, data: bytes) -> None:
        now = time.monotonic_ns()
        buffer = self.buffer + data
        start = 0
        while True:
            found = buffer.find(_LATENCY_MARK, start)
            if found < 0:
                self.buffer = buffer[-len(_LATENCY_MARK) :]
                return
            end = buffer.find(b"\n", found)
            if end < 0:
                self.buffer = buffer[found:]
                return
            fields = buffer[found + len(_LATENCY_MARK) : end].split()
            self.client.latencies.append(now - int(fields[1]))
            start = end

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.client.transports.discard(self.transport)
        if not self.client.closing:
            self.client.lost += 1
        self._resolve(False)


class _Resume:
    """One stream's life across reconnections: the last id and sequence number seen.

    Events carry data ``"TAG SEQ MONOTONIC_NS"`` with ``SEQ`` counting from
    0 (one publisher); a ``SEQ`` at or below the last one is a duplicate,
    one more than a step ahead means events were lost on the way.
    """

    __slots__ = ("last_id", "last_seq", "reconnects", "resumed_ns", "retry_ms")

    def __init__(self) -> None:
        self.last_id = ""
        self.last_seq = -1
        self.retry_ms = 3000
        self.reconnects = 0
        #: When the first event after the last reconnection arrived (0: not yet).
        self.resumed_ns = 0


class _ResumingStream(asyncio.Protocol):
    """A stream that parses every line, checks the sequence, and reconnects when let go.

    When the server closes the stream (a drain), the client waits the
    ``retry:`` the server sent, then reconnects to the resume port with
    ``Last-Event-ID``.  Counted on the client: duplicates, lost events, gap
    events (``sse_sm.gap``).
    """

    __slots__ = ("buffer", "client", "first", "head", "state", "transport")

    def __init__(self, client: Client, state: _Resume, first: asyncio.Future[bool] | None) -> None:
        self.client = client
        self.state = state
        self.first = first
        self.head = False
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.client.transports.add(self.transport)
        request = self.client.request
        if self.state.last_id:
            request = request[:-2] + f"Last-Event-ID: {self.state.last_id}\r\n\r\n".encode()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        if not self.head:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            self.head = True
            ok = buffer.startswith(_STATUS_OK)
            if self.first is not None and not self.first.done():
                self.first.set_result(ok)
            buffer = buffer[end + 4 :]
        lines = buffer.split(b"\n")
        self.buffer = lines.pop()
        state, client = self.state, self.client
        for raw in lines:
            line = raw.rstrip(b"\r")
            if line.startswith(b"data: "):
                fields = line[6:].split()
                if len(fields) != 3:
                    continue
                seq = int(fields[1])
                client.events += 1
                if seq <= state.last_seq:
                    client.duplicates += 1
                else:
                    client.lost += seq - state.last_seq - 1
                    state.last_seq = seq
                if state.reconnects and not state.resumed_ns:
                    state.resumed_ns = time.monotonic_ns()
            elif line.startswith(b"id: "):
                state.last_id = line[4:].decode()
            elif line.startswith(b"retry: "):
                state.retry_ms = int(line[7:])
            elif line.startswith(b"event: sse_sm.gap"):
                client.gaps += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.client.transports.discard(self.transport)
        if self.first is not None and not self.first.done():
            self.first.set_result(False)
        if not self.client.closing:
            asyncio.get_running_loop().create_task(self.client.reconnect(self.state))


class Client:
    """The streams of this process, and the commands."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.port: int = spec["port"]
        self.path: str = spec["path"]
        self.sources: list[str] = spec["sources"]
        self.sample_every: int = spec.get("sample_every", 0)
        self.request = (
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        self.transports: set[asyncio.Transport] = set()
        self.events = 0
        self.lost = 0
        #: When the most recent read with events arrived (monotonic ns).
        self.last_event_ns = 0
        self.latencies: list[int] = []
        self.closing = False
        self.resolve_on_event = False
        self._next = 0
        #: Resume mode: the port streams reconnect to after the server lets them go.
        self.resume_port: int | None = spec.get("resume_port")
        self.resumes: list[_Resume] = []
        self.duplicates = 0
        self.gaps = 0
        self.reconnects_failed = 0
        #: Failed connections by cause, since the start.
        self.errors: dict[str, int] = {}

    async def _connect(self, first: asyncio.Future[bool] | None) -> asyncio.Transport:
        index = self._next
        self._next += 1
        sampled = self.sample_every > 0 and index % self.sample_every == 0
        source = self.sources[index % len(self.sources)]
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.Protocol]
        if self.resume_port is None:
            factory = lambda: _Stream(self, sampled, first)  # noqa: E731
        else:
            state = _Resume()
            self.resumes.append(state)
            factory = lambda: _ResumingStream(self, state, first)  # noqa: E731
        transport, _ = await asyncio.wait_for(
            loop.create_connection(factory, "127.0.0.1", self.port, local_addr=(source, 0)),
            LIMIT,
        )
        return transport

    async def reconnect(self, state: _Resume) -> None:
        """After the server let a stream go: wait its ``retry``, resume on the resume port."""
        assert self.resume_port is not None
        await asyncio.sleep(state.retry_ms / 1000)
        state.reconnects += 1
        state.resumed_ns = 0
        source = self.sources[state.reconnects % len(self.sources)]
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: _ResumingStream(self, state, None),
                    "127.0.0.1",
                    self.resume_port,
                    local_addr=(source, 0),
                ),
                LIMIT,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            self.reconnects_failed += 1
            self.note(exc)

    def note(self, exc: BaseException) -> None:
        """Count a failed connection by its cause (``EADDRNOTAVAIL``: out of ports)."""
        if isinstance(exc, OSError) and exc.errno is not None:
            cause = errno.errorcode.get(exc.errno, str(exc.errno))
        else:
            cause = type(exc).__name__
        self.errors[cause] = self.errors.get(cause, 0) + 1

    async def open(self, streams: int, concurrency: int) -> dict[str, Any]:
        self.resolve_on_event = False
        self.closing = False
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)

        async def one() -> bool:
            async with gate:
                first: asyncio.Future[bool] = loop.create_future()
                try:
                    await self._connect(first)
                    return await asyncio.wait_for(first, LIMIT)
                except (OSError, asyncio.TimeoutError) as exc:
                    self.note(exc)
                    return False

        cpu, wait, started = time.process_time(), _run_wait(), time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(streams)))
        return {
            "opened": sum(results),
            "failed": streams - sum(results),
            "seconds": time.perf_counter() - started,
            "cpu": time.process_time() - cpu,
            "wait": _run_wait() - wait,
            "errors": self.errors,
        }

    def count(self) -> dict[str, Any]:
        latencies, self.latencies = self.latencies, []
        resume = {}
        if self.resume_port is not None:
            resume = {
                "duplicates": self.duplicates,
                "gaps": self.gaps,
                "reconnected": sum(1 for state in self.resumes if state.reconnects),
                "resumed": sum(1 for state in self.resumes if state.resumed_ns),
                "last_resumed_ns": max((state.resumed_ns for state in self.resumes), default=0),
                "min_seq": min((state.last_seq for state in self.resumes), default=-1),
                "reconnects_failed": self.reconnects_failed,
            }
        return {
            **resume,
            "events": self.events,
            "open": len(self.transports),
            "lost": self.lost,
            "cpu": time.process_time(),
            "wait": _run_wait(),
            "last_event_ns": self.last_event_ns,
            "latencies_us": [value // 1000 for value in latencies],
        }

    async def churn(self, seconds: float, concurrency: int) -> dict[str, Any]:
        self.resolve_on_event = True
        self.closing = True  # every stream here is closed by us
        loop = asyncio.get_running_loop()
        deadline = time.perf_counter() + seconds
        completed = failed = 0

        async def loop_once() -> None:
            nonlocal completed, failed
            while time.perf_counter() < deadline:
                first: asyncio.Future[bool] = loop.create_future()
                transport: asyncio.Transport | None = None
                try:
                    transport = await self._connect(first)
                    ok = await asyncio.wait_for(first, LIMIT)
                except (OSError, asyncio.TimeoutError) as exc:
                    self.note(exc)
                    ok = False
                finally:
                    if transport is not None:
                        transport.close()
                if ok:
                    completed += 1
                else:
                    failed += 1

        cpu, wait, started = time.process_time(), _run_wait(), time.perf_counter()
        await asyncio.gather(*(loop_once() for _ in range(concurrency)))
        return {
            "completed": completed,
            "failed": failed,
            "seconds": time.perf_counter() - started,
            "cpu": time.process_time() - cpu,
            "wait": _run_wait() - wait,
            "errors": self.errors,
        }

    async def close(self) -> dict[str, Any]:
        self.closing = True
        closed = len(self.transports)
        for transport in list(self.transports):
            transport.close()
        await asyncio.sleep(0)
        return {"closed": closed}


async def _serve(spec: dict[str, Any]) -> None:
    client = Client(spec)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def answer(value: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    answer({"ready": True})
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "quit":
            break
        command, args = line[0], line[1:]
        if command == "open":
            answer(await client.open(int(args[0]), int(args[1])))
        elif command == "count":
            answer(client.count())
        elif command == "churn":
            answer(await client.churn(float(args[0]), int(args[1])))
        elif command == "close":
            answer(await client.close())
        else:
            answer({"error": f"unknown command {command!r}"})
    await client.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    raise_nofile()
    spec = json.loads(argv[1])
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(spec))
    else:
        uvloop.run(_serve(spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
