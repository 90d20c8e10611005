"""The in-process streaming client in ``sse_sm.testing``, on asyncio and trio.

The apps here are raw ASGI callables written for each case, so the client is
tested against exactly the behaviour each test names (a well-behaved endless
stream, an app that breaks the protocol, one that hangs) and against nothing
from the library it will later be used to test.  Each app reports what it saw
through a record object created by its test, never through module state.
"""

from __future__ import annotations

import gc
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sse_sm.testing import Comment, Event, SSEStream, stream

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]


@dataclass
class _Record:
    """What an app observed, for the test to assert on afterwards."""

    saw_disconnect: bool = False
    sent: int = 0
    timed_out_at: int | None = None
    received: list[str] = field(default_factory=list)
    scope: dict[str, Any] = field(default_factory=dict)


async def _start(send: Send, status: int = 200) -> None:
    """Start an SSE response, as every app here does before its body."""
    await send({"type": "http.response.start", "status": status, "headers": SSE_HEADERS})


async def _body(send: Send, data: bytes, *, more: bool = True) -> None:
    """Send one body message; ``more=False`` ends the response."""
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def _wait_for_disconnect(receive: Receive) -> None:
    """Read ``receive()`` until the disconnect, skipping the request message."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


def _endless_app(record: _Record) -> ASGIApp:
    """Ticks forever and stops when the client disconnects, as a good SSE app does."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "http.request"
        await _start(send)
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                await _wait_for_disconnect(receive)
                record.saw_disconnect = True
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            while True:
                record.sent += 1
                await _body(send, f"id: {record.sent}\ndata: tick {record.sent}\n\n".encode())

    return app


