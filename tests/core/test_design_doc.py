"""docs/design.md is derived from the table: its diagram and its table must not go stale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sse_sm import TRANSITIONS
from sse_sm._diagram import (
    BEGIN_MARKER,
    END_MARKER,
    TABLE_BEGIN_MARKER,
    TABLE_END_MARKER,
    arc_label,
    embed,
    grouped,
    main,
    markdown_table,
    mermaid,
)

DESIGN = Path(__file__).resolve().parents[2] / "docs" / "design.md"
ROW = re.compile(r"^\| `(\w+)` \| `(\w+)` \| `(\w+)` \| (?:`(\w+)`|—) \|$")


def test_the_embedded_diagram_is_the_generated_one() -> None:
    assert main(["--check", "--doc", str(DESIGN)]) == 0, (
        "docs/design.md is stale: run python -m sse_sm._diagram --write"
    )


def test_the_check_fails_on_a_stale_diagram(tmp_path: Path) -> None:
    stale = tmp_path / "design.md"
    stale.write_text(
        f"# doc\n{BEGIN_MARKER}\n```mermaid\nold\n```\n{END_MARKER}\n"
        f"{TABLE_BEGIN_MARKER}\n| old |\n{TABLE_END_MARKER}\n"
    )
    assert main(["--check", "--doc", str(stale)]) == 1
    assert main(["--write", "--doc", str(stale)]) == 0
    assert main(["--check", "--doc", str(stale)]) == 0
    assert mermaid() in stale.read_text()
    assert markdown_table() in stale.read_text()


def test_the_check_fails_on_a_stale_table_alone(tmp_path: Path) -> None:
    current = DESIGN.read_text(encoding="utf-8")
    stale = tmp_path / "design.md"
    stale.write_text(current.replace("| `OPEN` | `STARTED` |", "| `OPEN` | `STARTED_ONCE` |"))
    assert main(["--check", "--doc", str(stale)]) == 1


def test_every_row_is_a_label_on_the_arrow_between_its_states() -> None:
    arrows = {
        line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip().split("<br/>")
        for line in mermaid().splitlines()
        if " --> " in line and "[*]" not in line
    }
    for arc in TRANSITIONS:
        assert arc_label(arc) in arrows[f"{arc.source.name} --> {arc.target.name}"], arc
    assert sum(len(labels) for labels in arrows.values()) == len(TRANSITIONS)


def test_one_arrow_per_pair_of_states() -> None:
    pairs = [(group.source, group.target) for group in grouped()]
    assert len(pairs) == len(set(pairs)) == len({(a.source, a.target) for a in TRANSITIONS})
    into_closed = [group for group in grouped() if group.target.name == "CLOSED"]
    assert len(into_closed) == 3


def test_embed_refuses_a_document_without_markers() -> None:
    with pytest.raises(ValueError, match="needs the lines"):
        embed("# no markers here\n", mermaid())


def test_the_markdown_table_matches_the_transition_table() -> None:
    text = DESIGN.read_text(encoding="utf-8")
    block = text.split(TABLE_BEGIN_MARKER, 1)[1].split(TABLE_END_MARKER, 1)[0]
    rows = [ROW.match(line) for line in block.strip().splitlines()[2:]]
    assert all(rows), "every table row must have the form | `FROM` | `TRIGGER` | `TO` | reason |"
    documented = [(m[1], m[2], m[3], m[4]) for m in rows if m]
    expected = [
        (
            arc.source.name,
            arc.trigger.name,
            arc.target.name,
            None if arc.close_reason is None else arc.close_reason.value,
        )
        for arc in TRANSITIONS
    ]
    assert documented == expected
