"""The anyio driver: runs one connection, reporting what happens to its state machine.

This is the only module that does I/O.  Its invariants:

* **Two tasks per connection.**  The connection's own task (the one the
  server runs the ASGI app in) iterates the source and sends each event.  One
  watcher task awaits ``receive()`` under a deadline: a message means a
  disconnect (or is ignored); the deadline means a ping is due or a send may be
  overdue.  Cancelling a pending ASGI ``receive()`` is safe on uvicorn and
  hypercorn, so one task serves all three purposes.  ``data_sender_callable``,
  when given, is a third.  No task outlives :meth:`Connection.run`.
* **Nothing per event but the send.**  No cancel scope is opened, no event is
  handed between tasks and no lock is taken to send an event.  The pump's
  sends and the watcher's pings exclude each other through two fields that
  are only read and written between awaits (``_sending`` and
  ``_ping_in_flight``), which is atomic on one event loop.
* **Triggers, not flags.**  Every detection becomes a :class:`Trigger` fired
  on the machine; the table decides the state, and the state decides what may
  be sent: nothing once ``CLOSED``, and the final empty body only after a
  close whose reason is in :data:`CLEAN_END_REASONS`.
* **One scope per phase.**  STREAMING and DRAINING run inside one task
  group, and its cancel scope is the only one they need: a drain puts its
  grace on its deadline, the watcher cancels it on a disconnect or a send
  timeout, the pump cancels it when the source is done.  What follows the
  phase (the farewell, the final body, the client-close handler) runs after
  the task group; cleanup (the final body, the source's ``aclose``) runs
  shielded with a bound.
* **Fairness.**  A source that never awaits cannot starve the loop: the pump
  checkpoints after at most ``FAIRNESS_SLICE`` seconds or ``FAIRNESS_EVENTS``
  events without one.
* **Admission first.**  Before anything is sent the connection asks its
  coordinator's books for a slot (``_admission.py``: one atomic step under
  their lock).
  Refused, it answers ``503`` with a ``Retry-After`` and closes on
  ``REJECTED``: the source never starts (it is closed), no task is started,
  ``background`` does not run.  Admitted, the slot is given back when the
  connection enters ``CLOSED`` (the coordinator sees every change of state),
  and :meth:`Connection._count_out` in a ``finally`` makes sure of it on
  any path.

Why one module of this length: the pump and the watcher keep their
invariants together (``_sending``, ``_last_send_at``, the phase scope, the
late reports), and every path from OPEN to CLOSED (headers, the phase, a
drain's end, an outside cancellation, the bounded sends) has to be read with
them; split over files, that protocol would be harder to check, not easier.
About a third of it is docstrings and comments.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Final, final

import anyio
import anyio.lowlevel
from starlette.types import Message, Receive, Send

from . import _hooks
from ._admission import StreamBooks
from ._clock import loop_clock
from ._deadlines import Due, due, next_wake
from ._events import Frames, ServerSentEvent, encode_item
from ._exceptions import SendTimeoutError, SlowConsumerError, TransitionError
from ._fairness import FAIRNESS_EVENTS, FAIRNESS_SLICE
from ._hooks import timed_send
from ._server_shutdown import follow_server_shutdown
from ._shutdown import DrainCoordinator
from ._sources import ClosableSource
from ._state import CLEAN_END_REASONS, Arc, CloseReason, State, StateMachine, Trigger

__all__ = ("Connection", "StreamSettings")

logger = logging.getLogger("sse_sm.connection")
#: Every change of state, at DEBUG (the package's logger, as users expect).
transition_logger = logging.getLogger("sse_sm")

#: Bound on the final empty body after an outside cancellation, in seconds.
CANCELLED_FINAL_SEND_BOUND: Final = 1.0
#: Bound on sending the farewell when no ``send_timeout`` is set, in seconds:
#: the grace is over and the server is waiting for this stream to end.
FAREWELL_SEND_BOUND: Final = 1.0

_DISCONNECT_TYPES: Final = frozenset({"http.disconnect", "websocket.disconnect"})
#: DISCONNECTED's reason per message type, one string for every connection.
_CLIENT_SENT: Final = {kind: f"client sent {kind}" for kind in _DISCONNECT_TYPES}
#: STARTED's reason for the usual status, one string for every connection.
_STATUS_200: Final = "status 200"
#: The status of a request refused by admission control.
REJECTED_STATUS: Final = 503


class _Sent(enum.Enum):
    """How a bounded send ended, when it did not raise (see ``_send_bounded``)."""

    SENT = "sent"
    OVERDUE = "overdue"


_SENT: Final = _Sent.SENT
_OVERDUE: Final = _Sent.OVERDUE


def _is_real_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is a cancellation of this task, not a lookalike raised by user code.

    Real: a cancel scope is cancelling this task (it stays inside a cancelled
    scope until the exception leaves it, so its effective deadline is
    ``-inf``), or, on asyncio, someone called ``cancel()`` on the task itself
    (a server stopping its requests: ``Task.cancelling()`` counts it).  Not
    real: a ``CancelledError`` that a source, ``receive``, ``send`` or data
    sender raised by itself because it awaited a future someone else
    cancelled.  That one is a failure like any other; let through, it would
    be swallowed by the task group and leave the connection open.  trio's
    ``Cancelled`` cannot be raised by user code, so it is always real.
    """
    cancelled = anyio.get_cancelled_exc_class()
    if not isinstance(exc, cancelled):
        return False
    if anyio.current_effective_deadline() == -math.inf:
        return True
    asyncio = sys.modules.get("asyncio")  # loaded, since this is its CancelledError
    if asyncio is None or cancelled is not getattr(asyncio, "CancelledError", None):
        return True  # trio
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return cancelling is None or cancelling() > 0


