"""The event encoder: ``(JSON)ServerSentEvent``, ``encode_item`` and ``ensure_bytes``.

Examples pin each rule of the encoder's contract; the property tests feed the
encoder's output to the WHATWG parser in ``sse_sm.testing`` and check that a
client sees exactly the event that was meant, whatever the text.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sse_sm import JSONServerSentEvent, ServerSentEvent, ensure_bytes
from sse_sm._events import SEPARATORS, encode_item, validate_sep
from sse_sm.testing import Event, EventStreamParser, parse_event_stream

SEP_IDS = ("crlf", "cr", "lf")

#: The spec's end-of-line sequences: the only places a line may be split.
EOLS = ("\r\n", "\r", "\n")
#: Characters that ``str.splitlines`` treats as line breaks but the spec does not.
NOT_EOLS = ("\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e")

#: What a refusal of NaN or infinity says (the json module's wording, or ours).
_NOT_JSON = r"(?i)nan|inf|float|json"

FIELDS_SETTINGS = settings(max_examples=150, deadline=None)


# --------------------------------------------------------------------------- helpers


def _normalise_eol(text: str) -> str:
    """What a client's ``data`` buffer holds for ``text``: CRLF and CR read as LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _as_utf8_would_show(text: str) -> str:
    """``text`` with surrogate pairs joined and every other surrogate read as U+FFFD."""
    out: list[str] = []
    i = 0
    while i < len(text):
        code = ord(text[i])
        if 0xD800 <= code <= 0xDBFF and i + 1 < len(text) and 0xDC00 <= ord(text[i + 1]) <= 0xDFFF:
            low = ord(text[i + 1])
            out.append(chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)))
            i += 2
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\ufffd")
            i += 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _texts(
    *, exclude: str = "", surrogates: bool = False, max_size: int = 20
) -> st.SearchStrategy[str]:
    """Text rich in line breaks (spec ones and Unicode ones) and, if asked, surrogates."""
    pieces: list[st.SearchStrategy[str]] = [
        st.characters(codec="utf-8", exclude_characters=exclude),
        st.sampled_from([b for b in EOLS + NOT_EOLS if not set(b) & set(exclude)]),
    ]
    if surrogates:
        pieces.append(st.characters(categories=["Cs"]))
    return st.lists(st.one_of(pieces), max_size=max_size).map("".join)


def _one(stream: bytes) -> Event:
    events = parse_event_stream(stream)
    assert len(events) == 1, events
    return events[0]


# --------------------------------------------------------------------------- wire layout


def test_data_only_event() -> None:
    assert ServerSentEvent("hello").encode() == b"data: hello\r\n\r\n"


def test_field_order_is_comment_id_event_data_retry() -> None:
    sse = ServerSentEvent("d", event="e", id="i", retry=5, comment="c")
    assert sse.encode() == b": c\r\nid: i\r\nevent: e\r\ndata: d\r\nretry: 5\r\n\r\n"


@pytest.mark.parametrize("sep", SEPARATORS, ids=SEP_IDS)
def test_every_line_and_the_event_end_with_sep(sep: str) -> None:
    sse = ServerSentEvent("a\nb", event="e", id=1, retry=0, comment="c", sep=sep)
    expected = f": c{sep}id: 1{sep}event: e{sep}data: a{sep}data: b{sep}retry: 0{sep}{sep}"
    assert sse.encode() == expected.encode()


def test_sep_none_is_crlf() -> None:
    assert ServerSentEvent("x", sep=None).encode() == b"data: x\r\n\r\n"
    assert ServerSentEvent("x", sep=None).sep == "\r\n"
    assert ServerSentEvent.DEFAULT_SEPARATOR == "\r\n"


def test_empty_event_is_one_blank_line() -> None:
    assert ServerSentEvent().encode() == b"\r\n"
    assert ServerSentEvent(sep="\n").encode() == b"\n"


def test_data_none_writes_no_data_line() -> None:
    assert ServerSentEvent(None, id="7").encode() == b"id: 7\r\n\r\n"
    assert ServerSentEvent(comment="ping").encode() == b": ping\r\n\r\n"


def test_empty_data_writes_an_empty_data_line() -> None:
    assert ServerSentEvent("").encode() == b"data: \r\n\r\n"


def test_empty_comment_writes_a_bare_comment_line() -> None:
    assert ServerSentEvent(comment="").encode() == b": \r\n\r\n"


def test_empty_id_writes_an_empty_id_line() -> None:
    assert ServerSentEvent(id="").encode() == b"id: \r\n\r\n"


def test_empty_event_name_writes_an_empty_event_line() -> None:
    assert ServerSentEvent("x", event="").encode() == b"event: \r\ndata: x\r\n\r\n"


@pytest.mark.parametrize(("id", "wire"), [(42, b"id: 42"), (0, b"id: 0"), (-3, b"id: -3")])
def test_int_id_is_written_in_decimal(id: int, wire: bytes) -> None:
    sse = ServerSentEvent("x", id=id)
    assert sse.id == str(id)
    assert sse.encode() == wire + b"\r\ndata: x\r\n\r\n"


