"""``python -m bench``: the whole suite, interleaved, with the table at the end.

Each repetition runs every job once, and every job runs the three
implementations back to back (raw, sse_sm, sse-starlette), each in a fresh
process: ``python -m bench.worker`` for the in-process sections, and for the
real-server section a fresh server process (``python -m bench.serve``) per
measurement, or per server and repetition in the quick run; the client runs
here.  Progress goes to stderr; the Markdown goes to stdout.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Final

from bench import IMPLS
from bench.items import KINDS
from bench.loopback import ROOT, ServerProcess, measure_streams, running_server
from bench.metrics import KINDS as METRICS_KINDS
from bench.metrics import VARIANTS, no_hook_build, render_metrics_table
from bench.report import Results, render_table, render_targets
from bench.serve import SERVERS

__all__ = ("FULL", "QUICK", "Settings", "main")

SECTIONS: Final = ("throughput", "idle", "disconnect", "server", "encoding", "metrics")
BACKENDS: Final = ("asyncio", "trio")
#: A worker that takes longer than this is killed and its result is missing.
WORKER_LIMIT: Final = 300.0


@dataclass(frozen=True)
class Settings:
    """Sizes and durations of one run."""

    name: str
    #: Repetitions of each section; the in-process throughput and encoding
    #: sections are cheap, so they get more.
    reps: dict[str, int]
    #: Events per timed in-process run, and timed runs per case (the fastest is kept).
    events: int
    inner: int
    #: One worker per (impl, backend, kind) if False, else one per impl for all of them.
    group_in_process: bool
    idle_sizes: tuple[int, ...]
    traced_sizes: tuple[int, ...]
    streams: int
    #: Seconds between staggered disconnects, after the previous stream has closed.
    stagger: float
    server_streams: tuple[int, ...]
    warm_up: float
    window: float
    #: A fresh server per measurement if True, else one per (server, repetition).
    server_per_measurement: bool
    encode_number: int
    encode_repeat: int
    #: Events per timed run of the metrics section, and timed runs per case.
    metrics_events: int = 20_000
    metrics_inner: int = 3


FULL: Final = Settings(
    name="full",
    reps={"throughput": 5, "encoding": 5, "idle": 3, "disconnect": 3, "server": 3, "metrics": 5},
    events=20_000,
    inner=3,
    group_in_process=False,
    idle_sizes=(10_000, 1_000),
    traced_sizes=(1_000,),
    streams=1_000,
    stagger=0.001,
    server_streams=(1, 50),
    warm_up=0.3,
    window=1.2,
    server_per_measurement=True,
    encode_number=50_000,
    encode_repeat=5,
)

QUICK: Final = Settings(
    name="quick",
    reps=dict.fromkeys(SECTIONS, 3),
    events=3_000,
    inner=2,
    group_in_process=True,
    idle_sizes=(500,),
    traced_sizes=(500,),
    streams=500,
    stagger=0.0,
    server_streams=(1, 50),
    warm_up=0.1,
    window=0.2,
    server_per_measurement=False,
    encode_number=10_000,
    encode_repeat=3,
    metrics_events=10_000,
)


@dataclass(frozen=True)
class Job:
    """One unit of a repetition: the same spec run for each implementation."""

    section: str
    title: str
    spec: dict[str, Any]
    reps: int


def _in_process_specs(settings: Settings, sections: tuple[str, ...]) -> Iterator[Job]:
    grouped = settings.group_in_process
    backend_groups = [list(BACKENDS)] if grouped else [[b] for b in BACKENDS]
    if "throughput" in sections:
        kind_groups = [list(KINDS)] if grouped else [[k] for k in KINDS]
        for backends in backend_groups:
            for kinds in kind_groups:
                spec = {
                    "section": "throughput",
                    "backends": backends,
                    "kinds": kinds,
                    "timeouts": [None, 30.0],
                    "n": settings.events,
                    "inner": settings.inner,
                }
                title = f"in process {'+'.join(backends)} {'+'.join(kinds)}"
                yield Job("throughput", title, spec, settings.reps["throughput"])
    if "idle" in sections:
        for backends in backend_groups:
            spec = {
                "section": "idle",
                "backends": backends,
                "sizes": list(settings.idle_sizes),
                "traced_sizes": list(settings.traced_sizes),
                # Only a process that has done nothing else has a heap fit for RSS.
                "rss": not grouped,
            }
            yield Job("idle", f"idle {'+'.join(backends)}", spec, settings.reps["idle"])
    if "disconnect" in sections:
        for backends in backend_groups:
            spec = {
                "section": "disconnect",
                "backends": backends,
                "streams": settings.streams,
                "stagger": settings.stagger,
            }
            title = f"disconnect {'+'.join(backends)}"
            yield Job("disconnect", title, spec, settings.reps["disconnect"])
    if "encoding" in sections:
        spec = {
            "section": "encoding",
            "number": settings.encode_number,
            "repeat": settings.encode_repeat,
        }
        yield Job("encoding", "encoding", spec, settings.reps["encoding"])


def _jobs(settings: Settings, sections: tuple[str, ...]) -> Iterator[Job]:
    in_process = list(_in_process_specs(settings, sections))
    if settings.group_in_process and in_process:
        # One process per implementation and repetition runs every in-process part.
        parts = [job.spec for job in in_process]
        yield Job(
            "in process",
            "in process (all sections)",
            {"parts": parts},
            reps=min(settings.reps[job.section] for job in in_process),
        )
    else:
        yield from in_process
    if "metrics" in sections:
        spec = {
            "section": "metrics",
            "backends": list(BACKENDS),
            "kinds": list(METRICS_KINDS),
            "n": settings.metrics_events,
            "inner": settings.metrics_inner,
        }
        yield Job("metrics", "metrics off/on/no hook", spec, settings.reps["metrics"])
    if "server" in sections:
        for server in SERVERS:
            spec = {"server": server}
            yield Job("server", f"server {server}", spec, settings.reps["server"])


def _run_worker(spec: dict[str, Any]) -> list[dict[str, Any]]:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.worker", json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WORKER_LIMIT,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"worker exited with {completed.returncode}:\n{completed.stderr[-3000:]}"
        )
    lines = completed.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"worker printed nothing:\n{completed.stderr[-3000:]}")
    records: list[dict[str, Any]] = json.loads(lines[-1])["records"]
    return records


def _record(results: Results, records: list[dict[str, Any]], impl: str, rep: int) -> None:
    for record in records:
        case = tuple(record["case"])
        results.add(case, impl, rep, record["metrics"])
        if "digest" in record:
            results.add_digest(case, impl, record["digest"])


def _server_job(settings: Settings, server: str, results: Results, rep: int) -> None:
    def measure(process: ServerProcess, streams: int, impl: str) -> None:
        metrics = measure_streams(
            process, f"/{impl}", streams, warm_up=settings.warm_up, window=settings.window
        )
        case = ("server", server, f"{streams} stream{'s' if streams > 1 else ''}")
        results.add(case, impl, rep, metrics)

    if settings.server_per_measurement:
        for streams in settings.server_streams:
            for impl in IMPLS:
                with running_server(server) as process:
                    measure(process, streams, impl)
    else:
        with running_server(server) as process:
            for streams in settings.server_streams:
                for impl in IMPLS:
                    measure(process, streams, impl)


def _metrics_job(spec: dict[str, Any], results: Results, rep: int) -> None:
    """The three builds of the metrics section, back to back, each in a fresh process."""
    with no_hook_build(ROOT) as path:
        for variant in VARIANTS:
            spec_for = {**spec, "impl": "sse_sm", "variant": variant, "sse_sm_path": str(path)}
            records = _run_worker(spec_for)
            _record(results, records, variant, rep)


def run(settings: Settings, sections: tuple[str, ...], results: Results) -> None:
    jobs = list(_jobs(settings, sections))
    reps = max(job.reps for job in jobs)
    for rep in range(reps):
        for job in jobs:
            if rep >= job.reps:
                continue
            started = time.perf_counter()
            try:
                if job.section == "server":
                    _server_job(settings, job.spec["server"], results, rep)
                elif job.section == "metrics":
                    _metrics_job(job.spec, results, rep)
                else:
                    for impl in IMPLS:
                        _record(results, _run_worker({**job.spec, "impl": impl}), impl, rep)
            except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
                message = f"rep {rep + 1}, {job.title}: {exc}"
                results.failures.append(message)
                print(f"FAILED {message}", file=sys.stderr)
            elapsed = time.perf_counter() - started
            print(
                f"[rep {rep + 1}/{job.reps}] {job.title}: {elapsed:.1f} s",
                file=sys.stderr,
                flush=True,
            )


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _library_revision() -> str:
    """The commit sse_sm was measured at, and whether its files differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "sse_sm"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (sse_sm/ modified)" if dirty else head