def _body(frame: bytes, *, more_body: bool) -> Message:
    """A fresh body message: middleware may change a message in place, so none is shared."""
    return {"type": "http.response.body", "body": frame, "more_body": more_body}


@final
@dataclass(frozen=True, slots=True)
class StreamSettings:
    """What one response asks of its connection; validated by the response."""

    sep: str
    ping_interval: float
    ping_factory: Callable[[], ServerSentEvent] | None
    send_timeout: float | None
    cleanup_timeout: float | None
    shutdown_event: anyio.Event | None
    shutdown_grace_period: float
    data_sender: Callable[[], Awaitable[None]] | None
    client_close_handler: Callable[[Message], Awaitable[None]] | None
    drain_coordinator: DrainCoordinator | None
    #: Builds the last event of a drained or cancelled stream.
    farewell_factory: Callable[[], object] | None = None
    #: ``retry:`` milliseconds sent with the farewell, drawn from this range.
    drain_retry: tuple[int, int] | None = None
    #: The response class this stream is counted for on its coordinator
    #: (the one that sets ``max_streams``), and that class's limit.
    admission_class: type | None = None
    class_max_streams: int | None = None
    #: Seconds this stream may stream before it drains (``LIFETIME_EXPIRED``),
    #: counted from ``STARTED``; ``None``: no limit.  Already drawn.
    lifetime: float | None = None