def test_retry_zero_is_written() -> None:
    assert ServerSentEvent(retry=0).encode() == b"retry: 0\r\n\r\n"


def test_values_keep_their_leading_and_trailing_spaces() -> None:
    sse = ServerSentEvent(" d ", event=" e ", id=" i ", comment=" c ")
    assert sse.encode() == b":  c \r\nid:  i \r\nevent:  e \r\ndata:  d \r\n\r\n"


# --------------------------------------------------------------------------- line splitting


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        ("a\nb", ["a", "b"]),
        ("a\rb", ["a", "b"]),
        ("a\r\nb", ["a", "b"]),
        ("a\n\rb", ["a", "", "b"]),
        ("a\r\rb", ["a", "", "b"]),
        ("a\n\nb", ["a", "", "b"]),
        ("a\r\n\r\nb", ["a", "", "b"]),
        ("\n", ["", ""]),
        ("a\n", ["a", ""]),
        ("\ra", ["", "a"]),
        ("a\r\n", ["a", ""]),
    ],
)
def test_data_is_split_on_crlf_cr_and_lf(data: str, lines: list[str]) -> None:
    expected = "".join(f"data: {line}\n" for line in lines) + "\n"
    assert ServerSentEvent(data, sep="\n").encode() == expected.encode()


@pytest.mark.parametrize(
    ("comment", "lines"),
    [("a\nb", ["a", "b"]), ("a\rb", ["a", "b"]), ("a\r\nb", ["a", "b"]), ("\n", ["", ""])],
)
def test_comment_is_split_on_crlf_cr_and_lf(comment: str, lines: list[str]) -> None:
    expected = "".join(f": {line}\n" for line in lines) + "\n"
    assert ServerSentEvent(comment=comment, sep="\n").encode() == expected.encode()


@pytest.mark.parametrize("brk", NOT_EOLS, ids=[f"U+{ord(c):04X}" for c in NOT_EOLS])
def test_other_unicode_line_breaks_are_not_split(brk: str) -> None:
    text = f"a{brk}b"
    wire = ServerSentEvent(text, comment=text, event=text, id=text, sep="\n").encode()
    t = text.encode()
    assert wire == b": " + t + b"\nid: " + t + b"\nevent: " + t + b"\ndata: " + t + b"\n\n"


# --------------------------------------------------------------------------- data types


def test_dict_data_is_compact_json() -> None:
    sse = ServerSentEvent({"a": [1, 2.5, None, True], "b": "é"})
    assert sse.data == '{"a":[1,2.5,null,true],"b":"é"}'
    assert sse.encode() == '{"a":[1,2.5,null,true],"b":"é"}'.join(["data: ", "\r\n\r\n"]).encode()


def test_list_data_is_compact_json() -> None:
    assert ServerSentEvent([1, "x", {"k": []}]).encode() == b'data: [1,"x",{"k":[]}]\r\n\r\n'


def test_json_data_with_newlines_stays_on_one_line() -> None:
    assert ServerSentEvent({"t": "a\nb"}).encode() == b'data: {"t":"a\\nb"}\r\n\r\n'


def test_dict_data_with_nan_is_refused() -> None:
    with pytest.raises(ValueError, match=_NOT_JSON):
        ServerSentEvent({"x": float("nan")})


@pytest.mark.parametrize(
    "raw", [b"caf\xc3\xa9", bytearray(b"caf\xc3\xa9"), memoryview(b"caf\xc3\xa9")]
)
def test_bytes_data_is_decoded_as_utf8(raw: bytes | bytearray | memoryview) -> None:
    sse = ServerSentEvent(raw)
    assert sse.data == "café"
    assert sse.encode() == b"data: caf\xc3\xa9\r\n\r\n"


def test_bytes_data_is_split_into_lines() -> None:
    assert ServerSentEvent(b"a\r\nb", sep="\n").encode() == b"data: a\ndata: b\n\n"


@pytest.mark.parametrize(
    "raw", [b"\xff", b"a\xc3", bytearray(b"\x80"), memoryview(b"\xed\xa0\x80")]
)
def test_invalid_utf8_bytes_data_is_refused(raw: bytes | bytearray | memoryview) -> None:
    with pytest.raises(ValueError, match="data"):
        ServerSentEvent(raw)


class _Custom:
    def __str__(self) -> str:
        return "custom\nvalue"


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (7, b"data: 7\n\n"),
        (-1.5, b"data: -1.5\n\n"),
        (True, b"data: True\n\n"),
        ((1, 2), b"data: (1, 2)\n\n"),
        (_Custom(), b"data: custom\ndata: value\n\n"),
    ],
)
def test_other_data_goes_through_str(data: object, wire: bytes) -> None:
    assert ServerSentEvent(data, sep="\n").encode() == wire


def test_non_str_comment_goes_through_str() -> None:
    sse = ServerSentEvent(comment=_Custom())  # type: ignore[arg-type]
    assert sse.encode() == b": custom\r\n: value\r\n\r\n"