def environment() -> str:
    """The machine and the versions, as Markdown lines."""
    packages = (
        "sse_sm",
        "sse-starlette",
        "starlette",
        "anyio",
        "trio",
        "uvicorn",
        "hypercorn",
        "h11",
    )
    versions = ", ".join(f"{name} {_version(name)}" for name in packages)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"- machine: {cores} cores ({_cpu_model()}), {platform.system()} {platform.release()}\n"
        f"- Python {platform.python_version()} ({platform.python_implementation()})\n"
        f"- {versions}; sse_sm at commit {_library_revision()}"
    )


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes: under a minute")
    parser.add_argument("--reps", type=int, help="repetitions of every section (default 3 or 5)")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every measurement here")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.reps is not None:
        if args.reps < 1:
            parser.error("--reps must be at least 1")
        settings = replace(settings, reps=dict.fromkeys(SECTIONS, args.reps))
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")

    # A SIGTERM unwinds like Ctrl-C, so every server started is stopped on the way out.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    started = time.perf_counter()
    results = Results()
    run(settings, sections, results)
    elapsed = time.perf_counter() - started
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    counts = sorted({settings.reps[section] for section in sections})
    print(f"## Results: {settings.name} run, {' or '.join(map(str, counts))} repetitions\n")
    print(f"- command: `{command}`, took {elapsed:.0f} s, on {datetime.date.today().isoformat()}")
    print(environment())
    print()
    if any(case[0] != "metrics" for case in results.values):
        print(render_table(results))
        print()
        print(render_targets(results))
    metrics_table = render_metrics_table(results)
    if metrics_table:
        print()
        print(metrics_table)
    if results.failures:
        print("\nFailures:\n" + "\n".join(f"- {f}" for f in results.failures))
    if args.json:
        dump = {
            "settings": settings.__dict__,
            "values": [
                {"case": list(case), "metric": metric, "impl": impl, "reps": reps}
                for case, by_metric in results.values.items()
                for metric, by_impl in by_metric.items()
                for impl, reps in by_impl.items()
            ],
            "failures": results.failures,
        }
        with open(args.json, "w") as out:
            json.dump(dump, out, indent=1)
    return 1 if results.failures else 0
