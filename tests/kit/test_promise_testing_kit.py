"""Promise: the test kit reports what an app does wrong, and refuses bad settings by name.

README "Testing your endpoints" and ``sse_sm.testing``: ``stream`` plays the
server and records "one line per ASGI protocol mistake ... Offending messages
are otherwise ignored"; the parser reads a body "the way a browser's
EventSource does", so any bytes at all, cut anywhere, parse to the same
events and never raise.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

from sse_sm import EventSourceResponse
from sse_sm.testing import EventStreamParser, parse_event_stream, stream
from tests._promise import numbers


async def _two_events(scope: Scope, receive: Receive, send: Send) -> None:
    await EventSourceResponse(numbers(2))(scope, receive, send)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=8))
def test_any_bytes_cut_anywhere_parse_the_same_and_never_raise(
    data: bytes, cuts: list[int]
) -> None:
    whole = parse_event_stream(data)
    parser = EventStreamParser()
    items: list[Any] = []
    start = 0
    for cut in sorted(c for c in cuts if c <= len(data)):
        items.extend(parser.feed(data[start:cut]))
        start = cut
    items.extend(parser.feed(data[start:]))
    items.extend(parser.close())
    assert [i for i in items if type(i).__name__ == "Event"] == whole


@pytest.mark.anyio
async def test_a_message_that_is_not_a_dict_is_recorded_as_a_violation() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send(None)  # type: ignore[arg-type]

    with anyio.fail_after(5):
        async with stream(app, raise_app_exceptions=False) as sse:
            await sse.wait_finished()
    assert sse.app_exception is None
    assert len(sse.violations) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(math.nan, id="nan"),
        pytest.param(-1.0, id="negative"),
    ],
)
async def test_a_bad_finish_timeout_is_refused_by_name(value: float) -> None:
    with anyio.fail_after(5), pytest.raises((TypeError, ValueError), match="finish_timeout"):
        async with stream(_two_events, finish_timeout=value) as sse:
            await sse.next_event()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"x-name": "\u20ac"}, id="not-latin1"),
        pytest.param({"x-count": 1}, id="not-str"),
    ],
)
async def test_a_bad_request_header_is_refused_by_name(headers: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="header"):
        async with stream(_two_events, headers=headers):
            pass


@pytest.mark.anyio
async def test_a_bad_buffer_setting_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="max_buffered_messages"):
        async with stream(_two_events, max_buffered_messages=-1):
            pass


@pytest.mark.anyio
async def test_an_infinite_finish_timeout_works() -> None:
    with anyio.fail_after(5):
        async with stream(_two_events, finish_timeout=math.inf) as sse:
            assert (await sse.next_event()).data == "0"
