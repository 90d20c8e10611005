"""EventSourceResponse as a whole: headers, arguments, pings, items, sources, callbacks.

The per-arc behaviour of the state machine is in ``test_connection_arcs.py``;
this module covers what a user of the response sees around it: the headers it
sends, the arguments it refuses, how each kind of item and source is written,
the callbacks it calls, drains through a Starlette app, and what it reports.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import sse_starlette
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from sse_sm import (
    CloseReason,
    DrainCoordinator,
    EventSourceResponse,
    ServerSentEvent,
    State,
    Transition,
    TransitionError,
    Trigger,
    drain_coordinator_for,
)
from sse_sm.testing import Comment, Event, SSEStream, stream
from tests._support import http_scope, never_receive, websocket_scope

# --------------------------------------------------------------------------- helpers


class SSEApp:
    """A Starlette app with one SSE route at ``/sse`` that keeps the responses it returned."""

    def __init__(self, make: Callable[[], EventSourceResponse]) -> None:
        self.responses: list[EventSourceResponse] = []

        async def endpoint(request: Request) -> Response:
            response = make()
            self.responses.append(response)
            return response

        self.app = Starlette(routes=[Route("/sse", endpoint)])

    @property
    def response(self) -> EventSourceResponse:
        assert self.responses, "the endpoint was never called"
        return self.responses[-1]


async def finite(*items: Any) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def one_then_wait(release: anyio.Event, *after: Any) -> AsyncIterator[Any]:
    """``"first"``, then nothing until ``release`` is set, then ``after``."""
    yield "first"
    await release.wait()
    for item in after:
        yield item


def header_names(headers: list[tuple[str, str]]) -> list[str]:
    return [name.lower() for name, _ in headers]


def decoded(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {"X-Request-Id": "42"},
        {"X-Request-Id": "42", "Cache-Control": "public, max-age=1"},
        {"cache-control": "no-cache", "x-accel-buffering": "yes", "Connection": "close"},
    ],
    ids=["none", "user-header", "cache-control-override", "overrides-forced-headers"],
)
def test_default_headers_match_sse_starlette(headers: dict[str, str] | None) -> None:
    async def empty() -> AsyncIterator[str]:
        return
        yield  # pragma: no cover

    ours = EventSourceResponse(empty(), headers=headers).raw_headers
    theirs = sse_starlette.EventSourceResponse(empty(), headers=headers).raw_headers
    assert ours == theirs
    if headers is None:
        assert ours == [
            (b"cache-control", b"no-store"),
            (b"connection", b"keep-alive"),
            (b"x-accel-buffering", b"no"),
            (b"content-type", b"text/event-stream; charset=utf-8"),
        ]


async def test_changing_one_responses_headers_leaves_the_others_alone() -> None:
    # Responses built without headers share their (immutable) header pairs;
    # each must still own its list, or a cookie set on one would reach all.
    first = EventSourceResponse(finite("x"), ping=0)
    first.set_cookie("session", "secret")
    first.headers["X-Only-First"] = "1"
    first.raw_headers.append((b"x-appended", b"1"))
    sse_app = SSEApp(lambda: EventSourceResponse(finite("x"), ping=0))
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            await sse.wait_finished()
    names = header_names(sse.headers)
    assert not {"set-cookie", "x-only-first", "x-appended"} & set(names)
    assert names == ["cache-control", "connection", "x-accel-buffering", "content-type"]

    class Plain(EventSourceResponse):
        media_type = "text/plain"

    assert ("content-type", "text/plain; charset=utf-8") in decoded(
        Plain(finite("x"), media_type=None).raw_headers
    ), "the shared pairs are per class and media type"
    assert ("content-type", "text/event-stream; charset=utf-8") in decoded(
        EventSourceResponse(finite("x")).raw_headers
    )


def test_user_cache_control_is_kept() -> None:
    response = EventSourceResponse(finite(), headers={"Cache-Control": "public, max-age=5"})
    assert response.headers["cache-control"] == "public, max-age=5"
    assert response.headers["connection"] == "keep-alive"
    assert response.headers["x-accel-buffering"] == "no"


@pytest.mark.parametrize(
    ("http_version", "has_connection"),
    [("1.0", True), ("1.1", True), ("2", False), ("3", False)],
)
async def test_connection_header_only_on_http_1(http_version: str, has_connection: bool) -> None:
    sse_app = SSEApp(lambda: EventSourceResponse(finite("x"), headers={"X-A": "1"}, ping=0))
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse", http_version=http_version) as sse:
            await sse.wait_started()
            await sse.wait_finished()
    expected = decoded(sse_app.response.raw_headers)
    if not has_connection:
        expected = [(k, v) for k, v in expected if k != "connection"]
    assert sse.headers == expected, "the other headers keep their order"
    assert ("connection" in header_names(sse.headers)) is has_connection
    assert sse.complete


async def test_custom_status_code_and_media_type() -> None:
    sse_app = SSEApp(
        lambda: EventSourceResponse(finite("x"), status_code=201, media_type="text/plain", ping=0)
    )
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            await sse.wait_started()
            assert sse.status == 201
            assert ("content-type", "text/plain; charset=utf-8") in sse.headers
            assert [e.data async for e in sse.events()] == ["x"]


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("sep", ["", "\n\n", "\r\n\r\n", " ", "x", "\t", 1, b"\n"])
def test_bad_sep_is_refused(sep: Any) -> None:
    with pytest.raises(ValueError, match="sep"):
        EventSourceResponse(finite(), sep=sep)


BAD_SECONDS: list[tuple[Any, type[Exception]]] = [
    (-1, ValueError),
    (-0.001, ValueError),
    (math.nan, ValueError),
    (True, TypeError),
    (False, TypeError),
    ("5", TypeError),
    ([1], TypeError),
]


@pytest.mark.parametrize(("value", "error"), BAD_SECONDS)
def test_bad_ping_is_refused(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="ping"):
        EventSourceResponse(finite(), ping=value)


@pytest.mark.parametrize(("value", "error"), BAD_SECONDS)
def test_ping_interval_setter_validates(value: Any, error: type[Exception]) -> None:
    response = EventSourceResponse(finite(), ping=3)
    with pytest.raises(error, match="ping"):
        response.ping_interval = value
    assert response.ping_interval == 3, "a refused value leaves the interval unchanged"
    response.ping_interval = 0.25
    assert response.ping_interval == 0.25


def test_ping_defaults_and_accepts_floats_and_zero() -> None:
    assert EventSourceResponse(finite()).ping_interval == 15
    assert EventSourceResponse(finite(), ping=0).ping_interval == 0
    assert EventSourceResponse(finite(), ping=0.5).ping_interval == 0.5


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (0.0, ValueError), *BAD_SECONDS])
def test_bad_send_timeout_is_refused(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="send_timeout"):
        EventSourceResponse(finite(), send_timeout=value)


@pytest.mark.parametrize(("value", "error"), BAD_SECONDS)
def test_bad_shutdown_grace_period_is_refused(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="shutdown_grace_period"):
        EventSourceResponse(finite(), shutdown_grace_period=value)


@pytest.mark.parametrize(("value", "error"), BAD_SECONDS)
def test_bad_cleanup_timeout_is_refused(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="cleanup_timeout"):
        EventSourceResponse(finite(), cleanup_timeout=value)


def test_zero_and_none_are_accepted_where_documented() -> None:
    EventSourceResponse(finite(), shutdown_grace_period=0, cleanup_timeout=0)
    EventSourceResponse(finite(), send_timeout=None, cleanup_timeout=None)
    EventSourceResponse(finite(), send_timeout=0.001)


@pytest.mark.parametrize(
    "name",
    [
        "ping_message_factory",
        "data_sender_callable",
        "client_close_handler_callable",
        "on_transition",
    ],
)
@pytest.mark.parametrize("value", [1, "callback", object()])
def test_non_callable_callbacks_are_refused(name: str, value: object) -> None:
    kwargs: dict[str, Any] = {name: value}
    with pytest.raises(TypeError, match=name):
        EventSourceResponse(finite(), **kwargs)


@pytest.mark.parametrize(
    "content", [42, None, "data: text", b"data: bytes", {"data": 1}, 1.5, object()]
)
def test_content_that_is_not_an_iterable_of_events_is_refused(content: Any) -> None:
    with pytest.raises(TypeError, match="content"):
        EventSourceResponse(content)


def test_drain_coordinator_must_be_a_coordinator() -> None:
    with pytest.raises(TypeError, match="drain_coordinator"):
        EventSourceResponse(finite(), drain_coordinator=object())  # type: ignore[arg-type]


def test_class_constants_match_sse_starlette() -> None:
    assert EventSourceResponse.DEFAULT_PING_INTERVAL == 15
    assert EventSourceResponse.DEFAULT_SEPARATOR == "\r\n"
    assert EventSourceResponse.DEFAULT_CLEANUP_TIMEOUT == 30.0
    old = sse_starlette.EventSourceResponse
    assert EventSourceResponse.DEFAULT_PING_INTERVAL == old.DEFAULT_PING_INTERVAL
    assert EventSourceResponse.DEFAULT_SEPARATOR == old.DEFAULT_SEPARATOR
    assert EventSourceResponse.DEFAULT_CLEANUP_TIMEOUT == old.DEFAULT_CLEANUP_TIMEOUT


@pytest.mark.parametrize("force", [False, True])
def test_enable_compression_is_refused(force: bool) -> None:
    response = EventSourceResponse(finite())
    with pytest.raises(NotImplementedError, match="Compression"):
        response.enable_compression(force=force)


def test_attributes_sse_starlette_users_read() -> None:
    source = finite("x")
    response = EventSourceResponse(source, sep="\n")
    assert response.sep == "\n"
    assert response.body_iterator is not None
    assert response.active is True
    assert response.status_code == 200
    assert response.media_type == "text/event-stream"
    assert response.background is None
    assert response.send_timeout is None


# --------------------------------------------------------------------------- pings


@pytest.mark.parametrize("how", ["constructor", "assignment"])
async def test_ping_zero_sends_no_ping_over_a_quiet_period(how: str) -> None:
    release = anyio.Event()

    def make() -> EventSourceResponse:
        if how == "constructor":
            return EventSourceResponse(one_then_wait(release, "last"), ping=0)
        response = EventSourceResponse(one_then_wait(release, "last"), ping=0.02)
        response.ping_interval = 0
        return response

    sse_app = SSEApp(make)
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            assert (await sse.next_event()).data == "first"
            await anyio.sleep(0.25)  # time is the subject: twelve intervals of the old ping
            release.set()
            items = [item async for item in sse.items()]
    assert items == [Event(data="last")]
    assert sse.body == b"data: first\r\n\r\ndata: last\r\n\r\n"
    assert sse_app.response.statistics().pings_sent == 0


async def test_ping_interval_assignment_before_the_call_takes_effect() -> None:
    release = anyio.Event()

    def make() -> EventSourceResponse:
        response = EventSourceResponse(one_then_wait(release))  # default: 15 s
        response.ping_interval = 0.02
        return response

    sse_app = SSEApp(make)
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            seen = [item async for item in _until_comment(sse)]
            release.set()
    assert isinstance(seen[-1], Comment)
    assert seen[-1].text.startswith("ping - ")
    assert sse_app.response.statistics().pings_sent >= 1


async def _until_comment(sse: SSEStream) -> AsyncIterator[Event | Comment]:
    """The stream's items up to and including the first comment block (a ping)."""
    async for item in sse.items():
        yield item
        if isinstance(item, Comment):
            return