# --------------------------------------------------------------------------- JSONServerSentEvent


@pytest.mark.parametrize(
    ("value", "data"),
    [
        ({"a": 1, "b": [True, None]}, '{"a":1,"b":[true,null]}'),
        ([1, 2], "[1,2]"),
        ("text", '"text"'),
        ("line\nbreak", '"line\\nbreak"'),
        (3, "3"),
        (0.5, "0.5"),
        (False, "false"),
        ({"ü": "€"}, '{"ü":"€"}'),
    ],
)
def test_json_event_serialises_compactly(value: object, data: str) -> None:
    sse = JSONServerSentEvent(value, event="e", sep="\n")
    assert sse.data == data
    assert sse.encode() == f"event: e\ndata: {data}\n\n".encode()


def test_json_event_with_none_writes_no_data_line() -> None:
    assert JSONServerSentEvent(None, id="1").encode() == b"id: 1\r\n\r\n"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), {"x": [float("nan")]}])
def test_json_event_refuses_nan_and_infinity(bad: object) -> None:
    with pytest.raises(ValueError, match=_NOT_JSON):
        JSONServerSentEvent(bad)


def test_json_event_validates_the_other_fields() -> None:
    with pytest.raises(ValueError, match="event"):
        JSONServerSentEvent({}, event="a\nb")
    with pytest.raises(ValueError, match="retry"):
        JSONServerSentEvent({}, retry=-1)


def test_json_event_is_a_server_sent_event() -> None:
    assert isinstance(JSONServerSentEvent(1), ServerSentEvent)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("event", ["a\nb", "a\rb", "a\r\nb", "\n", "end\r"])
def test_event_with_cr_or_lf_is_refused(event: str) -> None:
    with pytest.raises(ValueError, match="event"):
        ServerSentEvent("x", event=event)


def test_non_str_event_is_refused() -> None:
    with pytest.raises(TypeError, match="event"):
        ServerSentEvent("x", event=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("id", ["a\nb", "a\rb", "a\r\nb", "a\0b", "\0", "\n"])
def test_id_with_cr_lf_or_nul_is_refused(id: str) -> None:
    with pytest.raises(ValueError, match="id"):
        ServerSentEvent("x", id=id)


@pytest.mark.parametrize("id", [True, False, 1.0, b"1", ["1"]])
def test_id_of_another_type_is_refused(id: object) -> None:
    with pytest.raises(TypeError, match="id"):
        ServerSentEvent("x", id=id)  # type: ignore[arg-type]


@pytest.mark.parametrize("retry", [True, False, 1.0, 1.5, "5", [1]])
def test_retry_that_is_not_an_int_is_refused(retry: object) -> None:
    with pytest.raises(TypeError, match="retry"):
        ServerSentEvent("x", retry=retry)  # type: ignore[arg-type]


@pytest.mark.parametrize("retry", [-1, -5, -(10**20)])
def test_negative_retry_is_refused(retry: int) -> None:
    with pytest.raises(ValueError, match="retry"):
        ServerSentEvent("x", retry=retry)


@pytest.mark.parametrize("sep", ["", " ", "\t", "\n\r", "\r\n\r\n", "\n\n", "\u2028", "\x85", "rn"])
def test_unknown_sep_is_refused(sep: str) -> None:
    with pytest.raises(ValueError, match="sep"):
        ServerSentEvent("x", sep=sep)


@pytest.mark.parametrize("sep", [b"\n", 10, ["\n"]])
def test_non_str_sep_is_refused(sep: object) -> None:
    with pytest.raises(ValueError, match="sep"):
        ServerSentEvent("x", sep=sep)  # type: ignore[arg-type]


@pytest.mark.parametrize("sep", SEPARATORS, ids=SEP_IDS)
def test_validate_sep_accepts_the_three_terminators(sep: str) -> None:
    assert validate_sep(sep) == sep


def test_validate_sep_defaults_to_crlf() -> None:
    assert validate_sep(None) == "\r\n"


def test_validate_sep_refuses_anything_else() -> None:
    with pytest.raises(ValueError, match="sep"):
        validate_sep("\r\r")


# --------------------------------------------------------------------------- setters


def test_setters_update_the_encoding() -> None:
    sse = ServerSentEvent("a")
    sse.data = {"k": 1}
    sse.event = "ev"
    sse.id = 9
    sse.retry = 100
    sse.comment = "hi"
    sse.sep = "\n"
    assert (sse.data, sse.event, sse.id, sse.retry, sse.comment, sse.sep) == (
        '{"k":1}',
        "ev",
        "9",
        100,
        "hi",
        "\n",
    )
    assert sse.encode() == b': hi\nid: 9\nevent: ev\ndata: {"k":1}\nretry: 100\n\n'
    sse.data = None
    sse.event = None
    sse.id = None
    sse.retry = None
    sse.comment = None
    sse.sep = None
    assert sse.encode() == b"\r\n"


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("event", "a\nb", ValueError),
        ("event", "a\r", ValueError),
        ("event", 3, TypeError),
        ("id", "a\0", ValueError),
        ("id", "a\r\nb", ValueError),
        ("id", True, TypeError),
        ("id", 1.5, TypeError),
        ("retry", -1, ValueError),
        ("retry", True, TypeError),
        ("retry", 2.0, TypeError),
        ("sep", "\t", ValueError),
        ("sep", "", ValueError),
        ("data", b"\xff", ValueError),
        ("data", {"n": float("nan")}, ValueError),
    ],
)
def test_setters_validate_and_keep_the_old_value(
    field: str, value: object, error: type[Exception]
) -> None:
    sse = ServerSentEvent("d", event="e", id="i", retry=1, comment="c", sep="\n")
    before = sse.encode()
    match = None if field == "data" and isinstance(value, dict) else field
    with pytest.raises(error, match=match):
        setattr(sse, field, value)
    assert sse.encode() == before


