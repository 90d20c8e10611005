"""The watcher's deadline arithmetic, as pure functions of the clock and a few facts.

The watcher (``_connection.Connection._watch``) sleeps in ``receive()`` until
the earliest of three deadlines, then decides what is due.  Both steps depend
only on the current time, when the last send started, whether a send is in
progress, when the stream's lifetime runs out, and the two settings, so they
live here, with no event loop, and are tested as plain arithmetic.

* **Ping.**  A ping is due ``ping_interval`` seconds after the last traffic.
  A send in progress *is* traffic: while one runs, look again a full interval
  from now, and never ping over it.
* **Send timeout.**  While a send runs, it is overdue ``send_timeout`` seconds
  after it started.  While none runs, the earliest a send could become
  overdue is ``send_timeout`` from now, so that is when to look again.
* **Lifetime.**  ``expires_at`` is an absolute time (the driver arms it when
  the stream starts, and disarms it, back to ``inf``, once it drains).  It
  is due even while a send runs: a rotation drains like a shutdown, whose
  grace also cuts a blocked send.  Only an overdue send wins over it (that
  closes the connection at once).

``math.inf`` means "no deadline" (pings off, no send timeout, no lifetime).
"""

from __future__ import annotations

import enum
import math

__all__ = ("Due", "due", "next_wake")


class Due(enum.Enum):
    """What the watcher found due when its deadline passed."""

    NOTHING = "nothing"
    SEND_OVERDUE = "send_overdue"
    LIFETIME = "lifetime"
    PING = "ping"


def next_wake(
    now: float,
    *,
    last_send_at: float,
    sending: bool,
    ping_interval: float,
    send_timeout: float | None,
    expires_at: float = math.inf,
) -> float:
    """When the watcher should next look, in the clock's time (``inf``: never)."""
    wake_at = expires_at
    if ping_interval > 0:
        wake_at = min(wake_at, (now if sending else last_send_at) + ping_interval)
    if send_timeout is not None:
        wake_at = min(wake_at, (last_send_at if sending else now) + send_timeout)
    return wake_at


def due(
    now: float,
    *,
    last_send_at: float,
    sending: bool,
    ping_interval: float,
    send_timeout: float | None,
    expires_at: float = math.inf,
) -> Due:
    """What is due at ``now``: an overdue send, else the lifetime's end, else a ping
    (never while sending)."""
    # Each comparison is against the very sum next_wake computed, not a
    # difference: ``0.06 + 0.01 < 0.07`` but ``(0.06 + 0.01) - 0.06 < 0.01``,
    # and a watcher woken at its deadline must find that deadline due, or it
    # computes the same passed deadline again and spins.
    if sending and send_timeout is not None and now >= last_send_at + send_timeout:
        return Due.SEND_OVERDUE
    if now >= expires_at:
        return Due.LIFETIME
    if sending:
        return Due.NOTHING
    if ping_interval > 0 and now >= last_send_at + ping_interval:
        return Due.PING
    return Due.NOTHING
