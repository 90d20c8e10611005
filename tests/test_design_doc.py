"""docs/design.md is derived from the table: its diagram and its table must not go stale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sse_sm import TRANSITIONS
from sse_sm._diagram import BEGIN_MARKER, END_MARKER, embed, main, mermaid

DESIGN = Path(__file__).resolve().parent.parent / "docs" / "design.md"
ROW = re.compile(r"^\| `(\w+)` \| `(\w+)` \| `(\w+)` \| (?:`(\w+)`|—) \|$")


def test_the_embedded_diagram_is_the_generated_one() -> None:
    assert main(["--check", "--doc", str(DESIGN)]) == 0, (
        "docs/design.md is stale: run python -m sse_sm._diagram --write"
    )


def test_the_check_fails_on_a_stale_diagram(tmp_path: Path) -> None:
    stale = tmp_path / "design.md"
    stale.write_text(f"# doc\n{BEGIN_MARKER}\n```mermaid\nold\n```\n{END_MARKER}\n")
    assert main(["--check", "--doc", str(stale)]) == 1
    assert main(["--write", "--doc", str(stale)]) == 0
    assert main(["--check", "--doc", str(stale)]) == 0
    assert mermaid() in stale.read_text()


def test_every_row_is_an_arc_of_the_diagram() -> None:
    diagram = mermaid()
    for arc in TRANSITIONS:
        assert arc.trigger.name in diagram
        if not arc.is_self_loop:
            assert f"{arc.source.name} --> {arc.target.name}: {arc.trigger.name}" in diagram


def test_embed_refuses_a_document_without_markers() -> None:
    with pytest.raises(ValueError, match="needs the lines"):
        embed("# no markers here\n", mermaid())


def test_the_markdown_table_matches_the_transition_table() -> None:
    text = DESIGN.read_text(encoding="utf-8")
    block = text.split("<!-- BEGIN TABLE -->", 1)[1].split("<!-- END TABLE -->", 1)[0]
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
