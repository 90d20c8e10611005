"""The deployments users run in production, each checked for three things.

``tests/test_real_servers.py`` runs the app under uvicorn (h11) and
hypercorn, one process each.  This module runs ``tests.realserver_app``
the ways it is deployed (see :data:`DEPLOYMENTS`): uvicorn with uvloop and
httptools, uvicorn and hypercorn with two workers, gunicorn with two uvicorn
workers, granian with one and two workers, daphne, uvicorn behind nginx with
nginx's default proxy buffering, and the app behind Starlette's
``GZipMiddleware`` and behind a ``BaseHTTPMiddleware`` subclass.  For each:

(a) **Unbuffered.**  Each event's data carries the moment its source yielded
    it; the source then waits a second before the next.  The client must see
    event 1 before the source yields event 2, and each within 0.5 s of its
    yield (``unbuffered_check`` in ``tests/test_real_servers.py``).  Nothing
    between the app and the socket (a proxy, a compressing middleware) may
    hold an event back.
(b) **A client leaving ends the source.**  The source's ``finally`` runs
    within 1 s of the client closing its socket (read from the app's log
    line, since with several workers ``/closed`` may reach the wrong one).
(c) **Stopping ends every stream cleanly.**  The usual stop signal (SIGTERM)
    to the main process with 20 streams open, each with a farewell: each
    ends with the source's goodbye, one farewell with a ``retry:``, and the
    terminating chunk; the whole process tree (every process of the
    server's session) exits by itself within the grace plus 2 s.  Twisted
    stops daphne the same way on SIGTERM and SIGINT, so SIGTERM is the
    signal for every deployment.

gunicorn's SIGHUP (rolling restart) is checked as well: the old workers
drain their streams the same way, and new workers serve.  Measurements are
printed as ``MEASURED server=<deployment> ...`` lines and written to
``deployment_measurements.txt`` under pytest's base temporary directory;
the table in docs/design.md section 8.3 has them.  Every server and proxy is started in
its own session and its process group killed by pid on every way out.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests._servers import (
    APP,
    REQUIRE_NGINX_ENV,
    ServerProcess,
    StreamClient,
    has_event,
    nginx_binary,
    pump_until,
    running_nginx,
    running_server,
    time_stamped_events,
)
from tests.realserver_app import FAREWELL_GRACE_SECONDS
from tests.servers.test_real_servers import (
    EXIT_SLACK,
    OVERTIME,
    SOURCE_PAUSE,
    STREAM_TIMEOUT,
    Measurements,
    close_reasons,
    farewell_problems,
    new_tag,
    unbuffered_check,
)

pytestmark = pytest.mark.real_server

#: What the issue allows between the client closing its socket and the source's finally.
DISCONNECT_LIMIT = 1.0
#: Streams open when the server is told to stop.
STREAMS = 20

_FINALLY_LINE = re.compile(r"realserver_app: FINALLY tag=(\S+) monotonic=(\S+) pid=(\d+)")
_CLOSED_PID = re.compile(r"realserver_app: CLOSED tag=\S+ .* pid=(\d+)")


@dataclass(frozen=True)
class Deployment:
    """One way of serving ``tests.realserver_app``."""

    #: The name in test ids, MEASURED lines and the table in docs/design.md.
    name: str
    #: A kind of :func:`tests._servers.running_server`.
    kind: str
    app: str = APP
    #: Put nginx (default proxy buffering) in front of the server.
    nginx: bool = False
    #: Headers every stream request sends.
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The close reason the app records for a stream the stop ended.
    stop_reason: str = "drained"


DEPLOYMENTS: tuple[Deployment, ...] = (
    Deployment("uvicorn-standard", "uvicorn-standard"),
    Deployment("uvicorn-workers-2", "uvicorn-workers-2"),
    Deployment("gunicorn-uvicorn-worker", "gunicorn-uvicorn-worker"),
    Deployment("granian-1", "granian-1"),
    Deployment("granian-2", "granian-2"),
    # daphne gives requests no grace: on SIGTERM (or SIGINT; Twisted treats
    # both as reactor.stop) it cancels every application instance at once,
    # a few milliseconds after the signal.  The cancellation path still sends
    # the goodbye already made, the farewell and the terminating chunk, so
    # the client sees a clean drain; the app records ``cancelled``.
    Deployment("daphne", "daphne", stop_reason="cancelled"),
    Deployment("hypercorn-workers-2", "hypercorn-workers-2"),
    Deployment("nginx+uvicorn", "uvicorn", nginx=True),
    Deployment(
        "uvicorn+gzip",
        "uvicorn",
        app="tests.realserver_app:gzip_app",
        headers={"Accept-Encoding": "gzip"},
    ),
    Deployment("uvicorn+basehttp", "uvicorn", app="tests.realserver_app:base_http_app"),
)

_IDS = [deployment.name for deployment in DEPLOYMENTS]


# ------------------------------------------------------------------ fixtures


@dataclass
class Deployed:
    """A running deployment: the app server and, if any, the proxy in front."""

    deployment: Deployment
    server: ServerProcess
    proxy: ServerProcess | None

    @property
    def port(self) -> int:
        """Where clients connect: the proxy if there is one."""
        return self.proxy.port if self.proxy is not None else self.server.port

    def log(self) -> str:
        text = f"--- {self.server.kind} log ---\n{self.server.log()}"
        if self.proxy is not None:
            error_log = Path(self.proxy.log_path).with_name("error.log")
            tail = error_log.read_text(errors="replace")[-4000:] if error_log.exists() else ""
            text += f"\n--- nginx error.log (tail) ---\n{tail}"
        return text

    def client(self, path: str) -> StreamClient:
        return StreamClient(
            self.port, path, timeout=STREAM_TIMEOUT, headers=self.deployment.headers
        )


def _require_nginx() -> None:
    if nginx_binary() is not None:
        return
    message = "nginx is not installed (bash scripts/install_nginx.sh)"
    if os.environ.get(REQUIRE_NGINX_ENV) == "1":
        pytest.fail(f"{message}; {REQUIRE_NGINX_ENV}=1 requires it", pytrace=False)
    pytest.skip(message)


@contextlib.contextmanager
def deployed(deployment: Deployment, directory: Path) -> Iterator[Deployed]:
    """Start ``deployment`` with its logs in ``directory``; stopped on every way out."""
    if deployment.nginx:
        _require_nginx()
    with running_server(deployment.kind, directory / "server.log", app=deployment.app) as server:
        if not deployment.nginx:
            yield Deployed(deployment, server, None)
            return
        with running_nginx(server.port, directory / "nginx") as proxy:
            yield Deployed(deployment, server, proxy)


@pytest.fixture(scope="module")
def measurements(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Measurements]:
    collected = Measurements()
    yield collected
    path = tmp_path_factory.getbasetemp() / "deployment_measurements.txt"
    path.write_text("".join(line + "\n" for line in collected.lines))
    print(f"\n{len(collected.lines)} measurement lines written to {path}")


@pytest.fixture(scope="module")
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    """One running deployment for the checks that leave it running."""
    deployment: Deployment = request.param
    directory = tmp_path_factory.mktemp(f"shared-{deployment.kind}")
    with deployed(deployment, directory) as running:
        yield running


# ------------------------------------------------------------------- helpers


def finally_at(log: str, tag: str) -> float | None:
    """When stream ``tag``'s source ran its finally, from the app's log line."""
    for match in _FINALLY_LINE.finditer(log):
        if match[1] == tag:
            return float(match[2])
    return None


def open_streams(running: Deployed, paths: Sequence[str]) -> list[StreamClient]:
    """A stream per path, each read until its first event (the caller closes them)."""
    clients: list[StreamClient] = []
    try:
        for path in paths:
            clients.append(running.client(path))
        deadline = time.monotonic() + STREAM_TIMEOUT
        if not pump_until(clients, lambda: all(has_event(c) for c in clients), deadline):
            waiting = [c.describe() for c in clients if not has_event(c)]
            raise AssertionError(
                f"{len(waiting)} stream(s) got no event within {STREAM_TIMEOUT} s: "
                f"{waiting[:3]}\n{running.log()}"
            )
    except BaseException:
        for client in clients:
            client.close()
        raise
    return clients


@dataclass
class TreeShutdown:
    """What the test saw after signalling a server: when its whole process tree was gone."""

    signalled_at: float
    exited_after: float | None = None

    def watch(self, server: ServerProcess) -> None:
        if self.exited_after is None and not server.live_processes():
            self.exited_after = time.monotonic() - self.signalled_at


def signal_and_watch_tree(
    server: ServerProcess, clients: Sequence[StreamClient], signum: int, limit: float
) -> TreeShutdown:
    """Signal the main process, then read every stream until each has ended and no
    process of the server's session is left, for at most ``limit + OVERTIME`` s."""
    shutdown = TreeShutdown(time.monotonic())
    os.kill(server.pid, signum)
    pump_until(
        clients,
        lambda: shutdown.exited_after is not None and all(c.end is not None for c in clients),
        shutdown.signalled_at + limit + OVERTIME,
        on_tick=lambda: shutdown.watch(server),
    )
    return shutdown


