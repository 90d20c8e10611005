"""Adapting the user's content to one async iterator the driver can always close.

Invariants:

* :func:`open_source` returns an object with ``__anext__`` and ``aclose``;
  ``aclose`` is idempotent, and after it the user's iterator has been closed
  (its ``finally`` has run) or will be as soon as the call it is blocked in
  returns.  After ``aclose`` (or the end of a sync iterator), ``__anext__``
  raises ``StopAsyncIteration`` at once.
* A synchronous iterator's calls (``next()``, then ``close()``) run one at a
  time on the threads of one process-wide pool of *daemon* workers, at most
  :func:`set_sync_source_threads` of them (default
  :data:`DEFAULT_SYNC_SOURCE_THREADS`, 1000).  A thread is held for one call, not
  for a stream, and is kept idle for :data:`IDLE_SECONDS` to serve the next
  call, so a stream that is sending holds no thread and opening many streams
  starts few threads.  Consecutive calls of one source may therefore run on
  different threads (as with sse-starlette's thread pool).  Past the limit a
  call waits for a free thread, first come first served.
* Waiting for a call, including for a free thread when all are busy, can be
  cancelled at once: a blocking ``next()`` or a full pool never delays
  disconnect handling, a drain, or the end of the response.  A ``next()``
  still waiting for a thread is withdrawn; one already running is abandoned:
  its thread finishes the call, drops the item and closes the iterator
  itself, so the generator's ``finally`` runs promptly instead of at garbage
  collection.  An abandoned thread counts against the limit until its call
  returns (nothing can stop a thread from Python).
* A thread that cannot be started (``RuntimeError: can't start new thread``
  at the OS limit) fails that call at once with :class:`SyncSourceThreadError`;
  nothing waits for it.
* A ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``,
  ``SystemExit``, ``GeneratorExit``, a stray cancellation) raised by the
  user's ``next()`` is re-raised as a :class:`RuntimeError` whose cause it
  is: in a thread it ends that stream as an error, as a thread's
  ``SystemExit`` ends only that thread, and never reaches the event loop,
  where asyncio would stop the whole server for it.
* Daemon, because a worker blocked in ``next()`` must not hold the process
  open after the server has finished: anyio's asyncio worker threads are not
  daemons, and an interpreter exits only after joining those, so a generator
  blocked in ``time.sleep(3)`` (or forever, in ``queue.get()``) delayed a
  hypercorn worker's exit by as long (tests/servers/test_real_servers.py).

Thread safety: the pool is shared by every event loop and thread of the
process behind one lock; each call reports back to the loop that awaits it
through that loop's thread-safe entry point.

Why one module of this length: the sync source and the thread pool it
runs on share one locking protocol (a ``next()`` in flight, a close asked
for, a call withdrawn from the waiting line); the async wrapper is small.
"""

from __future__ import annotations

import inspect
import logging
import os
import queue
import threading
import time
import types
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Final, NoReturn, Protocol, final

import anyio
from anyio.lowlevel import EventLoopToken, current_token

from ._exceptions import SseSmError
from ._shutdown import call_soon_on_loop

__all__ = (
    "DEFAULT_SYNC_SOURCE_THREADS",
    "IDLE_SECONDS",
    "ClosableSource",
    "SyncIteratorSource",
    "SyncSourceThreadError",
    "open_source",
    "set_sync_source_threads",
)

logger = logging.getLogger("sse_sm.source")

_EXHAUSTED: Final = object()

#: The default limit on sync-source threads in one process.  A thread is
#: held only while a call runs, so this bounds the sync streams that can be
#: *inside* ``next()`` at once: generators that block between events (a
#: ``time.sleep(1)`` loop) hold one each, generators that compute and yield
#: almost none.  1000 such threads cost about 20 to 30 MiB of memory and stay
#: well under the usual task limits (systemd's default ``TasksMax`` is 15 %
#: of ``pid_max``, 4915 with the classic 32768), where one thread per stream
#: failed outright at about 5,000 streams.
DEFAULT_SYNC_SOURCE_THREADS: Final = 1000

#: Seconds an idle worker waits for another call before its thread ends (as
#: anyio's own worker threads do).
IDLE_SECONDS: Final = 10.0

#: Withdrawn calls tolerated in the waiting line before it may be compacted.
_COMPACT_AFTER: Final = 64

