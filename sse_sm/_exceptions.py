"""Exceptions that user code may catch.

``TransitionError`` lives in ``_state`` beside the table it enforces and is
re-exported here so that all of the package's exceptions import from one place.
"""

from __future__ import annotations

from ._state import TransitionError

__all__ = ("SendTimeoutError", "SlowConsumerError", "TransitionError")


class SendTimeoutError(TimeoutError):
    """A send to the client took longer than ``send_timeout``.

    Raised out of the response (as sse-starlette does) after the connection is
    ``CLOSED`` with reason ``send_timeout`` and the source has been closed.  It
    is a :class:`TimeoutError`, so ``except TimeoutError`` catches it too.
    """


class SlowConsumerError(Exception):
    """Raised by a source to let go of a subscriber that fell too far behind.

    The connection closes with reason ``slow_consumer`` (``FELL_BEHIND`` in
    the table) and the response ends cleanly, so the browser's EventSource
    reconnects and can resume from its ``Last-Event-ID``.  Unlike other
    exceptions from the source it is not re-raised to the server: letting a
    slow client go is a policy decision, not a failure.
    """
