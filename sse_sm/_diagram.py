"""The state diagram and the transition table of docs/design.md, generated from
:data:`~sse_sm._state.TRANSITIONS`.

docs/design.md holds two generated blocks, each between two marker lines;
nothing between them is written by hand.  Regenerate after editing the table::

    python -m sse_sm._diagram --write    # rewrite docs/design.md in place
    python -m sse_sm._diagram --check    # exit 1 if docs/design.md is stale
    python -m sse_sm._diagram            # print the diagram

Every arc comes from a table row.  Rows that join the same two states are
drawn as one arrow with their labels stacked (:func:`grouped`), so the 20
rows into ``CLOSED`` are three arrows, one per state they leave; an arc into
``CLOSED`` is labelled with its trigger and the close reason it records
(:func:`arc_label`).  The demo's SVG (``examples/_diagram_svg.py``) groups and
labels the arcs with the same two functions.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

from ._state import INITIAL_STATE, TRANSITIONS, Arc, State

__all__ = (
    "BEGIN_MARKER",
    "END_MARKER",
    "TABLE_BEGIN_MARKER",
    "TABLE_END_MARKER",
    "ArcGroup",
    "arc_label",
    "embed",
    "grouped",
    "markdown_table",
    "mermaid",
)

BEGIN_MARKER: Final = "<!-- BEGIN GENERATED: python -m sse_sm._diagram --write -->"
END_MARKER: Final = "<!-- END GENERATED -->"
TABLE_BEGIN_MARKER: Final = "<!-- BEGIN TABLE: python -m sse_sm._diagram --write -->"
TABLE_END_MARKER: Final = "<!-- END TABLE -->"
DESIGN_DOC: Final = Path(__file__).resolve().parent.parent / "docs" / "design.md"


def arc_label(arc: Arc) -> str:
    """``TRIGGER``, or ``TRIGGER / close_reason`` for an arc into ``CLOSED``."""
    if arc.close_reason is None:
        return arc.trigger.name
    return f"{arc.trigger.name} / {arc.close_reason.value}"


@final
@dataclass(frozen=True, slots=True)
class ArcGroup:
    """The rows that join one source state to one target state, in table order."""

    source: State
    target: State
    arcs: tuple[Arc, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(arc_label(arc) for arc in self.arcs)


def grouped(rows: Iterable[Arc] = TRANSITIONS) -> list[ArcGroup]:
    """One group per (source, target) pair, in the order the pairs first appear."""
    groups: dict[tuple[State, State], list[Arc]] = {}
    for arc in rows:
        groups.setdefault((arc.source, arc.target), []).append(arc)
    return [ArcGroup(source, target, tuple(arcs)) for (source, target), arcs in groups.items()]


def mermaid(rows: Iterable[Arc] = TRANSITIONS) -> str:
    """Mermaid ``stateDiagram-v2`` text for the table: one arrow per pair of states."""
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL_STATE.name}"]
    for group in grouped(rows):
        label = "<br/>".join(group.labels)
        lines.append(f"    {group.source.name} --> {group.target.name}: {label}")
    lines.append(f"    {State.CLOSED.name} --> [*]")
    return "\n".join(lines) + "\n"


def markdown_table(rows: Iterable[Arc] = TRANSITIONS) -> str:
    """The table as Markdown, row for row and in order."""
    lines = ["| from | trigger | to | close reason |", "|---|---|---|---|"]
    for arc in rows:
        reason = "—" if arc.close_reason is None else f"`{arc.close_reason.value}`"
        lines.append(
            f"| `{arc.source.name}` | `{arc.trigger.name}` | `{arc.target.name}` | {reason} |"
        )
    return "\n".join(lines) + "\n"


def _replace_between(document: str, begin: str, end: str, block: str) -> str:
    start = document.find(begin)
    stop = document.find(end, start + 1) if start >= 0 else -1
    if start < 0 or stop < start:
        raise ValueError(f"the document needs the lines {begin!r} and {end!r}")
    return document[: start + len(begin)] + "\n" + block + document[stop:]


def embed(document: str, diagram: str, table: str | None = None) -> str:
    """Put ``diagram`` (and ``table``, when given) between their markers in ``document``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    document = _replace_between(document, BEGIN_MARKER, END_MARKER, f"```mermaid\n{diagram}```\n")
    if table is not None:
        document = _replace_between(document, TABLE_BEGIN_MARKER, TABLE_END_MARKER, table)
    return document


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sse_sm._diagram", description=__doc__)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="update the document in place")
    action.add_argument("--check", action="store_true", help="exit 1 if the document is stale")
    parser.add_argument("--doc", type=Path, default=DESIGN_DOC, help="default: docs/design.md")
    args = parser.parse_args(argv)
    diagram = mermaid()
    if not (args.write or args.check):
        sys.stdout.write(diagram)
        return 0
    current = args.doc.read_text(encoding="utf-8")
    expected = embed(current, diagram, markdown_table())
    if args.check:
        if current != expected:
            print(f"{args.doc} is stale: run python -m sse_sm._diagram --write", file=sys.stderr)
            return 1
        return 0
    if current != expected:
        args.doc.write_text(expected, encoding="utf-8")
        print(f"updated {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
