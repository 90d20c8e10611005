"""Several app processes sharing one real ``redis-server``: the Redis backend end to end.

``examples.redis_app`` runs twice, under uvicorn (asyncio) and under
hypercorn's trio worker, on two loopback ports, against one durable Redis
(``appendonly yes``, ``appendfsync always``).  Events are published over HTTP
to either process; raw SSE clients read both.  Then ``scripts/demo_redis.sh``,
the documented two-worker demo, is run as a user runs it and stopped with the
Ctrl-C a terminal sends.

Every wait is bounded; every process (Redis, the servers, the script and what
it started) is killed on the way out, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from sse_sm.testing import Event, EventStreamParser
from tests._redis import RedisServer, require_coredis, require_redis_server, running_redis
from tests._servers import ServerProcess, StreamClient, get, pump_until, running_server

require_coredis()

pytestmark = pytest.mark.real_server

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = "examples.redis_app:app"
#: hypercorn spawns a fresh interpreter for its worker; slow on a busy machine.
STARTUP_TIMEOUT = 30.0
#: Bound on any one wait for events.
WAIT = 20.0


# ------------------------------------------------------------------ processes


@contextlib.contextmanager
def running_app(kind: str, log_path: Path, env: Mapping[str, str]) -> Iterator[ServerProcess]:
    """``examples.redis_app`` under ``kind`` on an inherited loopback socket; always killed."""
    with running_server(kind, log_path, app=APP, env=env) as server:
        yield server


class Cluster:
    """One Redis and two app processes on it."""

    def __init__(self, redis: RedisServer, apps: tuple[ServerProcess, ServerProcess]) -> None:
        self.redis = redis
        self.apps = apps

    def logs(self) -> str:
        return "\n".join(f"--- {app.kind}:\n{app.log(3000)}" for app in self.apps)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("redis-apps")
    with running_redis(directory, durable=True) as redis:
        env = {"REDIS_URL": redis.url}
        with (
            running_app("uvicorn", directory / "uvicorn.log", env) as first,
            running_app("hypercorn-trio", directory / "hypercorn.log", env) as second,
        ):
            yield Cluster(redis, (first, second))


def publish(port: int, text: str) -> str | None:
    """POST ``text``; its id, or ``None`` when the app answered 503 (not acknowledged)."""
    response = httpx.post(f"http://127.0.0.1:{port}/publish", content=text, timeout=10.0)
    if response.status_code == 503:
        return None
    assert response.status_code == 200, response.text
    event_id: str = response.json()["id"]
    return event_id


def acknowledged(port: int, text: str) -> tuple[str, str]:
    """POST ``text``, which must be stored: its ``(id, text)``."""
    event_id = publish(port, text)
    assert event_id is not None, f"{text!r} not stored"
    return event_id, text


def messages(client: StreamClient) -> list[tuple[str, str]]:
    return [(e.id or "", e.data) for e in client.response.events if e.event == "message"]


def subscribe(port: int) -> StreamClient:
    client = StreamClient(port, "/events", timeout=WAIT)
    # The response head arrives once the subscription joined (before any event).
    assert client.read_until(lambda c: c.response.status is not None, WAIT), client.describe()
    assert client.response.status == 200, client.describe()
    return client


def wait_for(clients: list[StreamClient], expected: list[tuple[str, str]]) -> bool:
    def done() -> bool:
        return all(len(messages(c)) >= len(expected) for c in clients)

    return pump_until(clients, done, time.monotonic() + WAIT)


# ----------------------------------------------------------------- the tests


def test_subscribers_of_both_processes_get_every_event_in_order_with_the_same_ids(
    cluster: Cluster,
) -> None:
    clients = [subscribe(app.port) for app in cluster.apps]
    try:
        # Alternate the publishing process: one order, Redis's.
        sent = [acknowledged(cluster.apps[n % 2].port, f"both-{n}") for n in range(20)]
        assert wait_for(clients, sent), [c.describe() for c in clients]
        for client in clients:
            assert messages(client) == sent, cluster.logs()
    finally:
        for client in clients:
            client.close()


def _resume(port: int, last_event_id: str, count: int) -> list[Event]:
    """Stream ``/events`` with a ``Last-Event-ID`` header until ``count`` message events."""
    parser = EventStreamParser()
    events: list[Event] = []
    headers = {"Last-Event-ID": last_event_id, "Accept": "text/event-stream"}
    url = f"http://127.0.0.1:{port}/events"
    deadline = time.monotonic() + WAIT
    with httpx.stream("GET", url, headers=headers, timeout=WAIT) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            events += [item for item in parser.feed(chunk) if isinstance(item, Event)]
            if len([e for e in events if e.event == "message"]) >= count:
                break
            assert time.monotonic() < deadline, events
    return events


def test_a_client_moving_to_the_other_process_gets_exactly_what_it_missed(
    cluster: Cluster,
) -> None:
    first, second = cluster.apps
    client = subscribe(first.port)
    try:
        before = [acknowledged(first.port, f"before-{n}") for n in range(3)]
        assert wait_for([client], before), client.describe()
        assert messages(client) == before
    finally:
        client.close()  # the client goes away...
    # ... events are published while it is away, to both processes ...
    missed = [acknowledged(cluster.apps[n % 2].port, f"missed-{n}") for n in range(5)]
    # ... and it comes back to the other process with the last id it saw.
    events = _resume(second.port, before[-1][0], len(missed))
    assert [e.event for e in events] == ["message"] * len(missed), "no gap, nothing else"
    assert [(e.id, e.data) for e in events] == missed


def test_a_redis_restart_loses_nothing_acknowledged_for_either_process(
    cluster: Cluster,
) -> None:
    """SIGKILL redis-server mid-stream, restart it on its port and files: no hole."""
    clients = [subscribe(app.port) for app in cluster.apps]
    try:
        stored = [acknowledged(cluster.apps[n % 2].port, f"pre-{n}") for n in range(5)]
        cluster.redis.kill()
        for n in range(2):
            # Refused while Redis is down: 503, so not acknowledged (and not stored).
            assert publish(cluster.apps[n % 2].port, f"down-{n}") is None
        cluster.redis.start()  # same port, same directory: the append-only file is reloaded
        n = 0
        deadline = time.monotonic() + WAIT
        while len(stored) < 10:
            assert time.monotonic() < deadline, cluster.logs()
            text = f"post-{n}"
            event_id = publish(cluster.apps[n % 2].port, text)
            n += 1
            if event_id is None:
                time.sleep(0.05)  # the pool reconnects on the next command
                continue
            stored.append((event_id, text))
        assert wait_for(clients, stored), [c.describe() for c in clients]
        for client in clients:
            # Every acknowledged event, in order, once; nothing that was refused.
            assert messages(client) == stored, cluster.logs()
        for app in cluster.apps:
            status, body = get(app.port, "/stats", timeout=5.0)
            assert status == 200, body
            assert json.loads(body)["backend"]["reconnects"] >= 1, body
    finally:
        for client in clients:
            client.close()


# ------------------------------------------------------------ the demo script


def _free_port_pair() -> int:
    """A port P with P and P + 1 free just now (the script binds them itself)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise AssertionError("no two consecutive free ports")


