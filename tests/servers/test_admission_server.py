"""Admission control on a real server: a burst over the limit.

``tests.admission_app`` runs under uvicorn and under hypercorn's trio
worker, started as from a shell, with
``max_streams`` set from the environment.  A burst of more streaming GETs
than the limit, all sent before any is read, must get exactly the excess
refused with ``503`` and a ``Retry-After`` in the configured range, while the
admitted streams keep streaming; the app's own statistics must agree; and the
slots must come back once the admitted clients leave.

Numbers are printed as a ``MEASURED ...`` line (``pytest -s`` or ``-rA``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests._servers import StreamClient, get, has_events, pump_until, running_server

pytestmark = pytest.mark.real_server

APP = "tests.admission_app:app"
ADMITTED = 20
EXCESS = 12
RETRY_AFTER = (2, 6)
#: Bound on each wait for data that should come at once.
TIMEOUT = 15.0


def answered(client: StreamClient) -> bool:
    """A 200 with its first event, or another status with its whole body (the
    server keeps the connection open after a 503: its end is no signal)."""
    response = client.response
    if response.status is None:
        return False
    if response.status == 200:
        return bool(response.events)
    return len(response.body) >= int(response.headers.get("content-length", "0"))


def stats(port: int) -> dict[str, Any]:
    status, body = get(port, "/stats", timeout=5.0)
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def wait_for_stats(port: int, check: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = stats(port)
        if check(current) or time.monotonic() > deadline:
            return current
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["uvicorn", "hypercorn-trio"])
def test_a_burst_over_the_limit_gets_503s_while_the_admitted_stream_on(
    kind: str, tmp_path: Path
) -> None:
    env = {
        "SSE_SM_MAX_STREAMS": str(ADMITTED),
        "SSE_SM_RETRY_AFTER": f"{RETRY_AFTER[0]},{RETRY_AFTER[1]}",
    }
    with running_server(kind, tmp_path / "server.log", app=APP, env=env) as server:
        # The whole burst is on the wire before the test reads anything.
        clients = [
            StreamClient(server.port, "/stream", timeout=TIMEOUT) for _ in range(ADMITTED + EXCESS)
        ]
        try:
            all_answered = pump_until(
                clients, lambda: all(answered(c) for c in clients), time.monotonic() + TIMEOUT
            )
            assert all_answered, "\n".join(c.describe() for c in clients) + server.log()
            statuses = Counter(c.response.status for c in clients)
            admitted = [c for c in clients if c.response.status == 200]
            refused = [c for c in clients if c.response.status == 503]
            assert statuses == {200: ADMITTED, 503: EXCESS}, statuses
            retry_afters = sorted(int(c.response.headers["retry-after"]) for c in refused)
            assert all(RETRY_AFTER[0] <= value <= RETRY_AFTER[1] for value in retry_afters)
            assert all(b"retry after" in bytes(c.response.body) for c in refused)

            # Every refusal is out; the admitted streams go on streaming.
            before = {id(c): len(c.response.events) for c in admitted}
            streaming_on = pump_until(
                admitted,
                lambda: all(len(c.response.events) >= before[id(c)] + 5 for c in admitted),
                time.monotonic() + TIMEOUT,
            )
            assert streaming_on, "\n".join(c.describe() for c in admitted)
            assert all(c.end is None for c in admitted)

            seen = stats(server.port)
            assert seen["streams"]["streaming"] == ADMITTED
            assert seen["rejections"] == EXCESS
            # A newcomer is still refused while the admitted streams hold their slots.
            late = StreamClient(server.port, "/stream", timeout=TIMEOUT)
            clients.append(late)
            assert late.read_until(answered, TIMEOUT), late.describe()
            assert late.response.status == 503
        finally:
            for client in clients:
                client.close()
        # The admitted clients left: their slots come back.
        after = wait_for_stats(
            server.port,
            lambda s: s["streams"]["streaming"] == 0 and s["streams"]["open"] == 0,
            TIMEOUT,
        )
        assert after["streams"] == {"open": 0, "streaming": 0, "draining": 0}
        assert after["closes"]["client_disconnected"] == ADMITTED
        assert after["rejections"] == EXCESS + 1
        newcomer = StreamClient(server.port, "/stream", timeout=TIMEOUT)
        try:
            assert newcomer.read_until(has_events(1), TIMEOUT), newcomer.describe()
            assert newcomer.response.status == 200
        finally:
            newcomer.close()
        print(
            f"MEASURED server={kind} limit={ADMITTED} burst={ADMITTED + EXCESS} "
            f"admitted={statuses[200]} refused_503={statuses[503]} "
            f"retry_after_range={RETRY_AFTER[0]}-{RETRY_AFTER[1]} "
            f"retry_after_seen={','.join(map(str, retry_afters))} "
            f"min_events_per_admitted={min(len(c.response.events) for c in admitted)} "
            f"stats_rejections={after['rejections']} "
            f"stats_client_disconnected={after['closes']['client_disconnected']}",
            flush=True,
        )
