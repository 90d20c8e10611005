"""The one hook the driver offers a metrics exporter: timing each event's send.

Everything else an exporter reports (streams per state, closes, bytes, the
hub's and the Redis backend's counters) it reads from ``statistics()``
snapshots when it is asked for them, so the driver does nothing for it.  The
duration of each send is the one fact no snapshot keeps, so the driver asks
this module, once per stream, whether anybody wants it:

* **Zero cost when off.**  :data:`send_recorder` is read once, when a
  stream's pump starts.  While it is ``None`` the pump uses the server's
  ``send`` as it is: no wrapper, no clock read and no branch per event.  A
  recorder set later times only the streams that start after it.
* **Never breaks a stream.**  A recorder that raises is logged (once with its
  traceback, then at DEBUG) and the event counts as sent: metrics are
  advisory, the stream is not.
* **Thread safety.**  Set and cleared with :func:`set_send_recorder` from any
  thread: one global assignment, seen by the streams that start after it.

This module imports nothing optional; ``sse_sm.otel`` sets the recorder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import Message, Send

__all__ = ("SendRecorder", "send_recorder", "set_send_recorder", "timed_send")

logger = logging.getLogger("sse_sm.metrics")

#: Called with the seconds one event's ``send`` took.
SendRecorder = Callable[[float], None]

#: The recorder streams starting now use, or ``None``: metrics off.
send_recorder: SendRecorder | None = None
#: Whether the current recorder's failure was logged with its traceback.
_failure_logged = False


def set_send_recorder(recorder: SendRecorder | None) -> None:
    """Time the sends of streams that start from now on (``None``: stop timing new streams)."""
    global send_recorder, _failure_logged
    send_recorder = recorder
    _failure_logged = False


def timed_send(send: Send, record: SendRecorder) -> Send:
    """``send``, reporting how long each call took to ``record`` (after it returned).

    A send that raises (a client gone, a cancellation) is not recorded and its
    exception propagates unchanged.  ``record`` raising is logged, never raised.
    """
    clock = time.perf_counter

    async def send_timed(message: Message) -> None:
        started = clock()
        await send(message)
        elapsed = clock() - started
        try:
            record(elapsed)
        except Exception:
            _recorder_failed()

    return send_timed


def _recorder_failed() -> None:
    global _failure_logged
    if _failure_logged:
        logger.debug("recording a send's duration raised again", exc_info=True)
        return
    _failure_logged = True
    logger.warning(
        "recording a send's duration raised; the stream goes on (logged once)", exc_info=True
    )
