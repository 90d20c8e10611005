"""The drop-in contract: endpoints written for sse-starlette behave the same on sse_sm.

Each endpoint below is written once, the way sse-starlette users write it, in a
helper that takes the library's classes as parameters.  Each test builds the
endpoint with sse_sm's classes and with sse-starlette 3.7.1's, serves both
through a Starlette app with the same in-process client, and requires the same
status, the same headers and the same body bytes.  The streams are finite and
end by themselves, and pings are disabled, outside the timeline or collapsed,
because the two libraries deliberately time their pings differently.

sse-starlette's shutdown watcher is started with ``asyncio`` only; under trio it
silently does nothing, which does not matter to streams that end by themselves,
so every comparison here runs on both backends.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import sse_sm
from sse_sm.testing import Comment, Event, parse_event_stream, stream

ResponseClass = Callable[..., Response]
EventClass = Callable[..., Any]
EnsureBytes = Callable[[Any, str], bytes]


@dataclass(frozen=True)
class Library:
    """The names an endpoint imports from one of the two libraries."""

    name: str
    EventSourceResponse: ResponseClass
    ServerSentEvent: EventClass
    JSONServerSentEvent: EventClass
    ensure_bytes: EnsureBytes


def sse_sm_library() -> Library:
    # The one line a migration changes: ``from sse_starlette.sse import ...``.
    from sse_sm.event import JSONServerSentEvent, ensure_bytes
    from sse_sm.sse import EventSourceResponse, ServerSentEvent

    return Library(
        "sse_sm", EventSourceResponse, ServerSentEvent, JSONServerSentEvent, ensure_bytes
    )


def sse_starlette_library() -> Library:
    # sse_starlette.sse re-exports ServerSentEvent without declaring it, which
    # strict mypy refuses; the class is the same object as sse_starlette.event's.
    from sse_starlette.event import JSONServerSentEvent, ServerSentEvent, ensure_bytes
    from sse_starlette.sse import EventSourceResponse

    return Library(
        "sse_starlette", EventSourceResponse, ServerSentEvent, JSONServerSentEvent, ensure_bytes
    )


OURS = sse_sm_library()
THEIRS = sse_starlette_library()


@dataclass(frozen=True)
class Outcome:
    """What a client saw of one response."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool
    violations: list[str]
    error: str | None


async def fetch(app: Starlette, path: str, *, method: str = "GET") -> Outcome:
    async with stream(app, path, method=method, raise_app_exceptions=False) as sse:
        await sse.wait_started()
        await sse.wait_finished()
    error = None if sse.app_exception is None else repr(sse.app_exception)
    return Outcome(sse.status, sse.headers, sse.body, sse.complete, sse.violations, error)


async def same_on_both(
    make_app: Callable[[Library], Starlette], path: str, *, method: str = "GET"
) -> Outcome:
    """Serve the endpoint with each library; the outcomes must be identical."""
    with anyio.fail_after(5):
        ours = await fetch(make_app(OURS), path, method=method)
        theirs = await fetch(make_app(THEIRS), path, method=method)
    assert ours == theirs
    assert ours.violations == []
    return ours


def events_of(body: bytes) -> list[Event]:
    return parse_event_stream(body)


# --------------------------------------------------------------------------- endpoints
#
# Written as in sse-starlette's README and in the projects that use it; only the
# classes come in as parameters.


def ticker_app(EventSourceResponse: ResponseClass, ServerSentEvent: EventClass) -> Starlette:
    """ServerSentEvent objects, custom headers, a status code and an early retry."""

    async def ticker(request: Request) -> Response:
        async def ticks() -> AsyncIterator[Any]:
            yield ServerSentEvent(retry=2500, comment="stream opened")
            for n in range(5):
                yield ServerSentEvent(data=f"tick {n}", event="tick", id=str(n))
                await anyio.lowlevel.checkpoint()
            yield ServerSentEvent("done", event="end")

        return EventSourceResponse(
            ticks(),
            headers={"X-Stream": "ticker", "Cache-Control": "no-cache"},
            status_code=200,
        )

    return Starlette(routes=[Route("/ticker", ticker)])


