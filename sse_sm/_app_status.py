"""sse-starlette's ``AppStatus``, kept as a small shim over app-scoped draining.

sse-starlette ends streams on shutdown through a process-global flag,
``AppStatus.should_exit``, set by a patch of uvicorn applied at import.  Code
written against it keeps working here, with three differences, each to stop
the flag from leaking between servers and tests (with a process-global latch,
one test's shutdown ended every stream of the tests after it, and a server
restarted in the same process streamed nothing):

* ``AppStatus.should_exit = True`` drains the streams open at that moment,
  each on its own event loop, and later streams on those loops; a stream on a
  new loop (the next test, the next server) starts normally.  Reading it
  gives back what was last assigned.
* ``AppStatus.should_exit = False`` forgets every earlier drain request,
  which is what test fixtures that "reset AppStatus" expect.
* Nothing is patched at import; server shutdowns are detected by
  ``_server_shutdown`` whether or not this module is used.

``disable_automatic_graceful_drain()`` still switches automatic draining off
for the whole process, as it did; prefer the app-scoped
``drain_coordinator_for(app).automatic = False``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from anyio.lowlevel import current_token

from ._server_shutdown import automatic_drain_enabled, set_automatic_drain_enabled
from ._shutdown import every_coordinator

__all__ = ("AppStatus",)

_REASON = "AppStatus.should_exit was set"


def _running_loop() -> object | None:
    try:
        return current_token().native_token
    except RuntimeError:  # not inside an event loop (sniffio cannot tell which)
        return None


class _AppStatusMeta(type):
    """Turns assignments to ``AppStatus``'s class attributes into drain requests."""

    _should_exit: bool = False

    @property
    def should_exit(cls) -> bool:
        return cls._should_exit

    @should_exit.setter
    def should_exit(cls, value: bool) -> None:
        cls._should_exit = bool(value)
        if value:
            loop = _running_loop()
            for coordinator in every_coordinator():
                coordinator.request_drain_on_running_loops(_REASON)
                if loop is not None:
                    coordinator.request_drain_on_loop(loop, _REASON)
        else:
            for coordinator in every_coordinator():
                coordinator.reset()

    @property
    def enable_automatic_graceful_drain(cls) -> bool:
        return automatic_drain_enabled()

    @enable_automatic_graceful_drain.setter
    def enable_automatic_graceful_drain(cls, value: bool) -> None:
        set_automatic_drain_enabled(bool(value))


class AppStatus(metaclass=_AppStatusMeta):
    """Legacy switchboard for code written against sse-starlette.

    >>> AppStatus.should_exit = True   # drain the streams open now
    >>> AppStatus.should_exit = False  # forget it (what test fixtures do)
    """

    #: Older sse-starlette releases kept an ``anyio.Event`` here and fixtures
    #: reset it to ``None``; accepted and ignored.
    should_exit_event: ClassVar[Any] = None
    #: sse-starlette kept uvicorn's unpatched handler here; nothing is patched.
    original_handler: ClassVar[Callable[..., Any] | None] = None

    @staticmethod
    def disable_automatic_graceful_drain() -> None:
        """Let streams run on when the server stops (process-wide, as before).

        Something must then end them: ``AppStatus.should_exit = True``,
        ``DrainCoordinator.request_drain()``, or the server's own timeout.
        """
        set_automatic_drain_enabled(False)

    @staticmethod
    def enable_automatic_graceful_drain_mode() -> None:
        """Undo :meth:`disable_automatic_graceful_drain`."""
        set_automatic_drain_enabled(True)

    @staticmethod
    def handle_exit(*args: object, **kwargs: object) -> None:
        """What sse-starlette's uvicorn patch called on a signal: drain, if enabled."""
        if automatic_drain_enabled():
            AppStatus.should_exit = True
