"""The demo app under a real server, and a headless Chromium to look at it.

Shared by ``tests/test_demo.py`` (HTTP-level checks of the demo) and
``tests/test_browser.py`` (the page driven in a browser):

* :func:`running_demo` serves ``examples.demo_app:app`` the way
  :func:`tests._servers.running_server` serves the test app: on a loopback
  socket bound here and inherited by the server (no port race), in a session
  of its own whose whole process group is killed on the way out.
* :func:`chromium_or_skip` finds the system's Chromium (never a downloaded
  one) or skips with the command that installs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from examples._chromium import CHROMIUM_ENV, find_chromium

from ._servers import ServerProcess, get

__all__ = (
    "DEMO_APP",
    "DEMO_KINDS",
    "TICK_SECONDS",
    "api_state",
    "chromium_or_skip",
    "demo_command",
    "running_demo",
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_APP = "examples.demo_app:app"
#: The two event loops the demo must work on, each under its usual server.
DEMO_KINDS: tuple[str, ...] = ("uvicorn", "hypercorn-trio")
#: The demo's tick interval in the tests: fast, so that a reconnect of a
#: second or two misses several ticks.
TICK_SECONDS = 0.2
#: hypercorn spawns a fresh interpreter for its worker; slow on a busy machine.
STARTUP_TIMEOUT = 30.0


def demo_command(kind: str, fd: int) -> list[str]:
    """The command a user would type to serve the demo on inherited ``fd``."""
    python = [sys.executable, "-m"]
    if kind == "uvicorn":
        return [*python, "uvicorn", DEMO_APP, "--fd", str(fd)]
    if kind == "hypercorn-trio":
        return [*python, "hypercorn", "-k", "trio", "--bind", f"fd://{fd}", DEMO_APP]
    raise AssertionError(f"unknown server kind {kind!r}")


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Accepted sockets inherit it; servers set it only on sockets they bind.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def _wait_until_healthy(server: ServerProcess) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last_error = "no attempt made"
    while time.monotonic() < deadline:
        if server.has_exited():
            raise AssertionError(
                f"{server.kind} exited with {server.returncode()} during startup:\n{server.log()}"
            )
        try:
            status, body = get(server.port, "/health", timeout=2.0)
        except OSError as exc:
            last_error = repr(exc)
        else:
            if status == 200 and body == b"ok":
                return
            last_error = f"{status} {body!r}"
        time.sleep(0.1)
    raise AssertionError(
        f"{server.kind}: /health not ok within {STARTUP_TIMEOUT} s (last: {last_error}):\n"
        f"{server.log()}"
    )


@contextlib.contextmanager
def running_demo(
    kind: str, log_path: Path, *, env: Mapping[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Serve the demo under ``kind``; yields once ``/health`` answers, always kills it.

    ``env`` adds to the environment (``DEMO_TICK_SECONDS`` is set to
    :data:`TICK_SECONDS` unless given).
    """
    listener = _listening_socket()
    port: int = listener.getsockname()[1]
    environment = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DEMO_TICK_SECONDS": str(TICK_SECONDS),
        **(env or {}),
    }
    try:
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                demo_command(kind, listener.fileno()),
                cwd=REPO_ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
                start_new_session=True,
            )
    finally:
        listener.close()
    server = ServerProcess(kind=kind, port=port, process=process, log_path=log_path)
    try:
        _wait_until_healthy(server)
        yield server
    finally:
        server.kill_group()


def api_state(server: ServerProcess) -> dict[str, Any]:
    """The demo's ``/api/state``: what its explorer shows."""
    status, body = get(server.port, "/api/state", timeout=5.0)
    assert status == 200, body
    state: dict[str, Any] = json.loads(body)
    return state


#: Set (by .ci/run) to make a missing chromium a failure instead of a skip.
REQUIRE_ENV = "SSE_SM_REQUIRE_BROWSER"


def chromium_or_skip() -> str:
    """The system Chromium's path; skips the test when there is none."""
    executable = find_chromium()
    if executable is None:
        if os.environ.get(REQUIRE_ENV):
            # CI installs chromium: a skip there would hide the whole group.
            pytest.fail(f"no chromium found, and {REQUIRE_ENV} is set")
        pytest.skip(
            "no chromium found: install Debian's with `bash scripts/install_chromium.sh`, "
            f"or set {CHROMIUM_ENV}=/path/to/chromium"
        )
    return executable