def stream_end_problems(
    clients: Sequence[StreamClient], log: str, tags: Sequence[str], reason: str
) -> list[str]:
    """Each stream ended with its terminating chunk, closed with ``reason``, with the farewell."""
    problems = []
    unclean = [c for c in clients if c.end != "clean"]
    if unclean:
        ends: dict[str, int] = {}
        for c in unclean:
            ends[c.end or "still-open"] = ends.get(c.end or "still-open", 0) + 1
        problems.append(
            f"{len(unclean)}/{len(clients)} streams did not end with the terminating chunk "
            f"(ends: {ends}); first: {unclean[0].describe()}"
        )
    reasons = close_reasons(log)
    wrong = {tag: reasons.get(tag) for tag in tags if reasons.get(tag) != reason}
    if wrong:
        sample = dict(list(wrong.items())[:3])
        problems.append(f"{len(wrong)}/{len(tags)} streams did not close as {reason!r}: {sample}")
    return problems + farewell_problems(clients)


def last_stream_end(clients: Sequence[StreamClient], since: float) -> float | str:
    ended = [c.ended_at - since for c in clients if c.ended_at is not None]
    return max(ended) if len(ended) == len(clients) else f"{len(ended)}-ended"


# --------------------------------------------------------------------- tests


@pytest.mark.parametrize("shared", DEPLOYMENTS, ids=_IDS, indirect=True)
def test_events_arrive_unbuffered(shared: Deployed, measurements: Measurements) -> None:
    """(a) Event 1 reaches the client before the source yields event 2."""
    path = f"/stream?tag={new_tag('unbuffered')}&interval={SOURCE_PAUSE}&stamp=1"
    arrivals, client = time_stamped_events(
        shared.port, path, 2, timeout=STREAM_TIMEOUT, headers=shared.deployment.headers
    )
    assert len(arrivals) == 2, f"{client.describe()}\n{shared.log()}"
    measurements.add(
        shared.deployment.name,
        scenario="unbuffered",
        event1_latency_ms=arrivals[0].latency * 1000,
        event2_latency_ms=arrivals[1].latency * 1000,
    )
    assert client.response.headers.get("content-encoding") is None, client.response.headers
    problem = unbuffered_check(arrivals)
    assert problem is None, problem


