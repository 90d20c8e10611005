"""The sections of ``python -m bench.scale``, their repetitions and the tables.

Organisation: for each repetition, each server (``uvicorn``, then
``hypercorn-trio`` in the full run) and each implementation, one fresh
server process runs every section in turn: idle (first, so that its RSS
delta starts from a fresh process), churn, broadcast.  Each section starts
its own load-client processes (``clients`` of them, each connecting from 16
127.0.0.x addresses of its own) and stops them before the next.  Server
CPU is read from ``/proc/<pid>`` before and after each timed window; client
CPU is each client's own ``time.process_time()``.

Ratios are taken within one repetition (``impl ÷ raw`` of the same
repetition); the table shows medians over repetitions and, for sse_sm, the
range of its ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

from bench.scale import IMPLS, REDIS_ENV, raise_nofile
from bench.scale.procs import Clients, Server, running_redis

__all__ = ("FULL", "QUICK", "Settings", "main")

SECTIONS: Final = ("idle", "churn", "broadcast", "cross", "storm")
#: What ``--quick`` runs unless ``--sections`` says otherwise.
QUICK_SECTIONS: Final = ("idle", "churn", "broadcast")
#: The implementations each server runs (the queue patterns need asyncio).
SERVER_IMPLS: Final[dict[str, tuple[str, ...]]] = {
    "uvicorn": IMPLS,
    "hypercorn-trio": ("raw", "sse_sm"),
}
#: A ramp step is saturated when fewer than this share of the offered deliveries arrive.
SATURATED: Final = 0.8
#: Ramp steps at most (the offered rate doubles each step).
MAX_STEPS: Final = 9
#: A section starts when the server used less than this share of a core for 0.25 s.
_QUIET: Final = 0.05
#: Events the first ramp step publishes at least (its offered rate is raised to that).
_MIN_STEP_EVENTS: Final = 5
#: Seconds between two looks at the clients' counts while waiting for a step's last events.
_DRAIN_POLL: Final = 0.005
#: A figure is "limited by" a process whose CPU was at least this share of one core.
BUSY: Final = 0.85
#: Descriptors a server keeps for itself beside its streams.
_SPARE_FDS: Final = 200
#: ... or by contention when a process waited for a CPU this share of the time.
CONTENDED: Final = 0.2


@dataclass(frozen=True)
class Settings:
    name: str
    reps: int
    servers: tuple[str, ...]
    clients: int
    idle_streams: int
    #: Seconds the idle streams are watched (ping=15: a window over 15 s sees one ping each).
    idle_window: float
    open_concurrency: int
    churn_seconds: float
    churn_concurrency: int
    sizes: tuple[int, ...]
    #: Offered deliveries/s of the first ramp step.
    ramp_start: float
    step_seconds: float
    latency_seconds: float
    #: ... but long enough for this many events, up to ``latency_limit`` seconds.
    latency_events: int
    latency_limit: float
    #: One broadcast stream in this many records latencies.
    sample_every: int
    #: The trio row's sizes: hypercorn's trio worker is several times slower (README).
    trio_idle_streams: int
    trio_sizes: tuple[int, ...]
    #: Reconnect storm: streams on worker A, and events/s the publisher on B sends throughout.
    storm_streams: int
    storm_rate: float


FULL: Final = Settings(
    name="full",
    reps=1,
    servers=("uvicorn", "hypercorn-trio"),
    clients=2,
    idle_streams=20_000,
    idle_window=16.0,
    open_concurrency=512,
    churn_seconds=4.0,
    churn_concurrency=64,
    sizes=(1_000, 10_000),
    ramp_start=10_000.0,
    step_seconds=1.0,
    latency_seconds=2.0,
    latency_events=20,
    latency_limit=5.0,
    sample_every=4,
    trio_idle_streams=5_000,
    trio_sizes=(1_000,),
    storm_streams=2_000,
    storm_rate=5.0,
)
QUICK: Final = Settings(
    name="quick",
    reps=1,
    servers=("uvicorn",),
    clients=2,
    idle_streams=2_000,
    idle_window=1.0,
    open_concurrency=256,
    churn_seconds=1.0,
    churn_concurrency=32,
    sizes=(200, 1_000),
    ramp_start=10_000.0,
    step_seconds=0.25,
    latency_seconds=0.5,
    latency_events=10,
    latency_limit=1.0,
    sample_every=4,
    trio_idle_streams=500,
    trio_sizes=(200,),
    storm_streams=200,
    storm_rate=5.0,
)

Case = tuple[str, str, str]  # section, server, case


@dataclass
class Results:
    """case -> metric -> impl -> rep -> value; and what limited each case."""

    values: dict[Case, dict[str, dict[str, dict[int, float]]]] = field(default_factory=dict)
    limits: dict[Case, dict[str, str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, case: Case, impl: str, rep: int, metrics: dict[str, float]) -> None:
        by_metric = self.values.setdefault(case, {})
        for metric, value in metrics.items():
            by_metric.setdefault(metric, {}).setdefault(impl, {})[rep] = value

    def limit(self, case: Case, impl: str, text: str) -> None:
        self.limits.setdefault(case, {})[impl] = text


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def _errors(answers: list[dict[str, Any]]) -> str:
    """The clients' failed connections by cause, e.g. ``EADDRNOTAVAIL 12`` (out of ports)."""
    causes: dict[str, int] = {}
    for answer in answers:
        for cause, count in answer.get("errors", {}).items():
            causes[cause] = causes.get(cause, 0) + count
    return ", ".join(f"{cause} {count}" for cause, count in sorted(causes.items())) or "no cause"


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Usage:
    """CPU time and time spent waiting for a CPU over one window, as shares of its wall time.

    The waits come from ``schedstat`` (time runnable but not running): a large
    one means other processes held the cores, whatever this run was doing.
    """

    server_cpu: float
    server_wait: float
    clients_cpu: tuple[float, ...]
    clients_wait: tuple[float, ...]


