"""The state diagram, generated from :data:`~sse_sm._state.TRANSITIONS`.

docs/design.md embeds the Mermaid text between two marker lines; nothing
between them is written by hand.  Regenerate after editing the table::

    python -m sse_sm._diagram --write    # rewrite docs/design.md in place
    python -m sse_sm._diagram --check    # exit 1 if docs/design.md is stale
    python -m sse_sm._diagram            # print the diagram

Every arc comes from a table row.  Self-loops on one state are merged into one
labelled arc so the picture stays readable; an arc into CLOSED is labelled
with its trigger and the close reason it records.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from ._state import INITIAL_STATE, TRANSITIONS, Arc, State

__all__ = ("BEGIN_MARKER", "END_MARKER", "embed", "mermaid")

BEGIN_MARKER: Final = "<!-- BEGIN GENERATED: python -m sse_sm._diagram --write -->"
END_MARKER: Final = "<!-- END GENERATED -->"
DESIGN_DOC: Final = Path(__file__).resolve().parent.parent / "docs" / "design.md"


def _label(arc: Arc) -> str:
    if arc.close_reason is None:
        return arc.trigger.name
    return f"{arc.trigger.name} / {arc.close_reason.value}"


def mermaid(rows: Iterable[Arc] = TRANSITIONS) -> str:
    """Mermaid ``stateDiagram-v2`` text for the table, one line per arc."""
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL_STATE.name}"]
    loops: dict[State, list[str]] = {}
    for arc in rows:
        if arc.is_self_loop:
            loops.setdefault(arc.source, []).append(arc.trigger.name)
        else:
            lines.append(f"    {arc.source.name} --> {arc.target.name}: {_label(arc)}")
    for state, triggers in loops.items():
        lines.append(f"    {state.name} --> {state.name}: {', '.join(triggers)}")
    lines.append(f"    {State.CLOSED.name} --> [*]")
    return "\n".join(lines) + "\n"


def embed(document: str, diagram: str) -> str:
    """Replace what stands between the markers of ``document`` with ``diagram``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start = document.find(BEGIN_MARKER)
    end = document.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(f"the document needs the lines {BEGIN_MARKER!r} and {END_MARKER!r}")
    head = document[: start + len(BEGIN_MARKER)]
    block = f"\n```mermaid\n{diagram}```\n"
    return head + block + document[end:]


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
    expected = embed(current, diagram)
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
