"""Regenerate ``docs/demo.png``: the demo page after a walk through its arcs.

    python -m examples.screenshot                 # writes docs/demo.png
    python -m examples.screenshot --output x.png  # somewhere else

It serves the demo under uvicorn on a free loopback port, opens it in
headless Debian Chromium (``bash scripts/install_chromium.sh`` installs it;
``SSE_SM_CHROMIUM`` names another binary), clicks *End my stream*, *Drain
the server*, *Stall a client* and *HEAD request*, waits for each to play out,
and saves the page.  The server and the browser are always killed, with
their whole process groups.  Takes about 15 seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ._chromium import Page, find_chromium, launch

__all__ = ("main",)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "demo.png"
WIDTH, HEIGHT = 1280, 820
WAIT = 20.0


@contextlib.contextmanager
def serve_demo(log_path: Path) -> Iterator[int]:
    """Serve the demo on a loopback socket bound here; yields its port, always stops it."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port: int = listener.getsockname()[1]
    env = {**os.environ, "DEMO_TICK_SECONDS": "0.5", "PYTHONUNBUFFERED": "1"}
    command = [
        *(sys.executable, "-m", "uvicorn", "examples.demo_app:app"),
        *("--fd", str(listener.fileno()), "--log-level", "warning"),
    ]
    try:
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
                start_new_session=True,
            )
    finally:
        listener.close()
    try:
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


def load(page: Page, url: str) -> None:
    """Open the page once the server answers (it may still be starting)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            page.goto(url)
            page.wait_for("window.demoSnapshot !== null", timeout=3)
            return
        except (TimeoutError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def click(page: Page, button: str) -> None:
    page.evaluate(f"document.querySelector('#btn-{button}').click()")


def walk_the_arcs(page: Page) -> None:
    """Make the server take the interesting arcs, waiting for each to finish."""
    page.wait_for("window.demoLog.filter(e => e.type === 'tick').length >= 2", timeout=WAIT)
    click(page, "end")
    page.wait_for(
        "window.demoLog.findLastIndex(e => e.what === 'open') >"
        " window.demoLog.findIndex(e => e.type === 'stream-end')"
        " && window.demoLog.some(e => e.type === 'stream-end')",
        timeout=WAIT,
    )
    time.sleep(1.2)
    click(page, "head")
    click(page, "drain")
    page.wait_for(
        "window.demoLog.findLastIndex(e => e.what === 'open') >"
        " window.demoLog.findIndex(e => e.type === 'farewell')"
        " && window.demoLog.some(e => e.type === 'farewell')",
        timeout=WAIT,
    )
    click(page, "stall")
    page.wait_for(
        "window.demoSnapshot.connections.some(c => c.close_reason === 'send_timeout')",
        timeout=WAIT,
    )
    # A few more live ticks, so the newest rows are ordinary ones.
    time.sleep(1.6)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.screenshot", description=__doc__)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="default: %(default)s")
    args = parser.parse_args(argv)
    executable = find_chromium()
    if executable is None:
        print("no chromium found: run `bash scripts/install_chromium.sh`", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="sse_sm-screenshot-") as scratch:
        logs = Path(scratch)
        with (
            serve_demo(logs / "server.log") as port,
            launch(executable, log_path=logs / "chromium.log") as browser,
        ):
            page = browser.new_page(width=WIDTH, height=HEIGHT)
            try:
                load(page, f"http://127.0.0.1:{port}/")
                walk_the_arcs(page)
                page.screenshot(args.output)
            except (TimeoutError, RuntimeError):
                print((logs / "server.log").read_text(errors="replace"), file=sys.stderr)
                raise
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