def _limited_by(usage: Usage) -> str:
    """What held a figure back: a process that wanted a whole core, or contention.

    A process "wanted a core" when its CPU time plus its time waiting for a
    CPU covered at least ``BUSY`` of the window; "shared" says it waited for
    a CPU at least ``CONTENDED`` of the window (other processes had the cores).
    """
    busiest = max(range(len(usage.clients_cpu)), key=lambda k: usage.clients_cpu[k], default=-1)
    client_cpu = usage.clients_cpu[busiest] if busiest >= 0 else 0.0
    client_wait = usage.clients_wait[busiest] if busiest >= 0 else 0.0
    if usage.server_cpu + usage.server_wait >= BUSY:
        verdict = "server CPU" + (" (shared)" if usage.server_wait >= CONTENDED else "")
    elif client_cpu + client_wait >= BUSY:
        verdict = "client CPU" + (" (shared)" if client_wait >= CONTENDED else "")
    elif max((usage.server_wait, *usage.clients_wait)) >= CONTENDED:
        verdict = "CPU contention"
    else:
        verdict = "neither CPU"
    return (
        f"{verdict}: server {usage.server_cpu:.0%} CPU + {usage.server_wait:.0%} waiting, "
        f"busiest client {client_cpu:.0%} + {client_wait:.0%}"
    )


class _Window:
    """Server CPU and wait from now until :meth:`usage`; with several servers, the busiest."""

    def __init__(self, servers: Server | list[Server]) -> None:
        self.servers = servers if isinstance(servers, list) else [servers]
        self.cpu = [server.cpu() for server in self.servers]
        self.wait = [server.run_wait() for server in self.servers]
        self.started = time.perf_counter()

    def usage(
        self, clients_cpu: list[float], clients_wait: list[float], wall: float | None = None
    ) -> Usage:
        """Shares of the wall time; client values are seconds over the same window."""
        elapsed = time.perf_counter() - self.started if wall is None else wall
        cpu = [
            (server.cpu() - before) / elapsed
            for server, before in zip(self.servers, self.cpu, strict=True)
        ]
        wait = [
            (server.run_wait() - before) / elapsed
            for server, before in zip(self.servers, self.wait, strict=True)
        ]
        busiest = max(range(len(cpu)), key=lambda k: cpu[k] + wait[k])
        return Usage(
            server_cpu=cpu[busiest],
            server_wait=wait[busiest],
            clients_cpu=tuple(value / elapsed for value in clients_cpu),
            clients_wait=tuple(value / elapsed for value in clients_wait),
        )


# ------------------------------------------------------------------ idle


def run_idle(server: Server, impl: str, settings: Settings) -> tuple[dict[str, float], str]:
    """Open ``idle_streams`` idle streams; RSS per stream, time to open, CPU while idle.

    RSS is read before the first stream opens and again at the end of the
    idle window; the difference is divided by the number of streams.
    """
    streams = settings.idle_streams
    with Clients(settings.clients, server.port, f"/{impl}/idle") as clients:
        # One stream opened and closed first, so that what the first stream of
        # a path costs once (lazy imports, route set-up) is not counted per stream.
        base_fds = server.fds()
        clients.command(["open 1 1"] + ["open 0 1"] * (len(clients) - 1), 30.0)
        clients.broadcast("close", 30.0)
        server.wait_fds_below(base_fds + 1, 10.0)
        rss_before = server.rss()
        lines = [f"open {n} {settings.open_concurrency}" for n in _split(streams, len(clients))]
        opening = _Window(server)
        opened = clients.command(lines, 60.0 + streams / 100)
        open_s = max(answer["seconds"] for answer in opened)
        open_usage = opening.usage(
            [answer["cpu"] for answer in opened], [answer["wait"] for answer in opened], open_s
        )
        failed = sum(answer["failed"] for answer in opened)
        if failed:
            raise RuntimeError(
                f"{failed} of {streams} idle streams failed to open: {_errors(opened)}"
            )
        before = clients.broadcast("count", 30.0)
        idling = _Window(server)
        time.sleep(settings.idle_window)
        after = clients.broadcast("count", 30.0)
        idle_usage = idling.usage(
            [a["cpu"] - b["cpu"] for a, b in zip(after, before, strict=True)],
            [a["wait"] - b["wait"] for a, b in zip(after, before, strict=True)],
        )
        rss_after = server.rss()
        still_open = sum(answer["open"] for answer in after)
        if still_open != streams:
            raise RuntimeError(f"only {still_open} of {streams} idle streams stayed open")
        clients.broadcast("close", 30.0)
    metrics = {
        "rss": (rss_after - rss_before) / streams,
        "open_s": open_s,
        "idle_cpu": idle_usage.server_cpu,
    }
    return metrics, f"open: {_limited_by(open_usage)}; idle: {_limited_by(idle_usage)}"


