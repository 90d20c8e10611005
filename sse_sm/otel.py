"""OpenTelemetry metrics for sse_sm: the ``sse_sm[otel]`` extra.

>>> import sse_sm.otel
>>> sse_sm.otel.instrument()  # doctest: +SKIP

One call turns the metrics on, for the global ``MeterProvider`` or the one
given; ``docs/metrics.md`` lists every instrument, its unit, its attributes
and what it means, and shows how to expose them to Prometheus.  Only
``opentelemetry-api`` is needed at run time; an SDK (or a distribution)
configured by the application decides where the figures go.

Contracts:

* **Nothing per event when off.**  Every instrument but one is observable:
  its callback reads ``statistics()`` of every live coordinator, hub and
  Redis backend when the SDK collects, so the streams do no work for it.
  The send-duration histogram needs the driver to time each send; a stream
  checks once, when it starts, whether metrics are on, and only then sends
  through a timing wrapper (``sse_sm._hooks``).  Streams that started
  before :func:`instrument` are counted but their sends are not timed.
  With ``send_duration=False`` even that is skipped: metrics on, and the
  streams' path the same as with metrics off.
* **Metrics never break a stream.**  An instrument that raises when it
  records, or a callback whose reading fails, is logged and skipped.
* **Idempotent.**  :func:`instrument` again with the same provider (and
  options) changes nothing; with another provider it moves the metrics
  there.  :func:`uninstrument` stops every callback from observing and
  stops timing at once, for streams already running too.  An SDK cannot
  forget an instrument, so instruments made for a provider are kept and
  reused when it is instrumented again.
* **Thread safety.**  :func:`instrument` and :func:`uninstrument` may be
  called from any thread; the callbacks run on the SDK's collecting thread
  and read the hubs on their own loops (see ``sse_sm._readings``).
* **Cardinality.**  Attributes take a handful of values (states, close
  reasons), except ``sse_sm.hub.topic``, one value per topic, which is
  therefore off unless ``per_topic=True``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Final, Generic, TypeVar, final

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, MeterProvider, Observation

from . import __version__, _hooks, _readings
from ._readings import HUB_COUNTERS, HubReading, RedisReading, StreamReading

__all__ = (
    "METER_NAME",
    "instrument",
    "is_instrumented",
    "uninstrument",
)

logger = logging.getLogger("sse_sm.metrics")

#: The instrumentation scope of every instrument.
METER_NAME: Final = "sse_sm"
#: Seconds a collection waits for a hub's loop to read it (see ``sse_sm._readings``).
HUB_READ_TIMEOUT: Final = 1.0
#: Value of ``sse_sm.hub.topic`` for counts of topics that have no subscriber now.
OTHER_TOPICS: Final = "_OTHER"
#: Histogram buckets for one send, in seconds: a send to a reading client returns in
#: microseconds; one to a slow client waits for the socket.
SEND_BUCKETS: Final = (
    1e-6,
    5e-6,
    1e-5,
    5e-5,
    1e-4,
    5e-4,
    1e-3,
    5e-3,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
)

STATE: Final = "sse_sm.stream.state"
CLOSE_REASON: Final = "sse_sm.stream.close_reason"
TOPIC: Final = "sse_sm.hub.topic"

_T = TypeVar("_T")


@final
class _Shared(Generic[_T]):
    """One reading per collection, shared by the instruments that report parts of it.

    Each instrument's callback runs once per collection.  The first to run
    in a collection finds that it has already read the current reading (in
    the previous collection) and takes a new one; the others reuse it.  So
    one reading serves every instrument, whatever order the SDK calls them in.
    """

    __slots__ = ("_lock", "_readers", "_take", "_value")

    def __init__(self, take: Callable[[], _T]) -> None:
        self._take = take
        self._lock = threading.Lock()
        self._value: _T | None = None
        self._readers: set[str] = set()

    def get(self, reader: str) -> _T:
        with self._lock:
            value = self._value
            if value is not None and reader not in self._readers:
                self._readers.add(reader)
                return value
        # Taken outside the lock: reading a hub may wait for its loop.
        value = self._take()
        with self._lock:
            self._value = value
            self._readers = {reader}
        return value


@final
class _Instrumentation:
    """The instruments made for one meter provider, and whether they report."""

    def __init__(self, meter: Meter) -> None:
        self.active = False
        self.per_topic = False
        self._failed: set[str] = set()
        self._streams = _Shared(_readings.read_streams)
        self._hubs = _Shared(self._read_hubs)
        self._send_duration: Histogram = meter.create_histogram(
            "sse_sm.stream.send.duration",
            unit="s",
            description="Time one event's send took (the server's send() returning).",
            explicit_bucket_boundaries_advisory=SEND_BUCKETS,
        )
        up_down = meter.create_observable_up_down_counter
        counter = meter.create_observable_counter
        up_down(
            "sse_sm.stream.count",
            [self._observing("streams", self._stream_count)],
            unit="{stream}",
            description="Streams alive now, per state.",
        )
        counter(
            "sse_sm.stream.closed",
            [self._observing("closed", self._stream_closes)],
            unit="{stream}",
            description="Streams closed, per close reason.",
        )
        stream_counters = (
            ("rejected", "rejections", "{request}", "Requests refused by admission control."),
            ("sent.events", "events_sent", "{event}", "Events sent by the streams."),
            ("sent.pings", "pings_sent", "{ping}", "Keep-alive pings sent by the streams."),
            ("sent.bytes", "bytes_sent", "By", "Body bytes sent: events, pings, farewells."),
        )
        for suffix, attribute, unit, description in stream_counters:
            counter(
                f"sse_sm.stream.{suffix}",
                [self._observing(suffix, self._stream_total(attribute))],
                unit=unit,
                description=description,
            )
        hub_counters = {
            "published": ("{event}", "Events published through the hubs."),
            "delivered": ("{event}", "Events yielded to subscribers, replayed ones included."),
            "replayed": ("{event}", "Of the events delivered, those replayed from the store."),
            "dropped": ("{event}", "Events a slow-consumer policy discarded, per subscriber."),
            "gaps": ("{gap}", "sse_sm.gap signals yielded to subscribers."),
            "slow_disconnects": ("{subscriber}", "Subscribers let go for being slow."),
        }
        assert tuple(hub_counters) == HUB_COUNTERS
        for name, (unit, description) in hub_counters.items():
            counter(
                f"sse_sm.hub.{name}",
                [self._observing(f"hub.{name}", self._hub_counter(name))],
                unit=unit,
                description=description,
            )
        for name, unit, description in (
            ("subscribers", "{subscriber}", "Subscriptions joined now."),
            ("buffered", "{event}", "Events waiting in subscribers' buffers now."),
        ):
            up_down(
                f"sse_sm.hub.{name}",
                [self._observing(f"hub.{name}", self._hub_gauge(name))],
                unit=unit,
                description=description,
            )
        for name, unit, description in (
            ("reconnects", "{reconnect}", "Times a Redis reader read again after failures."),
            ("errors", "{error}", "Failed Redis commands, of readers and publishers."),
        ):
            counter(
                f"sse_sm.redis.{name}",
                [self._observing(f"redis.{name}", self._redis_counter(name))],
                unit=unit,
                description=description,
            )
        meter.create_observable_gauge(
            "sse_sm.redis.lag",
            [self._observing("redis.lag", self._redis_lag)],
            unit="s",
            description="Age of the newest entry a Redis reader read, when it read it.",
        )

    # ------------------------------------------------------------ the hook

    def record_send(self, seconds: float) -> None:
        """The driver's send recorder (``sse_sm._hooks``); stops with :func:`uninstrument`."""
        if self.active:
            self._send_duration.record(seconds)

    # ------------------------------------------------------------ callbacks

    def _observing(
        self, name: str, observe: Callable[[str], Iterable[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        """A callback for the SDK: nothing when inactive, and never an exception."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            if not self.active:
                return ()
            try:
                return list(observe(name))
            except Exception:
                if name not in self._failed:
                    self._failed.add(name)
                    logger.warning("reading metric %s raised (logged once)", name, exc_info=True)
                return ()

        return callback

    def _stream_count(self, name: str) -> Iterable[Observation]:
        reading = self._streams.get(name)
        for state, count in reading.streams.items():
            yield Observation(count, {STATE: state.value})

    def _stream_closes(self, name: str) -> Iterable[Observation]:
        reading = self._streams.get(name)
        for reason, count in reading.closes.items():
            yield Observation(count, {CLOSE_REASON: reason.value})

    def _stream_total(self, attribute: str) -> Callable[[str], Iterable[Observation]]:
        def observe(name: str) -> Iterable[Observation]:
            reading: StreamReading = self._streams.get(name)
            yield Observation(getattr(reading, attribute))

        return observe

    def _read_hubs(self) -> tuple[HubReading, RedisReading]:
        hubs, found = _readings.read_hubs(per_topic=self.per_topic, timeout=HUB_READ_TIMEOUT)
        return hubs, _readings.read_redis(found)

    def _hub_counter(self, counter: str) -> Callable[[str], Iterable[Observation]]:
        def observe(name: str) -> Iterable[Observation]:
            reading, _ = self._hubs.get(name)
            if not reading.hubs:
                return
            total = reading.totals[counter]
            if not self.per_topic:
                yield Observation(total)
                return
            # The topics with subscribers now, and the rest under one value,
            # so the series of a counter add up to the hubs' total.
            for topic, counts in reading.topics.items():
                total -= counts[counter]
                yield Observation(counts[counter], {TOPIC: topic})
            yield Observation(total, {TOPIC: OTHER_TOPICS})

        return observe

    def _hub_gauge(self, gauge: str) -> Callable[[str], Iterable[Observation]]:
        def observe(name: str) -> Iterable[Observation]:
            reading, _ = self._hubs.get(name)
            if not reading.hubs:
                return
            if not self.per_topic:
                yield Observation(
                    reading.subscribers if gauge == "subscribers" else reading.buffered
                )
                return
            for topic, counts in reading.topics.items():
                yield Observation(counts[gauge], {TOPIC: topic})

        return observe

    def _redis_counter(self, counter: str) -> Callable[[str], Iterable[Observation]]:
        def observe(name: str) -> Iterable[Observation]:
            _, redis = self._hubs.get(name)
            if redis.backends:
                yield Observation(redis.reconnects if counter == "reconnects" else redis.errors)

        return observe

    def _redis_lag(self, name: str) -> Iterable[Observation]:
        _, redis = self._hubs.get(name)
        if redis.lag is not None:
            yield Observation(redis.lag)


_lock = threading.Lock()
#: The instrumentation reporting now, if any.
_current: _Instrumentation | None = None
#: Instruments already made, per provider: an SDK cannot forget them, so they are reused.
_made: weakref.WeakKeyDictionary[MeterProvider, _Instrumentation] = weakref.WeakKeyDictionary()


def instrument(
    meter_provider: MeterProvider | None = None,
    *,
    per_topic: bool = False,
    send_duration: bool = True,
) -> None:
    """Report sse_sm's metrics to ``meter_provider`` (default: the global one).

    Idempotent; calling it with another provider moves the metrics there.
    Streams that start from now on time their sends (unless
    ``send_duration=False``); all streams, hubs and Redis backends are counted.

    Args:
        meter_provider: where the instruments are made; ``None`` for
            ``opentelemetry.metrics.get_meter_provider()`` (a proxy until the
            application sets one, which it then forwards to).
        per_topic: give the hub's metrics a ``sse_sm.hub.topic`` attribute,
            one series per topic: only for a bounded number of topics.
        send_duration: time every event's send into the
            ``sse_sm.stream.send.duration`` histogram.  That is the one
            per-event cost of metrics, and it is the SDK's: recording one
            value costs the OpenTelemetry Python SDK a few microseconds,
            several times what sending a small event costs sse_sm (see
            docs/metrics.md).  ``False`` leaves the streams' path exactly as
            with metrics off; every other instrument still reports.

    Raises:
        TypeError: ``per_topic`` or ``send_duration`` is not a bool.
        Whatever the provider raises while making the instruments; then
        nothing was changed.
    """
    global _current
    for name, value in (("per_topic", per_topic), ("send_duration", send_duration)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    provider = metrics.get_meter_provider() if meter_provider is None else meter_provider
    with _lock:
        made = _made.get(provider)
        if made is None:
            made = _Instrumentation(metrics.get_meter(METER_NAME, __version__, provider))
            _made[provider] = made
        if _current is not None and _current is not made:
            _current.active = False
        made.per_topic = per_topic
        made.active = True
        _current = made
        _hooks.set_send_recorder(made.record_send if send_duration else None)


def uninstrument() -> None:
    """Stop reporting: callbacks observe nothing and no send is timed any more.  Idempotent."""
    global _current
    with _lock:
        if _current is not None:
            _current.active = False
            _current = None
        _hooks.set_send_recorder(None)


def is_instrumented() -> bool:
    """Whether :func:`instrument` is in effect."""
    return _current is not None
