"""The connection state diagram as inline SVG, drawn from :data:`sse_sm.TRANSITIONS`.

The demo page embeds this next to the live events.  Nothing is hand-drawn:
the states, the arrows and every label come from the table's rows, so a row
added to the table shows up here (or, if this small layout cannot place it,
:func:`state_diagram_svg` refuses with a message instead of drawing a wrong
picture).

Layout: the states that have outgoing rows stand in one row, in the order the
table first mentions them; the final state (the one with no outgoing rows,
``CLOSED``) is a wide box underneath.  A row between neighbours is a straight
arrow, a row into the final state is an arrow down with one label line per
trigger, and the self-loops of a state are a loop above it.

Every label of a row carries ``data-arc="SOURCE:TRIGGER"``, every state box
``data-state="NAME"`` and every arrow ``data-edge="SOURCE>TARGET"``, which is
how the page's script counts and highlights what happens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Final

from sse_sm import TRANSITIONS, Arc, State
from sse_sm._diagram import arc_label, grouped

__all__ = ("arc_key", "state_diagram_svg")

MARGIN: Final = 16
BOX_WIDTH: Final = 150
BOX_HEIGHT: Final = 58
LINE: Final = 15
#: Width of one character of the 11px monospace labels, a little generous.
CHAR: Final = 6.8
#: Room left after each label for the count the page appends to it.
COUNTER_ROOM: Final = 5 * CHAR
#: Top of the row of states: room above it for the self-loops and their labels.
ROW_TOP: Final = 96


def arc_key(arc: Arc) -> str:
    """The name the page uses for one row: ``SOURCE:TRIGGER``."""
    return f"{arc.source.name}:{arc.trigger.name}"


def _ordered_states(rows: Sequence[Arc]) -> list[State]:
    seen: dict[State, None] = {}
    for arc in rows:
        seen.setdefault(arc.source)
        seen.setdefault(arc.target)
    return list(seen)


def _final_text(arc: Arc) -> str:
    """``TRIGGER / close_reason``: the label the design doc's diagram uses too."""
    return arc_label(arc)


def _label(arc: Arc, text: str, x: float, y: float, anchor: str = "start") -> str:
    key = escape(arc_key(arc))
    return (
        f'<text class="arc-label" data-arc="{key}" x="{x:.0f}" y="{y:.0f}" '
        f'text-anchor="{anchor}">{escape(text)}'
        f'<tspan class="arc-count" data-count-arc="{key}"></tspan></text>'
    )


