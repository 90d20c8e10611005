"""Typed event streams in a FastAPI app's OpenAPI document.

FastAPI (0.135 and newer) documents a stream of typed items, an OpenAPI 3.2
``itemSchema``, only for its own ``fastapi.sse.EventSourceResponse``: it keys
on ``issubclass(response_class, fastapi.sse.EventSourceResponse)``, for the
document and for running the endpoint alike.  No media type or class
attribute is consulted, so no attribute of ours can satisfy it, and
subclassing FastAPI's class would hand every generator endpoint to FastAPI's
own encoder, bypassing the connection's state machine.  With sse_sm's
:class:`~sse_sm.EventSourceResponse` the endpoint therefore runs as FastAPI
runs any custom streaming response (the items go to our response, which
sends them), and its document says only ``type: string``.

:func:`document_streams` closes that gap for the document only.  It hooks
``app.openapi`` (the place FastAPI's docs name for changing the document);
before each generation it marks every route whose ``response_class`` is
sse_sm's as an event stream with the item type FastAPI would have derived,
so that FastAPI's own generator writes the entry: the same ``itemSchema``,
the same ``components`` entry for the model, by construction.  The marks are
the two facts FastAPI's generator reads (a route's ``is_sse_stream`` and
``stream_item_field``); they are not read while serving a request, so
responses are unchanged.  This relies on those attribute names, which FastAPI
does not document: tests/compat/test_fastapi_typed.py pins the result
against FastAPI's native entry.

The item type of a route is, in this order:

* the route's ``response_model=`` when given: the way to type an endpoint
  that *returns* ``EventSourceResponse(gen())`` (its annotation is the
  response class, which carries no item type);
* the ``T`` of a return annotation ``AsyncIterable[T]``, ``AsyncIterator[T]``,
  ``AsyncGenerator[T, ...]``, ``Iterable[T]``, ``Iterator[T]`` or
  ``Generator[T, ...]``, as FastAPI reads it for its own class.

The ``data`` is documented as JSON of ``T`` only when sse_sm sends it as
JSON: ``T`` a model (a class with ``model_dump_json``, not a ``str``), a
``list``, or a union of those.  Any other item type (``str``, ``dict``,
``ServerSentEvent``, ``Any``) gets the generic event schema (``data`` a
string): sse_sm sends a ``str`` as it is and a ``dict`` as an event's fields,
where FastAPI's native class JSON-encodes both, so copying FastAPI's entry
there would misdescribe the wire.  Items are not validated against ``T`` (the
native class validates them); docs/design.md says why.

Thread safety: call :func:`document_streams` once, at startup, before the app
serves; the hook itself runs wherever FastAPI generates the document.
"""

from __future__ import annotations

import types
import typing
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
)
from typing import Any, Final, Union

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.utils import get_typed_return_annotation
from fastapi.routing import APIRoute
from fastapi.utils import create_model_field

from .responses import EventSourceResponse

__all__ = ("document_streams", "stream_item_type")

_STREAM_ORIGINS: Final = frozenset(
    {AsyncIterable, AsyncIterator, AsyncGenerator, Iterable, Iterator, Generator}
)
_UNION_ORIGINS: Final = frozenset({Union, types.UnionType})
#: Set on the ``openapi`` function this module installs, so a second call is a no-op.
_HOOKED: Final = "__sse_sm_document_streams__"


def document_streams(app: FastAPI) -> FastAPI:
    """Make ``app``'s OpenAPI document describe sse_sm event streams as FastAPI's own.

    Every route with ``response_class=sse_sm.EventSourceResponse`` (or a
    subclass) gets a ``text/event-stream`` entry with an ``itemSchema``; see
    the module docstring for how the item type is found.  Routes added after
    this call are covered too: the marks are made each time the document is
    generated.  Calling it twice is harmless.  It wraps whatever
    ``app.openapi`` is when called, so an app that installs its own
    ``openapi`` function (FastAPI's "extending OpenAPI" recipe) calls this
    after that.  Returns ``app``.

    Raises:
        TypeError: ``app`` is not a FastAPI application.
    """
    if not isinstance(app, FastAPI):
        raise TypeError(f"app must be a fastapi.FastAPI, got {type(app).__name__}")
    generate = app.openapi
    if getattr(generate, _HOOKED, False):
        return app

    def openapi() -> dict[str, Any]:
        _mark_streams(app.routes)
        _mark_streams(app.webhooks.routes)
        return generate()

    setattr(openapi, _HOOKED, True)
    # FastAPI's documented way to change the document: replace ``app.openapi``.
    app.openapi = openapi  # type: ignore[method-assign]
    return app


def stream_item_type(endpoint: Callable[..., Any], response_model: Any = None) -> Any:
    """The item type :func:`document_streams` documents for an endpoint, or ``None``.

    ``response_model`` wins when it is not ``None``; otherwise the ``T`` of a
    stream return annotation (``AsyncIterable[T]`` and its kin, ``Any`` for a
    bare one); otherwise ``None``.
    """
    if response_model is not None:
        return response_model
    annotation = get_typed_return_annotation(endpoint)
    if typing.get_origin(annotation) in _STREAM_ORIGINS:
        args = typing.get_args(annotation)
        return args[0] if args else Any
    return None


def _mark_streams(routes: Any) -> None:
    for route in _openapi_routes(routes):
        response_class = route.response_class
        if not (
            isinstance(response_class, type) and issubclass(response_class, EventSourceResponse)
        ):
            # Another class, or FastAPI's DefaultPlaceholder (its JSON default,
            # served its own way; a router's default_response_class=ours arrives
            # here resolved to the class itself).
            continue
        item = stream_item_type(route.endpoint, route.response_model)
        if _sent_as_json(item):
            if route.stream_item_type != item:  # ``list[T]`` is a new object per read
                route.stream_item_type = item
                route.stream_item_field = create_model_field(
                    name="StreamItem_" + route.unique_id, type_=item, mode="serialization"
                )
        else:
            route.stream_item_type = None
            route.stream_item_field = None
        route.is_sse_stream = True


def _openapi_routes(routes: Any) -> Iterator[Any]:
    """The objects FastAPI's OpenAPI generator reads each API route's facts from.

    Recent FastAPI versions keep an included router's routes as per-inclusion
    contexts (``fastapi.routing.iter_route_contexts``); earlier ones copy each
    route into the including router's list.
    """
    iter_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_contexts is None:
        yield from (route for route in routes if isinstance(route, APIRoute))
        return
    for context in iter_contexts(routes):
        if isinstance(context.original_route, APIRoute):
            effective = getattr(context, "_route_context", None)
            yield context.route if effective is None else effective


def _sent_as_json(item: Any) -> bool:
    """Whether sse_sm writes every value of type ``item`` as JSON ``data``."""
    origin = typing.get_origin(item)
    if origin is typing.Annotated:
        return _sent_as_json(typing.get_args(item)[0])
    if origin in _UNION_ORIGINS:
        return all(_sent_as_json(arg) for arg in typing.get_args(item))
    if origin is list or item is list:
        return True
    return (
        isinstance(item, type)
        and not issubclass(item, str)
        and callable(getattr(item, "model_dump_json", None))
    )
