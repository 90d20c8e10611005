"""The demo app under a real server, and a headless Chromium to look at it.

Shared by ``tests/servers/test_demo.py`` (HTTP-level checks of the demo) and
``tests/external/test_browser.py`` (the page driven in a browser):

* :func:`running_demo` serves ``examples.demo_app:app`` the way
  :func:`tests._servers.running_server` serves the test app: on a loopback
  socket bound here and inherited by the server (no port race), in a session
  of its own whose whole process group is killed on the way out.
* :func:`chromium_or_skip` finds the system's Chromium (never a downloaded
  one) or skips with the command that installs it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from examples._chromium import CHROMIUM_ENV, find_chromium

from ._servers import ServerProcess, get, running_server

__all__ = (
    "DEMO_APP",
    "DEMO_KINDS",
    "TICK_SECONDS",
    "api_state",
    "chromium_or_skip",
    "running_demo",
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_APP = "examples.demo_app:app"
#: The two event loops the demo must work on, each under its usual server.
DEMO_KINDS: tuple[str, ...] = ("uvicorn", "hypercorn-trio")
#: The demo's tick interval in the tests: fast, so that a reconnect of a
#: second or two misses several ticks.
TICK_SECONDS = 0.2


@contextlib.contextmanager
def running_demo(
    kind: str, log_path: Path, *, env: Mapping[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Serve the demo under ``kind``; yields once ``/health`` answers, always kills it.

    ``env`` adds to the environment (``DEMO_TICK_SECONDS`` is set to
    :data:`TICK_SECONDS` unless given).
    """
    environment = {"DEMO_TICK_SECONDS": str(TICK_SECONDS), **(env or {})}
    with running_server(kind, log_path, app=DEMO_APP, env=environment) as server:
        yield server


def api_state(server: ServerProcess) -> dict[str, Any]:
    """The demo's ``/api/state``: what its explorer shows."""
    status, body = get(server.port, "/api/state", timeout=5.0)
    assert status == 200, body
    state: dict[str, Any] = json.loads(body)
    return state


#: Set (by .ci/run) to make a missing chromium a failure instead of a skip.
REQUIRE_ENV = "SSE_SM_REQUIRE_BROWSER"


def chromium_or_skip() -> str:
    """The system Chromium's path; skips the test when there is none."""
    executable = find_chromium()
    if executable is None:
        if os.environ.get(REQUIRE_ENV):
            # CI installs chromium: a skip there would hide the whole group.
            pytest.fail(f"no chromium found, and {REQUIRE_ENV} is set")
        pytest.skip(
            "no chromium found: install Debian's with `bash scripts/install_chromium.sh`, "
            f"or set {CHROMIUM_ENV}=/path/to/chromium"
        )
    return executable
