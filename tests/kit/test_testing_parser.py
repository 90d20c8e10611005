"""The WHATWG event-stream parser in ``sse_sm.testing``.

Each example pins one rule of the HTML Living Standard's "Parsing an event
stream" and "Interpreting an event stream", because the parser is the oracle
other tests trust: if it deviates from a browser, they prove the wrong thing.
The property tests check that chunking never changes the result and that the
incremental parser agrees with a whole-stream reading written independently.
"""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_sm.testing import Comment, Event, EventStreamParser, parse_event_stream


def _feed_all(chunks: list[bytes]) -> list[Event | Comment]:
    """Everything one parser reports for ``chunks``, through ``close``."""
    parser = EventStreamParser()
    out: list[Event | Comment] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    out.extend(parser.close())
    return out


# --------------------------------------------------------------------------- line endings


@pytest.mark.parametrize("eol", ["\r\n", "\r", "\n"], ids=["CRLF", "CR", "LF"])
def test_each_line_ending_ends_lines_and_blocks(eol: str) -> None:
    wire = f"data: a{eol}data: b{eol}{eol}data: c{eol}{eol}"
    assert parse_event_stream(wire) == [Event("a\nb"), Event("c")]


def test_mixed_line_endings_in_one_stream() -> None:
    assert parse_event_stream(b"data: a\rdata: b\ndata: c\r\n\n") == [Event("a\nb\nc")]


def test_cr_then_lf_split_across_chunks_is_one_line_ending() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r") == []
    # Were the LF a second line ending, this would be the blank line that dispatches.
    assert parser.feed(b"\n") == []
    assert parser.feed(b"data: b\r") == []
    assert parser.feed(b"\n\r") == [Event("a\nb")]


def test_cr_at_chunk_end_ends_the_line_at_once() -> None:
    """A lone CR is a complete line ending: the event must not wait for the next chunk."""
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r\r") == [Event("a")]


def test_lf_after_a_cr_that_is_not_at_a_chunk_end_is_still_a_new_line() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []
    # The CR is consumed now; a second LF is a blank line and dispatches.
    assert parser.feed(b"\n") == [Event("a")]


@pytest.mark.parametrize(
    "char", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
)
def test_unicode_line_separators_are_not_line_breaks(char: str) -> None:
    assert parse_event_stream(f"data: a{char}b\n\n".encode()) == [Event(f"a{char}b")]


# --------------------------------------------------------------------------- decoding


def test_leading_bom_is_stripped() -> None:
    assert parse_event_stream(b"\xef\xbb\xbfdata: a\n\n") == [Event("a")]


def test_only_one_bom_is_stripped() -> None:
    # With the first BOM gone, the second is part of the field name, which is unknown.
    assert parse_event_stream(b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\n") == []


def test_bom_later_in_the_stream_is_kept() -> None:
    assert parse_event_stream("data: a\n\ndata: \ufeffb\n\n".encode()) == [
        Event("a"),
        Event("\ufeffb"),
    ]


def test_bom_is_stripped_when_split_across_chunks() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"\xef") == []
    assert parser.feed(b"\xbb") == []
    assert parser.feed(b"\xbfdata: a\n\n") == [Event("a")]


def test_bom_only_at_the_very_start_not_after_a_chunk() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.feed("\ufeffdata: b\n\n".encode()) == [Event("a")]


def test_multibyte_characters_split_across_feeds() -> None:
    wire = "data: é€😀\n\n".encode()
    parser = EventStreamParser()
    out: list[Event | Comment] = []
    for i in range(len(wire)):
        out.extend(parser.feed(wire[i : i + 1]))
    assert out == [Event("é€😀")]


def test_invalid_utf8_reads_as_replacement_character() -> None:
    assert parse_event_stream(b"data: a\xffb\n\n") == [Event("a\ufffdb")]


def test_truncated_character_before_a_line_end_reads_as_replacement_character() -> None:
    assert parse_event_stream(b"data: \xe2\x82\n\n") == [Event("\ufffd")]


def test_truncated_character_at_close_is_flushed_without_an_event() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\n\ndata: \xe2\x82") == [Event("a")]
    assert parser.close() == []


def test_str_chunks_go_through_the_same_decoder() -> None:
    parser = EventStreamParser()
    out = parser.feed(b"data: \xe2\x82")
    # "\xac" as text is U+00AC, two bytes in UTF-8, so it does not complete "€".
    out += parser.feed("\xac\n\n")
    assert out == [Event("\ufffd\u00ac")]
    assert parse_event_stream("data: \ud800\n\n") == parse_event_stream(b"data: \xed\xa0\x80\n\n")


# --------------------------------------------------------------------------- fields