async def test_ping_goes_out_only_after_a_quiet_interval() -> None:
    async def busy() -> AsyncIterator[str]:
        for n in range(25):  # one event every 20 ms for about half a second
            yield str(n)
            await anyio.sleep(0.02)

    busy_app = SSEApp(lambda: EventSourceResponse(busy(), ping=0.1))
    with anyio.fail_after(5):
        async with stream(busy_app.app, "/sse") as sse:
            items = [item async for item in sse.items()]
    assert not any(isinstance(item, Comment) for item in items), "traffic keeps pings away"
    assert len(items) == 25
    assert busy_app.response.statistics().pings_sent == 0

    release = anyio.Event()
    quiet_app = SSEApp(lambda: EventSourceResponse(one_then_wait(release), ping=0.1))
    with anyio.fail_after(5):
        async with stream(quiet_app.app, "/sse") as sse:
            await sse.next_event()
            event_seen_at = anyio.current_time()
            seen = [item async for item in _until_comment(sse)]
            quiet_for = anyio.current_time() - event_seen_at
            release.set()
    assert isinstance(seen[-1], Comment)
    assert quiet_for >= 0.05, f"a ping came {quiet_for:.3f} s after an event (ping=0.1)"


async def test_ping_message_factory_output_is_sent_with_its_own_sep() -> None:
    release = anyio.Event()
    calls: list[int] = []

    def factory() -> ServerSentEvent:
        calls.append(1)
        return ServerSentEvent(comment="keep-alive", sep="\n")

    sse_app = SSEApp(
        lambda: EventSourceResponse(
            one_then_wait(release), ping=0.02, sep="\r\n", ping_message_factory=factory
        )
    )
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            seen = [item async for item in _until_comment(sse)]
            release.set()
            await sse.wait_finished()
    assert seen[-1] == Comment("keep-alive")
    assert sse.body.startswith(b"data: first\r\n\r\n: keep-alive\n\n")
    stats = sse_app.response.statistics()
    assert stats.pings_sent == len(calls) >= 1
    assert sse.body.count(b": keep-alive\n\n") == stats.pings_sent