# ------------------------------------------------------------------ churn


def run_churn(server: Server, impl: str, settings: Settings) -> tuple[dict[str, float], str]:
    """Streams opened, served a first event and closed by the client, per server CPU second."""
    with Clients(settings.clients, server.port, f"/{impl}/churn") as clients:
        window = _Window(server)
        line = f"churn {settings.churn_seconds} {settings.churn_concurrency}"
        answers = clients.broadcast(line, settings.churn_seconds + 60.0)
        usage = window.usage([a["cpu"] for a in answers], [a["wait"] for a in answers])
        wall = time.perf_counter() - window.started
    completed = sum(answer["completed"] for answer in answers)
    failed = sum(answer["failed"] for answer in answers)
    cpu = usage.server_cpu * wall
    if completed == 0 or cpu <= 0:
        raise RuntimeError(f"churn: {completed} completed, {failed} failed: {_errors(answers)}")
    metrics = {
        "churn_per_cpu_s": completed / cpu,
        "churn_per_s": completed / wall,
        "churn_failed": float(failed),
    }
    limit = _limited_by(usage)
    if failed:
        limit += f"; failed connections: {_errors(answers)}"
    return metrics, limit


# ------------------------------------------------------------------ broadcast


@dataclass
class _Totals:
    events: int
    cpu: list[float]
    wait: list[float]
    lost: int
    #: When the most recent read with events arrived, on any client (monotonic ns).
    last_event_ns: int


class _Broadcast:
    """Subscribers of one implementation on one or more servers; the first one publishes."""

    def __init__(self, servers: list[Server], groups: list[Clients], impl: str) -> None:
        self.servers = servers
        self.groups = groups
        self.impl = impl
        #: Events the clients should have counted once everything published has arrived.
        self.expected = 0
        self.latencies: list[int] = []

    def totals(self) -> _Totals:
        answers = [answer for group in self.groups for answer in group.broadcast("count", 30.0)]
        for answer in answers:
            self.latencies.extend(answer["latencies_us"])
        return _Totals(
            events=sum(answer["events"] for answer in answers),
            cpu=[answer["cpu"] for answer in answers],
            wait=[answer["wait"] for answer in answers],
            lost=sum(answer["lost"] for answer in answers),
            last_event_ns=max(answer["last_event_ns"] for answer in answers),
        )

    def subscribers(self) -> int:
        return sum(int(server.get(f"/{self.impl}/count", 10.0)) for server in self.servers)

    def open(self, more: int, concurrency: int) -> None:
        """``more`` subscribers, spread over every client process of every group."""
        shares = iter(_split(more, sum(len(group) for group in self.groups)))
        for group in self.groups:
            lines = [f"open {next(shares)} {concurrency}" for _ in range(len(group))]
            answers = group.command(lines, 60.0 + more / 100)
            failed = sum(answer["failed"] for answer in answers)
            if failed:
                raise RuntimeError(f"{failed} subscribers failed to open: {_errors(answers)}")

    def wait_subscribers(self, count: int, limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            now = self.subscribers()
            if now == count:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.impl}: {now} subscribers, expected {count}")

    def step(self, rate: float, seconds: float, tag: str, size: int) -> _Step:
        """Publish at ``rate`` events/s for ``seconds``, then wait until everything arrived.

        The deliveries/s are the step's deliveries divided by the time from
        the publish request to the last delivery (the clients note when
        each read with events arrived): unsaturated, that is about the
        offered rate; saturated, the backlog drains after the publisher
        stops and the quotient is the rate the server kept up.  CPU usage
        covers the same span.
        """
        before = self.totals()
        window = _Window(self.servers)
        started_ns = time.monotonic_ns()
        query = f"rate={rate:.6f}&seconds={seconds}&tag={tag}"
        path = f"/{self.impl}/publish?{query}"
        answer = json.loads(self.servers[0].get(path, seconds + 60.0))
        published = int(answer["published"])
        self.expected += published * size
        missing, after = self.drain()
        usage = window.usage(
            [a - b for a, b in zip(after.cpu, before.cpu, strict=True)],
            [a - b for a, b in zip(after.wait, before.wait, strict=True)],
        )
        span = max(after.last_event_ns - started_ns, 1) / 1e9
        return _Step((after.events - before.events) / span, published, usage, missing)

    def drain(self, limit: float = 30.0) -> tuple[int, _Totals]:
        """Until every published event has arrived, or nothing moved for 3 s (bounded).

        Returns the events still missing, and the clients' last totals.
        """
        deadline = time.monotonic() + limit
        last, last_change = -1, time.monotonic()
        totals = self.totals()
        while totals.events < self.expected and time.monotonic() < deadline:
            if totals.events != last:
                last, last_change = totals.events, time.monotonic()
            elif time.monotonic() - last_change > 3.0:
                break
            time.sleep(_DRAIN_POLL)
            totals = self.totals()
        return self.expected - totals.events, totals


