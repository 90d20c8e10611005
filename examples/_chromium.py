"""Drive a headless Debian ``chromium`` through the DevTools protocol, with no dependency.

Used by the browser tests (``tests/external/test_browser.py``) and by
``python -m examples.screenshot``.  Chromium is started with
``--remote-debugging-pipe``: it reads protocol messages on its file
descriptor 3 and writes them on 4, each a JSON object ending in a NUL byte
(the transport Playwright and Puppeteer use).  A pipe needs no port, so no
other process can connect to the browser, there is nothing to race for, and
no websocket client has to be installed.

Invariants:

* **The browser never outlives its context manager.**  :func:`launch` starts
  Chromium in a session of its own and, on the way out, kills that whole
  process group (the browser, its zygotes, renderers and utilities) with
  SIGKILL, reaps it and deletes the throw-away profile.
* **Every wait is bounded.**  Each protocol call has a deadline, and
  :meth:`Page.wait_for` polls with one; nothing blocks on the browser forever.
* **Only the system browser.**  :func:`find_chromium` looks at
  ``$SSE_SM_CHROMIUM``, then ``chromium`` and ``chromium-browser`` on PATH;
  nothing is downloaded (``bash scripts/install_chromium.sh`` installs
  Debian's package).

Protocol reference: https://chromedevtools.github.io/devtools-protocol/
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, final

__all__ = ("CHROMIUM_FLAGS", "Chromium", "DevToolsError", "Page", "find_chromium", "launch")

#: Flags for a quiet, disposable headless browser on a machine with no network
#: beyond loopback: no sandbox (the tests may run as root), no GPU, and none
#: of the background services that would try to reach Google's hosts.
CHROMIUM_FLAGS: Final[tuple[str, ...]] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--remote-debugging-pipe",
)

#: The environment variable that names a browser binary explicitly.
CHROMIUM_ENV: Final = "SSE_SM_CHROMIUM"

#: Puts the two pipe ends on descriptors 3 and 4, closes the originals, then
#: runs the browser.  The ends are numbered 10 or above (``F_DUPFD``), so
#: neither can be clobbered by the other's move.
_TRAMPOLINE: Final = 'rfd=$1 wfd=$2; shift 2; exec 3<&"$rfd" 4>&"$wfd" {rfd}<&- {wfd}>&-; exec "$@"'

#: Seconds to wait for the browser's first answer after starting it.
START_TIMEOUT: Final = 20.0
#: Default bound on one protocol call, in seconds.
CALL_TIMEOUT: Final = 10.0


class DevToolsError(RuntimeError):
    """The browser answered a protocol call with an error, or went away."""


def find_chromium() -> str | None:
    """The path of the system's Chromium, or ``None`` if there is none."""
    explicit = os.environ.get(CHROMIUM_ENV)
    if explicit:
        return shutil.which(explicit)
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found is not None:
            return found
    return None