@pytest.mark.parametrize("shared", DEPLOYMENTS, ids=_IDS, indirect=True)
def test_client_leaving_ends_the_source_within_1s(
    shared: Deployed, measurements: Measurements
) -> None:
    """(b) The client drops its socket: the source's finally runs within 1 s."""
    tag = new_tag("disconnect")
    client = shared.client(f"/stream?tag={tag}&interval=0.05")
    try:
        got = client.read_until(lambda c: len(c.response.events) >= 2, STREAM_TIMEOUT)
        assert got, f"{client.describe()}\n{shared.log()}"
        left_at = time.monotonic()
    finally:
        client.close()
    deadline = left_at + DISCONNECT_LIMIT + OVERTIME
    ran_at = finally_at(shared.server.log(tail=None), tag)
    while ran_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
        ran_at = finally_at(shared.server.log(tail=None), tag)
    measurements.add(
        shared.deployment.name,
        scenario="disconnect",
        disconnect_to_finally_ms=(ran_at - left_at) * 1000 if ran_at is not None else "never",
    )
    assert ran_at is not None, (
        f"the source's finally had not run {DISCONNECT_LIMIT + OVERTIME} s after the client "
        f"left\n{shared.log()}"
    )
    reason = close_reasons(shared.server.log(tail=None)).get(tag)
    assert reason == "client_disconnected", reason
    assert ran_at - left_at < DISCONNECT_LIMIT


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=_IDS)
def test_sigterm_with_20_streams_ends_each_cleanly_and_the_tree_exits(
    deployment: Deployment, tmp_path: Path, measurements: Measurements
) -> None:
    """(c) SIGTERM to the app server's main process with 20 farewell streams open.

    Behind nginx the app server is signalled (a deploy restarts it, not the
    proxy), and the clients read through nginx.
    """
    limit = FAREWELL_GRACE_SECONDS + EXIT_SLACK
    prefix = new_tag("sigterm")
    tags = [f"{prefix}-{n}" for n in range(STREAMS)]
    with deployed(deployment, tmp_path) as running:
        clients = open_streams(running, [f"/stream?tag={t}&interval=0.1&farewell=1" for t in tags])
        try:
            shutdown = signal_and_watch_tree(running.server, clients, signal.SIGTERM, limit)
        finally:
            for client in clients:
                client.close()
        log = running.server.log(tail=None)
        workers = len(set(_CLOSED_PID.findall(log)))
        measurements.add(
            deployment.name,
            scenario="sigterm-farewell",
            streams=len(clients),
            serving_processes=workers,
            clean_ends=sum(c.end == "clean" for c in clients),
            signal_to_last_stream_end_s=last_stream_end(clients, shutdown.signalled_at),
            signal_to_tree_exit_s=(
                shutdown.exited_after if shutdown.exited_after is not None else "did-not-exit"
            ),
        )
        problems = stream_end_problems(clients, log, tags, deployment.stop_reason)
        if shutdown.exited_after is None:
            left = running.server.live_processes()
            problems.append(f"{len(left)} processes left {limit + OVERTIME:.1f} s after SIGTERM")
        elif shutdown.exited_after > limit:
            problems.append(f"the process tree exited {shutdown.exited_after:.2f} s after SIGTERM")
        assert not problems, "\n".join(problems) + "\n" + running.log()