@dataclass(frozen=True)
class _Step:
    delivered_per_s: float
    published: int
    usage: Usage
    missing: int


def _percentile(ordered: list[int], share: float) -> float:
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * share))])


def measure_broadcast(
    broadcast: _Broadcast, size: int, settings: Settings
) -> tuple[dict[str, float], str]:
    """Ramp the offered rate to saturation, then latency at half the saturated rate.

    The offered rate doubles from ``ramp_start`` until a step is saturated;
    then one step halfway between the last unsaturated rate and it (x0.75)
    narrows the figure down.  The saturation is the best step's deliveries/s.
    """
    best: tuple[float, Usage] | None = None
    missing = 0

    def step(offered: float) -> bool:
        nonlocal best, missing
        # What the publisher will try to publish (it rounds, and publishes at least one).
        planned = max(1, round(offered / size * settings.step_seconds))
        result = broadcast.step(offered / size, settings.step_seconds, "r", size)
        delivered, published, usage = result.delivered_per_s, result.published, result.usage
        missing += result.missing
        _progress(
            f"    offered {offered / 1e3:,.1f} k/s: delivered {delivered / 1e3:,.1f} k/s, "
            f"published {published}/{planned}, server CPU {usage.server_cpu:.0%}"
        )
        if best is None or delivered > best[0]:
            best = (delivered, usage)
        return published < 0.9 * planned or delivered < SATURATED * offered

    # At least a few events per step, or one event more or less decides the step.
    start = max(settings.ramp_start, size * _MIN_STEP_EVENTS / settings.step_seconds)
    offered = start
    saturated = False
    for _ in range(MAX_STEPS):
        saturated = step(offered)
        if saturated:
            break
        offered *= 2
    if saturated and offered > start:
        step(offered * 0.75)
    assert best is not None
    saturation, saturation_usage = best
    rate = saturation / 2 / size
    seconds = max(
        settings.latency_seconds, min(settings.latency_limit, settings.latency_events / rate)
    )
    broadcast.latencies.clear()
    half = broadcast.step(rate, seconds, "l", size)
    missing += half.missing
    half_usage = half.usage
    broadcast.totals()  # collects the last latencies
    latencies = sorted(broadcast.latencies)
    if not latencies:
        raise RuntimeError("no latency was recorded")
    metrics = {
        "saturation": saturation,
        "saturated": 1.0 if saturated else 0.0,
        "p50_ms": _percentile(latencies, 0.5) / 1e3,
        "p99_ms": _percentile(latencies, 0.99) / 1e3,
        "max_ms": latencies[-1] / 1e3,
        "missing": float(missing),
    }
    limit = "saturation: " + _limited_by(saturation_usage)
    if not saturated:
        limit += f" (not saturated after {MAX_STEPS} steps)"
    limit += "; half rate: " + _limited_by(half_usage)
    return metrics, limit


def broadcast_sizes(
    broadcast: _Broadcast,
    case_of: Callable[[int], Case],
    settings: Settings,
    rep: int,
    results: Results,
) -> None:
    """Every size, ascending: the subscribers of a size stay for the next."""
    have = 0
    for size in settings.sizes:
        case = case_of(size)
        _progress(f"  {case[0]}, {size:,} subscribers")
        broadcast.open(size - have, settings.open_concurrency)
        have = size
        broadcast.wait_subscribers(size)
        try:
            metrics, limit = measure_broadcast(broadcast, size, settings)
        except (RuntimeError, OSError, TimeoutError, ValueError) as exc:
            results.failures.append(f"rep {rep + 1}, {', '.join(case)}, {broadcast.impl}: {exc}")
            _progress(f"FAILED {results.failures[-1]}")
            return
        # The Redis-backed hub is sse_sm too: its rows go in sse_sm's column.
        label = "sse_sm" if broadcast.impl == "sse_sm_redis" else broadcast.impl
        results.add(case, label, rep, metrics)
        results.limit(case, label, limit)


