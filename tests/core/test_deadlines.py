"""The watcher's deadline arithmetic, tested as arithmetic: no event loop."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_sm import CloseReason, EventSourceResponse, _connection
from sse_sm._deadlines import Due, due, next_wake
from sse_sm.testing import stream


def test_no_pings_and_no_send_timeout_means_no_deadline() -> None:
    assert next_wake(5.0, last_send_at=1.0, sending=False, ping_interval=0, send_timeout=None) == (
        math.inf
    )


def test_idle_the_ping_is_due_an_interval_after_the_last_send() -> None:
    kwargs: dict[str, Any] = {
        "last_send_at": 10.0,
        "sending": False,
        "ping_interval": 15.0,
        "send_timeout": None,
    }
    assert next_wake(12.0, **kwargs) == 25.0
    assert due(24.999, **kwargs) is Due.NOTHING
    assert due(25.0, **kwargs) is Due.PING


def test_a_send_in_progress_is_traffic_no_ping_over_it() -> None:
    kwargs: dict[str, Any] = {
        "last_send_at": 10.0,
        "sending": True,
        "ping_interval": 15.0,
        "send_timeout": None,
    }
    assert next_wake(40.0, **kwargs) == 55.0  # a full interval from now
    assert due(1000.0, **kwargs) is Due.NOTHING


def test_a_send_is_overdue_send_timeout_after_it_started() -> None:
    kwargs: dict[str, Any] = {
        "last_send_at": 10.0,
        "sending": True,
        "ping_interval": 15.0,
        "send_timeout": 2.0,
    }
    assert next_wake(11.0, **kwargs) == 12.0
    assert due(11.999, **kwargs) is Due.NOTHING
    assert due(12.0, **kwargs) is Due.SEND_OVERDUE


def test_idle_with_a_send_timeout_looks_again_a_timeout_from_now() -> None:
    kwargs: dict[str, Any] = {
        "last_send_at": 10.0,
        "sending": False,
        "ping_interval": 0,
        "send_timeout": 2.0,
    }
    assert next_wake(50.0, **kwargs) == 52.0
    assert due(52.0, **kwargs) is Due.NOTHING  # nothing is being sent


def test_the_earlier_deadline_wins() -> None:
    assert next_wake(10.0, last_send_at=9.0, sending=False, ping_interval=5, send_timeout=30) == 14
    assert next_wake(10.0, last_send_at=9.0, sending=True, ping_interval=5, send_timeout=3) == 12


def test_the_lifetime_is_a_deadline_of_its_own() -> None:
    kwargs: dict[str, Any] = {
        "last_send_at": 10.0,
        "sending": False,
        "ping_interval": 0,
        "send_timeout": None,
        "expires_at": 70.0,
    }
    assert next_wake(12.0, **kwargs) == 70.0
    assert due(69.999, **kwargs) is Due.NOTHING
    assert due(70.0, **kwargs) is Due.LIFETIME
    assert due(1e9, **kwargs) is Due.LIFETIME


def test_the_earliest_of_ping_send_timeout_and_lifetime_wins() -> None:
    base: dict[str, Any] = {"last_send_at": 9.0, "ping_interval": 5, "send_timeout": 3}
    assert next_wake(10.0, sending=False, expires_at=11.5, **base) == 11.5
    assert next_wake(10.0, sending=False, expires_at=30.0, **base) == 13.0
    assert next_wake(10.0, sending=True, expires_at=30.0, **base) == 12.0


def test_an_unarmed_lifetime_changes_nothing() -> None:
    for sending in (False, True):
        kwargs: dict[str, Any] = {
            "last_send_at": 9.0,
            "sending": sending,
            "ping_interval": 5,
            "send_timeout": 3,
        }
        for now in (9.0, 12.0, 14.0, 100.0):
            assert next_wake(now, **kwargs) == next_wake(now, expires_at=math.inf, **kwargs)
            assert due(now, **kwargs) is due(now, expires_at=math.inf, **kwargs)


def test_the_lifetime_falls_due_while_a_send_is_blocked() -> None:
    """A rotation drains like a shutdown: its grace also cuts a blocked send."""
    kwargs: dict[str, Any] = {
        "last_send_at": 10.0,
        "sending": True,
        "ping_interval": 5,
        "send_timeout": None,
        "expires_at": 20.0,
    }
    assert next_wake(18.0, **kwargs) == 20.0
    assert due(20.0, **kwargs) is Due.LIFETIME


def test_an_overdue_send_wins_over_the_lifetime_and_the_lifetime_over_a_ping() -> None:
    overdue: dict[str, Any] = {"last_send_at": 0.0, "ping_interval": 1.0, "send_timeout": 2.0}
    assert due(50.0, sending=True, expires_at=10.0, **overdue) is Due.SEND_OVERDUE
    assert due(50.0, sending=False, expires_at=10.0, **overdue) is Due.LIFETIME
    assert due(50.0, sending=False, **overdue) is Due.PING


times = st.floats(min_value=0, max_value=1e9, allow_nan=False)
intervals = st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1e6))
timeouts = st.one_of(st.none(), st.floats(min_value=1e-6, max_value=1e6))
lifetimes = st.one_of(st.just(math.inf), st.floats(min_value=0, max_value=2e6))


@settings(max_examples=300, deadline=None)
@given(
    start=times,
    elapsed=st.floats(min_value=0, max_value=1e6),
    sending=st.booleans(),
    ping_interval=intervals,
    send_timeout=timeouts,
    lifetime=lifetimes,
)
def test_nothing_is_due_before_the_wake_and_something_due_is_never_missed(
    start: float,
    elapsed: float,
    sending: bool,
    ping_interval: float,
    send_timeout: float | None,
    lifetime: float,
) -> None:
    """Between a look at ``now`` and the deadline it computes, nothing new falls due;
    and whatever is due at some time is due at the deadline computed before it."""
    now = start + elapsed
    kwargs: dict[str, Any] = {
        "last_send_at": start,
        "sending": sending,
        "ping_interval": ping_interval,
        "send_timeout": send_timeout,
        "expires_at": start + lifetime,
    }
    wake_at = next_wake(now, **kwargs)
    assert wake_at >= now or due(now, **kwargs) is not Due.NOTHING
    found = due(now, **kwargs)
    if found is not Due.NOTHING:
        # A watcher that looked at any earlier time woke no later than now.
        for earlier in (start, (start + now) / 2):
            assert next_wake(earlier, **kwargs) <= now or math.isclose(
                next_wake(earlier, **kwargs), now, rel_tol=1e-12, abs_tol=1e-9
            )


@pytest.mark.parametrize("sending", [False, True])
def test_a_ping_is_never_due_while_sending(sending: bool) -> None:
    found = due(100.0, last_send_at=0.0, sending=sending, ping_interval=1.0, send_timeout=None)
    assert (found is Due.PING) is (not sending)


def test_woken_at_its_own_deadline_the_watcher_finds_it_due() -> None:
    """``0.06 + 0.01`` rounds to ``0.06999999999999999``, and that minus ``0.06``
    is below ``0.01``: a ``due`` that subtracted found nothing due at the very
    deadline ``next_wake`` gave, so the watcher computed the same, passed,
    deadline again and spun (forever on trio's MockClock, whose time does not
    move while a task runs)."""
    idle: dict[str, Any] = {
        "last_send_at": 0.06,
        "sending": False,
        "ping_interval": 0.01,
        "send_timeout": None,
    }
    assert due(next_wake(0.06, **idle), **idle) is Due.PING
    sending: dict[str, Any] = {
        "last_send_at": 0.06,
        "sending": True,
        "ping_interval": 0,
        "send_timeout": 0.01,
    }
    assert due(next_wake(0.06, **sending), **sending) is Due.SEND_OVERDUE


@settings(max_examples=500, deadline=None)
@given(
    start=times,
    elapsed=st.floats(min_value=0, max_value=1e6),
    sending=st.booleans(),
    ping_interval=intervals,
    send_timeout=timeouts,
    lifetime=lifetimes,
)
def test_a_watcher_woken_at_its_deadline_never_finds_nothing_to_do_twice(
    start: float,
    elapsed: float,
    sending: bool,
    ping_interval: float,
    send_timeout: float | None,
    lifetime: float,
) -> None:
    """At the deadline it computed, either something is due or the next deadline
    is later: the watcher cannot spin on one instant."""
    now = start + elapsed
    kwargs: dict[str, Any] = {
        "last_send_at": start,
        "sending": sending,
        "ping_interval": ping_interval,
        "send_timeout": send_timeout,
        "expires_at": start + lifetime,
    }
    wake_at = next_wake(now, **kwargs)
    if math.isinf(wake_at) or wake_at < now:
        return  # never, or something was already due at ``now``
    assert due(wake_at, **kwargs) is not Due.NOTHING or next_wake(wake_at, **kwargs) > wake_at


@pytest.mark.time_driven
async def test_the_watcher_does_not_spin_at_a_deadline_that_rounds_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same rounding, end to end: pings every 0.01 s on a MockClock (whose
    time is exactly each deadline) hung the stream at ``t = 0.06999999999999999``.
    Bounded by counting the watcher's looks instead of waiting for a hang."""
    looks = 0

    def counted(now: float, **kwargs: Any) -> float:
        nonlocal looks
        looks += 1
        if looks > 10_000:
            raise AssertionError(f"the watcher spun at t={now!r}")
        return next_wake(now, **kwargs)

    monkeypatch.setattr(_connection, "next_wake", counted)

    async def three() -> AsyncIterator[str]:
        for n in range(3):
            yield str(n)
            await anyio.sleep(0.03)

    response = EventSourceResponse(three(), ping=0.01)
    with anyio.fail_after(5):
        async with stream(response) as sse:
            events = [e.data async for e in sse.events()]
    assert events == ["0", "1", "2"]
    assert response.close_reason is CloseReason.COMPLETED
    assert looks < 100
