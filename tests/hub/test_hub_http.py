"""The hub behind an ``EventSourceResponse``: resume, the gap signal, and every close path.

Each stream is a real response on a Starlette app, read with
``sse_sm.testing.stream``; after each close path the hub must show no
subscriber left, and the connection must have closed for the expected reason.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from sse_sm import (
    GAP_EVENT,
    CloseReason,
    EventSourceResponse,
    Hub,
    MemoryBackend,
    SendTimeoutError,
    SlowConsumerPolicy,
    Trigger,
)
from sse_sm.testing import SSEStream, stream
from tests._support import http_scope, never_receive
from tests.hub.test_hub import wait_until


class TickerApp:
    """A Starlette app whose one route subscribes to ``ticker``; keeps each response."""

    def __init__(self, hub: Hub, **response_kwargs: Any) -> None:
        self.hub = hub
        self.responses: list[EventSourceResponse] = []

        async def ticker(request: Request) -> EventSourceResponse:
            response = EventSourceResponse(
                hub.subscribe("ticker", request), ping=0, **response_kwargs
            )
            self.responses.append(response)
            return response

        self.app = Starlette(routes=[Route("/ticker", ticker)])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    @property
    def last(self) -> EventSourceResponse:
        return self.responses[-1]


async def subscribed(hub: Hub, count: int = 1) -> None:
    await wait_until(lambda: hub.statistics().subscribers == count)


async def read_data(sse: SSEStream, count: int) -> list[tuple[str, str]]:
    return [((event := await sse.next_event()).data, event.id) for _ in range(count)]


# ------------------------------------------------------------------ the one-liner


async def test_an_endpoint_subscribes_in_one_line() -> None:
    hub = Hub()

    async def ticker(request: Request) -> EventSourceResponse:
        return EventSourceResponse(hub.subscribe("ticker", request))

    app = Starlette(routes=[Route("/ticker", ticker)])
    with anyio.fail_after(10):
        async with stream(app, "/ticker") as sse:
            await subscribed(hub)
            event_id = await hub.publish("ticker", {"data": "42.1", "event": "price"})
            event = await sse.next_event()
    assert (event.event, event.data, event.id) == ("price", "42.1", event_id)
    assert sse.violations == []
    assert hub.statistics().subscribers == 0


# ------------------------------------------------------------------ resume


async def test_resume_after_a_disconnect_delivers_exactly_the_missed_events() -> None:
    hub = Hub()
    app = TickerApp(hub)
    with anyio.fail_after(10):
        async with stream(app, "/ticker") as first:
            await subscribed(hub)
            for n in range(3):
                await hub.publish("ticker", f"before {n}")
            seen = await read_data(first, 3)
        assert app.last.close_reason is CloseReason.CLIENT_DISCONNECTED
        assert hub.statistics().subscribers == 0
        missed = [await hub.publish("ticker", f"missed {n}") for n in range(5)]
        async with stream(app, "/ticker", headers={"Last-Event-ID": seen[-1][1]}) as second:
            replayed = await read_data(second, 5)
            live = await hub.publish("ticker", "live")
            then = await read_data(second, 1)
            end = await hub.publish("ticker", "end")
            last = await read_data(second, 1)
    assert replayed == [(f"missed {n}", missed[n]) for n in range(5)]
    assert then == [("live", live)]
    assert last == [("end", end)], "nothing twice, nothing in between"
    assert hub.statistics().replayed == 5


async def test_resume_from_the_query_parameter() -> None:
    hub = Hub()
    app = TickerApp(hub)
    with anyio.fail_after(10):
        ids = [await hub.publish("ticker", str(n)) for n in range(4)]
        async with stream(app, f"/ticker?lastEventID={ids[1]}") as sse:
            assert await read_data(sse, 2) == [("2", ids[2]), ("3", ids[3])]


async def test_a_resume_beyond_the_store_starts_with_the_gap_signal() -> None:
    hub = Hub(MemoryBackend(max_events=3))
    app = TickerApp(hub)
    with anyio.fail_after(10):
        ids = [await hub.publish("ticker", str(n)) for n in range(10)]
        async with stream(app, "/ticker", headers={"Last-Event-ID": ids[1]}) as sse:
            gap = await sse.next_event()
            rest = await read_data(sse, 3)
    assert gap.event == GAP_EVENT
    assert gap.id == "", "no id field: a browser keeps the last id it had"
    assert json.loads(gap.data) == {
        "reason": "expired",
        "last_event_id": ids[1],
        "next_id": ids[7],
        "missed": 5,
    }
    assert rest == [(str(n), ids[n]) for n in range(7, 10)]


async def test_an_unknown_id_gets_the_gap_signal_and_what_is_held() -> None:
    hub = Hub(MemoryBackend(max_events=2))
    app = TickerApp(hub)
    with anyio.fail_after(10):
        ids = [await hub.publish("ticker", str(n)) for n in range(3)]
        headers = {"Last-Event-ID": "from-a-previous-process"}
        async with stream(app, "/ticker", headers=headers) as sse:
            gap = await sse.next_event()
            rest = await read_data(sse, 2)
    assert json.loads(gap.data)["reason"] == "unknown"
    assert rest == [("1", ids[1]), ("2", ids[2])]


async def test_clients_resuming_during_a_burst_see_no_duplicate_and_no_hole() -> None:
    """Subscribers resume at random points while a publisher runs: each sees a contiguous run."""
    hub = Hub(policy=SlowConsumerPolicy.BLOCK, block_timeout=None)
    app = TickerApp(hub)
    total = 200
    ids: list[str] = []
    runs: list[list[int]] = []

    async def publisher() -> None:
        for n in range(total):
            ids.append(await hub.publish("ticker", str(n)))
            await anyio.lowlevel.checkpoint()

    async def client(after: int) -> None:
        headers = {"Last-Event-ID": ids[after]}
        async with stream(app, "/ticker", headers=headers) as sse:
            run: list[int] = []
            while not run or run[-1] < total - 1:
                run.append(int((await sse.next_event()).data))
        runs.append([after, *run])

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publisher)
            for start in range(0, total - 20, 20):
                while len(ids) <= start:  # noqa: ASYNC110 - events arrive through an HTTP client task; bounded by fail_after
                    await anyio.sleep(0.001)
                tasks.start_soon(client, start)
    assert len(runs) == 9
    for after, *run in runs:
        assert run == list(range(after + 1, total)), f"resumed after {after}"


# ------------------------------------------------------------------ slow consumers


async def test_a_stalled_client_is_let_go_and_resumes_without_loss() -> None:
    hub = Hub(buffer_size=4, policy=SlowConsumerPolicy.DISCONNECT)
    app = TickerApp(hub)
    with anyio.fail_after(10):
        async with stream(app, "/ticker", max_buffered_messages=1) as stalled:
            await subscribed(hub)
            ids = [await hub.publish("ticker", "0")]
            got = await read_data(stalled, 1)
            ids += [await hub.publish("ticker", str(n)) for n in range(1, 20)]
            assert hub.statistics().slow_disconnects == 1
            assert hub.statistics().subscribers == 0, "its buffer is freed at once"
            got += [(event.data, event.id) async for event in stalled.events()]
        assert app.last.close_reason is CloseReason.SLOW_CONSUMER
        assert app.last.history[-1].trigger is Trigger.FELL_BEHIND
        assert "fell 4 events behind" in app.last.history[-1].reason
        assert stalled.complete, "a clean end, so EventSource reconnects"
        assert got == [(str(n), ids[n]) for n in range(len(got))]
        async with stream(app, "/ticker", headers={"Last-Event-ID": got[-1][1]}) as again:
            rest = await read_data(again, 20 - len(got))
    assert rest == [(str(n), ids[n]) for n in range(len(got), 20)]


# ------------------------------------------------------------------ every close path


async def test_close_path_client_disconnect() -> None:
    hub = Hub()
    app = TickerApp(hub)
    with anyio.fail_after(10):
        async with stream(app, "/ticker") as sse:
            await subscribed(hub)
            await hub.publish("ticker", "x")
            await sse.next_event()
    assert app.last.close_reason is CloseReason.CLIENT_DISCONNECTED
    assert hub.statistics().subscribers == 0


async def test_close_path_send_timeout() -> None:
    hub = Hub(policy=SlowConsumerPolicy.DROP_OLDEST)
    app = TickerApp(hub, send_timeout=0.2)
    with anyio.fail_after(10):
        async with stream(
            app, "/ticker", max_buffered_messages=1, raise_app_exceptions=False
        ) as sse:
            await subscribed(hub)
            for n in range(3):
                await hub.publish("ticker", str(n))
            await sse.wait_finished()
    assert isinstance(sse.app_exception, SendTimeoutError)
    assert app.last.close_reason is CloseReason.SEND_TIMEOUT
    assert hub.statistics().subscribers == 0


async def test_close_path_shutdown_past_the_grace() -> None:
    hub = Hub()
    app = TickerApp(hub)
    with anyio.fail_after(10):
        async with stream(app.app, "/ticker") as sse:
            await subscribed(hub)
            sse.request_shutdown("deploy")
            await sse.wait_finished()
    assert app.last.close_reason is CloseReason.SHUTDOWN_FORCED
    assert sse.complete
    assert hub.statistics().subscribers == 0


async def test_close_path_shutdown_within_the_grace_by_closing_the_hub() -> None:
    hub = Hub()
    app = TickerApp(hub, shutdown_grace_period=5)
    with anyio.fail_after(10):
        async with stream(app.app, "/ticker") as sse:
            await subscribed(hub)
            await hub.publish("ticker", "before")
            sse.request_shutdown("deploy")
            await wait_until(lambda: app.last.history[-1].trigger is Trigger.SHUTDOWN_REQUESTED)
            await hub.publish("ticker", "farewell")
            hub.close()
            data = [event.data async for event in sse.events()]
    assert data == ["before", "farewell"]
    assert app.last.close_reason is CloseReason.DRAINED
    assert hub.statistics().subscribers == 0


async def test_close_path_hub_closed_while_streaming() -> None:
    hub = Hub()
    app = TickerApp(hub)
    with anyio.fail_after(10):
        async with stream(app, "/ticker") as sse:
            await subscribed(hub)
            await hub.publish("ticker", "last words")
            hub.close()
            data = [event.data async for event in sse.events()]
        async with stream(app, "/ticker") as late:
            await late.wait_finished()
    assert data == ["last words"]
    assert app.responses[0].close_reason is CloseReason.COMPLETED
    assert app.last.close_reason is CloseReason.COMPLETED
    assert hub.statistics().subscribers == 0


async def test_close_path_error_from_the_server() -> None:
    hub = Hub()
    subscription = hub.subscribe("ticker")
    response = EventSourceResponse(subscription, ping=0)

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise RuntimeError("the server refused the message")

    async def publish_when_joined() -> None:
        await subscribed(hub)
        await hub.publish("ticker", "x")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publish_when_joined)
            with pytest.raises(RuntimeError, match="refused"):
                await response(http_scope(), never_receive, send)
    assert response.close_reason is CloseReason.ERROR
    assert subscription.statistics().closed
    assert hub.statistics().subscribers == 0


async def test_close_path_cancellation() -> None:
    hub = Hub()
    subscription = hub.subscribe("ticker")
    response = EventSourceResponse(subscription, ping=0)

    async def send(message: Message) -> None:
        pass

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(response, http_scope(), never_receive, send)
            await subscribed(hub)
            tasks.cancel_scope.cancel()
    assert response.close_reason is CloseReason.CANCELLED
    assert hub.statistics().subscribers == 0


async def test_close_path_head_never_joins() -> None:
    hub = Hub()
    app = TickerApp(hub)
    with anyio.fail_after(10):
        async with stream(app, "/ticker", method="HEAD") as sse:
            await sse.wait_finished()
    assert app.last.close_reason is CloseReason.HEAD
    stats = hub.statistics()
    assert (stats.subscribers, stats.topics) == (0, {})


# ------------------------------------------------------------------ the README example


def readme_chat_app() -> tuple[Starlette, Hub]:
    """The README's example, word for word apart from being wrapped in a function."""
    hub = Hub()  # in memory; keeps the last 1,024 events of each topic for resuming

    async def messages(request: Request) -> EventSourceResponse:
        # Replays what the client missed since its Last-Event-ID, then goes live.
        return EventSourceResponse(hub.subscribe("chat", request))

    async def post(request: Request) -> JSONResponse:
        message = await request.json()
        event_id = await hub.publish("chat", message["text"])
        return JSONResponse({"id": event_id})

    app = Starlette(routes=[Route("/messages", messages), Route("/post", post, methods=["POST"])])
    return app, hub


async def test_the_readme_chat_example_resumes() -> None:
    app, hub = readme_chat_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:

        async def post(text: str) -> str:
            response = await client.post("/post", json={"text": text})
            event_id: str = response.json()["id"]
            return event_id

        with anyio.fail_after(10):
            async with stream(app, "/messages") as first:
                await subscribed(hub)
                await post("hello")
                seen = await first.next_event()
            missed = [await post("are you there?"), await post("hello again")]
            async with stream(app, "/messages", headers={"Last-Event-ID": seen.id}) as second:
                resumed = await read_data(second, 2)
    assert seen.data == "hello"
    assert resumed == [("are you there?", missed[0]), ("hello again", missed[1])]
