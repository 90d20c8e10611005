"""A real ``redis-server`` for the Redis backend's tests, always stopped afterwards.

* **Skip or fail.**  Without ``coredis`` or a ``redis-server`` binary the
  tests skip with a message saying how to get them, except when
  ``SSE_SM_REQUIRE_REDIS=1`` (CI): then they fail.
* **Its own port, its own files.**  Each server listens on a free loopback
  port in a directory of its own, with no snapshots and, unless asked, no
  append-only file.  Redis cannot serve on an inherited socket, so the port
  is found by binding port 0 and closing it; if another process takes it in
  between, the start is retried on a new port.
* **Always stopped.**  The server runs in its own session; :meth:`kill`
  SIGKILLs its process group and reaps it, and :func:`running_redis` calls it
  on every way out.  Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ("RedisServer", "require_coredis", "require_redis_server", "running_redis")

#: Set in CI: a missing coredis or redis-server fails instead of skipping.
REQUIRE_ENV = "SSE_SM_REQUIRE_REDIS"
STARTUP_TIMEOUT = 15.0
KILL_TIMEOUT = 10.0
_HINT = "bash scripts/install_redis.sh; pip install 'sse_sm[redis]'"


def _missing(what: str) -> None:
    message = f"{what} ({_HINT})"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message}; {REQUIRE_ENV}=1 requires it", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require_coredis() -> None:
    """Skip the calling test module when coredis is not installed (fail under CI)."""
    try:
        import coredis  # noqa: F401
    except ImportError:
        _missing("coredis is not installed")


def require_redis_server() -> str:
    """The ``redis-server`` binary; skips (or fails under CI) when there is none."""
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if path is None:
        _missing("no redis-server on PATH")
        raise AssertionError("unreachable")  # pragma: no cover
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(port: int, timeout: float) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One ``redis-server`` process (or none, between :meth:`kill` and :meth:`start`)."""

    binary: str
    directory: Path
    #: Keep every acknowledged write across a crash: ``appendonly yes``, ``appendfsync always``.
    durable: bool = False
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else []
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *durability,
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
        ]

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def start(self) -> None:
        """Start on ``port`` (a free one the first time) and wait for PING; bounded."""
        attempts = 1 if self.port else 3
        for _ in range(attempts):
            if not self.port or attempts > 1:
                self.port = _free_port()
            with (self.directory / "redis.log").open("ab") as log:
                self.process = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break  # e.g. the port was taken: try another
                if _ping(self.port, timeout=1.0):
                    return
                time.sleep(0.02)
            self.kill()
        raise AssertionError(f"redis-server did not start on port {self.port}:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the server's process group (a crash, as far as Redis knows) and reap it."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=KILL_TIMEOUT)


@contextlib.contextmanager
def running_redis(directory: Path, *, durable: bool = False) -> Iterator[RedisServer]:
    """A started :class:`RedisServer` in ``directory``, killed on the way out whatever happens."""
    server = RedisServer(require_redis_server(), directory, durable=durable)
    try:
        server.start()
        yield server
    finally:
        server.kill()