def _finite_app(*chunks: bytes) -> ASGIApp:
    """Sends ``chunks`` as body messages, then the final empty body."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _start(send)
        for chunk in chunks:
            await _body(send, chunk)
        await _body(send, b"", more=False)

    return app


# --------------------------------------------------------------------------- streaming


async def test_endless_stream_reader_leaves_after_three_events() -> None:
    record = _Record()
    with anyio.fail_after(5):
        async with stream(_endless_app(record), "/events") as sse:
            got = [await sse.next_event() for _ in range(3)]
        assert got == [Event(f"tick {n}", id=str(n)) for n in (1, 2, 3)]
        assert record.saw_disconnect
        assert sse.finished
        assert sse.violations == []
        assert sse.app_exception is None
        assert not sse.complete
        assert sse.disconnected_at_message is not None
        assert sse.disconnected_at_message >= 3


async def test_finite_stream_events_end_and_complete_is_set() -> None:
    chunks = (b"data: a\n\n", b"event: b\ndata: 2\n\n", b"id: 3\ndata: c\n\n")
    with anyio.fail_after(5):
        async with stream(_finite_app(*chunks)) as sse:
            got = [event async for event in sse.events()]
            assert sse.complete
        assert got == [Event("a"), Event("2", event="b"), Event("c", id="3")]
        assert sse.body == b"".join(chunks)
        assert sse.violations == []


async def test_items_reports_pings_and_comments() -> None:
    app = _finite_app(b": ping\r\n\r\n", b": note\r\ndata: a\r\n\r\n", b":ping\r\n\r\n")
    with anyio.fail_after(5):
        async with stream(app) as sse:
            got = [item async for item in sse.items()]
    assert got == [Comment("ping"), Event("a", comments=("note",)), Comment("ping")]


async def test_events_skips_comment_blocks() -> None:
    with anyio.fail_after(5):
        async with stream(_finite_app(b": ping\n\n", b"data: a\n\n")) as sse:
            assert [event async for event in sse.events()] == [Event("a")]


async def test_status_and_headers_are_recorded() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [*SSE_HEADERS, (b"X-Custom", b"caf\xe9")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await _body(send, b"", more=False)

    with anyio.fail_after(5):
        async with stream(app) as sse:
            await sse.wait_started()
            assert sse.status == 201
            assert sse.headers == [
                ("content-type", "text/event-stream"),
                ("cache-control", "no-store"),
                ("X-Custom", "café"),
            ]


async def test_status_before_the_start_message_is_an_error() -> None:
    release = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()
        await _start(send)
        await _body(send, b"", more=False)

    with anyio.fail_after(5):
        async with stream(app) as sse:
            with pytest.raises(RuntimeError, match="wait_started"):
                _ = sse.status
            release.set()
            await sse.wait_started()
            assert sse.status == 200


async def test_wait_started_fails_when_the_app_never_starts_a_response() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return

    with anyio.fail_after(5):
        async with stream(app) as sse:
            with pytest.raises(AssertionError, match=r"without sending http\.response\.start"):
                await sse.wait_started()


async def test_chunk_boundary_inside_an_event_and_inside_crlf() -> None:
    release = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _start(send)
        for chunk in (b"data: hel", b"lo\r", b"\n\r", b"\n"):
            await _body(send, chunk)
        await release.wait()  # the first event must reach the test before this returns
        await _body(send, b"data: world\r\n\r\n", more=False)

    with anyio.fail_after(5):
        async with stream(app) as sse:
            assert await sse.next_event() == Event("hello")
            assert not sse.complete
            release.set()
            assert [item async for item in sse.items()] == [Event("world")]


async def test_events_end_when_the_app_returns_without_a_final_body() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _start(send)
        await _body(send, b"data: a\n\ndata: unfinished\n")

    with anyio.fail_after(5):
        async with stream(app) as sse:
            assert [event async for event in sse.events()] == [Event("a")]
            with pytest.raises(anyio.EndOfStream):
                await sse.next_event()
        assert not sse.complete
        assert sse.violations == []


async def test_leaving_an_iteration_early_needs_no_cleanup() -> None:
    """Breaking out must not leave an unfinished async generator for trio to warn about."""
    with anyio.fail_after(5):
        async with stream(_endless_app(_Record())) as sse:
            async for event in sse.events():
                assert event.data == "tick 1"
                break
            async for item in sse.items():
                assert item == Event("tick 2", id="2")
                break
            gc.collect()  # an abandoned async generator would warn here, failing the test
            assert (await sse.next_event()).data == "tick 3"


async def test_readers_close_like_async_generators() -> None:
    with anyio.fail_after(5):
        async with stream(_endless_app(_Record())) as sse:
            async with aclosing(sse.events()) as events:
                assert (await events.asend(None)).data == "tick 1"
            with pytest.raises(StopAsyncIteration):
                await events.__anext__()
            items = sse.items()
            with pytest.raises(KeyError):
                await items.athrow(KeyError("thrown in"))
            assert [item async for item in items] == []
            assert (await sse.next_event()).data == "tick 2"


# --------------------------------------------------------------------------- the request


async def test_scope_looks_like_a_real_servers() -> None:
    record = _Record()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        record.scope = dict(scope)
        await _start(send)
        await _body(send, b"", more=False)

    with anyio.fail_after(5):
        async with stream(
            app,
            "/a%20b?x=1&y=2",
            headers={"Accept": "text/event-stream"},
            scope_overrides={"root_path": "/api"},
        ) as sse:
            await sse.wait_finished()
    scope = record.scope
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}
    assert (scope["http_version"], scope["method"], scope["scheme"]) == ("1.1", "GET", "http")
    assert (scope["path"], scope["raw_path"]) == ("/a b", b"/a%20b")
    assert scope["query_string"] == b"x=1&y=2"
    assert scope["root_path"] == "/api"
    assert scope["headers"] == [(b"host", b"testserver"), (b"accept", b"text/event-stream")]
    assert scope["client"] == ("127.0.0.1", 50000)
    assert scope["server"] == ("testserver", 80)


async def test_headers_as_pairs_and_an_explicit_host() -> None:
    record = _Record()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        record.scope = dict(scope)
        await _start(send)
        await _body(send, b"", more=False)

    headers = [("Host", "example.org"), ("Last-Event-ID", "7")]
    with anyio.fail_after(5):
        async with stream(app, method="post", headers=headers, http_version="2") as sse:
            await sse.wait_finished()
    assert record.scope["headers"] == [(b"host", b"example.org"), (b"last-event-id", b"7")]
    assert (record.scope["method"], record.scope["http_version"]) == ("POST", "2")


async def _enter_with_two_query_strings(app: ASGIApp) -> None:
    """Enter with a query in both places, which is ambiguous and so refused."""
    async with stream(app, "/?a=1", query_string="b=2"):
        pass


async def test_query_in_path_and_query_string_together_is_refused() -> None:
    with anyio.fail_after(5), pytest.raises(ValueError, match="query"):
        await _enter_with_two_query_strings(_finite_app())


async def test_receive_reports_disconnect_once_the_response_is_complete() -> None:
    record = _Record()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _start(send)
        await _body(send, b"data: a\n\n", more=False)
        record.received.append((await receive())["type"])
        record.received.append((await receive())["type"])
        record.received.append((await receive())["type"])

    with anyio.fail_after(5):
        async with stream(app) as sse:
            await sse.wait_finished()
    assert record.received == ["http.request", "http.disconnect", "http.disconnect"]
    assert sse.disconnected_at_message == 1
    assert sse.violations == []


# --------------------------------------------------------------------------- disconnects


async def test_disconnect_is_immediate_and_idempotent() -> None:
    record = _Record()
    with anyio.fail_after(5):
        async with stream(_endless_app(record)) as sse:
            await sse.next_event()
            await sse.disconnect()
            await sse.disconnect()
            await sse.wait_finished()
            assert record.saw_disconnect
            # What was already queued can still be read; then the stream ends.
            async for _ in sse.events():
                pass
        assert sse.violations == []


async def test_send_after_disconnect_is_recorded_as_a_violation() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "http.request"
        await _start(send)
        await _body(send, b"data: a\n\n")
        assert (await receive())["type"] == "http.disconnect"
        await _body(send, b"data: late\n\n")  # a server would have nowhere to send this

    with anyio.fail_after(5):
        async with stream(app) as sse:
            assert await sse.next_event() == Event("a")
            await sse.disconnect()
            await sse.wait_finished()
    assert len(sse.violations) == 1
    assert "after receive() returned http.disconnect" in sse.violations[0]
    assert sse.disconnected_at_message == 1
    assert sse.body == b"data: a\n\n"


async def test_protocol_mistakes_are_recorded_not_raised() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "websocket.send", "text": "?"})
        await _body(send, b"data: early\n\n")
        await _start(send)
        await _start(send)
        await _body(send, b"data: a\n\n", more=False)
        await _body(send, b"data: after\n\n")

    with anyio.fail_after(5):
        async with stream(app) as sse:
            assert [event async for event in sse.events()] == [Event("a")]
            await sse.wait_finished()
    assert len(sse.violations) == 4
    assert "unexpected message type 'websocket.send'" in sse.violations[0]
    assert "before http.response.start" in sse.violations[1]
    assert "second http.response.start" in sse.violations[2]
    assert "after the final body message" in sse.violations[3]
    assert sse.status == 200
    assert sse.body == b"data: a\n\n"


async def test_malformed_start_messages_are_recorded_not_raised() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": "200"})
        await send({"type": "http.response.start", "status": 200, "headers": [("a", "b")]})
        pairs = ((name, value) for name, value in SSE_HEADERS)  # any iterable is allowed
        await send({"type": "http.response.start", "status": 200, "headers": pairs})
        await send({"type": "http.response.body", "body": "text", "more_body": False})
        await _body(send, b"", more=False)

    with anyio.fail_after(5):
        async with stream(app) as sse:
            await sse.wait_finished()
    assert len(sse.violations) == 3
    assert "status '200'" in sse.violations[0]
    assert "malformed headers" in sse.violations[1]
    assert "str body" in sse.violations[2]
    assert sse.headers == [("content-type", "text/event-stream"), ("cache-control", "no-store")]
    assert sse.complete


async def test_exception_in_the_block_propagates_and_the_app_is_disconnected() -> None:
    record = _Record()

    async def body() -> None:
        async with stream(_endless_app(record)) as sse:
            await sse.next_event()
            raise KeyError("from the test")

    with anyio.fail_after(5), pytest.raises(KeyError, match="from the test"):
        await body()
    assert record.saw_disconnect


# --------------------------------------------------------------------------- app failures


def _failing_app(*, in_task_group: bool) -> ASGIApp:
    """Sends one event, then raises, optionally from a task group that wraps the error."""

    async def fail() -> None:
        raise ValueError("boom")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _start(send)
        await _body(send, b"data: a\n\n")
        if in_task_group:
            async with anyio.create_task_group() as tg:
                tg.start_soon(fail)
        else:
            await fail()

    return app


async def _read_all_of(app: ASGIApp) -> list[Event]:
    """A whole ``async with`` in one awaitable, so ``pytest.raises`` can hold it."""
    async with stream(app) as sse:
        return [event async for event in sse.events()]


@pytest.mark.parametrize("in_task_group", [False, True], ids=["plain", "task_group"])
async def test_app_exception_propagates_unwrapped(in_task_group: bool) -> None:
    with anyio.fail_after(5), pytest.raises(ValueError, match="boom"):
        await _read_all_of(_failing_app(in_task_group=in_task_group))


async def test_app_exception_can_be_inspected_instead() -> None:
    with anyio.fail_after(5):
        async with stream(_failing_app(in_task_group=True), raise_app_exceptions=False) as sse:
            assert await sse.next_event() == Event("a")
            with pytest.raises(anyio.EndOfStream):
                await sse.next_event()
        assert isinstance(sse.app_exception, ValueError)
        assert sse.finished


async def _stay_in(app: ASGIApp, finish_timeout: float) -> None:
    """Read one event and leave, so the exit's disconnect-and-wait is what is tested."""
    async with stream(app, finish_timeout=finish_timeout) as sse:
        await sse.next_event()


