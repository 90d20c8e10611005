"""Automatic drain: how streams learn that the server running them is stopping.

A user who returns an ``EventSourceResponse`` from an endpoint and starts
``uvicorn app:app``, ``hypercorn app:app`` or ``hypercorn -k trio app:app``
expects Ctrl-C and SIGTERM to end the open streams gracefully, with nothing
else in the app.  No server tells an application that it is shutting down
while requests are still running (the ASGI lifespan ``shutdown`` comes only
after they end), so this module watches the two places where the news
arrives.  Both are installed lazily, by the first stream of an ``automatic``
coordinator, from inside the running loop; nothing happens at import.

1. **Chaining the server's signal handler** (uvicorn; hypercorn with
   ``--workers 0``; ``asyncio.run``/``trio.run`` programs; any server that
   catches SIGINT/SIGTERM with a Python-level handler in the main thread).  The
   handler installed when the stream starts is wrapped: ours requests a drain
   of the streams on the main thread's loop, then calls the server's.  A
   handler that is ``SIG_DFL`` or ``SIG_IGN`` is left alone: the process is
   not stopping gracefully on that signal.  When the server restores its
   predecessor on exit, our wrapper goes with it, so a later server in the
   same process starts clean.
2. **Hypercorn's worker processes.**  ``hypercorn app:app`` serves from a
   spawned child that ignores SIGINT and never sees SIGTERM: the parent sets a
   ``multiprocessing`` event which the worker polls.  The worker's process
   object holds that event (hypercorn passes it as the ``shutdown_event``
   argument of its worker function), so one daemon thread per process blocks
   on it and requests the drain when it is set.

Both end in :meth:`DrainCoordinator.request_drain_on_loop` for every
automatic coordinator that has streamed in this process: only the loop the
signalled server runs is drained, and the coordinators' own loop-safe
scheduling does the rest.

Limits (docs/design.md, "Shutdown"): a server run in a thread installs no
signal handlers, and other servers or supervisors may stop the process by
other means; use :meth:`DrainCoordinator.request_drain` there.  A stream that
starts after the server restored its handlers (a request accepted during its
own shutdown) is drained only by the server's timeout.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any, Final, final

from anyio.lowlevel import current_token

from ._shutdown import DrainCoordinator

__all__ = ("follow_server_shutdown", "set_automatic_drain_enabled", "automatic_drain_enabled")

logger = logging.getLogger("sse_sm.shutdown")

#: The signals servers treat as "stop gracefully".
WATCHED_SIGNALS: Final[tuple[signal.Signals, ...]] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name)
)

SignalHandler = Callable[[int, FrameType | None], Any]

_lock = threading.Lock()
#: Every automatic coordinator that has had a stream in this process.
_followers: weakref.WeakSet[DrainCoordinator] = weakref.WeakSet()
_worker_watch_started = False
#: The loop whose server's handlers were last chained (the main thread's).
_chained_loop: weakref.ReferenceType[Any] | None = None
#: The process-wide switch behind the legacy ``AppStatus`` shim.
_enabled = True


def automatic_drain_enabled() -> bool:
    """Whether server shutdowns drain streams at all (the legacy global switch)."""
    return _enabled


def set_automatic_drain_enabled(enabled: bool) -> None:
    """Turn automatic draining off or on for the whole process (legacy shim only)."""
    global _enabled
    _enabled = enabled


def follow_server_shutdown(coordinator: DrainCoordinator) -> None:
    """Make the running server's shutdown drain ``coordinator``'s streams on this loop.

    Called on the event loop by each stream of an automatic coordinator,
    before it registers, so that a signal between the two is not missed.
    The handlers are chained once per loop; later calls on that loop only
    add the coordinator to the followers (a set add).
    """
    global _chained_loop
    _followers.add(coordinator)
    native = current_token().native_token
    chained = _chained_loop
    if (chained is None or chained() is not native) and (
        threading.current_thread() is threading.main_thread()
    ):
        # Once per loop: reading a handler (signal.getsignal) costs about
        # 7 us, which every stream's start would pay.  A server installs its
        # handlers before it serves and restores them when its loop ends.
        _chain_signal_handlers(native)
        _chained_loop = weakref.ref(native)
    if not _worker_watch_started:
        _watch_hypercorn_worker(native)


def drain_loop(native: object, reason: str) -> None:
    """Drain every automatic coordinator's streams on the loop ``native``.

    Safe from a signal handler and from any thread.
    """
    if not _enabled:
        logger.info("%s: automatic drain is disabled; streams run on", reason)
        return
    for coordinator in list(_followers):
        if coordinator.automatic:
            try:
                coordinator.request_drain_on_loop(native, reason)
            except Exception:  # a signal handler must never raise into the loop
                logger.exception("requesting a drain failed")


# ----------------------------------------------------------------- signals


@final
class ChainedSignalHandler:
    """Our handler in front of the server's: drain this loop's streams, then defer."""

    __slots__ = ("_loop", "previous")

    def __init__(self, previous: SignalHandler, loop: object) -> None:
        self.previous = previous
        self._loop = weakref.ref(loop)

    def serves(self, loop: object) -> bool:
        return self._loop() is loop

    def __call__(self, signum: int, frame: FrameType | None) -> Any:
        loop = self._loop()
        if loop is not None:
            drain_loop(loop, f"{signal.Signals(signum).name} received")
        # The server's handler last: Python's default SIGINT handler raises.
        return self.previous(signum, frame)

    def __repr__(self) -> str:
        # Cheap on purpose: signal.getsignal() formats the repr of a handler
        # it cannot map to SIG_DFL/SIG_IGN, on every stream's start, and the
        # server's handler (a bound method of an asyncio object) formats a
        # whole task in its repr, about 20 us.
        previous = self.previous
        name = getattr(previous, "__qualname__", None) or type(previous).__qualname__
        return f"<sse_sm drain, then {name}>"


def _chain_signal_handlers(native: object) -> None:
    for signum in WATCHED_SIGNALS:
        current = signal.getsignal(signum)
        if isinstance(current, ChainedSignalHandler):
            if current.serves(native):
                continue
            current = current.previous  # left over from an earlier loop: re-aim it
        if not callable(current):
            continue  # SIG_DFL, SIG_IGN, or installed outside Python
        try:
            signal.signal(signum, ChainedSignalHandler(current, native))
        except (ValueError, OSError):  # pragma: no cover - not the main interpreter
            logger.debug("could not chain the handler of %s", signum, exc_info=True)
            return
        logger.debug("chained %s before %r", signal.Signals(signum).name, current)


# -------------------------------------------------------- hypercorn workers


def hypercorn_worker_shutdown_event() -> Any | None:
    """The ``multiprocessing`` event that stops this hypercorn worker, if this is one.

    hypercorn starts each worker as ``Process(target=<its worker function>,
    kwargs={..., "shutdown_event": event})``; the child's process object keeps
    both.  Anything else (not a child process, another target) gives ``None``.
    """
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is None or multiprocessing.parent_process() is None:
        return None
    process = multiprocessing.current_process()
    target = getattr(process, "_target", None)
    if not str(getattr(target, "__module__", "")).startswith("hypercorn."):
        return None
    kwargs = getattr(process, "_kwargs", None)
    event = kwargs.get("shutdown_event") if isinstance(kwargs, dict) else None
    if event is None or not callable(getattr(event, "wait", None)):
        return None
    return event


def _watch_hypercorn_worker(native: object) -> None:
    global _worker_watch_started
    with _lock:
        if _worker_watch_started:
            return
        _worker_watch_started = True
    event = hypercorn_worker_shutdown_event()
    if event is None:
        return
    loop = weakref.ref(native)

    def wait_then_drain() -> None:
        event.wait()  # blocks this one thread; no polling
        target = loop()
        if target is not None:
            drain_loop(target, "hypercorn worker shutting down")

    threading.Thread(
        target=wait_then_drain, name="sse_sm hypercorn shutdown watch", daemon=True
    ).start()
    logger.debug("watching hypercorn's worker shutdown event")
