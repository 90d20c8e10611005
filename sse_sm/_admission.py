"""A coordinator's books of its streams: statistics and admission control.

Each :class:`~sse_sm.DrainCoordinator` owns one :class:`StreamBooks`.  Its
invariants:

* **Reported, not polled.**  A connection asks for a slot when it starts
  (:meth:`StreamBooks.admit`, which counts it ``OPEN``), reports each change
  of state (:meth:`StreamBooks.moved`, never a self-loop, so three or four
  calls a stream and nothing per event), and has a last word when it is done
  (:meth:`StreamBooks.done`), whatever happened in between.
* **Atomic admission.**  The check against ``max_streams`` (and the response
  class's own limit) and the taking of the slot are one step under the books'
  lock, so concurrent requests, on one loop or on several threads, never
  overshoot a limit.
* **Released exactly once.**  The slot is given back when the stream enters
  ``CLOSED``, or by the connection's last word on a path that never booked its
  close; removing the stream from the live table is what gives it back, and
  that can only happen once.
* **Thread-safe.**  Every method may be called from any thread; all state is
  guarded by one re-entrant lock (a signal handler may read the statistics
  while its own thread holds it).

Nothing here imports anyio or Starlette.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol, final

from ._state import Arc, CloseReason, State
from ._validation import check_count, check_whole_range

__all__ = (
    "DEFAULT_RETRY_AFTER",
    "LIVE_STATES",
    "MAX_RETRY_AFTER",
    "CoordinatorStatistics",
    "StreamBooks",
    "TrackedStream",
    "admission_class_for",
    "check_class_max_streams",
)

logger = logging.getLogger("sse_sm.shutdown")

#: Default range of the ``Retry-After`` seconds a refused request is sent.
DEFAULT_RETRY_AFTER: Final = (1, 5)
#: Upper bound on ``retry_after``: a day.  Anything longer is a mistake.
MAX_RETRY_AFTER: Final = 86_400
#: The states a stream is counted in while it lives (closed ones are counted by reason).
LIVE_STATES: Final = (State.OPEN, State.STREAMING, State.DRAINING)


class TrackedStream(Protocol):
    """What the books read of a stream (a ``Connection``)."""

    def sent_counts(self) -> tuple[int, int, int]:
        """Events, pings and body bytes sent so far."""
        ...


@final
@dataclass(frozen=True, slots=True)
class CoordinatorStatistics:
    """A snapshot of one coordinator's streams (trio's ``statistics()`` style).

    Counts every stream that ran (or answered a HEAD, or was refused) with
    this coordinator, from the moment its connection started, whatever its
    response class.
    """

    #: Streams alive right now, per state: exactly the keys ``OPEN``,
    #: ``STREAMING`` and ``DRAINING``.
    streams: Mapping[State, int]
    #: Streams closed since the coordinator was created, per reason; every
    #: :class:`CloseReason` is a key (0 when none closed so).
    closes: Mapping[CloseReason, int]
    #: Requests refused by admission control: ``closes[CloseReason.REJECTED]``.
    rejections: int
    #: Events sent, by the streams that closed and by those still alive.
    events_sent: int
    #: Keep-alive pings sent, same streams.
    pings_sent: int
    #: Body bytes sent (events, pings, farewells), same streams.
    bytes_sent: int

    @property
    def active(self) -> int:
        """Streams alive right now, all states together."""
        return sum(self.streams.values())


@final
class StreamBooks:
    """Live streams per state, closes per reason, traffic, and the admission limits.

    Args:
        max_streams: ``None`` or an int >= 0 (see ``DrainCoordinator``).
        retry_after: whole seconds, an int or an inclusive ``(low, high)``.
    """

    __slots__ = (
        "_closed_totals",
        "_closes",
        "_live",
        "_lock",
        "_max_streams",
        "_owner_counts",
        "_owners",
        "_retry_after",
        "_streams",
    )

    def __init__(
        self,
        max_streams: int | None = None,
        retry_after: int | tuple[int, int] = DEFAULT_RETRY_AFTER,
    ) -> None:
        self._max_streams = check_max_streams("max_streams", max_streams)
        self._retry_after = check_retry_after("retry_after", retry_after)
        self._lock = threading.RLock()
        #: Each live stream and its current state, and the count per state.
        self._live: dict[TrackedStream, State] = {}
        self._streams: dict[State, int] = dict.fromkeys(LIVE_STATES, 0)
        self._closes: dict[CloseReason, int] = dict.fromkeys(CloseReason, 0)
        #: What the closed streams sent: events, pings, bytes.
        self._closed_totals = [0, 0, 0]
        #: The response class each live stream is counted for, and the count
        #: per class (an entry only while it has live streams).
        self._owners: dict[TrackedStream, type] = {}
        self._owner_counts: dict[type, int] = {}

    @property
    def max_streams(self) -> int | None:
        return self._max_streams

    @max_streams.setter
    def max_streams(self, value: int | None) -> None:
        checked = check_max_streams("max_streams", value)
        with self._lock:
            self._max_streams = checked

    @property
    def retry_after(self) -> tuple[int, int]:
        return self._retry_after

    @retry_after.setter
    def retry_after(self, value: int | tuple[int, int]) -> None:
        self._retry_after = check_retry_after("retry_after", value)

    def statistics(self) -> CoordinatorStatistics:
        """See :meth:`DrainCoordinator.statistics <sse_sm.DrainCoordinator.statistics>`."""
        with self._lock:
            streams = dict(self._streams)
            closes = dict(self._closes)
            events, pings, sent = self._closed_totals
            live = list(self._live)
        for stream in live:
            stream_events, stream_pings, stream_bytes = stream.sent_counts()
            events += stream_events
            pings += stream_pings
            sent += stream_bytes
        return CoordinatorStatistics(
            streams=MappingProxyType(streams),
            closes=MappingProxyType(closes),
            rejections=closes[CloseReason.REJECTED],
            events_sent=events,
            pings_sent=pings,
            bytes_sent=sent,
        )

    def admit(
        self, stream: TrackedStream, owner: type | None = None, owner_limit: int | None = None
    ) -> str | None:
        """Take a slot for ``stream`` and count it ``OPEN``; or say why not.

        Atomic: both checks and the taking of the slot are one step under the
        lock.  ``owner`` is the response class counted against
        ``owner_limit`` (its ``max_streams``); every stream with an owner is
        counted for it, limited or not, so that a limit set later counts the
        streams already running.  Returns ``None`` when admitted (the slot is
        held until :meth:`moved` books the close, or :meth:`done`), else the
        reason for the refusal.
        """
        with self._lock:
            limit = self._max_streams
            if limit is not None and len(self._live) >= limit:
                return f"max_streams={limit} reached"
            if owner is not None:
                count = self._owner_counts.get(owner, 0)
                if owner_limit is not None and count >= owner_limit:
                    return f"{owner.__name__}.max_streams={owner_limit} reached"
                self._owner_counts[owner] = count + 1
                self._owners[stream] = owner
            self._live[stream] = State.OPEN
            self._streams[State.OPEN] += 1
        return None

    def draw_retry_after(self) -> int:
        """Whole seconds for a refusal's ``Retry-After``, drawn from :attr:`retry_after`."""
        low, high = self._retry_after
        # Jitter, not secrecy: the point is only that clients come back spread out.
        return random.randint(low, high)

    def moved(self, stream: TrackedStream, arc: Arc) -> None:
        """Book a change of state (never a self-loop): move the stream's count,
        or, into ``CLOSED``, count its close and add up what it sent."""
        with self._lock:
            previous = self._live.get(stream)
            if previous is not None:
                self._streams[previous] -= 1
                if arc.close_reason is None:
                    self._live[stream] = arc.target
                    self._streams[arc.target] += 1
                    return
                self._release(stream)
            if arc.close_reason is not None:
                self._closes[arc.close_reason] += 1

    def done(self, stream: TrackedStream, close_reason: CloseReason | None) -> None:
        """The connection's last word, on every path; idempotent.

        A stream still counted alive gives its slot back here.  That happens
        when its close was never booked: ``close_reason`` is the machine's
        (an ``on_transition`` listener raised a ``BaseException`` from the
        closing transition, before the driver could report it), counted now;
        ``None`` is a path that never reached ``CLOSED``, a bug, logged.
        """
        if stream not in self._live:
            # The usual case, its close booked already: no lock needed, since
            # a stream leaves the live table once and never comes back.
            return
        with self._lock:
            previous = self._live.get(stream)
            if previous is None:
                return
            self._streams[previous] -= 1
            self._release(stream)
            if close_reason is not None:
                self._closes[close_reason] += 1
                return
        logger.error("a stream ended in state %s without closing; counted out", previous.name)

    def _release(self, stream: TrackedStream) -> None:
        """Give the slot back and add up what the stream sent; with the lock held."""
        del self._live[stream]
        owner = self._owners.pop(stream, None)
        if owner is not None:
            left = self._owner_counts[owner] - 1
            if left:
                self._owner_counts[owner] = left
            else:  # no entry kept per class that once streamed
                del self._owner_counts[owner]
        events, pings, sent = stream.sent_counts()
        totals = self._closed_totals
        totals[0] += events
        totals[1] += pings
        totals[2] += sent


def check_max_streams(name: str, value: object) -> int | None:
    """``None`` (no limit) or an int >= 0."""
    return None if value is None else check_count(name, value, minimum=0)


def check_retry_after(name: str, value: object) -> tuple[int, int]:
    """Whole seconds: one int, or an inclusive ``(low, high)`` tuple of ints, each
    from 0 to :data:`MAX_RETRY_AFTER`."""
    return check_whole_range(name, value, maximum=MAX_RETRY_AFTER, unit="seconds")


def check_class_max_streams(cls: type) -> int | None:
    """A response class's ``max_streams``, checked: ``None`` or an int >= 0."""
    value = getattr(cls, "max_streams", None)
    if value is None:
        return None
    return check_count(f"{cls.__name__}.max_streams", value, minimum=0)


def admission_class_for(cls: type) -> tuple[type, int | None]:
    """The class a stream of ``cls`` is counted for, the nearest in its MRO that
    sets ``max_streams``, and that limit, checked again (it may be reassigned)."""
    for owner in cls.__mro__:
        if "max_streams" in owner.__dict__:
            break
    else:
        owner = cls
    value = owner.__dict__.get("max_streams")
    if value is None:  # the common case, checked for nothing more
        return owner, None
    return owner, check_class_max_streams(cls)