@pytest.mark.parametrize("sep", ["\r\n", "\r", "\n"], ids=["crlf", "cr", "lf"])
async def test_default_ping_bytes(sep: str) -> None:
    release = anyio.Event()
    sse_app = SSEApp(lambda: EventSourceResponse(one_then_wait(release), ping=0.02, sep=sep))
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            seen = [item async for item in _until_comment(sse)]
            release.set()
            await sse.wait_finished()
    assert isinstance(seen[-1], Comment)
    first = f"data: first{sep}{sep}".encode()
    assert sse.body.startswith(first)
    s = re.escape(sep.encode())
    utc_datetime = rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?\+00:00"
    ping = rb": ping - " + utc_datetime + s + s
    assert re.fullmatch(rb"(" + ping + rb")+", sse.body[len(first) :]), sse.body


# --------------------------------------------------------------------------- sep and items


async def test_sep_applies_to_str_and_dict_items_but_not_to_server_sent_events() -> None:
    items: list[Any] = [
        "plain",
        "two\nlines",
        {"data": "d", "event": "e", "id": "1"},
        ServerSentEvent("own", sep="\r\n"),
        {"data": "d", "sep": "\r"},  # a dict's own sep is replaced, as in sse-starlette
    ]
    sse_app = SSEApp(lambda: EventSourceResponse(finite(*items), sep="\n", ping=0))
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            await sse.wait_finished()
    assert sse.body == (
        b"data: plain\n\n"
        b"data: two\ndata: lines\n\n"
        b"id: 1\nevent: e\ndata: d\n\n"
        b"data: own\r\n\r\n"
        b"data: d\n\n"
    )


