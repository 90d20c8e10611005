"""One repetition of one implementation, in a fresh process.

``python -m bench.worker '<json spec>'`` runs what the spec names and prints
one JSON object on stdout: ``{"records": [...]}``, each record a ``case``
(the row's key), its ``metrics`` and, where the bytes sent are comparable
across implementations, a ``digest`` of them.  The driver
(``python -m bench``) starts these; running one by hand is for debugging:

    python -m bench.worker '{"section": "encoding", "impl": "sse_sm", "number": 10000, "repeat": 3}'
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio

__all__ = ("main", "run_spec")


def _on_backends(
    spec: dict[str, Any], job: Callable[[str], Awaitable[list[dict[str, Any]]]]
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for backend in spec["backends"]:
        records.extend(anyio.run(job, backend, backend=backend))
    return records


def run_spec(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one worker spec in this process and return its records.

    A spec with ``parts`` runs each part in turn, in this same process.
    """
    impl = spec["impl"]
    if "parts" in spec:
        records: list[dict[str, Any]] = []
        for part in spec["parts"]:
            records.extend(run_spec({**part, "impl": impl}))
        return records
    section = spec["section"]
    if section == "throughput":
        from bench.inproc import throughput

        job = partial(
            throughput,
            impl,
            kinds=spec["kinds"],
            timeouts=spec["timeouts"],
            n=spec["n"],
            inner=spec["inner"],
        )
        return _on_backends(spec, job)
    if section == "idle":
        from bench.inproc import idle

        return _on_backends(
            spec,
            partial(
                idle,
                impl,
                sizes=spec["sizes"],
                traced_sizes=spec["traced_sizes"],
                rss=spec["rss"],
            ),
        )
    if section == "disconnect":
        from bench.inproc import disconnect

        job = partial(disconnect, impl, streams=spec["streams"], stagger=spec["stagger"])
        return _on_backends(spec, job)
    if section == "encoding":
        from bench.encoding import measure

        return measure(impl, number=spec["number"], repeat=spec["repeat"])
    if section == "metrics":
        from bench.metrics import measure as measure_metrics

        return measure_metrics(spec)
    raise ValueError(f"unknown section {section!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    records = run_spec(json.loads(argv[1]))
    json.dump({"records": records}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
