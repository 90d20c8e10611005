"""A WHATWG event-stream parser: the bytes an ``EventSource`` reads, as it reads them.

No I/O and no event loop: it can be fed from a socket, a test client or a
file.  Invariants (:class:`EventStreamParser`):

* It implements the HTML Living Standard's "Parsing an event stream" and
  "Interpreting an event stream" and nothing else: the same bytes always give
  the same events, **however they are split into chunks** (a CR at the end of
  one chunk and an LF at the start of the next are one line ending; a UTF-8
  character may be split anywhere).
* Only CRLF, lone CR and lone LF end a line; invalid UTF-8 reads as U+FFFD; one
  leading BOM is dropped, once, at the very start of the stream.
* Text that is not yet a complete event is never reported; at :meth:`close`
  an unfinished event is discarded, as a browser discards it.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Final, final

__all__ = ("Comment", "Event", "EventStreamParser", "parse_event_stream")

#: The spec's three line endings.  ``str.splitlines`` is not used because it
#: also breaks on U+2028, U+0085, VT, FF and others, which the spec does not.
_LINE_END: Final = re.compile(r"\r\n|\r|\n")
#: The only values a ``retry`` field may have (ASCII digits, at least one).
_RETRY_VALUE: Final = re.compile(r"[0-9]+")
_BOM: Final = "\ufeff"


# --------------------------------------------------------------------------- parser


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event, as an ``EventSource`` ``MessageEvent`` would carry it.

    Frozen so that an event can be compared with an expected value in a test
    and kept in a set, and so that no consumer can alter what another sees.

    Attributes:
        data: The data buffer with its single trailing LF removed.
        event: The event type; ``"message"`` when no ``event`` field was given.
        id: The last event ID string at dispatch time.  It persists across
            events, exactly as ``MessageEvent.lastEventId`` does, so an event
            with no ``id`` field carries the previous one; ``""`` if none.
        retry: The reconnection time in milliseconds in effect at dispatch,
            or ``None`` if the stream never set one.
        comments: Comment lines of this event's block, without the colon and
            one leading space.  Browsers drop comments; tests often need them.
    """

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None
    comments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment line from a block that dispatched no event, such as a keep-alive ping.

    Reported separately from events because a ping block (``: ping`` then a
    blank line) is invisible to ``EventSource`` yet is exactly what a test of
    keep-alive behaviour needs to observe.

    Attributes:
        text: The comment without its colon and one leading space.
    """

    text: str


def _strip_one_space(value: str) -> str:
    """Remove one leading U+0020, as the spec does for field values and comments."""
    return value[1:] if value.startswith(" ") else value


@final
class EventStreamParser:
    """An incremental ``text/event-stream`` parser that follows the WHATWG algorithm.

    Incremental because streaming tests must see each event when its blank
    line arrives, not when the response ends; and strict about the spec
    because the point of the kit is to see exactly what a browser would see.

    Example:
        >>> parser = EventStreamParser()
        >>> parser.feed(b"data: hel")
        []
        >>> parser.feed(b"lo\\r\\n\\r\\n")
        [Event(data='hello', event='message', id='', retry=None, comments=())]

    Attributes:
        last_event_id: The last event ID string: the ``id`` buffer as it stood
            at the most recent blank line.  It is what a reconnecting browser
            would send as ``Last-Event-ID``.
        retry: The reconnection time in milliseconds, or ``None`` if never set.
            Set as soon as a valid ``retry`` line is read, as the spec says.
    """

    __slots__ = (
        "_after_cr",
        "_at_start",
        "_closed",
        "_comments",
        "_data",
        "_decoder",
        "_event_type",
        "_id_buffer",
        "_line",
        "last_event_id",
        "retry",
    )

    def __init__(self) -> None:
        # errors="replace" is the spec's "UTF-8 decode": invalid bytes read as U+FFFD.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_start = True  # no text decoded yet, so a BOM may still come
        self._after_cr = False  # the last text ended with CR: a leading LF is its CRLF
        self._line: list[str] = []  # text of the line not yet ended
        self._data: list[str] = []  # data values; "\n".join is the spec's buffer minus its LF
        self._event_type = ""
        self._id_buffer = ""
        self._comments: list[str] = []
        self._closed = False
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes | str) -> list[Event | Comment]:
        """Parse the next chunk and return what it completed, in stream order.

        ``str`` chunks are encoded to UTF-8 and go through the same decoder as
        bytes, so mixing the two, or splitting either anywhere, cannot change
        the result.  (A lone surrogate in a ``str`` therefore reads as U+FFFD,
        as its bytes would.)

        Args:
            chunk: The next bytes of the stream, or text.

        Returns:
            Events dispatched by blank lines in this chunk, and one
            :class:`Comment` per comment line of each block that ended
            without dispatching an event.

        Raises:
            RuntimeError: If :meth:`close` was already called, because the
                decoder has been flushed and the stream is over.
        """
        if self._closed:
            raise RuntimeError("EventStreamParser.feed() after close()")
        raw = chunk.encode("utf-8", "surrogatepass") if isinstance(chunk, str) else chunk
        return self._parse_text(self._decoder.decode(raw))

    def close(self) -> list[Event | Comment]:
        """End the stream: flush the decoder and discard any unfinished event.

        Returns:
            What the flushed text completed; in practice always empty, since
            flushing yields at most U+FFFD for a truncated character, which
            cannot end a line.  Returned anyway so callers need no special case.
        """
        if self._closed:
            return []
        self._closed = True
        out = self._parse_text(self._decoder.decode(b"", final=True))
        # The spec: pending data at end of file is discarded, event and all.
        self._line.clear()
        self._data.clear()
        self._event_type = ""
        self._comments.clear()
        return out

    def _parse_text(self, text: str) -> list[Event | Comment]:
        """Split decoded text into lines, carrying partial lines and CRLF across calls."""
        out: list[Event | Comment] = []
        if not text:
            return out
        if self._at_start:
            self._at_start = False
            if text.startswith(_BOM):
                text = text[1:]
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF whose CR ended the previous chunk
        self._after_cr = text.endswith("\r")
        start = 0
        for match in _LINE_END.finditer(text):
            self._line.append(text[start : match.start()])
            line = "".join(self._line)
            self._line.clear()
            self._process_line(line, out)
            start = match.end()
        if start < len(text):
            self._line.append(text[start:])
        return out

    def _process_line(self, line: str, out: list[Event | Comment]) -> None:
        """Apply one complete line to the buffers, dispatching on a blank line."""
        if not line:
            self._end_block(out)
            return
        if line.startswith(":"):
            self._comments.append(_strip_one_space(line[1:]))
            return
        name, colon, value = line.partition(":")
        if colon:
            value = _strip_one_space(value)
        if name == "event":
            self._event_type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id_buffer = value
        elif name == "retry" and _RETRY_VALUE.fullmatch(value):
            self.retry = int(value)
        # Any other field name, an id with NUL and a retry that is not all
        # ASCII digits are ignored, as the spec requires.

    def _end_block(self, out: list[Event | Comment]) -> None:
        """The spec's "dispatch the event", plus reporting of the block's comments."""
        self.last_event_id = self._id_buffer
        comments = tuple(self._comments)
        self._comments.clear()
        if not self._data:
            self._event_type = ""
            out.extend(Comment(text) for text in comments)
            return
        out.append(
            Event(
                data="\n".join(self._data),
                event=self._event_type or "message",
                id=self.last_event_id,
                retry=self.retry,
                comments=comments,
            )
        )
        self._data.clear()
        self._event_type = ""


def parse_event_stream(data: bytes | str) -> list[Event]:
    """Parse a whole stream at once and return its events, ignoring comment blocks.

    The common case in a test that already has the full body; an unfinished
    final event is discarded, so a prefix of a live stream can be parsed too.

    Args:
        data: The complete (or truncated) body.

    Returns:
        The dispatched events in order.
    """
    parser = EventStreamParser()
    items = parser.feed(data)
    items.extend(parser.close())
    return [item for item in items if isinstance(item, Event)]