async def test_every_kind_of_item_is_written() -> None:
    as_dict: dict[str, Any] = {"data": "from a dict", "event": "update", "id": "7", "retry": 10}
    snapshot = dict(as_dict)
    items: list[Any] = [
        "text",
        b"data: raw bytes\r\n\r\n",
        memoryview(b"data: a memoryview\r\n\r\n"),
        bytearray(b"data: a bytearray\r\n\r\n"),
        as_dict,
        ServerSentEvent("an event", event="kind", id="8", comment="note"),
        42,
    ]
    sse_app = SSEApp(lambda: EventSourceResponse(finite(*items), ping=0))
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            events = [e async for e in sse.events()]
    assert sse.body == (
        b"data: text\r\n\r\n"
        b"data: raw bytes\r\n\r\n"
        b"data: a memoryview\r\n\r\n"
        b"data: a bytearray\r\n\r\n"
        b"id: 7\r\nevent: update\r\ndata: from a dict\r\nretry: 10\r\n\r\n"
        b": note\r\nid: 8\r\nevent: kind\r\ndata: an event\r\n\r\n"
        b"data: 42\r\n\r\n"
    )
    assert [e.data for e in events][-1] == "42"
    assert as_dict == snapshot, "the caller's dict is not mutated"
    assert "sep" not in as_dict
    assert sse_app.response.statistics().events_sent == len(items)


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        ({"data": "x", "colour": "red"}, TypeError, "colour"),
        ({"data": "x", "id": "a\nb"}, ValueError, "id"),
        ({"data": "x", "event": "a\rb"}, ValueError, "event"),
        ({"data": "x", "retry": -1}, ValueError, "retry"),
    ],
    ids=["unknown-key", "id-newline", "event-cr", "negative-retry"],
)
async def test_invalid_dict_item_closes_with_error_before_any_byte_of_it(
    bad: dict[str, Any], error: type[Exception], match: str
) -> None:
    closed: list[bool] = []

    async def source() -> AsyncIterator[Any]:
        try:
            yield {"data": "before", "id": "1"}
            yield bad
            yield "never"
        finally:
            closed.append(True)

    sse_app = SSEApp(lambda: EventSourceResponse(source(), ping=0))
    with anyio.fail_after(5), pytest.raises(error, match=match):
        async with stream(sse_app.app, "/sse") as sse:
            await sse.wait_finished()
    assert sse.body == b"id: 1\r\ndata: before\r\n\r\n", "the stream ends at an event boundary"
    assert not sse.complete, "an error is not dressed up as a clean end"
    response = sse_app.response
    assert response.close_reason is CloseReason.ERROR
    assert response.history[-1].trigger is Trigger.FAILED
    assert closed == [True]