# --------------------------------------------------------------------------- surrogates


def test_lone_surrogate_is_written_as_replacement_character() -> None:
    sse = ServerSentEvent("a\ud800b", event="\udfff", id="\udc00", comment="\ud83d")
    replacement = "\ufffd".encode()
    assert sse.encode() == (
        b": "
        + replacement
        + b"\r\nid: "
        + replacement
        + b"\r\nevent: "
        + replacement
        + b"\r\ndata: a"
        + replacement
        + b"b\r\n\r\n"
    )


def test_surrogate_pair_is_joined_into_its_character() -> None:
    assert ServerSentEvent("\ud83d\ude00").encode() == "data: \U0001f600\r\n\r\n".encode()


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\ud800\U0001f600", "\ufffd\U0001f600"),
        ("\ud800\ud83d\ude00", "\ufffd\U0001f600"),
        ("\U0001f600\udc00", "\U0001f600\ufffd"),
        ("\ud83d\ud83d\ude00\ude00", "\ufffd\U0001f600\ufffd"),
        ("\ud800\ud800\udc00", "\ufffd\U00010000"),
        ("\ufeff\ud800", "\ufeff\ufffd"),
    ],
)
def test_surrogates_next_to_real_characters(text: str, shown: str) -> None:
    assert _as_utf8_would_show(text) == shown
    assert ServerSentEvent(text, sep="\n").encode() == f"data: {shown}\n\n".encode()


def test_reversed_surrogate_pair_is_two_replacement_characters() -> None:
    assert ServerSentEvent("\ude00\ud83d").encode() == "data: \ufffd\ufffd\r\n\r\n".encode()


def test_surrogate_pair_split_by_a_line_break_is_two_replacement_characters() -> None:
    wire = ServerSentEvent("\ud83d\n\ude00", sep="\n").encode()
    assert wire == "data: \ufffd\ndata: \ufffd\n\n".encode()


def test_lone_surrogate_in_json_data_is_replaced() -> None:
    assert JSONServerSentEvent(["\ud800"]).encode() == '["\ufffd"]'.join(
        ["data: ", "\r\n\r\n"]
    ).encode("utf-8")
    assert ServerSentEvent({"k": "\udc00"}).encode() == '{"k":"\ufffd"}'.join(
        ["data: ", "\r\n\r\n"]
    ).encode("utf-8")


def test_lone_surrogate_in_items_is_replaced() -> None:
    assert encode_item("\ud800", "\n") == "data: \ufffd\n\n".encode()
    assert encode_item("\ud800\n", "\n") == "data: \ufffd\ndata: \n\n".encode()
    assert encode_item({"data": "\ud800", "id": "\udfff"}, "\n") == (
        "id: \ufffd\ndata: \ufffd\n\n".encode()
    )


# --------------------------------------------------------------------------- items


@pytest.mark.parametrize("sep", SEPARATORS, ids=SEP_IDS)
def test_bytes_items_are_sent_as_they_are(sep: str) -> None:
    assert encode_item(b"raw\xff not: sse", sep) == b"raw\xff not: sse"
    assert encode_item(b"", sep) == b""


def test_bytearray_and_memoryview_items_become_bytes() -> None:
    for item in (bytearray(b"a\nb"), memoryview(b"a\nb")):
        out = encode_item(item, "\r\n")
        assert type(out) is bytes
        assert out == b"a\nb"


def test_event_item_keeps_its_own_sep() -> None:
    sse = ServerSentEvent("a\nb", id="1", sep="\n")
    assert encode_item(sse, "\r") == b"id: 1\ndata: a\ndata: b\n\n"
    assert ensure_bytes(sse, "\r\n") == sse.encode()


def test_json_event_item_is_encoded() -> None:
    assert encode_item(JSONServerSentEvent({"a": 1}), "\n") == b'data: {"a":1}\r\n\r\n'


@pytest.mark.parametrize("sep", SEPARATORS, ids=SEP_IDS)
def test_str_item_is_the_data_of_an_event(sep: str) -> None:
    assert encode_item("hi", sep) == f"data: hi{sep}{sep}".encode()
    assert encode_item("a\r\nb\rc", sep) == f"data: a{sep}data: b{sep}data: c{sep}{sep}".encode()
    assert encode_item("", sep) == f"data: {sep}{sep}".encode()


