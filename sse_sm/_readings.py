"""What a metrics exporter reads: sums over every live coordinator, hub and Redis backend.

No optional dependency: ``sse_sm.otel`` turns these readings into
OpenTelemetry observations, and anything else (a ``/stats`` endpoint, a
log line) may use them as they are.

Contracts:

* **Read, never counted.**  Every figure comes from a ``statistics()``
  snapshot taken when a reading is asked for; nothing here runs per event or
  per stream.
* **Any thread.**  Exporters read from their own threads (a periodic
  exporter's, a Prometheus scrape's) or from the event loop (an ASGI
  ``/metrics`` endpoint, a test).  :meth:`DrainCoordinator.statistics` and
  ``RedisBackend.statistics()`` may be called from any thread.
  :meth:`Hub.statistics` must run on its hub's loop: from that loop's thread
  it is called directly; from another thread it is handed to the loop and
  waited for, at most ``timeout`` seconds (a hub whose loop is busy that long
  is left out of that reading, never waited on forever); a hub whose loop
  has ended is read directly, since nothing can change it any more.
* **Sums, not series per object.**  Coordinators, hubs and backends are
  summed.  One that is garbage collected takes its counts with it, so a
  cumulative sum can go down; exporters report that as a counter reset.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

from ._admission import LIVE_STATES
from ._shutdown import every_coordinator
from ._state import CloseReason, State
from .hub._hub import Hub, every_hub
from .hub._types import HubStatistics

if TYPE_CHECKING:
    from .hub.redis import RedisBackend

__all__ = (
    "HUB_COUNTERS",
    "HubReading",
    "RedisReading",
    "StreamReading",
    "hub_statistics",
    "read_hubs",
    "read_redis",
    "read_streams",
)

logger = logging.getLogger("sse_sm.metrics")

#: The cumulative counters a hub and each of its topics keep, by field name.
HUB_COUNTERS: Final = ("published", "delivered", "replayed", "dropped", "gaps", "slow_disconnects")

_T = TypeVar("_T")


def _copy(collection: Callable[[], list[_T]]) -> list[_T]:
    """A list of a weak set, tolerating another thread adding to it meanwhile."""
    for _ in range(5):
        try:
            return collection()
        except RuntimeError:  # "set changed size during iteration": try again
            continue
    return []


# ------------------------------------------------------------------ streams


@final
@dataclass(frozen=True, slots=True)
class StreamReading:
    """Every live coordinator's :class:`~sse_sm.CoordinatorStatistics`, added up."""

    #: Live streams per state: ``OPEN``, ``STREAMING`` and ``DRAINING``.
    streams: dict[State, int]
    #: Closes per reason, every :class:`~sse_sm.CloseReason` a key.
    closes: dict[CloseReason, int]
    rejections: int
    events_sent: int
    pings_sent: int
    bytes_sent: int
    #: How many coordinators were read.
    coordinators: int


def read_streams() -> StreamReading:
    """Sum the statistics of every coordinator alive in the process (any thread)."""
    streams = dict.fromkeys(LIVE_STATES, 0)
    closes = dict.fromkeys(CloseReason, 0)
    rejections = events = pings = sent = 0
    coordinators = _copy(every_coordinator)
    for coordinator in coordinators:
        stats = coordinator.statistics()
        for state, count in stats.streams.items():
            streams[state] = streams.get(state, 0) + count
        for reason, count in stats.closes.items():
            closes[reason] = closes.get(reason, 0) + count
        rejections += stats.rejections
        events += stats.events_sent
        pings += stats.pings_sent
        sent += stats.bytes_sent
    return StreamReading(streams, closes, rejections, events, pings, sent, len(coordinators))


# ------------------------------------------------------------------ hubs


@final
@dataclass(slots=True)
class HubReading:
    """Every live hub's counters, added up, and per topic when asked for."""

    #: How many hubs were read (0: nothing to report).
    hubs: int = 0
    #: Sums of :data:`HUB_COUNTERS` over the hubs.
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(HUB_COUNTERS, 0))
    subscribers: int = 0
    buffered: int = 0
    #: Topic name to its counters, for topics with subscribers now (``per_topic``).
    topics: dict[str, dict[str, int]] = field(default_factory=dict)


def hub_statistics(hub: Hub, timeout: float) -> HubStatistics | None:
    """``hub.statistics()`` taken on its loop, from any thread; ``None`` if that timed out."""
    fanout = hub._fanout
    token = fanout.token
    if token is None or fanout.loop_thread == threading.get_ident():
        return hub.statistics()
    future: concurrent.futures.Future[HubStatistics] = concurrent.futures.Future()

    def take() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(hub.statistics())
        except BaseException as exc:
            future.set_exception(exc)

    native: Any = token.native_token
    run_sync_soon = getattr(native, "run_sync_soon", None)  # trio.lowlevel.TrioToken
    try:
        if run_sync_soon is not None:
            run_sync_soon(take)
        else:  # an asyncio event loop
            native.call_soon_threadsafe(take)
    except RuntimeError:
        # The loop has ended: nothing runs on it any more, so reading here is safe.
        return hub.statistics()
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        logger.debug("a hub's loop did not answer within %s s; left out of this reading", timeout)
        return None


def read_hubs(*, per_topic: bool, timeout: float) -> tuple[HubReading, list[Hub]]:
    """Sum the statistics of every hub alive in the process; also returns the hubs."""
    reading = HubReading()
    hubs = _copy(every_hub)
    totals = reading.totals
    for hub in hubs:
        stats = hub_statistics(hub, timeout)
        if stats is None:
            continue
        reading.hubs += 1
        for name in HUB_COUNTERS:
            totals[name] += getattr(stats, name)
        reading.subscribers += stats.subscribers
        reading.buffered += stats.buffered
        if per_topic:
            for topic, topic_stats in stats.topics.items():
                counts = reading.topics.setdefault(
                    topic, {**dict.fromkeys(HUB_COUNTERS, 0), "subscribers": 0, "buffered": 0}
                )
                for name in (*HUB_COUNTERS, "subscribers", "buffered"):
                    counts[name] += getattr(topic_stats, name)
    return reading, hubs


# ------------------------------------------------------------------ Redis


@final
@dataclass(frozen=True, slots=True)
class RedisReading:
    """Every Redis backend a live hub uses, added up (each backend once)."""

    backends: int
    reconnects: int
    errors: int
    #: The largest lag of the backends that have read something; ``None`` if none has.
    lag: float | None


def read_redis(hubs: Iterable[Hub]) -> RedisReading:
    """The Redis backends of ``hubs`` (found only if ``sse_sm.hub.redis`` is imported)."""
    module = sys.modules.get("sse_sm.hub.redis")
    if module is None:  # no RedisBackend can exist: nothing imported it
        return RedisReading(0, 0, 0, None)
    backend_class: type[RedisBackend] = module.RedisBackend
    backends = {id(hub.backend): hub.backend for hub in hubs}
    reconnects = errors = count = 0
    lag: float | None = None
    for backend in backends.values():
        if not isinstance(backend, backend_class):
            continue
        stats = backend.statistics()
        count += 1
        reconnects += stats.reconnects
        errors += stats.errors
        if stats.lag is not None:
            lag = stats.lag if lag is None else max(lag, stats.lag)
    return RedisReading(count, reconnects, errors, lag)