def dict_app(EventSourceResponse: ResponseClass) -> Starlette:
    """Plain dicts with event, id, retry, comment and multi-line data."""

    async def updates(request: Request) -> Response:
        async def generate() -> AsyncIterator[dict[str, Any]]:
            for n in range(4):
                yield {
                    "event": "update",
                    "id": f"msg-{n}",
                    "retry": 15000,
                    "data": f"first line {n}\nsecond line\r\nthird line",
                }
            yield {"comment": "end of updates"}
            yield {"data": 42}

        return EventSourceResponse(generate(), ping=0)

    return Starlette(routes=[Route("/updates", updates)])


def json_app(EventSourceResponse: ResponseClass, JSONServerSentEvent: EventClass) -> Starlette:
    """JSONServerSentEvent with nested, non-ASCII data."""

    async def prices(request: Request) -> Response:
        async def quotes() -> AsyncIterator[Any]:
            for n, symbol in enumerate(["ACME", "Zürich Re", "東京"]):
                yield JSONServerSentEvent(
                    data={"symbol": symbol, "price": 10.5 * (n + 1), "tags": ["a", None, True]},
                    event="quote",
                    id=str(n),
                )
            yield JSONServerSentEvent(data=None, event="eof")

        return EventSourceResponse(quotes(), ping=0)

    return Starlette(routes=[Route("/prices", prices)])


def ensure_bytes_app(EventSourceResponse: ResponseClass, ensure_bytes: EnsureBytes) -> Starlette:
    """Events pre-encoded with ensure_bytes (for a cache or a fan-out), sent as bytes."""

    async def cached(request: Request) -> Response:
        sep = "\n"
        frames = [
            ensure_bytes({"data": f"cached {n}", "id": str(n), "event": "cached"}, sep)
            for n in range(3)
        ]
        frames.append(ensure_bytes("plain text", sep))
        frames.append(ensure_bytes(b"data: already bytes\n\n", sep))

        async def replay() -> AsyncIterator[bytes | memoryview]:
            for frame in frames:
                yield frame
            yield memoryview(b": bye\n\n")

        return EventSourceResponse(replay(), sep=sep, ping=0)

    return Starlette(routes=[Route("/cached", cached)])


def heartbeat_app(
    EventSourceResponse: ResponseClass, ServerSentEvent: EventClass, release: anyio.Event
) -> Starlette:
    """A custom ping and a send timeout, with a quiet period the ping fills."""

    async def heartbeat(request: Request) -> Response:
        async def slow_feed() -> AsyncIterator[Any]:
            yield ServerSentEvent("connected", event="hello")
            await release.wait()
            yield ServerSentEvent("news", event="item")

        return EventSourceResponse(
            slow_feed(),
            ping=0.05,
            ping_message_factory=lambda: ServerSentEvent(comment="keepalive"),
            send_timeout=5,
        )

    return Starlette(routes=[Route("/heartbeat", heartbeat)])


def memory_stream_app(EventSourceResponse: ResponseClass) -> Starlette:
    """The MCP SDK's pattern: a sender task feeds the memory stream that is the content."""

    async def messages(request: Request) -> Response:
        send_stream, receive_stream = anyio.create_memory_object_stream[dict[str, Any]](0)

        async def sse_writer() -> None:
            async with send_stream:
                await send_stream.send({"event": "endpoint", "data": "/messages/?session_id=1"})
                for n in range(3):
                    payload = {"jsonrpc": "2.0", "id": n, "result": {}}
                    await send_stream.send({"event": "message", "data": json.dumps(payload)})

        # sse-starlette never closes its content on a normal end, so the endpoint
        # closes the reader itself once the response is over.
        return EventSourceResponse(
            receive_stream,
            data_sender_callable=sse_writer,
            background=BackgroundTask(receive_stream.aclose),
        )

    return Starlette(routes=[Route("/sse", messages)])


