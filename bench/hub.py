"""``python -m bench.hub``: publish-to-delivery throughput of the hub beside a naive fan-out.

What is measured: one publisher task publishes ``ServerSentEvent(data,
event="tick")`` as fast as it can for a fixed window; N subscriber tasks
each read every event (lossless on both sides, so nothing is dropped); the
clock stops when the last subscriber has read the last event.  Reported:
events delivered per second over all subscribers, and events published per
second (= delivered ÷ N).

* ``naive``: one ``anyio`` memory object stream per subscriber (buffer 256,
  no policy); the publisher encodes the event once (``encode_item``, with an
  id) and awaits ``send`` on every stream in turn.
* ``hub``: ``Hub(policy=BLOCK, block_timeout=None, buffer_size=256)``; the
  publisher awaits ``hub.publish``; subscribers iterate their
  ``Subscription``.

Conventions of ``bench/``: every measurement runs in a fresh process
(``python -m bench.hub --worker SPEC``), the two implementations alternate
within each repetition, the table shows medians over the repetitions and the
median of the same-repetition ratios with their range.  ``--quick`` runs one
process per (repetition, implementation, backend) for all sizes, with a
shorter window.  Progress goes to stderr, the Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc

__all__ = ("main", "measure")

BACKENDS: Final = ("asyncio", "trio")
SUBSCRIBERS: Final = (1, 100, 1000)
IMPLS: Final = ("naive", "hub")
BUFFER: Final = 256
#: A worker that takes longer than this is killed and its result is missing.
WORKER_LIMIT: Final = 120.0
_PAYLOAD: Final = "value 00042"
#: The directory holding ``bench``: the workers' working directory.
ROOT: Final = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    name: str
    reps: int
    #: Seconds the publisher publishes in each timed run.
    window: float
    #: One process per (rep, impl, backend) for every size, instead of one per size.
    grouped: bool


FULL: Final = Settings(name="full", reps=5, window=0.5, grouped=False)
QUICK: Final = Settings(name="quick", reps=3, window=0.1, grouped=True)


# ------------------------------------------------------------------ one run, in a worker


async def _naive(subscribers: int, window: float) -> tuple[int, int, float]:
    from sse_sm import ServerSentEvent
    from sse_sm._events import encode_item

    streams = [anyio.create_memory_object_stream[bytes](BUFFER) for _ in range(subscribers)]
    received = [0]

    async def read(stream: anyio.abc.ObjectReceiveStream[bytes]) -> None:
        count = 0
        async with stream:
            async for _frame in stream:
                count += 1
        received[0] += count

    published = 0
    async with anyio.create_task_group() as tasks:
        for _, receive in streams:
            tasks.start_soon(read, receive)
        sends = [send for send, _ in streams]
        started = time.perf_counter()
        deadline = started + window
        while time.perf_counter() < deadline:
            event = ServerSentEvent(_PAYLOAD, event="tick", id=str(published))
            frame = encode_item(event, "\r\n")
            for send in sends:
                await send.send(frame)
            published += 1
        for send in sends:
            send.close()
    return published, received[0], time.perf_counter() - started


async def _hub(subscribers: int, window: float) -> tuple[int, int, float]:
    from sse_sm import ServerSentEvent
    from sse_sm.hub._hub import Hub
    from sse_sm.hub._subscription import Subscription
    from sse_sm.hub._types import SlowConsumerPolicy

    hub = Hub(policy=SlowConsumerPolicy.BLOCK, block_timeout=None, buffer_size=BUFFER)
    received = [0]

    async def read(sub: Subscription) -> None:
        count = 0
        async with sub:
            async for _frame in sub:
                count += 1
        received[0] += count

    published = 0
    async with anyio.create_task_group() as tasks:
        for _ in range(subscribers):
            tasks.start_soon(read, hub.subscribe("bench"))
        await anyio.wait_all_tasks_blocked()  # every subscription has joined and waits
        if hub.statistics().subscribers != subscribers:
            raise RuntimeError("not every subscriber joined before the window")
        started = time.perf_counter()
        deadline = started + window
        while time.perf_counter() < deadline:
            await hub.publish("bench", ServerSentEvent(_PAYLOAD, event="tick"))
            published += 1
        hub.close()  # each subscription ends once it has read everything
    return published, received[0], time.perf_counter() - started


RUNS: Final[dict[str, Callable[[int, float], Awaitable[tuple[int, int, float]]]]] = {
    "naive": _naive,
    "hub": _hub,
}


async def measure(impl: str, subscribers: int, window: float) -> dict[str, float]:
    """One warm-up run, then one timed run; raises if anything was lost."""
    run = RUNS[impl]
    await run(subscribers, min(window, 0.05))
    published, received, elapsed = await run(subscribers, window)
    if received != published * subscribers:
        raise RuntimeError(f"{impl}: {received} delivered, expected {published * subscribers}")
    return {"delivered_per_s": received / elapsed, "published_per_s": published / elapsed}


def _worker(spec: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for subscribers in spec["subscribers"]:
        metrics = anyio.run(
            measure, spec["impl"], subscribers, spec["window"], backend=spec["backend"]
        )
        records.append({"subscribers": subscribers, **metrics})
    return records


# ------------------------------------------------------------------ the driver


Key = tuple[str, int, str]  # backend, subscribers, impl


def _run_worker(spec: dict[str, Any]) -> list[dict[str, Any]]:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.hub", "--worker", json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WORKER_LIMIT,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"worker exited with {completed.returncode}:\n{completed.stderr[-2000:]}"
        )
    records: list[dict[str, Any]] = json.loads(completed.stdout.strip().splitlines()[-1])
    return records


def run(settings: Settings) -> tuple[dict[Key, list[dict[str, float]]], list[str]]:
    """Every repetition, implementations alternating; returns the values per case and failures."""
    values: dict[Key, list[dict[str, float]]] = {}
    failures: list[str] = []
    size_groups = [list(SUBSCRIBERS)] if settings.grouped else [[n] for n in SUBSCRIBERS]
    for rep in range(settings.reps):
        started = time.perf_counter()
        for backend in BACKENDS:
            for sizes in size_groups:
                for impl in IMPLS:
                    spec = {
                        "impl": impl,
                        "backend": backend,
                        "subscribers": sizes,
                        "window": settings.window,
                    }
                    try:
                        for record in _run_worker(spec):
                            key = (backend, int(record.pop("subscribers")), impl)
                            values.setdefault(key, []).append(record)
                    except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
                        failures.append(f"rep {rep + 1}, {impl} on {backend} {sizes}: {exc}")
                        print(f"FAILED {failures[-1]}", file=sys.stderr)
        elapsed = time.perf_counter() - started
        print(f"[rep {rep + 1}/{settings.reps}] {elapsed:.1f} s", file=sys.stderr, flush=True)
    return values, failures


def _rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M/s"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k/s"
    return f"{value:.0f} /s"


def render(values: dict[Key, list[dict[str, float]]]) -> str:
    lines = [
        "| backend | subscribers | naive: delivered | hub: delivered "
        "| naive: publishes | hub: publishes | hub ÷ naive (range) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for backend in BACKENDS:
        for subscribers in SUBSCRIBERS:
            naive = values.get((backend, subscribers, "naive"), [])
            hub = values.get((backend, subscribers, "hub"), [])
            if not naive or not hub:
                lines.append(f"| {backend} | {subscribers:,} | — | — | — | — | — |")
                continue

            def median(runs: list[dict[str, float]], metric: str) -> str:
                return _rate(statistics.median(run[metric] for run in runs))

            ratios = [
                h["delivered_per_s"] / n["delivered_per_s"]
                for n, h in zip(naive, hub, strict=False)
            ]
            ratio = f"{statistics.median(ratios):.1f}x ({min(ratios):.1f} to {max(ratios):.1f})"
            lines.append(
                f"| {backend} | {subscribers:,} | {median(naive, 'delivered_per_s')} "
                f"| {median(hub, 'delivered_per_s')} | {median(naive, 'published_per_s')} "
                f"| {median(hub, 'published_per_s')} | {ratio} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hub", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 repetitions, 0.1 s windows")
    parser.add_argument("--reps", type=int, help="repetitions (default 5, or 3 with --quick)")
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        json.dump(_worker(json.loads(args.worker)), sys.stdout)
        sys.stdout.write("\n")
        return 0
    settings = QUICK if args.quick else FULL
    if args.reps is not None:
        if args.reps < 1:
            parser.error("--reps must be at least 1")
        settings = Settings(settings.name, args.reps, settings.window, settings.grouped)
    started = time.perf_counter()
    values, failures = run(settings)
    elapsed = time.perf_counter() - started
    from bench.driver import environment

    command = " ".join(["python -m bench.hub", *(sys.argv[1:] if argv is None else argv)])
    print(f"## Hub fan-out: {settings.name} run, {settings.reps} repetitions\n")
    print(f"- command: `{command}`, took {elapsed:.0f} s, on {datetime.date.today().isoformat()}")
    print(f"- window: {settings.window} s of publishing per run, buffers of {BUFFER}")
    print(environment())
    print()
    print(render(values))
    if failures:
        print("\nFailures:\n" + "\n".join(f"- {failure}" for failure in failures))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
