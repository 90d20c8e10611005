"""Graceful shutdown and faults on real servers (issue 4).

Each test runs ``tests.realserver_app`` under uvicorn, hypercorn's asyncio
worker and hypercorn's trio worker, started exactly as from a shell (no
adapter, no custom server class), and talks to it over loopback with raw
sockets, so it sees what a browser would: the events, the keep-alive
comments, and whether a body ended with its terminating chunk or was cut.

What happens on the server's side (the source's ``finally``, the close
reason, when the connection reached ``CLOSED``) is reported by the app; see
its docstring.  Times are compared across processes with
``time.monotonic()``, which is CLOCK_MONOTONIC, one clock for the machine.

Measurements are printed as ``MEASURED server=<kind> <name>=<value> ...``
lines (``pytest -s``, or ``-rA`` for passing tests) and collected in
``real_server_measurements.txt`` under pytest's base temporary directory.

Tests that do not stop the server share one per server kind; each shutdown
test starts its own.  Every wait is bounded, and every server process is
killed when its test (or the module, for the shared ones) is done.
"""

from __future__ import annotations

import json
import re
import signal
import statistics
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests._servers import (
    SERVER_KINDS,
    Arrival,
    ServerProcess,
    StreamClient,
    get,
    has_event,
    pump_until,
    read_rss_kib,
    running_server,
    time_stamped_events,
)
from tests.realserver_app import DRAIN_RETRY_MS, FAREWELL_GRACE_SECONDS, SYNC_PAUSE_SECONDS

pytestmark = pytest.mark.real_server

#: What the issue allows between the client closing its socket and CLOSED.
DISCONNECT_LIMIT = 1.0
#: What the issue allows between SIGTERM and the server's exit, past the grace.
EXIT_SLACK = 2.0
#: How long a shutdown test keeps watching after its limit, to measure how
#: late the server is rather than only that it is late.
OVERTIME = 2.0
#: Bound on any single wait for data that should come at once.
STREAM_TIMEOUT = 10.0
#: Bound on a status request to the app.
REQUEST_TIMEOUT = 5.0
#: Allowed growth of the serving process's RSS while a reader stalls.
RSS_LIMIT_KIB = 100 * 1024
#: Allowed time from a source's yield to the client's receipt of the event.
LATENCY_LIMIT = 0.5
#: The pause of the source between events in the buffering test.
SOURCE_PAUSE = 1.0
#: How long after a send timeout's CLOSED the source's finally may take.
STALLED_FINALLY_WAIT = 2.0

_CLOSED_LINE = re.compile(r"realserver_app: CLOSED tag=(\S+) reason=(\S+)")


# ------------------------------------------------------------------ fixtures


class Measurements:
    """Collects ``MEASURED`` lines: printed at once, written to a file at the end."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, server: str, **values: object) -> None:
        fields = " ".join(
            f"{name}={value:.3f}" if isinstance(value, float) else f"{name}={value}"
            for name, value in values.items()
        )
        line = f"MEASURED server={server} {fields}"
        self.lines.append(line)
        print(line, flush=True)


@pytest.fixture(scope="module")
def measurements(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Measurements]:
    collected = Measurements()
    yield collected
    path = tmp_path_factory.getbasetemp() / "real_server_measurements.txt"
    path.write_text("".join(line + "\n" for line in collected.lines))
    print(f"\n{len(collected.lines)} measurement lines written to {path}")


@pytest.fixture(scope="module", params=SERVER_KINDS)
def shared_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server per kind for the tests that leave it running."""
    kind: str = request.param
    log_path = tmp_path_factory.mktemp(f"shared-{kind}") / "server.log"
    with running_server(kind, log_path) as server:
        yield server


# ------------------------------------------------------------------- helpers