def test_str_item_is_not_split_on_unicode_line_breaks() -> None:
    assert encode_item("a\u2028b\x85c", "\n") == "data: a\u2028b\x85c\n\n".encode()


@pytest.mark.parametrize(
    ("item", "wire"),
    [
        (5, b"data: 5\n\n"),
        (1.25, b"data: 1.25\n\n"),
        (False, b"data: False\n\n"),
        ([1, "a"], b'data: [1,"a"]\n\n'),
        (_Custom(), b"data: custom\ndata: value\n\n"),
    ],
)
def test_other_items_are_the_data_of_an_event(item: object, wire: bytes) -> None:
    assert encode_item(item, "\n") == wire


@pytest.mark.parametrize("sep", SEPARATORS, ids=SEP_IDS)
def test_dict_item_is_event_keyword_arguments(sep: str) -> None:
    item = {"data": "a\nb", "event": "e", "id": 3, "retry": 10, "comment": "c"}
    expected = f": c{sep}id: 3{sep}event: e{sep}data: a{sep}data: b{sep}retry: 10{sep}{sep}"
    assert encode_item(item, sep) == expected.encode()


def test_dict_item_data_only_and_empty() -> None:
    assert encode_item({"data": "x"}, "\n") == b"data: x\n\n"
    assert encode_item({"data": {"j": [1]}}, "\n") == b'data: {"j":[1]}\n\n'
    assert encode_item({"data": b"\xc3\xa9"}, "\n") == "data: é\n\n".encode()
    assert encode_item({}, "\n") == b"\n"
    assert encode_item({"comment": ""}, "\n") == b": \n\n"


def test_dict_item_sep_key_is_replaced_by_the_given_sep() -> None:
    assert encode_item({"data": "x", "sep": "\r"}, "\n") == b"data: x\n\n"
    # Even a sep the event could not carry: it is ignored, not validated.
    assert encode_item({"data": "x", "sep": "bogus"}, "\r\n") == b"data: x\r\n\r\n"


def test_dict_item_is_not_mutated() -> None:
    item: dict[str, Any] = {"data": {"nested": [1]}, "id": 1, "sep": "\r", "event": "e"}
    snapshot = copy.deepcopy(item)
    encode_item(item, "\n")
    ensure_bytes(item, "\r\n")
    assert item == snapshot
    empty: dict[str, Any] = {"data": "x"}
    encode_item(empty, "\n")
    assert empty == {"data": "x"}


@pytest.mark.parametrize("key", ["name", "Data", "retry_ms", "sep ", "type"])
def test_dict_item_with_unknown_key_is_refused(key: str) -> None:
    with pytest.raises(TypeError, match=re.escape(repr(key))):
        encode_item({"data": "x", key: "v"}, "\n")


@pytest.mark.parametrize(
    ("item", "error", "field"),
    [
        ({"event": "a\nb"}, ValueError, "event"),
        ({"data": "x", "id": "a\0"}, ValueError, "id"),
        ({"data": "x", "id": False}, TypeError, "id"),
        ({"retry": -1}, ValueError, "retry"),
        ({"retry": "1"}, TypeError, "retry"),
        ({"data": b"\xfe"}, ValueError, "data"),
    ],
)
def test_dict_item_fields_are_validated(
    item: dict[str, object], error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=field):
        encode_item(item, "\n")


def test_ensure_bytes_validates_sep() -> None:
    with pytest.raises(ValueError, match="sep"):
        ensure_bytes("x", "\t")
    with pytest.raises(ValueError, match="sep"):
        ensure_bytes(b"x", "")


@pytest.mark.parametrize("sep", SEPARATORS, ids=SEP_IDS)
def test_ensure_bytes_is_encode_item(sep: str) -> None:
    items: list[object] = [
        "a\nb",
        b"raw",
        memoryview(b"mv"),
        {"data": "d", "id": "1"},
        ServerSentEvent("s", sep="\r"),
        12,
    ]
    for item in items:
        assert ensure_bytes(item, sep) == encode_item(item, sep)


class _SneakyStr(str):
    """A ``str`` subclass whose printed form has line breaks its contents lack."""

    __slots__ = ()

    def __str__(self) -> str:
        return "x\nid: injected\nretry: 1"

    def __format__(self, spec: str) -> str:
        return str(self)


@pytest.mark.parametrize("field", ["data", "event", "comment"])
def test_str_subclass_cannot_inject_a_field(field: str) -> None:
    """Whatever a str subclass prints, the client sees one event and no injected id or retry."""
    kwargs: dict[str, Any] = {"data": "d", field: _SneakyStr("x")}
    try:
        wire = ServerSentEvent(**kwargs).encode()
    except ValueError:
        return  # Refusing it is fine too.
    got = _one(wire)
    assert (got.id, got.retry) == ("", None), wire


