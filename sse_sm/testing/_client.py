"""An in-process client for SSE endpoints: each event handed over as it arrives.

httpx's ``ASGITransport`` and Starlette's ``TestClient`` collect the whole body
first, so an endless stream never returns; this client plays the server
instead.  Invariants (:func:`stream` and :class:`SSEStream`):

* The app runs in a task group owned by the ``async with`` block and never
  outlives it: at exit the client disconnects, waits at most ``finish_timeout``
  seconds, and otherwise cancels the app and fails loudly.
* Nothing polls.  Every wait is on an :class:`anyio.Event` or a memory object
  stream, so the kit behaves the same on asyncio and trio.
* The client never raises into the app's ``send()``; protocol mistakes are
  recorded in :attr:`SSEStream.violations` for the test to assert on, because
  an exception raised inside the app would change the very behaviour under test.
* There is no module-level mutable state: every stream owns its parser, queue
  and events, so concurrent tests cannot see each other's traffic.

Why one module of this length: it plays an ASGI server (the scope, a
``receive`` that hands over the disconnect, a ``send`` that checks every
message against the protocol) and the reader that parses what is sent; the
protocol checks are most of it, and they belong next to the ``send`` they
judge.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar, final
from urllib.parse import quote, unquote

import anyio
import anyio.lowlevel
from starlette.types import ASGIApp, Message

from .._state import CloseReason, State
from .._validation import check_headers, check_seconds
from ..responses import EventSourceResponse
from ._parser import Comment, Event, EventStreamParser

__all__ = ("SSEStream", "stream", "wait_for_close", "wait_for_state")

_T = TypeVar("_T")

# --------------------------------------------------------------------------- client

#: Characters left as they are when a path or query string is put on the wire.
_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE: Final = _PATH_SAFE + "?[]"


def _single_leaf(exc: BaseException) -> BaseException:
    """Unwrap exception groups that hold exactly one exception, recursively.

    Apps that use task groups (Starlette's streaming response among them) wrap
    a single failure in a group; the test wants the failure itself.
    """
    while _is_exception_group(exc):
        inner: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
        if len(inner) != 1:
            break
        exc = inner[0]
    return exc


def _is_exception_group(exc: BaseException) -> bool:
    """Whether ``exc`` is an exception group, on 3.10 (the backport) as on 3.11+.

    Recognised by class name because ``BaseExceptionGroup`` is not a builtin
    on 3.10 and this module must not require the ``exceptiongroup`` backport.
    """
    return any(cls.__name__ == "BaseExceptionGroup" for cls in type(exc).__mro__)


def _build_scope(
    path: str,
    *,
    method: str,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None,
    query_string: str,
    http_version: str,
    scope_overrides: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """An HTTP scope like a real server's, so apps cannot tell the kit from uvicorn."""
    if "?" in path:
        if query_string:
            raise ValueError("pass the query either in path or as query_string, not both")
        path, _, query_string = path.partition("?")
    if isinstance(headers, Mapping):
        header_items: list[tuple[str, str]] = list(headers.items())
    else:
        header_items = list(headers or ())
    for name, value in header_items:
        # The same rules the response's own headers follow, named as "headers".
        check_headers("headers", {name: value})
    raw_headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in header_items
    ]
    if not any(name == b"host" for name, _ in raw_headers):
        raw_headers.insert(0, (b"host", b"testserver"))
    raw_path = quote(path, safe=_PATH_SAFE)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": http_version,
        "method": method.upper(),
        "scheme": "http",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("ascii"),
        "query_string": quote(query_string, safe=_QUERY_SAFE).encode("ascii"),
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    if scope_overrides:
        scope.update(scope_overrides)
    return scope


def _are_header_pairs(headers: object) -> bool:
    """Whether ``headers`` is what ASGI requires: an iterable of two-item byte pairs."""
    if isinstance(headers, (str, bytes)) or not isinstance(headers, Iterable):
        return False
    return all(
        isinstance(pair, (tuple, list))
        and len(pair) == 2
        and all(isinstance(part, bytes) for part in pair)
        for pair in headers
    )