# --------------------------------------------------------------------------- sync sources


async def test_plain_list_is_a_source() -> None:
    sse_app = SSEApp(
        lambda: EventSourceResponse(["a", {"data": "b", "id": "2"}, ServerSentEvent("c")], ping=0)
    )
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            assert [(e.data, e.id) async for e in sse.events()] == [
                ("a", ""),
                ("b", "2"),
                ("c", "2"),
            ]
    assert sse.complete
    assert sse_app.response.close_reason is CloseReason.COMPLETED


async def test_sync_generator_finally_runs_at_the_end() -> None:
    finished = threading.Event()

    def numbers() -> Iterator[dict[str, Any]]:
        try:
            for n in range(3):
                yield {"data": n}
        finally:
            finished.set()

    sse_app = SSEApp(lambda: EventSourceResponse(numbers(), ping=0))
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            assert [e.data async for e in sse.events()] == ["0", "1", "2"]
    assert finished.is_set()
    assert sse_app.response.close_reason is CloseReason.COMPLETED


async def test_sync_generator_finally_runs_after_a_disconnect() -> None:
    finished = threading.Event()

    def endless() -> Iterator[str]:
        try:
            n = 0
            while True:
                yield str(n)
                n += 1
                time.sleep(0.001)
        finally:
            finished.set()

    sse_app = SSEApp(lambda: EventSourceResponse(endless(), ping=0))
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            assert (await sse.next_event()).data == "0"
            assert (await sse.next_event()).data == "1"
            await sse.disconnect()
            await sse.wait_finished()
        assert await anyio.to_thread.run_sync(finished.wait, 3)
    assert sse_app.response.close_reason is CloseReason.CLIENT_DISCONNECTED


async def test_blocking_sync_next_does_not_delay_a_disconnect() -> None:
    blocking = threading.Event()
    finished = threading.Event()

    def slow() -> Iterator[str]:
        try:
            yield "first"
            blocking.set()
            time.sleep(1.0)  # blocks the worker thread, not the loop
            yield "never sent"
        finally:
            finished.set()

    sse_app = SSEApp(lambda: EventSourceResponse(slow(), ping=0))
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            assert (await sse.next_event()).data == "first"
            assert await anyio.to_thread.run_sync(blocking.wait, 3)
            left_at = anyio.current_time()
            await sse.disconnect()
            await sse.wait_finished()
            took = anyio.current_time() - left_at
        assert took < 0.5, f"the response took {took:.3f} s to finish after the disconnect"
        assert not finished.is_set(), "next() is still blocked in its worker thread"
        assert await anyio.to_thread.run_sync(finished.wait, 3), "the finally ran when it returned"
    assert sse.body == b"data: first\r\n\r\n"
    assert sse_app.response.close_reason is CloseReason.CLIENT_DISCONNECTED


# --------------------------------------------------------------------------- data sender


async def test_memory_stream_fed_by_data_sender_callable() -> None:
    """The MCP SDK's pattern: the sender writes into a memory stream, then closes it."""

    def make() -> EventSourceResponse:
        send_stream, receive_stream = anyio.create_memory_object_stream[dict[str, Any]](0)

        async def sender() -> None:
            async with send_stream:
                for n in range(3):
                    await send_stream.send({"event": "message", "data": f"payload {n}"})

        return EventSourceResponse(receive_stream, data_sender_callable=sender, ping=0)

    sse_app = SSEApp(make)
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            events = [e async for e in sse.events()]
    assert [(e.event, e.data) for e in events] == [("message", f"payload {n}") for n in range(3)]
    assert sse.complete
    assert sse_app.response.close_reason is CloseReason.COMPLETED


async def test_data_sender_that_raises_closes_with_error() -> None:
    class SenderError(Exception):
        pass

    def make() -> EventSourceResponse:
        send_stream, receive_stream = anyio.create_memory_object_stream[str](1)

        async def sender() -> None:
            async with send_stream:
                await send_stream.send("one")
                raise SenderError("the upstream session broke")

        return EventSourceResponse(receive_stream, data_sender_callable=sender, ping=0)

    sse_app = SSEApp(make)
    with anyio.fail_after(5), pytest.raises(SenderError, match="upstream"):
        async with stream(sse_app.app, "/sse") as sse:
            await sse.wait_finished()
    assert sse_app.response.close_reason is CloseReason.ERROR
    assert "SenderError" in sse_app.response.history[-1].reason
    assert not sse.complete


# --------------------------------------------------------------------------- client close handler


