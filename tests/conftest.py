"""Shared fixtures: every async test runs on asyncio and on trio.

A test marked ``time_driven`` (pings, send timeouts, graces) runs a third
time, on trio with an autojumping ``MockClock``: virtual time jumps ahead
whenever every task is blocked, so its timings are exact and take no real
time.  Such a test must not wait on anything outside the loop (threads,
sockets, subprocesses), which a virtual clock cannot see.
"""

from __future__ import annotations

from typing import Any

import pytest

_MOCK_CLOCK = "trio-mockclock"


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
        pytest.param(_MOCK_CLOCK, id=_MOCK_CLOCK),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Run each ``@pytest.mark.anyio`` test once per backend (and on a MockClock if time-driven)."""
    name: str = request.param
    if name == _MOCK_CLOCK:
        import trio.testing

        return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})
    return (name, {})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The MockClock run only for tests marked ``time_driven``."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_mock_clock = callspec is not None and callspec.params.get("anyio_backend") == _MOCK_CLOCK
        if on_mock_clock and item.get_closest_marker("time_driven") is None:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