def new_tag(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def facts_of(server: ServerProcess, tag: str) -> dict[str, Any]:
    status, body = get(server.port, f"/closed?tag={tag}", timeout=REQUEST_TIMEOUT)
    assert status == 200, body
    facts: dict[str, Any] = json.loads(body)
    return facts


def wait_for_facts(
    server: ServerProcess, tag: str, keys: Sequence[str], timeout: float
) -> dict[str, Any]:
    """Poll ``/closed`` until stream ``tag`` has recorded every one of ``keys``."""
    deadline = time.monotonic() + timeout
    while True:
        facts = facts_of(server, tag)
        if all(key in facts for key in keys):
            return facts
        if time.monotonic() > deadline:
            missing = [key for key in keys if key not in facts]
            raise AssertionError(
                f"{server.kind}: stream {tag} did not record {missing} within {timeout} s "
                f"(recorded {facts}):\n{server.log()}"
            )
        time.sleep(0.02)


def open_streams(server: ServerProcess, paths: Sequence[str], clients: list[StreamClient]) -> None:
    """Open a stream per path, appending to ``clients`` (the caller closes them),
    and wait until each has received its first event."""
    for path in paths:
        clients.append(StreamClient(server.port, path, timeout=STREAM_TIMEOUT))
    deadline = time.monotonic() + STREAM_TIMEOUT
    if not pump_until(clients, lambda: all(has_event(c) for c in clients), deadline):
        waiting = [c.describe() for c in clients if not has_event(c)]
        raise AssertionError(
            f"{server.kind}: {len(waiting)} stream(s) got no event within {STREAM_TIMEOUT} s: "
            f"{waiting[:3]}\n{server.log()}"
        )


class Shutdown:
    """What the test saw after signalling the server."""

    def __init__(self, signalled_at: float) -> None:
        self.signalled_at = signalled_at
        self.exited_after: float | None = None

    def watch(self, server: ServerProcess) -> None:
        if self.exited_after is None and server.has_exited():
            self.exited_after = time.monotonic() - self.signalled_at


def signal_and_watch(
    server: ServerProcess,
    clients: Sequence[StreamClient],
    limit: float,
    signum: signal.Signals = signal.SIGTERM,
) -> Shutdown:
    """Signal the main process (SIGTERM unless told), then read every stream until
    it ends and the server exits, for at most ``limit + OVERTIME`` seconds."""
    shutdown = Shutdown(time.monotonic())
    server.signal(signum)
    pump_until(
        clients,
        lambda: shutdown.exited_after is not None and all(c.end is not None for c in clients),
        shutdown.signalled_at + limit + OVERTIME,
        on_tick=lambda: shutdown.watch(server),
    )
    return shutdown


def close_reasons(log: str) -> dict[str, str]:
    """The close reason of every stream, from the app's CLOSED lines in the server log."""
    return {match[1]: match[2] for match in _CLOSED_LINE.finditer(log)}


def shutdown_problems(
    server: ServerProcess,
    clients: Sequence[StreamClient],
    shutdown: Shutdown,
    limit: float,
    tags: Sequence[str],
    expected_reason: str,
) -> list[str]:
    """Every way the shutdown fell short of the issue, for one assertion message."""
    problems = []
    unclean = [c for c in clients if c.end != "clean"]
    if unclean:
        ends: dict[str, int] = {}
        for c in unclean:
            how = c.end or "still-open"
            ends[how] = ends.get(how, 0) + 1
        problems.append(
            f"{len(unclean)}/{len(clients)} streams did not end with the terminating chunk "
            f"(ends: {ends}); first: {unclean[0].describe()}"
        )
    if shutdown.exited_after is None:
        problems.append(f"the server had not exited {limit + OVERTIME:.1f} s after SIGTERM")
    elif shutdown.exited_after > limit:
        problems.append(f"the server exited {shutdown.exited_after:.2f} s after SIGTERM")
    code = server.returncode()
    # uvicorn (since 0.29) re-raises the signal it captured once it has shut
    # down, so a graceful exit reads as -SIGTERM there, and after SIGINT as
    # the KeyboardInterrupt exit status.
    if code not in (None, 0, -signal.SIGTERM, -signal.SIGINT, 1, 128 + signal.SIGINT):
        problems.append(f"the server exited with status {code}")
    reasons = close_reasons(server.log(tail=None))
    wrong = {tag: reasons.get(tag) for tag in tags if reasons.get(tag) != expected_reason}
    if wrong:
        sample = dict(list(wrong.items())[:3])
        problems.append(
            f"{len(wrong)}/{len(tags)} streams did not close as {expected_reason!r}: {sample}"
        )
    return problems


def report_shutdown(
    measurements: Measurements,
    server: ServerProcess,
    scenario: str,
    clients: Sequence[StreamClient],
    shutdown: Shutdown,
) -> None:
    ended = [c.ended_at - shutdown.signalled_at for c in clients if c.ended_at is not None]
    measurements.add(
        server.kind,
        scenario=scenario,
        streams=len(clients),
        clean_ends=sum(c.end == "clean" for c in clients),
        signal_to_exit_s=(
            shutdown.exited_after if shutdown.exited_after is not None else "did-not-exit"
        ),
        signal_to_last_stream_end_s=(
            max(ended) if len(ended) == len(clients) else f"{len(ended)}-ended"
        ),
    )


def unbuffered_check(arrivals: Sequence[Arrival]) -> str | None:
    """What is wrong with the arrivals of two stamped events ``SOURCE_PAUSE`` apart, if anything.

    Event 1 must arrive before the source yields event 2 (nothing held it
    back waiting for more data), and each within ``LATENCY_LIMIT``.
    """
    first, second = arrivals[0], arrivals[1]
    if first.arrived_at >= second.yielded_at:
        late = first.arrived_at - second.yielded_at
        return f"event 1 arrived {late:.3f} s after the source yielded event 2"
    worst = max(arrival.latency for arrival in arrivals)
    if worst >= LATENCY_LIMIT:
        return f"an event took {worst:.3f} s from the source to the client"
    return None


# --------------------------------------------------------------------- tests


def test_events_arrive_unbuffered(shared_server: ServerProcess, measurements: Measurements) -> None:
    """Event 1 reaches the client before the source yields event 2."""
    server = shared_server
    path = f"/stream?tag={new_tag('unbuffered')}&interval={SOURCE_PAUSE}&stamp=1"
    arrivals, client = time_stamped_events(server.port, path, 2, timeout=STREAM_TIMEOUT)
    assert len(arrivals) == 2, f"{client.describe()}\n{server.log()}"
    measurements.add(
        server.kind,
        scenario="unbuffered",
        event1_latency_ms=arrivals[0].latency * 1000,
        event2_latency_ms=arrivals[1].latency * 1000,
    )
    problem = unbuffered_check(arrivals)
    assert problem is None, problem


def test_client_close_mid_stream_closes_within_1s(
    shared_server: ServerProcess, measurements: Measurements
) -> None:
    """The client drops its socket: the source's finally runs and CLOSED follows at once."""
    server = shared_server
    tag = new_tag("disconnect")
    client = StreamClient(server.port, f"/stream?tag={tag}&interval=0.05", timeout=STREAM_TIMEOUT)
    try:
        got = client.read_until(lambda c: len(c.response.events) >= 2, STREAM_TIMEOUT)
        assert got, f"{client.describe()}\n{server.log()}"
        closed_by_client_at = time.monotonic()
    finally:
        client.close()

    facts = wait_for_facts(server, tag, ("closed_at", "finally_at"), timeout=5.0)
    to_closed = facts["closed_at"] - closed_by_client_at
    to_finally = facts["finally_at"] - closed_by_client_at
    measurements.add(
        server.kind,
        scenario="disconnect",
        disconnect_to_closed_ms=to_closed * 1000,
        disconnect_to_finally_ms=to_finally * 1000,
    )
    assert facts["close_reason"] == "client_disconnected", facts
    assert to_closed < DISCONNECT_LIMIT, facts
    assert to_finally < DISCONNECT_LIMIT, facts


def test_stalled_reader_closes_on_send_timeout_with_bounded_memory(
    shared_server: ServerProcess, measurements: Measurements
) -> None:
    """A client that connects and never reads, fed 256 KiB events as fast as they
    can be made: CLOSED with ``send_timeout``, the source's finally has run while
    the client is still connected, and the serving process's memory stays flat."""
    server = shared_server
    status, body = get(server.port, "/memory", timeout=REQUEST_TIMEOUT)
    assert status == 200, body
    pid: int = json.loads(body)["pid"]  # the process that serves: hypercorn's worker
    rss_before = read_rss_kib(pid)
    rss_peak = rss_before
    tag = new_tag("stalled")
    path = f"/stream?tag={tag}&interval=0&size={256 * 1024}&send_timeout=1"
    # A small receive buffer, set before connecting, keeps the kernel from
    # soaking up megabytes on the client's side before the server blocks.
    client = StreamClient(server.port, path, timeout=STREAM_TIMEOUT, rcvbuf=4096)
    try:
        # CLOSED should come about 1 s after the first send that blocks; the
        # source's finally right after it.  Watch memory all along.
        deadline = time.monotonic() + 15.0
        finally_deadline: float | None = None
        while True:
            rss_peak = max(rss_peak, read_rss_kib(pid))
            facts = facts_of(server, tag)
            if "finally_at" in facts and "closed_at" in facts:
                break
            now = time.monotonic()
            if "closed_at" in facts and finally_deadline is None:
                finally_deadline = now + STALLED_FINALLY_WAIT
            if now > deadline or (finally_deadline is not None and now > finally_deadline):
                break
            time.sleep(0.05)
    finally:
        client_closed_at = time.monotonic()
        client.close()

    growth = rss_peak - rss_before
    closed_after = facts["closed_at"] - facts["opened_at"] if "closed_at" in facts else None
    finally_while_connected = "finally_at" in facts
    if not finally_while_connected and "closed_at" in facts:
        # Diagnose: does the source's finally wait for the client to go away?
        facts = wait_for_facts(server, tag, ("finally_at",), timeout=5.0)
    measurements.add(
        server.kind,
        scenario="stalled-reader",
        open_to_closed_s=closed_after if closed_after is not None else "not-closed",
        source_finally_after_closed_s=(
            facts["finally_at"] - facts["closed_at"] if "finally_at" in facts else "never"
        ),
        finally_before_client_left=finally_while_connected,
        events_made=facts.get("events"),
        rss_before_kib=rss_before,
        rss_growth_kib=growth,
    )
    assert "closed_at" in facts, f"not CLOSED within 15 s: {facts}\n{server.log()}"
    assert facts["close_reason"] == "send_timeout", facts
    assert growth < RSS_LIMIT_KIB, f"RSS grew by {growth} KiB"
    assert finally_while_connected, (
        f"CLOSED ({facts['close_reason']}) {closed_after:.2f} s after the request, but the "
        f"source's finally had not run {STALLED_FINALLY_WAIT} s later; it ran "
        f"{facts['finally_at'] - client_closed_at:.3f} s after the stalled client closed "
        "its socket: the response stayed blocked in the server's send()"
    )


def test_sync_source_blocked_in_sleep_still_sees_the_disconnect(
    shared_server: ServerProcess, measurements: Measurements
) -> None:
    """A plain generator sleeping 3 s per item: the disconnect closes the stream at once;
    the generator's finally runs when its sleep returns."""
    server = shared_server
    tag = new_tag("sync-disconnect")
    client = StreamClient(server.port, f"/sync?tag={tag}", timeout=STREAM_TIMEOUT)
    try:
        assert client.read_until(has_event, STREAM_TIMEOUT), client.describe()
        closed_by_client_at = time.monotonic()
    finally:
        client.close()

    facts = wait_for_facts(server, tag, ("closed_at",), timeout=5.0)
    to_closed = facts["closed_at"] - closed_by_client_at
    facts = wait_for_facts(server, tag, ("finally_at",), timeout=SYNC_PAUSE_SECONDS + 5.0)
    to_finally = facts["finally_at"] - closed_by_client_at
    measurements.add(
        server.kind,
        scenario="sync-disconnect",
        disconnect_to_closed_ms=to_closed * 1000,
        disconnect_to_finally_ms=to_finally * 1000,
    )
    assert facts["close_reason"] == "client_disconnected", facts
    assert to_closed < DISCONNECT_LIMIT, facts
    # The worker thread is abandoned mid-sleep and closes the generator itself.
    assert to_finally < SYNC_PAUSE_SECONDS + EXIT_SLACK, facts


@pytest.mark.parametrize("kind", SERVER_KINDS)
@pytest.mark.parametrize("variant", ["farewell", "plain"])
def test_sigterm_drains_20_streams_and_the_server_exits(
    kind: str, variant: str, tmp_path: Path, measurements: Measurements
) -> None:
    """SIGTERM to the main process with 20 open streams.

    ``farewell``: each source waits on its ``shutdown_event`` (grace 1 s),
    yields ``goodbye`` and returns; ``farewell_factory`` and ``drain_retry``
    add a last ``farewell`` event with a ``retry:``.  ``plain``: sse-starlette
    style, no shutdown_event and the default grace of 0.
    """
    farewell = variant == "farewell"
    grace = FAREWELL_GRACE_SECONDS if farewell else 0.0
    limit = grace + EXIT_SLACK
    prefix = new_tag(f"sigterm-{variant}")
    tags = [f"{prefix}-{n}" for n in range(20)]
    extra = "&farewell=1" if farewell else ""
    clients: list[StreamClient] = []
    with running_server(kind, tmp_path / "server.log") as server:
        try:
            open_streams(
                server, [f"/stream?tag={tag}&interval=0.1{extra}" for tag in tags], clients
            )
            shutdown = signal_and_watch(server, clients, limit)
        finally:
            for client in clients:
                client.close()
        report_shutdown(measurements, server, f"sigterm-{variant}", clients, shutdown)
        expected = "drained" if farewell else "shutdown_forced"
        problems = shutdown_problems(server, clients, shutdown, limit, tags, expected)
        if farewell:
            problems += farewell_problems(clients)
        assert not problems, "\n".join(problems) + f"\n--- {kind} log ---\n{server.log()}"


def farewell_problems(clients: Sequence[StreamClient]) -> list[str]:
    """Each stream's goodbye from the source, then the factory's farewell, last, with a retry."""
    low, high = DRAIN_RETRY_MS
    bad = []
    for client in clients:
        events = client.response.events
        names = [event.event for event in events]
        last = events[-1] if events else None
        ok = (
            "goodbye" in names
            and last is not None
            and last.event == "farewell"
            and names.count("farewell") == 1
            and names.index("goodbye") < len(names) - 1
            and last.retry is not None
            and low <= last.retry <= high
            and b"\nretry:" in bytes(client.response.body).replace(b"\r", b"\n")
        )
        if not ok:
            bad.append(client)
    if not bad:
        return []
    return [
        f"{len(bad)}/{len(clients)} streams lacked goodbye then one farewell with retry in "
        f"[{low}, {high}] as the last event; first: {bad[0].describe()}"
    ]


@pytest.mark.parametrize("kind", SERVER_KINDS)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_sync_sources_blocked_in_sleep(
    kind: str, signum: signal.Signals, tmp_path: Path, measurements: Measurements
) -> None:
    """Plain generators blocked in time.sleep(3): the server still drains and exits
    well before their sleeps end (grace 0, so within about 1 s), on SIGTERM and on
    SIGINT (Ctrl-C)."""
    limit = 1.0 + 0.5  # "~1 s + grace", with the grace at its default of 0
    prefix = new_tag("sigterm-sync")
    tags = [f"{prefix}-{n}" for n in range(3)]
    clients: list[StreamClient] = []
    with running_server(kind, tmp_path / "server.log") as server:
        try:
            open_streams(server, [f"/sync?tag={tag}" for tag in tags], clients)
            shutdown = signal_and_watch(server, clients, limit, signum)
        finally:
            for client in clients:
                client.close()
        scenario = f"{signum.name.lower()}-sync"
        report_shutdown(measurements, server, scenario, clients, shutdown)
        problems = shutdown_problems(server, clients, shutdown, limit, tags, "shutdown_forced")
        assert not problems, "\n".join(problems) + f"\n--- {kind} log ---\n{server.log()}"


class HealthProbe(threading.Thread):
    """Times ``count`` requests to ``/health``, one every ``every`` seconds."""

    def __init__(self, port: int, count: int, every: float) -> None:
        super().__init__(name="health-probe", daemon=True)
        self.port = port
        self.count = count
        self.every = every
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        for _ in range(self.count):
            started = time.monotonic()
            try:
                status, body = get(self.port, "/health", timeout=REQUEST_TIMEOUT)
            except Exception as exc:
                self.errors.append(repr(exc))
            else:
                self.latencies.append(time.monotonic() - started)
                if status != 200 or body != b"ok":
                    self.errors.append(f"{status} {body!r}")
            time.sleep(max(0.0, started + self.every - time.monotonic()))


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_500_streams_ping_while_health_answers_then_all_end_cleanly(
    kind: str, tmp_path: Path, measurements: Measurements
) -> None:
    """500 idle streams with ping=1: every one gets a keep-alive comment, /health
    answers promptly meanwhile, and on SIGTERM every one ends with the terminating chunk."""
    streams, batch = 500, 50
    prefix = new_tag("many")
    tags = [f"{prefix}-{n}" for n in range(streams)]
    clients: list[StreamClient] = []
    probe = HealthProbe(0, 0, 0.0)
    with running_server(kind, tmp_path / "server.log") as server:
        try:
            started = time.monotonic()
            # In batches, so that hypercorn's accept backlog (100) never overflows.
            for first in range(0, streams, batch):
                paths = [
                    f"/stream?tag={tag}&interval=3600&ping=1" for tag in tags[first : first + batch]
                ]
                open_streams(server, paths, clients)
            connected_after = time.monotonic() - started
            all_open_at = time.monotonic()

            probe = HealthProbe(server.port, count=20, every=0.1)
            probe.start()
            pump_until(
                clients,
                lambda: all(c.first_ping_at is not None for c in clients) and not probe.is_alive(),
                all_open_at + 8.0,
            )
            ping_times = [c.first_ping_at for c in clients if c.first_ping_at is not None]
            all_pinged_after = max(ping_times) - all_open_at if ping_times else float("nan")
            probe.join(timeout=REQUEST_TIMEOUT * 2)

            shutdown = signal_and_watch(server, clients, limit=5.0)
        finally:
            for client in clients:
                client.close()
            probe.join(timeout=REQUEST_TIMEOUT * 2)

        latencies = sorted(probe.latencies)
        median = statistics.median(latencies) if latencies else float("nan")
        measurements.add(
            kind,
            scenario="500-streams",
            connect_all_s=connected_after,
            pinged=len(ping_times),
            all_pinged_after_open_s=all_pinged_after,
            health_requests=len(latencies),
            health_median_ms=median * 1000,
            health_p90_ms=latencies[int(len(latencies) * 0.9)] * 1000 if latencies else "n/a",
            health_max_ms=latencies[-1] * 1000 if latencies else "n/a",
        )
        report_shutdown(measurements, server, "sigterm-500", clients, shutdown)

        problems = []
        if len(ping_times) < streams:
            problems.append(f"{streams - len(ping_times)} streams got no ping within 8 s")
        if probe.errors:
            problems.append(f"/health failed {len(probe.errors)} times: {probe.errors[:3]}")
        if not median < 0.1:
            problems.append(f"/health median latency {median * 1000:.1f} ms")
        problems += shutdown_problems(server, clients, shutdown, 5.0, tags, "shutdown_forced")
        assert not problems, "\n".join(problems) + f"\n--- {kind} log (tail) ---\n{server.log()}"
