"""Lifetime rotation on real servers: streams end cleanly at their drawn lifetime and reconnect.

A handful of streams of ``tests.realserver_app`` with ``max_lifetime`` drawn
from a range, under uvicorn (asyncio) and hypercorn's trio worker: each
ends with the source's goodbye, the farewell and its ``retry:``, and the
terminating chunk, between the range's bounds after it opened; the server
records ``drained`` and that ``LIFETIME_EXPIRED`` began the drain.  Then each
client reconnects with its ``Last-Event-ID``, as EventSource would, and
streams again from the same, still healthy, server.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests._servers import StreamClient, get, has_event, pump_until, running_server
from tests.realserver_app import DRAIN_RETRY_MS

pytestmark = pytest.mark.real_server

#: The range each stream draws its lifetime from, in seconds.
LIFETIME = (0.5, 1.0)
#: How late a rotation may end on a busy two-core machine.
SLACK = 1.0
STREAMS = 5
TIMEOUT = 15.0


def facts_of(port: int, tag: str) -> dict[str, Any]:
    status, body = get(port, f"/closed?tag={tag}", timeout=5.0)
    assert status == 200, body
    facts: dict[str, Any] = json.loads(body)
    return facts


@pytest.mark.parametrize("kind", ["uvicorn", "hypercorn-trio"])
def test_streams_rotate_at_their_lifetime_and_reconnect(kind: str, tmp_path: Path) -> None:
    low, high = LIFETIME
    tags = [f"lifetime-{n}-{uuid.uuid4().hex[:8]}" for n in range(STREAMS)]
    query = f"interval=0.05&farewell=1&ping=0&max_lifetime={low}:{high}"
    with running_server(kind, tmp_path / "server.log") as server:
        clients = [
            StreamClient(server.port, f"/stream?tag={tag}&{query}", timeout=TIMEOUT) for tag in tags
        ]
        try:
            deadline = time.monotonic() + TIMEOUT
            assert pump_until(clients, lambda: all(c.end for c in clients), deadline), (
                [c.describe() for c in clients],
                server.log(),
            )
        finally:
            for client in clients:
                client.close()
        rlow, rhigh = DRAIN_RETRY_MS
        for tag, client in zip(tags, clients, strict=True):
            assert client.end == "clean", client.describe()
            names = [event.event for event in client.response.events]
            assert names[-2:] == ["goodbye", "farewell"], client.describe()
            retry = client.response.events[-1].retry
            assert retry is not None
            assert rlow <= retry <= rhigh
            assert client.ended_at is not None
            lived = client.ended_at - client.opened_at
            assert low <= lived < high + SLACK, (lived, client.describe())
            facts = facts_of(server.port, tag)
            assert facts["close_reason"] == "drained", facts
            assert facts["drained_by"] == "LIFETIME_EXPIRED", facts
        # Each client comes back with its Last-Event-ID and streams again.
        again = []
        try:
            for tag, client in zip(tags, clients, strict=True):
                last_id = [e.id for e in client.response.events if e.id][-1]
                again.append(
                    StreamClient(
                        server.port,
                        f"/stream?tag={tag}-again&{query}",
                        timeout=TIMEOUT,
                        headers={"Last-Event-ID": last_id},
                    )
                )
            deadline = time.monotonic() + TIMEOUT
            assert pump_until(again, lambda: all(has_event(c) for c in again), deadline), [
                c.describe() for c in again
            ]
        finally:
            for client in again:
                client.close()
        assert all(c.response.status == 200 for c in again)