async def test_app_that_ignores_disconnect_fails_at_exit_within_finish_timeout() -> None:
    cancelled = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _start(send)
        await _body(send, b"data: a\n\n")
        try:
            await anyio.sleep_forever()  # never looks at receive()
        finally:
            cancelled.set()

    with anyio.fail_after(5):
        began = anyio.current_time()
        with pytest.raises(AssertionError, match=r"finish_timeout=0\.2s"):
            await _stay_in(app, finish_timeout=0.2)
        assert 0.2 <= anyio.current_time() - began < 3
        assert cancelled.is_set()


# --------------------------------------------------------------------------- back-pressure


async def test_max_buffered_messages_blocks_send_for_a_stalled_reader() -> None:
    record = _Record()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _start(send)
        for n in range(1, 6):
            with anyio.move_on_after(0.1) as scope_:
                await _body(send, f"data: {n}\n\n".encode())
            if scope_.cancelled_caught:
                record.timed_out_at = n
                return
            record.sent = n

    with anyio.fail_after(5):
        async with stream(app, max_buffered_messages=2) as sse:
            await sse.wait_finished()  # the reader reads nothing until the app gives up
            assert [event async for event in sse.events()] == [Event("1"), Event("2")]
    assert (record.sent, record.timed_out_at) == (2, 3)


