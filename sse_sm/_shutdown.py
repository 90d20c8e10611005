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
* A coordinator also keeps the books of its streams, for its statistics
  and its admission control (``_admission.py``): each connection reports
  itself when it starts and at each change of state, never per event.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any, Final, final

from anyio.lowlevel import EventLoopToken, current_token

from ._admission import DEFAULT_RETRY_AFTER, CoordinatorStatistics, StreamBooks

__all__ = (
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

_creation_lock = threading.Lock()
#: Every coordinator alive in the process, for the legacy ``AppStatus`` shim.
_every_coordinator: weakref.WeakSet[DrainCoordinator] = weakref.WeakSet()


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

    It also keeps the books of its streams (:meth:`statistics`) and admits
    them: with ``max_streams`` set, a request that finds that many streams
    alive (``OPEN``, ``STREAMING`` or ``DRAINING``) is answered ``503
    Service Unavailable`` with a ``Retry-After`` drawn from ``retry_after``,
    and its source never starts (the ``REJECTED`` arc).  A response class may
    add a limit of its own (:attr:`EventSourceResponse.max_streams
    <sse_sm.EventSourceResponse.max_streams>`), counted per class on each
    coordinator.

    Args:
        automatic: whether a server's own shutdown drains these streams.
        max_streams: how many streams may be alive at once; ``None`` (the
            default) for no limit, ``0`` to refuse every request.  Settable
            at run time: raising it admits more at once, lowering it never
            ends a stream already admitted (new ones wait until the count is
            below the new limit).
        retry_after: the ``Retry-After`` of a refused request, in whole
            seconds: an int, or an inclusive ``(low, high)`` range drawn from
            uniformly per refusal so that refused clients come back spread
            out.  Default ``(1, 5)``.  Settable at run time.

    Raises:
        TypeError, ValueError: an argument is out of range; the message names it.
    """

    __slots__ = (
        "__weakref__",
        "_books",
        "_lock",
        "_loop_reasons",
        "_reason",
        "_registrations",
        "automatic",
    )

    def __init__(
        self,
        *,
        automatic: bool = True,
        max_streams: int | None = None,
        retry_after: int | tuple[int, int] = DEFAULT_RETRY_AFTER,
    ) -> None:
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
        #: The books of its streams, with their own lock; each connection
        #: reports to them directly (``Connection._books``).
        self._books = StreamBooks(max_streams, retry_after)
        _every_coordinator.add(self)

    @property
    def draining(self) -> bool:
        """Whether a drain was requested (and not :meth:`reset` since)."""
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        return self._reason

    @property
    def max_streams(self) -> int | None:
        """How many streams may be alive at once (``None``: no limit); settable.

        Lowering it never ends an admitted stream: requests are refused until
        the count is below the new limit.  Thread-safe.
        """
        return self._books.max_streams

    @max_streams.setter
    def max_streams(self, value: int | None) -> None:
        self._books.max_streams = value

    @property
    def retry_after(self) -> tuple[int, int]:
        """The inclusive range of ``Retry-After`` seconds sent with a 503; settable
        to an int or a ``(low, high)`` tuple."""
        return self._books.retry_after

    @retry_after.setter
    def retry_after(self, value: int | tuple[int, int]) -> None:
        self._books.retry_after = value

    @property
    def open_streams(self) -> int:
        """How many streams are registered right now."""
        return len(self._registrations)

    def statistics(self) -> CoordinatorStatistics:
        """The coordinator's books: live streams per state, closes per reason, traffic.

        ``events_sent``, ``pings_sent`` and ``bytes_sent`` add up the streams
        that closed (their counts as of the close) and the streams still
        alive (read now: O(live streams) per call, nothing per event).

        A stream is counted from the moment its connection starts (or is
        refused), whatever its response class; ``rejections`` counts the
        503s that were sent.

        Thread safety: callable from any thread.  The per-state and per-reason
        counts are one consistent snapshot, taken under the books' lock
        (``_admission.py``).  The traffic of live streams is read without
        stopping them: on their own event loop it is exact; from another
        thread a stream's figures may lag by the events it is sending at that
        instant.
        """
        return self._books.statistics()

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
