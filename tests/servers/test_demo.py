"""End-to-end: the demo app under real servers, over real loopback sockets.

The in-process tests exercise the library through ASGI calls; most of these
start ``examples.demo_app`` under uvicorn (asyncio) and under hypercorn's
trio worker, then talk HTTP to it.  They catch what in-process tests cannot:
a server that buffers the stream, headers that a real server rewrites, an
app that only works on one event loop.  ``tests/test_browser.py`` drives the
same page in a real browser.

Every wait is bounded, and every server is killed with its whole process
group in the fixture's finalizer, whether the test passed, failed or was
interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import time as time_of_day
from pathlib import Path

import anyio
import httpx
import pytest

from examples._diagram_svg import arc_key, state_diagram_svg
from examples.demo_app import (
    DEFAULT_MAX_STREAMS,
    DRAIN_RETRY_MS,
    END_RETRY_MS,
    RETRY_AFTER_SECONDS,
    client_id,
    create_app,
    parse_interval,
    parse_max_streams,
    render_page,
)
from sse_sm import TRANSITIONS, Arc, State, Trigger
from sse_sm.testing import Event, EventStreamParser, stream
from tests._browser import DEMO_KINDS, REPO_ROOT, api_state, running_demo
from tests._servers import ServerProcess

STREAM_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


@pytest.fixture(scope="module", params=DEMO_KINDS)
def demo_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The demo under one server, for every test of the module that needs one."""
    log_path = tmp_path_factory.mktemp(f"demo-{request.param}") / "server.log"
    with running_demo(request.param, log_path) as server:
        yield server


def base_url(server: ServerProcess) -> str:
    return f"http://127.0.0.1:{server.port}"


def read_events(
    server: ServerProcess,
    path: str,
    until: Callable[[list[Event]], bool],
    *,
    headers: dict[str, str] | None = None,
    during: Callable[[list[Event]], None] | None = None,
) -> tuple[list[Event], bool]:
    """Stream ``path`` until ``until(events)`` or the end of the body, within the timeout.

    ``during`` is called after each chunk (to act while the stream is open).
    Returns the events and whether the server ended the body.
    """
    parser = EventStreamParser()
    events: list[Event] = []
    deadline = time.monotonic() + STREAM_TIMEOUT
    ended = False
    with (
        httpx.Client(timeout=httpx.Timeout(5.0)) as client,
        client.stream("GET", base_url(server) + path, headers=headers) as response,
    ):
        assert response.status_code == 200
        chunks = response.iter_raw()
        while not until(events):
            if time.monotonic() > deadline:
                pytest.fail(f"{path}: waited {STREAM_TIMEOUT}s, got {events}\n{server.log()}")
            chunk = next(chunks, None)
            if chunk is None:
                ended = True
                break
            events += [item for item in parser.feed(chunk) if isinstance(item, Event)]
            if during is not None:
                during(events)
    return events, ended


def ticks(events: list[Event]) -> list[Event]:
    return [event for event in events if event.event == "tick"]


def numbers(events: list[Event]) -> list[int]:
    return [json.loads(event.data)["n"] for event in ticks(events)]


# ------------------------------------------------------------------ the page


@pytest.mark.real_server
def test_index_is_the_explorer_page_with_the_diagram_of_every_row(
    demo_server: ServerProcess,
) -> None:
    response = httpx.get(base_url(demo_server) + "/", timeout=5.0)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "new EventSource(" in page
    assert '<svg class="diagram"' in page
    for arc in TRANSITIONS:
        assert f'data-arc="{arc_key(arc)}"' in page, arc
    for state in State:
        assert f'data-state="{state.name}"' in page
    assert "{{" not in page, "every placeholder was filled in"
    # Served by the app itself: nothing is loaded from another host.
    assert "src=" not in page.replace("data-src=", "")
    assert "https://" not in page
    assert "http://" not in page


def test_the_diagram_is_generated_from_the_table() -> None:
    svg = state_diagram_svg()
    assert svg.count("data-arc=") == len(TRANSITIONS)
    assert svg.count("data-state=") == len(State)
    smaller = tuple(arc for arc in TRANSITIONS if arc.trigger is not Trigger.FELL_BEHIND)
    assert "FELL_BEHIND" not in state_diagram_svg(smaller)


def test_the_diagram_refuses_a_table_it_cannot_draw() -> None:
    backwards = (*TRANSITIONS, Arc(State.DRAINING, Trigger.STARTED, State.STREAMING))
    with pytest.raises(ValueError, match="DRAINING:STARTED"):
        state_diagram_svg(backwards)


