"""Adapting the user's content to one async iterator the driver can always close.

Invariants:

* :func:`open_source` returns an object with ``__anext__`` and ``aclose``;
  ``aclose`` is idempotent, and after it the user's iterator has been closed
  (its ``finally`` has run) or will be as soon as the call it is blocked in
  returns.
* A synchronous iterator runs in a worker thread, one ``next()`` at a time.
  Waiting for that thread can be cancelled at once (``abandon_on_cancel``): a
  blocking ``next()`` never delays disconnect handling, a drain, or the end of
  the response.  The abandoned thread finishes its ``next()``, drops the item
  and closes the iterator itself, so the generator's ``finally`` runs promptly
  instead of whenever the garbage collector gets to it.
"""

from __future__ import annotations

import logging
import threading
import types
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any, Final, Protocol, final

import anyio.to_thread

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
class SyncIteratorSource:
    """A sync iterator driven from worker threads, closable while one is blocked.

    The lock guards three facts shared between the event loop and a worker:
    whether a ``next()`` is running, whether closing was requested, and
    whether the iterator is closed.
    """

    __slots__ = ("_closed", "_closing", "_iterator", "_lock", "_running")

    def __init__(self, iterator: Iterator[Any]) -> None:
        self._iterator = iterator
        self._lock = threading.Lock()
        self._running = False
        self._closing = False
        self._closed = False

    async def __anext__(self) -> Any:
        item = await anyio.to_thread.run_sync(self._next_in_thread, abandon_on_cancel=True)
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
            # aclose() ran while next() was blocked: close on this thread now.
            self._close_iterator()
            return _EXHAUSTED
        return item

    finished = False

    async def aclose(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            if self._running:
                return  # the worker closes the iterator when next() returns
            self._closed = True
        # The generator's finally may block too; the caller bounds this wait.
        await anyio.to_thread.run_sync(self._close_iterator, abandon_on_cancel=True)

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