@final
class SSEStream:
    """One in-flight request to an ASGI app, seen from the client's side.

    Created by :func:`stream`; not meant to be constructed directly.  The app
    talks to :meth:`_receive` and :meth:`_send` as it would to a server; the
    test reads parsed events with :meth:`events`, :meth:`items` or
    :meth:`next_event` and inspects the recorded protocol facts.

    Body messages are queued one per ``http.response.body`` message (with the
    items it completed), which is the unit a slow reader holds up: with
    ``max_buffered_messages=N`` the app's ``send()`` blocks while N of them
    wait unread.  The message currently being read from counts as read.

    Attributes:
        app: The application under test.
        scope: The scope the app was called with.
        violations: One line per ASGI protocol mistake the app made (a body
            before the start, a second start, anything after the final body
            or after ``receive()`` returned ``http.disconnect``).  Offending
            messages are otherwise ignored.
        disconnected_at_message: How many body messages had arrived when
            ``receive()`` first returned ``http.disconnect``, or ``None``.
        app_exception: What the app raised, single-exception groups unwrapped;
            ``None`` if it returned normally or is still running.
    """

    def __init__(self, app: ASGIApp, scope: dict[str, Any], max_buffered: int | None) -> None:
        if max_buffered is not None and max_buffered < 0:
            raise ValueError("max_buffered_messages must be None or >= 0")
        self.app = app
        self.scope = scope
        self.violations: list[str] = []
        self.disconnected_at_message: int | None = None
        self.app_exception: BaseException | None = None
        self._status: int | None = None
        self._headers: list[tuple[str, str]] = []
        self._body = bytearray()
        self._body_messages = 0
        self._complete = False
        self._request_delivered = False
        self._disconnect_requested = False
        self._disconnect_delivered = False
        self._parser = EventStreamParser()
        buffer_size = math.inf if max_buffered is None else max_buffered
        self._items_in, self._items_out = anyio.create_memory_object_stream[list[Event | Comment]](
            buffer_size
        )
        self._unread: deque[Event | Comment] = deque()
        self._blocked_sends: set[anyio.CancelScope] = set()
        self._started_or_finished = anyio.Event()
        self._disconnect_due = anyio.Event()  # receive() may now return http.disconnect
        self._finished = anyio.Event()

    def __repr__(self) -> str:
        """A one-line summary, so a failing assertion on a stream says where it stood."""
        return (
            f"<SSEStream {self.scope.get('method')} {self.scope.get('path')!r}"
            f" status={self._status} messages={self._body_messages}"
            f" complete={self._complete} finished={self._finished.is_set()}"
            f" violations={len(self.violations)}>"
        )

    # ------------------------------------------------------------------ what the test reads

    @property
    def status(self) -> int:
        """The response status; only known after :meth:`wait_started`."""
        if self._status is None:
            raise RuntimeError("no http.response.start yet: await wait_started() first")
        return self._status

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Response headers as latin-1 text, names as sent; only after :meth:`wait_started`."""
        if self._status is None:
            raise RuntimeError("no http.response.start yet: await wait_started() first")
        return list(self._headers)

    @property
    def body(self) -> bytes:
        """Every body byte received so far, including those not yet read as events."""
        return bytes(self._body)

    @property
    def complete(self) -> bool:
        """Whether the final body message (``more_body`` false) has arrived."""
        return self._complete

    @property
    def finished(self) -> bool:
        """Whether the app coroutine has returned or raised."""
        return self._finished.is_set()

    async def wait_started(self) -> None:
        """Wait for the response to start, so ``status`` and ``headers`` can be read.

        Raises:
            AssertionError: If the app finished without starting a response,
                which is a bug in the app under test (chained to what it raised).
        """
        await self._started_or_finished.wait()
        if self._status is None:
            raise AssertionError(
                "the app finished without sending http.response.start"
            ) from self.app_exception

    async def wait_finished(self) -> None:
        """Wait until the app coroutine has returned or raised."""
        await self._finished.wait()

    def items(self) -> AsyncGenerator[Event | Comment, None]:
        """Iterate over events and comment blocks (pings) as they arrive.

        Ends when the body ends, the app finishes, or after :meth:`disconnect`
        once what was already received has been read.  The result behaves as
        an async generator (``aclose`` too) but is a plain object, so a test
        may ``break`` out of it freely: an unfinished real async generator
        makes trio warn when it is garbage collected, and tests here run with
        warnings as errors.
        """
        return _Reader(self, _any_item)

    def events(self) -> AsyncGenerator[Event, None]:
        """Iterate over events as they arrive, skipping comment blocks.

        Ends as :meth:`items` does, and is safe to leave early for the same reason.
        """
        return _Reader(self, _only_events)

    async def next_event(self) -> Event:
        """Wait for the next event, skipping comment blocks.

        Raises:
            anyio.EndOfStream: If the stream ends first.  A stream ending is an
                outcome a test may expect, so it is not an assertion failure.
        """
        async for event in self.events():
            return event
        raise anyio.EndOfStream(
            f"the stream ended before another event (complete={self._complete}, "
            f"app_exception={self.app_exception!r})"
        )

    async def disconnect(self) -> None:
        """Leave, as a browser closing the tab would: idempotent and immediate.

        The app's pending or next ``receive()`` returns ``http.disconnect``.
        From now on the client stops reading, so body messages the app still
        sends are recorded in :attr:`body` but not queued, and a ``send()``
        blocked on a full queue is released.
        """
        self._request_disconnect()

    def request_shutdown(self, reason: str = "shutdown requested by test client") -> None:
        """Ask the app's drain coordinator to drain, as a server shutting down would.

        Imported here so that this module does not depend on the library's
        shutdown machinery at import time.
        """
        from .._shutdown import drain_coordinator_for

        drain_coordinator_for(self.app).request_drain(reason)

    # ------------------------------------------------------------------ the server's side

    async def _receive(self) -> Message:
        """ASGI ``receive``: the empty request body once, then wait for a disconnect.

        Cancel-safe: nothing is consumed before the last await, so an app may
        cancel a pending call and call again, as it may on real servers.
        """
        await anyio.lowlevel.checkpoint()
        if not self._request_delivered:
            self._request_delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._disconnect_due.wait()
        if not self._disconnect_delivered:
            self._disconnect_delivered = True
            self.disconnected_at_message = self._body_messages
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        """ASGI ``send``: record the response and hand parsed items to the reader.

        Always a checkpoint, like a real server's ``send()``, so an app that
        only ever sends cannot starve the test.  The message is judged when the
        app hands it over, before that checkpoint: a message sent before the
        disconnect was delivered is not a violation because the disconnect
        arrived while the send was in progress.
        """
        if not isinstance(message, Mapping):
            await anyio.lowlevel.checkpoint()
            self.violations.append(f"a message that is not a dict: {type(message).__name__}")
            return
        headers = message.get("headers")
        if isinstance(headers, Iterable) and not isinstance(headers, (str, bytes, list, tuple)):
            # ASGI allows any iterable; read a one-shot one once, before checking it.
            message = {**message, "headers": list(headers)}
        problem = self._protocol_problem(message)
        await anyio.lowlevel.checkpoint()
        if problem is not None:
            self.violations.append(problem)
            return
        if message["type"] == "http.response.start":
            self._status = message["status"]
            self._headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", ())
            ]
            self._started_or_finished.set()
            return
        body = bytes(message.get("body", b""))
        final_message = not message.get("more_body", False)
        self._body += body
        self._body_messages += 1
        items = self._parser.feed(body)
        if final_message:
            self._complete = True
            items.extend(self._parser.close())
        await self._deliver(items)
        if final_message:
            # The response is over: no reader will get more, and a server
            # reports a completed response as a disconnect from then on.
            self._items_in.close()
            self._disconnect_due.set()

    def _protocol_problem(self, message: Message) -> str | None:
        """Describe what is wrong with sending ``message`` now, or return ``None``."""
        kind = message.get("type")
        if self._disconnect_delivered:
            return f"{kind} sent after receive() returned http.disconnect"
        if self._complete:
            return f"{kind} sent after the final body message (more_body=False)"
        if kind == "http.response.start":
            if self._status is not None:
                return "second http.response.start"
            if not isinstance(message.get("status"), int):
                return f"http.response.start with status {message.get('status')!r}"
            if not _are_header_pairs(message.get("headers", ())):
                return f"http.response.start with malformed headers {message.get('headers')!r}"
            return None
        if kind == "http.response.body":
            if self._status is None:
                return "http.response.body sent before http.response.start"
            if not isinstance(message.get("body", b""), bytes):
                return f"http.response.body with a {type(message.get('body')).__name__} body"
            return None
        return f"unexpected message type {kind!r}"

    async def _deliver(self, items: list[Event | Comment]) -> None:
        """Queue one body message's items, blocking while the reader is behind.

        The wait is in its own cancel scope so :meth:`disconnect` can release
        it: a reader that has left must not keep the app stuck in ``send()``.
        """
        if self._disconnect_requested:
            return
        with anyio.CancelScope() as scope:
            self._blocked_sends.add(scope)
            try:
                await self._items_in.send(items)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass  # the reader has gone: the bytes are recorded, nobody reads them
            finally:
                self._blocked_sends.discard(scope)

    def _request_disconnect(self) -> None:
        """Make ``receive()`` report a disconnect and stop queueing for the reader."""
        if self._disconnect_requested:
            return
        self._disconnect_requested = True
        self._disconnect_due.set()
        for scope in list(self._blocked_sends):
            scope.cancel()
        self._items_in.close()

    async def _next_item(self) -> Event | Comment | None:
        """The next parsed item, or ``None`` once the queue is closed and drained."""
        while not self._unread:
            try:
                batch = await self._items_out.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return None
            self._unread.extend(batch)
        return self._unread.popleft()

    async def _run_app(self) -> None:
        """Run the app to its end, keeping its exception for the context manager.

        Only :class:`Exception` is caught: cancellation must keep propagating
        so the task group can stop the app when it overstays.
        """
        try:
            await self.app(self.scope, self._receive, self._send)
        except Exception as exc:
            self.app_exception = _single_leaf(exc)
        finally:
            self._finished.set()
            self._started_or_finished.set()
            self._items_in.close()

    async def _finish(self) -> None:
        """Disconnect if the app is still running, then wait for it to end.

        The caller bounds the wait; this only says what "ending" means.
        """
        if not self._finished.is_set():
            self._request_disconnect()
            await self._finished.wait()

    def _close(self) -> None:
        """Close both ends of the queue so no stream object is left open."""
        self._items_in.close()
        self._items_out.close()


def _any_item(item: Event | Comment) -> Event | Comment:
    """Keep everything: what :meth:`SSEStream.items` reads."""
    return item


def _only_events(item: Event | Comment) -> Event | None:
    """Keep events, drop comment blocks: what :meth:`SSEStream.events` reads."""
    return item if isinstance(item, Event) else None


@final
class _Reader(AsyncGenerator[_T, None]):
    """Reads one stream's queue, keeping what ``pick`` accepts.

    It has an async generator's whole interface (``aclose`` included, so
    ``contextlib.aclosing`` works) but is a plain object: it holds nothing
    that needs finalizing, so abandoning it half-way is harmless, whereas an
    unfinished real async generator makes trio warn when it is collected.
    """

    __slots__ = ("_done", "_pick", "_stream")

    def __init__(self, sse: SSEStream, pick: Callable[[Event | Comment], _T | None]) -> None:
        self._stream = sse
        self._pick = pick
        self._done = False

    async def asend(self, value: None) -> _T:
        """The next accepted item; the value sent is ignored, as nothing consumes it."""
        if not self._done:
            while (item := await self._stream._next_item()) is not None:
                picked = self._pick(item)
                if picked is not None:
                    return picked
            self._done = True
        raise StopAsyncIteration

    async def athrow(self, typ: Any, val: Any = None, tb: Any = None) -> _T:
        """Finish, raising the exception thrown in, as a generator without handlers would."""
        self._done = True
        if isinstance(typ, BaseException):
            raise typ
        if isinstance(val, BaseException):
            raise val
        raise typ() if val is None else typ(val)

    async def aclose(self) -> None:
        """Finish: later iteration stops at once.  Reading nothing, it releases nothing."""
        self._done = True


@asynccontextmanager
async def stream(
    app: ASGIApp,
    path: str = "/",
    *,
    method: str = "GET",
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    query_string: str = "",
    http_version: str = "1.1",
    scope_overrides: Mapping[str, Any] | None = None,
    max_buffered_messages: int | None = None,
    finish_timeout: float = 5.0,
    raise_app_exceptions: bool = True,
) -> AsyncIterator[SSEStream]:
    """Call ``app`` in-process and read its event stream as it is produced.

    Works on asyncio and trio and with any ASGI app: it plays the server, so
    the app sees the same messages, in the same order, as it would behind
    uvicorn, including ``http.disconnect`` when the test leaves.

    Example:
        >>> async with stream(app, "/events") as sse:  # doctest: +SKIP
        ...     await sse.wait_started()
        ...     assert sse.status == 200
        ...     first = await sse.next_event()

    Args:
        app: The ASGI application.
        path: The request path, percent-encoded as on the wire; a ``?query``
            part is split off into the query string.
        method: The request method.
        headers: Request headers; a ``host: testserver`` header is added
            unless one is given.
        query_string: The query string without ``?``.
        http_version: The scope's ``http_version``.
        scope_overrides: Keys merged into the scope last, for anything else.
        max_buffered_messages: ``None`` for an unbounded queue; ``N`` to make
            the app's ``send()`` block while N received body messages are
            unread, to test what the app does with a reader that stalls.
        finish_timeout: Seconds the app gets to finish after the block exits
            and the client disconnects.
        raise_app_exceptions: Re-raise what the app raised when the block
            exits; pass ``False`` to inspect :attr:`SSEStream.app_exception`.

    Yields:
        The :class:`SSEStream` for this request.

    Raises:
        AssertionError: If the app did not finish within ``finish_timeout``
            after the disconnect; it is cancelled first.
        Exception: What the app raised, if ``raise_app_exceptions``.  An
            exception from the block itself takes precedence over both.
    """
    check_seconds("finish_timeout", finish_timeout, allow_zero=True)
    scope = _build_scope(
        path,
        method=method,
        headers=headers,
        query_string=query_string,
        http_version=http_version,
        scope_overrides=scope_overrides,
    )
    sse = SSEStream(app, scope, max_buffered_messages)
    body_error: Exception | None = None
    finished_in_time = True
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sse._run_app, name=f"ASGI app for {scope['path']!r}")
            try:
                yield sse
            except Exception as exc:
                # Held until the task group has closed: raised inside it, trio
                # would wrap the test's own failure in an ExceptionGroup.
                body_error = exc
            with anyio.move_on_after(finish_timeout):
                await sse._finish()
            finished_in_time = sse.finished
            if not finished_in_time:
                tg.cancel_scope.cancel()
    finally:
        sse._close()
    if body_error is not None:
        raise body_error
    if not finished_in_time:
        raise AssertionError(
            f"the app did not finish within finish_timeout={finish_timeout}s after the "
            "client disconnected, so it was cancelled"
        )
    if raise_app_exceptions and sse.app_exception is not None:
        raise sse.app_exception


# --------------------------------------------------------------------------- waiters


async def wait_for_state(response: EventSourceResponse, state: State) -> None:
    """Wait, without polling, until ``response``'s connection is in ``state`` or past it.

    ``CLOSED`` ends every wait (see :meth:`EventSourceResponse.wait_until`);
    bound it with ``anyio.fail_after`` in a test.
    """
    await response.wait_until(state)


async def wait_for_close(response: EventSourceResponse) -> CloseReason:
    """Wait, without polling, until ``response``'s connection is CLOSED; its close reason."""
    await response.wait_until(State.CLOSED)
    reason = response.close_reason
    assert reason is not None  # CLOSED always has one
    return reason