def test_settings_from_the_environment_and_the_query_are_checked() -> None:
    assert parse_interval(None) == 1.0
    assert parse_interval("0.2") == 0.2
    assert parse_interval("nan") == 1.0
    assert parse_interval("0") == 0.05
    assert parse_interval("1e9") == 10.0
    assert client_id("a1-b_2") == "a1-b_2"
    assert client_id("") is None
    assert client_id("<script>") is None
    assert client_id("x" * 65) is None
    assert parse_max_streams(None) == DEFAULT_MAX_STREAMS
    assert parse_max_streams("3") == 3
    assert parse_max_streams("0") == 0
    assert parse_max_streams("-1") == DEFAULT_MAX_STREAMS
    assert parse_max_streams("many") == DEFAULT_MAX_STREAMS


# ------------------------------------------------------------------ the streams


@pytest.mark.real_server
def test_events_stream_ticks_with_ids_and_sse_headers(demo_server: ServerProcess) -> None:
    with httpx.stream("GET", base_url(demo_server) + "/events", timeout=5.0) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"

    events, _ = read_events(demo_server, "/events", lambda events: len(events) >= 3)

    for event in events[:3]:
        assert event.event == "tick"
        payload = json.loads(event.data)
        assert event.id.endswith(f"-{payload['n']:016d}"), "the hub's id: <epoch>-<seq>"
        time_of_day.fromisoformat(payload["time"].removesuffix("Z"))
    assert numbers(events) == list(range(numbers(events)[0], numbers(events)[0] + len(events)))


@pytest.mark.real_server
def test_a_client_resuming_with_last_event_id_gets_exactly_what_it_missed(
    demo_server: ServerProcess,
) -> None:
    first, _ = read_events(demo_server, "/events", lambda events: len(events) >= 2)
    last = first[-1]
    time.sleep(0.7)  # several ticks are published meanwhile

    second, _ = read_events(
        demo_server,
        "/events",
        lambda events: len(events) >= 5,
        headers={"Last-Event-ID": last.id},
    )

    resumed = numbers(second)
    assert resumed[0] == numbers(first)[-1] + 1
    assert resumed == list(range(resumed[0], resumed[0] + len(resumed)))


@pytest.mark.real_server
def test_the_end_button_ends_the_stream_after_a_tick_with_a_retry(
    demo_server: ServerProcess,
) -> None:
    asked: list[int] = []

    def end_once(events: list[Event]) -> None:
        if ticks(events) and not asked:
            answer = httpx.post(base_url(demo_server) + "/api/end?client=tester", timeout=5.0)
            asked.extend(answer.json()["ended"])

    events, ended = read_events(
        demo_server, "/events?client=tester", lambda events: False, during=end_once
    )

    assert ended, "the server ended the body"
    assert len(asked) == 1
    goodbye = events[-1]
    assert goodbye.event == "stream-end"
    assert goodbye.retry == END_RETRY_MS
    assert goodbye.id == events[-2].id, "no id of its own: the last tick's id stands"
    assert events[-2].event == "tick"
    closed = [c for c in api_state(demo_server)["connections"] if c["number"] == asked[0]]
    assert closed[0]["close_reason"] == "completed"


@pytest.mark.real_server
def test_the_drain_button_says_farewell_then_new_streams_stream_again(
    demo_server: ServerProcess,
) -> None:
    asked: list[bool] = []

    def drain_once(events: list[Event]) -> None:
        if ticks(events) and not asked:
            answer = httpx.post(base_url(demo_server) + "/api/drain", timeout=5.0)
            asked.append(answer.json()["draining"])

    events, ended = read_events(demo_server, "/events", lambda events: False, during=drain_once)

    assert ended
    assert asked == [True]
    farewell = events[-1]
    assert farewell.event == "farewell"
    assert farewell.retry is not None
    assert DRAIN_RETRY_MS[0] <= farewell.retry <= DRAIN_RETRY_MS[1]
    time.sleep(1.0)  # the coordinator is reset half a second after the request
    after, _ = read_events(demo_server, "/events", lambda events: len(events) >= 1)
    assert after[0].event == "tick"
    assert api_state(demo_server)["draining"] is False


# ------------------------------------------------------------------ in-process


@pytest.mark.anyio
async def test_the_explorer_follows_a_stream_through_its_transitions() -> None:
    app = create_app()
    demo = app.state.demo
    with anyio.fail_after(10):
        async with stream(app, "/events?client=inproc") as sse:
            await sse.wait_started()
            await demo.tick()
            first = await sse.next_event()
            assert first.event == "tick"
            (ticker,) = demo.snapshot()["connections"]
            assert (ticker["state"], ticker["client"]) == ("STREAMING", "inproc")
        snapshot = demo.snapshot()
    (ticker,) = snapshot["connections"]
    assert (ticker["state"], ticker["close_reason"]) == ("CLOSED", "client_disconnected")
    assert snapshot["arcs"] == {"OPEN:STARTED": 1, "STREAMING:DISCONNECTED": 1}
    assert snapshot["states"] == {"OPEN": 0, "STREAMING": 0, "DRAINING": 0, "CLOSED": 1}
    assert [(t["source"], t["trigger"]) for t in snapshot["recent"]] == [
        ("STREAMING", "DISCONNECTED"),
        ("OPEN", "STARTED"),
    ]