def run_broadcast(
    server: Server, impl: str, settings: Settings, rep: int, results: Results
) -> None:
    """The broadcast section on one server."""
    with Clients(settings.clients, server.port, f"/{impl}/sub", settings.sample_every) as clients:
        broadcast = _Broadcast([server], [clients], impl)
        broadcast_sizes(
            broadcast,
            lambda size: ("broadcast", server.server, f"{size:,} subscribers"),
            settings,
            rep,
            results,
        )
        clients.broadcast("close", 30.0)


def run_cross(settings: Settings, rep: int, results: Results) -> None:
    """Two uvicorn processes on one redis-server: the publisher in A, subscribers over both.

    Each process has its own ``Hub(RedisBackend(...), policy=BLOCK)``
    (``sse_sm_redis`` in :mod:`bench.scale.app`); half the client processes
    connect to A, half to B.  Measured like the broadcast section.
    """
    per_server = max(1, settings.clients // 2)
    with running_redis() as url, contextlib.ExitStack() as stack:
        environment = {REDIS_ENV: url}
        servers = [stack.enter_context(Server("uvicorn", environment)) for _ in range(2)]
        for server in servers:
            server.wait_ready()
        groups = [
            stack.enter_context(
                Clients(per_server, server.port, "/sse_sm_redis/sub", settings.sample_every)
            )
            for server in servers
        ]
        broadcast = _Broadcast(servers, groups, "sse_sm_redis")
        broadcast_sizes(
            broadcast,
            lambda size: ("cross-process", "uvicorn x2 + redis", f"{size:,} subscribers"),
            settings,
            rep,
            results,
        )


#: Seconds the storm section waits for every stream to resume, after the drain began.
_STORM_LIMIT: Final = 30.0
#: Seconds of publishing before worker A is told to stop.
_STORM_LEAD: Final = 1.0


def _storm_totals(clients: Clients) -> dict[str, int]:
    answers = clients.broadcast("count", 30.0)
    keys = ("events", "lost", "duplicates", "gaps", "reconnected", "resumed", "reconnects_failed")
    totals = {key: sum(int(answer[key]) for answer in answers) for key in keys}
    totals["last_resumed_ns"] = max(int(answer["last_resumed_ns"]) for answer in answers)
    totals["min_seq"] = min(int(answer["min_seq"]) for answer in answers)
    return totals


def run_storm(settings: Settings, rep: int, results: Results) -> None:
    """N streams on worker A; A drains (SIGTERM) while B publishes; the clients resume on B.

    Both workers are uvicorn processes with a Hub on one RedisBackend; A's
    streams end with ``retry:`` drawn from 1,000 to 5,000 ms
    (``drain_retry``), and each client reconnects to B with
    ``Last-Event-ID`` after that delay.  Measured: the time from the
    SIGTERM until every stream has had an event from B, and the events lost
    or duplicated on the way (sequence numbers in the data), and the gap
    events the hub sent.
    """
    streams = settings.storm_streams
    case = ("reconnect storm", "uvicorn x2 + redis", f"{streams:,} streams")
    with running_redis() as url, contextlib.ExitStack() as stack:
        environment = {REDIS_ENV: url}
        worker_a = stack.enter_context(Server("uvicorn", environment))
        worker_b = stack.enter_context(Server("uvicorn", environment))
        worker_a.wait_ready()
        worker_b.wait_ready()
        clients = stack.enter_context(
            Clients(settings.clients, worker_a.port, "/sse_sm_redis/sub", resume_port=worker_b.port)
        )
        lines = [f"open {n} {settings.open_concurrency}" for n in _split(streams, len(clients))]
        failed = sum(answer["failed"] for answer in clients.command(lines, 60.0 + streams / 100))
        if failed:
            raise RuntimeError(f"{failed} of {streams} streams failed to open on worker A")
        _Broadcast([worker_a], [clients], "sse_sm_redis").wait_subscribers(streams)
        # The lead, the longest retry, and some after; plus a second per 1,000
        # streams, about what worker B takes to accept and replay them (at
        # 10,000, a 9 s publisher stopped before the last had come back, and
        # a stream whose replay was empty never saw an event from B).
        seconds = _STORM_LEAD + 5.0 + 3.0 + streams / 1000
        published: list[int] = []
        publish_errors: list[str] = []

        def publish() -> None:
            query = f"rate={settings.storm_rate}&seconds={seconds}&tag=s"
            try:
                answer = json.loads(worker_b.get(f"/sse_sm_redis/publish?{query}", seconds + 60.0))
            except Exception as exc:  # said with worker B's log below, not lost in a thread
                publish_errors.append(f"{exc}; worker B's log ends: {worker_b.log_tail()}")
                raise
            published.append(int(answer["published"]))

        publisher = threading.Thread(target=publish, daemon=True)
        publisher.start()
        time.sleep(_STORM_LEAD)
        drained_at = time.monotonic_ns()
        worker_a.terminate()
        deadline = time.monotonic() + _STORM_LIMIT
        totals = _storm_totals(clients)
        while totals["resumed"] < streams and time.monotonic() < deadline:
            time.sleep(0.1)
            totals = _storm_totals(clients)
        publisher.join(seconds + 60.0)
        if not published:
            raise RuntimeError(
                f"the publisher on worker B did not answer: {' '.join(publish_errors)}"
            )
        last = published[0] - 1
        # Until every stream has the last event (bounded): then nothing is still on its way.
        settle = time.monotonic() + 10.0
        while totals["min_seq"] < last and time.monotonic() < settle:
            time.sleep(0.1)
            totals = _storm_totals(clients)
        clients.broadcast("close", 30.0)
    _progress(
        f"  storm: {totals['reconnected']}/{streams} reconnected, {totals['resumed']} resumed, "
        f"{totals['events']:,} events for {published[0]} published, {totals['lost']} lost, "
        f"{totals['duplicates']} duplicated, {totals['gaps']} gaps"
    )
    if totals["reconnected"] < streams:
        results.failures.append(
            f"rep {rep + 1}, reconnect storm: only {totals['reconnected']} of {streams} "
            "streams were let go by worker A"
        )
    if totals["resumed"] < streams:
        results.failures.append(
            f"rep {rep + 1}, reconnect storm: {streams - totals['resumed']} of {streams} "
            f"streams did not resume within {_STORM_LIMIT} s"
        )
    behind = 0 if totals["min_seq"] >= last else 1
    metrics = {
        # Only when every stream resumed: otherwise the time is not "until all".
        **(
            {"resume_s": (totals["last_resumed_ns"] - drained_at) / 1e9}
            if totals["resumed"] >= streams
            else {}
        ),
        "storm_lost": float(totals["lost"]),
        "storm_duplicates": float(totals["duplicates"]),
        "storm_gaps": float(totals["gaps"]),
        "storm_behind": float(behind),
        "reconnects_failed": float(totals["reconnects_failed"]),
    }
    results.add(case, "sse_sm", rep, metrics)


# ------------------------------------------------------------------ one server, every section


def run_server(
    server_name: str,
    impl: str,
    settings: Settings,
    sections: tuple[str, ...],
    rep: int,
    results: Results,
) -> None:
    if server_name == "hypercorn-trio":
        settings = replace(
            settings, idle_streams=settings.trio_idle_streams, sizes=settings.trio_sizes
        )
    with Server(server_name) as server:
        server.wait_ready()
        base_fds = server.fds()
        runners: dict[str, Callable[[Server, str, Settings], tuple[dict[str, float], str]]] = {
            "idle": run_idle,
            "churn": run_churn,
        }
        for section in (section for section in sections if section in QUICK_SECTIONS):
            _progress(f"[rep {rep + 1}] {server_name} {impl}: {section}")
            section_started = time.perf_counter()
            try:
                if section == "broadcast":
                    run_broadcast(server, impl, settings, rep, results)
                else:
                    metrics, limit = runners[section](server, impl, settings)
                    size = (
                        settings.idle_streams if section == "idle" else settings.churn_concurrency
                    )
                    case_text = (
                        f"{size:,} streams"
                        if section == "idle"
                        else f"{size * settings.clients} loops"
                    )
                    case = (section, server_name, case_text)
                    results.add(case, impl, rep, metrics)
                    results.limit(case, impl, limit)
            except (RuntimeError, OSError, TimeoutError, ValueError) as exc:
                results.failures.append(f"rep {rep + 1}, {server_name} {impl} {section}: {exc}")
                _progress(f"FAILED {results.failures[-1]}")
                if not server.alive():
                    return
            # The next section starts once this one's streams are gone from the server.
            if not server.wait_fds_below(base_fds + 64, 60.0):
                _progress(f"  {server.fds() - base_fds} descriptors still open after 60 s")
            # ... and once the server has finished tearing them down.
            if not server.wait_quiet(_QUIET, 60.0):
                _progress("  the server was still busy 60 s after the section")
            _progress(f"  ({time.perf_counter() - section_started:.1f} s)")


# ------------------------------------------------------------------ the tables


def _kib(value: float) -> str:
    return f"{value / 1024:.1f} KiB"


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 1 else f"{value * 1e3:.0f} ms"


def _share(value: float) -> str:
    return f"{value:.1%}"


def _rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M/s"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k/s"
    return f"{value:.0f} /s"


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def _count(value: float) -> str:
    return f"{value:,.0f}"


#: metric -> (label, formatter, whether a ratio to raw is shown)
METRICS: Final[dict[str, tuple[str, Callable[[float], str], bool]]] = {
    "rss": ("server RSS per stream", _kib, True),
    "open_s": ("time to open all", _seconds, True),
    "idle_cpu": ("server CPU while idle (share of a core)", _share, True),
    "churn_per_cpu_s": ("streams per server CPU second", lambda v: f"{v:,.0f}", True),
    "churn_per_s": ("streams per second (wall)", lambda v: f"{v:,.0f}", True),
    "churn_failed": ("failed", _count, False),
    "saturation": ("deliveries/s at saturation", _rate, True),
    "saturated": ("saturated (1) or ramp ended (0)", _count, False),
    "p50_ms": ("latency p50 at half rate", _ms, True),
    "p99_ms": ("latency p99 at half rate", _ms, True),
    "max_ms": ("latency max at half rate", _ms, True),
    "missing": ("events missing", _count, False),
    "resume_s": ("time from SIGTERM until every stream resumed", _seconds, False),
    "storm_lost": ("events lost", _count, False),
    "storm_duplicates": ("events duplicated", _count, False),
    "storm_gaps": ("gap events sent", _count, False),
    "storm_behind": ("a stream missed the last event (1) or none (0)", _count, False),
    "reconnects_failed": ("reconnections that failed", _count, False),
}


def _ratios(by_impl: dict[str, dict[int, float]], impl: str) -> list[float]:
    mine, raw = by_impl.get(impl, {}), by_impl.get("raw", {})
    return [mine[rep] / raw[rep] for rep in sorted(mine) if rep in raw and raw[rep] > 0]


def _ratio_cell(ratios: list[float], with_range: bool) -> str:
    if not ratios:
        return "—"
    middle = f"{statistics.median(ratios):.2f}x"
    if with_range and len(ratios) > 1:
        return f"{middle} ({min(ratios):.2f} to {max(ratios):.2f})"
    return middle


def render(results: Results) -> str:
    lines = [
        "| section | server | case | metric | raw | sse_sm | sse-starlette | fastapi "
        "| sse_sm ÷ raw (range) | sse-starlette ÷ raw | fastapi ÷ raw |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case, by_metric in results.values.items():
        for metric, by_impl in by_metric.items():
            label, fmt, with_ratio = METRICS[metric]
            cells = []
            for impl in IMPLS:
                reps = by_impl.get(impl, {})
                cells.append(fmt(statistics.median(reps.values())) if reps else "—")
            if with_ratio:
                ratio_cells = [
                    _ratio_cell(_ratios(by_impl, "sse_sm"), True),
                    _ratio_cell(_ratios(by_impl, "sse_starlette"), False),
                    _ratio_cell(_ratios(by_impl, "fastapi"), False),
                ]
            else:
                ratio_cells = ["—"] * 3
            lines.append(
                f"| {' | '.join(case)} | {label} | " + " | ".join(cells + ratio_cells) + " |"
            )
    return "\n".join(lines)


def render_limits(results: Results) -> str:
    lines = ["| section | server | case | impl | what limited it (CPU as share of one core) |"]
    lines.append("|---|---|---|---|---|")
    for case, by_impl in results.limits.items():
        for impl in IMPLS:
            if impl in by_impl:
                lines.append(f"| {' | '.join(case)} | {impl} | {by_impl[impl]} |")
    return "\n".join(lines)


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _fastapi_usable() -> bool:
    try:
        import bench.scale.app_fastapi  # noqa: F401
    except ImportError:
        return False
    return True


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, uvicorn only: < 1 min")
    parser.add_argument("--reps", type=int, help="repetitions (default 1)")
    parser.add_argument("--sections", help=f"a subset of {','.join(SECTIONS)}")
    parser.add_argument("--impls", help=f"a subset of {','.join(IMPLS)} (raw is always run)")
    parser.add_argument("--servers", help="a subset of uvicorn,hypercorn-trio")
    parser.add_argument("--idle-streams", type=int, help="streams of the idle section")
    parser.add_argument(
        "--storm-streams", type=int, help="streams of the reconnect storm section (2,000)"
    )
    parser.add_argument("--sizes", help="subscriber counts of the broadcast section, ascending")
    parser.add_argument("--clients", type=int, help="load-client processes per section (2)")
    parser.add_argument("--json", metavar="PATH", help="every value of every repetition")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.reps is not None:
        if args.reps < 1:
            parser.error("--reps must be at least 1")
        settings = replace(settings, reps=args.reps)
    if args.clients is not None:
        if not 1 <= args.clients <= 14:
            parser.error("--clients must be 1 to 14 (16 source addresses each, 127.0.0.10-255)")
        settings = replace(settings, clients=args.clients)
    if args.idle_streams is not None:
        settings = replace(
            settings, idle_streams=args.idle_streams, trio_idle_streams=args.idle_streams
        )
    if args.storm_streams is not None:
        if args.storm_streams < 1:
            parser.error("--storm-streams must be at least 1")
        settings = replace(settings, storm_streams=args.storm_streams)
    if args.sizes:
        sizes = tuple(int(size) for size in args.sizes.split(","))
        settings = replace(settings, sizes=sizes, trio_sizes=sizes)
    if args.servers:
        servers = tuple(args.servers.split(","))
        if not set(servers) <= set(SERVER_IMPLS):
            parser.error(f"--servers: unknown server in {args.servers!r}")
        settings = replace(settings, servers=servers)
    default_sections = QUICK_SECTIONS if args.quick else SECTIONS
    sections = tuple(args.sections.split(",")) if args.sections else default_sections
    if not set(sections) <= set(SECTIONS):
        parser.error(f"--sections: unknown section in {args.sections!r}")
    impls = tuple(args.impls.split(",")) if args.impls else IMPLS
    if not set(impls) <= set(IMPLS):
        parser.error(f"--impls: unknown implementation in {args.impls!r}")
    impls = tuple(impl for impl in IMPLS if impl == "raw" or impl in impls)
    skipped: list[str] = []
    if "fastapi" in impls and not _fastapi_usable():
        impls = tuple(impl for impl in impls if impl != "fastapi")
        skipped.append("fastapi: not installed, or without fastapi.sse (FastAPI < 0.135)")

    signal.signal(signal.SIGTERM, _exit_on_signal)
    nofile = raise_nofile()
    # The server holds one descriptor per stream, plus its own (listener, imports, logs).
    settings = replace(
        settings, trio_idle_streams=min(settings.trio_idle_streams, nofile - _SPARE_FDS)
    )
    if settings.idle_streams > nofile - _SPARE_FDS:
        skipped.append(
            f"idle streams: {settings.idle_streams:,} asked, {nofile - _SPARE_FDS:,} run "
            f"(RLIMIT_NOFILE cannot be raised above {nofile:,} here)"
        )
        settings = replace(settings, idle_streams=nofile - _SPARE_FDS)
    results = Results()
    load_before = _load()
    started = time.perf_counter()
    for rep in range(settings.reps):
        for server_name in settings.servers:
            for impl in impls:
                if impl not in SERVER_IMPLS[server_name]:
                    continue
                run_server(server_name, impl, settings, sections, rep, results)
        if "storm" in sections:
            _progress(f"[rep {rep + 1}] reconnect storm: drain one uvicorn, resume on another")
            try:
                run_storm(settings, rep, results)
            except (RuntimeError, OSError, TimeoutError, ValueError) as exc:
                results.failures.append(f"rep {rep + 1}, reconnect storm: {exc}")
                _progress(f"FAILED {results.failures[-1]}")
        if "cross" in sections:
            _progress(f"[rep {rep + 1}] cross-process: two uvicorn processes on redis")
            try:
                run_cross(settings, rep, results)
            except (RuntimeError, OSError, TimeoutError, ValueError) as exc:
                results.failures.append(f"rep {rep + 1}, cross-process: {exc}")
                _progress(f"FAILED {results.failures[-1]}")
    elapsed = time.perf_counter() - started
    load_after = _load()

    from bench.driver import environment

    command = " ".join(["python -m bench.scale", *(sys.argv[1:] if argv is None else argv)])
    print(f"## Scale: {settings.name} run, {settings.reps} repetition(s)\n")
    print(f"- command: `{command}`, took {elapsed:.0f} s, on {datetime.date.today().isoformat()}")
    print(f"- load average (1, 5, 15 min): {load_before} before, {load_after} after")
    if "hypercorn-trio" in settings.servers:
        print(
            f"- trio row: {settings.trio_idle_streams:,} idle streams, "
            f"{', '.join(map(str, settings.trio_sizes))} subscribers"
        )
    print(
        f"- idle: {settings.idle_streams:,} streams, ping 15 s, {settings.idle_window} s window; "
        f"churn: {settings.churn_seconds} s; broadcast: {', '.join(map(str, settings.sizes))} "
        f"subscribers, ramp from {settings.ramp_start / 1e3:.0f} k deliveries/s doubling, "
        f"{settings.step_seconds} s steps, latency over {settings.latency_seconds} s or more"
    )
    print(f"- {settings.clients} client processes; RLIMIT_NOFILE {nofile}")
    print(environment())
    extras = ("fastapi", "uvloop", "httptools")
    print("- " + ", ".join(f"{name} {_version(name)}" for name in extras))
    for note in skipped:
        print(f"- note: {note}")
    print()
    print(render(results))
    print()
    print(render_limits(results))
    if results.failures:
        print("\nFailures:\n" + "\n".join(f"- {failure}" for failure in results.failures))
    if args.json:
        payload = {
            "settings": asdict(settings),
            "load": {"before": load_before, "after": load_after},
            "values": [
                {"case": list(case), "metric": metric, "impl": impl, "reps": reps}
                for case, by_metric in results.values.items()
                for metric, by_impl in by_metric.items()
                for impl, reps in by_impl.items()
            ],
            "limits": [
                {"case": list(case), "impl": impl, "limit": text}
                for case, by_impl in results.limits.items()
                for impl, text in by_impl.items()
            ],
            "failures": results.failures,
        }
        with open(args.json, "w") as out:
            json.dump(payload, out, indent=1)
    return 1 if results.failures else 0