#: Seconds between two warnings that every thread is busy.
_SATURATION_WARNING_INTERVAL: Final = 60.0

_THREAD_NAME: Final = "sse_sm sync source"


class ClosableSource(Protocol):
    """What the driver iterates: an async iterator that can always be closed."""

    def __anext__(self) -> Any: ...

    @property
    def finished(self) -> bool: ...

    async def aclose(self) -> None: ...


class SyncSourceThreadError(SseSmError, RuntimeError):
    """No thread could be started to run a sync source's call (the OS refused one).

    The stream that needed it closes with reason ``error``; lowering
    :func:`set_sync_source_threads` below the process's thread limit turns
    this into waiting for a free thread.
    """


async def _stopped() -> NoReturn:
    """``__anext__`` of a source that has been closed."""
    raise StopAsyncIteration


@final
class _AsyncSource:
    """An async iterator, closed through its own ``aclose`` when it has one.

    ``__anext__`` is the user's own bound method (no wrapper on the hot
    path) until :meth:`aclose`, which swaps in one that raises
    ``StopAsyncIteration``: an iterator without ``aclose`` would otherwise
    keep producing after it.  For a hub subscription it is the
    subscription's ``_sse_sm_next_frames`` instead, which may return a
    :class:`~sse_sm._events.Frames` (several events for one send); only
    the driver calls it.
    """

    __slots__ = ("__anext__", "_closed", "_iterator")

    def __init__(self, iterator: AsyncIterator[Any]) -> None:
        self._iterator = iterator
        self._closed = False
        # A hub subscription hands the driver a backlog joined into one
        # ``Frames`` (one send for many events); it opts in with this method,
        # looked up on its type so that no ``__getattr__`` can fake it.
        if hasattr(type(iterator), "_sse_sm_next_frames"):
            self.__anext__: Callable[[], Any] = iterator._sse_sm_next_frames  # type: ignore[attr-defined]
        else:
            self.__anext__ = iterator.__anext__

    @property
    def finished(self) -> bool:
        """Closed, or an async generator that has returned or raised."""
        if self._closed:
            return True
        iterator = self._iterator
        return isinstance(iterator, types.AsyncGeneratorType) and iterator.ag_frame is None

    async def aclose(self) -> None:
        """Close the iterator once; later calls return at once."""
        if self._closed:
            return
        self._closed = True
        self.__anext__ = _stopped
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            await aclose()


# ------------------------------------------------------------------ the pool

_QUEUED: Final = 0
_RUNNING: Final = 1
_WITHDRAWN: Final = 2


@final
class _Call:
    """One function to run on a worker, and the way back to the loop awaiting it.

    ``state`` changes only under the pool's lock: QUEUED (in the waiting
    line) to RUNNING (a worker has it) or WITHDRAWN (its caller was
    cancelled first; it never runs).
    """

    __slots__ = ("done", "function", "outcome", "state", "token")

    def __init__(self, function: Callable[[], Any], token: EventLoopToken) -> None:
        self.function = function
        self.token = token
        self.done = anyio.Event()
        self.outcome: tuple[bool, Any] | None = None
        self.state = _QUEUED

    def compute(self) -> tuple[bool, Any]:
        """Run the function on a worker; never raises (what it raised goes back)."""
        try:
            outcome: tuple[bool, Any] = (True, self.function())
        except BaseException as exc:  # handed to the awaiting task as is
            outcome = (False, exc)
        self.function = _nothing  # an abandoned call keeps no reference to its source
        return outcome

    def report(self, outcome: tuple[bool, Any]) -> None:
        """Hand ``outcome`` to the awaiting task, from any thread."""
        call_soon_on_loop(self.token, self._report, outcome)

    def fail(self, exc: BaseException) -> None:
        """Give up on a queued call (from any thread): its caller gets ``exc``."""
        self.report((False, exc))

    def _report(self, outcome: tuple[bool, Any]) -> None:  # on the loop
        self.outcome = outcome
        self.done.set()


def _nothing() -> None:
    return None


@final
class _Worker:
    """An idle worker's inbox: a call handed to it, or None to end its thread."""

    __slots__ = ("inbox",)

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()


