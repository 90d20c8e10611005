"""sse_sm's EventSourceResponse in a real FastAPI app: typed OpenAPI and JSON models.

FastAPI's native SSE (``fastapi.sse``) documents ``-> AsyncIterable[Item]``
as an OpenAPI 3.2 ``itemSchema`` and sends models as JSON.  Here the same
endpoints run with ``response_class=sse_sm.EventSourceResponse`` and
:func:`sse_sm.fastapi.document_streams`, side by side with native ones: the
entries and components must be equal, and the data on the wire must be the
same JSON.  Each app is fetched in-process, on asyncio and trio.  The file
passes on FastAPI 0.135.0 (the test extra's floor) and on 0.165.0.
"""

from __future__ import annotations

import json
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
)
from pathlib import Path
from typing import Any, Optional

import anyio
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.sse import EventSourceResponse as NativeResponse
from fastapi.sse import ServerSentEvent as NativeEvent
from pydantic import BaseModel, field_serializer

from sse_sm import EventSourceResponse, ServerSentEvent
from sse_sm.fastapi import document_streams, stream_item_type
from sse_sm.testing import Event, parse_event_stream, stream

pytestmark = pytest.mark.anyio


class Item(BaseModel):
    name: str
    price: float = 1.5


class Other(BaseModel):
    code: int


class Exploding(BaseModel):
    """Serialising it raises: pydantic's PydanticSerializationError (a ValueError)."""

    value: int

    @field_serializer("value")
    def _boom(self, value: int) -> int:
        raise ValueError("cannot serialise this one")


ResponseClass = type[Any]


async def get(app: FastAPI, path: str) -> tuple[int, bytes, BaseException | None]:
    """Status, body and the app's exception, for one request through the ASGI app."""
    with anyio.fail_after(10):
        async with stream(app, path, raise_app_exceptions=False) as response:
            await response.wait_started()
            await response.wait_finished()
    return response.status, response.body, response.app_exception


async def openapi_of(app: FastAPI) -> dict[str, Any]:
    status, body, error = await get(app, "/openapi.json")
    assert (status, error) == (200, None)
    document: dict[str, Any] = json.loads(body)
    return document


# ------------------------------------------------------------------ the document

# One endpoint per annotation FastAPI reads an item type from; each is served
# by a native app and by ours under the same function name, so that the
# summary and operationId match too and whole documents can be compared.


async def _agen() -> AsyncIterator[Item]:
    yield Item(name="a")


def _async_iterable() -> Callable[..., Any]:
    async def items() -> AsyncIterable[Item]:
        yield Item(name="a")

    return items


def _async_iterator() -> Callable[..., Any]:
    async def items() -> AsyncIterator[Item]:
        yield Item(name="a")

    return items


def _async_generator() -> Callable[..., Any]:
    async def items() -> AsyncGenerator[Item, None]:
        yield Item(name="a")

    return items


def _iterable() -> Callable[..., Any]:
    def items() -> Iterable[Item]:
        yield Item(name="a")

    return items


def _iterator() -> Callable[..., Any]:
    def items() -> Iterator[Item]:
        yield Item(name="a")

    return items


def _generator() -> Callable[..., Any]:
    def items() -> Generator[Item, None, None]:
        yield Item(name="a")

    return items


def _list_items() -> Callable[..., Any]:
    async def items() -> AsyncIterable[list[Item]]:
        yield [Item(name="a")]

    return items


def _union_items() -> Callable[..., Any]:
    async def items() -> AsyncIterable[Item | Other]:
        yield Other(code=1)

    return items


ENDPOINTS = {
    "AsyncIterable": _async_iterable,
    "AsyncIterator": _async_iterator,
    "AsyncGenerator": _async_generator,
    "Iterable": _iterable,
    "Iterator": _iterator,
    "Generator": _generator,
    "list of models": _list_items,
    "union of models": _union_items,
}


