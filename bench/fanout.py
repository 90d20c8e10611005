"""``python -m bench.fanout``: CPU per broadcast delivery through real responses, in process.

What is measured: N ``EventSourceResponse`` streams over one hub topic (or
N raw ASGI loops over a hand-written broadcaster, as in
:mod:`bench.scale.app`), each sending to an ASGI ``send`` that only counts;
one publisher publishes E events as fast as the hub lets it.  The clock
(process CPU time, and wall time) runs from the first publish until every
stream has sent every event.  No sockets: what is left is the library's own
cost per delivery (the hub, the subscription, the driver's pump and the
ASGI message), which is what the server of ``bench.scale``'s broadcast
section spends its CPU on besides the server's socket writes.

Reported per (implementation, N): deliveries per CPU second, ASGI body
messages per delivery, and wall time.  Each case runs in a fresh process.

    python -m bench.fanout                       # 1,000 and 10,000 subscribers
    python -m bench.fanout --sizes 1000 --events 200 --backend trio

For a worker (``--worker SPEC``), ``BENCH_FANOUT_PROFILE=PATH`` writes a
cProfile of the timed window only, and ``BENCH_FANOUT_GC=freeze`` or ``off``
freezes or disables the garbage collector for it (to tell its share).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.lowlevel
from starlette.types import Message, Scope

__all__ = ("main", "measure")

IMPLS: Final = ("raw", "sse_sm")
ROOT: Final = Path(__file__).resolve().parent.parent


def _scope() -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 5000),
        "server": ("bench", 80),
    }


async def _never() -> Message:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def measure(impl: str, subscribers: int, events: int) -> dict[str, float]:
    """One run: returns cpu and wall seconds, deliveries and body messages."""
    import sse_sm
    from bench.apps import raw_stream
    from bench.scale import app as scale_app

    sent = [0]  # body messages with a body
    body_bytes = [0]

    async def send(message: Message) -> None:
        body = message.get("body")
        if body:
            sent[0] += 1
            body_bytes[0] += len(body)

    hub = sse_sm.Hub(policy=sse_sm.SlowConsumerPolicy.BLOCK, block_timeout=None)
    responses: list[Any] = []
    async with anyio.create_task_group() as tasks:
        for _ in range(subscribers):
            if impl == "sse_sm":
                response = sse_sm.EventSourceResponse(hub.subscribe("t"), ping=15)
                responses.append(response)
                tasks.start_soon(response, _scope(), _never, send)
            else:
                frames = scale_app._raw_frames()
                tasks.start_soon(raw_stream, frames, _scope(), _never, send)

        def joined() -> int:
            if impl == "sse_sm":
                return hub.statistics().subscribers
            return len(scale_app._RAW_QUEUES)

        while joined() < subscribers:  # noqa: ASYNC110 - polled setup, bounded by the worker's timeout
            await anyio.sleep(0.01)
        await anyio.sleep(0.1)
        base = sent[0]
        if os.environ.get("BENCH_FANOUT_GC") == "freeze":
            gc.freeze()
        elif os.environ.get("BENCH_FANOUT_GC") == "off":
            gc.disable()
        collections0 = sum(stat["collections"] for stat in gc.get_stats())
        profile = None
        if os.environ.get("BENCH_FANOUT_PROFILE"):
            import cProfile

            profile = cProfile.Profile()
            profile.enable()
        print("timed window starts", file=sys.stderr, flush=True)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for n in range(events):
            data = f"x {n} {time.monotonic_ns()}"
            if impl == "sse_sm":
                await hub.publish("t", data)
            else:
                await scale_app._raw_publish(data)
                if n % 16 == 15:  # the paced publisher's batch (bench.scale.app)
                    await anyio.lowlevel.checkpoint()
        if impl == "sse_sm":
            total = subscribers * events
            while hub.statistics().delivered < total:
                await anyio.lowlevel.checkpoint()
        else:
            while any(queue.frames for queue in scale_app._RAW_QUEUES.values()):
                await anyio.lowlevel.checkpoint()
        # Every frame is taken; let the last sends of each stream finish.
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        if profile is not None:
            profile.disable()
            profile.dump_stats(os.environ["BENCH_FANOUT_PROFILE"])
        tasks.cancel_scope.cancel()
    deliveries = subscribers * events
    return {
        "cpu": cpu,
        "wall": wall,
        "deliveries": deliveries,
        "messages": sent[0] - base,
        "per_cpu_s": deliveries / cpu,
        "collections": sum(stat["collections"] for stat in gc.get_stats()) - collections0,
        "gen2": gc.get_stats()[2]["collections"],
    }


def _worker(spec: dict[str, Any]) -> dict[str, float]:
    result: dict[str, float] = anyio.run(
        measure, spec["impl"], spec["subscribers"], spec["events"], backend=spec["backend"]
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__)
    parser.add_argument("--sizes", default="1000,10000", help="subscriber counts")
    parser.add_argument("--events", type=int, default=0, help="events (default 200k / N + 20)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--backend", default="asyncio", choices=("asyncio", "trio"))
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    print(
        "| impl | subscribers | events | deliveries per CPU s (median; each run) "
        "| messages per delivery | wall s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        events = args.events or 200_000 // size + 20
        for impl in args.impls.split(","):
            runs = []
            for _ in range(args.reps):
                spec = {
                    "impl": impl,
                    "subscribers": size,
                    "events": events,
                    "backend": args.backend,
                }
                out = subprocess.run(
                    [sys.executable, "-m", "bench.fanout", "--worker", json.dumps(spec)],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=True,
                )
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            runs.sort(key=lambda run: run["per_cpu_s"])
            mid = runs[len(runs) // 2]
            each = ", ".join(f"{run['per_cpu_s'] / 1000:.1f}" for run in runs)
            print(
                f"| {impl} | {size:,} | {events} | {mid['per_cpu_s'] / 1000:.1f} k "
                f"({each}) | "
                f"{mid['messages'] / mid['deliveries']:.3f} | {mid['wall']:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
