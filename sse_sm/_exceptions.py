"""Exceptions that user code may catch; all derive from :class:`SseSmError`.

This module imports nothing from the package, so that every other module,
the pure state machine included, can raise its exceptions.  Each exception
also derives from the built-in class that says what kind of failure it is
(``TimeoutError``, ``RuntimeError``), so code that catches those keeps
working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._state import State, Trigger

__all__ = ("SendTimeoutError", "SlowConsumerError", "SseSmError", "TransitionError")


class SseSmError(Exception):
    """The base of every exception sse_sm defines: ``except SseSmError`` catches them all."""


class SendTimeoutError(SseSmError, TimeoutError):
    """A send to the client took longer than ``send_timeout``.

    Raised out of the response (as sse-starlette does) after the connection is
    ``CLOSED`` with reason ``send_timeout`` and the source has been closed.  It
    is a :class:`TimeoutError`, so ``except TimeoutError`` catches it too.
    """


class SlowConsumerError(SseSmError):
    """Raised by a source to let go of a subscriber that fell too far behind.

    The connection closes with reason ``slow_consumer`` (``FELL_BEHIND`` in
    the table) and the response ends cleanly, so the browser's EventSource
    reconnects and can resume from its ``Last-Event-ID``.  Unlike other
    exceptions from the source it is not re-raised to the server: letting a
    slow client go is a policy decision, not a failure.
    """


class TransitionError(SseSmError, RuntimeError):
    """A trigger was fired in a state whose table row does not exist.

    This is always a bug in the driver (or in a hand-driven test), never a
    condition of the network: the state is left as it was.
    """

    def __init__(self, state: State, trigger: Trigger) -> None:
        super().__init__(f"can't handle trigger {trigger.name} in state {state.name}")
        self.state = state
        self.trigger = trigger