def test_str_subclass_item_cannot_inject_a_field() -> None:
    """The same for a str subclass yielded as an item: it is all data lines."""
    wire = encode_item(_SneakyStr("x"), "\n")
    assert all(line.startswith(b"data: ") for line in wire.split(b"\n")[:-2]), wire


# --------------------------------------------------------------------------- round trips


_sep = st.sampled_from(SEPARATORS)
_data = _texts()
_event = st.none() | _texts(exclude="\r\n")
_id = st.none() | _texts(exclude="\r\n\0") | st.integers()
_retry = st.none() | st.integers(0, 10**9)
_comment = st.none() | _texts()


@FIELDS_SETTINGS
@given(data=_data, event=_event, id=_id, retry=_retry, comment=_comment, sep=_sep)
def test_round_trip_through_a_whatwg_parser(
    data: str,
    event: str | None,
    id: str | int | None,
    retry: int | None,
    comment: str | None,
    sep: str,
) -> None:
    wire = ServerSentEvent(data, event=event, id=id, retry=retry, comment=comment, sep=sep).encode()
    got = _one(wire)
    assert got.data == _normalise_eol(data)
    assert got.event == (event or "message")
    assert got.id == ("" if id is None else str(id))
    assert got.retry == retry
    expected_comments = () if comment is None else tuple(_normalise_eol(comment).split("\n"))
    assert got.comments == expected_comments


@FIELDS_SETTINGS
@given(
    value=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | _texts(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_texts(), inner, max_size=4),
        max_leaves=12,
    ),
    sep=_sep,
)
def test_json_round_trip(value: object, sep: str) -> None:
    if value is None:
        value = [None]  # None itself means "no data line".
    wire = JSONServerSentEvent(value, sep=sep).encode()
    assert json.loads(_one(wire).data) == value


_event_kwargs = st.fixed_dictionaries(
    {"data": _data, "sep": _sep},
    optional={"event": _event, "id": _id, "retry": _retry, "comment": _comment},
)


@FIELDS_SETTINGS
@given(st.lists(_event_kwargs, min_size=1, max_size=6))
def test_concatenated_events_parse_one_for_one_in_order(kwargs_list: list[dict[str, Any]]) -> None:
    wire = b"".join(ServerSentEvent(**kwargs).encode() for kwargs in kwargs_list)
    events = parse_event_stream(wire)
    assert len(events) == len(kwargs_list)
    last_id = ""
    for got, kwargs in zip(events, kwargs_list, strict=True):
        if kwargs.get("id") is not None:
            last_id = str(kwargs["id"])
        assert got.data == _normalise_eol(kwargs["data"])
        assert got.event == (kwargs.get("event") or "message")
        assert got.id == last_id
        if kwargs.get("retry") is not None:
            assert got.retry == kwargs["retry"]


@FIELDS_SETTINGS
@given(items=st.lists(st.one_of(_texts(), _event_kwargs), min_size=1, max_size=6), sep=_sep)
def test_items_on_one_stream_parse_one_for_one(items: list[str | dict[str, Any]], sep: str) -> None:
    wire = b"".join(ensure_bytes(item, sep) for item in items)
    parser = EventStreamParser()
    events: list[Event] = []
    for i in range(len(wire)):
        events.extend(item for item in parser.feed(wire[i : i + 1]) if isinstance(item, Event))
    assert parser.close() == []
    assert [e.data for e in events] == [e.data for e in parse_event_stream(wire)]
    expected = [_normalise_eol(item if isinstance(item, str) else item["data"]) for item in items]
    assert [e.data for e in events] == expected


_surrogate_text = _texts(surrogates=True)


@FIELDS_SETTINGS
@given(
    data=_surrogate_text,
    event=st.none() | _texts(exclude="\r\n", surrogates=True),
    id=st.none() | _texts(exclude="\r\n\0", surrogates=True),
    comment=st.none() | _surrogate_text,
    sep=_sep,
)
def test_lone_surrogates_never_raise_and_read_as_replacement_characters(
    data: str, event: str | None, id: str | None, comment: str | None, sep: str
) -> None:
    sse = ServerSentEvent(data, event=event, id=id, comment=comment, sep=sep)
    wire = sse.encode()
    wire.decode("utf-8")  # Always valid UTF-8.
    assert encode_item(data, sep) == ServerSentEvent(data, sep=sep).encode()
    got = _one(wire)
    assert got.data == _as_utf8_would_show(_normalise_eol(data))
    assert got.event == (_as_utf8_would_show(event) if event else "message")
    assert got.id == ("" if id is None else _as_utf8_would_show(id))
    if comment is not None:
        assert got.comments == tuple(_as_utf8_would_show(_normalise_eol(comment)).split("\n"))


_any_value = (
    st.none()
    | _texts()
    | _texts(surrogates=True)
    | st.integers(-5, 10**6)
    | st.sampled_from(["a\0b", "a\nb", "a\rb", "a\r\nb", "", "tick"])
)


