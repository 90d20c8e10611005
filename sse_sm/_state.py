"""The per-connection state machine: states, triggers and the one transition table.

Two rules hold in this module:

1. Every legal transition is one row of :data:`TRANSITIONS`.  Nothing else in
   the package changes a connection's state; the driver reports what happened
   (a :class:`Trigger`) and the table decides what state follows.  The one
   other rule is :data:`LATE_REPORTS`: the facts that may still be detected
   after the connection closed (they raced the close), which the machine
   drops in ``CLOSED``.  Any other pair that is not in the table is a bug and
   raises :class:`TransitionError`, leaving the state unchanged.
2. This module knows nothing about anyio, ASGI, Starlette or the event loop.
   Time comes in through an injected clock, so the same machine runs under a
   real clock, trio's ``MockClock`` and plain unit tests.

Theory of operation
-------------------
A connection is ``OPEN`` until the response headers are on the wire, then
``STREAMING`` while the source produces events, then optionally ``DRAINING``
after a shutdown request (the source is told to wind down and a grace deadline
runs), then ``CLOSED`` for good.  ``CLOSED`` has no outgoing rows, so it is
absorbing by construction rather than by an ``if``.

Who fires each trigger (the driver lives in ``_connection.py``):

* the connection's own task fires ``STARTED``, ``HEAD_ANSWERED``,
  ``REJECTED`` (admission control refused it a slot), ``EVENT_SENT``,
  ``SOURCE_EXHAUSTED``, ``GRACE_EXPIRED``, ``FELL_BEHIND``, ``FAILED`` and
  ``CANCELLED``, and ``DISCONNECTED`` when ``send`` raises ``OSError``;
* the watcher task fires ``PING_SENT``, ``DISCONNECTED`` (on
  ``http.disconnect``, or ``OSError`` from a ping's send), ``SEND_TIMED_OUT``,
  ``LIFETIME_EXPIRED`` (the stream's ``max_lifetime`` ran out) and ``FAILED``
  (``receive`` or the ping factory raised);
* the data-sender task, when there is one, fires ``FAILED`` if it raises;
* the drain coordinator fires ``SHUTDOWN_REQUESTED`` on the event loop.

Self-loops (``EVENT_SENT``, ``PING_SENT``) are rows like any other, but firing
one only increments a counter: the history records changes of state, so it is
bounded (at most three entries) however long the stream runs.

Why one module of this length: the states, triggers, close reasons, the
table and the machine that walks it are one contract, read together; most
of the lines are the enums' one-line comments and the table's rows, and
splitting them would put a trigger's meaning in one file and its rows in
another.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, final

from ._exceptions import TransitionError

__all__ = (
    "CLEAN_END_REASONS",
    "LATE_REPORTS",
    "STATE_ORDER",
    "TRANSITIONS",
    "Arc",
    "CloseReason",
    "State",
    "StateMachine",
    "Transition",
    "TransitionError",
    "Trigger",
)


class State(enum.Enum):
    """Where a connection is in its life."""

    #: The request arrived; no byte of the response has been sent.
    OPEN = "open"
    #: Headers are sent; events and pings flow.
    STREAMING = "streaming"
    #: Shutdown was requested: the source may say goodbye before the grace deadline.
    DRAINING = "draining"
    #: Finished for good; nothing more is sent.  Absorbing.
    CLOSED = "closed"

    # Members are singletons, so identity hashing is correct and keeps the
    # per-event lookup cheap (Enum.__hash__ hashes the name in Python code).
    __hash__ = object.__hash__


class Trigger(enum.Enum):
    """A fact that happened to a connection, named in the past tense."""

    #: ``http.response.start`` was sent.
    STARTED = "started"
    #: A HEAD request was answered with headers and an empty body.
    HEAD_ANSWERED = "head_answered"
    #: Admission control found the coordinator (or the response class) at its
    #: ``max_streams``: a 503 with a ``Retry-After`` was sent instead.
    REJECTED = "rejected"
    #: One event from the source was sent.
    EVENT_SENT = "event_sent"
    #: A keep-alive ping was sent after ``ping`` seconds without traffic.
    PING_SENT = "ping_sent"
    #: The source ended by itself.
    SOURCE_EXHAUSTED = "source_exhausted"
    #: The client went away (``http.disconnect``, or ``OSError`` from ``send``).
    DISCONNECTED = "disconnected"
    #: A send did not complete within ``send_timeout``.
    SEND_TIMED_OUT = "send_timed_out"
    #: The application or server asked the stream to drain.
    SHUTDOWN_REQUESTED = "shutdown_requested"
    #: The stream's lifetime (drawn from ``max_lifetime``) ran out while it
    #: was streaming: it drains as for a shutdown, so that its client
    #: reconnects, wherever the load balancer sends it.
    LIFETIME_EXPIRED = "lifetime_expired"
    #: The drain's grace period ran out before the source ended.
    GRACE_EXPIRED = "grace_expired"
    #: The source, the encoder, a callback or the server raised.
    FAILED = "failed"
    #: The task running the connection was cancelled from outside.
    CANCELLED = "cancelled"
    #: The source gave up on a subscriber that fell too far behind its
    #: publisher (it raised :class:`~sse_sm.SlowConsumerError`).
    FELL_BEHIND = "fell_behind"

    __hash__ = object.__hash__


class CloseReason(enum.Enum):
    """Why a connection reached ``CLOSED``; set by the arc that entered it."""

    #: The source ended on its own while streaming.
    COMPLETED = "completed"
    #: The source ended on its own during a drain, within the grace.
    DRAINED = "drained"
    #: The drain's grace ran out and the source was cancelled.
    SHUTDOWN_FORCED = "shutdown_forced"
    #: The client disconnected.
    CLIENT_DISCONNECTED = "client_disconnected"
    #: A send to a slow or stalled client exceeded ``send_timeout``.
    SEND_TIMEOUT = "send_timeout"
    #: Something raised; the exception propagates to the server.
    ERROR = "error"
    #: The connection's task was cancelled from outside.
    CANCELLED = "cancelled"
    #: A HEAD request: headers only, the source never started.
    HEAD = "head"
    #: Refused by admission control: answered ``503`` with a ``Retry-After``;
    #: the source never started.  Not a clean end (no stream was begun, the
    #: 503 is a whole response of its own) and not an error either.
    REJECTED = "rejected"
    #: The subscriber fell too far behind its publisher and was let go.
    SLOW_CONSUMER = "slow_consumer"

    __hash__ = object.__hash__


#: Close reasons after which the peer is still listening, so the response ends
#: with the final empty body (a clean end of stream the client can see).
#: ``head`` and ``rejected`` are not among them: no stream was begun, their
#: answer (headers and an empty body, or a 503) is a whole response already.
CLEAN_END_REASONS: Final[frozenset[CloseReason]] = frozenset(
    {
        CloseReason.COMPLETED,
        CloseReason.DRAINED,
        CloseReason.SHUTDOWN_FORCED,
        CloseReason.CANCELLED,
        # The client is still there, only slow: a clean end makes EventSource
        # reconnect, and resume from its Last-Event-ID.
        CloseReason.SLOW_CONSUMER,
    }
)


@final
@dataclass(frozen=True, slots=True)
class Arc:
    """One row of the transition table."""

    source: State
    trigger: Trigger
    target: State
    #: Set exactly on arcs that enter ``CLOSED``.
    close_reason: CloseReason | None = None

    @property
    def is_self_loop(self) -> bool:
        return self.source is self.target


_S = State
_T = Trigger
_R = CloseReason

#: The transition table, as plain data.  Code, logs, statistics, tests and the
#: diagram in docs/design.md are all derived from these rows.
TRANSITIONS: Final[tuple[Arc, ...]] = (
    Arc(_S.OPEN, _T.STARTED, _S.STREAMING),
    Arc(_S.OPEN, _T.HEAD_ANSWERED, _S.CLOSED, _R.HEAD),
    Arc(_S.OPEN, _T.REJECTED, _S.CLOSED, _R.REJECTED),
    Arc(_S.OPEN, _T.DISCONNECTED, _S.CLOSED, _R.CLIENT_DISCONNECTED),
    Arc(_S.OPEN, _T.SEND_TIMED_OUT, _S.CLOSED, _R.SEND_TIMEOUT),
    Arc(_S.OPEN, _T.FAILED, _S.CLOSED, _R.ERROR),
    Arc(_S.OPEN, _T.CANCELLED, _S.CLOSED, _R.CANCELLED),
    Arc(_S.STREAMING, _T.EVENT_SENT, _S.STREAMING),
    Arc(_S.STREAMING, _T.PING_SENT, _S.STREAMING),
    Arc(_S.STREAMING, _T.SHUTDOWN_REQUESTED, _S.DRAINING),
    # A rotation is a drain: same state, same grace, same farewell, same
    # close reasons (``drained``, ``shutdown_forced``).  What began the drain
    # is this arc's trigger, kept in the history.  No row from DRAINING: the
    # lifetime is only armed while STREAMING (a drain already has its grace).
    Arc(_S.STREAMING, _T.LIFETIME_EXPIRED, _S.DRAINING),
    Arc(_S.STREAMING, _T.SOURCE_EXHAUSTED, _S.CLOSED, _R.COMPLETED),
    Arc(_S.STREAMING, _T.DISCONNECTED, _S.CLOSED, _R.CLIENT_DISCONNECTED),
    Arc(_S.STREAMING, _T.SEND_TIMED_OUT, _S.CLOSED, _R.SEND_TIMEOUT),
    Arc(_S.STREAMING, _T.FAILED, _S.CLOSED, _R.ERROR),
    Arc(_S.STREAMING, _T.CANCELLED, _S.CLOSED, _R.CANCELLED),
    Arc(_S.STREAMING, _T.FELL_BEHIND, _S.CLOSED, _R.SLOW_CONSUMER),
    Arc(_S.DRAINING, _T.EVENT_SENT, _S.DRAINING),
    Arc(_S.DRAINING, _T.PING_SENT, _S.DRAINING),
    Arc(_S.DRAINING, _T.SHUTDOWN_REQUESTED, _S.DRAINING),
    Arc(_S.DRAINING, _T.SOURCE_EXHAUSTED, _S.CLOSED, _R.DRAINED),
    Arc(_S.DRAINING, _T.GRACE_EXPIRED, _S.CLOSED, _R.SHUTDOWN_FORCED),
    Arc(_S.DRAINING, _T.DISCONNECTED, _S.CLOSED, _R.CLIENT_DISCONNECTED),
    Arc(_S.DRAINING, _T.SEND_TIMED_OUT, _S.CLOSED, _R.SEND_TIMEOUT),
    Arc(_S.DRAINING, _T.FAILED, _S.CLOSED, _R.ERROR),
    Arc(_S.DRAINING, _T.CANCELLED, _S.CLOSED, _R.CANCELLED),
    Arc(_S.DRAINING, _T.FELL_BEHIND, _S.CLOSED, _R.SLOW_CONSUMER),
)

#: The initial state of every machine.
INITIAL_STATE: Final = State.OPEN

#: How far along its life a state is: a connection only ever moves forward.
STATE_ORDER: Final[Mapping[State, int]] = MappingProxyType(
    {State.OPEN: 0, State.STREAMING: 1, State.DRAINING: 2, State.CLOSED: 3}
)

#: Reports that may reach a ``CLOSED`` machine, and are dropped there.
#:
#: Each is a fact detected by another task than the one that closed the
#: connection, or at a moment that raced the close: the client's disconnect
#: arriving after the source ended; a send found overdue, a ping completing,
#: or an exception raised, while the other task was closing; a drain request
#: already scheduled on the loop when the stream closed; a subscription that
#: gave up on its subscriber in the instant the client left.  The close that won
#: stands: its reason is the connection's.  Any trigger not listed here, fired
#: in ``CLOSED``, is a bug (:class:`TransitionError`).
#:
#: ``LIFETIME_EXPIRED`` is not here, because it cannot race a close: the
#: watcher detects it and fires it in one step, with no await between, after
#: checking that the connection is still ``STREAMING`` (the lifetime is
#: disarmed by the drain that leaves ``STREAMING``).
LATE_REPORTS: Final[frozenset[Trigger]] = frozenset(
    {
        Trigger.DISCONNECTED,
        Trigger.SEND_TIMED_OUT,
        Trigger.FAILED,
        Trigger.PING_SENT,
        Trigger.SHUTDOWN_REQUESTED,
        Trigger.FELL_BEHIND,
    }
)


def _index(rows: Iterable[Arc]) -> Mapping[State, Mapping[Trigger, Arc]]:
    """Group the rows by source state, refusing duplicates and malformed rows."""
    by_state: dict[State, dict[Trigger, Arc]] = {state: {} for state in State}
    for arc in rows:
        if arc.trigger in by_state[arc.source]:
            raise ValueError(f"duplicate row for {arc.source.name} + {arc.trigger.name}")
        if (arc.target is State.CLOSED) != (arc.close_reason is not None):
            raise ValueError(f"{arc}: a close reason goes on exactly the arcs into CLOSED")
        by_state[arc.source][arc.trigger] = arc
    return MappingProxyType({s: MappingProxyType(t) for s, t in by_state.items()})


_ARCS_FROM: Final = _index(TRANSITIONS)


@final
@dataclass(frozen=True, slots=True)
class Transition:
    """One recorded change of state."""

    source: State
    trigger: Trigger
    target: State
    #: Human-readable detail: what was detected, or the exception's repr.
    reason: str
    #: The machine's clock when it happened (monotonic seconds).
    at: float


TransitionListener = Callable[[Transition], None]

#: What the history keeps of one transition: the fields of a :class:`Transition`,
#: in order.  A plain tuple costs a tenth of building the frozen dataclass, and
#: the dataclass is built only for a listener or a reader of ``history``.
_Record = tuple[State, Trigger, State, str, float]


@final
class StateMachine:
    """A connection's state, driven by :meth:`fire` through :data:`TRANSITIONS`.

    >>> m = StateMachine(clock=lambda: 0.0)
    >>> m.fire(Trigger.STARTED).target
    <State.STREAMING: 'streaming'>
    >>> m.fire(Trigger.DISCONNECTED, "http.disconnect").close_reason
    <CloseReason.CLIENT_DISCONNECTED: 'client_disconnected'>

    Args:
        clock: monotonic seconds; the driver passes the event loop's clock.
    """

    __slots__ = (
        "_arcs",
        "_clock",
        "_close_reason",
        "_history",
        "_listeners",
        "_loop_counts",
        "_opened_at",
        "_state",
    )

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._state = INITIAL_STATE
        self._arcs = _ARCS_FROM[INITIAL_STATE]
        self._history: list[_Record] = []
        self._close_reason: CloseReason | None = None
        self._loop_counts: dict[Trigger, int] = {}
        self._listeners: list[TransitionListener] = []
        self._opened_at = clock()

    @property
    def state(self) -> State:
        return self._state

    @property
    def history(self) -> tuple[Transition, ...]:
        """Every change of state so far, oldest first (self-loops are counted instead)."""
        return tuple(Transition(*record) for record in self._history)

    @property
    def close_reason(self) -> CloseReason | None:
        """Why the machine closed; ``None`` until it is ``CLOSED``."""
        return self._close_reason

    @property
    def opened_at(self) -> float:
        return self._opened_at

    def count(self, trigger: Trigger) -> int:
        """How many times a self-loop trigger has fired."""
        return self._loop_counts.get(trigger, 0)

    def allows(self, trigger: Trigger) -> bool:
        """Whether ``trigger`` has a row from the current state."""
        return trigger in self._arcs

    # The two methods below are the driver's (``_connection.py``, the one
    # caller), not part of the public surface: a hand-driven machine needs
    # neither.

    def _use_clock(self, clock: Callable[[], float]) -> None:
        """Switch to the event loop's clock before the first transition.

        The response builds its machine before any loop runs; the driver
        hands over the loop's clock when the connection starts, so history
        times and deadlines share one time base (trio's MockClock included).
        """
        if self._history:
            raise RuntimeError("the clock can only change before the first transition")
        self._clock = clock
        self._opened_at = clock()

    def _tally(self, trigger: Trigger, count: int) -> None:
        """Record ``count`` firings of a self-loop at once.

        For a driver that counts a per-event self-loop itself and reports the
        total before its next :meth:`fire`, so each one is still checked
        against the table in the state where it happened.

        Raises:
            TransitionError: ``trigger`` is not a self-loop from this state.
        """
        arc = self._arcs.get(trigger)
        if arc is None or arc.target is not self._state:
            raise TransitionError(self._state, trigger)
        self._loop_counts[trigger] = self._loop_counts.get(trigger, 0) + count

    def add_listener(self, listener: TransitionListener) -> None:
        """Call ``listener`` synchronously after every change of state."""
        self._listeners.append(listener)

    def remove_listener(self, listener: TransitionListener) -> None:
        """Stop calling ``listener``; a listener not added is ignored."""
        try:
            self._listeners.remove(listener)
        except ValueError:
            pass

    def fire(self, trigger: Trigger, reason: str = "") -> Arc | None:
        """Take the arc for ``trigger`` from the current state and return it.

        Returns ``None``, and changes nothing, for a report in
        :data:`LATE_REPORTS` that reaches a ``CLOSED`` machine.

        Raises:
            TransitionError: no row exists and the report is not a late one;
                the state is unchanged.
        """
        arc = self._arcs.get(trigger)
        if arc is None:
            if self._state is State.CLOSED and trigger in LATE_REPORTS:
                return None
            raise TransitionError(self._state, trigger)
        if arc.target is self._state:
            self._loop_counts[trigger] = self._loop_counts.get(trigger, 0) + 1
            return arc
        record = (arc.source, trigger, arc.target, reason, self._clock())
        self._state = arc.target
        self._arcs = _ARCS_FROM[arc.target]
        self._close_reason = arc.close_reason
        self._history.append(record)
        if self._listeners:
            transition = Transition(*record)
            for listener in self._listeners:
                listener(transition)
        return arc

    def time_in_states(self, now: float | None = None) -> Mapping[State, float]:
        """Seconds spent in each state, the current one counted up to ``now``."""
        if now is None:
            now = self._clock()
        spent = dict.fromkeys(State, 0.0)
        entered_at = self._opened_at
        for source, _, _, _, at in self._history:
            spent[source] += at - entered_at
            entered_at = at
        if self._state is not State.CLOSED:
            spent[self._state] += now - entered_at
        return MappingProxyType(spent)
