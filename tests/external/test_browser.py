"""The demo page in a real browser: headless Debian Chromium against real servers.

Each test opens the demo page (``examples/demo_page.html``) in a fresh tab
and reads ``window.demoLog``, where the page notes every ``EventSource``
event, open and error in order, plus ``window.demoSnapshot``, the last
explorer snapshot it rendered.  So what is asserted is what the browser's
own ``EventSource`` did: the order and ids of the events, when it
reconnected after a ``retry:``, and the ``Last-Event-ID`` it sent, as the
server's explorer saw it arrive.

The demo runs under uvicorn (asyncio) and hypercorn's trio worker, once per
module; the browser once per module.  Both are killed with their whole
process groups whatever happens.  Without a ``chromium`` on the machine the
tests skip and say how to install it (``bash scripts/install_chromium.sh``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples._chromium import Chromium, Page, launch
from examples.demo_app import DRAIN_RETRY_MS, END_RETRY_MS
from tests._browser import DEMO_KINDS, api_state, chromium_or_skip, running_demo
from tests._servers import ServerProcess

pytestmark = pytest.mark.real_server

#: Bound on each wait for the page, in seconds.
WAIT = 15.0
#: The hub's automatic ids: an 8-hex-digit epoch and a 16-digit sequence number.
HUB_ID = re.compile(r"[0-9a-f]{8}-[0-9]{16}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    executable = chromium_or_skip()
    log_path = tmp_path_factory.mktemp("chromium") / "chromium.log"
    with launch(executable, log_path=log_path) as chromium:
        yield chromium


@pytest.fixture(scope="module", params=DEMO_KINDS)
def demo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log_path = tmp_path_factory.mktemp(f"demo-{request.param}") / "server.log"
    with running_demo(request.param, log_path) as server:
        yield server


@pytest.fixture
def page(browser: Chromium, demo: ServerProcess) -> Iterator[Page]:
    tab = browser.new_page(width=1400, height=950)
    try:
        tab.goto(f"http://127.0.0.1:{demo.port}/")
        yield tab
    finally:
        tab.close()


# ------------------------------------------------------------------ helpers


def demo_log(page: Page) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = page.evaluate("window.demoLog")
    return entries


def wait(page: Page, demo: ServerProcess, expression: str, what: str) -> None:
    """Wait for a JavaScript condition; on timeout, fail with the page's log and the server's."""
    try:
        page.wait_for(expression, timeout=WAIT)
    except TimeoutError:
        entries = "\n".join(json.dumps(entry) for entry in demo_log(page)[-40:])
        pytest.fail(
            f"{what}: not within {WAIT} s on {demo.kind}\n"
            f"page log (last 40):\n{entries}\nserver log:\n{demo.log()}"
        )


def index_of(entries: list[dict[str, Any]], start: int, **match: object) -> int:
    """The index of the first entry after ``start`` with all the fields in ``match``."""
    for i in range(start + 1, len(entries)):
        if all(entries[i].get(key) == value for key, value in match.items()):
            return i
    raise AssertionError(f"no entry {match} after #{start} in {entries}")


def tick_numbers(entries: list[dict[str, Any]]) -> list[int]:
    return [json.loads(e["data"])["n"] for e in entries if e.get("type") == "tick"]


def assert_consecutive(numbers: list[int]) -> None:
    """Every tick once, in order: nothing lost, nothing twice."""
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers


def connections(demo: ServerProcess, client: str, kind: str) -> list[dict[str, Any]]:
    """What the demo's explorer knows of this page's connections of ``kind``."""
    found: list[dict[str, Any]] = [
        c for c in api_state(demo)["connections"] if c["client"] == client and c["kind"] == kind
    ]
    return found


# ------------------------------------------------------------------ tests


def test_the_event_source_receives_ticks_in_order_with_ids_and_types(
    page: Page, demo: ServerProcess
) -> None:
    wait(page, demo, "window.demoLog.filter(e => e.type === 'tick').length >= 5", "5 ticks")
    wait(
        page,
        demo,
        "document.querySelector('[data-count-state=\"STREAMING\"]').textContent !== '0 now'",
        "the diagram counts the page's streams",
    )

    entries = demo_log(page)
    assert entries[0]["what"] == "open", entries[0]
    ticks = [e for e in entries if e["what"] == "event"]
    assert {e["type"] for e in ticks} == {"tick"}
    for tick in ticks:
        assert HUB_ID.fullmatch(tick["id"]), tick
        # The hub numbers a topic's events 1, 2, 3...; the demo publishes only ticks.
        assert int(tick["id"].rsplit("-", 1)[1]) == json.loads(tick["data"])["n"]
    ids = [tick["id"] for tick in ticks]
    assert ids == sorted(ids), "hub ids sort in publish order"
    assert_consecutive(tick_numbers(ticks))
    client = page.evaluate("window.demoClientId")
    (ticker,) = connections(demo, client, "ticker")
    assert ticker["state"] == "STREAMING"
    assert ticker["resumed_from"] is None
    assert page.exceptions() == []


def test_a_stream_the_server_ends_is_resumed_after_its_retry_with_last_event_id(
    page: Page, demo: ServerProcess
) -> None:
    wait(page, demo, "window.demoLog.filter(e => e.type === 'tick').length >= 2", "2 ticks")
    replayed_before = api_state(demo)["hub"]["replayed"]

    page.evaluate("document.querySelector('#btn-end').click()")
    wait(
        page,
        demo,
        """(() => {
            const log = window.demoLog;
            const end = log.findIndex(e => e.type === 'stream-end');
            const open = log.findIndex((e, i) => i > end && e.what === 'open');
            return end >= 0 && open > end &&
                log.filter((e, i) => i > open && e.type === 'tick').length >= 3;
        })()""",
        "the end of the stream, a reconnect and 3 ticks",
    )

    entries = demo_log(page)
    end = index_of(entries, -1, type="stream-end")
    last_before = [e for e in entries[:end] if e.get("type") == "tick"][-1]
    assert entries[end]["id"] == last_before["id"], "the goodbye has no id of its own"
    assert json.loads(entries[end]["data"])["retry_ms"] == END_RETRY_MS
    error = index_of(entries, end, what="error")
    assert entries[error]["readyState"] == 0, "CONNECTING: the browser will reconnect"
    reopen = index_of(entries, end, what="open")
    delay_ms = entries[reopen]["at"] - entries[end]["at"]
    assert END_RETRY_MS * 0.9 <= delay_ms <= END_RETRY_MS + 5000, delay_ms

    # Exactly the missed ticks: the first after the reconnect follows the last
    # before it, and nothing is lost or repeated.
    numbers = tick_numbers(entries)
    assert_consecutive(numbers)
    first_after = next(e for e in entries[reopen:] if e.get("type") == "tick")
    assert json.loads(first_after["data"])["n"] == json.loads(last_before["data"])["n"] + 1

    client = page.evaluate("window.demoClientId")
    tickers = connections(demo, client, "ticker")
    assert [c["close_reason"] for c in tickers if c["state"] == "CLOSED"] == ["completed"]
    (resumed,) = [c for c in tickers if c["state"] == "STREAMING"]
    assert resumed["resumed_from"] == last_before["id"], "the browser sent Last-Event-ID"
    replayed = api_state(demo)["hub"]["replayed"] - replayed_before
    assert replayed >= 1, "ticks were published while the browser waited, and replayed"
    assert page.exceptions() == []


def test_a_drain_delivers_the_farewell_then_the_browser_reconnects(
    page: Page, demo: ServerProcess
) -> None:
    wait(page, demo, "window.demoLog.filter(e => e.type === 'tick').length >= 2", "2 ticks")

    page.evaluate("document.querySelector('#btn-drain').click()")
    wait(
        page,
        demo,
        """(() => {
            const log = window.demoLog;
            const bye = log.findIndex(e => e.type === 'farewell');
            const open = log.findIndex((e, i) => i > bye && e.what === 'open');
            return bye >= 0 && open > bye &&
                log.filter((e, i) => i > open && e.type === 'tick').length >= 2;
        })()""",
        "the farewell, a reconnect and 2 ticks",
    )

    entries = demo_log(page)
    farewell = index_of(entries, -1, type="farewell")
    assert "draining" in json.loads(entries[farewell]["data"])["message"]
    reopen = index_of(entries, farewell, what="open")
    delay_ms = entries[reopen]["at"] - entries[farewell]["at"]
    low, high = DRAIN_RETRY_MS
    assert low * 0.9 <= delay_ms <= high + 5000, delay_ms
    assert_consecutive(tick_numbers(entries))
    assert any(e["what"] == "explorer-farewell" for e in entries), "the explorer drained too"

    client = page.evaluate("window.demoClientId")
    closed = [c["close_reason"] for c in connections(demo, client, "ticker") if c["close_reason"]]
    assert closed == ["drained"], "the ticker's source ended by itself within the grace"
    explorers = connections(demo, client, "explorer")
    assert [c["close_reason"] for c in explorers if c["close_reason"]] == ["shutdown_forced"]
    assert api_state(demo)["draining"] is False, "the coordinator was reset after the drain"
    assert page.exceptions() == []


def test_a_client_that_stops_reading_is_cut_by_send_timeout(
    page: Page, demo: ServerProcess
) -> None:
    wait(page, demo, "window.demoSnapshot !== null", "the first explorer snapshot")

    page.evaluate("document.querySelector('#btn-stall').click()")
    wait(
        page,
        demo,
        """window.demoSnapshot.connections.some(c => c.kind === 'stall' &&
            c.client === window.demoClientId && c.close_reason === 'send_timeout')""",
        "the stalled stream closed by send_timeout, as the page's explorer shows it",
    )
    wait(
        page,
        demo,
        "document.querySelector('[data-count-arc=\"STREAMING:SEND_TIMED_OUT\"]').textContent",
        "the diagram counts the arc",
    )
    assert page.exceptions() == []


def test_disconnect_then_reconnect_resumes_through_the_query_parameter(
    page: Page, demo: ServerProcess
) -> None:
    wait(page, demo, "window.demoLog.filter(e => e.type === 'tick').length >= 2", "2 ticks")

    page.evaluate("document.querySelector('#btn-disconnect').click()")
    wait(page, demo, "window.demoLog.some(e => e.what === 'closed')", "the EventSource closed")
    client = page.evaluate("window.demoClientId")
    wait(
        page,
        demo,
        """window.demoSnapshot.connections.some(c => c.kind === 'ticker' &&
            c.client === window.demoClientId && c.close_reason === 'client_disconnected')""",
        "the server saw the client leave",
    )
    page.evaluate("document.querySelector('#btn-disconnect').click()")
    wait(
        page,
        demo,
        """(() => {
            const log = window.demoLog;
            const closed = log.findIndex(e => e.what === 'closed');
            return log.filter((e, i) => i > closed && e.type === 'tick').length >= 2;
        })()""",
        "2 ticks after reconnecting",
    )

    entries = demo_log(page)
    closed = index_of(entries, -1, what="closed")
    last_before = [e for e in entries[:closed] if e.get("type") == "tick"][-1]
    assert_consecutive(tick_numbers(entries))
    (resumed,) = [c for c in connections(demo, client, "ticker") if c["state"] == "STREAMING"]
    assert resumed["resumed_from"] == last_before["id"], "?lastEventID= on a new EventSource"
    assert page.exceptions() == []


def test_head_and_a_failing_source_take_their_arcs(page: Page, demo: ServerProcess) -> None:
    wait(page, demo, "window.demoSnapshot !== null", "the first explorer snapshot")

    page.evaluate("document.querySelector('#btn-head').click()")
    page.evaluate("document.querySelector('#btn-fail').click()")
    for kind, reason in (("ticker", "head"), ("fail", "error")):
        wait(
            page,
            demo,
            f"""window.demoSnapshot.connections.some(c => c.kind === '{kind}' &&
                c.client === window.demoClientId && c.close_reason === '{reason}')""",
            f"a {kind} connection closed with reason {reason}",
        )
    assert page.exceptions() == []


def test_a_refused_reconnect_is_retried_after_retry_after_and_resumes(
    page: Page, demo: ServerProcess
) -> None:
    """Full house: the page's EventSource gives up on the 503; the page's own
    retry asks HEAD for the Retry-After, waits, and reopens without losing a tick.

    It waits until the page streams again, so the server admits streams again
    when the next test starts.
    """
    wait(page, demo, "window.demoLog.filter(e => e.type === 'tick').length >= 2", "2 ticks")

    page.evaluate("document.querySelector('#btn-full').click()")
    wait(
        page,
        demo,
        """(() => {
            const log = window.demoLog;
            const refused = log.findIndex(e => e.what === 'refused' && e.status === 503);
            const open = log.findIndex((e, i) => i > refused && e.what === 'open');
            return refused >= 0 && open > refused &&
                log.filter((e, i) => i > open && e.type === 'tick').length >= 2;
        })()""",
        "a refusal, then the page's own reopen and 2 ticks",
    )

    entries = demo_log(page)
    control = index_of(entries, -1, what="control", name="full")
    gave_up = index_of(entries, control, what="error", readyState=2)  # CLOSED: given up
    refused = index_of(entries, gave_up, what="refused", status=503)
    assert 1 <= entries[refused]["retryAfter"] <= 3, entries[refused]
    reopen = index_of(entries, refused, what="open")
    assert entries[reopen]["at"] - entries[refused]["at"] >= 900, "it waited the Retry-After"
    assert_consecutive(tick_numbers(entries))
    client = page.evaluate("window.demoClientId")
    reasons = [c["close_reason"] for c in connections(demo, client, "ticker")]
    assert "rejected" in reasons, reasons
    assert api_state(demo)["admission"]["rejections"] >= 1
    assert page.exceptions() == []


def test_screenshot_of_the_demo_page(
    page: Page, demo: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wait(page, demo, "window.demoLog.filter(e => e.type === 'tick').length >= 3", "3 ticks")
    wait(page, demo, "window.demoSnapshot !== null", "the first explorer snapshot")

    path = page.screenshot(tmp_path / f"demo-{demo.kind}.png")

    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert path.stat().st_size > 20_000, "a page with content, not a blank one"
    with capsys.disabled():
        print(f"\n    screenshot ({demo.kind}): {path}")