@FIELDS_SETTINGS
@given(
    fields=st.fixed_dictionaries(
        {"data": _any_value},
        optional={
            "event": _any_value,
            "id": _any_value,
            "retry": _any_value,
            "comment": _any_value,
            "sep": _sep,
            "colour": _any_value,
        },
    )
    | st.dictionaries(
        st.sampled_from(["data", "event", "id", "retry", "comment", "sep", "colour"]),
        _any_value,
        max_size=5,
    ),
    sep=_sep,
)
@example(fields={"data": "d", "id": "7"}, sep="\r\n")
@example(fields={"data": "d", "event": "e"}, sep="\r")
@example(fields={"data": "d", "event": "e", "id": "7"}, sep="\n")
@example(fields={"data": "d", "id": "a\0b"}, sep="\n")
@example(fields={"data": "d", "event": "a\rb", "id": "1"}, sep="\n")
@example(fields={"data": "d", "event": "e", "id": "a\nb"}, sep="\n")
@example(fields={"data": "a\r\nb", "event": "e"}, sep="\r\n")
@example(fields={"data": "d", "id": 5}, sep="\n")
@example(fields={"data": 5, "event": "e"}, sep="\n")
@example(fields={"data": "d", "event": None}, sep="\n")
@example(fields={"data": "d", "sep": "\r"}, sep="\n")
@example(fields={"data": "d", "colour": "red"}, sep="\n")
@example(fields={"data": "d", "retry": 10}, sep="\n")
def test_a_dict_item_encodes_as_the_event_its_keywords_build(
    fields: dict[str, Any], sep: str
) -> None:
    """The dict fast path and the general path agree with ServerSentEvent, errors included."""
    kwargs = {key: value for key, value in fields.items() if key != "sep"}
    try:
        expected: bytes | type[Exception] = ServerSentEvent(**kwargs, sep=sep).encode()
    except (TypeError, ValueError) as exc:
        expected = type(exc)
    try:
        got: bytes | type[Exception] = encode_item(fields, sep)
    except (TypeError, ValueError) as exc:
        got = type(exc)
    assert got == expected


# --------------------------------------------------------------------------- refused when built

#: More decimal digits than Python writes by default (``sys.get_int_max_str_digits``).
HUGE = 10**5000
#: The largest retry a client can read: an unsigned 64-bit number of milliseconds.
LARGEST_RETRY = 2**64 - 1


class _Unprintable:
    """A value whose ``str()`` raises ``exc``."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __str__(self) -> str:
        raise self.exc


def _names(field: str, exc: BaseException) -> bool:
    """Whether the message of ``exc`` starts with the name of ``field``."""
    return re.match(rf"{field}\b", str(exc)) is not None


@pytest.mark.parametrize(
    "retry", [LARGEST_RETRY + 1, 10**20, 10**4299, HUGE], ids=["2**64", "1e20", "1e4299", "1e5000"]
)
def test_a_retry_no_client_can_read_is_refused_naming_the_field(retry: int) -> None:
    with pytest.raises(ValueError, match=r"^retry\b") as caught:
        ServerSentEvent("x", retry=retry)
    assert str(LARGEST_RETRY) in str(caught.value)  # says what the bound is


def test_the_largest_retry_is_written_and_read_back() -> None:
    wire = ServerSentEvent(retry=LARGEST_RETRY).encode()
    assert wire == b"retry: 18446744073709551615\r\n\r\n"
    assert _one(ServerSentEvent("x", retry=LARGEST_RETRY).encode()).retry == LARGEST_RETRY


@pytest.mark.parametrize(
    ("kwargs", "field", "error"),
    [
        ({"data": HUGE}, "data", ValueError),
        ({"data": -HUGE}, "data", ValueError),
        ({"data": [HUGE]}, "data", ValueError),
        ({"data": {"n": float("nan")}}, "data", ValueError),
        ({"data": {"s": {1, 2}}}, "data", TypeError),
        ({"data": {(1, 2): "tuple key"}}, "data", TypeError),
        ({"data": _Unprintable(ValueError("boom"))}, "data", ValueError),
        ({"data": _Unprintable(TypeError("boom"))}, "data", TypeError),
        ({"id": HUGE}, "id", ValueError),
        ({"id": -HUGE}, "id", ValueError),
        ({"comment": HUGE}, "comment", ValueError),
        ({"comment": _Unprintable(ValueError("boom"))}, "comment", ValueError),
    ],
    ids=[
        "huge-int-data",
        "huge-negative-data",
        "huge-int-in-list-data",
        "nan-in-dict-data",
        "set-in-dict-data",
        "tuple-key-data",
        "data-str-raises-ValueError",
        "data-str-raises-TypeError",
        "huge-int-id",
        "huge-negative-id",
        "huge-int-comment",
        "comment-str-raises-ValueError",
    ],
)
def test_a_value_that_cannot_be_written_is_refused_naming_the_field(
    kwargs: dict[str, Any], field: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        ServerSentEvent(**kwargs)
    assert _names(field, caught.value), caught.value
    with pytest.raises(error) as caught:
        encode_item(kwargs, "\n")  # a dict item: the same refusal
    assert _names(field, caught.value), caught.value


def test_json_event_data_that_is_not_json_is_refused_naming_the_field() -> None:
    for bad, error in ((float("nan"), ValueError), ({1, 2}, TypeError), ([HUGE], ValueError)):
        with pytest.raises(error) as caught:
            JSONServerSentEvent(bad)
        assert _names("data", caught.value), caught.value


def test_an_exception_of_another_kind_from_str_propagates_with_a_note_naming_the_field() -> None:
    """Not a TypeError or ValueError: the caller's own exception, kept, with the field noted."""

    class Broken(Exception):
        pass

    with pytest.raises(Broken) as caught:
        ServerSentEvent(_Unprintable(Broken("mine")))
    assert any("data" in note for note in getattr(caught.value, "__notes__", ()))


