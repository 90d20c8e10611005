"""``python -m bench.hub_redis [--quick]``: the Redis backend across two processes, beside memory.

What is measured, per event loop (asyncio, trio) and backend:

* **throughput**: ``burst`` events published, one subscriber reads every
  one.  Events delivered per second, from the first publish to the last
  delivery.  How they are published is the row's *mode*: ``serial``, one
  task awaiting ``hub.publish`` back to back; ``concurrent``, ``PUBLISHERS``
  tasks doing so at once (the Redis backend sends what they issue together
  in one round trip); ``many``, ``hub.publish_many`` of ``MANY`` events at a
  time.
* **latency**: then ``paced`` events, one every 2 ms (so nothing queues);
  publish-to-delivery time of each, median and p99.  Times are
  ``time.monotonic_ns()``, one clock for every process of the machine.

``memory``: ``Hub()`` with its ``MemoryBackend``; publisher and subscriber
are two tasks of one process (``policy=BLOCK``, lossless).  ``redis``: two
processes, each with its own ``RedisBackend`` and hub, sharing one
``redis-server`` started by this script on a free loopback port (no
persistence; killed with its process group at the end); the subscriber's hub
buffers up to ``burst`` events, so nothing is dropped.

Conventions of ``bench/``: every measurement runs in fresh processes, the
two backends alternate within each repetition, the table shows medians over
repetitions.  Progress goes to stderr, the Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import anyio

from bench.scale.procs import running_redis

__all__ = ("main",)

LOOPS: Final = ("asyncio", "trio")
BACKENDS: Final = ("memory", "redis")
PACE: Final = 0.002
MODES: Final = ("serial", "concurrent", "many")
PUBLISHERS: Final = 16
MANY: Final = 100
WORKER_LIMIT: Final = 120.0
ROOT: Final = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ workers


def _payload(phase: str, index: int) -> str:
    return f"{phase} {index} {time.monotonic_ns()}"


async def _publish(hub: Any, burst: int, paced: int, mode: str = "serial") -> None:
    if mode == "serial":
        for index in range(burst):
            await hub.publish("bench", _payload("b", index))
    elif mode == "many":
        for start in range(0, burst, MANY):
            stop = min(start + MANY, burst)
            await hub.publish_many("bench", [_payload("b", i) for i in range(start, stop)])
    else:

        async def publisher(first: int) -> None:
            for index in range(first, burst, PUBLISHERS):
                await hub.publish("bench", _payload("b", index))

        async with anyio.create_task_group() as tasks:
            for first in range(PUBLISHERS):
                tasks.start_soon(publisher, first)
    for index in range(paced):
        await anyio.sleep(PACE)
        await hub.publish("bench", _payload("p", index))


async def _subscribe(subscription: Any, burst: int, paced: int) -> dict[str, Any]:
    """Read ``burst + paced`` events; return the measurement."""
    first_sent = last_burst = 0
    latencies: list[int] = []
    seen = 0
    async for frame in subscription:
        now = time.monotonic_ns()
        data = frame.split(b"data: ", 1)[1].split(b"\r\n", 1)[0].decode()
        phase, _index, sent = data.split()
        if phase == "b":
            # Concurrent publishers: the first one sent need not arrive first.
            first_sent = int(sent) if not first_sent else min(first_sent, int(sent))
            last_burst = now
        else:
            latencies.append(now - int(sent))
        seen += 1
        if seen == burst + paced:
            break
    await subscription.aclose()
    latencies.sort()
    return {
        "rate": burst / ((last_burst - first_sent) / 1e9),
        "median_us": statistics.median(latencies) / 1e3,
        "p99_us": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1e3,
    }


async def _joined(hub: Any) -> None:
    """Until the subscription has joined: the hub has no event for that, so poll (setup only)."""
    while hub.statistics().subscribers < 1:  # noqa: ASYNC110
        await anyio.sleep(0.001)


async def _memory(burst: int, paced: int, mode: str) -> dict[str, Any]:
    from sse_sm import Hub, SlowConsumerPolicy

    hub = Hub(policy=SlowConsumerPolicy.BLOCK, block_timeout=None)
    subscription = hub.subscribe("bench")
    result: dict[str, Any] = {}

    async def read() -> None:
        result.update(await _subscribe(subscription, burst, paced))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(read)
        await _joined(hub)
        await _publish(hub, burst, paced, mode)
    return result


async def _redis_subscriber(url: str, burst: int, paced: int) -> dict[str, Any]:
    from sse_sm import Hub
    from sse_sm.redis import RedisBackend

    async with RedisBackend(url, topics=["bench"], max_events=burst + paced) as backend:
        hub = Hub(backend, buffer_size=burst + paced)
        subscription = hub.subscribe("bench")
        result: dict[str, Any] = {}

        async def read() -> None:
            result.update(await _subscribe(subscription, burst, paced))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read)
            await _joined(hub)
            print("ready", flush=True)
        return result


async def _redis_publisher(url: str, burst: int, paced: int, mode: str) -> dict[str, Any]:
    from sse_sm import Hub
    from sse_sm.redis import RedisBackend

    async with RedisBackend(url, max_events=burst + paced) as backend:
        await _publish(Hub(backend), burst, paced, mode)
    return {}


def _worker(spec: dict[str, Any]) -> None:
    role, loop = spec["role"], spec["loop"]
    burst, paced, url = spec["burst"], spec["paced"], spec.get("url", "")
    mode = spec.get("mode", "serial")
    if role == "memory":
        result = anyio.run(_memory, burst, paced, mode, backend=loop)
    elif role == "subscriber":
        result = anyio.run(_redis_subscriber, url, burst, paced, backend=loop)
    else:
        result = anyio.run(_redis_publisher, url, burst, paced, mode, backend=loop)
    print(json.dumps(result), flush=True)


# ------------------------------------------------------------------ driver


def _spawn(spec: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.hub_redis", "--worker", json.dumps(spec)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(process: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        out, _ = process.communicate(timeout=WORKER_LIMIT)
    finally:
        _kill(process)
    if process.returncode != 0:
        raise RuntimeError(f"worker failed with {process.returncode}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _kill(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _measure(
    loop: str, backend: str, burst: int, paced: int, url: str, mode: str
) -> dict[str, Any]:
    spec = {"loop": loop, "burst": burst, "paced": paced, "url": url, "mode": mode}
    if backend == "memory":
        return _finish(_spawn({**spec, "role": "memory"}))
    subscriber = _spawn({**spec, "role": "subscriber"})
    try:
        assert subscriber.stdout is not None
        if subscriber.stdout.readline().strip() != "ready":
            raise RuntimeError("the subscriber did not start")
        publisher = _spawn({**spec, "role": "publisher"})
        try:
            _finish(publisher)
        finally:
            _kill(publisher)
        return _finish(subscriber)
    finally:
        _kill(subscriber)


def _format(value: float, unit: str) -> str:
    if unit == "/s":
        return f"{value / 1e3:.1f} k/s" if value >= 1e3 else f"{value:.0f} /s"
    return f"{value / 1e3:.2f} ms" if value >= 1e3 else f"{value:.0f} µs"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hub_redis", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer events and repetitions")
    parser.add_argument(
        "--mode",
        action="append",
        choices=MODES,
        help=f"how the burst is published (repeatable; default: all of {', '.join(MODES)})",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(json.loads(args.worker))
        return
    burst, paced, reps = (2_000, 200, 2) if args.quick else (20_000, 1_000, 5)
    modes = args.mode or list(MODES)
    results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    if shutil.which("redis-server") is None:
        sys.exit("no redis-server: bash scripts/install_redis.sh")
    with running_redis() as url:
        for rep in range(reps):
            for mode in modes:
                for loop in LOOPS:
                    for backend in BACKENDS:
                        print(f"rep {rep + 1}/{reps}: {mode} {loop} {backend}", file=sys.stderr)
                        result = _measure(loop, backend, burst, paced, url, mode)
                        results.setdefault((mode, loop, backend), []).append(result)
    print(f"burst {burst:,} events, then {paced:,} paced every {PACE * 1e3:.0f} ms; ", end="")
    print(f"medians of {reps} repetitions; Python {sys.version.split()[0]}\n")
    print(f"concurrent: {PUBLISHERS} publishing tasks; many: publish_many of {MANY}\n")
    print("| mode | loop | backend | delivered (burst) | latency median | latency p99 |")
    print("|---|---|---|---:|---:|---:|")
    for (mode, loop, backend), runs in results.items():
        rate = statistics.median(run["rate"] for run in runs)
        median = statistics.median(run["median_us"] for run in runs)
        p99 = statistics.median(run["p99_us"] for run in runs)
        print(
            f"| {mode} | {loop} | {backend} | {_format(rate, '/s')} | {_format(median, 'us')} "
            f"| {_format(p99, 'us')} |"
        )


if __name__ == "__main__":
    main()