def test_field_without_colon_is_a_name_with_empty_value() -> None:
    assert parse_event_stream(b"data\n\n") == [Event("")]
    assert parse_event_stream(b"data\ndata\n\n") == [Event("\n")]


def test_only_one_leading_space_is_removed() -> None:
    assert parse_event_stream(b"data:  two\n\n") == [Event(" two")]
    assert parse_event_stream(b"data:none\n\n") == [Event("none")]
    assert parse_event_stream(b"data:\ttab\n\n") == [Event("\ttab")]


def test_only_the_first_colon_separates_name_from_value() -> None:
    assert parse_event_stream(b"data: a: b:c\n\n") == [Event("a: b:c")]


def test_event_field_sets_the_type() -> None:
    assert parse_event_stream(b"event: tick\ndata: 1\n\ndata: 2\n\n") == [
        Event("1", event="tick"),
        Event("2"),
    ]


def test_empty_event_field_means_message() -> None:
    assert parse_event_stream(b"event:\ndata: 1\n\n") == [Event("1", event="message")]


def test_last_event_field_in_a_block_wins() -> None:
    assert parse_event_stream(b"event: a\nevent: b\ndata: 1\n\n") == [Event("1", event="b")]


def test_id_persists_across_events() -> None:
    events = parse_event_stream(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n")
    assert [e.id for e in events] == ["1", "1", "2"]


def test_id_with_nul_is_ignored() -> None:
    events = parse_event_stream(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
    assert [e.id for e in events] == ["1", "1"]


def test_empty_id_resets_the_last_event_id() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"id: 1\ndata: a\n\n") == [Event("a", id="1")]
    assert parser.feed(b"id\ndata: b\n\n") == [Event("b", id="")]
    assert parser.last_event_id == ""


def test_id_only_block_sets_last_event_id_without_dispatching() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"id: 9\n\n") == []
    assert parser.last_event_id == "9"
    assert parser.feed(b"data: a\n\n") == [Event("a", id="9")]


def test_id_takes_effect_at_the_blank_line_not_before() -> None:
    parser = EventStreamParser()
    parser.feed(b"id: 5\ndata: a\n")
    assert parser.last_event_id == ""
    parser.feed(b"\n")
    assert parser.last_event_id == "5"


@pytest.mark.parametrize("value", ["", "1.5", "-1", " 10", "10 ", "1e3", "abc", "\u0661", "²"])
def test_retry_that_is_not_only_ascii_digits_is_ignored(value: str) -> None:
    parser = EventStreamParser()
    # "retry: " strips one space, so " 10" is sent with two.
    events = parser.feed(f"retry: 100\n\nretry: {value}\ndata: a\n\n".encode())
    assert events == [Event("a", retry=100)]
    assert parser.retry == 100


def test_retry_sets_reconnection_time_at_once_and_it_persists() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"retry: 2500\n") == []
    assert parser.retry == 2500
    assert parser.feed(b"data: a\n\ndata: b\n\n") == [
        Event("a", retry=2500),
        Event("b", retry=2500),
    ]
    assert parse_event_stream(b"retry: 007\ndata: a\n\n") == [Event("a", retry=7)]


def test_unknown_fields_are_ignored() -> None:
    assert parse_event_stream(b"foo: bar\ndata: a\nDATA: b\nData: c\n\n") == [Event("a")]


def test_field_names_are_not_trimmed() -> None:
    assert parse_event_stream(b" data: a\ndata : b\n\n") == []


# --------------------------------------------------------------------------- dispatch


def test_no_dispatch_when_the_data_buffer_is_empty() -> None:
    assert parse_event_stream(b"event: x\n\ndata: a\n\n") == [Event("a")]


def test_event_type_is_reset_even_without_dispatch() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"event: x\nid: 3\n\n") == []
    assert parser.feed(b"data: a\n\n") == [Event("a", id="3")]


def test_one_trailing_newline_is_removed_from_data() -> None:
    assert parse_event_stream(b"data: a\ndata:\n\n") == [Event("a\n")]


def test_incomplete_final_event_is_discarded() -> None:
    assert parse_event_stream(b"data: a\n\ndata: b\n") == [Event("a")]
    assert parse_event_stream(b"data: a\n\ndata: b") == [Event("a")]


def test_close_discards_the_unfinished_block_and_its_state() -> None:
    parser = EventStreamParser()
    parser.feed(b"id: 4\nevent: x\ndata: a\n")
    assert parser.close() == []
    assert parser.last_event_id == ""
    assert parser.close() == []
    with pytest.raises(RuntimeError):
        parser.feed(b"\n")


def test_blank_lines_without_fields_dispatch_nothing() -> None:
    assert parse_event_stream(b"\n\n\r\n\r\r") == []


# --------------------------------------------------------------------------- comments