async def test_client_close_handler_is_awaited_once_on_disconnect() -> None:
    messages: list[Message] = []
    handled = anyio.Event()

    async def on_close(message: Message) -> None:
        messages.append(message)
        await anyio.lowlevel.checkpoint()
        handled.set()

    release = anyio.Event()
    sse_app = SSEApp(
        lambda: EventSourceResponse(
            one_then_wait(release), client_close_handler_callable=on_close, ping=0
        )
    )
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            await sse.next_event()
            await sse.disconnect()
            await handled.wait()
            await sse.wait_finished()
    assert messages == [{"type": "http.disconnect"}]
    assert sse_app.response.close_reason is CloseReason.CLIENT_DISCONNECTED


async def test_client_close_handler_gets_the_servers_own_disconnect_message() -> None:
    messages: list[Message] = []
    leave = anyio.Event()
    server_message: Message = {"type": "http.disconnect", "reason": "peer reset"}

    async def on_close(message: Message) -> None:
        messages.append(message)

    async def receive() -> Message:
        await leave.wait()
        return server_message

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and message["body"]:
            leave.set()

    release = anyio.Event()
    response = EventSourceResponse(
        one_then_wait(release), client_close_handler_callable=on_close, ping=0
    )
    with anyio.fail_after(5):
        await response(http_scope(), receive, send)
    assert messages == [server_message]
    assert messages[0] is server_message
    assert response.close_reason is CloseReason.CLIENT_DISCONNECTED


async def test_client_close_handler_is_awaited_once_when_send_raises_oserror() -> None:
    messages: list[Message] = []

    async def on_close(message: Message) -> None:
        messages.append(message)

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise ConnectionResetError("peer went away")

    response = EventSourceResponse(finite("a", "b"), client_close_handler_callable=on_close, ping=0)
    with anyio.fail_after(5):
        await response(http_scope(), never_receive, send)
    assert messages == [{"type": "http.disconnect"}]
    assert response.close_reason is CloseReason.CLIENT_DISCONNECTED


async def test_a_raising_client_close_handler_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def on_close(message: Message) -> None:
        raise RuntimeError("handler broke")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise ConnectionResetError("peer went away")

    response = EventSourceResponse(finite("a"), client_close_handler_callable=on_close, ping=0)
    with anyio.fail_after(5):
        await response(http_scope(), never_receive, send)  # does not raise
    assert response.close_reason is CloseReason.CLIENT_DISCONNECTED
    logged = [r for r in caplog.records if "raised after the connection closed" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].levelno == logging.ERROR
    assert logged[0].exc_info is not None
    assert "handler broke" in str(logged[0].exc_info[1])


async def test_client_close_handler_is_not_called_on_a_normal_end() -> None:
    messages: list[Message] = []

    async def on_close(message: Message) -> None:
        messages.append(message)

    sse_app = SSEApp(
        lambda: EventSourceResponse(
            finite("a", "b"), client_close_handler_callable=on_close, ping=0
        )
    )
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            assert len([e async for e in sse.events()]) == 2
            await sse.wait_finished()
    assert messages == []
    assert sse_app.response.close_reason is CloseReason.COMPLETED


# --------------------------------------------------------------------------- shutdown


def farewell_app(*, grace: float = 5) -> tuple[SSEApp, list[anyio.Event]]:
    """An app whose source says hello, waits for the shutdown event, then says goodbye."""
    shutdown_events: list[anyio.Event] = []

    async def cooperative(shutdown: anyio.Event) -> AsyncIterator[Any]:
        yield "hello"
        await shutdown.wait()
        yield {"event": "farewell", "data": "bye"}

    def make() -> EventSourceResponse:
        shutdown = anyio.Event()
        shutdown_events.append(shutdown)
        return EventSourceResponse(
            cooperative(shutdown), shutdown_event=shutdown, shutdown_grace_period=grace, ping=0
        )

    return SSEApp(make), shutdown_events


async def test_request_shutdown_drains_through_the_starlette_app() -> None:
    sse_app, shutdown_events = farewell_app()
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            assert (await sse.next_event()).data == "hello"
            sse.request_shutdown("deploy")
            farewell = await sse.next_event()
            await sse.wait_finished()
    assert (farewell.event, farewell.data) == ("farewell", "bye")
    assert shutdown_events[0].is_set()
    response = sse_app.response
    assert response.close_reason is CloseReason.DRAINED
    assert [t.trigger for t in response.history] == [
        Trigger.STARTED,
        Trigger.SHUTDOWN_REQUESTED,
        Trigger.SOURCE_EXHAUSTED,
    ]
    assert response.history[1].reason == "deploy"
    assert sse.complete
    assert sse.violations == []


