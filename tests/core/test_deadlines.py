"""The watcher's deadline arithmetic, tested as arithmetic: no event loop."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_sm._deadlines import Due, due, next_wake


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


times = st.floats(min_value=0, max_value=1e9, allow_nan=False)
intervals = st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1e6))
timeouts = st.one_of(st.none(), st.floats(min_value=1e-6, max_value=1e6))


@settings(max_examples=300, deadline=None)
@given(
    start=times,
    elapsed=st.floats(min_value=0, max_value=1e6),
    sending=st.booleans(),
    ping_interval=intervals,
    send_timeout=timeouts,
)
def test_nothing_is_due_before_the_wake_and_something_due_is_never_missed(
    start: float, elapsed: float, sending: bool, ping_interval: float, send_timeout: float | None
) -> None:
    """Between a look at ``now`` and the deadline it computes, nothing new falls due;
    and whatever is due at some time is due at the deadline computed before it."""
    now = start + elapsed
    kwargs: dict[str, Any] = {
        "last_send_at": start,
        "sending": sending,
        "ping_interval": ping_interval,
        "send_timeout": send_timeout,
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