def app_with(response_class: ResponseClass, endpoint: Callable[..., Any], **route: Any) -> FastAPI:
    app = FastAPI()
    if response_class is EventSourceResponse:
        document_streams(app)
    app.get("/items", response_class=response_class, **route)(endpoint)
    router = APIRouter()
    router.get("/items", response_class=response_class, **route)(endpoint)
    app.include_router(router, prefix="/v1")
    return app


def event_stream_entry(document: dict[str, Any], path: str = "/items") -> dict[str, Any]:
    entry: dict[str, Any] = document["paths"][path]["get"]["responses"]["200"]["content"]
    return entry


def assert_same_as_native(ours: dict[str, Any], native: dict[str, Any]) -> None:
    """The entries and the components are FastAPI's native ones.

    FastAPI 0.135's native class loses the item type of a route in an
    included router (it copies the route with ``response_model=None``); ours
    keeps it there, so that entry is compared only where FastAPI keeps it.
    """
    assert ours["paths"]["/items"] == native["paths"]["/items"]
    assert ours["components"] == native["components"]
    assert "contentSchema" in data_schema(ours["paths"]["/items"])
    assert "contentSchema" in data_schema(ours["paths"]["/v1/items"])
    native_included = native["paths"]["/v1/items"]
    if "contentSchema" in data_schema(native_included):  # FastAPI keeps the type (0.16x)
        assert ours["paths"]["/v1/items"] == native_included


def data_schema(path_entry: dict[str, Any]) -> dict[str, Any]:
    content = path_entry["get"]["responses"]["200"]["content"]
    schema: dict[str, Any] = content["text/event-stream"]["itemSchema"]["properties"]["data"]
    return schema


@pytest.mark.parametrize("shape", ENDPOINTS)
async def test_the_document_equals_fastapis_native_one(shape: str) -> None:
    make = ENDPOINTS[shape]
    native = await openapi_of(app_with(NativeResponse, make()))
    ours = await openapi_of(app_with(EventSourceResponse, make()))
    assert "itemSchema" in event_stream_entry(native)["text/event-stream"]
    assert_same_as_native(ours, native)


async def test_the_item_schema_points_at_the_model() -> None:
    ours = await openapi_of(app_with(EventSourceResponse, _async_iterable()))
    item_schema = event_stream_entry(ours, "/v1/items")["text/event-stream"]["itemSchema"]
    assert item_schema["required"] == ["data"]
    assert item_schema["properties"]["data"] == {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": {"$ref": "#/components/schemas/Item"},
    }
    assert ours["components"]["schemas"]["Item"]["required"] == ["name"]


async def test_without_the_hook_fastapi_documents_only_a_string() -> None:
    """What the hook changes: FastAPI alone does not document our class's items."""
    app = FastAPI()
    app.get("/items", response_class=EventSourceResponse)(_async_iterable())
    assert event_stream_entry(await openapi_of(app)) == {
        "text/event-stream": {"schema": {"type": "string"}}
    }


async def test_a_returned_response_is_typed_by_response_model() -> None:
    """The drop-in pattern (return EventSourceResponse(gen())) has no item type in
    its annotation; ``response_model=`` gives it, and the entry is the native one."""

    async def items() -> EventSourceResponse:
        return EventSourceResponse(_agen())

    native = await openapi_of(app_with(NativeResponse, _async_iterable()))
    ours = await openapi_of(app_with(EventSourceResponse, items, response_model=Item))
    assert_same_as_native(ours, native)


async def test_a_returned_response_without_a_type_gets_the_generic_event_schema() -> None:
    async def items() -> EventSourceResponse:
        return EventSourceResponse(_agen())

    async def events() -> AsyncIterable[NativeEvent]:
        yield NativeEvent(data=1)

    ours = await openapi_of(app_with(EventSourceResponse, items))
    native = await openapi_of(app_with(NativeResponse, events))
    entry = event_stream_entry(ours)
    assert entry == event_stream_entry(native)
    assert "contentSchema" not in entry["text/event-stream"]["itemSchema"]["properties"]["data"]


