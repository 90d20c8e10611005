"""The processes of a scale run: one server, several load clients, each stopped by its PID.

* :class:`Server`: ``python -m bench.scale.serve`` on a listening socket the
  driver made (127.0.0.1, backlog 4096), with its RSS, CPU time and open
  file descriptors read from ``/proc/<pid>``.
* :class:`Clients`: ``python -m bench.scale.client`` processes, each with
  its own range of 127.0.0.x source addresses; a command goes to all of them
  and the answers are gathered with a time limit.

Both are context managers: on every way out (an exception, Ctrl-C, SIGTERM
turned into ``SystemExit`` by the driver) each process gets SIGTERM (clients:
the end of their stdin first), then SIGKILL after 5 s, always by its own PID.
Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

from bench.loopback import ROOT, cpu_seconds

__all__ = ("Clients", "Server", "running_redis", "source_addresses")

_BACKLOG: Final = 4096
_READY_LIMIT: Final = 20.0
_STOP_LIMIT: Final = 5.0
#: Source addresses per client process (each has its own ~28,000 ephemeral ports).
_SOURCES_PER_CLIENT: Final = 16


@contextlib.contextmanager
def running_redis() -> Iterator[str]:
    """A ``redis-server`` of our own on a free loopback port, no persistence; its URL.

    Redis cannot take an inherited socket, so the port is found by binding
    port 0 and closing it (a rare race with another process is a failed
    start).  Stopped by its PID (SIGTERM, then SIGKILL) on every way out.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("no redis-server on PATH (bash scripts/install_redis.sh)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        arguments = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        process = subprocess.Popen(
            [binary, *arguments, "--dir", directory],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + _READY_LIMIT
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _stop(process)


def source_addresses(client: int) -> list[str]:
    """The loopback addresses client number ``client`` connects from: 127.0.0.x, x >= 10."""
    first = 10 + client * _SOURCES_PER_CLIENT
    return [f"127.0.0.{first + k}" for k in range(_SOURCES_PER_CLIENT)]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, up to 5 s, then SIGKILL: by the process's own PID only."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=_STOP_LIMIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=_STOP_LIMIT)


def _tail(log: IO[bytes], size: int = 2000) -> str:
    log.seek(0, os.SEEK_END)
    log.seek(max(log.tell() - size, 0))
    return log.read().decode(errors="replace")


class Server:
    """One server process serving :mod:`bench.scale.app`."""

    def __init__(self, server: str, environment: dict[str, str] | None = None) -> None:
        self.server = server
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(_BACKLOG)
        self.port: int = self._listener.getsockname()[1]
        fd = self._listener.fileno()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in __exit__)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.scale.serve", server, str(fd)],
            cwd=ROOT,
            pass_fds=[fd],
            env={**os.environ, **(environment or {})},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self._process.pid

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            _stop(self._process)
        finally:
            self._listener.close()
            self._log.close()

    def log_tail(self) -> str:
        return _tail(self._log)

    def get(self, path: str, limit: float) -> bytes:
        """``GET path`` on a fresh connection; the body of a 200 answer, else RuntimeError."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=limit)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        return body

    def wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_LIMIT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.server} exited: {self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException, RuntimeError):
                self.get("/ready", 1.0)
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.server} not ready within {_READY_LIMIT} s: {self.log_tail()}")

    def terminate(self) -> None:
        """SIGTERM, without waiting: the server drains and exits (reaped on the way out)."""
        if self._process.poll() is None:
            self._process.terminate()

    def alive(self) -> bool:
        return self._process.poll() is None

    def rss(self) -> int:
        """Resident set size in bytes (``VmRSS`` of ``/proc/<pid>/status``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def cpu(self) -> float:
        """CPU seconds (user + system, every thread) used so far."""
        return cpu_seconds(self.pid)

    def run_wait(self) -> float:
        """Seconds its threads have waited for a CPU while runnable (``schedstat``, field 2).

        Grows when other processes hold the cores: the measure of contention.
        """
        total = 0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                total += int((task / "schedstat").read_text().split()[1])
        return total / 1e9

    def fds(self) -> int:
        """Open file descriptors."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def wait_quiet(self, share: float, limit: float, interval: float = 0.25) -> bool:
        """Until the server used under ``share`` of a core over ``interval`` (bounded).

        Its descriptors go before its work does: after thousands of streams
        close, the tasks that served them are still being torn down.
        """
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = self.cpu()
            time.sleep(interval)
            if self.cpu() - before < share * interval:
                return True
        return False

    def wait_fds_below(self, bound: int, limit: float) -> bool:
        """Until the server has fewer than ``bound`` descriptors (its streams are gone)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.fds() < bound:
                return True
            time.sleep(0.05)
        return False


class _Client:
    """One client process and the lines it has written but we have not read yet."""

    def __init__(self, spec: dict[str, Any], log: IO[bytes]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.scale.client", json.dumps(spec)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        self.pending = b""

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def read(self, deadline: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("a client did not answer in time")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"a client exited with {self.process.wait(timeout=5)}")
                self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # the client exits at the end of its stdin
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1.0)
        _stop(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()


class Clients:
    """``count`` client processes streaming from ``path`` on ``port``."""

    def __init__(
        self,
        count: int,
        port: int,
        path: str,
        sample_every: int = 0,
        resume_port: int | None = None,
    ) -> None:
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in __exit__)
        self._clients: list[_Client] = []
        try:
            for index in range(count):
                spec: dict[str, Any] = {
                    "port": port,
                    "path": path,
                    "sources": source_addresses(index),
                    "sample_every": sample_every,
                }
                if resume_port is not None:
                    spec["resume_port"] = resume_port
                self._clients.append(_Client(spec, self._log))
            self.gather(_READY_LIMIT)
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __len__(self) -> int:
        return len(self._clients)

    def __enter__(self) -> Clients:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            for client in self._clients:
                client.stop()
        finally:
            self._log.close()

    def log_tail(self) -> str:
        return _tail(self._log)

    def gather(self, limit: float) -> list[dict[str, Any]]:
        """One answer from every client, within ``limit`` seconds in all."""
        deadline = time.monotonic() + limit
        try:
            return [client.read(deadline) for client in self._clients]
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"{exc}: {self.log_tail()}") from exc

    def command(self, lines: list[str], limit: float) -> list[dict[str, Any]]:
        """Send ``lines[i]`` to client ``i`` (all before any answer is read); the answers."""
        for client, line in zip(self._clients, lines, strict=True):
            client.send(line)
        return self.gather(limit)

    def broadcast(self, line: str, limit: float) -> list[dict[str, Any]]:
        """The same command to every client; the answers."""
        return self.command([line] * len(self._clients), limit)