def sync_generator_app(
    EventSourceResponse: ResponseClass, ServerSentEvent: EventClass
) -> Starlette:
    """A plain (sync) generator, run in worker threads by both libraries."""

    async def numbers(request: Request) -> Response:
        def count() -> Iterator[Any]:
            for n in range(5):
                time.sleep(0.001)  # a blocking call, the reason people use a sync generator
                yield {"data": n, "id": str(n)}
            yield "multi\nline"
            yield ServerSentEvent("last", event="end")

        return EventSourceResponse(count(), ping=0)

    return Starlette(routes=[Route("/numbers", numbers)])


def failing_app(EventSourceResponse: ResponseClass) -> Starlette:
    """A generator that fails half-way: the error reaches the server in both."""

    async def broken(request: Request) -> Response:
        async def generate() -> AsyncIterator[str]:
            yield "one"
            yield "two"
            raise ValueError("the feed went away")

        return EventSourceResponse(generate(), ping=0)

    return Starlette(routes=[Route("/broken", broken)])


# --------------------------------------------------------------------------- comparisons


async def test_server_sent_event_objects_with_headers() -> None:
    outcome = await same_on_both(
        lambda lib: ticker_app(lib.EventSourceResponse, lib.ServerSentEvent), "/ticker"
    )
    assert outcome.status == 200
    assert outcome.headers[:2] == [("x-stream", "ticker"), ("cache-control", "no-cache")]
    assert outcome.complete
    assert outcome.body.startswith(b": stream opened\r\nretry: 2500\r\n\r\n")
    events = events_of(outcome.body)
    assert [(e.event, e.id, e.data) for e in events] == [
        *(("tick", str(n), f"tick {n}") for n in range(5)),
        ("end", "4", "done"),
    ]
    assert events[0].retry == 2500


async def test_head_request_on_the_same_endpoint() -> None:
    outcome = await same_on_both(
        lambda lib: ticker_app(lib.EventSourceResponse, lib.ServerSentEvent),
        "/ticker",
        method="HEAD",
    )
    assert outcome.body == b""
    assert outcome.complete


async def test_dict_items_with_event_id_retry() -> None:
    outcome = await same_on_both(lambda lib: dict_app(lib.EventSourceResponse), "/updates")
    assert outcome.body.startswith(
        b"id: msg-0\r\nevent: update\r\n"
        b"data: first line 0\r\ndata: second line\r\ndata: third line\r\n"
        b"retry: 15000\r\n\r\n"
    )
    assert b": end of updates\r\n\r\ndata: 42\r\n\r\n" in outcome.body
    assert [e.id for e in events_of(outcome.body)] == [*(f"msg-{n}" for n in range(4)), "msg-3"]


async def test_json_server_sent_events() -> None:
    outcome = await same_on_both(
        lambda lib: json_app(lib.EventSourceResponse, lib.JSONServerSentEvent), "/prices"
    )
    events = events_of(outcome.body)
    assert [json.loads(e.data)["symbol"] for e in events] == ["ACME", "Zürich Re", "東京"]
    assert '"tags":["a",null,true]' in events[0].data, "compact JSON"
    assert outcome.body.endswith(b"event: eof\r\n\r\n"), "data=None writes no data field"


async def test_ensure_bytes_pre_encoded_frames() -> None:
    outcome = await same_on_both(
        lambda lib: ensure_bytes_app(lib.EventSourceResponse, lib.ensure_bytes), "/cached"
    )
    assert outcome.body == (
        b"id: 0\nevent: cached\ndata: cached 0\n\n"
        b"id: 1\nevent: cached\ndata: cached 1\n\n"
        b"id: 2\nevent: cached\ndata: cached 2\n\n"
        b"data: plain text\n\n"
        b"data: already bytes\n\n"
        b": bye\n\n"
    )


