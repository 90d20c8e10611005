"""Turning repetitions into the Markdown table: medians, same-run ratios, targets.

A ratio is always taken within one repetition (``impl / raw`` of the same
repetition, so both ran back to back on the same machine state) and the table
shows the median of those ratios over the repetitions, with their range.
Values are the median over repetitions of each implementation's own value.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

__all__ = ("Results", "Target", "render_table", "render_targets", "target_for")

Case = tuple[str, ...]


def _rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M/s"
    return f"{value / 1e3:.1f} k/s"


def _ns(value: float) -> str:
    if value >= 1e4:
        return f"{value / 1e3:.1f} µs"
    if value >= 1e3:
        return f"{value / 1e3:.2f} µs"
    return f"{value:.0f} ns"


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} µs"


def _bytes(value: float) -> str:
    return f"{value / 1024:.1f} KiB"


def _count(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


#: metric -> (label in the table, formatter)
METRICS: Final[dict[str, tuple[str, Callable[[float], str]]]] = {
    "events_per_s": ("events/s", _rate),
    "cpu_ns": ("CPU/event", _ns),
    "tasks": ("tasks/connection", _count),
    "memory": ("memory/connection (traced)", _bytes),
    "rss": ("memory/connection (RSS)", _bytes),
    "open_s": ("open all", _seconds),
    "close_s": ("tear down all", _seconds),
    "median_s": ("latency median", _seconds),
    "p99_s": ("latency p99", _seconds),
    "encode_ns": ("ns/event", _ns),
    "client_cpu_share": ("client CPU ÷ server CPU", lambda value: f"{value:.0%}"),
}
#: Metrics shown for context only: no ratio to raw.
NO_RATIO: Final = frozenset({"client_cpu_share"})


@dataclass(frozen=True)
class Target:
    """A goal for sse_sm: on the ratio to raw, or on its own value."""

    text: str
    on_ratio: bool
    bound: float
    at_least: bool

    def met(self, value: float) -> bool:
        return value >= self.bound if self.at_least else value <= self.bound


def target_for(case: Case, metric: str) -> Target | None:
    """The issue's targets, by row."""
    section = case[0]
    if section == "in process" and metric == "events_per_s":
        bound = 0.5 if case[1] == "asyncio" else 0.4
        return Target(f"≥ {bound}x raw", on_ratio=True, bound=bound, at_least=True)
    if section == "server" and case[1] == "uvicorn" and metric == "events_per_s":
        return Target("≥ 0.9x raw", on_ratio=True, bound=0.9, at_least=True)
    if section == "idle" and metric == "tasks":
        return Target("≤ 2", on_ratio=False, bound=2.0, at_least=False)
    if section == "idle" and metric in ("memory", "rss"):
        return Target("≤ 1.3x raw", on_ratio=True, bound=1.3, at_least=False)
    if section == "disconnect" and metric == "p99_s":
        return Target("≤ 1.1x raw", on_ratio=True, bound=1.1, at_least=False)
    if section == "encoding" and metric == "encode_ns" and case[1].startswith("data-only"):
        return Target("< 250 ns", on_ratio=False, bound=250.0, at_least=False)
    return None


@dataclass
class Results:
    """Every measurement: case -> metric -> impl -> repetition -> value."""

    values: dict[Case, dict[str, dict[str, dict[int, float]]]] = field(default_factory=dict)
    digests: dict[Case, dict[str, set[str]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, case: Case, impl: str, rep: int, metrics: dict[str, float]) -> None:
        by_metric = self.values.setdefault(case, {})
        for metric, value in metrics.items():
            by_metric.setdefault(metric, {}).setdefault(impl, {})[rep] = value

    def add_digest(self, case: Case, impl: str, digest: str) -> None:
        self.digests.setdefault(case, {}).setdefault(impl, set()).add(digest)

    def median(self, case: Case, metric: str, impl: str) -> float | None:
        reps = self.values.get(case, {}).get(metric, {}).get(impl, {})
        return statistics.median(reps.values()) if reps else None

    def ratios(self, case: Case, metric: str, impl: str) -> list[float]:
        """``impl ÷ raw`` for each repetition in which both were measured."""
        by_impl = self.values.get(case, {}).get(metric, {})
        mine, raw = by_impl.get(impl, {}), by_impl.get("raw", {})
        return [mine[rep] / raw[rep] for rep in sorted(mine) if rep in raw and raw[rep] > 0]

    def same_bytes(self, case: Case) -> bool:
        """Whether every implementation sent the same bytes (where that was checked)."""
        seen = {d for digests in self.digests.get(case, {}).values() for d in digests}
        return len(seen) <= 1


def _ratio_cell(ratios: list[float], with_range: bool) -> str:
    if not ratios:
        return "—"
    middle = f"{statistics.median(ratios):.2f}x"
    if with_range and len(ratios) > 1:
        return f"{middle} ({min(ratios):.2f} to {max(ratios):.2f})"
    return middle


def _verdict(results: Results, case: Case, metric: str) -> str:
    target = target_for(case, metric)
    if target is None:
        return ""
    if target.on_ratio:
        ratios = results.ratios(case, metric, "sse_sm")
        value = statistics.median(ratios) if ratios else None
    else:
        value = results.median(case, metric, "sse_sm")
    if value is None:
        return f"{target.text}: not measured"
    return f"{target.text}: {'met' if target.met(value) else '**missed**'}"


def render_table(results: Results) -> str:
    """One Markdown table, a row per (case, metric)."""
    lines = [
        "| section | case | metric | raw | sse_sm | sse-starlette "
        "| sse_sm ÷ raw (range) | sse-starlette ÷ raw | target for sse_sm |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for case, by_metric in results.values.items():
        if case[0] == "metrics":
            continue  # its own table (bench.metrics): builds of sse_sm, not implementations
        label = ", ".join(case[1:])
        if not results.same_bytes(case):
            label += " (bytes differ!)"
        for metric in by_metric:
            name, fmt = METRICS[metric]
            cells = []
            for impl in ("raw", "sse_sm", "sse_starlette"):
                value = results.median(case, metric, impl)
                cells.append("—" if value is None else fmt(value))
            if metric in NO_RATIO:
                ratio_cells = "— | —"
            else:
                ratio_cells = (
                    f"{_ratio_cell(results.ratios(case, metric, 'sse_sm'), True)}"
                    f" | {_ratio_cell(results.ratios(case, metric, 'sse_starlette'), False)}"
                )
            lines.append(
                f"| {case[0]} | {label} | {name} | "
                + " | ".join(cells)
                + f" | {ratio_cells} | {_verdict(results, case, metric)} |"
            )
    return "\n".join(lines)


def render_targets(results: Results) -> str:
    """A short list: each target row, met or missed."""
    met = missed = 0
    rows = []
    for case, by_metric in results.values.items():
        if case[0] == "metrics":
            continue
        for metric in by_metric:
            verdict = _verdict(results, case, metric)
            if not verdict:
                continue
            if verdict.endswith("met"):
                met += 1
            else:
                missed += 1
                rows.append(f"- missed: {case[0]}, {', '.join(case[1:])}, {METRICS[metric][0]}")
    return "\n".join([f"Targets: {met} met, {missed} missed.", *rows])