async def test_unbounded_buffer_never_blocks_send() -> None:
    with anyio.fail_after(5):
        async with stream(_finite_app(*[b"data: x\n\n"] * 50)) as sse:
            await sse.wait_finished()
            assert sse.complete
            assert len([event async for event in sse.events()]) == 50


async def test_zero_buffer_hands_each_message_over_directly() -> None:
    chunks = [f"data: {n}\n\n".encode() for n in range(5)]
    with anyio.fail_after(5):
        async with stream(_finite_app(*chunks), max_buffered_messages=0) as sse:
            got = [event.data async for event in sse.events()]
    assert got == [str(n) for n in range(5)]


async def test_disconnect_releases_a_send_blocked_on_a_full_buffer() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _start(send)
        for n in range(5):
            await _body(send, f"data: {n}\n\n".encode())  # blocks at the second message
        await _wait_for_disconnect(receive)

    with anyio.fail_after(5):
        async with stream(app, max_buffered_messages=1) as sse:
            await sse.wait_started()
            await anyio.wait_all_tasks_blocked()  # the app is now stuck in send()
            assert sse.body == b"data: 0\n\ndata: 1\n\n"
            await sse.disconnect()
            await sse.wait_finished()
    assert sse.violations == []
    # Everything the app sent is on record, though the reader never read it.
    assert sse.body == b"".join(f"data: {n}\n\n".encode() for n in range(5))


async def test_stream_object_is_usable_after_exit() -> None:
    with anyio.fail_after(5):
        async with stream(_finite_app(b"data: a\n\n")) as sse:
            await sse.wait_finished()
        assert isinstance(sse, SSEStream)
        assert [event async for event in sse.events()] == []  # closed: nothing more to read
        assert "complete=True" in repr(sse)


async def test_a_send_made_before_the_disconnect_is_delivered_is_no_violation() -> None:
    """Regression: the message is judged when the app hands it over, not after send's checkpoint.

    The app's listener is already blocked in ``receive()`` when the client
    leaves; in the same step, before the listener can run, the app calls
    ``send``.  The listener receives the disconnect during that send's
    checkpoint.  The message was sent before the app could know, so it is not
    a protocol violation.  (Judged after the checkpoint, it was.)
    """
    streams: list[SSEStream] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()  # the request body

        async def listen() -> None:
            await receive()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(listen)
            await anyio.wait_all_tasks_blocked()  # the listener waits in receive()
            await streams[0].disconnect()  # does not yield
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    with anyio.fail_after(5):
        async with stream(app) as sse:
            streams.append(sse)
            await sse.wait_finished()
    assert sse.disconnected_at_message is not None
    assert sse.violations == []