async def test_ping_message_factory_and_send_timeout() -> None:
    """Both send the factory's ping in the quiet period; sse-starlette on a fixed beat,
    sse_sm after a quiet interval, so consecutive pings are collapsed before comparing."""

    async def fetch_heartbeat(lib: Library) -> Outcome:
        release = anyio.Event()
        app = heartbeat_app(lib.EventSourceResponse, lib.ServerSentEvent, release)
        async with stream(app, "/heartbeat") as sse:
            seen: list[Event | Comment] = []
            async for item in sse.items():
                seen.append(item)
                if isinstance(item, Comment):
                    release.set()
            await sse.wait_finished()
        assert Comment("keepalive") in seen, lib.name
        body = re.sub(rb"(: keepalive\r\n\r\n)+", rb"\1", sse.body)
        return Outcome(sse.status, sse.headers, body, sse.complete, sse.violations, None)

    with anyio.fail_after(5):
        ours = await fetch_heartbeat(OURS)
        theirs = await fetch_heartbeat(THEIRS)
    assert ours == theirs
    assert ours.body == (
        b"event: hello\r\ndata: connected\r\n\r\n"
        b": keepalive\r\n\r\n"
        b"event: item\r\ndata: news\r\n\r\n"
    )


async def test_memory_stream_and_data_sender_callable() -> None:
    outcome = await same_on_both(lambda lib: memory_stream_app(lib.EventSourceResponse), "/sse")
    events = events_of(outcome.body)
    assert [e.event for e in events] == ["endpoint", "message", "message", "message"]
    assert [json.loads(e.data)["id"] for e in events[1:]] == [0, 1, 2]
    assert outcome.complete


async def test_sync_generator() -> None:
    outcome = await same_on_both(
        lambda lib: sync_generator_app(lib.EventSourceResponse, lib.ServerSentEvent), "/numbers"
    )
    events = events_of(outcome.body)
    assert [e.data for e in events] == ["0", "1", "2", "3", "4", "multi\nline", "last"]
    assert outcome.complete


async def test_failing_generator() -> None:
    outcome = await same_on_both(lambda lib: failing_app(lib.EventSourceResponse), "/broken")
    assert outcome.body == b"data: one\r\n\r\ndata: two\r\n\r\n"
    assert outcome.error == repr(ValueError("the feed went away"))
    assert not outcome.complete


@pytest.mark.parametrize("headers", [None, {"X-Trace": "1", "Cache-Control": "max-age=5"}])
def test_constructed_response_headers_match(headers: dict[str, str] | None) -> None:
    async def nothing() -> AsyncIterator[str]:
        return
        yield  # pragma: no cover

    ours = OURS.EventSourceResponse(nothing(), headers=headers)
    theirs = THEIRS.EventSourceResponse(nothing(), headers=headers)
    assert ours.raw_headers == theirs.raw_headers
    assert ours.status_code == theirs.status_code
    assert ours.media_type == theirs.media_type


# --------------------------------------------------------------------------- import paths


def test_top_level_imports() -> None:
    from sse_sm import EventSourceResponse, JSONServerSentEvent, ServerSentEvent

    assert issubclass(JSONServerSentEvent, ServerSentEvent)
    assert issubclass(EventSourceResponse, Response)


def test_sse_module_imports() -> None:
    from sse_sm.sse import EventSourceResponse, SendTimeoutError, ServerSentEvent

    assert EventSourceResponse is sse_sm.EventSourceResponse
    assert ServerSentEvent is sse_sm.ServerSentEvent
    assert SendTimeoutError is sse_sm.SendTimeoutError
    assert issubclass(SendTimeoutError, TimeoutError)
    with pytest.raises(TimeoutError):
        raise SendTimeoutError("a slow client")


def test_event_module_imports() -> None:
    from sse_sm.event import ensure_bytes

    assert ensure_bytes({"data": "x"}, "\n") == b"data: x\n\n"


@pytest.mark.parametrize("module_name", ["sse_sm", "sse_sm.sse", "sse_sm.event"])
def test_all_is_a_tuple_of_names_that_exist(module_name: str) -> None:
    import importlib

    module = importlib.import_module(module_name)
    names = module.__all__
    assert isinstance(names, tuple)
    assert len(set(names)) == len(names), "no name is listed twice"
    for name in names:
        assert hasattr(module, name), f"{module_name}.__all__ lists a missing name {name!r}"


def test_sse_starlette_top_level_names_are_all_here() -> None:
    import sse_starlette

    assert set(sse_starlette.__all__) <= set(sse_sm.__all__)
