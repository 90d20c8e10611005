"""Byte-for-byte compatibility with sse-starlette 3.7.1, and its deliberate exceptions.

For every input that sse-starlette accepts and ``sse_sm`` does not refuse, the
two encoders must write the same bytes.  The divergences are listed at the end,
each with the reason for it.
"""

from __future__ import annotations

import enum
from typing import Any

import pytest
import sse_starlette.event as old
from hypothesis import given, settings
from hypothesis import strategies as st

import sse_sm
from sse_sm._events import SEPARATORS

SEP_IDS = ("crlf", "cr", "lf")

COMPAT_SETTINGS = settings(max_examples=200, deadline=None)

#: Line breaks that are part of the spec's end-of-line, and some that are not.
_BREAKS = ("\r\n", "\r", "\n", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1e", "\0")


def _texts(exclude: str = "") -> st.SearchStrategy[str]:
    """Text without surrogates (sse-starlette cannot encode them), rich in line breaks."""
    return st.lists(
        st.characters(codec="utf-8", exclude_characters=exclude)
        | st.sampled_from([b for b in _BREAKS if not set(b) & set(exclude)]),
        max_size=20,
    ).map("".join)


def _memoryview(raw: bytes) -> memoryview:
    return memoryview(raw)


_data = st.none() | _texts() | st.integers()
_event = st.none() | _texts(exclude="\r\n")
_id = st.none() | _texts(exclude="\r\n\0")
_retry = st.none() | st.integers(min_value=0, max_value=2**64 - 1)
_comment = st.none() | _texts()
_sep = st.sampled_from(SEPARATORS)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _texts(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_texts(), inner, max_size=4),
    max_leaves=15,
)
_kwargs = st.fixed_dictionaries(
    {},
    optional={
        "data": _texts() | st.integers(),
        "event": _event,
        "id": _id,
        "retry": _retry,
        "comment": _comment,
        "sep": _sep,
    },
)


# --------------------------------------------------------------------------- same bytes


@COMPAT_SETTINGS
@given(data=_data, event=_event, id=_id, retry=_retry, comment=_comment, sep=_sep | st.none())
def test_server_sent_event_bytes_match(
    data: str | int | None,
    event: str | None,
    id: str | None,
    retry: int | None,
    comment: str | None,
    sep: str | None,
) -> None:
    kwargs: dict[str, Any] = {"event": event, "id": id, "retry": retry, "comment": comment}
    ours = sse_sm.ServerSentEvent(data, sep=sep, **kwargs).encode()
    theirs = old.ServerSentEvent(data, sep=sep, **kwargs).encode()
    assert ours == theirs


@COMPAT_SETTINGS
@given(data=_json, event=_event, id=_id, retry=_retry, comment=_comment, sep=_sep)
def test_json_server_sent_event_bytes_match(
    data: object,
    event: str | None,
    id: str | None,
    retry: int | None,
    comment: str | None,
    sep: str,
) -> None:
    kwargs: dict[str, Any] = {"event": event, "id": id, "retry": retry, "comment": comment}
    ours = sse_sm.JSONServerSentEvent(data, sep=sep, **kwargs).encode()
    theirs = old.JSONServerSentEvent(data, sep=sep, **kwargs).encode()
    assert ours == theirs


@COMPAT_SETTINGS
@given(item=_texts() | st.integers() | st.binary() | st.binary().map(_memoryview), sep=_sep)
def test_ensure_bytes_matches_for_plain_items(item: object, sep: str) -> None:
    assert sse_sm.ensure_bytes(item, sep) == old.ensure_bytes(item, sep)


@COMPAT_SETTINGS
@given(item=_kwargs, sep=_sep)
def test_ensure_bytes_matches_for_dict_items(item: dict[str, Any], sep: str) -> None:
    ours = sse_sm.ensure_bytes(item, sep)
    assert ours == old.ensure_bytes(item, sep)


@COMPAT_SETTINGS
@given(kwargs=_kwargs, sep=_sep)
def test_ensure_bytes_matches_for_event_items(kwargs: dict[str, Any], sep: str) -> None:
    ours = sse_sm.ensure_bytes(sse_sm.ServerSentEvent(**kwargs), sep)
    assert ours == old.ensure_bytes(old.ServerSentEvent(**kwargs), sep)


