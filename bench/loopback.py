"""Real servers on loopback: start one, stream from it, count events and its CPU.

The client is deliberately cheap, so that it does not dominate: plain
non-blocking sockets, drained after a ``poll`` about once per millisecond
(``time.sleep(0.001)`` between rounds) instead of waking on every packet, so
the server's per-event cost is not mixed with one client wake-up per event.
Events are counted by counting ``data: `` in the bytes received (each event
has exactly one data line), carrying the last five bytes across reads.

Server CPU is read from ``/proc/<pid>/task/*/schedstat`` (nanoseconds of CPU
per thread, Linux), else from ``psutil`` if it is installed, else from
``/proc/<pid>/stat`` (``utime + stime``, in clock ticks).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

__all__ = ("ROOT", "ServerProcess", "cpu_seconds", "measure_streams", "running_server")

#: The directory that holds the ``bench`` package: the subprocesses' working directory.
ROOT: Final = Path(__file__).resolve().parent.parent

_MARK: Final = b"data: "
_TAIL: Final = len(_MARK) - 1
_READ_SIZE: Final = 1 << 18
_POLL_INTERVAL: Final = 0.001
_CONNECT_LIMIT: Final = 10.0
_STATUS_OK: Final = b"HTTP/1.1 200 "
_STATUS_LENGTH: Final = len(_STATUS_OK)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by process ``pid``, all its threads."""
    tasks = Path(f"/proc/{pid}/task")
    try:
        total_ns = 0
        for task in tasks.iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                total_ns += int((task / "schedstat").read_text().split()[0])
        return total_ns / 1e9
    except (FileNotFoundError, PermissionError, ValueError, IndexError):
        pass
    try:
        psutil: Any = importlib.import_module("psutil")
    except ImportError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


class ServerProcess:
    """A server from :mod:`bench.serve` in its own process, on a port of ours."""

    def __init__(self, server: str) -> None:
        self.server = server
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1024)
        self.port: int = self._listener.getsockname()[1]
        fd = self._listener.fileno()
        # The server's own log goes to a file, shown only if something fails.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.serve", server, str(fd)],
            cwd=ROOT,
            pass_fds=[fd],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self._process.pid

    def wait_ready(self, limit: float = _CONNECT_LIMIT) -> None:
        """Wait until the server answers ``GET /ready``."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"{self.server} exited with {self._process.returncode}: {self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as probe,
            ):
                probe.sendall(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                if probe.recv(1024).startswith(b"HTTP/1.1 200"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"{self.server} did not answer within {limit} s: {self.log_tail()}")

    def log_tail(self, size: int = 2000) -> str:
        """The end of the server's log."""
        self._log.seek(0, os.SEEK_END)
        self._log.seek(max(self._log.tell() - size, 0))
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM, wait up to 5 s, then SIGKILL; always closes our listener."""
        try:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(timeout=5)
        finally:
            self._listener.close()
            self._log.close()


@contextlib.contextmanager
def running_server(server: str) -> Iterator[ServerProcess]:
    """A started, ready server that is stopped on the way out, whatever happens."""
    process = ServerProcess(server)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def _connect(port: int, path: str) -> socket.socket:
    """Connect and send the request; the response is read later, with the events.

    All streams are requested before any response is read: a server that is
    already streaming to earlier clients would otherwise take longer and
    longer to get to each new one.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.settimeout(_CONNECT_LIMIT)
        sock.connect(("127.0.0.1", port))
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        sock.sendall(request.encode())
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


class _Counter:
    """Counts ``data: `` across the reads of one connection (the head has none)."""

    __slots__ = ("events", "head", "tail")

    def __init__(self) -> None:
        self.events = 0
        self.tail = b""
        self.head = b""

    def feed(self, chunk: bytes) -> None:
        if len(self.head) < _STATUS_LENGTH:
            self.head += chunk[: _STATUS_LENGTH - len(self.head)]
            if not _STATUS_OK.startswith(self.head[:_STATUS_LENGTH]):
                raise ConnectionError(f"unexpected response: {self.head!r}")
        self.events += chunk.count(_MARK) + (self.tail + chunk[:_TAIL]).count(_MARK)
        self.tail = (self.tail + chunk)[-_TAIL:]


def _drain_for(
    sockets: dict[int, socket.socket],
    counters: dict[int, _Counter],
    seconds: float,
    *,
    until_all_streaming: bool = False,
) -> None:
    """Read what has arrived about every millisecond, for ``seconds``.

    With ``until_all_streaming``, stop as soon as every stream has had an
    event, and fail if that takes all of ``seconds``.
    """
    poller = select.poll()
    for fd in sockets:
        poller.register(fd, select.POLLIN)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for fd, _ in poller.poll(0):
            try:
                chunk = sockets[fd].recv(_READ_SIZE)
            except BlockingIOError:
                continue
            if not chunk:
                raise ConnectionError("the server closed a stream")
            counters[fd].feed(chunk)
        if until_all_streaming and all(c.events for c in counters.values()):
            return
        time.sleep(_POLL_INTERVAL)
    if until_all_streaming:
        raise TimeoutError(f"not every stream started within {seconds} s")


def measure_streams(
    server: ServerProcess, path: str, streams: int, *, warm_up: float, window: float
) -> dict[str, float]:
    """Stream from ``path`` on ``streams`` connections; events/s and server CPU per event."""
    sockets: dict[int, socket.socket] = {}
    counters: dict[int, _Counter] = {}
    try:
        for _ in range(streams):
            sock = _connect(server.port, path)
            sockets[sock.fileno()] = sock
            counters[sock.fileno()] = _Counter()
        _drain_for(sockets, counters, warm_up)
        if any(counter.events == 0 for counter in counters.values()):
            _drain_for(sockets, counters, _CONNECT_LIMIT, until_all_streaming=True)
        events_before = sum(c.events for c in counters.values())
        cpu_before = cpu_seconds(server.pid)
        client_before = time.process_time()
        started = time.perf_counter()
        _drain_for(sockets, counters, window)
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - client_before
        cpu = cpu_seconds(server.pid) - cpu_before
        events = sum(c.events for c in counters.values()) - events_before
    finally:
        for sock in sockets.values():
            sock.close()
    if events <= 0:
        raise RuntimeError(f"no events from {path}")
    return {
        "events_per_s": events / elapsed,
        "cpu_ns": cpu / events * 1e9,
        "client_cpu_share": client_cpu / cpu if cpu > 0 else 0.0,
    }