@final
class _WorkerPool:
    """Daemon threads that run sync sources' calls, at most ``limit`` at a time.

    Under ``_lock``: ``_threads`` counts threads started (or starting) and
    not ended, busy or idle; ``_idle`` holds the idle ones, most recently
    used last (reused first, so the others time out); ``_waiting`` holds the
    calls that found every thread busy, in arrival order.  An idle worker
    exists only while no call waits.
    """

    __slots__ = (
        "_idle",
        "_idle_seconds",
        "_limit",
        "_lock",
        "_threads",
        "_waiting",
        "_warned_at",
        "_withdrawn",
    )

    def __init__(self, limit: int, idle_seconds: float = IDLE_SECONDS) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._idle_seconds = idle_seconds
        self._threads = 0
        self._idle: list[_Worker] = []
        self._waiting: deque[_Call] = deque()
        self._withdrawn = 0  # withdrawn calls still in _waiting
        self._warned_at = -_SATURATION_WARNING_INTERVAL

    @property
    def threads(self) -> int:
        """Threads alive or starting (busy, abandoned or idle)."""
        return self._threads

    @property
    def busy(self) -> int:
        """Threads running a call (or starting to)."""
        with self._lock:
            return self._threads - len(self._idle)

    async def run(
        self, function: Callable[[], Any], *, withdraw: bool, leave_in_line: bool = False
    ) -> Any:
        """Run ``function`` on a worker and return what it returns (or raise).

        Waiting may be cancelled: the call is then withdrawn if it is still
        waiting for a thread and ``withdraw`` is true, otherwise abandoned
        (it runs, and its outcome is dropped).  With ``leave_in_line``, a
        call that finds every thread busy is left to run when one frees up,
        and None is returned at once.  The only checkpoint is the wait.

        Raises:
            SyncSourceThreadError: a thread was needed and could not start.
        """
        call = _Call(function, current_token())
        self._submit(call)
        if leave_in_line and call.state == _QUEUED:  # unlocked: a stale read only means waiting
            return None
        try:
            await call.done.wait()
        except BaseException:
            if withdraw:
                with self._lock:
                    if call.state == _QUEUED:
                        self._withdraw(call)
            raise
        outcome = call.outcome
        assert outcome is not None
        succeeded, value = outcome
        if succeeded:
            return value
        raise value

    def set_limit(self, limit: int) -> int:
        """Change the limit now; returns the previous one (see set_sync_source_threads)."""
        started: list[_Call] = []
        with self._lock:
            previous, self._limit = self._limit, limit
            while self._threads > limit and self._idle:
                self._idle.pop(0).inbox.put(None)  # the longest idle first
                self._threads -= 1
            while self._threads < limit and (call := self._take_waiting()) is not None:
                self._threads += 1
                started.append(call)
        for call in started:
            try:
                self._start(call)
            except SyncSourceThreadError as exc:
                call.fail(exc)
        return previous

    def _submit(self, call: _Call) -> None:
        warn: int | None = None
        with self._lock:
            if self._idle:
                call.state = _RUNNING
                self._idle.pop().inbox.put(call)
                return
            start = self._threads < self._limit
            if start:
                call.state = _RUNNING
                self._threads += 1
            else:
                self._waiting.append(call)
                warn = self._saturation_warning_due()
        if start:
            self._start(call)
        elif warn is not None:
            logger.warning(
                "all %d sync-source threads are busy (in next() or close()); sync "
                "streams wait for a free one (sse_sm.set_sync_source_threads)",
                warn,
            )

    def _start(self, call: _Call) -> None:
        """Start a thread for ``call`` (already counted in ``_threads``)."""
        thread = threading.Thread(
            target=self._serve, args=(_Worker(), call), name=_THREAD_NAME, daemon=True
        )
        try:
            thread.start()
        except BaseException as exc:  # RuntimeError at the OS limit, MemoryError
            with self._lock:
                self._threads -= 1
                running = self._threads
                # With no thread left, nothing would ever serve the waiting line.
                orphans = [] if running else self._drain_waiting()
                limit = self._limit
            error = SyncSourceThreadError(
                f"could not start a thread for a sync source ({exc}); "
                f"{running} sync-source threads are running, limit {limit} "
                "(sse_sm.set_sync_source_threads)"
            )
            error.__cause__ = exc  # also for the orphans, which never see this raise
            for orphan in orphans:
                orphan.fail(error)
            raise error from exc

    def _serve(self, worker: _Worker, call: _Call) -> None:
        """A worker thread: run calls until idle too long, or surplus to the limit."""
        while True:
            outcome = call.compute()
            # Decide what this thread does next *before* reporting, so the
            # stream's next call, submitted when the report arrives, finds
            # this thread idle instead of starting another.
            with self._lock:
                if self._threads > self._limit:  # the limit was lowered: end
                    self._threads -= 1
                    following, idle = None, False
                else:
                    following = self._take_waiting()
                    idle = following is None
                    if idle:
                        self._idle.append(worker)
            call.report(outcome)
            del outcome, call  # nothing of a finished call is kept while idle
            if following is None:
                following = self._wait_while_idle(worker) if idle else None
                if following is None:
                    return
            call = following

    def _wait_while_idle(self, worker: _Worker) -> _Call | None:
        """Wait on the idle list for a call; None once idle too long (or told to end)."""
        while True:
            try:
                return worker.inbox.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    if worker in self._idle:
                        self._idle.remove(worker)
                        self._threads -= 1
                        return None
                # Taken from the idle list just now: its call is already in
                # the inbox (put under the lock just released).

    def _withdraw(self, call: _Call) -> None:
        """Take a waiting call out of line (under the lock).

        It is marked, not searched for; the line is compacted once marked
        calls are most of it, so streams that come and go while every thread
        is blocked do not pile up in it, nor keep their generators alive.
        """
        call.state = _WITHDRAWN
        call.function = _nothing
        self._withdrawn += 1
        if self._withdrawn > _COMPACT_AFTER and 2 * self._withdrawn > len(self._waiting):
            self._waiting = deque(c for c in self._waiting if c.state == _QUEUED)
            self._withdrawn = 0

    def _take_waiting(self) -> _Call | None:
        """The oldest waiting call, now RUNNING (under the lock)."""
        waiting = self._waiting
        while waiting:
            call = waiting.popleft()
            if call.state == _QUEUED:
                call.state = _RUNNING
                return call
            self._withdrawn -= 1
        return None

    def _drain_waiting(self) -> list[_Call]:
        """Every waiting call, now RUNNING so nothing else takes it (under the lock)."""
        calls = [call for call in self._waiting if call.state == _QUEUED]
        self._waiting.clear()
        self._withdrawn = 0
        for call in calls:
            call.state = _RUNNING
        return calls

    @property
    def waiting(self) -> int:
        """Calls in the waiting line, withdrawn ones not yet compacted away included."""
        return len(self._waiting)

    def _saturation_warning_due(self) -> int | None:
        """The limit to warn about, at most once a minute (under the lock)."""
        now = time.monotonic()
        if now - self._warned_at < _SATURATION_WARNING_INTERVAL:
            return None
        self._warned_at = now
        return self._limit

    def after_fork(self) -> None:
        """In a forked child: the parent's threads do not exist here; start afresh."""
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = []
        self._waiting = deque()
        self._withdrawn = 0