@COMPAT_SETTINGS
@given(data=_json, sep=_sep)
def test_ensure_bytes_matches_for_json_event_items(data: object, sep: str) -> None:
    ours = sse_sm.ensure_bytes(sse_sm.JSONServerSentEvent(data), sep)
    assert ours == old.ensure_bytes(old.JSONServerSentEvent(data), sep)


@pytest.mark.parametrize(
    "data",
    [None, "", "x", "a\r\nb\rc\nd", "\n", "é€😀", "a\u2028b", 0, -7, 1.5, True, (1, 2)],
)
@pytest.mark.parametrize("sep", SEPARATORS, ids=SEP_IDS)
def test_examples_match(data: object, sep: str) -> None:
    kwargs: dict[str, Any] = {"event": "e", "id": "1", "retry": 3, "comment": "c\nd", "sep": sep}
    assert sse_sm.ServerSentEvent(data, **kwargs).encode() == (
        old.ServerSentEvent(data, **kwargs).encode()
    )


def test_empty_event_matches() -> None:
    assert sse_sm.ServerSentEvent().encode() == old.ServerSentEvent().encode() == b"\r\n"


def test_default_separator_matches() -> None:
    assert sse_sm.ServerSentEvent.DEFAULT_SEPARATOR == old.ServerSentEvent.DEFAULT_SEPARATOR


def test_sse_starlette_module_paths_are_ours() -> None:
    import sse_sm.event
    import sse_sm.sse

    assert sse_sm.event.ServerSentEvent is sse_sm.ServerSentEvent
    assert sse_sm.event.JSONServerSentEvent is sse_sm.JSONServerSentEvent
    assert sse_sm.event.ensure_bytes is sse_sm.ensure_bytes
    assert sse_sm.sse.ServerSentEvent is sse_sm.ServerSentEvent
    assert sse_sm.sse.ensure_bytes is sse_sm.ensure_bytes


@pytest.mark.parametrize("sep", SEPARATORS, ids=SEP_IDS)
def test_none_item_matches(sep: str) -> None:
    """sse-starlette sends ``data: None`` for a ``None`` item; the invariant says we do too."""
    assert sse_sm.ensure_bytes(None, sep) == old.ensure_bytes(None, sep)


class _Kind(str, enum.Enum):
    UPDATE = "update"


@pytest.mark.parametrize("field", ["event", "id"])
def test_str_enum_event_and_id_match(field: str) -> None:
    """A ``str`` enum used as event type or id is written by its value, as sse-starlette does."""
    kwargs: dict[str, Any] = {field: _Kind.UPDATE}
    ours = sse_sm.ServerSentEvent("x", **kwargs).encode()
    assert ours == old.ServerSentEvent("x", **kwargs).encode()
    assert f"{field}: update".encode() in ours


def test_str_enum_data_and_comment_match() -> None:
    value = _Kind.UPDATE
    ours = sse_sm.ServerSentEvent(value, comment=value).encode()
    assert ours == old.ServerSentEvent(value, comment=value).encode()
    assert sse_sm.ensure_bytes(value, "\n") == old.ensure_bytes(value, "\n")


# --------------------------------------------------------------------------- deliberate divergences


def test_divergence_lone_surrogate_is_replaced() -> None:
    """sse-starlette raises mid-stream on a lone surrogate; we send the event with U+FFFD."""
    with pytest.raises(UnicodeEncodeError):
        old.ServerSentEvent("a\ud800b").encode()
    with pytest.raises(UnicodeEncodeError):
        old.ensure_bytes("\udc00", "\n")
    assert sse_sm.ServerSentEvent("a\ud800b").encode() == "data: a\ufffdb\r\n\r\n".encode()
    assert sse_sm.ensure_bytes("\udc00", "\n") == "data: \ufffd\n\n".encode()


def test_divergence_nul_in_id_is_refused() -> None:
    """A browser ignores an id containing NUL, so sse-starlette's id line silently does nothing."""
    assert old.ServerSentEvent("x", id="a\0b").encode() == b"id: a\0b\r\ndata: x\r\n\r\n"
    with pytest.raises(ValueError, match="id"):
        sse_sm.ServerSentEvent("x", id="a\0b")