@pytest.mark.anyio
async def test_full_house_refuses_new_streams_with_503_then_admits_again() -> None:
    """The "Full house" button: max_streams drops to 0, the admitted stream goes
    on, this page's ticker is ended, a new stream gets a 503 with Retry-After
    (the REJECTED arc, in the explorer and the statistics), then the limit
    comes back."""
    app = create_app(max_streams=7)
    demo = app.state.demo
    demo.full_house_seconds = 0.3
    with anyio.fail_after(10):
        assert demo.snapshot()["admission"] == {
            "max_streams": 7,
            "retry_after": list(RETRY_AFTER_SECONDS),
            "rejections": 0,
        }
        async with stream(app, "/events?client=other") as other:
            await other.wait_started()
            async with stream(app, "/api/full?client=page", method="POST") as button:
                await button.wait_started()
                assert button.status == 200
                async with stream(app, "/events?client=page") as refused:
                    await refused.wait_finished()
                assert refused.status == 503
                retry_after = dict(refused.headers)["retry-after"]
                assert RETRY_AFTER_SECONDS[0] <= int(retry_after) <= RETRY_AFTER_SECONDS[1]
                await demo.tick()
                assert (await other.next_event()).event == "tick", "admitted streams go on"
                await button.wait_finished()  # the limit is restored after 0.3 s
            async with stream(app, "/events?client=page") as again:
                await again.wait_started()
                assert again.status == 200
        snapshot = demo.snapshot()
    assert snapshot["admission"]["max_streams"] == 7
    assert snapshot["admission"]["rejections"] == 1
    assert snapshot["arcs"]["OPEN:REJECTED"] == 1


@pytest.mark.anyio
async def test_the_page_shows_the_coordinators_statistics_live() -> None:
    """``/stats`` and the explorer's snapshots carry ``drain_coordinator_for(app).statistics()``."""
    app = create_app(ticker=False)
    demo = app.state.demo
    with anyio.fail_after(10):
        async with stream(app, "/events?client=inproc") as sse:
            await sse.wait_started()
            await demo.tick()
            await sse.next_event()
            during = demo.snapshot()["coordinator"]
        async with stream(app, "/stats") as answer:
            await answer.wait_finished()
    assert answer.status == 200
    served = json.loads(answer.body)
    assert during["streams"] == {"open": 0, "streaming": 1, "draining": 0}
    assert served["streams"] == {"open": 0, "streaming": 0, "draining": 0}
    assert served["closes"] == {"client_disconnected": 1}
    assert (served["events_sent"], served["bytes_sent"]) == (1, len(sse.body))
    assert served["rejections"] == 0
    page = render_page(1.0)
    assert '<p id="stats"' in page
    assert "renderStats(snapshot.coordinator)" in page


# ------------------------------------------------------------------ Ctrl-C


def open_stream(port: int) -> socket.socket:
    """A raw HTTP/1.1 request for the tick stream."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=STREAM_TIMEOUT)
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by the timeout)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.real_server
def test_ctrl_c_drains_every_stream_then_the_demo_exits(tmp_path: Path) -> None:
    """The README's demo command: on SIGINT each client gets its farewell and a clean end."""
    # The command binds its own port, as a user runs it; a free port can be
    # taken by someone else before it binds, which only fails this test.
    port = free_port()
    log_path = tmp_path / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PORT": str(port), "DEMO_TICK_SECONDS": "0.05"}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "examples.demo_app"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(kind="demo", port=port, process=process, log_path=log_path)
    sockets: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while f"open http://127.0.0.1:{port}/" not in server.log() or "startup complete" not in (
            server.log()
        ):
            assert not server.has_exited(), server.log()
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        sockets = [open_stream(port) for _ in range(3)]
        for sock in sockets:
            assert b"event: tick" in sock.recv(65536) + sock.recv(65536)
        started = time.monotonic()
        server.signal(signal.SIGINT)
        bodies = [read_until_closed(sock) for sock in sockets]
        process.wait(timeout=STOP_TIMEOUT)
        elapsed = time.monotonic() - started
    finally:
        for sock in sockets:
            sock.close()
        server.kill_group()
    for body in bodies:
        assert b"event: farewell\r\n" in body, server.log()
        retry = int(body.split(b"retry: ")[1].split(b"\r\n")[0])
        assert DRAIN_RETRY_MS[0] <= retry <= DRAIN_RETRY_MS[1]
        assert body.endswith(b"0\r\n\r\n"), "the chunked body ends cleanly"
    assert process.returncode == 0, server.log()
    assert "DRAINING --SOURCE_EXHAUSTED--> CLOSED" in server.log(), "the source ended by itself"
    assert elapsed < 4.0, f"the demo took {elapsed:.1f} s to drain and exit"