_pool = _WorkerPool(DEFAULT_SYNC_SOURCE_THREADS)
if hasattr(os, "register_at_fork"):  # a worker forked from a process that streamed
    os.register_at_fork(after_in_child=lambda: _pool.after_fork())


def set_sync_source_threads(limit: int) -> int:
    """Limit the threads that run sync sources in this process; returns the old limit.

    A sync source (``EventSourceResponse`` given a plain iterable or
    generator) has its ``next()`` and ``close()`` run on a process-wide pool
    of daemon threads, shared by every event loop.  A thread is held for one
    call, so the limit bounds the sync streams that are *inside* ``next()``
    at the same time, not the open ones.  Past it, a call waits for a free
    thread, first come first served; the wait never delays a disconnect, a
    drain or a timeout.  The default is :data:`DEFAULT_SYNC_SOURCE_THREADS`
    (1000).

    A ``next()`` abandoned while blocked (its client left) keeps its thread
    until it returns, and counts against the limit until then: a generator
    that blocks forever (``queue.get()`` with no timeout) holds a thread
    forever, and ``limit`` of them leave no thread for any sync stream.
    Block with a timeout, or use an async source.

    Callable from any thread at any time.  Raising the limit starts threads
    for waiting calls at once; lowering it ends idle threads at once and busy
    ones when their call returns.

    Raises:
        TypeError: ``limit`` is not an int.
        ValueError: ``limit`` is less than 1.
    """
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, got {type(limit).__name__}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return _pool.set_limit(limit)


