"""Promise: bad input gets a clear error naming the field; every accepted value works.

The response's docstring: "Raises TypeError, ValueError: an argument is out
of range; the message names it", and docs/design.md section 10: "The
response checks its numeric and callable arguments too".  The hub makes the
same promise for its own arguments.  Each refusal below must be a TypeError
or ValueError raised by the constructor (not later, on the wire) whose
message contains the argument's name; each extreme value that is accepted
must then stream to a normal end.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest

from sse_sm import (
    CloseReason,
    DrainCoordinator,
    EventSourceResponse,
    Hub,
    ServerSentEvent,
    SlowConsumerPolicy,
    State,
)
from tests._promise import drive, numbers

pytestmark = pytest.mark.anyio


def _bug(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"BUG: {reason}")


REFUSED: list[Any] = [
    pytest.param({"ping": -1}, "ping", id="ping-negative"),
    pytest.param({"ping": math.nan}, "ping", id="ping-nan"),
    pytest.param({"ping": True}, "ping", id="ping-bool"),
    pytest.param({"ping": "5"}, "ping", id="ping-str"),
    pytest.param({"send_timeout": 0}, "send_timeout", id="send_timeout-zero"),
    pytest.param({"send_timeout": -math.inf}, "send_timeout", id="send_timeout-neg-inf"),
    pytest.param({"send_timeout": math.nan}, "send_timeout", id="send_timeout-nan"),
    pytest.param({"send_timeout": False}, "send_timeout", id="send_timeout-bool"),
    pytest.param({"shutdown_grace_period": None}, "shutdown_grace_period", id="grace-none"),
    pytest.param({"shutdown_grace_period": -1e-9}, "shutdown_grace_period", id="grace-negative"),
    pytest.param({"cleanup_timeout": math.nan}, "cleanup_timeout", id="cleanup-nan"),
    pytest.param({"cleanup_timeout": "1"}, "cleanup_timeout", id="cleanup-str"),
    pytest.param({"drain_retry": -1}, "drain_retry", id="drain_retry-negative"),
    pytest.param({"drain_retry": (5, 1)}, "drain_retry", id="drain_retry-reversed"),
    pytest.param({"drain_retry": (1, 2, 3)}, "drain_retry", id="drain_retry-triple"),
    pytest.param({"drain_retry": [1, 2]}, "drain_retry", id="drain_retry-list"),
    pytest.param({"drain_retry": 1.5}, "drain_retry", id="drain_retry-float"),
    pytest.param({"drain_retry": True}, "drain_retry", id="drain_retry-bool"),
    pytest.param({"drain_retry": (0, 10**30)}, "drain_retry", id="drain_retry-beyond-64-bits"),
    pytest.param({"sep": ""}, "sep", id="sep-empty"),
    pytest.param({"sep": "\n\n"}, "sep", id="sep-double"),
    pytest.param({"sep": b"\n"}, "sep", id="sep-bytes"),
    pytest.param({"sep": " "}, "sep", id="sep-space"),
    pytest.param({"ping_message_factory": 3}, "ping_message_factory", id="ping_factory"),
    pytest.param({"data_sender_callable": "x"}, "data_sender_callable", id="data_sender"),
    pytest.param(
        {"client_close_handler_callable": 1}, "client_close_handler_callable", id="close_handler"
    ),
    pytest.param({"on_transition": object()}, "on_transition", id="on_transition"),
    pytest.param({"farewell_factory": "bye"}, "farewell_factory", id="farewell"),
    pytest.param({"drain_coordinator": object()}, "drain_coordinator", id="coordinator"),
    # Below: arguments the response once passed through unchecked.
    pytest.param(
        {"status_code": "200"},
        "status_code",
        id="status_code-str",
    ),
    pytest.param(
        {"status_code": 99},
        "status_code",
        id="status_code-99",
    ),
    pytest.param(
        {"status_code": True},
        "status_code",
        id="status_code-bool",
    ),
    pytest.param(
        {"headers": {"X-Count": 1}},
        "headers",
        id="headers-int-value",
    ),
    pytest.param(
        {"headers": [("x-a", "b")]},
        "headers",
        id="headers-list",
    ),
    pytest.param(
        {"headers": {"X-Name": "\u20ac"}},
        "headers",
        id="headers-not-latin1",
    ),
    pytest.param(
        {"headers": {"X-Evil": "a\r\nSet-Cookie: session=stolen"}},
        "headers",
        id="headers-crlf",
    ),
    pytest.param(
        {"media_type": 5},
        "media_type",
        id="media_type-int",
    ),
    pytest.param(
        {"media_type": ""},
        "media_type",
        id="media_type-empty",
    ),
    pytest.param(
        {"background": lambda: None},
        "background",
        id="background-sync-callable",
    ),
    pytest.param(
        {"shutdown_event": object()},
        "shutdown_event",
        id="shutdown_event-object",
    ),
]


@pytest.mark.parametrize(("kwargs", "field"), REFUSED)
def test_the_response_refuses_a_bad_argument_by_name(kwargs: dict[str, Any], field: str) -> None:
    source = numbers(1)
    try:
        with pytest.raises((TypeError, ValueError)) as caught:
            EventSourceResponse(source, **kwargs)
        assert field.replace("_", " ") in str(caught.value).replace("_", " "), caught.value
    finally:
        # Never iterated: close it so that no "never awaited" warning fires.
        source.aclose().close()


def test_content_that_is_not_iterable_is_refused_by_name() -> None:
    for content in (None, 5, "text", b"bytes", {"data": "x"}):
        with pytest.raises(TypeError, match="content"):
            EventSourceResponse(content)  # type: ignore[arg-type]


ACCEPTED: list[Any] = [
    pytest.param({"ping": math.inf}, id="ping-inf"),
    pytest.param({"ping": 1e-9}, id="ping-1e-9"),
    pytest.param({"ping": 1e308}, id="ping-1e308"),
    pytest.param({"ping": 0}, id="ping-zero"),
    pytest.param({"send_timeout": math.inf}, id="send_timeout-inf"),
    pytest.param({"send_timeout": 1e308}, id="send_timeout-1e308"),
    pytest.param({"shutdown_grace_period": math.inf}, id="grace-inf"),
    pytest.param({"cleanup_timeout": math.inf}, id="cleanup-inf"),
    pytest.param({"cleanup_timeout": None}, id="cleanup-none"),
    pytest.param({"drain_retry": (0, 2**64 - 1)}, id="drain_retry-largest"),
    pytest.param({"drain_retry": 0}, id="drain_retry-zero"),
    pytest.param({"sep": "\r"}, id="sep-cr"),
    pytest.param({"status_code": 299}, id="status-299"),
    pytest.param({"media_type": None}, id="media_type-none"),
    pytest.param(
        {"cleanup_timeout": 0},
        id="cleanup-zero",
    ),
]


@pytest.mark.parametrize("kwargs", ACCEPTED)
async def test_an_accepted_extreme_value_streams_to_a_clean_end(kwargs: dict[str, Any]) -> None:
    response = EventSourceResponse(numbers(3, delay=0.01), **kwargs)
    outcome = await drive(response)
    assert outcome.error is None
    assert response.state is State.CLOSED
    assert response.close_reason is CloseReason.COMPLETED
    sep = kwargs.get("sep", "\r\n").encode()
    assert b"".join(outcome.wire.bodies).count(b"data: ") >= 3
    assert all(b"data: 2" + sep in body or b"data: 2" not in body for body in outcome.wire.bodies)
    assert outcome.wire.ended_cleanly


async def test_a_tiny_send_timeout_closes_with_send_timeout_not_a_hang() -> None:
    # Accepted, and it "works": the first send that suspends is overdue.
    response = EventSourceResponse(numbers(3), send_timeout=1e-300)
    outcome = await drive(response)
    assert response.close_reason is CloseReason.SEND_TIMEOUT
    assert isinstance(outcome.error, TimeoutError)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"shutdown_grace_period": math.inf}, id="grace-inf"),
        pytest.param({"shutdown_grace_period": 1e308}, id="grace-1e308"),
        pytest.param({"drain_retry": (2**64 - 1, 2**64 - 1)}, id="drain_retry-largest"),
        pytest.param({"farewell_factory": lambda: None}, id="farewell-none"),
        pytest.param({"farewell_factory": lambda: b"event: raw\n\n"}, id="farewell-bytes"),
    ],
)
async def test_an_extreme_drain_setting_still_drains(kwargs: dict[str, Any]) -> None:
    """A cooperative source ends within an infinite grace; the farewell goes out."""
    coordinator = DrainCoordinator(automatic=False)
    stop = anyio.Event()

    async def cooperative() -> Any:
        while not stop.is_set():
            yield "tick"
            await anyio.sleep(0.005)
        yield ServerSentEvent("bye", event="goodbye")

    settings = {"shutdown_grace_period": 2.0, **kwargs}
    response = EventSourceResponse(
        cooperative(), shutdown_event=stop, drain_coordinator=coordinator, **settings
    )
    async with anyio.create_task_group() as tasks:

        async def drain_soon() -> None:
            await anyio.sleep(0.03)
            coordinator.request_drain("test")

        tasks.start_soon(drain_soon)
        outcome = await drive(response)
    assert outcome.error is None
    assert response.close_reason is CloseReason.DRAINED
    wire = b"".join(outcome.wire.bodies)
    assert b"event: goodbye" in wire
    if "drain_retry" in kwargs:
        assert f"retry: {kwargs['drain_retry'][0]}".encode() in wire
    assert outcome.wire.ended_cleanly


# ------------------------------------------------------------------ the hub


HUB_REFUSED: list[Any] = [
    pytest.param({"buffer_size": 0}, "buffer_size", id="buffer-zero"),
    pytest.param({"buffer_size": True}, "buffer_size", id="buffer-bool"),
    pytest.param({"buffer_size": 1.5}, "buffer_size", id="buffer-float"),
    pytest.param({"buffer_size": -(2**70)}, "buffer_size", id="buffer-huge-negative"),
    pytest.param({"policy": "drop_oldest"}, "policy", id="policy-str"),
    pytest.param({"block_timeout": math.nan}, "block_timeout", id="block-nan"),
    pytest.param({"block_timeout": -1}, "block_timeout", id="block-negative"),
    pytest.param({"block_timeout": True}, "block_timeout", id="block-bool"),
    pytest.param({"block_timeout": "1"}, "block_timeout", id="block-str"),
    pytest.param({"sep": "\n\r"}, "sep", id="sep"),
]


@pytest.mark.parametrize(("kwargs", "field"), HUB_REFUSED)
def test_the_hub_refuses_a_bad_argument_by_name(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises((TypeError, ValueError), match=field):
        Hub(**kwargs)


async def test_subscribe_and_publish_refuse_bad_input_by_name() -> None:
    hub = Hub()
    with pytest.raises(TypeError, match="topic"):
        hub.subscribe(b"t")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="last_event_id"):
        hub.subscribe("t", last_event_id="a\nb")
    with pytest.raises(ValueError, match="buffer_size"):
        hub.subscribe("t", buffer_size=0)
    with pytest.raises(TypeError, match="policy"):
        hub.subscribe("t", policy="block")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes"):
        await hub.publish("t", b"data: x\n\n")
    with pytest.raises(TypeError, match="colour"):
        await hub.publish("t", {"data": "x", "colour": "red"})
    with pytest.raises(ValueError, match="id"):
        await hub.publish("t", {"data": "x", "id": "a\rb"})
    with pytest.raises(ValueError, match="retry"):
        await hub.publish("t", {"data": "x", "retry": -1})
    # Nothing refused was stored or counted.
    assert hub.statistics().published == 0
    hub.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"buffer_size": 2**62}, id="buffer-2**62"),
        pytest.param({"block_timeout": math.inf, "policy": SlowConsumerPolicy.BLOCK}, id="inf"),
        pytest.param({"block_timeout": 0, "policy": SlowConsumerPolicy.BLOCK}, id="zero"),
        pytest.param({"block_timeout": None, "policy": SlowConsumerPolicy.BLOCK}, id="none"),
    ],
)
async def test_the_hub_accepts_extreme_sizes_and_timeouts(kwargs: dict[str, Any]) -> None:
    hub = Hub(**kwargs)
    frames: list[bytes] = []
    with anyio.fail_after(5):
        async with hub.subscribe("t") as sub, anyio.create_task_group() as tasks:

            async def read_two() -> None:
                frames.append(await sub.__anext__())  # joins, then waits
                frames.append(await sub.__anext__())

            tasks.start_soon(read_two)
            while hub.statistics().subscribers == 0:  # noqa: ASYNC110 - joining has no event of its own; bounded by fail_after
                await anyio.sleep(0.001)
            first = await hub.publish("t", "a")
            await hub.publish("t", "b")
    assert first.encode() in frames[0]
    assert b"data: b" in frames[1]
    hub.close()
