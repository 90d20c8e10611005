"""What metrics cost: the same sse_sm stream with metrics off, on, and without the hook.

The ``metrics`` section runs the in-process throughput measurement
(:func:`bench.inproc.throughput`, ``ping=0``, no ``send_timeout``) for sse_sm
only, in three builds, each in a fresh process, back to back in every
repetition:

* ``no hook``: this checkout's ``sse_sm/`` copied to a temporary directory
  with the driver's send hook (the three lines of ``_connection.py`` that
  read ``_hooks.send_recorder``) cut out, and put first on ``sys.path``:
  sse_sm as it would be without metrics support at all;
* ``off``: this checkout, metrics never turned on (what every user who does
  not call ``sse_sm.otel.instrument`` runs);
* ``timer``: this checkout with a send recorder that does nothing: the
  cost of sse_sm's own timing wrapper (two clock reads and a call per event);
* ``on``: this checkout after ``sse_sm.otel.instrument()`` on an SDK
  ``MeterProvider`` with an in-memory reader: every event's send is timed
  into the histogram (the observable instruments cost nothing until a
  collection, which this run never makes).  ``instrument(send_duration=False)``
  runs the streams exactly as ``off`` does (no recorder is set).

The table gives ``off ÷ no hook`` (what the hook costs when metrics are off:
1.00 means nothing measurable), ``timer ÷ off`` and ``on ÷ off``, each the
median of the ratios within one repetition, with their range.  CPU per event
(``time.process_time``) is the steadier figure on a shared machine; events/s
is wall time and moves with whatever else runs.
"""

from __future__ import annotations

import re
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import anyio

from bench.report import METRICS, Results

__all__ = ("KINDS", "VARIANTS", "measure", "no_hook_build", "render_metrics_table")

#: The builds compared, in the order each repetition runs them, and their column titles.
VARIANTS: Final = {
    "nohook": "no hook",
    "off": "metrics off",
    "timer": "timer only",
    "on": "metrics on (SDK)",
}
#: Pre-encoded bytes (the cheapest event: any per-event cost shows most) and a small dict.
KINDS: Final = ("bytes", "dict")
#: The hook as it stands in ``sse_sm/_connection.py``; the no-hook build removes it.
_HOOK: Final = re.compile(
    r"\n[ ]+recorder = _hooks\.send_recorder[^\n]*\n"
    r"[ ]+if recorder is not None:\n"
    r"[ ]+send = timed_send\(send, recorder\)\n"
)


@contextmanager
def no_hook_build(root: Path) -> Iterator[Path]:
    """A copy of ``root/sse_sm`` without the send hook; yields the directory to put on sys.path.

    Raises:
        RuntimeError: the hook is not where this function expects it (the
            driver changed): the comparison would be meaningless.
    """
    directory = Path(tempfile.mkdtemp(prefix="sse_sm-nohook-"))
    try:
        shutil.copytree(
            root / "sse_sm", directory / "sse_sm", ignore=shutil.ignore_patterns("__pycache__")
        )
        connection = directory / "sse_sm" / "_connection.py"
        text = connection.read_text(encoding="utf-8")
        cut, found = _HOOK.subn("\n", text)
        if found != 1:
            raise RuntimeError(f"the send hook was found {found} times in _connection.py, not once")
        connection.write_text(cut, encoding="utf-8")
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def measure(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The worker's side: set up the variant in this fresh process, then measure."""
    variant = spec["variant"]
    if variant == "nohook":
        sys.path.insert(0, spec["sse_sm_path"])
    import sse_sm
    import sse_sm._hooks

    where = Path(sse_sm.__file__).resolve()
    if variant == "nohook" and not where.is_relative_to(Path(spec["sse_sm_path"]).resolve()):
        raise RuntimeError(f"the no-hook build was not imported: sse_sm is {where}")
    if variant == "on":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        import sse_sm.otel

        sse_sm.otel.instrument(MeterProvider(metric_readers=[InMemoryMetricReader()]))
        if sse_sm._hooks.send_recorder is None:
            raise RuntimeError("instrument() set no send recorder")
    elif variant == "timer":
        sse_sm._hooks.set_send_recorder(_ignore)
    elif sse_sm._hooks.send_recorder is not None:
        raise RuntimeError(f"metrics are on in the {variant!r} build")

    from bench.inproc import throughput

    records: list[dict[str, Any]] = []
    for backend in spec["backends"]:
        found = anyio.run(
            _throughput,
            throughput,
            backend,
            spec["kinds"],
            spec["n"],
            spec["inner"],
            backend=backend,
        )
        for record in found:
            _, backend_name, kind, _ = record["case"]
            records.append({"case": ["metrics", backend_name, kind], "metrics": record["metrics"]})
    return records


def _ignore(seconds: float) -> None:
    """The ``timer`` build's recorder: the timing wrapper's cost, and nothing else."""


async def _throughput(
    throughput: Any, backend: str, kinds: list[str], n: int, inner: int
) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await throughput(
        "sse_sm", backend, kinds=kinds, timeouts=[None], n=n, inner=inner
    )
    return result


def _ratios(results: Results, case: tuple[str, ...], metric: str, mine: str, base: str) -> str:
    by_impl = results.values.get(case, {}).get(metric, {})
    top, bottom = by_impl.get(mine, {}), by_impl.get(base, {})
    ratios = [top[rep] / bottom[rep] for rep in sorted(top) if rep in bottom and bottom[rep] > 0]
    if not ratios:
        return "—"
    middle = f"{statistics.median(ratios):.3f}x"
    if len(ratios) > 1:
        return f"{middle} ({min(ratios):.3f} to {max(ratios):.3f})"
    return middle


def render_metrics_table(results: Results) -> str:
    """The ``metrics`` rows: each build's median, and the two same-run ratios."""
    cases = [case for case in results.values if case[0] == "metrics"]
    if not cases:
        return ""
    lines = [
        "### What metrics cost (sse_sm in process, ping=0, no send_timeout)\n",
        "| case | metric | "
        + " | ".join(VARIANTS.values())
        + " | off ÷ no hook (range) | timer ÷ off (range) | on ÷ off (range) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        for metric, by_impl in results.values[case].items():
            name, fmt = METRICS[metric]
            cells = []
            for variant in VARIANTS:
                reps = by_impl.get(variant, {})
                cells.append(fmt(statistics.median(reps.values())) if reps else "—")
            lines.append(
                f"| {', '.join(case[1:])} | {name} | "
                + " | ".join(cells)
                + f" | {_ratios(results, case, metric, 'off', 'nohook')}"
                + f" | {_ratios(results, case, metric, 'timer', 'off')}"
                + f" | {_ratios(results, case, metric, 'on', 'off')} |"
            )
    return "\n".join(lines)