@final
class Connection:
    """Drives one streaming response from OPEN to CLOSED.

    Created and run once, by :class:`~sse_sm.EventSourceResponse`, inside the
    server's task for the request.
    """

    __slots__ = (
        "_books",
        "_client_left",
        "_client_stopped_reading",
        "_clock",
        "_disconnect",
        "_error",
        "_expires_at",
        "_farewell_done",
        "_last_send_at",
        "_machine",
        "_open",
        "_ping_in_flight",
        "_receive",
        "_scope",
        "_send",
        "_sending",
        "_settings",
        "_source",
        "_source_closing",
        "_start_message",
        "_waiting",
        "bytes_sent",
        "unflushed_events",
    )

    def __init__(
        self,
        *,
        machine: StateMachine,
        settings: StreamSettings,
        source: ClosableSource,
        start_message: Message,
        receive: Receive,
        send: Send,
    ) -> None:
        self._machine = machine
        #: ``machine.state is not CLOSED``, kept by :meth:`_fire` (every
        #: transition goes through it) so that the hot path reads a slot.
        self._open = machine.state is not State.CLOSED
        self._settings = settings
        #: The books of the coordinator drains come from: admission, and its
        #: statistics, told of this connection's start and each change of state.
        coordinator = settings.drain_coordinator
        self._books: StreamBooks | None = None if coordinator is None else coordinator._books
        self._source = source
        self._start_message = start_message
        self._receive = receive
        self._send = send
        #: Replaced by the running loop's clock when the connection runs, not
        #: read here: the call may be built outside any event loop
        #: (``asyncio.run(response(scope, receive, send))``).
        self._clock: Callable[[], float] = time.monotonic
        #: The streaming phase's task group scope, once that phase has begun.
        self._scope: anyio.CancelScope | None = None
        #: The disconnect message the watcher closed the connection on.
        self._disconnect: Message | None = None
        self._sending = False
        #: When the last send (event or ping) started: the ping's idle clock,
        #: and while ``_sending`` the start of the send the watcher times.
        self._last_send_at = 0.0
        #: EVENT_SENT self-loops counted by the pump, not yet told to the machine.
        self.unflushed_events = 0
        self._ping_in_flight: anyio.Event | None = None
        self._error: BaseException | None = None
        #: The farewell was sent or given up: it goes out at most once (a drain
        #: and a cancellation may both reach it).
        self._farewell_done = False
        #: A disconnect was received: nothing more is sent to this client.
        self._client_left = False
        #: The client stopped reading (a farewell overdue without a
        #: send_timeout): nothing more is sent, the final body would only block.
        self._client_stopped_reading = False
        #: Set once a close of the source has begun; others wait for it.
        self._source_closing: anyio.Event | None = None
        #: When the lifetime runs out, in the clock's time: armed at
        #: ``STARTED`` (``_follow_drains``), back to ``inf`` once draining,
        #: so that it is finite only while STREAMING.  Read by the watcher.
        self._expires_at = math.inf
        #: The watcher's current wait, so that arming the lifetime can bring
        #: its wake forward (the wait began in OPEN, before the lifetime).
        self._waiting: anyio.CancelScope | None = None
        self.bytes_sent = 0

    # ------------------------------------------------------------------ entry

    async def run(self, *, then: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stream until CLOSED, clean up, then raise what the close calls for.

        ``then`` (the response's ``background``) is awaited last, only if
        nothing is raised and the stream was admitted.  Refused by admission
        control, the connection answers 503 instead (see :meth:`_refuse`).

        Raises:
            TransitionError: the connection already ran; nothing was sent.
            SendTimeoutError: closed because a send exceeded ``send_timeout``.
            BaseException: whatever the source, a callback or the server
                raised, of any type but the backend's cancellation (closed
                with reason ``error``), re-raised after the cleanup.
            The backend's cancellation, when the task was cancelled (closed
                with reason ``cancelled``).
        """
        machine = self._machine
        if not machine.allows(Trigger.STARTED):  # run twice: refused before any send
            raise TransitionError(machine.state, Trigger.STARTED)
        self._clock = loop_clock()
        machine._use_clock(self._clock)
        refusal = self._admit()
        if refusal is not None:
            await self._refuse(refusal, head=False)
            return
        # No await since the slot was taken: nothing can cut in before the
        # finally that guarantees its release.
        try:
            try:
                await self._stream()
            except anyio.get_cancelled_exc_class():
                state = machine.state
                if state is State.STREAMING or state is State.DRAINING:
                    with anyio.CancelScope(shield=True):
                        await self._send_farewell(bound=CANCELLED_FINAL_SEND_BOUND)
                    state = machine.state
                if state is not State.CLOSED:
                    self._fire(Trigger.CANCELLED, "the connection's task was cancelled")
                    if state is not State.OPEN:  # no body may precede the headers
                        await self._send_final_body(bound=CANCELLED_FINAL_SEND_BOUND)
                raise
            except BaseException as exc:
                # The phase turns every exception into FAILED itself; one that
                # escapes it anyway (an ``on_transition`` listener raising a
                # BaseException) still leaves the connection CLOSED.
                if not self._open:
                    raise
                self._fail(exc)
        finally:
            self._count_out()
            await self._close_source()
        # The client-close handler last, with the source already closed: a
        # handler that hangs must not keep a hub subscriber joined.
        await self._call_close_handler()
        self._raise_for_close()
        if then is not None:
            await then()

    def _raise_for_close(self) -> None:
        """Raise what the close calls for: the recorded error, or SendTimeoutError."""
        if self._error is not None:
            raise self._error
        if self._machine.close_reason is CloseReason.SEND_TIMEOUT:
            raise SendTimeoutError(self._machine.history[-1].reason)

    async def answer_head(self, *, then: Callable[[], Awaitable[None]] | None = None) -> None:
        """Answer a HEAD request: headers and an empty body; the source never starts.

        ``then`` (the response's ``background``) is awaited last, only if
        nothing is raised.  A HEAD goes through admission control like a GET
        (it says what a GET would get now): refused, it is answered 503.

        Raises:
            TransitionError: the connection already ran; nothing was sent.
            SendTimeoutError: the answer was not sent within ``send_timeout``.
            BaseException: what ``send`` raised, other than ``OSError`` and
                the backend's cancellation (closed with reason ``error``).
        """
        machine = self._machine
        if not machine.allows(Trigger.HEAD_ANSWERED):
            raise TransitionError(machine.state, Trigger.HEAD_ANSWERED)
        self._clock = loop_clock()
        machine._use_clock(self._clock)
        refusal = self._admit()
        if refusal is not None:
            await self._refuse(refusal, head=True)
            return
        await self._answer(
            self._start_message, b"", Trigger.HEAD_ANSWERED, "HEAD: headers only", "HEAD response"
        )
        if then is not None:
            await then()

    async def _refuse(self, why: str, *, head: bool) -> None:
        """Answer a request admission control refused: 503, ``Retry-After``, a short body.

        The ``Retry-After`` seconds are drawn from the coordinator's
        ``retry_after`` range.  The response's own headers are not sent: they
        describe a stream, and this is none.  Closes on ``REJECTED`` once the
        answer is out (or on what its send ran into, as a HEAD's answer).
        """
        books = self._books
        assert books is not None  # only the books refuse
        seconds = books.draw_retry_after()
        body = f"Too many open streams; retry after {seconds} s.\n".encode()
        start: Message = {
            "type": "http.response.start",
            "status": REJECTED_STATUS,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(seconds).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
        reason = f"{why}; 503 with Retry-After: {seconds}"
        await self._answer(start, b"" if head else body, Trigger.REJECTED, reason, "503 response")

    async def _answer(
        self, start: Message, body: bytes, trigger: Trigger, reason: str, what: str
    ) -> None:
        """Send a whole response that is no stream, then close on ``trigger``.

        For a HEAD's answer and a refusal.  The source never starts (it is
        closed, which releases what creating it acquired); each send is
        bounded by ``send_timeout``.  A send that fails closes on what it ran
        into instead: ``DISCONNECTED``, ``SEND_TIMED_OUT``, ``FAILED`` or
        ``CANCELLED``.

        Raises:
            SendTimeoutError, BaseException: as :meth:`answer_head` says.
        """
        timeout = self._settings.send_timeout
        try:
            try:
                outcome = await self._send_bounded(start, timeout)
                if outcome is _SENT:
                    outcome = await self._send_bounded(_body(body, more_body=False), timeout)
            except anyio.get_cancelled_exc_class():
                self._fire(Trigger.CANCELLED, "the connection's task was cancelled")
                raise
            except BaseException as exc:  # any type: the connection still ends CLOSED
                self._fail(exc)
            else:
                if isinstance(outcome, OSError):
                    self._fire(Trigger.DISCONNECTED, f"send raised {outcome!r}")
                elif outcome is _OVERDUE:
                    self._fire(Trigger.SEND_TIMED_OUT, f"{what} not sent within {timeout} s")
                else:
                    self._fire(trigger, reason)
        finally:
            self._count_out()
            await self._close_source()
        self._raise_for_close()

    def sent_counts(self) -> tuple[int, int, int]:
        """Events, pings and body bytes sent so far (events the pump has not
        yet handed to the machine included).  Read by the coordinator's
        statistics, possibly from another thread: plain attribute reads."""
        machine = self._machine
        return (
            machine.count(Trigger.EVENT_SENT) + self.unflushed_events,
            machine.count(Trigger.PING_SENT),
            self.bytes_sent,
        )

    def _admit(self) -> str | None:
        """Ask the coordinator for a slot, counting this connection ``OPEN``;
        ``None`` when admitted (always, without a coordinator), else why not."""
        books = self._books
        if books is None:
            return None
        settings = self._settings
        return books.admit(self, settings.admission_class, settings.class_max_streams)

    def _count_out(self) -> None:
        """The connection is done: the coordinator stops counting it, if the
        close has not already (a no-op on every path that reached CLOSED)."""
        if self._books is not None:
            self._books.done(self, self._machine.close_reason)

    # --------------------------------------------------------------- OPEN

    async def _send_start(self) -> bool:
        """Send the headers; returns whether the connection is STREAMING.

        Timed by the watcher like any other send (``_sending`` is already
        set), which also sees a disconnect while this send is blocked.
        Exceptions other than ``OSError`` propagate to the phase, which turns
        them into FAILED.
        """
        try:
            await self._send(self._start_message)
        except OSError as exc:
            self._sending = False
            self._fire(Trigger.DISCONNECTED, f"sending the headers raised {exc!r}")
            return False
        self._sending = False
        if not self._open:
            return False  # the watcher closed the connection while the headers went out
        self._last_send_at = self._clock()
        status = self._start_message["status"]
        self._fire(Trigger.STARTED, _STATUS_200 if status == 200 else f"status {status}")
        return True

    # ------------------------------------------------- STREAMING / DRAINING

    async def _stream(self) -> None:
        """STREAMING and DRAINING: the pump (this task) beside the watcher, then the end.

        One cancel scope serves the whole phase, the task group's: the watcher
        cancels it on a disconnect or a send timeout, a drain puts its grace on
        its deadline, and the pump cancels it when the source is done, which
        stops the watcher and the data sender.  The farewell, the final body
        and the client-close handler run after the task group, where nothing
        of this phase can cut them.  The pump loop is inline, not a call: one
        frame less per connection, and locals instead of attribute reads.
        """
        settings = self._settings
        machine = self._machine
        exhausted = False
        # The header send is timed by the watcher like any other send.
        self._sending = True
        self._last_send_at = self._clock()
        async with anyio.create_task_group() as tasks:
            self._scope = tasks.cancel_scope
            # The watcher and the data sender start before the headers go out,
            # as in sse-starlette: a disconnect is seen while the header send
            # is blocked, and a data sender may already feed the source (the
            # MCP SDK hands its first item over while the headers wait).
            tasks.start_soon(self._watch)
            if settings.data_sender is not None:
                tasks.start_soon(self._run_data_sender, settings.data_sender)
            registered: DrainCoordinator | None = None
            try:
                if not await self._send_start():
                    return  # closed in OPEN; the finally below stops the tasks
                registered = self._follow_drains()
                source_next = self._source.__anext__
                send = self._send
                recorder = _hooks.send_recorder  # read once per stream: nothing per event when off
                if recorder is not None:
                    send = timed_send(send, recorder)
                sep = settings.sep
                clock = self._clock
                checkpoint = anyio.lowlevel.checkpoint
                yield_at = clock() + FAIRNESS_SLICE
                budget = FAIRNESS_EVENTS
                # The hot path: one iteration per event, nothing in it that is
                # not needed.  A send gets no cancel scope of its own: the
                # watcher times it and cancels the task group if it is overdue.
                while True:
                    try:
                        item = await source_next()
                    except StopAsyncIteration:
                        exhausted = True
                        if machine.state is State.STREAMING:
                            self._fire(Trigger.SOURCE_EXHAUSTED, "the source ended")
                        break  # a draining stream says its farewell first (below)
                    # Pre-encoded bytes go out as they are, without the call;
                    # a hub's backlog (Frames) is several events in one send.
                    events = 1
                    if type(item) is bytes:
                        frame = item
                    elif type(item) is Frames:
                        frame = item.body
                        events = item.events
                    else:
                        frame = encode_item(item, sep)
                    while self._ping_in_flight is not None:
                        await self._ping_in_flight.wait()
                    if not self._open:
                        break  # closed while the source was producing; send nothing more
                    now = clock()
                    self._last_send_at = now
                    self._sending = True
                    try:
                        await send({"type": "http.response.body", "body": frame, "more_body": True})
                    except OSError as exc:
                        self._sending = False
                        self._fire(Trigger.DISCONNECTED, f"send raised {exc!r}")
                        break
                    self._sending = False
                    self.bytes_sent += len(frame)
                    if not self._open:
                        break  # the watcher closed the connection while this send ran
                    # An EVENT_SENT self-loop, legal in STREAMING and DRAINING
                    # (the only states that reach this line); handed to the
                    # machine before its next fire, so each is checked in the
                    # state where it happened.
                    self.unflushed_events += events
                    budget -= 1  # per send: a Frames is one send
                    if budget == 0 or now >= yield_at:
                        self._flush_events()
                        await checkpoint()
                        yield_at = clock() + FAIRNESS_SLICE
                        budget = FAIRNESS_EVENTS
            except SlowConsumerError as exc:
                self._fire(Trigger.FELL_BEHIND, str(exc) or "the subscriber fell behind")
            except BaseException as exc:  # any type: the connection still ends CLOSED
                if _is_real_cancellation(exc):
                    raise
                self._fail(exc)
            finally:
                if registered is not None:
                    registered.unregister(self._drain)
                # Stop the watcher's waits and pings and the data sender.
                self._cancel_scope()
        await self._end_phase(source_ended=exhausted)

    async def _end_phase(self, *, source_ended: bool) -> None:
        """After the task group: finish a drain, then end the body if the reason is clean.

        A drain's closing trigger is fired here, after the farewell, and not
        where its fact was detected: the farewell can still fail (a send
        timeout, a client gone), and then that failure is the close reason.
        ``source_ended`` says which fact it was: the source returned
        (``SOURCE_EXHAUSTED``, reason ``drained``), or the grace cut it
        (``GRACE_EXPIRED``, reason ``shutdown_forced``).
        """
        machine = self._machine
        settings = self._settings
        if machine.state is State.DRAINING:
            bound = settings.send_timeout
            await self._send_farewell(bound=FAREWELL_SEND_BOUND if bound is None else bound)
            if machine.state is State.DRAINING:  # else the farewell's send closed it
                if source_ended:
                    self._fire(Trigger.SOURCE_EXHAUSTED, "the source ended")
                else:
                    grace = settings.shutdown_grace_period
                    self._fire(
                        Trigger.GRACE_EXPIRED, f"the source was still running after {grace} s"
                    )
        if machine.close_reason is not CloseReason.CLIENT_DISCONNECTED:
            await self._send_final_body(bound=self._cleanup_bound())

    async def _call_close_handler(self) -> None:
        """Await ``client_close_handler_callable`` once if the client left, bounded.

        It gets the watcher's disconnect message, or one made up when a send
        saw the disconnect as an ``OSError``.  Bounded by ``cleanup_timeout``:
        a handler that hangs is abandoned with a warning.  An ``Exception`` it
        raises is logged (the connection is already CLOSED); any other
        ``BaseException`` propagates.
        """
        handler = self._settings.client_close_handler
        if handler is None or self._machine.close_reason is not CloseReason.CLIENT_DISCONNECTED:
            return
        message = self._disconnect or {"type": "http.disconnect"}
        timeout = self._settings.cleanup_timeout
        with anyio.move_on_after(timeout) as scope:
            try:
                await handler(message)
            except Exception as exc:
                self._fail(exc)
        if scope.cancelled_caught:
            logger.warning("client_close_handler_callable did not return within %s s", timeout)

    def _farewell_frame(self) -> bytes | None:
        """The farewell's bytes: a jittered ``retry:`` block, then the user's event."""
        settings = self._settings
        parts: list[bytes] = []
        if settings.drain_retry is not None:
            low, high = settings.drain_retry
            retry = ServerSentEvent(retry=random.randint(low, high), sep=settings.sep)
            parts.append(encode_item(retry, settings.sep))
        if settings.farewell_factory is not None:
            event = settings.farewell_factory()
            if event is not None:
                # After the retry block, so a retry the user set wins.
                parts.append(encode_item(event, settings.sep))
        return b"".join(parts) if parts else None

    async def _send_farewell(self, *, bound: float) -> None:
        """Send the farewell once, bounded, while DRAINING (or just before CANCELLED).

        A factory that raises closes the connection with reason ``error``; a
        send that takes longer than ``bound`` with reason ``send_timeout`` if
        one is set, else it is dropped and nothing more is sent.
        """
        if self._farewell_done or self._client_left:
            return
        self._farewell_done = True
        settings = self._settings
        if settings.farewell_factory is None and settings.drain_retry is None:
            return
        try:
            frame = self._farewell_frame()
        except BaseException as exc:  # a sync call: no cancellation can arise in it
            self._fail(exc)
            return
        if frame is None:
            return
        try:
            outcome = await self._send_bounded(_body(frame, more_body=True), bound)
        except BaseException as exc:  # any type: the connection still ends CLOSED
            if _is_real_cancellation(exc):
                raise
            self._fail(exc)
            return
        if isinstance(outcome, OSError):
            self._fire(Trigger.DISCONNECTED, f"sending the farewell raised {outcome!r}")
            return
        if outcome is _OVERDUE:
            if settings.send_timeout is not None:
                self._fire(Trigger.SEND_TIMED_OUT, f"the farewell was not sent within {bound} s")
            else:
                # No send_timeout was asked for, so this is no send timeout:
                # the drain goes on, but a client that does not read gets
                # nothing more (the final body would only block as long).
                logger.debug("the farewell was not sent within %s s; dropped", bound)
                self._client_stopped_reading = True
            return
        self.bytes_sent += len(frame)
        self.unflushed_events += 1  # an EVENT_SENT self-loop (DRAINING), like any event

    def _follow_drains(self) -> DrainCoordinator | None:
        """Arm the lifetime, register with the coordinator (and the server's
        shutdown); returns the coordinator, to leave.

        Called once, just after ``STARTED``.  May raise (a signal handler that
        cannot be chained, a registration that fails): the caller is inside
        the phase's ``try``, so that is FAILED.
        """
        lifetime = self._settings.lifetime
        if lifetime is not None:
            # Before registering: a drain already requested disarms it at once.
            self._arm_lifetime(lifetime)
        coordinator = self._settings.drain_coordinator
        if coordinator is None:
            return None
        if coordinator.automatic:
            follow_server_shutdown(coordinator)  # before register: no signal missed
        coordinator.register(self._drain)
        return coordinator

    def _arm_lifetime(self, lifetime: float) -> None:
        """Start the lifetime's count: the watcher drains the stream when it runs out.

        No task and no scope of its own: the end of the lifetime is one more
        deadline in the watcher's wake (``_deadlines.next_wake``).  The
        watcher's current wait was computed before this deadline existed, so
        it is brought forward here if it would wake later.
        """
        expires_at = self._clock() + lifetime
        self._expires_at = expires_at
        waiting = self._waiting
        if waiting is not None and waiting.deadline > expires_at:
            waiting.deadline = expires_at

    def _drain(self, reason: str) -> None:
        """Called on the loop by the coordinator: enter DRAINING and start the grace."""
        self._begin_drain(Trigger.SHUTDOWN_REQUESTED, reason)

    def _rotate(self) -> None:
        """Called by the watcher when the lifetime ran out: drain as for a shutdown."""
        lifetime = self._settings.lifetime
        self._begin_drain(Trigger.LIFETIME_EXPIRED, f"its lifetime of {lifetime:.6g} s ran out")

    def _begin_drain(self, trigger: Trigger, reason: str) -> None:
        """Fire ``trigger``; if that left STREAMING, tell the source and start the grace.

        The one drain for both of its causes, a shutdown request and the end
        of the lifetime: the table decides where each goes (a second request
        while DRAINING is a self-loop that moves nothing), and this method
        only does what entering DRAINING calls for.
        """
        state = self._machine.state
        if self._fire(trigger, reason) is None:
            return  # the stream closed before the request reached it
        if state is State.STREAMING:
            # Disarmed: from here the grace is the deadline that counts.
            self._expires_at = math.inf
            settings = self._settings
            if settings.shutdown_event is not None:
                settings.shutdown_event.set()
            if self._scope is not None:  # set before _drain is registered
                self._scope.deadline = self._clock() + settings.shutdown_grace_period

    # --------------------------------------------------------------- watcher

    async def _watch(self) -> None:
        """Wait for a disconnect, sending pings and timing sends meanwhile.

        Runs until the task group's scope is cancelled (by the pump when the
        source is done, or by this watcher when it closes the connection).
        The disconnect message it closed the connection on is kept for the
        client-close handler, which the pump awaits after the task group.
        """
        machine = self._machine
        receive = self._receive
        clock = self._clock
        settings = self._settings
        interval = settings.ping_interval
        send_timeout = settings.send_timeout
        try:
            while True:
                wake_at = next_wake(
                    clock(),
                    last_send_at=self._last_send_at,
                    sending=self._sending,
                    ping_interval=interval,
                    send_timeout=send_timeout,
                    expires_at=self._expires_at,
                )
                with anyio.CancelScope(deadline=wake_at) as waiting:
                    self._waiting = waiting
                    message = await receive()
                if not waiting.cancelled_caught:
                    if message["type"] in _DISCONNECT_TYPES:
                        self._client_left = True
                        self._disconnect = message
                        self._close_from_watcher(
                            Trigger.DISCONNECTED, _CLIENT_SENT[message["type"]]
                        )
                        break
                    # Any other message (a request body chunk) is ignored.  A
                    # checkpoint, so that a receive() that returns without
                    # suspending cannot spin this loop and starve the others.
                    await anyio.lowlevel.checkpoint()
                    continue
                if machine.state is State.CLOSED:
                    break
                found = due(
                    clock(),
                    last_send_at=self._last_send_at,
                    sending=self._sending,
                    ping_interval=interval,
                    send_timeout=send_timeout,
                    expires_at=self._expires_at,
                )
                if found is Due.SEND_OVERDUE:
                    what = "headers" if machine.state is State.OPEN else "an event"
                    self._time_out(f"{what} not sent within {send_timeout} s")
                    break
                if found is Due.LIFETIME:
                    # Armed only while STREAMING, and CLOSED was ruled out
                    # above with no await since: this cannot race a close.
                    self._rotate()
                    continue  # a draining stream is still watched and pinged
                if found is Due.PING and not await self._send_ping():
                    break
        except BaseException as exc:  # any type: the connection still ends CLOSED
            if _is_real_cancellation(exc):
                raise
            self._fail(exc)
            self._cancel_scope()
            return
        if self._sending and machine.state is State.CLOSED:
            # The pump is still in a send that this watcher gave up on, and
            # some servers do not let it be cancelled (hypercorn's trio worker
            # shields its socket writes).  Close the source from here, so its
            # finally runs now rather than when the stalled client leaves.
            await self._close_source()

    async def _send_ping(self) -> bool:
        """Send one keep-alive; returns False if that closed the connection."""
        settings = self._settings
        if settings.ping_factory is not None:
            frame = encode_item(settings.ping_factory(), settings.sep)
        else:
            comment = f"ping - {datetime.now(timezone.utc)}"
            frame = encode_item(ServerSentEvent(comment=comment, sep=settings.sep), settings.sep)
        done = anyio.Event()
        self._ping_in_flight = done
        try:
            outcome = await self._send_bounded(_body(frame, more_body=True), settings.send_timeout)
        finally:
            self._ping_in_flight = None
            done.set()
        if isinstance(outcome, OSError):
            self._close_from_watcher(Trigger.DISCONNECTED, f"sending a ping raised {outcome!r}")
            return False
        if outcome is _OVERDUE:
            self._time_out(f"a ping was not sent within {settings.send_timeout} s")
            return False
        self._last_send_at = self._clock()
        self.bytes_sent += len(frame)
        # Dropped (False) if the pump closed the connection while the ping was in flight.
        return self._fire(Trigger.PING_SENT) is not None

    def _time_out(self, reason: str) -> None:
        self._close_from_watcher(Trigger.SEND_TIMED_OUT, reason)

    def _close_from_watcher(self, trigger: Trigger, reason: str) -> None:
        """Close on the watcher's finding (a late report if the pump closed first)."""
        self._fire(trigger, reason)
        self._cancel_scope()

    def _cancel_scope(self) -> None:
        """Stop the streaming phase: the pump's await, the watcher and the data sender.

        Once only: trio formats the calling task's repr on every ``cancel()``,
        even of a scope already cancelled, and asyncio's anyio on the first.
        """
        scope = self._scope
        if scope is not None and not scope.cancel_called:
            scope.cancel()

    # ------------------------------------------------------------ data sender

    async def _run_data_sender(self, data_sender: Callable[[], Awaitable[None]]) -> None:
        try:
            await data_sender()
        except BaseException as exc:  # any type: the connection still ends CLOSED
            if _is_real_cancellation(exc):
                raise
            self._fail(exc)
            self._cancel_scope()

    # ---------------------------------------------------------------- CLOSED

    def _fire(self, trigger: Trigger, reason: str = "") -> Arc | None:
        """Report ``trigger`` to the machine, after handing it the pump's tally of events.

        Returns the arc taken, or ``None`` for a late report the machine
        dropped (:data:`~sse_sm._state.LATE_REPORTS`): the close that won
        stands.
        """
        self._flush_events()
        arc = self._machine.fire(trigger, reason)
        if arc is None:
            logger.debug("late %s dropped: already closed (%s)", trigger.name, reason)
            return None
        self._open = arc.target is not State.CLOSED
        if arc.target is not arc.source:  # a change of state; self-loops stop here
            if self._books is not None:
                self._books.moved(self, arc)
            if transition_logger.isEnabledFor(logging.DEBUG):
                transition_logger.debug(
                    "stream %x: %s --%s--> %s (%s)",
                    id(self._machine),
                    arc.source.name,
                    trigger.name,
                    arc.target.name,
                    reason,
                )
        return arc

    def _flush_events(self) -> None:
        if self.unflushed_events:
            count, self.unflushed_events = self.unflushed_events, 0
            self._machine._tally(Trigger.EVENT_SENT, count)

    def _cleanup_bound(self) -> float | None:
        """How long a shielded final send may take: ``send_timeout``, else
        ``cleanup_timeout`` but at least :data:`FAREWELL_SEND_BOUND` (a
        ``cleanup_timeout=0``, "do not wait for the source's close", must not
        cut every clean end), else no bound (``cleanup_timeout=None``)."""
        settings = self._settings
        if settings.send_timeout is not None:
            return settings.send_timeout
        cleanup = settings.cleanup_timeout
        return None if cleanup is None else max(cleanup, FAREWELL_SEND_BOUND)

    def _fail(self, exc: BaseException) -> None:
        """Close with reason ``error`` and keep ``exc`` to re-raise, if still open.

        What :meth:`run` raises always matches the close reason.  An exception
        that arrives after the connection closed for another reason (a source
        failing as the client leaves, a client-close handler that raises) is
        logged with its traceback instead.
        """
        if self._fire(Trigger.FAILED, repr(exc)) is None:
            reason = self._machine.close_reason
            logger.error(
                "raised after the connection closed (%s)",
                None if reason is None else reason.value,
                exc_info=exc,
            )
            return
        self._error = exc

    async def _send_final_body(self, *, bound: float | None) -> None:
        """End the response cleanly if the close reason says the peer still listens."""
        if (
            self._machine.close_reason not in CLEAN_END_REASONS
            or self._client_left
            or self._client_stopped_reading
        ):
            # Nothing is sent to a client known to have left, even when the
            # connection closed for another reason a moment before.
            return
        # Shielded: it must go out even while this task is being cancelled.
        try:
            outcome = await self._send_bounded(_body(b"", more_body=False), bound, shield=True)
        except Exception as exc:  # the connection is CLOSED already: logged, not raised
            self._fail(exc)
            return
        if isinstance(outcome, OSError):
            logger.debug("the client left before the final empty body")
        elif outcome is _OVERDUE:
            logger.debug("the final empty body was not sent within %s s", bound)

    async def _send_bounded(
        self, message: Message, bound: float | None, *, shield: bool = False
    ) -> _Sent | OSError:
        """Send one message within ``bound`` seconds (``None``: no bound).

        The one way every send but the pump's is bounded: the HEAD answer,
        pings, the farewell and the final body.  (The pump's headers and
        events get no scope of their own, for speed: the watcher times them.)
        Returns ``_SENT``, ``_OVERDUE`` (the bound passed and the send was
        cancelled), or the ``OSError`` that said the client is gone; any other
        exception propagates.  With ``shield`` an outside cancellation waits
        for it, still within ``bound``.
        """
        with anyio.move_on_after(bound, shield=shield) as scope:
            try:
                await self._send(message)
            except OSError as exc:
                return exc
        return _OVERDUE if scope.cancelled_caught else _SENT

    async def _close_source(self) -> None:
        """Close the source, shielded and bounded by ``cleanup_timeout``."""
        if self._source.finished:
            return
        timeout = self._settings.cleanup_timeout
        closing = self._source_closing
        if closing is not None:  # the watcher began it; wait for that close
            with anyio.move_on_after(timeout, shield=True):
                await closing.wait()
            return
        self._source_closing = closing = anyio.Event()
        try:
            with anyio.move_on_after(timeout, shield=True) as scope:
                try:
                    await self._source.aclose()
                except Exception:
                    logger.exception("closing the source raised")
        finally:
            closing.set()
        if scope.cancel_called:
            logger.warning("closing the source was cut short after %s s", timeout)