def _workers(server: ServerProcess) -> set[int]:
    return set(server.live_processes()) - {server.pid}


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_gunicorn_sighup_old_workers_drain_and_new_workers_serve(
    tmp_path: Path, measurements: Measurements
) -> None:
    """gunicorn's rolling restart: SIGHUP to the master starts two new workers and
    stops the old ones gracefully.  Each stream on an old worker ends with the
    goodbye, the farewell and the terminating chunk within the grace plus 2 s;
    the old workers exit; the new ones serve new streams; the master stays."""
    deployment = next(d for d in DEPLOYMENTS if d.name == "gunicorn-uvicorn-worker")
    limit = FAREWELL_GRACE_SECONDS + EXIT_SLACK
    prefix = new_tag("sighup")
    tags = [f"{prefix}-{n}" for n in range(STREAMS // 2)]
    with deployed(deployment, tmp_path) as running:
        server = running.server
        assert _wait_for(lambda: len(_workers(server)) == 2, STREAM_TIMEOUT), running.log()
        old = _workers(server)
        clients = open_streams(running, [f"/stream?tag={t}&interval=0.1&farewell=1" for t in tags])
        try:
            shutdown = TreeShutdown(time.monotonic())
            os.kill(server.pid, signal.SIGHUP)
            pump_until(
                clients,
                lambda: (
                    all(c.end is not None for c in clients) and shutdown.exited_after is not None
                ),
                shutdown.signalled_at + limit + OVERTIME,
                on_tick=lambda: _note_old_workers_gone(shutdown, server, old),
            )
        finally:
            for client in clients:
                client.close()
        replaced = _wait_for(lambda: len(_workers(server) - old) == 2, STREAM_TIMEOUT)
        new = _workers(server) - old
        served_by = _serving_pid(running)
        log = server.log(tail=None)
        measurements.add(
            deployment.name,
            scenario="sighup-farewell",
            streams=len(clients),
            clean_ends=sum(c.end == "clean" for c in clients),
            signal_to_last_stream_end_s=last_stream_end(clients, shutdown.signalled_at),
            signal_to_old_workers_gone_s=(
                shutdown.exited_after if shutdown.exited_after is not None else "still-running"
            ),
            new_workers=len(new),
        )
        problems = stream_end_problems(clients, log, tags, "drained")
        if shutdown.exited_after is None:
            problems.append(f"old workers {old & _workers(server)} still ran after {limit} s")
        elif shutdown.exited_after > limit:
            problems.append(f"the old workers exited {shutdown.exited_after:.2f} s after SIGHUP")
        if not replaced:
            problems.append(f"two new workers did not start: workers now {_workers(server)}")
        if served_by not in new:
            problems.append(f"a new stream was served by pid {served_by}, not by {new}")
        if server.has_exited():
            problems.append(f"the master exited with {server.returncode()}")
        assert not problems, "\n".join(problems) + "\n" + running.log()


def _note_old_workers_gone(shutdown: TreeShutdown, server: ServerProcess, old: set[int]) -> None:
    if shutdown.exited_after is None and not old & _workers(server):
        shutdown.exited_after = time.monotonic() - shutdown.signalled_at


def _serving_pid(running: Deployed) -> int | None:
    """The pid of the worker that serves a new stream (its first event arrives)."""
    tag = new_tag("after-sighup")
    client = running.client(f"/stream?tag={tag}&interval=0.1")
    try:
        if not client.read_until(has_event, STREAM_TIMEOUT):
            return None
    finally:
        client.close()
    deadline = time.monotonic() + DISCONNECT_LIMIT + OVERTIME
    while time.monotonic() < deadline:
        for match in _FINALLY_LINE.finditer(running.server.log(tail=None)):
            if match[1] == tag:
                return int(match[3])
        time.sleep(0.02)
    return None
