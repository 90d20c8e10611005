"""Adapting the user's content to one async iterator the driver can always close.

Invariants:

* :func:`open_source` returns an object with ``__anext__`` and ``aclose``;
  ``aclose`` is idempotent, and after it the user's iterator has been closed
  (its ``finally`` has run) or will be as soon as the call it is blocked in
  returns.
* A synchronous iterator runs in its own *daemon* worker thread, one
  ``next()`` at a time.  Waiting for that thread can be cancelled at once: a
  blocking ``next()`` never delays disconnect handling, a drain, or the end of
  the response.  The abandoned thread finishes its ``next()``, drops the item
  and closes the iterator itself, so the generator's ``finally`` runs promptly
  instead of whenever the garbage collector gets to it.
* Daemon, because a worker blocked in ``next()`` must not hold the process
  open after the server has finished: anyio's asyncio worker threads are not
  daemons, and an interpreter exits only after joining those, so a generator
  blocked in ``time.sleep(3)`` (or forever, in ``queue.get()``) delayed a
  hypercorn worker's exit by as long (tests/test_real_servers.py).  One thread
  per sync source, started at its first item and ended when it is closed; no
  pool limit makes one slow stream wait for another's thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import types
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Final, Protocol, final

import anyio
from anyio.lowlevel import current_token

from ._shutdown import call_soon_on_loop

__all__ = ("ClosableSource", "SyncIteratorSource", "open_source")

logger = logging.getLogger("sse_sm.source")

_EXHAUSTED: Final = object()


class ClosableSource(Protocol):
    """What the driver iterates: an async iterator that can always be closed."""

    def __anext__(self) -> Any: ...

    @property
    def finished(self) -> bool: ...

    async def aclose(self) -> None: ...


@final
class _AsyncSource:
    """An async iterator, closed through its own ``aclose`` when it has one."""

    __slots__ = ("__anext__", "_iterator")

    def __init__(self, iterator: AsyncIterator[Any]) -> None:
        self._iterator = iterator
        self.__anext__ = iterator.__anext__

    @property
    def finished(self) -> bool:
        """An async generator that has returned or raised: aclose() would do nothing."""
        iterator = self._iterator
        return isinstance(iterator, types.AsyncGeneratorType) and iterator.ag_frame is None

    async def aclose(self) -> None:
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            await aclose()


@final
class _DaemonWorker:
    """One daemon thread that runs one source's calls, in order, for its lifetime."""

    __slots__ = ("_calls", "_thread")

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def run(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` on the worker; waiting for it may be cancelled (abandoned)."""
        token = current_token()
        done = anyio.Event()
        outcome: list[tuple[bool, Any]] = []

        def report(result: tuple[bool, Any]) -> None:  # on the loop
            outcome.append(result)
            done.set()

        def call() -> None:  # on the worker
            try:
                result: tuple[bool, Any] = (True, function())
            except BaseException as exc:  # handed to the awaiting task as is
                result = (False, exc)
            call_soon_on_loop(token, report, result)

        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name="sse_sm sync source", daemon=True
            )
            self._thread.start()
        self._calls.put(call)
        await done.wait()
        succeeded, value = outcome[0]
        if succeeded:
            return value
        raise value

    def stop(self) -> None:
        """End the thread once the calls already queued have run."""
        self._calls.put(None)

    def _serve(self) -> None:
        calls = self._calls
        while (call := calls.get()) is not None:
            call()


@final
class SyncIteratorSource:
    """A sync iterator driven from worker threads, closable while one is blocked.

    The lock guards three facts shared between the event loop and a worker:
    whether a ``next()`` is running, whether closing was requested, and
    whether the iterator is closed.
    """

    __slots__ = ("_closed", "_closing", "_iterator", "_lock", "_running", "_worker")

    def __init__(self, iterator: Iterator[Any]) -> None:
        self._iterator = iterator
        self._lock = threading.Lock()
        self._running = False
        self._closing = False
        self._closed = False
        self._worker = _DaemonWorker()

    async def __anext__(self) -> Any:
        item = await self._worker.run(self._next_in_thread)
        if item is _EXHAUSTED:
            raise StopAsyncIteration
        return item

    def _next_in_thread(self) -> Any:
        with self._lock:
            if self._closing:
                return _EXHAUSTED
            self._running = True
        try:
            item = next(self._iterator)
        except StopIteration:
            # StopIteration cannot cross into a coroutine; a sentinel can.
            item = _EXHAUSTED
        finally:
            with self._lock:
                self._running = False
                close_here = self._closing and not self._closed
                if close_here:
                    self._closed = True
            if close_here:
                # aclose() ran while next() was blocked: close on this thread
                # now, and end it (also when next() raised: nobody waits).
                self._close_iterator()
                self._worker.stop()
        return _EXHAUSTED if close_here else item

    finished = False

    async def aclose(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            if self._running:
                return  # the worker closes the iterator when next() returns
            self._closed = True
        # On the worker, where the generator ran.  Its finally may block too;
        # the caller bounds this wait.
        try:
            await self._worker.run(self._close_iterator)
        finally:
            self._worker.stop()

    def _close_iterator(self) -> None:
        close = getattr(self._iterator, "close", None)
        if close is None:
            return
        try:
            close()
        except Exception:
            logger.exception("closing the sync source raised")


def open_source(content: AsyncIterable[Any] | Iterable[Any]) -> ClosableSource:
    """Wrap ``content`` (async or sync iterable) for the driver.

    Raises:
        TypeError: ``content`` is neither an async nor a sync iterable.
    """
    if isinstance(content, AsyncIterable):
        return _AsyncSource(content.__aiter__())
    if isinstance(content, Iterable) and not isinstance(content, (str, bytes, dict)):
        return SyncIteratorSource(iter(content))
    raise TypeError(
        "content must be an async iterable or a sync iterable of events, "
        f"got {type(content).__name__}"
    )
