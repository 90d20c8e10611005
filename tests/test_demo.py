"""End-to-end: the demo app under real servers, over real loopback sockets.

The in-process tests exercise the library through ASGI calls; these start
``examples.demo_app`` in a subprocess under uvicorn (asyncio) and under
hypercorn's trio worker, then talk HTTP to it.  They catch what in-process
tests cannot: a server that buffers the stream, headers that a real server
rewrites, an app that only works on one event loop.

Every wait is bounded, and the server is always stopped in the fixture's
finalizer, whether the test passed, failed or was interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from sse_sm.testing import parse_event_stream

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 15.0
STREAM_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
WANTED_EVENTS = 3

pytestmark = pytest.mark.real_server


def free_port() -> int:
    """Ask the kernel for a loopback port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_command(server: str, port: int) -> list[str]:
    """The command line that serves the demo app on ``port`` with ``server``."""
    app = "examples.demo_app:app"
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    if server == "hypercorn-trio":
        return [sys.executable, "-m", "hypercorn", "-k", "trio", "--bind", f"127.0.0.1:{port}", app]
    raise AssertionError(f"unknown server {server!r}")


@dataclass(frozen=True)
class DemoServer:
    """A running demo server: where to reach it and where its output goes."""

    base_url: str
    log_path: Path

    def log(self) -> str:
        """The server's combined stdout and stderr so far, for failure messages."""
        return self.log_path.read_text(errors="replace")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process`` politely, then firmly; never wait without a bound."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


def wait_until_healthy(process: subprocess.Popen[bytes], server: DemoServer) -> None:
    """Poll ``/health`` until it answers ``ok``; fail early if the server died."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last_error = "no attempt made"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            response = httpx.get(f"{server.base_url}/health", timeout=1.0)
        except httpx.TransportError as exc:
            last_error = repr(exc)
        else:
            if response.status_code == 200 and response.text == "ok":
                return
            last_error = f"{response.status_code} {response.text!r}"
        time.sleep(0.1)
    pytest.fail(f"/health not ok within {STARTUP_TIMEOUT}s (last: {last_error}):\n{server.log()}")


@pytest.fixture(params=["uvicorn", "hypercorn-trio"])
def demo_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DemoServer]:
    """Start the demo app in a subprocess on a free loopback port; always stop it."""
    port = free_port()
    server = DemoServer(base_url=f"http://127.0.0.1:{port}", log_path=tmp_path / "server.log")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with server.log_path.open("wb") as log_file:
        process = subprocess.Popen(
            server_command(request.param, port),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_healthy(process, server)
        yield server
    finally:
        stop(process)


def test_index_is_a_page_that_subscribes(demo_server: DemoServer) -> None:
    response = httpx.get(f"{demo_server.base_url}/", timeout=5.0)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text
    assert "EventSource" in response.text


def test_events_stream_ticks_with_sse_headers(demo_server: DemoServer) -> None:
    buffer = b""
    with (
        httpx.Client(timeout=httpx.Timeout(5.0)) as client,
        client.stream("GET", f"{demo_server.base_url}/events?interval=0.05") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"

        deadline = time.monotonic() + STREAM_TIMEOUT
        events = parse_event_stream(b"")
        for chunk in response.iter_raw():
            buffer += chunk
            # The parser drops a trailing unfinished event, so a prefix is fine.
            events = parse_event_stream(buffer)
            if len(events) >= WANTED_EVENTS or time.monotonic() > deadline:
                break

    assert len(events) >= WANTED_EVENTS, (
        f"got {len(events)} events in {STREAM_TIMEOUT}s: {buffer!r}\n{demo_server.log()}"
    )
    ids: list[int] = []
    for event in events[:WANTED_EVENTS]:
        assert event.event == "tick"
        assert event.id.isdigit(), event
        payload = json.loads(event.data)
        assert payload["n"] == int(event.id)
        datetime.fromisoformat(payload["time"])  # raises if it is not an ISO timestamp
        ids.append(int(event.id))
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def open_stream(port: int) -> socket.socket:
    """A raw HTTP/1.1 request for a fast tick stream, with its headers read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=STREAM_TIMEOUT)
    sock.sendall(
        b"GET /events?interval=0.05 HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by the timeout)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_ctrl_c_drains_every_stream_then_the_demo_exits(tmp_path: Path) -> None:
    """The README's demo command: on SIGINT each client gets its farewell and a clean end."""
    port = free_port()
    server = DemoServer(base_url=f"http://127.0.0.1:{port}", log_path=tmp_path / "server.log")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PORT": str(port)}
    with server.log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "examples.demo_app"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    sockets: list[socket.socket] = []
    try:
        wait_until_healthy(process, server)
        assert f"open http://127.0.0.1:{port}/" in server.log()
        sockets = [open_stream(port) for _ in range(3)]
        for sock in sockets:
            assert b"event: tick" in sock.recv(65536) + sock.recv(65536)
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        bodies = [read_until_closed(sock) for sock in sockets]
        process.wait(timeout=STOP_TIMEOUT)
        elapsed = time.monotonic() - started
    finally:
        for sock in sockets:
            sock.close()
        stop(process)
    for body in bodies:
        assert b"event: farewell\r\n" in body, server.log()
        assert b"retry: 2000\r\n" in body
        assert body.endswith(b"0\r\n\r\n"), "the chunked body ends cleanly"
    assert process.returncode == 0, server.log()
    assert elapsed < 4.0, f"the demo took {elapsed:.1f} s to drain and exit"