def test_json_data_too_deep_to_write_propagates_with_a_note_naming_the_field() -> None:
    deep: list[Any] = []
    inner = deep
    for _ in range(100_000):  # deeper than any recursion limit
        inner.append([])
        inner = inner[0]
    with pytest.raises(RecursionError) as caught:
        ServerSentEvent(deep)
    assert any("'data'" in note for note in getattr(caught.value, "__notes__", ()))


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("retry", LARGEST_RETRY + 1, ValueError),
        ("retry", HUGE, ValueError),
        ("id", HUGE, ValueError),
        ("data", HUGE, ValueError),
        ("data", {"s": {1}}, TypeError),
        ("data", _Unprintable(ValueError("boom")), ValueError),
        ("comment", HUGE, ValueError),
    ],
    ids=[
        "retry-2**64",
        "retry-1e5000",
        "id-1e5000",
        "data-1e5000",
        "data-set",
        "data-str",
        "comment",
    ],
)
def test_setters_refuse_the_same_values_naming_the_field_and_keep_the_old_value(
    field: str, value: object, error: type[Exception]
) -> None:
    sse = ServerSentEvent("d", event="e", id="i", retry=1, comment="c")
    before = sse.encode()
    with pytest.raises(error) as caught:
        setattr(sse, field, value)
    assert _names(field, caught.value), caught.value
    assert sse.encode() == before


_FIELD = st.sampled_from(["data", "event", "id", "retry", "comment", "sep"])
_ANYTHING = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**65)
    | st.integers(min_value=4295, max_value=4400).map(lambda digits: 10**digits)
    | st.sampled_from([HUGE, -HUGE, LARGEST_RETRY, float("nan"), 1.5, "\0", "\r\n"])
    | st.floats()
    | _texts()
    | st.binary(max_size=6)
    | st.lists(st.integers() | st.floats() | st.just(HUGE), max_size=3)
    | st.dictionaries(_texts(max_size=3), st.floats() | st.integers(), max_size=2)
    | st.builds(_Unprintable, st.sampled_from([ValueError("v"), TypeError("t")]))
)


def _outcome(action: Callable[[], bytes]) -> bytes | TypeError | ValueError:
    """What ``action`` returns, or the ``TypeError``/``ValueError`` it raises."""
    try:
        return action()
    except (TypeError, ValueError) as exc:
        return exc


def _build(field: str, value: object) -> bytes:
    kwargs: dict[str, Any] = {field: value}
    return ServerSentEvent(**kwargs).encode()


def _assign(field: str, value: object) -> bytes:
    sse = ServerSentEvent()
    setattr(sse, field, value)
    return sse.encode()


@FIELDS_SETTINGS
@given(field=_FIELD, value=_ANYTHING)
@example(field="retry", value=HUGE)
@example(field="retry", value=LARGEST_RETRY + 1)
@example(field="id", value=HUGE)
@example(field="data", value=HUGE)
@example(field="comment", value=-HUGE)
def test_an_event_that_exists_can_be_encoded(field: str, value: object) -> None:
    """Built, assigned or given as a dict, a value is refused naming its field, or it encodes.

    Encoding never raises: once built, an event can be written.  The setter
    and the dict item refuse exactly what the constructor refuses.
    """
    outcomes = [_outcome(lambda: _build(field, value)), _outcome(lambda: _assign(field, value))]
    if field != "sep":  # a dict's sep is replaced by the stream's
        outcomes.append(_outcome(lambda: encode_item({field: value}, "\r\n")))
    built = outcomes[0]
    for outcome in outcomes:
        if isinstance(outcome, bytes):
            assert outcome == built
        else:
            assert _names(field, outcome), outcome
            assert type(outcome) is type(built)


def test_an_event_compares_by_value_and_is_not_hashable() -> None:
    """Mutable and equal by value, so unhashable: a hash by value would change
    under the set or dict that held it."""
    first, second = ServerSentEvent("x", id="1"), ServerSentEvent("x", id="1")
    assert first == second
    second.data = "y"
    assert first != second
    with pytest.raises(TypeError, match="unhashable"):
        hash(first)
    with pytest.raises(TypeError, match="unhashable"):
        {JSONServerSentEvent({"a": 1})}