@pytest.mark.parametrize(
    "item_type",
    [str, dict[str, Any], ServerSentEvent, Any, Optional[Item]],  # noqa: UP045
    ids=["str", "dict", "ServerSentEvent", "Any", "Optional[Item]"],
)
async def test_items_not_sent_as_json_are_not_documented_as_json(item_type: Any) -> None:
    """Where the wire differs from FastAPI's (a str goes out as it is, a dict is
    an event's fields, None is the text "None"), the entry says only that data
    is a string, not FastAPI's JSON contentSchema."""

    async def items() -> AsyncIterator[str]:
        yield "x"

    # Set as an object: a string annotation could not name the local item_type.
    items.__annotations__["return"] = AsyncIterable[item_type]

    async def events() -> AsyncIterable[NativeEvent]:
        yield NativeEvent(data=1)

    ours = await openapi_of(app_with(EventSourceResponse, items))
    native = await openapi_of(app_with(NativeResponse, events))
    assert event_stream_entry(ours) == event_stream_entry(native)


async def test_routes_added_after_the_hook_are_documented_and_a_second_call_is_harmless() -> None:
    app = FastAPI()
    assert document_streams(app) is app
    hook = app.openapi
    assert document_streams(app).openapi is hook
    app.get("/items", response_class=EventSourceResponse)(_async_iterable())
    assert "itemSchema" in event_stream_entry(await openapi_of(app))["text/event-stream"]
    app.get("/more", response_class=EventSourceResponse)(_async_iterable())
    # FastAPI before route versions (0.135) keeps its first document forever.
    app.openapi_schema = None
    assert "itemSchema" in event_stream_entry(await openapi_of(app), "/more")["text/event-stream"]


def test_document_streams_refuses_what_is_not_a_fastapi_app() -> None:
    from starlette.applications import Starlette

    with pytest.raises(TypeError, match=r"^app must be a fastapi\.FastAPI, got Starlette$"):
        document_streams(Starlette())  # type: ignore[arg-type]


def test_stream_item_type_reads_the_annotation_or_the_response_model() -> None:
    assert stream_item_type(_async_iterable()) is Item
    assert stream_item_type(_generator()) is Item
    assert stream_item_type(_async_iterable(), response_model=Other) is Other

    async def untyped() -> EventSourceResponse:
        return EventSourceResponse(_agen())

    assert stream_item_type(untyped) is None


# ------------------------------------------------------------------ the wire


def wire_app(response_class: ResponseClass) -> FastAPI:
    """Endpoints that yield what FastAPI users yield; the same code for both classes."""
    app = FastAPI()
    if response_class is EventSourceResponse:
        document_streams(app)
    route = app.get

    @route("/models", response_class=response_class)
    async def models() -> AsyncIterable[Item]:
        yield Item(name="a")
        yield Item(name="ü", price=2.0)

    @route("/sync-models", response_class=response_class)
    def sync_models() -> Iterable[Item]:
        yield Item(name="a")
        yield Item(name="b")

    @route("/lists", response_class=response_class)
    async def lists() -> AsyncIterable[list[Item]]:
        yield [Item(name="a"), Item(name="b")]

    return app


def data_of(body: bytes) -> list[str]:
    return [event.data for event in parse_event_stream(body)]


@pytest.mark.parametrize("path", ["/models", "/sync-models", "/lists"])
async def test_models_go_out_as_the_same_json_as_fastapis_native_class(path: str) -> None:
    native_status, native_body, native_error = await get(wire_app(NativeResponse), path)
    status, body, error = await get(wire_app(EventSourceResponse), path)
    assert (status, error) == (native_status, native_error) == (200, None)
    assert data_of(body) == data_of(native_body)
    assert body.endswith(b"\r\n\r\n")  # ours: sse_sm's framing, not FastAPI's encoder