@final
class Chromium:
    """One running browser and its DevTools pipe; made by :func:`launch`."""

    def __init__(
        self, process: subprocess.Popen[bytes], to_browser: int, from_browser: int
    ) -> None:
        self.process = process
        self._to_browser = to_browser
        self._from_browser = from_browser
        self._buffer = bytearray()
        self._next_id = 0
        #: Events received while waiting for answers, newest last, per session.
        self._events: dict[str, deque[dict[str, Any]]] = {}
        self._closed = False

    # ------------------------------------------------------------ transport

    def _write(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode("utf-8") + b"\0"
        view = memoryview(data)
        while view:
            written = os.write(self._to_browser, view)
            view = view[written:]

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while True:
            end = self._buffer.find(b"\0")
            if end >= 0:
                raw = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                message: dict[str, Any] = json.loads(raw)
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message from the browser in time")
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise DevToolsError(f"the browser closed its pipe (exit {self.process.poll()})")
            self._buffer += chunk

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = CALL_TIMEOUT,
    ) -> dict[str, Any]:
        """Send one command and return its ``result``; events that arrive meanwhile are kept.

        Raises:
            DevToolsError: the browser answered with an error, or exited.
            TimeoutError: no answer within ``timeout`` seconds.
        """
        if self._closed:
            raise DevToolsError("the browser is closed")
        self._next_id += 1
        call_id = self._next_id
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self._write(message)
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == call_id:
                if "error" in answer:
                    raise DevToolsError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            if "method" in answer:
                events = self._events.setdefault(answer.get("sessionId", ""), deque(maxlen=500))
                events.append(answer)

    def events(self, session: str) -> list[dict[str, Any]]:
        """The events received so far for ``session`` (at most the last 500)."""
        return list(self._events.get(session, ()))

    # ------------------------------------------------------------ pages

    def new_page(self, width: int = 1280, height: int = 900) -> Page:
        """Open a blank tab of ``width`` x ``height`` CSS pixels and attach to it."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, target, session)
        page.call("Runtime.enable")
        page.call("Page.enable")
        page.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return page

    def close(self) -> None:
        """Ask the browser to exit; :func:`launch` kills it regardless."""
        if self._closed:
            return
        with contextlib.suppress(DevToolsError, TimeoutError, OSError):
            self.call("Browser.close", timeout=2.0)
        self._closed = True


@final
class Page:
    """One tab, reached through a flattened DevTools session."""

    def __init__(self, browser: Chromium, target_id: str, session_id: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session_id = session_id

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = CALL_TIMEOUT
    ) -> dict[str, Any]:
        return self.browser.call(method, params, session=self.session_id, timeout=timeout)

    def goto(self, url: str, *, timeout: float = 15.0) -> None:
        """Load ``url`` and wait until the document has loaded."""
        answer = self.call("Page.navigate", {"url": url}, timeout=timeout)
        if answer.get("errorText"):
            raise DevToolsError(f"loading {url}: {answer['errorText']}")
        self.wait_for("document.readyState === 'complete'", timeout=timeout)

    def evaluate(self, expression: str, *, timeout: float = CALL_TIMEOUT) -> Any:
        """Evaluate ``expression`` in the page (promises awaited) and return its JSON value.

        Raises:
            DevToolsError: the expression threw; the message has the exception.
        """
        answer = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise DevToolsError(f"{expression!r} threw: {text}")
        return answer.get("result", {}).get("value")

    def wait_for(self, expression: str, *, timeout: float, interval: float = 0.05) -> Any:
        """Poll ``expression`` until it is truthy and return it.

        Raises:
            TimeoutError: still falsy after ``timeout`` seconds; says the last value.
        """
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                last = self.evaluate(expression, timeout=max(deadline - time.monotonic(), 0.5))
            except DevToolsError as exc:  # no document yet, in the middle of a navigation
                last = exc
            else:
                if last:
                    return last
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{expression!r} not true within {timeout} s (last: {last!r})")
            time.sleep(interval)

    def exceptions(self) -> list[str]:
        """Uncaught exceptions the page's scripts have thrown so far."""
        found = []
        for event in self.browser.events(self.session_id):
            if event.get("method") == "Runtime.exceptionThrown":
                details = event["params"]["exceptionDetails"]
                found.append(details.get("exception", {}).get("description") or details["text"])
        return found

    def screenshot(self, path: Path) -> Path:
        """Save what the tab shows now as a PNG at ``path``."""
        answer = self.call("Page.captureScreenshot", {"format": "png"}, timeout=20.0)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(answer["data"]))
        return path

    def close(self) -> None:
        with contextlib.suppress(DevToolsError, TimeoutError):
            self.browser.call("Target.closeTarget", {"targetId": self.target_id})


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the browser's whole session, then reap the main process."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10.0)


@contextlib.contextmanager
def launch(executable: str, *, log_path: Path | None = None) -> Iterator[Chromium]:
    """Start ``executable`` headless with a fresh profile; always kill it on exit.

    ``log_path`` receives the browser's stdout and stderr (``/dev/null`` if
    omitted).  Yields once the browser answers ``Browser.getVersion``.
    """
    profile = tempfile.mkdtemp(prefix="sse_sm-chromium-")
    # Our ends stay in this process; the browser's ends go to it as fds 3 and 4.
    browser_reads, we_write = os.pipe()
    we_read, browser_writes = os.pipe()
    child_in = fcntl.fcntl(browser_reads, fcntl.F_DUPFD_CLOEXEC, 10)
    child_out = fcntl.fcntl(browser_writes, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(browser_reads)
    os.close(browser_writes)
    command = [
        "bash",
        "-c",
        _TRAMPOLINE,
        "bash",
        str(child_in),
        str(child_out),
        executable,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    process: subprocess.Popen[bytes] | None = None
    try:
        with contextlib.ExitStack() as files:
            log = (
                files.enter_context(log_path.open("wb"))
                if log_path is not None
                else subprocess.DEVNULL
            )
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(child_in, child_out),
                start_new_session=True,
            )
        os.close(child_in)
        os.close(child_out)
        child_in = child_out = -1
        browser = Chromium(process, we_write, we_read)
        browser.call("Browser.getVersion", timeout=START_TIMEOUT)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        if process is not None:
            _kill_group(process)
        for fd in (child_in, child_out, we_write, we_read):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        shutil.rmtree(profile, ignore_errors=True)