@pytest.mark.parametrize("field", ["id", "event"])
@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\r\nb"])
def test_divergence_cr_lf_in_id_or_event_is_refused(field: str, value: str) -> None:
    """sse-starlette silently strips the line break, sending a different value than was given."""
    kwargs: dict[str, Any] = {field: value}
    assert old.ServerSentEvent("x", **kwargs).encode() == (
        f"{field}: ab\r\ndata: x\r\n\r\n".encode()
    )
    with pytest.raises(ValueError, match=field):
        sse_sm.ServerSentEvent("x", **kwargs)


def test_divergence_bool_retry_is_refused() -> None:
    """A bool is a caller's bug; sse-starlette writes ``retry: True``, which clients ignore."""
    assert old.ServerSentEvent(retry=True).encode() == b"retry: True\r\n\r\n"
    with pytest.raises(TypeError, match="retry"):
        sse_sm.ServerSentEvent(retry=True)


def test_divergence_negative_retry_is_refused() -> None:
    """``retry: -5`` is not all digits, so clients ignore it; sse-starlette writes it anyway."""
    assert old.ServerSentEvent(retry=-5).encode() == b"retry: -5\r\n\r\n"
    with pytest.raises(ValueError, match="retry"):
        sse_sm.ServerSentEvent(retry=-5)


def test_divergence_retry_beyond_64_bits_is_refused() -> None:
    """Clients ignore a retry past 2**64 - 1; sse-starlette writes it, and fails on 10**5000."""
    assert old.ServerSentEvent(retry=2**64).encode() == b"retry: 18446744073709551616\r\n\r\n"
    with pytest.raises(ValueError, match="digits"):  # int -> str, when encoding, naming nothing
        old.ServerSentEvent(retry=10**5000).encode()
    for retry in (2**64, 10**5000):
        with pytest.raises(ValueError, match=r"^retry\b"):
            sse_sm.ServerSentEvent(retry=retry)
    assert (
        sse_sm.ServerSentEvent(retry=2**64 - 1).encode()
        == old.ServerSentEvent(retry=2**64 - 1).encode()
    )


def test_divergence_dict_data_is_json() -> None:
    """sse-starlette writes a dict's Python repr, which no client can parse; we write JSON."""
    data = {"a": [1, None], "b": "é"}
    assert old.ServerSentEvent(data).encode() == (
        "data: {'a': [1, None], 'b': 'é'}\r\n\r\n".encode()
    )
    assert sse_sm.ServerSentEvent(data).encode() == (
        'data: {"a":[1,null],"b":"é"}\r\n\r\n'.encode()
    )
    assert sse_sm.ensure_bytes({"data": data}, "\n") == 'data: {"a":[1,null],"b":"é"}\n\n'.encode()
    assert sse_sm.ServerSentEvent([1, "x"]).encode() == b'data: [1,"x"]\r\n\r\n'
    assert old.ServerSentEvent([1, "x"]).encode() == b"data: [1, 'x']\r\n\r\n"


def test_divergence_bytes_data_is_decoded() -> None:
    """sse-starlette writes ``b'...'`` for bytes data; we decode it as UTF-8."""
    assert old.ServerSentEvent(b"hi").encode() == b"data: b'hi'\r\n\r\n"
    assert sse_sm.ServerSentEvent(b"hi").encode() == b"data: hi\r\n\r\n"


def test_divergence_bytearray_item_is_sent_raw() -> None:
    """sse-starlette sends a bytearray item's repr as data; we send its bytes, like bytes."""
    assert old.ensure_bytes(bytearray(b"x"), "\n") == b"data: bytearray(b'x')\n\n"
    assert sse_sm.ensure_bytes(bytearray(b"x"), "\n") == b"x"


def test_divergence_int_id_is_accepted() -> None:
    """sse-starlette raises TypeError at encode time for an int id; we write it in decimal."""
    int_id: dict[str, Any] = {"id": 5}
    with pytest.raises(TypeError):
        old.ServerSentEvent("x", **int_id).encode()
    assert sse_sm.ServerSentEvent("x", id=5).encode() == b"id: 5\r\ndata: x\r\n\r\n"


def test_divergence_bad_sep_is_refused() -> None:
    """sse-starlette writes any string as the line terminator, breaking the stream's framing."""
    assert old.ServerSentEvent("x", sep="\t").encode() == b"data: x\t\t"
    with pytest.raises(ValueError, match="sep"):
        sse_sm.ServerSentEvent("x", sep="\t")
    with pytest.raises(ValueError, match="sep"):
        sse_sm.ensure_bytes("x", "\t")