def state_diagram_svg(rows: Iterable[Arc] = TRANSITIONS) -> str:
    """Inline SVG for the transition table ``rows``.

    Raises:
        ValueError: a row this layout cannot draw (an arc backwards, or
            between states that are not neighbours), or not exactly one
            final state.
    """
    table = tuple(rows)
    states = _ordered_states(table)
    has_exit = {arc.source for arc in table if not arc.is_self_loop}
    finals = [state for state in states if state not in has_exit]
    if len(finals) != 1:
        raise ValueError(f"the diagram needs exactly one final state, found {finals}")
    final = finals[0]
    top = [state for state in states if state is not final]
    column = {state: i for i, state in enumerate(top)}

    # One arrow per pair of states, its rows stacked: the grouping the design
    # doc's Mermaid diagram uses (sse_sm._diagram.grouped).
    forward: dict[tuple[State, State], list[Arc]] = {}
    into_final: dict[State, list[Arc]] = {}
    loops: dict[State, list[Arc]] = {}
    for group in grouped(table):
        source, target, arcs = group.source, group.target, list(group.arcs)
        if source is target:
            loops[source] = arcs
        elif target is final:
            into_final[source] = arcs
        elif column[target] == column[source] + 1:
            forward[(source, target)] = arcs
        else:
            raise ValueError(
                f"examples/_diagram_svg.py cannot draw {arc_key(arcs[0])} -> {target.name}: "
                "it draws arrows between neighbouring states and into the final state only"
            )

    # Columns as wide as their labels: the stack of arcs into the final state
    # hangs right of its arrow, a forward label sits between two boxes.
    def reach(state: State) -> float:
        """How far right of a state's centre its labels go."""
        texts = [_final_text(arc) for arc in into_final.get(state, [])]
        longest = max((len(text) for text in texts), default=0)
        return max(BOX_WIDTH / 2, 7 + longest * CHAR + COUNTER_ROOM)

    def gap_after(state: State) -> float:
        """Room between a state's box and the next one, for the forward labels."""
        labels = [
            arc.trigger.name
            for (source, _), arcs in forward.items()
            if source is state
            for arc in arcs
        ]
        longest = max((len(label) for label in labels), default=0)
        return max(40.0, longest * CHAR + COUNTER_ROOM + 16)

    centre: dict[State, float] = {}
    x = MARGIN + 24 + BOX_WIDTH / 2
    for state in top:
        centre[state] = x
        x += max(BOX_WIDTH + gap_after(state), reach(state) + 24)
    width = round(max(centre[top[-1]] + reach(top[-1]), centre[top[-1]] + BOX_WIDTH / 2 + 40))
    width += MARGIN

    longest_stack = max((len(arcs) for arcs in into_final.values()), default=0)
    final_top = ROW_TOP + BOX_HEIGHT + 34 + LINE * longest_stack
    final_height = 50
    height = final_top + final_height + MARGIN

    parts: list[str] = [
        f'<svg class="diagram" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="Connection state diagram generated from sse_sm.TRANSITIONS">',
        "<defs>"
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" class="arrow-head"/></marker>'
        "</defs>",
    ]

    # The initial pseudo-state: a dot with an arrow into the first state.
    first_left = centre[top[0]] - BOX_WIDTH / 2
    mid_y = ROW_TOP + BOX_HEIGHT / 2
    parts.append(f'<circle class="pseudo" cx="{MARGIN + 5}" cy="{mid_y}" r="5"/>')
    parts.append(
        f'<path class="edge" d="M{MARGIN + 10},{mid_y} L{first_left - 2:.0f},{mid_y}" '
        'marker-end="url(#arrow)"/>'
    )

    for (source, target), arcs in forward.items():
        x1 = centre[source] + BOX_WIDTH / 2
        x2 = centre[target] - BOX_WIDTH / 2
        parts.append(
            f'<path class="edge" data-edge="{source.name}>{target.name}" '
            f'd="M{x1:.0f},{mid_y} L{x2 - 2:.0f},{mid_y}" marker-end="url(#arrow)"/>'
        )
        for i, arc in enumerate(arcs):
            y = mid_y - 8 - LINE * (len(arcs) - 1 - i)
            parts.append(_label(arc, arc.trigger.name, (x1 + x2) / 2, y, "middle"))

    for state, arcs in loops.items():
        x = centre[state]
        left, right = x - BOX_WIDTH / 4, x + BOX_WIDTH / 4
        parts.append(
            f'<path class="edge loop" data-edge="{state.name}>{state.name}" '
            f'd="M{left:.0f},{ROW_TOP} C{left:.0f},{ROW_TOP - 34} {right:.0f},{ROW_TOP - 34} '
            f'{right:.0f},{ROW_TOP - 2}" marker-end="url(#arrow)"/>'
        )
        for i, arc in enumerate(arcs):
            y = ROW_TOP - 32 - LINE * (len(arcs) - 1 - i)
            parts.append(_label(arc, arc.trigger.name, x, y, "middle"))

    for state, arcs in into_final.items():
        x = centre[state]
        parts.append(
            f'<path class="edge" data-edge="{state.name}>{final.name}" '
            f'd="M{x:.0f},{ROW_TOP + BOX_HEIGHT} L{x:.0f},{final_top - 2}" '
            'marker-end="url(#arrow)"/>'
        )
        for i, arc in enumerate(arcs):
            text = _final_text(arc)
            parts.append(_label(arc, text, x + 7, ROW_TOP + BOX_HEIGHT + 20 + LINE * i))

    for state in top:
        x = centre[state] - BOX_WIDTH / 2
        parts.append(
            f'<g class="state" data-state="{state.name}">'
            f'<rect x="{x:.0f}" y="{ROW_TOP}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="10"/>'
            f'<text class="state-name" x="{centre[state]:.0f}" y="{ROW_TOP + 24}" '
            f'text-anchor="middle">{state.name}</text>'
            f'<text class="state-count" x="{centre[state]:.0f}" y="{ROW_TOP + 46}" '
            f'text-anchor="middle" data-count-state="{state.name}">0 now</text></g>'
        )

    final_width = width - 2 * MARGIN - 30
    parts.append(
        f'<g class="state final" data-state="{final.name}">'
        f'<rect x="{MARGIN}" y="{final_top}" width="{final_width}" height="{final_height}" '
        'rx="10"/>'
        f'<text class="state-name" x="{MARGIN + final_width / 2:.0f}" y="{final_top + 21}" '
        f'text-anchor="middle">{final.name}</text>'
        f'<text class="state-count" x="{MARGIN + final_width / 2:.0f}" y="{final_top + 40}" '
        f'text-anchor="middle" data-count-state="{final.name}">0 so far</text></g>'
    )
    # The final pseudo-state, right of the final box.
    end_x, end_y = width - MARGIN - 8, final_top + final_height / 2
    parts.append(
        f'<path class="edge" d="M{MARGIN + final_width},{end_y} L{end_x - 9},{end_y}" '
        'marker-end="url(#arrow)"/>'
        f'<circle class="pseudo-ring" cx="{end_x}" cy="{end_y}" r="7"/>'
        f'<circle class="pseudo" cx="{end_x}" cy="{end_y}" r="4"/>'
    )
    parts.append("</svg>")
    return "\n".join(parts)
