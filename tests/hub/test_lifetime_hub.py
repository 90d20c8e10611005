"""A client streaming from the hub through lifetime rotations loses and repeats nothing.

Each rotation ends the body cleanly with the farewell and a ``retry:``; the
client reconnects at once with the ``Last-Event-ID`` it last saw, as
EventSource does, and the hub replays what was published meanwhile.  Runs on
asyncio, trio and trio's MockClock (``time_driven``), so the rotations
happen at their drawn times without sleeping in real time.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from sse_sm import CloseReason, EventSourceResponse, Hub, ServerSentEvent, Trigger
from sse_sm.testing import stream
from tests.hub.test_hub import wait_until

pytestmark = pytest.mark.time_driven

#: Events the publisher sends, one every PUBLISH_EVERY seconds: about 1.2 s
#: of publishing against lifetimes of 0.2 to 0.3 s, so several rotations.
EVENTS = 120
PUBLISH_EVERY = 0.01


def farewell() -> ServerSentEvent:
    return ServerSentEvent("see you on another worker", event="farewell")


@pytest.mark.parametrize("grace", [0.0, 0.05], ids=["no-grace", "grace"])
async def test_a_client_resumes_through_rotations_without_loss_or_repeat(grace: float) -> None:
    hub = Hub()
    responses: list[EventSourceResponse] = []

    async def ticker(request: Request) -> EventSourceResponse:
        response = EventSourceResponse(
            hub.subscribe("ticker", request),
            ping=0,
            max_lifetime=(0.2, 0.3),
            shutdown_grace_period=grace,
            farewell_factory=farewell,
            drain_retry=(10, 20),
        )
        responses.append(response)
        return response

    app = Starlette(routes=[Route("/ticker", ticker)])
    published: list[str] = []

    async def publish_all() -> None:
        for n in range(EVENTS):
            published.append(await hub.publish("ticker", f"e{n}"))
            await anyio.sleep(PUBLISH_EVERY)

    seen: list[tuple[str, str]] = []
    farewells: list[Any] = []
    last_id: str | None = None
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            while len(seen) < EVENTS:
                headers = None if last_id is None else {"Last-Event-ID": last_id}
                async with stream(app, "/ticker", headers=headers) as sse:
                    if not responses[:-1] and not published:
                        # The first connection has nothing to resume from: publish
                        # only once it is subscribed.
                        await wait_until(lambda: hub.statistics().subscribers == 1)
                        tasks.start_soon(publish_all)
                    async for event in sse.events():
                        if event.event == "farewell":
                            farewells.append(event)
                            continue
                        seen.append((event.data, event.id))
                        last_id = event.id
                        if len(seen) == EVENTS:
                            break
                    else:
                        assert sse.complete, "a rotation ends the body cleanly"
                assert sse.violations == []
    assert [data for data, _ in seen] == [f"e{n}" for n in range(EVENTS)]
    assert [event_id for _, event_id in seen] == published
    rotated = responses[:-1]
    assert len(rotated) >= 3, "several rotations during the run"
    assert len(farewells) == len(rotated)
    assert all(f.retry is not None and 10 <= f.retry <= 20 for f in farewells)
    for response in rotated:
        assert response.history[1].trigger is Trigger.LIFETIME_EXPIRED
        assert response.statistics().drained_by is Trigger.LIFETIME_EXPIRED
        # A subscription does not watch shutdown_event: the grace cuts it.
        assert response.close_reason is CloseReason.SHUTDOWN_FORCED
    assert responses[-1].close_reason is CloseReason.CLIENT_DISCONNECTED
    assert hub.statistics().subscribers == 0
