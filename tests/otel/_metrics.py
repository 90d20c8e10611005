"""Reading what the SDK's in-memory reader collected, as plain numbers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)

#: (metric name, sorted attribute pairs) -> value; a histogram's value is its count.
Points = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass(frozen=True)
class Reading:
    """One collection of the ``sse_sm`` meter."""

    points: Points
    #: Histogram sums, same keys.
    sums: Points
    units: dict[str, str]

    def get(self, name: str, **attributes: str) -> float | None:
        key = (name, tuple(sorted((k.replace("__", "."), v) for k, v in attributes.items())))
        return self.points.get(key)

    def value(self, name: str, attributes: Mapping[str, str] | None = None) -> float:
        """The value, 0 if the series is absent (nothing observed yet)."""
        key = (name, tuple(sorted((attributes or {}).items())))
        return self.points.get(key, 0)

    def names(self) -> set[str]:
        return {name for name, _ in self.points}

    def series(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {attrs: value for (metric, attrs), value in self.points.items() if metric == name}


class Metrics:
    """Collects from an in-memory reader (on whatever thread calls it)."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.reader = reader

    def read(self) -> Reading:
        points: Points = {}
        sums: Points = {}
        units: dict[str, str] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                if scope.scope.name != "sse_sm":
                    continue
                for metric in scope.metrics:
                    units[metric.name] = metric.unit or ""
                    for point in metric.data.data_points:
                        key = (
                            metric.name,
                            tuple(sorted((k, str(v)) for k, v in (point.attributes or {}).items())),
                        )
                        if isinstance(point, HistogramDataPoint):
                            points[key] = point.count
                            sums[key] = point.sum
                        else:
                            assert isinstance(point, NumberDataPoint)
                            points[key] = point.value
        return Reading(points, sums, units)


def delta(after: Reading, before: Reading, name: str, **attributes: str) -> float:
    """``after - before`` for one series (attribute keys with ``__`` for dots)."""
    fixed = {k.replace("__", "."): v for k, v in attributes.items()}
    return after.value(name, fixed) - before.value(name, fixed)