async def test_draining_one_app_leaves_another_streaming() -> None:
    first, first_events = farewell_app()
    second, second_events = farewell_app()
    with anyio.fail_after(5):
        async with (
            stream(first.app, "/sse") as draining,
            stream(second.app, "/sse") as other,
        ):
            await draining.next_event()
            await other.next_event()
            draining.request_shutdown()
            assert (await draining.next_event()).event == "farewell"
            await draining.wait_finished()
            assert first.response.close_reason is CloseReason.DRAINED
            # The other app's coordinator was never asked: no global latch.
            assert not drain_coordinator_for(second.app).draining
            assert not second_events[0].is_set()
            assert second.response.state is State.STREAMING
            await other.disconnect()
            await other.wait_finished()
    assert second.response.close_reason is CloseReason.CLIENT_DISCONNECTED
    assert first_events[0].is_set()


async def test_stream_started_after_a_drain_request_drains_at_once_until_reset() -> None:
    sse_app, shutdown_events = farewell_app()
    coordinator = drain_coordinator_for(sse_app.app)
    coordinator.request_drain("already shutting down")
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            assert [e.data async for e in sse.events()] == ["hello", "bye"]
            await sse.wait_finished()
        drained = sse_app.response
        assert drained.close_reason is CloseReason.DRAINED
        assert drained.history[1].reason == "already shutting down"

        coordinator.reset()
        async with stream(sse_app.app, "/sse") as sse:
            assert (await sse.next_event()).data == "hello"
            assert sse_app.response.state is State.STREAMING
            assert not shutdown_events[-1].is_set()
            await sse.disconnect()
            await sse.wait_finished()
        normal = sse_app.response
        assert normal is not drained
        assert normal.close_reason is CloseReason.CLIENT_DISCONNECTED
    assert len(shutdown_events) == 2
    assert coordinator.open_streams == 0


async def test_explicit_coordinator_overrides_the_apps() -> None:
    coordinator = DrainCoordinator()

    async def cooperative(shutdown: anyio.Event) -> AsyncIterator[str]:
        yield "hello"
        await shutdown.wait()
        yield "bye"

    def make() -> EventSourceResponse:
        shutdown = anyio.Event()
        return EventSourceResponse(
            cooperative(shutdown),
            shutdown_event=shutdown,
            shutdown_grace_period=5,
            drain_coordinator=coordinator,
            ping=0,
        )

    sse_app = SSEApp(make)
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            await sse.next_event()
            assert coordinator.open_streams == 1
            assert drain_coordinator_for(sse_app.app).open_streams == 0
            coordinator.request_drain("explicit")
            assert (await sse.next_event()).data == "bye"
            await sse.wait_finished()
    assert sse_app.response.close_reason is CloseReason.DRAINED
    assert sse_app.response.history[1].reason == "explicit"


# --------------------------------------------------------------------------- transitions and logs


async def test_on_transition_receives_each_transition_in_order() -> None:
    seen: list[Transition] = []
    sse_app = SSEApp(lambda: EventSourceResponse(finite("a"), on_transition=seen.append, ping=0))
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            await sse.wait_finished()
    assert seen == list(sse_app.response.history)
    assert [(t.source, t.trigger, t.target) for t in seen] == [
        (State.OPEN, Trigger.STARTED, State.STREAMING),
        (State.STREAMING, Trigger.SOURCE_EXHAUSTED, State.CLOSED),
    ]
    assert seen[0].at <= seen[1].at


async def test_on_transition_that_raises_does_not_break_the_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(transition: Transition) -> None:
        raise RuntimeError(f"observer broke on {transition.trigger.name}")

    sse_app = SSEApp(lambda: EventSourceResponse(finite("a", "b"), on_transition=broken, ping=0))
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            assert [e.data async for e in sse.events()] == ["a", "b"]
            await sse.wait_finished()
    assert sse.complete
    assert sse.app_exception is None
    assert sse_app.response.close_reason is CloseReason.COMPLETED
    failures = [r for r in caplog.records if "on_transition" in r.getMessage()]
    assert len(failures) == 2, "one logged error per transition"
    assert all(r.levelno == logging.ERROR and r.exc_info for r in failures)