# ---------------------------------------------------------- the sync source


def _contained(exc: BaseException) -> RuntimeError:
    """What a non-Exception raised in the worker becomes for the stream (raise it from exc)."""
    return RuntimeError(f"the sync source's next() raised {type(exc).__name__}: {exc!r}")


@final
class SyncIteratorSource:
    """A sync iterator driven from pool threads, closable while one is blocked.

    ``_turn`` (a condition on one lock) guards three facts shared between
    the event loop and the workers: whether a ``next()`` is running, whether
    closing was requested, and whether the iterator is closed.  One call at
    a time enters the iterator: a ``next()`` started while an abandoned one
    still runs waits its turn, and gives up as soon as closing is requested.
    """

    __slots__ = ("_closed", "_closing", "_ended", "_iterator", "_running", "_turn")

    def __init__(self, iterator: Iterator[Any]) -> None:
        self._iterator = iterator
        self._turn = threading.Condition(threading.Lock())
        self._running = False
        self._closing = False
        self._closed = False
        self._ended = False  # next() raised StopIteration

    async def __anext__(self) -> Any:
        if self._closing or self._ended:
            raise StopAsyncIteration
        item = await _pool.run(self._next_in_thread, withdraw=True)
        if item is _EXHAUSTED:
            raise StopAsyncIteration
        return item

    @property
    def finished(self) -> bool:
        """Closed, or a generator that has returned or raised: aclose() would do nothing."""
        if self._closed:
            return True
        iterator = self._iterator
        return isinstance(iterator, types.GeneratorType) and iterator.gi_frame is None

    def _next_in_thread(self) -> Any:
        turn = self._turn
        with turn:
            while self._running and not self._closing:
                turn.wait()
            if self._closing:
                return _EXHAUSTED
            self._running = True
        close_here = False
        try:
            item = next(self._iterator)
        except StopIteration:
            # StopIteration cannot cross into a coroutine; a sentinel can.
            self._ended = True
            item = _EXHAUSTED
        except Exception:
            raise
        except BaseException as exc:
            raise _contained(exc) from exc
        finally:
            with turn:
                self._running = False
                close_here = self._closing and not self._closed
                if close_here:
                    self._closed = True
                turn.notify_all()
            if close_here:
                # aclose() ran while next() was blocked: close on this thread
                # now (also when next() raised: nobody waits).
                self._close_iterator()
        return _EXHAUSTED if close_here else item

    async def aclose(self) -> None:
        """Close the iterator; idempotent, and never waits for a blocked ``next()``.

        With a ``next()`` running, returns at once: its thread closes the
        iterator when that returns.  Otherwise ``close()`` runs on a pool
        thread and this waits for it (the caller bounds the wait; a
        cancelled wait leaves the close to run anyway), except where it runs
        no user code (a generator not started or already finished, an
        iterator without ``close``: done here).  When every thread is busy,
        the close is left in line and this returns at once, as it does for a
        running ``next()``: no close ever waits for the pool.  If no thread
        can be started for it, the failure is logged and the iterator is
        left to the garbage collector.
        """
        with self._turn:
            if self._closing:
                return
            self._closing = True
            self._turn.notify_all()  # a next() waiting its turn gives up
            if self._running:
                return  # the worker closes the iterator when next() returns
            self._closed = True
        # From here no next() can enter the iterator: it is ours alone.
        iterator = self._iterator
        close = getattr(iterator, "close", None)
        if close is None:
            return
        if (
            isinstance(iterator, types.GeneratorType)
            and inspect.getgeneratorstate(iterator) != inspect.GEN_SUSPENDED
        ):
            close()  # not started or finished: no finally to run, nothing blocks
            return
        try:
            await _pool.run(self._close_iterator, withdraw=False, leave_in_line=True)
        except SyncSourceThreadError:
            logger.exception("the sync source could not be closed on a thread")

    def _close_iterator(self) -> None:
        close = getattr(self._iterator, "close", None)
        if close is None:
            return
        try:
            close()
        except BaseException:  # on a worker: no signal arrives here, contain it
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
