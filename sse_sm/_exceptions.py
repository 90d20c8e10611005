"""Exceptions that user code may catch.

``TransitionError`` lives in ``_state`` beside the table it enforces and is
re-exported here so that all of the package's exceptions import from one place.
"""

from __future__ import annotations

from ._state import TransitionError

__all__ = ("SendTimeoutError", "TransitionError")


class SendTimeoutError(TimeoutError):
    """A send to the client took longer than ``send_timeout``.

    Raised out of the response (as sse-starlette does) after the connection is
    ``CLOSED`` with reason ``send_timeout`` and the source has been closed.  It
    is a :class:`TimeoutError`, so ``except TimeoutError`` catches it too.
    """