async def test_each_transition_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sse_sm")
    sse_app = SSEApp(lambda: EventSourceResponse(finite("a"), ping=0))
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse") as sse:
            await sse.wait_finished()
    logged = [
        r.getMessage() for r in caplog.records if r.name == "sse_sm" and r.levelno == logging.DEBUG
    ]
    history = sse_app.response.history
    assert len(logged) == len(history) == 2
    for message, transition in zip(logged, history, strict=True):
        assert transition.trigger.name in message
        assert transition.source.name in message
        assert transition.target.name in message


# --------------------------------------------------------------------------- statistics


async def test_statistics_before_during_and_after() -> None:
    release = anyio.Event()
    response = EventSourceResponse(one_then_wait(release, "second", "third"), ping=0.02)
    assert (response.state, response.close_reason, response.history) == (State.OPEN, None, ())
    assert response.active is True
    before = response.statistics()
    assert (before.events_sent, before.pings_sent, before.bytes_sent) == (0, 0, 0)
    assert before.history == ()

    async def serve(scope: Any, receive: Any, send: Any) -> None:
        await response(scope, receive, send)

    with anyio.fail_after(5):
        async with stream(serve) as sse:
            async for _ in _until_comment(sse):
                pass
            assert response.active is True
            assert response.state is State.STREAMING
            release.set()
            await sse.wait_finished()
    stats = response.statistics()
    assert response.active is False
    assert stats.state is State.CLOSED
    assert stats.close_reason is CloseReason.COMPLETED
    assert stats.events_sent == 3
    assert stats.pings_sent >= 1
    assert stats.pings_sent == sse.body.count(b": ping - ")
    assert stats.bytes_sent == len(sse.body)
    assert stats.history == response.history
    assert [t.trigger for t in stats.history] == [Trigger.STARTED, Trigger.SOURCE_EXHAUSTED]
    assert set(stats.time_in_states) == set(State)
    assert all(seconds >= 0 for seconds in stats.time_in_states.values())
    assert stats.time_in_states[State.CLOSED] == 0
    assert stats.time_in_states[State.STREAMING] > 0


# --------------------------------------------------------------------------- ASGI details


async def test_websocket_scope_gets_a_denial_response() -> None:
    response = EventSourceResponse(finite("a", {"data": "b"}), ping=0)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(5):
        await response(websocket_scope(), never_receive, send)
    assert [m["type"] for m in sent] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
        "websocket.http.response.body",
        "websocket.http.response.body",
    ]
    assert sent[0]["status"] == 200
    assert sent[0]["headers"] == response.raw_headers
    assert [(m["body"], m["more_body"]) for m in sent[1:]] == [
        (b"data: a\r\n\r\n", True),
        (b"data: b\r\n\r\n", True),
        (b"", False),
    ]
    assert response.close_reason is CloseReason.COMPLETED


@pytest.mark.parametrize("outcome", ["end", "disconnect", "head", "error"])
async def test_background_task_runs_unless_the_stream_failed(outcome: str) -> None:
    ran = anyio.Event()

    async def background() -> None:
        ran.set()

    async def source() -> AsyncIterator[str]:
        yield "a"
        if outcome == "error":
            raise LookupError("source failed")
        if outcome == "disconnect":
            await anyio.sleep_forever()

    sse_app = SSEApp(
        lambda: EventSourceResponse(source(), background=BackgroundTask(background), ping=0)
    )
    method = "HEAD" if outcome == "head" else "GET"
    with anyio.fail_after(5):
        async with stream(sse_app.app, "/sse", method=method, raise_app_exceptions=False) as sse:
            if outcome == "disconnect":
                await sse.next_event()
                await sse.disconnect()
            await sse.wait_finished()
    expected_reason = {
        "end": CloseReason.COMPLETED,
        "disconnect": CloseReason.CLIENT_DISCONNECTED,
        "head": CloseReason.HEAD,
        "error": CloseReason.ERROR,
    }[outcome]
    assert sse_app.response.close_reason is expected_reason
    if outcome == "error":
        assert isinstance(sse.app_exception, LookupError)
        assert not ran.is_set(), "no background task after an error"
    else:
        assert sse.app_exception is None
        assert ran.is_set()


async def test_calling_the_same_response_twice_raises_transition_error() -> None:
    response = EventSourceResponse(finite("a"), ping=0)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(5):
        await response(http_scope(), never_receive, send)
        assert response.close_reason is CloseReason.COMPLETED
        first_call = list(sent)
        with pytest.raises(TransitionError):
            await response(http_scope(), never_receive, send)
    assert sent == first_call, "the second call sends nothing"
    assert response.state is State.CLOSED
    assert response.close_reason is CloseReason.COMPLETED