def test_comment_only_block_is_reported_as_comments() -> None:
    parser = EventStreamParser()
    assert parser.feed(b": ping\r\n\r\n") == [Comment("ping")]
    assert parser.feed(b":a\n:  b\n:\n\n") == [Comment("a"), Comment(" b"), Comment("")]


def test_comments_of_a_dispatched_event_ride_on_the_event() -> None:
    parser = EventStreamParser()
    assert parser.feed(b": hello\ndata: a\n: world\n\n") == [
        Event("a", comments=("hello", "world")),
    ]
    assert parser.feed(b"data: b\n\n") == [Event("b")]


def test_comments_are_reported_when_the_block_dispatches_nothing() -> None:
    assert EventStreamParser().feed(b": c\nevent: x\nid: 1\n\n") == [Comment("c")]


def test_parse_event_stream_omits_comment_blocks() -> None:
    assert parse_event_stream(b": ping\n\ndata: a\n\n") == [Event("a")]


def test_comments_of_an_unfinished_block_are_discarded() -> None:
    parser = EventStreamParser()
    assert parser.feed(b": ping\n") == []
    assert parser.close() == []


# --------------------------------------------------------------------------- properties

#: Fragments of values and names: spaces, colons, NUL, digits, BOMs, multibyte
#: characters, Unicode separators that are not line breaks, and invalid UTF-8.
_FRAGMENTS = st.sampled_from(
    [
        b" ",
        b":",
        b"\x00",
        b"1",
        b"42",
        b"x",
        b"\xef\xbb\xbf",
        "é".encode(),
        "€".encode(),
        "😀".encode(),
        "\u0663".encode(),
        "\u2028".encode(),
        "\x85".encode(),
        b"\x0b",
        b"\xff",
        b"\xe2\x82",
        b"\xf0\x9f",
        b"\xed\xa0\x80",
    ]
)
_EOL = st.sampled_from([b"\r\n", b"\r", b"\n"])
_VALUE = st.lists(_FRAGMENTS, max_size=4).map(b"".join)
#: One line as a server might write it (or get wrong): a known or unknown
#: field name, or none (a comment), with or without a colon and spaces.
_LINE = st.builds(
    lambda name, sep, value, eol: name + sep + value + eol,
    st.sampled_from([b"data", b"event", b"id", b"retry", b"foo", b"", b"\xef\xbb\xbfdata"]),
    st.sampled_from([b"", b":", b": ", b":  "]),
    _VALUE,
    _EOL,
)
#: Streams of such lines and blank lines, sometimes with arbitrary bytes mixed in.
_WIRE = st.lists(
    st.one_of(_LINE, _EOL, st.binary(max_size=3)),
    max_size=30,
).map(b"".join)


@st.composite
def _wire_and_cuts(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A stream and the same bytes cut anywhere: inside CRLF, characters, BOMs."""
    wire = draw(_WIRE)
    cuts = sorted(draw(st.sets(st.integers(min_value=0, max_value=len(wire)))))
    bounds = [0, *cuts, len(wire)]
    return wire, [wire[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None)
@given(_wire_and_cuts())
def test_any_chunking_gives_the_same_result(case: tuple[bytes, list[bytes]]) -> None:
    wire, chunks = case
    whole = EventStreamParser()
    expected = whole.feed(wire) + whole.close()
    chunked = EventStreamParser()
    got: list[Event | Comment] = []
    for chunk in chunks:
        got.extend(chunked.feed(chunk))
    got.extend(chunked.close())
    assert got == expected
    assert (chunked.last_event_id, chunked.retry) == (whole.last_event_id, whole.retry)


@settings(max_examples=200, deadline=None)
@given(_WIRE)
def test_byte_at_a_time_matches_one_feed(wire: bytes) -> None:
    assert _feed_all([wire[i : i + 1] for i in range(len(wire))]) == _feed_all([wire])


def _reference(wire: bytes) -> list[tuple[str, str, str, int | None]]:
    """A whole-stream reading of the spec, written without the parser's incremental state."""
    text = wire.decode("utf-8", "replace").removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)[:-1]  # the text after the last line end is no line
    events: list[tuple[str, str, str, int | None]] = []
    data, kind, id_buffer, last_id, retry = "", "", "", "", None
    for line in lines:
        if line == "":
            last_id = id_buffer
            if data:
                events.append((data[:-1], kind or "message", last_id, retry))
            data, kind = "", ""
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data += value + "\n"
        elif name == "event":
            kind = value
        elif name == "id" and "\0" not in value:
            id_buffer = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            retry = int(value)
    return events


@settings(max_examples=400, deadline=None)
@given(_WIRE)
def test_agrees_with_a_whole_stream_reading_of_the_spec(wire: bytes) -> None:
    got = [(e.data, e.event, e.id, e.retry) for e in parse_event_stream(wire)]
    assert got == _reference(wire)