async def test_the_models_bytes_on_the_wire() -> None:
    _, body, _ = await get(wire_app(EventSourceResponse), "/models")
    assert body == (
        b'data: {"name":"a","price":1.5}\r\n\r\n'
        + 'data: {"name":"ü","price":2.0}\r\n\r\n'.encode()
    )


def mixed_app() -> FastAPI:
    app = document_streams(FastAPI())

    @app.get("/mixed", response_class=EventSourceResponse)
    async def mixed() -> AsyncIterable[Any]:
        yield ServerSentEvent(data=Item(name="a"), event="item", id="1")
        yield {"data": Item(name="b"), "event": "dict"}
        yield {"data": "plain", "event": "text"}
        yield "a str"
        yield [Item(name="c")]

    @app.get("/returned", response_class=EventSourceResponse, response_model=Item)
    async def returned() -> EventSourceResponse:
        async def items() -> AsyncIterator[Item]:
            yield Item(name="r")

        return EventSourceResponse(items(), ping=600)

    # A sync generator: FastAPI hands it to the response as it is, which closes
    # it.  (An async one it wraps in a generator of its own, and closing that
    # wrapper does not close the endpoint's generator; on trio it is then
    # finalized by the garbage collector, with a ResourceWarning.)
    @app.get("/fails-midway", response_class=EventSourceResponse)
    def fails_midway() -> Iterable[Any]:
        yield Item(name="before")
        yield Exploding(value=1)
        yield Item(name="never")

    @app.get("/returned-fails-midway", response_class=EventSourceResponse)
    async def returned_fails_midway() -> EventSourceResponse:
        async def items() -> AsyncIterator[Any]:
            yield Item(name="before")
            yield Exploding(value=1)
            yield Item(name="never")

        return EventSourceResponse(items())

    return app


async def test_events_dicts_and_strs_beside_models() -> None:
    status, body, error = await get(mixed_app(), "/mixed")
    assert (status, error) == (200, None)
    assert parse_event_stream(body) == [
        Event(data='{"name":"a","price":1.5}', event="item", id="1"),
        Event(data='{"name":"b","price":1.5}', event="dict", id="1"),
        Event(data="plain", event="text", id="1"),
        Event(data="a str", id="1"),
        Event(data='[{"name":"c","price":1.5}]', id="1"),
    ]


async def test_a_returned_response_streams_its_models_as_json() -> None:
    status, body, error = await get(mixed_app(), "/returned")
    assert (status, error) == (200, None)
    assert body == b'data: {"name":"r","price":1.5}\r\n\r\n'


@pytest.mark.parametrize("path", ["/fails-midway", "/returned-fails-midway"])
async def test_a_model_that_cannot_be_serialised_ends_the_stream_after_whole_events(
    path: str,
) -> None:
    """The failing item is refused before any byte of it is written: the
    client has the event before it, whole, and nothing after; the refusal
    names the field."""
    status, body, error = await get(mixed_app(), path)
    assert status == 200
    assert body == b'data: {"name":"before","price":1.5}\r\n\r\n'
    assert isinstance(error, ValueError)
    assert str(error).startswith("data: model_dump_json() of a Exploding failed")


async def test_a_routers_default_response_class_is_ours_too() -> None:
    router = APIRouter(default_response_class=EventSourceResponse)
    router.get("/items")(_async_iterable())
    app = document_streams(FastAPI())
    app.include_router(router)
    native = await openapi_of(app_with(NativeResponse, _async_iterable()))
    assert event_stream_entry(await openapi_of(app)) == event_stream_entry(native)
    status, body, error = await get(app, "/items")
    assert (status, error) == (200, None)
    assert body == b'data: {"name":"a","price":1.5}\r\n\r\n'


# ------------------------------------------------------------------ the README


