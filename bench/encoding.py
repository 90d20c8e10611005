"""Encoding alone: nanoseconds to turn one item into its frame's bytes.

Each case is one ``timeit`` statement, the way the library's pump calls its
encoder (``sse_sm._events.encode_item(item, sep)``,
``sse_starlette.event.ensure_bytes(item, sep)``); ``raw`` is the f-string
(or ``str.replace`` for multi-line text) that writes the same bytes.  The
best of ``repeat`` runs of ``number`` loops is kept, as ``timeit`` advises.
"""

from __future__ import annotations

import timeit
from typing import Any, Final

__all__ = ("CASES", "measure")

#: Case name -> what it encodes.
CASES: Final[dict[str, str]] = {
    "data-only str": "a str item, one line",
    "data-only event": "a pre-built ServerSentEvent(data)",
    "dict event+data": 'a dict {"event", "data"}',
    "event id+event+data": "a pre-built ServerSentEvent(data, id, event)",
    "build + encode id+event+data": "ServerSentEvent(...) built, then encoded",
    "multi-line str (8 lines)": "an 8-line str item",
    "multi-line event (8 lines)": "a pre-built 8-line ServerSentEvent",
}

_DATA: Final = "value 00042"
_TEXT: Final = "\n".join(f"line {j} of event 42: some text" for j in range(8))


def _statements(impl: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Per case, the statement to time, and the globals it runs with."""
    env: dict[str, Any] = {"data": _DATA, "text": _TEXT, "sep": "\r\n", "ident": "1042"}
    env["item_dict"] = {"event": "tick", "data": _DATA}
    if impl == "raw":
        one = 'f"data: {data}\\r\\n\\r\\n".encode()'
        full = 'f"id: {ident}\\r\\nevent: tick\\r\\ndata: {data}\\r\\n\\r\\n".encode()'
        multi = '("data: " + text.replace("\\n", "\\r\\ndata: ") + "\\r\\n\\r\\n").encode()'
        return (
            {
                "data-only str": one,
                "data-only event": one,
                "dict event+data": 'f"event: tick\\r\\ndata: {data}\\r\\n\\r\\n".encode()',
                "event id+event+data": full,
                "build + encode id+event+data": full,
                "multi-line str (8 lines)": multi,
                "multi-line event (8 lines)": multi,
            },
            env,
        )
    event_class: Any
    if impl == "sse_sm":
        from sse_sm import ServerSentEvent as SseSmEvent
        from sse_sm._events import encode_item

        env["encode"] = encode_item
        event_class = SseSmEvent
    elif impl == "sse_starlette":
        from sse_starlette import ServerSentEvent as StarletteEvent
        from sse_starlette.event import ensure_bytes

        env["encode"] = ensure_bytes
        event_class = StarletteEvent
    else:
        raise ValueError(f"unknown implementation {impl!r}")
    env["Event"] = event_class
    env["event_one"] = event_class(_DATA)
    env["event_full"] = event_class(_DATA, id="1042", event="tick")
    env["event_multi"] = event_class(_TEXT)
    return (
        {
            "data-only str": "encode(data, sep)",
            "data-only event": "encode(event_one, sep)",
            "dict event+data": "encode(item_dict, sep)",
            "event id+event+data": "encode(event_full, sep)",
            "build + encode id+event+data": 'encode(Event(data, id=ident, event="tick"), sep)',
            "multi-line str (8 lines)": "encode(text, sep)",
            "multi-line event (8 lines)": "encode(event_multi, sep)",
        },
        env,
    )


def measure(impl: str, *, number: int, repeat: int) -> list[dict[str, Any]]:
    """Time every case; returns one record per case, with the frame it produced."""
    statements, env = _statements(impl)
    records: list[dict[str, Any]] = []
    for case, statement in statements.items():
        frame = eval(statement, dict(env))  # the bytes, for the cross-check
        timer = timeit.Timer(statement, globals=env)
        timer.timeit(number // 10 or 1)  # warm up
        best = min(timer.repeat(repeat=repeat, number=number))
        records.append(
            {
                "case": ["encoding", case],
                "metrics": {"encode_ns": best / number * 1e9},
                "digest": frame.hex(),
            }
        )
    return records
