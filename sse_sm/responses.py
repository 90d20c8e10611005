"""``EventSourceResponse``: the Starlette response users return from an endpoint.

It takes every argument of sse-starlette 3.7.1 with the same meaning, so code
migrates by changing one import line.  The response itself is thin: it
validates its arguments, builds the headers, and hands the connection to the
driver (``_connection.py``), whose state machine it exposes read-only.

Divergences from sse-starlette, each deliberate (docs/design.md lists them
with their reasons): invalid ids, event names, retries and arguments are
refused with an error instead of being stripped or passed through; ``dict`` or
``list`` data is sent as JSON instead of a Python ``repr``; the ping goes out
after ``ping`` seconds *without traffic* instead of on a fixed beat; a sync
source's blocking ``next()`` no longer delays a disconnect or a shutdown, and
the source is closed on every path; ``Connection: keep-alive`` is left out on
HTTP/2 and HTTP/3; a drain, or a cancellation from outside, still ends the
body cleanly; shutdown is app-scoped rather than process-global.

Why one module of this length: it is the public constructor, whose
docstring documents each of its twenty arguments (sse-starlette's and ours)
where users read them, and the checks of those arguments; the work behind
it lives in ``_connection``, ``_admission``, ``_lifetime`` and
``_validation``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias, final

import anyio
import anyio.lowlevel
from starlette.background import BackgroundTask
from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ._admission import admission_class_for, check_class_max_streams
from ._connection import Connection, StreamSettings
from ._events import DEFAULT_SEPARATOR, MAX_RETRY, ServerSentEvent, validate_sep
from ._exceptions import TransitionError
from ._lifetime import check_lifetime_range, draw_lifetime
from ._shutdown import DrainCoordinator, default_drain_coordinator, drain_coordinator_for
from ._sources import ClosableSource, open_source
from ._state import STATE_ORDER, CloseReason, State, StateMachine, Transition, Trigger
from ._validation import (
    check_awaitable_callable,
    check_callable,
    check_headers,
    check_media_type,
    check_retry_range,
    check_seconds,
    check_status_code,
)

__all__ = ("Content", "EventSourceResponse", "StreamStatistics")

logger = logging.getLogger("sse_sm")

#: What a source may yield: str, bytes-like, a dict of ServerSentEvent keyword
#: arguments, a ServerSentEvent, or any other object (sent as ``str(item)``).
Content: TypeAlias = object
ContentStream: TypeAlias = AsyncIterable[Any] | Iterable[Any]

_HOP_BY_HOP_FORBIDDEN_VERSIONS: Final = frozenset({"2", "3"})

#: The header pairs of a response built without ``headers``, per class and
#: media type: computed once, then each response gets its own list of the same
#: (immutable) pairs, so a change to one response's headers never reaches
#: another's.  About 0.5 KiB less per connection than building them anew.
_DEFAULT_HEADER_PAIRS: dict[tuple[type, str | None], tuple[tuple[bytes, bytes], ...]] = {}


@final
@dataclass(frozen=True, slots=True)
class StreamStatistics:
    """A snapshot of one response's connection (trio's ``statistics()`` style)."""

    #: The current state.
    state: State
    #: Why it closed; ``None`` while not ``CLOSED``.
    close_reason: CloseReason | None
    #: Events sent from the source (``EVENT_SENT`` self-loops).
    events_sent: int
    #: Keep-alive pings sent (``PING_SENT`` self-loops).
    pings_sent: int
    #: Body bytes sent, events and pings together.
    bytes_sent: int
    #: Seconds spent in each state so far.
    time_in_states: Mapping[State, float]
    #: The changes of state so far, oldest first.
    history: tuple[Transition, ...]
    #: What began the drain: ``SHUTDOWN_REQUESTED`` or ``LIFETIME_EXPIRED``
    #: (a rotation); ``None`` if it never drained.  Both end ``drained`` or
    #: ``shutdown_forced``: this is what tells a rotation from a shutdown.
    drained_by: Trigger | None = None


class EventSourceResponse(Response):
    """A Server-Sent Events stream whose connection is an explicit state machine.

    >>> async def numbers():
    ...     for n in range(3):
    ...         yield {"data": n, "id": str(n)}
    >>> response = EventSourceResponse(numbers(), ping=5)
    >>> response.state
    <State.OPEN: 'open'>

    Args:
        content: an async iterable, or a sync iterable (run in worker threads),
            of str, bytes, dict (ServerSentEvent keyword arguments) or
            :class:`ServerSentEvent` items.
        status_code, headers, media_type, background: as for any Starlette
            response; ``background`` runs after the stream ends without error.
        ping: seconds without traffic before a keep-alive comment is sent;
            default 15, ``0`` disables pings.
        sep: line terminator for str/dict items and the default ping.
        ping_message_factory: builds each ping instead of ``: ping - <time>``.
        data_sender_callable: a coroutine function run beside the stream (for
            example feeding the memory stream that is ``content``); if it
            raises, the stream closes with reason ``error``.
        send_timeout: seconds a send (event or ping) may take before the
            connection closes with reason ``send_timeout`` and
            :class:`SendTimeoutError` is raised; ``None`` waits forever.
        client_close_handler_callable: awaited with the ``http.disconnect``
            message when the client leaves.
        shutdown_event: set when a drain is requested, so the source can send
            a farewell and return.
        shutdown_grace_period: seconds a draining source may keep running
            before it is cancelled (``GRACE_EXPIRED``).
        cleanup_timeout: bound, in seconds, on closing the source; ``None``
            means no bound.
        on_transition: called with each :class:`Transition` as it happens.
        drain_coordinator: where drain requests come from; by default the one
            of the Starlette app serving the request (``scope["app"]``), or
            the process's :func:`default_drain_coordinator` when the scope
            has no such app (raw ASGI, a bare Router, another framework).  A
            server's SIGINT/SIGTERM drains it automatically unless its
            ``automatic`` is False.
        farewell_factory: builds the last event (a ServerSentEvent, dict or
            str; ``None`` for none) of a stream that ends by a drain, within
            or past the grace, or by an outside cancellation.
        drain_retry: milliseconds, an int or an inclusive ``(low, high)``
            range: sent as a ``retry:`` field just before the farewell, drawn
            uniformly per stream, so that clients reconnect spread out
            instead of all at once to the next instance.
        max_lifetime: seconds a stream may stream before it drains by itself
            (``LIFETIME_EXPIRED``), exactly as for a shutdown: the
            ``shutdown_event`` is set, the grace runs, the farewell and the
            ``retry:`` go out and the body ends cleanly, so the client
            reconnects (with its ``Last-Event-ID``) wherever the load
            balancer sends it.  A number, or a ``(min, max)`` range from
            which each response draws its own lifetime uniformly
            (:attr:`lifetime`), so that streams opened together do not all
            reconnect together.  Counted from the headers.  ``None`` or
            ``math.inf``: no limit; a range's bounds must be finite.

    Admission control: the coordinator's ``max_streams`` caps the streams
    alive on it, whatever their class.  A subclass may add a cap of its own,
    ``max_streams`` as a class attribute (an int >= 0, or ``None`` for none),
    counted on each coordinator for the class that sets it: subclasses that do
    not set it share their parent's count and cap.  Either limit reached, the
    request is answered ``503`` with a jittered ``Retry-After`` (the
    coordinator's ``retry_after``), and its source never starts:

    >>> class Feed(EventSourceResponse):
    ...     max_streams = 100  # at most 100 Feed streams per app

    Raises:
        TypeError, ValueError: an argument is out of range; the message names it.
    """

    #: Cap on the streams of this class (and subclasses that do not set their
    #: own) alive at once on one coordinator; ``None``: only the coordinator's.
    max_streams: ClassVar[int | None] = None

    DEFAULT_PING_INTERVAL: ClassVar[int] = 15
    DEFAULT_SEPARATOR: ClassVar[str] = DEFAULT_SEPARATOR
    DEFAULT_CLEANUP_TIMEOUT: ClassVar[float] = 30.0

    media_type = "text/event-stream"

    def __init__(
        self,
        content: ContentStream,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = "text/event-stream",
        background: BackgroundTask | None = None,
        ping: float | None = None,
        sep: str | None = None,
        ping_message_factory: Callable[[], ServerSentEvent] | None = None,
        data_sender_callable: Callable[[], Awaitable[None]] | None = None,
        send_timeout: float | None = None,
        client_close_handler_callable: Callable[[Message], Awaitable[None]] | None = None,
        shutdown_event: anyio.Event | None = None,
        shutdown_grace_period: float = 0,
        cleanup_timeout: float | None = DEFAULT_CLEANUP_TIMEOUT,
        *,
        on_transition: Callable[[Transition], None] | None = None,
        drain_coordinator: DrainCoordinator | None = None,
        farewell_factory: Callable[[], Content | None] | None = None,
        drain_retry: int | tuple[int, int] | None = None,
        max_lifetime: float | tuple[float, float] | None = None,
    ) -> None:
        self.sep = validate_sep(sep)
        self.status_code = check_status_code("status_code", status_code)
        headers = check_headers("headers", headers)
        media_type = check_media_type("media_type", media_type)
        self.media_type = self.media_type if media_type is None else media_type
        check_awaitable_callable("background", background)
        self.background = background
        self.ping_interval = self.DEFAULT_PING_INTERVAL if ping is None else ping
        check_callable("ping_message_factory", ping_message_factory)
        check_callable("data_sender_callable", data_sender_callable)
        check_callable("client_close_handler_callable", client_close_handler_callable)
        check_callable("on_transition", on_transition)
        check_callable("farewell_factory", farewell_factory)
        self.farewell_factory = farewell_factory
        self.drain_retry = check_retry_range("drain_retry", drain_retry, maximum=MAX_RETRY)
        bounds = check_lifetime_range("max_lifetime", max_lifetime)
        self._lifetime = None if bounds is None else draw_lifetime(bounds)
        self.ping_message_factory = ping_message_factory
        self.data_sender_callable = data_sender_callable
        self.client_close_handler_callable = client_close_handler_callable
        self.send_timeout = (
            None
            if send_timeout is None
            else check_seconds("send_timeout", send_timeout, allow_zero=False)
        )
        if shutdown_event is not None and not (
            callable(getattr(shutdown_event, "set", None))
            and callable(getattr(shutdown_event, "is_set", None))
        ):
            raise TypeError(
                "shutdown_event must be an event with set() and is_set() (anyio.Event), "
                f"got {type(shutdown_event).__name__}"
            )
        self._shutdown_event = shutdown_event
        self._shutdown_grace_period = check_seconds(
            "shutdown_grace_period", shutdown_grace_period, allow_zero=True
        )
        self._cleanup_timeout = (
            None
            if cleanup_timeout is None
            else check_seconds("cleanup_timeout", cleanup_timeout, allow_zero=True)
        )
        if drain_coordinator is not None and not isinstance(drain_coordinator, DrainCoordinator):
            raise TypeError("drain_coordinator must be a DrainCoordinator")
        self._drain_coordinator = drain_coordinator
        # Last: every other argument is checked before the content is wrapped.
        self.body_iterator: ClosableSource = open_source(content)

        self._init_sse_headers(headers)

        self._machine = StateMachine()
        if on_transition is not None:
            self._machine.add_listener(_guard_listener(on_transition))
        self._connection: Connection | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_class_max_streams(cls)  # a bad limit fails where it is written

    def _init_sse_headers(self, headers: Mapping[str, str] | None) -> None:
        """Same headers, in the same order, as sse-starlette: the user's first,
        then the ones SSE needs through proxies and caches."""
        key = (type(self), self.media_type)
        if headers is None and key in _DEFAULT_HEADER_PAIRS:
            self.raw_headers = list(_DEFAULT_HEADER_PAIRS[key])
            return
        sse_headers = MutableHeaders()
        if headers is not None:
            sse_headers.update(headers)
        # "no-store": no cache of any kind may keep the stream.  Users may
        # override it (fan-out proxies that cache for a moment).
        sse_headers.setdefault("Cache-Control", "no-store")
        sse_headers["Connection"] = "keep-alive"
        # nginx buffers proxied responses unless told not to.
        sse_headers["X-Accel-Buffering"] = "no"
        self.init_headers(sse_headers)
        if headers is None:
            _DEFAULT_HEADER_PAIRS[key] = tuple(self.raw_headers)

    # ----------------------------------------------------------- settings

    @property
    def ping_interval(self) -> float:
        """Seconds without traffic before a ping; ``0`` disables pings."""
        return self._ping_interval

    @ping_interval.setter
    def ping_interval(self, value: float) -> None:
        self._ping_interval = check_seconds("ping", value, allow_zero=True)

    @property
    def lifetime(self) -> float | None:
        """Seconds this stream may stream before it drains, drawn from
        ``max_lifetime`` when the response was built; ``None``: no limit."""
        return self._lifetime

    def enable_compression(self, force: bool = False) -> None:
        """Refuse: a compressor buffers events and delays them (and the pings)."""
        raise NotImplementedError("Compression is not supported for SSE streams.")

    # -------------------------------------------------------- observation

    @property
    def state(self) -> State:
        return self._machine.state

    @property
    def history(self) -> tuple[Transition, ...]:
        return self._machine.history

    @property
    def close_reason(self) -> CloseReason | None:
        return self._machine.close_reason

    @property
    def active(self) -> bool:
        """sse-starlette's flag, derived: True until the connection is CLOSED."""
        return self._machine.state is not State.CLOSED

    async def wait_until(self, state: State) -> None:
        """Wait until the connection is in ``state`` or past it; then return.

        A connection only moves forward (OPEN, STREAMING, DRAINING, CLOSED),
        and ``CLOSED`` ends every wait: waiting for DRAINING returns at the
        close of a stream that never drained, so read :attr:`state` after.
        Event-driven (no polling), a checkpoint even when already there, and
        for the connection's own event loop only (not thread-safe).
        """
        machine = self._machine
        if STATE_ORDER[machine.state] >= STATE_ORDER[state]:
            await anyio.lowlevel.checkpoint()
            return
        reached = anyio.Event()

        def listener(transition: Transition) -> None:
            if STATE_ORDER[transition.target] >= STATE_ORDER[state]:
                reached.set()

        machine.add_listener(listener)
        try:
            await reached.wait()
        finally:
            machine.remove_listener(listener)

    def statistics(self) -> StreamStatistics:
        machine = self._machine
        connection = self._connection
        if connection is None:
            events, pings, sent = 0, 0, 0
        else:
            events, pings, sent = connection.sent_counts()
        history = machine.history
        return StreamStatistics(
            state=machine.state,
            close_reason=machine.close_reason,
            events_sent=events,
            pings_sent=pings,
            bytes_sent=sent,
            time_in_states=machine.time_in_states(),
            history=history,
            drained_by=next((t.trigger for t in history if t.target is State.DRAINING), None),
        )

    # ---------------------------------------------------------------- ASGI

    def _headers_for(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        if scope.get("http_version") in _HOP_BY_HOP_FORBIDDEN_VERSIONS:
            # RFC 9113 8.2.2: connection-specific headers are malformed in HTTP/2.
            return [(k, v) for k, v in self.raw_headers if k != b"connection"]
        return self.raw_headers

    def _coordinator_for(self, scope: Scope) -> DrainCoordinator:
        """The explicit coordinator, else the scope's app's, else the process default."""
        if self._drain_coordinator is not None:
            return self._drain_coordinator
        app = scope.get("app")
        if app is None or getattr(app, "state", None) is None:
            return default_drain_coordinator()
        return drain_coordinator_for(app)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        """The ASGI call: the connection's own coroutine, awaited by the server.

        A plain method that returns :meth:`Connection.run` (or
        :meth:`Connection.answer_head`) rather than an ``async def`` awaiting
        it: one coroutine frame less for every open connection, about a sixth
        of what an idle sse_sm connection costs beyond a raw ASGI loop.
        """
        if self._connection is not None:
            # Awaited a second time (even while the first call runs): refused
            # before anything is sent, and the first stream is left alone.
            return _refuse_rerun(self._machine.state)
        if scope["type"] == "websocket":
            send = _deny_websocket(send)
        admission_class, class_max_streams = admission_class_for(type(self))
        settings = StreamSettings(
            sep=self.sep,
            ping_interval=self._ping_interval,
            ping_factory=self.ping_message_factory,
            send_timeout=self.send_timeout,
            cleanup_timeout=self._cleanup_timeout,
            shutdown_event=self._shutdown_event,
            shutdown_grace_period=self._shutdown_grace_period,
            data_sender=self.data_sender_callable,
            client_close_handler=self.client_close_handler_callable,
            drain_coordinator=self._coordinator_for(scope),
            farewell_factory=self.farewell_factory,
            drain_retry=self.drain_retry,
            admission_class=admission_class,
            class_max_streams=class_max_streams,
            lifetime=self._lifetime,
        )
        connection = Connection(
            machine=self._machine,
            settings=settings,
            source=self.body_iterator,
            start_message={
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self._headers_for(scope),
            },
            receive=receive,
            send=send,
        )
        self._connection = connection
        if scope["type"] == "http" and scope.get("method", "GET").upper() == "HEAD":
            # Starlette adds HEAD to GET routes; streaming on HEAD would never end.
            return connection.answer_head(then=self.background)
        return connection.run(then=self.background)


async def _refuse_rerun(state: State) -> None:
    raise TransitionError(state, Trigger.STARTED)


def _deny_websocket(send: Send) -> Send:
    """Send the response as a WebSocket denial response, as Starlette does."""

    async def denial_send(message: Message) -> None:
        if message["type"] in ("http.response.start", "http.response.body"):
            message = {**message, "type": "websocket." + message["type"]}
        await send(message)

    return denial_send


def _guard_listener(listener: Callable[[Transition], None]) -> Callable[[Transition], None]:
    """A user's on_transition hook must not break the connection it observes."""

    def guarded(transition: Transition) -> None:
        try:
            listener(transition)
        except Exception:
            logger.exception("on_transition callback raised")

    return guarded