def _alive(pid: int, marker: str) -> bool:
    """Whether ``pid`` runs and its command line contains ``marker`` (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return marker.encode() in cmdline and "State:\tZ" not in status


def test_the_demo_script_runs_two_workers_on_redis_and_stops_everything_on_ctrl_c(
    tmp_path: Path,
) -> None:
    require_redis_server()  # skip rather than let the script install it
    port = _free_port_pair()
    log_path = tmp_path / "demo_redis.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PORT": str(port), "DEMO_TICK_SECONDS": "0.1"}
    with log_path.open("wb") as log_file:
        script = subprocess.Popen(
            ["bash", "scripts/demo_redis.sh"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the terminal's, for Ctrl-C
        )

    def log() -> str:
        return log_path.read_text(errors="replace")

    started: dict[int, str] = {}
    clients: list[StreamClient] = []
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while "ready:" not in log():
            assert script.poll() is None, log()
            assert time.monotonic() < deadline, log()
            time.sleep(0.1)
        for pid, marker in re.findall(r"pid (\d+) \((redis-server|examples\.demo_app)\)", log()):
            started[int(pid)] = marker
        assert sorted(started.values()) == ["examples.demo_app"] * 2 + ["redis-server"], log()
        assert f"http://127.0.0.1:{port}/" in log()
        assert f"http://127.0.0.1:{port + 1}/" in log()

        clients = [StreamClient(p, "/events", timeout=WAIT) for p in (port, port + 1)]

        def ticks(client: StreamClient) -> list[tuple[str, int]]:
            return [
                (e.id or "", json.loads(e.data)["n"])
                for e in client.response.events
                if e.event == "tick"
            ]

        assert pump_until(
            clients, lambda: all(len(ticks(c)) >= 8 for c in clients), time.monotonic() + WAIT
        ), [c.describe() for c in clients]
        first, second = (ticks(c) for c in clients)
        # Both streams show the same ticks with the same ids from where both were open.
        common = [tick for tick in first if tick in second]
        assert len(common) >= 5, (first, second)
        start, other = first.index(common[0]), second.index(common[0])
        length = min(len(first) - start, len(second) - other)
        assert first[start : start + length] == second[other : other + length]
        # One ticker only: consecutive numbers, no tick twice.
        numbers = [n for _, n in first]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), first

        os.killpg(script.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
        script.wait(timeout=30)
        for client in clients:
            client.read_until(lambda c: False, 5.0)
            assert client.end == "clean", client.describe()
            assert b"event: farewell" in client.response.body, client.describe()
        assert script.returncode == 0, log()
        left = [pid for pid, marker in started.items() if _alive(pid, marker)]
        assert not left, f"still running after Ctrl-C: {left}\n{log()}"
    finally:
        for client in clients:
            client.close()
        if script.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(script.pid, signal.SIGKILL)
            script.wait(timeout=10)
        for pid, marker in started.items():
            if _alive(pid, marker):
                # The script starts each in a session of its own.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
