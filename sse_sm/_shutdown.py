"""App-scoped drain requests: how a server shutdown reaches every open stream.

Invariants:

* There is no process-global shutdown flag.  A :class:`DrainCoordinator`
  belongs to one application (it is stored on the Starlette app's ``state``)
  or is passed explicitly, so two apps or two servers in one process never
  drain each other, and a test that drains one app leaves the next test alone.
* :meth:`DrainCoordinator.request_drain` is synchronous, never blocks and may
  be called from any thread, including a signal handler running on the loop's
  own thread: it flips a flag under a re-entrant lock and schedules one
  callback per registered stream through its loop's thread-safe entry point
  (``call_soon_threadsafe`` on asyncio, ``TrioToken.run_sync_soon`` on trio).
  Connections react on their loop, never inside the caller.
* A stream that registers while a drain is being requested is not missed:
  :meth:`DrainCoordinator.register` looks at the flag again after adding
  itself.  A stream may therefore be asked twice; the second request is the
  ``DRAINING`` self-loop.
* Nothing polls and nothing runs per connection: a connection registers a
  plain callback while it streams and unregisters it when it closes.
* A drain is app-wide (:meth:`DrainCoordinator.request_drain`, until
  :meth:`~DrainCoordinator.reset`) or loop-scoped
  (:meth:`DrainCoordinator.request_drain_on_loop`): a server's shutdown
  signal drains the streams on the loop that server runs, and later streams
  on that loop, but never a later server's streams on a new loop.  That is
  what keeps one stopped server from draining the next one in the process.
* A coordinator also keeps the books of its streams
  (:meth:`DrainCoordinator.statistics`): each connection reports itself when
  it starts (``OPEN``) and at each change of state, never per event, so the
  figures cost a lock round per transition (three or four per stream) and
  nothing on the per-event path.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Protocol, final

from anyio.lowlevel import EventLoopToken, current_token

from ._state import Arc, CloseReason, State

__all__ = (
    "CoordinatorStatistics",
    "DrainCoordinator",
    "call_soon_on_loop",
    "call_soon_on_native",
    "default_drain_coordinator",
    "drain_coordinator_for",
)

logger = logging.getLogger("sse_sm.shutdown")

DrainCallback = Callable[[str], None]

#: Attribute of ``app.state`` under which an app's coordinator is kept.
STATE_ATTRIBUTE: Final = "sse_sm_drain_coordinator"

#: The states a stream is counted in while it lives (CLOSED ones are counted by reason).
LIVE_STATES: Final = (State.OPEN, State.STREAMING, State.DRAINING)

_creation_lock = threading.Lock()
#: Every coordinator alive in the process, for the legacy ``AppStatus`` shim.
_every_coordinator: weakref.WeakSet[DrainCoordinator] = weakref.WeakSet()


class TrackedStream(Protocol):
    """What a coordinator reads of a stream it keeps the books of (a ``Connection``)."""

    def sent_counts(self) -> tuple[int, int, int]:
        """Events, pings and body bytes sent so far."""
        ...


@final
@dataclass(frozen=True, slots=True)
class CoordinatorStatistics:
    """A snapshot of one coordinator's streams (trio's ``statistics()`` style).

    Counts every stream that ran (or answered a HEAD) with this coordinator,
    from the moment its connection started, whatever its response class.
    """

    #: Streams alive right now, per state: exactly the keys ``OPEN``,
    #: ``STREAMING`` and ``DRAINING``.
    streams: Mapping[State, int]
    #: Streams closed since the coordinator was created, per reason; every
    #: :class:`CloseReason` is a key (0 when none closed so).
    closes: Mapping[CloseReason, int]
    #: Requests refused by admission control (``closes[CloseReason.REJECTED]``
    #: once that reason exists; 0 until then).
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
class DrainCoordinator:
    """Asks every stream it knows to drain: enter DRAINING, say goodbye, close.

    >>> coordinator = DrainCoordinator()
    >>> coordinator.draining
    False
    >>> coordinator.request_drain("deploy")  # from any thread; returns at once
    >>> coordinator.draining
    True

    A stream that starts after the request drains at once.  A coordinator can
    be :meth:`reset` to accept long-lived streams again (a test, or a server
    that was asked to drain and then kept running).
    """

    __slots__ = (
        "__weakref__",
        "_closed_totals",
        "_closes",
        "_live",
        "_lock",
        "_loop_reasons",
        "_reason",
        "_registrations",
        "_streams",
        "automatic",
    )

    def __init__(self, *, automatic: bool = True) -> None:
        # Re-entrant: a signal handler may interrupt register() on the same thread.
        self._lock = threading.RLock()
        #: Each streaming connection's drain callback (its bound ``_drain``,
        #: which compares equal to a new binding of the same method) and the
        #: native object of the loop it runs on: about 100 bytes a stream.
        self._registrations: dict[DrainCallback, object] = {}
        self._reason: str | None = None
        #: Loop-scoped drains: native loop token (asyncio loop, TrioToken) to
        #: reason.  Weak, so a finished loop's entry goes with it.
        self._loop_reasons: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()
        #: Whether a server's own shutdown (SIGINT/SIGTERM, a hypercorn
        #: worker's shutdown) drains this coordinator's streams.  Set it to
        #: False to let in-flight streams run on while the server stops; then
        #: only :meth:`request_drain` (or the server's own timeout) ends them.
        self.automatic = automatic
        # The books (see statistics()), all guarded by _lock.  Each live
        # stream and its current state; the count per live state; closes per
        # reason; what the closed streams sent (events, pings, bytes).
        self._live: dict[TrackedStream, State] = {}
        self._streams: dict[State, int] = dict.fromkeys(LIVE_STATES, 0)
        self._closes: dict[CloseReason, int] = dict.fromkeys(CloseReason, 0)
        self._closed_totals = [0, 0, 0]
        _every_coordinator.add(self)

    @property
    def draining(self) -> bool:
        """Whether a drain was requested (and not :meth:`reset` since)."""
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        return self._reason

    @property
    def open_streams(self) -> int:
        """How many streams are registered right now."""
        return len(self._registrations)

    def statistics(self) -> CoordinatorStatistics:
        """The coordinator's books: live streams per state, closes per reason, traffic.

        ``events_sent``, ``pings_sent`` and ``bytes_sent`` add up the streams
        that closed (their counts as of the close) and the streams still
        alive (read now: O(live streams) per call, nothing per event).

        Thread safety: callable from any thread.  The per-state and per-reason
        counts are one consistent snapshot, taken under the coordinator's
        lock.  The traffic of live streams is read without stopping them: on
        their own event loop it is exact; from another thread a stream's
        figures may lag by the events it is sending at that instant.
        """
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
            rejections=0,  # no admission control yet
            events_sent=events,
            pings_sent=pings,
            bytes_sent=sent,
        )

    # The three methods below are the driver's (``_connection.py``): a
    # connection reports itself when it starts, at each change of state, and
    # once more when it is done, whatever happened in between.

    def _stream_opened(self, stream: TrackedStream) -> None:
        """Count ``stream`` as ``OPEN`` until it reports that it closed."""
        with self._lock:
            self._live[stream] = State.OPEN
            self._streams[State.OPEN] += 1

    def _stream_moved(self, stream: TrackedStream, arc: Arc) -> None:
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
                del self._live[stream]
                self._add_sent(stream)
            if arc.close_reason is not None:
                self._closes[arc.close_reason] += 1

    def _stream_done(self, stream: TrackedStream) -> None:
        """The connection's last word, on every path: a stream still counted
        as alive (a path that never reached ``CLOSED``, a bug) stops counting.
        Idempotent."""
        with self._lock:
            previous = self._live.pop(stream, None)
            if previous is None:
                return
            self._streams[previous] -= 1
            self._add_sent(stream)
        logger.error("a stream ended in state %s without closing; counted out", previous.name)

    def _add_sent(self, stream: TrackedStream) -> None:
        totals = self._closed_totals
        for index, count in enumerate(stream.sent_counts()):
            totals[index] += count

    def request_drain(self, reason: str = "shutdown requested") -> None:
        """Ask every registered stream, and every later one, to drain.

        Synchronous, non-blocking, idempotent, and safe from any thread or a
        signal handler.  The streams react on their own event loops, at their
        next scheduling point.
        """
        with self._lock:
            if self._reason is not None:
                return
            self._reason = reason
            registrations = list(self._registrations.items())
        logger.debug("drain requested (%s): %d open stream(s)", reason, len(registrations))
        for callback, native in registrations:
            _call_soon_on_native(native, callback, reason)

    def request_drain_on_loop(self, native_token: object, reason: str) -> None:
        """Drain the streams that run on one event loop, and later ones on it.

        ``native_token`` is the loop's own object (an asyncio event loop, or a
        ``trio.lowlevel.TrioToken``).  Used by the automatic shutdown
        detection: a signal stops the server running on one loop, so only that
        loop's streams drain.  Same guarantees as :meth:`request_drain`.
        """
        with self._lock:
            if self._reason is not None or native_token in self._loop_reasons:
                return
            self._loop_reasons[native_token] = reason
            callbacks = [
                callback
                for callback, native in self._registrations.items()
                if native is native_token
            ]
        logger.debug("drain requested on one loop (%s): %d open stream(s)", reason, len(callbacks))
        for callback in callbacks:
            _call_soon_on_native(native_token, callback, reason)

    def request_drain_on_running_loops(self, reason: str) -> None:
        """Drain every open stream, each on its own loop, and later ones on those loops.

        The legacy ``AppStatus.should_exit = True``: unlike :meth:`request_drain`
        it leaves no app-wide flag behind, so a stream on a new event loop (the
        next test's) starts normally.
        """
        with self._lock:
            loops = {id(native): native for native in self._registrations.values()}
        for native in loops.values():
            self.request_drain_on_loop(native, reason)

    def reset(self) -> None:
        """Forget earlier drain requests; streams that already drain go on draining."""
        with self._lock:
            self._reason = None
            self._loop_reasons.clear()

    def register(self, callback: DrainCallback) -> None:
        """Register a streaming connection's drain callback, until :meth:`unregister`.

        Must be called on the event loop the connection runs on.  If a drain was
        already requested, ``callback`` is called before this returns.  The
        callback is the key: registering it again replaces the entry.
        """
        native = current_token().native_token
        with self._lock:
            self._registrations[callback] = native
        # Read after adding: a request that snapshotted the streams just
        # before this one was added is seen here instead.
        reason = self._reason
        if reason is None and self._loop_reasons:
            reason = self._loop_reasons.get(native)
        if reason is not None:
            callback(reason)

    def unregister(self, callback: DrainCallback) -> None:
        """Forget ``callback`` (an equal one: a bound method bound anew is fine); idempotent."""
        with self._lock:
            self._registrations.pop(callback, None)


def call_soon_on_loop(token: EventLoopToken, callback: Callable[..., None], *args: Any) -> None:
    """Schedule ``callback(*args)`` on the loop behind ``token``, from any thread.

    Also safe from a signal handler on the loop's own thread.  A loop that has
    already closed is skipped: its connections are gone with it.
    """
    call_soon_on_native(token.native_token, callback, *args)


def call_soon_on_native(native: Any, callback: Callable[..., None], *args: Any) -> None:
    """:func:`call_soon_on_loop` given the loop's own object (asyncio loop or TrioToken)."""
    run_sync_soon = getattr(native, "run_sync_soon", None)  # trio.lowlevel.TrioToken
    try:
        if run_sync_soon is not None:
            run_sync_soon(callback, *args)
        else:  # an asyncio event loop
            native.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        logger.debug("a call for a loop that is no longer running", exc_info=True)


def _call_soon_on_native(native: object, callback: DrainCallback, reason: str) -> None:
    call_soon_on_native(native, _guarded, callback, reason)


def _guarded(callback: DrainCallback, reason: str) -> None:
    """Run a connection's drain callback on its loop; a failure must not kill the loop."""
    try:
        callback(reason)
    except Exception:
        logger.exception("drain callback failed")


def drain_coordinator_for(app: object) -> DrainCoordinator:
    """The coordinator that belongs to ``app`` (created on first use).

    It is stored on ``app.state`` (Starlette and FastAPI applications have one),
    so it lives and dies with the app.  Raises ``TypeError`` for an object with
    no ``state`` attribute: pass a coordinator explicitly instead.
    """
    state = getattr(app, "state", None)
    if state is None:
        raise TypeError(
            f"{type(app).__name__} has no .state to keep a DrainCoordinator on; "
            "create a DrainCoordinator and pass it as drain_coordinator="
        )
    coordinator = getattr(state, STATE_ATTRIBUTE, None)
    if coordinator is None:
        with _creation_lock:
            coordinator = getattr(state, STATE_ATTRIBUTE, None)
            if coordinator is None:
                coordinator = DrainCoordinator()
                setattr(state, STATE_ATTRIBUTE, coordinator)
    if not isinstance(coordinator, DrainCoordinator):
        raise TypeError(f"app.state.{STATE_ATTRIBUTE} is a {type(coordinator).__name__}")
    return coordinator


_default_coordinator: DrainCoordinator | None = None


def default_drain_coordinator() -> DrainCoordinator:
    """The process's coordinator for streams that have no app of their own.

    A response finds its coordinator in this order: the ``drain_coordinator=``
    it was given; the one of the app in its ASGI scope (``scope["app"]``, when
    that app has a ``.state``, as Starlette and FastAPI apps do); else this
    one.  So a response awaited as raw ASGI, under a bare
    ``starlette.routing.Router`` or from another framework is drained like
    any other: by a server's SIGINT/SIGTERM (it is ``automatic``), by
    ``AppStatus.should_exit = True`` and by :meth:`DrainCoordinator.request_drain`
    on it.  Created on first use; the same object for the life of the process.
    """
    global _default_coordinator
    coordinator = _default_coordinator
    if coordinator is None:
        with _creation_lock:
            coordinator = _default_coordinator
            if coordinator is None:
                coordinator = _default_coordinator = DrainCoordinator()
    return coordinator


def every_coordinator() -> list[DrainCoordinator]:
    """The coordinators alive in this process (legacy ``AppStatus`` shim only)."""
    return list(_every_coordinator)
