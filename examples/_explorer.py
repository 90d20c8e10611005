"""What the demo's explorer shows: every connection the demo made, and its transitions.

The demo gives each response it creates an ``on_transition`` hook from
:meth:`Explorer.track`.  The hook runs synchronously inside the state
machine's ``fire()`` on the event loop, so it only records: the connection's
new state, one line in the list of recent transitions, and a count per arc of
the table.  Then it wakes the ``/explorer`` streams, which send a fresh
:meth:`Explorer.snapshot` to every open page.

Self-loops (``EVENT_SENT``, ``PING_SENT``) are not transitions (they only
increment a counter, see ``sse_sm/_state.py``), so the hook never sees them;
the per-connection figures come from ``response.statistics()`` instead.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, final

import anyio

from sse_sm import TRANSITIONS, EventSourceResponse, State, Transition

from ._diagram_svg import arc_key

__all__ = ("Explorer", "Tracked")

#: The close reason each arc into CLOSED records, looked up by the arc's key.
_CLOSE_REASON: Final = {
    arc_key(arc): arc.close_reason.value for arc in TRANSITIONS if arc.close_reason is not None
}
#: Closed connections kept in the connection list, newest first.
CLOSED_KEPT: Final = 10


@final
@dataclass(eq=False)
class Tracked:
    """One connection as the explorer sees it."""

    number: int
    #: What the demo made it for: ``ticker``, ``explorer``, ``stall``, ``fail``.
    kind: str
    #: The page's id for itself (``?client=``), when it gave one.
    client: str | None
    #: The id the client resumed after (``Last-Event-ID``), if any.
    resumed_from: str | None
    state: State = State.OPEN
    close_reason: str | None = None
    opened_at: float = field(default_factory=time.time)
    response: EventSourceResponse | None = None
    #: How the demo ends this connection from the server's side, if it can.
    end: Callable[[], None] | None = None

    def describe(self) -> dict[str, Any]:
        stats = self.response.statistics() if self.response is not None else None
        return {
            "number": self.number,
            "kind": self.kind,
            "client": self.client,
            "resumed_from": self.resumed_from,
            "state": self.state.name,
            "close_reason": self.close_reason,
            "events_sent": stats.events_sent if stats is not None else 0,
            "pings_sent": stats.pings_sent if stats is not None else 0,
            "bytes_sent": stats.bytes_sent if stats is not None else 0,
            "age": round(time.time() - self.opened_at, 1),
        }


@final
class Explorer:
    """Connections by state, transitions by arc, and the recent ones in order.

    Lives as long as the app.  Everything but :meth:`wait_for_change` is
    synchronous and never suspends, so it can run inside an ``on_transition``
    hook.
    """

    def __init__(self, *, recent: int = 40) -> None:
        self._numbers = 0
        self._open: dict[int, Tracked] = {}
        self._closed: deque[Tracked] = deque(maxlen=CLOSED_KEPT)
        self._closed_total = 0
        self._arc_counts: Counter[str] = Counter()
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent)
        self._sequence = 0
        #: Bumped by every change, so a reader can tell whether it missed one.
        self._version = 0
        #: Set at the next change; created on the loop, by the first waiter.
        self._changed: anyio.Event | None = None

    # ------------------------------------------------------------ recording

    def track(
        self, kind: str, *, client: str | None = None, resumed_from: str | None = None
    ) -> Tracked:
        """Register a connection about to be created (it starts in ``OPEN``)."""
        self._numbers += 1
        tracked = Tracked(self._numbers, kind, client, resumed_from)
        self._open[tracked.number] = tracked
        self._notify()
        return tracked

    def hook(self, tracked: Tracked) -> Callable[[Transition], None]:
        """The ``on_transition=`` callable for ``tracked``'s response."""

        def on_transition(transition: Transition) -> None:
            self.record(tracked, transition)

        return on_transition

    def record(self, tracked: Tracked, transition: Transition) -> None:
        """Note one change of state of ``tracked``."""
        key = f"{transition.source.name}:{transition.trigger.name}"
        tracked.state = transition.target
        self._arc_counts[key] += 1
        self._sequence += 1
        self._recent.appendleft(
            {
                "seq": self._sequence,
                "at": datetime.now().strftime("%H:%M:%S.%f")[:-3],
                "number": tracked.number,
                "kind": tracked.kind,
                "source": transition.source.name,
                "trigger": transition.trigger.name,
                "target": transition.target.name,
                "close_reason": _CLOSE_REASON.get(key),
                "reason": transition.reason,
            }
        )
        if transition.target is State.CLOSED:
            tracked.close_reason = _CLOSE_REASON.get(key)
            self._open.pop(tracked.number, None)
            self._closed.appendleft(tracked)
            self._closed_total += 1
        self._notify()

    def _notify(self) -> None:
        self._version += 1
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    @property
    def version(self) -> int:
        """A number that changes whenever anything the snapshot shows changes."""
        return self._version

    async def wait_for_change(self, seen: int) -> None:
        """Return once :attr:`version` differs from ``seen`` (at once if it already does)."""
        if self._version != seen:
            return
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    # ------------------------------------------------------------ reading

    def open_connections(self, kind: str | None = None) -> list[Tracked]:
        return [t for t in self._open.values() if kind is None or t.kind == kind]

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, as JSON-ready data."""
        states = dict.fromkeys((state.name for state in State), 0)
        for tracked in self._open.values():
            states[tracked.state.name] += 1
        states[State.CLOSED.name] = self._closed_total
        connections = [t.describe() for t in reversed(self._open.values())]
        connections += [t.describe() for t in self._closed]
        return {
            "states": states,
            "arcs": dict(self._arc_counts),
            "recent": list(self._recent),
            "connections": connections,
        }
