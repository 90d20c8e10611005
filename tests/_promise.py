"""A bare ASGI harness for the promise tests: call a response with no framework around it.

``Wire`` plays the server: it records every message the response sends (with
a checkpoint per send, as real servers have), answers ``receive()`` as told,
and ``drive`` runs the response to its end under a hard time bound, keeping
whatever it raised instead of letting it escape, so a test can assert on the
state machine and on the wire together.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
from starlette.types import ASGIApp, Message, Receive, Scope

from sse_sm import ServerSentEvent

from ._support import http_scope, never_receive


@dataclass
class Wire:
    """What one response sent, as a server would have seen it."""

    messages: list[Message] = field(default_factory=list)

    async def send(self, message: Message) -> None:
        await anyio.lowlevel.checkpoint()
        self.messages.append(message)

    @property
    def starts(self) -> list[Message]:
        return [m for m in self.messages if m["type"].endswith("http.response.start")]

    @property
    def bodies(self) -> list[bytes]:
        return [m.get("body", b"") for m in self.messages if m["type"].endswith("response.body")]

    @property
    def ended_cleanly(self) -> bool:
        """Whether the last message is the final empty body (``more_body`` false)."""
        return bool(self.messages) and self.messages[-1].get("more_body", True) is False


@dataclass
class Outcome:
    wire: Wire
    error: BaseException | None


async def drive(
    app: ASGIApp,
    *,
    scope: Scope | None = None,
    receive: Receive = never_receive,
    send: Callable[[Message], Awaitable[None]] | None = None,
    limit: float = 5.0,
) -> Outcome:
    """Run ``app`` to its end within ``limit`` seconds; keep what it raised."""
    wire = Wire()
    error: BaseException | None = None
    try:
        with anyio.fail_after(limit):
            await app(http_scope() if scope is None else scope, receive, send or wire.send)
    except BaseException as exc:  # the point is to see what escapes
        error = exc
    return Outcome(wire, error)


async def numbers(count: int, delay: float = 0.0) -> AsyncGenerator[ServerSentEvent, None]:
    """``count`` events with ids 0.., ``delay`` seconds apart."""
    for n in range(count):
        yield ServerSentEvent(str(n), id=str(n))
        if delay:
            await anyio.sleep(delay)


async def forever(delay: float = 0.01) -> AsyncGenerator[str, None]:
    """An endless source that awaits between events."""
    while True:
        yield "tick"
        await anyio.sleep(delay)


def leaf(exc: BaseException | None) -> BaseException | None:
    """The single exception inside (nested) one-member exception groups."""
    while exc is not None and hasattr(exc, "exceptions") and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class Boom(BaseException):
    """A ``BaseException`` that is neither a cancellation nor an interpreter exit."""


def any_message(kind: str, **extra: Any) -> Message:
    return {"type": kind, **extra}
