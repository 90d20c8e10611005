"""How long one producer may hold the event loop: shared by every loop that never waits.

A stream whose source never awaits, and a hub publisher fanning out to many
subscribers without suspending, would otherwise keep the loop from every
other connection, from disconnect detection and from shutdown: uvicorn's
``send()`` returns without suspending while the socket's buffer has room, so
nothing else forces a switch.  Each such loop hands the loop back after a slice
of time or a number of items, whichever comes first.
"""

from __future__ import annotations

from typing import Final

__all__ = ("FAIRNESS_EVENTS", "FAIRNESS_SLICE")

#: Longest run, in seconds, without handing the loop to others.
FAIRNESS_SLICE: Final = 0.002
#: Most items handled without a checkpoint, for clocks that do not move (MockClock).
FAIRNESS_EVENTS: Final = 1024
