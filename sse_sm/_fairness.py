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

__all__ = ("FAIRNESS_EVENTS", "FAIRNESS_SLICE", "PUBLISH_EVENTS", "PUBLISH_SLICE")

#: Longest run, in seconds, without handing the loop to others.
FAIRNESS_SLICE: Final = 0.002
#: Most items handled without a checkpoint, for clocks that do not move (MockClock).
FAIRNESS_EVENTS: Final = 1024
#: Longest run of a hub publisher without handing the loop back.  Longer than
#: a stream's slice on purpose: one publish reaches every subscriber (about
#: 1 ms for 10,000 of them here), and each hand-back lets every subscriber
#: with news run once.  After a 2 ms slice each of those wakes carried one or
#: two events; after 20 ms it carries a backlog that goes out in one send.
#: In process, 10,000 subscribers: 49 k deliveries per CPU second with 2 ms,
#: 105 k with 10 ms, 136 k with 20 ms (``python -m bench.fanout --sizes 10000
#: --impls sse_sm``).  The price: other tasks may wait up to 20 ms behind a
#: publishing burst.
PUBLISH_SLICE: Final = 0.020
#: Most publishes (or entries a Redis reader delivers) without a hand-back.
#: Below a stream's budget because the slice above is longer: with few
#: subscribers a publish costs microseconds, and 1,024 of them in a row
#: could fill a 1,100-event buffer before its consumer, which may need two
#: turns to get going, has run at all.
PUBLISH_EVENTS: Final = 256
