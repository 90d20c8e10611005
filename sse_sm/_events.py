"""Server-Sent Event values and their wire encoding.

Invariants:

* A :class:`ServerSentEvent` that exists can be encoded: every check that the
  WHATWG event-stream format needs (no CR or LF in ``event``, no CR, LF or NUL
  in ``id``, ``retry`` an integer from 0 to :data:`MAX_RETRY`, a known
  separator) and every conversion to text (``str()`` of ``data``, ``comment``
  or an ``int`` id, JSON of a ``dict``, a ``list`` or a model) runs when the value is
  constructed or a field is assigned, with a ``ValueError`` or ``TypeError``
  whose message starts with the field's name.  Encoding then only joins
  strings that already exist, so it cannot fail.  An item from a source is
  therefore either refused whole, before any byte of it is sent, or sent
  whole: no stream is ever cut half-way through an event, and a hub never
  stores an event it cannot write.
* For every input that sse-starlette 3.7.1 accepts and this module does not
  refuse, the bytes are identical to sse-starlette's: fields in the order
  comment, id, event, data, retry; ``name: value`` with one space; each line
  ended by ``sep`` (CRLF by default) and the event by one more ``sep``.
* Multi-line text is split on CRLF, CR and LF only, as the spec's
  ``end-of-line`` rule says, never on other Unicode line breaks.

Decisions the spec leaves to us (see docs/design.md, "Encoding"):

* ``data`` that is not a ``str``: a ``dict`` or ``list`` is written as compact
  JSON (sse-starlette writes its Python ``repr``, which no client can parse);
  ``bytes``/``bytearray``/``memoryview`` are decoded as UTF-8 (refused with a
  ``ValueError`` if they are not valid UTF-8); an object whose type has a
  callable ``model_dump_json`` (a pydantic v2 model; duck-typed, pydantic is
  never imported) is written as the JSON that method returns, also when it
  is nested in a ``dict`` or ``list``; anything else goes through ``str()``,
  as in sse-starlette.  A ``str`` subclass is text even if it has such a
  method.  None of this is on the path of an exact ``str``, ``dict``,
  ``bytes`` or ``ServerSentEvent`` item.
* A ``str`` subclass is never written through an f-string, whose
  ``__format__`` could differ from what was validated and split.  In ``event``
  and ``id`` it is the characters it holds (a ``(str, Enum)`` member is its
  value); ``data`` and ``comment`` go through ``str()`` and are then split,
  both exactly as sse-starlette does.
* A lone surrogate (a ``str`` that cannot be encoded as UTF-8) is written as
  U+FFFD, the character a WHATWG decoder would show for a broken sequence; a
  surrogate *pair* left unjoined in a ``str`` is joined into the character it
  encodes.  The event is still sent whole.

Spec: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

Why one module of this length: the encoder's fast paths (an exact dict, an
exact event, a multi-line str) skip checks only because construction already
made them, so the checks and the fast paths that rely on them stay side by
side.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias, final

__all__ = (
    "DEFAULT_SEPARATOR",
    "FRAMES_MAX_BYTES",
    "MAX_RETRY",
    "SEPARATORS",
    "JSONServerSentEvent",
    "Frames",
    "ServerSentEvent",
    "Separator",
    "encode_item",
    "ensure_bytes",
    "validate_sep",
)

Separator: TypeAlias = Literal["\r\n", "\r", "\n"]

#: The line terminators the event-stream grammar allows.
SEPARATORS: Final[tuple[str, ...]] = ("\r\n", "\r", "\n")
DEFAULT_SEPARATOR: Final = "\r\n"

#: The largest ``retry`` accepted, in milliseconds: the largest unsigned 64-bit
#: integer.  Clients keep the reconnection time in 64 bits at most (Chromium's
#: parser ignores a ``retry`` field that does not fit in an unsigned 64-bit
#: integer), so a larger value would be sent and then silently ignored; far
#: larger ones (above 4300 digits) Python cannot even write.  It is 584 million
#: years: no reconnection delay a server means is refused.
MAX_RETRY: Final = 2**64 - 1

#: How large :class:`Frames` grows: events are joined while the body stays
#: within this many bytes (a single larger event is sent alone).  64 KiB is
#: a few hundred typical events, enough that a subscriber that fell behind
#: catches up in a handful of sends, and small enough that one send to a
#: slow client is not megabytes held in the server's write buffer.
FRAMES_MAX_BYTES: Final = 64 * 1024

_FIELD_NAMES: Final = frozenset({"data", "event", "id", "retry", "comment", "sep"})
_SURROGATE = re.compile("[\ud800-\udfff]")


def _shown(value: object) -> str:
    """``repr(value)`` for an error message, or its type when even ``repr`` fails.

    An ``int`` of more than 4300 digits has no ``repr``; the message about it
    must not raise an error of its own instead.
    """
    try:
        return repr(value)
    except Exception:
        return f"a {type(value).__name__} without a repr"


def validate_sep(sep: object) -> str:
    """Return ``sep`` if it is one of the three legal line terminators."""
    if sep is None:
        return DEFAULT_SEPARATOR
    if not isinstance(sep, str) or sep not in SEPARATORS:
        raise ValueError(f"sep must be one of '\\r\\n', '\\r', '\\n', got {_shown(sep)}")
    return sep


def _lf_lines(text: str) -> str:
    """``text`` with every CRLF and CR written as LF (the spec's end-of-line)."""
    if "\r" in text:
        return text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _utf8(text: str) -> bytes:
    """Encode as UTF-8, writing lone surrogates as U+FFFD instead of raising."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Join surrogate pairs that were left as two code points, then replace
        # whatever is still unpaired.
        joined = text.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
        return _SURROGATE.sub("\ufffd", joined).encode("utf-8")


def _plain(text: str) -> str:
    """The characters of a ``str`` as an exact ``str``.

    A ``str`` subclass may override ``__str__`` or ``__format__`` (a
    ``(str, Enum)`` member formats as ``Kind.NAME``), so what was validated
    would not be what an f-string writes.  Its characters are what it holds.
    """
    return text if type(text) is str else str.__str__(text)


def _text(value: object, field: str) -> str:
    """``str(value)`` as an exact ``str`` (``__str__`` may return a subclass).

    A ``TypeError`` or ``ValueError`` from ``str()`` (an ``int`` too long to
    write, a ``__str__`` that refuses) is raised again, of the same kind, with
    a message that names ``field``; any other exception is the caller's own
    and propagates unchanged, with a note that names ``field``.
    """
    try:
        return _plain(str(value))
    except (TypeError, ValueError) as exc:
        kind = type(value).__name__
        raise _refusal(exc, f"{field}: str() of a value of type {kind} failed") from exc
    except Exception as exc:
        _note(exc, f"while writing the ServerSentEvent field {field!r} with str()")
        raise


def _refusal(exc: TypeError | ValueError, what: str) -> TypeError | ValueError:
    """A ``TypeError`` or ``ValueError`` (as ``exc`` is) saying ``what`` failed and why."""
    kind = ValueError if isinstance(exc, ValueError) else TypeError
    return kind(f"{what}: {exc}")


def _note(exc: BaseException, note: str) -> None:
    add_note = getattr(exc, "add_note", None)  # Python 3.11 and newer
    if add_note is not None:
        add_note(note)


def _check_event(event: object) -> str | None:
    if event is None:
        return None
    if not isinstance(event, str):
        raise TypeError(f"event must be a str, got {type(event).__name__}")
    event = _plain(event)
    if "\r" in event or "\n" in event:
        raise ValueError(f"event must not contain CR or LF (it would end the field): {event!r}")
    return event


def _check_id(id: object) -> str | None:
    if id is None:
        return None
    if isinstance(id, bool) or not isinstance(id, (str, int)):
        raise TypeError(f"id must be a str (or an int), got {type(id).__name__}")
    if isinstance(id, str):
        text = _plain(id)
    else:
        try:
            text = int.__repr__(id)
        except ValueError as exc:  # more digits than Python writes
            raise ValueError(f"id: an int that cannot be written in decimal: {exc}") from None
    if "\r" in text or "\n" in text or "\0" in text:
        # A browser ignores an id containing NUL, and CR/LF would end the field.
        raise ValueError(f"id must not contain CR, LF or NUL: {text!r}")
    return text


def _check_retry(retry: object) -> int | None:
    if retry is None:
        return None
    if isinstance(retry, bool) or not isinstance(retry, int):
        raise TypeError(f"retry must be an int of milliseconds, got {type(retry).__name__}")
    if retry < 0:
        # The spec ignores a retry field that is not all ASCII digits.
        raise ValueError(f"retry must be >= 0 milliseconds, got {_shown(retry)}")
    if retry > MAX_RETRY:
        # Not written out: it may have more digits than Python will write.
        raise ValueError(
            f"retry must be at most {MAX_RETRY} milliseconds (2**64 - 1, the largest "
            f"a client reads), got an int of {retry.bit_length()} bits"
        )
    return retry


def _data_text(data: object) -> str | None:
    if data is None or type(data) is str:
        return data
    if isinstance(data, (dict, list)):
        return _json_data(data)
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"data bytes are not valid UTF-8: {exc}") from None
    if not isinstance(data, str) and _is_model(data):
        return _model_json(data)
    return _text(data, "data")


#: Per type, whether it has a callable ``model_dump_json``.  A lookup that
#: fails (an ``int`` item) costs about ten times a dict lookup, so each type
#: is asked once.  Cleared when full, so types made at run time cannot grow it
#: without bound; a cleared entry is only asked again.
_MODEL_TYPES: dict[type, bool] = {}
_MODEL_TYPES_MAX: Final = 256


def _is_model(value: object) -> bool:
    """Whether ``value`` writes itself as JSON: a callable ``model_dump_json`` on its type.

    Looked up on the type, as Python looks up special methods, so an instance
    attribute of that name, or a proxy's ``__getattr__`` that answers every
    name, does not make an object a model.  Decided once per type (a method
    added to or removed from a class after its first value was encoded may
    not be seen).  Callers test ``str`` first: a ``str`` subclass is text
    whatever methods it has.  Thread-safe: the cache holds only answers that
    any thread would compute alike.
    """
    kind = type(value)
    known = _MODEL_TYPES.get(kind)
    if known is None:
        known = callable(getattr(kind, "model_dump_json", None))
        if len(_MODEL_TYPES) >= _MODEL_TYPES_MAX:
            _MODEL_TYPES.clear()
        _MODEL_TYPES[kind] = known
    return known


def _model_json(model: Any) -> str:
    """``model.model_dump_json()``, checked: a ``str``, or a refusal naming ``data``.

    A ``TypeError`` or ``ValueError`` (pydantic's ``PydanticSerializationError``
    is one) is raised again, of the same kind, with a message that names
    ``data``; any other exception propagates unchanged, with a note.
    """
    kind = type(model).__name__
    try:
        text = model.model_dump_json()
    except (TypeError, ValueError) as exc:
        raise _refusal(exc, f"data: model_dump_json() of a {kind} failed") from exc
    except Exception as exc:
        _note(exc, "while writing the ServerSentEvent field 'data' with model_dump_json()")
        raise
    if not isinstance(text, str):
        raise TypeError(
            f"data: model_dump_json() of a {kind} returned a {type(text).__name__}, not a str"
        )
    return _plain(text)


def _json_default(value: object) -> object:
    """``json.dumps``'s hook for what it cannot write: a model nested in a dict or list.

    Called only for values ``json`` refuses, so plain dicts and lists never
    pay for it.  The model's own JSON is parsed back so that ``json`` embeds
    exactly what the model writes (its serializers, aliases and exclusions).
    """
    if not isinstance(value, str) and _is_model(value):
        return json.loads(_model_json(value))
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _json(value: object) -> str:
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default
    )


def _json_data(value: object) -> str:
    """``data`` as compact JSON; a value JSON cannot hold is refused naming the field."""
    try:
        return _json(value)
    except (TypeError, ValueError) as exc:  # NaN, a set, a tuple key, an int too long...
        raise _refusal(exc, "data cannot be written as JSON") from exc
    except Exception as exc:  # RecursionError from a deep value, a default that raises...
        _note(exc, "while writing the ServerSentEvent field 'data' as JSON")
        raise


def _encode_fields(
    data: str | None,
    event: str | None,
    id: str | None,
    retry: int | None,
    comment: str | None,
    sep: str,
) -> bytes:
    """Build one event's frame from already-validated fields.

    Every value here is an exact ``str`` (or an ``int`` retry), so the
    f-strings write exactly what was validated.  Plain concatenation: an
    event has few fields, and this runs once per event.  The common shapes
    (single-line data with an optional id and event) are one f-string each.
    """
    if (
        comment is None
        and retry is None
        and data is not None
        and "\n" not in data
        and "\r" not in data
    ):
        if id is None:
            if event is None:
                text = f"data: {data}{sep}{sep}"
            else:
                text = f"event: {event}{sep}data: {data}{sep}{sep}"
        elif event is None:
            text = f"id: {id}{sep}data: {data}{sep}{sep}"
        else:
            text = f"id: {id}{sep}event: {event}{sep}data: {data}{sep}{sep}"
        try:
            return text.encode()
        except UnicodeEncodeError:
            return _utf8(text)
    frame = ""
    if comment is not None:
        frame = ": " + _lf_lines(comment).replace("\n", sep + ": ") + sep
    if id is not None:
        frame += f"id: {id}{sep}"
    if event is not None:
        frame += f"event: {event}{sep}"
    if data is not None:
        if "\n" in data or "\r" in data:
            frame += "data: " + _lf_lines(data).replace("\n", sep + "data: ") + sep
        else:
            frame += f"data: {data}{sep}"
    if retry is not None:
        frame += f"retry: {retry}{sep}"
    frame += sep
    try:
        return frame.encode()
    except UnicodeEncodeError:
        return _utf8(frame)


class ServerSentEvent:
    """One event, validated on construction and on every field assignment.

    >>> ServerSentEvent("hello", event="greeting", id="1").encode()
    b'id: 1\\r\\nevent: greeting\\r\\ndata: hello\\r\\n\\r\\n'

    Args:
        data: the payload; split into one ``data:`` line per line of text.
            ``None`` writes no data field (an id-only or comment-only block).
            A ``dict``, a ``list`` or a model (an object with a callable
            ``model_dump_json``, such as a pydantic v2 model) is written as
            compact JSON, converted here, once.
        event: the event type; the client's listener name.  No CR or LF.
        id: sets the client's last event ID.  No CR, LF or NUL.  An int is
            written in decimal.  ``""`` resets the client's last event ID.
        retry: the client's reconnection delay in milliseconds, ``>= 0``.
        comment: written as ``: text`` lines, which clients ignore.
        sep: the line terminator: ``"\\r\\n"`` (default), ``"\\r"`` or ``"\\n"``.

    Raises:
        ValueError, TypeError: a field that the event-stream format cannot
            carry; the message names the field.
    """

    __slots__ = ("_comment", "_data", "_event", "_id", "_retry", "_sep")

    DEFAULT_SEPARATOR: Final = DEFAULT_SEPARATOR

    def __init__(
        self,
        data: Any = None,
        *,
        event: str | None = None,
        id: str | int | None = None,
        retry: int | None = None,
        comment: str | None = None,
        sep: str | None = None,
    ) -> None:
        self._data: str | None = data if data is None or type(data) is str else _data_text(data)
        if event is not None and not (
            type(event) is str and "\n" not in event and "\r" not in event
        ):
            event = _check_event(event)
        self._event = event
        if id is not None and not (
            type(id) is str and "\n" not in id and "\r" not in id and "\0" not in id
        ):
            id = _check_id(id)
        self._id = id
        self._retry = None if retry is None else _check_retry(retry)
        self._comment = None if comment is None else _text(comment, "comment")
        self._sep = DEFAULT_SEPARATOR if sep is None else validate_sep(sep)

    @property
    def data(self) -> str | None:
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = _data_text(value)

    @property
    def event(self) -> str | None:
        return self._event

    @event.setter
    def event(self, value: str | None) -> None:
        self._event = _check_event(value)

    @property
    def id(self) -> str | None:
        return self._id

    @id.setter
    def id(self, value: str | int | None) -> None:
        self._id = _check_id(value)

    @property
    def retry(self) -> int | None:
        return self._retry

    @retry.setter
    def retry(self, value: int | None) -> None:
        self._retry = _check_retry(value)

    @property
    def comment(self) -> str | None:
        return self._comment

    @comment.setter
    def comment(self, value: str | None) -> None:
        self._comment = None if value is None else _text(value, "comment")

    @property
    def sep(self) -> str:
        return self._sep

    @sep.setter
    def sep(self, value: str | None) -> None:
        self._sep = validate_sep(value)

    def encode(self) -> bytes:
        """The event's bytes on the wire, ending with the blank line that dispatches it."""
        return _encode_fields(
            self._data, self._event, self._id, self._retry, self._comment, self._sep
        )

    def _fields(self) -> tuple[object, ...]:
        return (self._data, self._event, self._id, self._retry, self._comment, self._sep)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServerSentEvent):
            return NotImplemented
        return self._fields() == other._fields()

    #: Unhashable: equal by value, and every field can be assigned, so a hash
    #: by value would change under a set or dict that holds the event (the
    #: rule Python applies to a mutable dataclass).  sse-starlette's events
    #: compare and hash by identity; code that used them as set members or
    #: keys can key on ``id(event)`` or on ``event.encode()`` instead.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        names = ("data", "event", "id", "retry", "comment", "sep")
        fields = zip(names[:-1], self._fields()[:-1], strict=True)
        shown = [f"{n}={v!r}" for n, v in fields if v is not None]
        if self._sep != DEFAULT_SEPARATOR:
            shown.append(f"sep={self._sep!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


class JSONServerSentEvent(ServerSentEvent):
    """A :class:`ServerSentEvent` whose ``data`` is serialised as compact JSON.

    Serialisation matches sse-starlette: no spaces, non-ASCII kept as is, and
    NaN or infinity refused with ``ValueError``.  ``data=None`` writes no data
    field.
    """

    __slots__ = ()

    def __init__(
        self,
        data: Any = None,
        *,
        event: str | None = None,
        id: str | int | None = None,
        retry: int | None = None,
        comment: str | None = None,
        sep: str | None = None,
    ) -> None:
        super().__init__(
            None if data is None else _json_data(data),
            event=event,
            id=id,
            retry=retry,
            comment=comment,
            sep=sep,
        )


def _encode_mapping(fields: Mapping[str, Any], sep: str) -> bytes:
    """Encode a dict of ServerSentEvent keyword arguments without mutating it.

    Typical items are one-line ``str`` values under ``data`` and optionally
    ``event`` and ``id``, and nothing else: those are checked and written by
    one f-string.  Anything else takes the general path, with the same
    checks as :class:`ServerSentEvent`.

    The f-strings repeat the first branch of :func:`_encode_fields` on
    purpose: calling it instead costs 85 to 100 ns per item, a quarter of the
    whole encode (measured side by side); ``encode_item``'s multi-line
    ``str`` branch repeats its data lines for the same reason.
    """
    data = fields.get("data")
    event = fields.get("event")
    id = fields.get("id")
    if (
        type(data) is str
        and len(fields) == 1 + (event is not None) + (id is not None)  # no other key
        and "\n" not in data
        and "\r" not in data
        and (event is None or (type(event) is str and "\n" not in event and "\r" not in event))
        and (
            id is None or (type(id) is str and "\n" not in id and "\r" not in id and "\0" not in id)
        )
    ):
        if event is None:
            frame = (
                f"data: {data}{sep}{sep}" if id is None else f"id: {id}{sep}data: {data}{sep}{sep}"
            )
        elif id is None:
            frame = f"event: {event}{sep}data: {data}{sep}{sep}"
        else:
            frame = f"id: {id}{sep}event: {event}{sep}data: {data}{sep}{sep}"
        try:
            return frame.encode()
        except UnicodeEncodeError:
            return _utf8(frame)
    return _encode_mapping_in_full(fields, sep)


def _encode_mapping_in_full(fields: Mapping[str, Any], sep: str) -> bytes:
    """The general path: every field, every check, unknown keys refused."""
    data = event = id = retry = comment = None
    for key, value in fields.items():
        if key == "data":
            data = value
        elif key == "event":
            event = value
        elif key == "id":
            id = value
        elif key == "retry":
            retry = value
        elif key == "comment":
            comment = value
        elif key != "sep":
            unknown = sorted(map(str, fields.keys() - _FIELD_NAMES))
            raise TypeError(f"unknown ServerSentEvent field(s) in dict item: {unknown}")
    return _encode_fields(
        _data_text(data),
        _check_event(event),
        _check_id(id),
        _check_retry(retry),
        None if comment is None else _text(comment, "comment"),
        sep,
    )


@final
class Frames:
    """Several encoded events joined into one body, sent in one ASGI message.

    What a hub subscription hands the driver when more than one event is
    ready (a backlog): ``body`` is the events' frames, each whole and in
    order, exactly the bytes they would have been one by one; ``events`` is
    how many they are (gap signals included), which the driver counts as
    that many events sent.  Only the driver receives these: a subscription
    iterated directly still yields one event per item.
    """

    __slots__ = ("body", "events")

    def __init__(self, body: bytes, events: int) -> None:
        self.body = body
        self.events = events

    def __repr__(self) -> str:
        return f"<Frames: {self.events} events, {len(self.body)} bytes>"


def encode_item(item: object, sep: str) -> bytes:
    """Turn one item yielded by a source into the bytes to send.

    ``bytes``, ``bytearray`` and ``memoryview`` are sent as they are; a
    :class:`ServerSentEvent` keeps its own ``sep``; a ``dict`` is the keyword
    arguments of a :class:`ServerSentEvent` (its ``sep`` key, if any, is
    replaced by the response's, as in sse-starlette; the dict itself is never
    modified); anything else is the ``data`` of an event.

    Raises:
        ValueError, TypeError: the item cannot be encoded; nothing was sent.
    """
    if type(item) is str:
        if "\n" in item or "\r" in item:  # one data line per line (CRLF, LF or CR)
            frame = "data: " + _lf_lines(item).replace("\n", sep + "data: ") + sep + sep
        else:
            frame = f"data: {item}{sep}{sep}"
        try:
            return frame.encode()
        except UnicodeEncodeError:
            return _utf8(frame)
    # Exact types first: an isinstance() that fails costs as much as a field.
    # (The driver sends bytes items without calling this.)
    if type(item) is dict:
        return _encode_mapping(item, sep)
    if type(item) is ServerSentEvent:  # item.encode(), without the call between
        return _encode_fields(
            item._data, item._event, item._id, item._retry, item._comment, item._sep
        )
    if type(item) is bytes:
        return item
    if isinstance(item, dict):
        return _encode_mapping(item, sep)
    if isinstance(item, ServerSentEvent):
        return item.encode()
    if isinstance(item, bytes):
        return item
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    # Like sse-starlette, None is the text "None": a source that yields it
    # sends an event, not an empty block.
    return _encode_fields(
        _data_text(item) if item is not None else "None", None, None, None, None, sep
    )


def ensure_bytes(data: object, sep: str) -> bytes:
    """sse-starlette's name for :func:`encode_item`, kept for code that imports it."""
    return encode_item(data, validate_sep(sep))