def readme_fastapi_example() -> FastAPI:
    """The README's FastAPI example, run as it is written there."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## FastAPI\n", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {"__name__": "readme_fastapi_example"}
    exec(compile(code, "README.md (FastAPI)", "exec"), namespace)
    app: FastAPI = namespace["app"]
    return app


async def test_the_readme_example_documents_and_streams_as_it_says() -> None:
    app = readme_fastapi_example()
    document = await openapi_of(app)
    for path in ("/items", "/updates"):
        data = event_stream_entry(document, path)["text/event-stream"]["itemSchema"]
        assert data["properties"]["data"]["contentSchema"] == {"$ref": "#/components/schemas/Item"}
    _, body, error = await get(app, "/items")
    assert error is None
    assert body == b'data: {"name":"a"}\r\n\r\nid: 2\r\nevent: item\r\ndata: {"name":"b"}\r\n\r\n'
    _, body, error = await get(app, "/updates")
    assert (body, error) == (b'data: {"name":"c"}\r\n\r\n', None)


async def test_an_apps_own_openapi_function_is_wrapped_not_replaced() -> None:
    """FastAPI's recipe for extending the document replaces ``app.openapi``;
    document_streams called after it keeps the app's function."""
    app = FastAPI()
    app.get("/items", response_class=EventSourceResponse)(_async_iterable())
    generate = app.openapi

    def custom() -> dict[str, Any]:
        document = generate()
        document["info"]["x-custom"] = True
        return document

    app.openapi = custom  # type: ignore[method-assign]
    document_streams(app)
    document = await openapi_of(app)
    assert document["info"]["x-custom"] is True
    assert "contentSchema" in data_schema(document["paths"]["/items"])


# ------------------------------------------------------------------ still sse_sm's machine


async def test_a_yielding_typed_endpoint_drains_on_shutdown_like_any_sse_sm_stream() -> None:
    """FastAPI hands the yielded models to our response, so the connection's
    state machine runs: a shutdown drains the stream, whose body ends
    cleanly after whole events, and the endpoint's generator is closed."""
    app = document_streams(FastAPI())
    closed = anyio.Event()

    @app.get("/ticks", response_class=EventSourceResponse)
    async def ticks() -> AsyncIterable[Item]:
        try:
            n = 0
            while True:
                yield Item(name=f"tick {n}")
                n += 1
                await anyio.sleep(0.01)
        finally:
            closed.set()

    with anyio.fail_after(10):
        async with stream(app, "/ticks") as sse:
            first = await sse.next_event()
            sse.request_shutdown()
            await sse.wait_finished()
            await closed.wait()
    assert first.data == '{"name":"tick 0","price":1.5}'
    assert sse.complete
    assert sse.body.endswith(b"\r\n\r\n")
    assert all(json.loads(event.data)["name"].startswith("tick") for event in data_events(sse.body))


def data_events(body: bytes) -> list[Event]:
    return [event for event in parse_event_stream(body) if event.data]


class QuietEvents(EventSourceResponse):
    """The README's advice for a yielding endpoint: a subclass sets the arguments.

    ``status_code`` stays in the signature: FastAPI reads the default status
    of a route without one from the response class's ``__init__``, and its
    document generator fails (``UnboundLocalError``) when it finds none.
    """

    def __init__(self, content: Any, status_code: int = 200, **kwargs: Any) -> None:
        super().__init__(content, status_code=status_code, ping=600, send_timeout=30, **kwargs)


async def test_a_subclass_carries_arguments_for_a_yielding_endpoint() -> None:
    app = document_streams(FastAPI())
    app.get("/items", response_class=QuietEvents)(_async_iterable())
    document = await openapi_of(app)
    assert data_schema(document["paths"]["/items"])["contentSchema"] == {
        "$ref": "#/components/schemas/Item"
    }
    status, body, error = await get(app, "/items")
    assert (status, body, error) == (200, b'data: {"name":"a","price":1.5}\r\n\r\n', None)
