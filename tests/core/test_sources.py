"""Sources: the bounded pool behind sync sources, closing, and what users' iterators do.

Every test runs on asyncio and trio.  Sync sources here run on a pool of their
own (``fresh_sync_pool``), so no idle thread from an earlier test is reused and
the counts are this test's.  A generator that blocks waits on a
``threading.Event`` with a bound, so a failing test cannot leave a thread
blocked for good.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, NoReturn

import anyio
import anyio.lowlevel
import pytest

import sse_sm
from sse_sm import (
    CloseReason,
    DrainCoordinator,
    EventSourceResponse,
    SyncSourceThreadError,
    _sources,
    set_sync_source_threads,
)
from sse_sm._sources import _Call, _WorkerPool, open_source
from sse_sm.testing import SSEStream, stream
from tests._support import fresh_sync_pool

#: Seconds a gated generator waits at most (a failing test must not hang).
GATE_BOUND = 10.0
THREAD_NAME = "sse_sm sync source"


async def wait_until(predicate: Any) -> None:
    while not predicate():  # noqa: ASYNC110 - a worker thread's progress has no event on the loop
        await anyio.sleep(0.002)


def refuse_to_start(self: threading.Thread) -> NoReturn:
    raise RuntimeError("can't start new thread")


class Gated:
    """A generator whose first ``next()`` blocks until released; records its life."""

    def __init__(self, *items: str, block_in_finally: bool = False) -> None:
        self.items = items or ("hello",)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.finally_ran = threading.Event()
        self.finally_thread: threading.Thread | None = None
        self.block_in_finally = block_in_finally
        self.advanced = 0

    def run(self) -> Iterator[str]:
        try:
            self.entered.set()
            if not self.block_in_finally:
                self.release.wait(GATE_BOUND)
            for item in self.items:
                self.advanced += 1
                yield item
        finally:
            if self.block_in_finally:
                self.release.wait(GATE_BOUND)
            self.finally_thread = threading.current_thread()
            self.finally_ran.set()


def numbers(count: int = 3) -> Iterator[str]:
    yield from (str(n) for n in range(count))


async def serve(gated: Gated, streams: dict[Gated, SSEStream]) -> None:
    """Stream ``gated`` until cancelled; its client is kept for the test."""
    async with stream(EventSourceResponse(gated.run(), ping=0)) as sse:
        streams[gated] = sse
        await anyio.sleep_forever()


# ------------------------------------------------------- the thread limit


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_thread_that_cannot_start_fails_the_stream_at_once(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the OS limit: closed with ``error`` at once, and closing waits for nothing.

    With ``cleanup_timeout=None`` the close is shielded, so ``fail_after``
    alone could not end a wait for a worker that never started (the bug):
    the stream runs on a loop of its own in a daemon thread, joined with a
    bound.
    """
    gated = Gated()
    outcome: dict[str, Any] = {}

    async def main() -> None:
        with fresh_sync_pool() as pool:
            monkeypatch.setattr(threading.Thread, "start", refuse_to_start)
            try:
                response = EventSourceResponse(gated.run(), ping=0, cleanup_timeout=None)
                with anyio.fail_after(5):
                    async with stream(response, raise_app_exceptions=False) as sse:
                        await sse.wait_finished()
            finally:
                monkeypatch.undo()
        outcome.update(response=response, error=sse.app_exception, threads=pool.threads)

    loop = threading.Thread(target=anyio.run, args=(main,), kwargs={"backend": backend})
    loop.daemon = True  # left behind only if the test fails
    loop.start()
    loop.join(10)
    assert not loop.is_alive(), "closing the stream waited for a thread that never started"
    assert outcome["response"].close_reason is CloseReason.ERROR
    error = outcome["error"]
    assert isinstance(error, SyncSourceThreadError)
    assert "could not start a thread for a sync source (can't start new thread)" in str(error)
    assert "limit 1000" in str(error)
    assert isinstance(error.__cause__, RuntimeError)
    assert outcome["threads"] == 0
    assert not gated.entered.is_set()


async def test_closing_a_started_source_whose_thread_cannot_start_never_waits(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    finally_ran = threading.Event()

    def two() -> Iterator[str]:
        try:
            yield "1"
            yield "2"
        finally:
            finally_ran.set()

    with fresh_sync_pool(idle_seconds=0.0) as pool, anyio.fail_after(5):
        source = open_source(two())
        assert await source.__anext__() == "1"
        await wait_until(lambda: pool.threads == 0)  # its thread ended: idle 0 s
        monkeypatch.setattr(threading.Thread, "start", refuse_to_start)
        with pytest.raises(SyncSourceThreadError):
            await source.__anext__()
        await source.aclose()
        monkeypatch.undo()
    assert "the sync source could not be closed on a thread" in caplog.text
    assert source.finished
    # Left to the garbage collector: nothing ran its finally on the loop.
    assert not finally_ran.is_set()


async def test_a_waiting_call_is_never_left_without_a_thread_to_serve_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A start that fails when no other thread lives fails the waiting calls too."""
    with fresh_sync_pool(limit=1) as pool:
        waiting = _Call(lambda: "never", anyio.lowlevel.current_token())
        with pool._lock:
            pool._threads = 1  # a thread is being started for another call
        pool._submit(waiting)  # finds the limit reached: waits
        monkeypatch.setattr(threading.Thread, "start", refuse_to_start)
        starting = _Call(lambda: "never", anyio.lowlevel.current_token())
        with pytest.raises(SyncSourceThreadError):
            pool._start(starting)  # that start fails
        monkeypatch.undo()
        with anyio.fail_after(5):
            await waiting.done.wait()
    assert waiting.outcome is not None
    succeeded, error = waiting.outcome
    assert not succeeded
    assert isinstance(error, SyncSourceThreadError)
    assert pool.threads == 0


async def test_past_the_limit_a_stream_waits_for_a_free_thread() -> None:
    first, second, third = Gated("a"), Gated("b"), Gated("c")
    streams: dict[Gated, SSEStream] = {}
    with fresh_sync_pool(limit=2) as pool, anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            for gated in (first, second):
                tasks.start_soon(serve, gated, streams)
            await wait_until(lambda: first.entered.is_set() and second.entered.is_set())
            tasks.start_soon(serve, third, streams)
            await wait_until(lambda: len(streams) == 3)
            await anyio.sleep(0.1)
            assert not third.entered.is_set(), "a third thread started past the limit of 2"
            assert pool.threads == 2
            first.release.set()  # its thread is free once its next() returns
            assert (await streams[first].next_event()).data == "a"
            await wait_until(third.entered.is_set)
            third.release.set()
            assert (await streams[third].next_event()).data == "c"
            second.release.set()
            tasks.cancel_scope.cancel()
    assert pool.threads <= 2


async def test_waiting_for_a_thread_never_delays_a_disconnect_or_a_drain() -> None:
    blocker, leaving, draining = Gated(), Gated(), Gated()
    coordinator = DrainCoordinator()
    try:
        with fresh_sync_pool(limit=1) as pool, anyio.fail_after(10):
            async with stream(EventSourceResponse(blocker.run(), ping=0)):
                await wait_until(blocker.entered.is_set)
                left = EventSourceResponse(leaving.run(), ping=0, cleanup_timeout=None)
                with anyio.fail_after(2):
                    async with stream(left) as sse:
                        await sse.wait_started()
                assert left.close_reason is CloseReason.CLIENT_DISCONNECTED
                drained = EventSourceResponse(
                    draining.run(),
                    ping=0,
                    drain_coordinator=coordinator,
                    shutdown_grace_period=0.05,
                    cleanup_timeout=None,
                )
                with anyio.fail_after(2):
                    async with stream(drained) as sse:
                        await sse.wait_started()
                        coordinator.request_drain("test")
                        await sse.wait_finished()
                assert drained.close_reason is CloseReason.SHUTDOWN_FORCED
                # Their next() calls were withdrawn, never run: the generators
                # never started, and the one thread is still the blocker's.
                assert not leaving.entered.is_set()
                assert not draining.entered.is_set()
                assert pool.busy == 1
                blocker.release.set()
    finally:
        blocker.release.set()


async def test_an_abandoned_blocked_next_keeps_its_thread_until_it_returns() -> None:
    """What the limit means for a client that left while its next() was blocked."""
    abandoned, later = Gated("dropped"), Gated("later")
    with fresh_sync_pool(limit=1) as pool, anyio.fail_after(10):
        first = EventSourceResponse(abandoned.run(), ping=0)
        async with stream(first):
            await wait_until(abandoned.entered.is_set)
        assert first.close_reason is CloseReason.CLIENT_DISCONNECTED
        assert pool.busy == 1, "the blocked next() still holds the only thread"
        assert not abandoned.finally_ran.is_set()
        async with stream(EventSourceResponse(later.run(), ping=0)) as sse:
            await sse.wait_started()
            await anyio.sleep(0.1)
            assert not later.entered.is_set(), "no thread was free for the second stream"
            abandoned.release.set()  # next() returns: item dropped, closed on its thread
            await wait_until(later.entered.is_set)
            later.release.set()
            assert (await sse.next_event()).data == "later"
        assert abandoned.finally_ran.wait(GATE_BOUND)
    assert abandoned.finally_thread is not threading.current_thread()


async def test_set_sync_source_threads_checks_its_argument() -> None:
    with fresh_sync_pool():
        for wrong in ("2", 2.0, True, None):
            with pytest.raises(TypeError, match="limit must be an int"):
                set_sync_source_threads(wrong)  # type: ignore[arg-type]
        for too_small in (0, -3):
            with pytest.raises(ValueError, match="limit must be at least 1, got"):
                set_sync_source_threads(too_small)
        assert set_sync_source_threads(5) == 1000
        assert set_sync_source_threads(1000) == 5
    assert sse_sm.set_sync_source_threads is set_sync_source_threads


async def test_raising_the_limit_starts_the_waiting_calls_at_once() -> None:
    blocker, waiting = Gated(), Gated("w")
    try:
        with fresh_sync_pool(limit=1) as pool, anyio.fail_after(10):
            async with stream(EventSourceResponse(blocker.run(), ping=0)):
                await wait_until(blocker.entered.is_set)
                async with stream(EventSourceResponse(waiting.run(), ping=0)) as sse:
                    await sse.wait_started()
                    await anyio.sleep(0.05)
                    assert not waiting.entered.is_set()
                    assert set_sync_source_threads(2) == 1
                    await wait_until(waiting.entered.is_set)
                    assert pool.threads == 2
                    waiting.release.set()
                    assert (await sse.next_event()).data == "w"
                blocker.release.set()
    finally:
        blocker.release.set()


async def test_lowering_the_limit_ends_idle_threads_at_once() -> None:
    gates = [Gated(str(n)) for n in range(3)]
    earlier = set(threading.enumerate())
    with fresh_sync_pool(limit=3) as pool, anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            for gated in gates:  # three next() calls at once: three threads
                tasks.start_soon(open_source(gated.run()).__anext__)
            await wait_until(lambda: all(gated.entered.is_set() for gated in gates))
            for gated in gates:
                gated.release.set()
        await wait_until(lambda: pool.busy == 0)
        threads = {t for t in set(threading.enumerate()) - earlier if t.name == THREAD_NAME}
        assert len(threads) == 3
        assert pool.threads == 3
        set_sync_source_threads(1)
        assert pool.threads == 1
        await wait_until(lambda: sum(t.is_alive() for t in threads) <= 1)


async def test_idle_threads_are_reused() -> None:
    with fresh_sync_pool() as pool, anyio.fail_after(10):
        for _ in range(20):
            async with stream(EventSourceResponse(numbers(), ping=0)) as sse:
                assert [event.data async for event in sse.events()] == ["0", "1", "2"]
        assert pool.threads == 1


async def test_thousands_of_streams_opened_and_closed_leave_no_thread() -> None:
    before = threading.active_count()
    limit = 20

    def ticks() -> Iterator[str]:
        while True:
            yield "tick"

    async def one() -> None:
        async with stream(EventSourceResponse(ticks(), ping=0)) as sse:
            await sse.next_event()

    with fresh_sync_pool(limit=limit, idle_seconds=0.2) as pool, anyio.fail_after(60):
        for _batch in range(4):
            async with anyio.create_task_group() as tasks:
                for _ in range(500):
                    tasks.start_soon(one)
            assert threading.active_count() <= before + limit
        await wait_until(lambda: pool.threads == 0)
        await wait_until(lambda: threading.active_count() <= before)


async def test_a_forked_child_starts_with_no_threads() -> None:
    pool = _WorkerPool(4)
    with pool._lock:
        pool._threads = 4  # the parent's, which the child does not have
    pool.after_fork()
    assert pool.threads == 0
    assert await pool.run(lambda: "served", withdraw=True) == "served"


# ------------------------------------------------- after close, after the end


@pytest.mark.parametrize("first_item", [False, True], ids=["unstarted", "started"])
async def test_a_sync_body_iterator_stops_after_aclose(first_item: bool) -> None:
    """It waited forever for a worker that had already been told to end."""
    with fresh_sync_pool(), anyio.fail_after(5):
        body = EventSourceResponse(numbers(), ping=0).body_iterator
        if first_item:
            assert await body.__anext__() == "0"
        await body.aclose()
        for _ in range(2):
            with pytest.raises(StopAsyncIteration):
                await body.__anext__()
        assert body.finished
        await body.aclose()  # idempotent


async def test_a_sync_body_iterator_keeps_stopping_after_its_end() -> None:
    with fresh_sync_pool() as pool, anyio.fail_after(5):
        body = EventSourceResponse(numbers(1), ping=0).body_iterator
        assert await body.__anext__() == "0"
        with pytest.raises(StopAsyncIteration):
            await body.__anext__()
        busy_before = pool.busy
        with pytest.raises(StopAsyncIteration):
            await body.__anext__()
        assert pool.busy == busy_before
        assert body.finished


async def test_an_async_generator_body_stops_after_aclose_and_after_its_end() -> None:
    async def two() -> AsyncIterator[str]:
        yield "a"
        yield "b"

    with anyio.fail_after(5):
        body = EventSourceResponse(two(), ping=0).body_iterator
        assert await body.__anext__() == "a"
        await body.aclose()
        assert body.finished
        with pytest.raises(StopAsyncIteration):
            await body.__anext__()
        ended = EventSourceResponse(two(), ping=0).body_iterator
        assert [await ended.__anext__(), await ended.__anext__()] == ["a", "b"]
        for _ in range(2):
            with pytest.raises(StopAsyncIteration):
                await ended.__anext__()
        assert ended.finished


class Counter:
    """An async iterator that never ends on its own, with an aclose that counts."""

    def __init__(self, closable: bool) -> None:
        self.count = 0
        self.closes = 0
        if closable:
            self.aclose = self._aclose

    def __aiter__(self) -> Counter:
        return self

    async def __anext__(self) -> int:
        self.count += 1
        return self.count

    async def _aclose(self) -> None:
        self.closes += 1


@pytest.mark.parametrize("closable", [False, True], ids=["no-aclose", "aclose"])
async def test_an_async_iterator_body_stops_after_aclose_once_closed(closable: bool) -> None:
    counter = Counter(closable)
    body = EventSourceResponse(counter, ping=0).body_iterator
    assert await body.__anext__() == 1
    await body.aclose()
    with anyio.fail_after(1), pytest.raises(StopAsyncIteration):
        await body.__anext__()
    assert counter.count == 1
    await body.aclose()
    assert counter.closes == (1 if closable else 0)
    assert body.finished


# ------------------------------------------------- what users' iterators do


@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit, GeneratorExit])
async def test_a_base_exception_from_next_fails_only_that_stream(
    raised: type[BaseException],
) -> None:
    def source() -> Iterator[str]:
        yield "1"
        raise raised("from next()")

    with fresh_sync_pool() as pool, anyio.fail_after(5):
        response = EventSourceResponse(source(), ping=0)
        async with stream(response, raise_app_exceptions=False) as sse:
            assert [event.data async for event in sse.events()] == ["1"]
        await wait_until(lambda: pool.busy == 0)
    assert response.close_reason is CloseReason.ERROR
    error = sse.app_exception
    assert type(error) is RuntimeError
    assert f"the sync source's next() raised {raised.__name__}" in str(error)
    assert isinstance(error.__cause__, raised)


async def test_a_close_that_hangs_is_cut_short_by_cleanup_timeout() -> None:
    gated = Gated("first", block_in_finally=True)
    try:
        with fresh_sync_pool() as pool, anyio.fail_after(5):
            response = EventSourceResponse(gated.run(), ping=0, cleanup_timeout=0.2)
            async with stream(response) as sse:
                assert (await sse.next_event()).data == "first"
            assert response.close_reason is CloseReason.CLIENT_DISCONNECTED
            assert not gated.finally_ran.is_set()
            # The finally still runs, abandoned, on one thread (a next() that
            # saw the close coming may take a moment to return its thread).
            await wait_until(lambda: pool.busy == 1)
            assert not gated.finally_ran.is_set()
            gated.release.set()
            await wait_until(lambda: pool.busy == 0)
            assert gated.finally_ran.is_set()
    finally:
        gated.release.set()


class Closing:
    """A sync iterator whose ``close`` raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.closed = threading.Event()

    def __iter__(self) -> Closing:
        return self

    def __next__(self) -> str:
        return "item"

    def close(self) -> None:
        self.closed.set()
        raise self.error


@pytest.mark.parametrize(
    "error", [ValueError("close failed"), KeyboardInterrupt(), SystemExit(3)], ids=repr
)
async def test_a_close_that_raises_is_logged_and_contained(
    error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    iterator = Closing(error)
    with fresh_sync_pool() as pool, anyio.fail_after(5):
        response = EventSourceResponse(iterator, ping=0)
        async with stream(response) as sse:
            await sse.next_event()
        await wait_until(lambda: pool.busy == 0)
        # The workers survived: an idle one serves the next call, none is started.
        threads = pool.threads
        assert await pool.run(lambda: "served", withdraw=True) == "served"
        assert pool.threads == threads
    assert response.close_reason is CloseReason.CLIENT_DISCONNECTED
    assert iterator.closed.is_set()
    assert "closing the sync source raised" in caplog.text


class Plain:
    """A sync iterator with no ``close``."""

    def __init__(self, count: int) -> None:
        self.left = count

    def __iter__(self) -> Plain:
        return self

    def __next__(self) -> str:
        if self.left == 0:
            raise StopIteration
        self.left -= 1
        return str(self.left)


async def test_an_iterator_without_close_streams_and_closes() -> None:
    with fresh_sync_pool() as pool, anyio.fail_after(5):
        response = EventSourceResponse(Plain(2), ping=0)
        async with stream(response) as sse:
            assert [event.data async for event in sse.events()] == ["1", "0"]
        assert response.close_reason is CloseReason.COMPLETED
        endless = EventSourceResponse(iter(Plain(10**6).__next__, None), ping=0)
        async with stream(endless) as sse:
            await sse.next_event()
        assert endless.close_reason is CloseReason.CLIENT_DISCONNECTED
        await wait_until(lambda: pool.busy == 0)


async def test_aclose_while_next_is_blocked_returns_at_once() -> None:
    """The worker closes the generator when next() returns, on its own thread."""
    gated = Gated("dropped")
    try:
        with fresh_sync_pool() as pool, anyio.fail_after(5):
            source = open_source(gated.run())
            with anyio.move_on_after(0.05):
                await source.__anext__()
            assert gated.entered.is_set()
            with anyio.fail_after(0.5):
                await source.aclose()
            assert not gated.finally_ran.is_set()
            with pytest.raises(StopAsyncIteration):
                await source.__anext__()
            gated.release.set()
            assert gated.finally_ran.wait(GATE_BOUND)
            await wait_until(lambda: pool.busy == 0)
        assert gated.finally_thread is not threading.current_thread()
        assert gated.finally_thread is not None
        assert gated.finally_thread.daemon
    finally:
        gated.release.set()


# -------------------------------------------- cancellation at every await


async def test_anext_cancelled_while_waiting_for_a_thread_never_advances() -> None:
    blocker, waiting = Gated(), Gated()
    try:
        with fresh_sync_pool(limit=1) as pool, anyio.fail_after(5):
            busy = open_source(blocker.run())
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(busy.__anext__)
                await wait_until(blocker.entered.is_set)
                source = open_source(waiting.run())
                with anyio.move_on_after(0.05) as scope:
                    await source.__anext__()
                assert scope.cancelled_caught
                blocker.release.set()
            await wait_until(lambda: pool.busy == 0)
            assert not waiting.entered.is_set(), "a withdrawn next() ran"
            waiting.release.set()
            assert await source.__anext__() == "hello"
    finally:
        blocker.release.set()


async def test_anext_after_an_abandoned_one_waits_its_turn() -> None:
    """No 'generator already executing': calls enter the iterator one at a time."""
    gated = Gated("first", "second")
    try:
        with fresh_sync_pool() as pool, anyio.fail_after(5):
            source = open_source(gated.run())
            with anyio.move_on_after(0.05):
                await source.__anext__()  # abandoned in next(): "first" is dropped
            async with anyio.create_task_group() as tasks:

                async def again() -> None:
                    assert await source.__anext__() == "second"

                tasks.start_soon(again)
                await anyio.sleep(0.05)
                gated.release.set()
            await source.aclose()
            await wait_until(lambda: pool.busy == 0)
        assert gated.finally_ran.is_set()
    finally:
        gated.release.set()


async def test_aclose_never_waits_for_a_thread_and_the_close_still_runs() -> None:
    """With every thread busy the close is left in line: no close waits for the pool
    (with ``cleanup_timeout=None`` such a wait had no bound)."""
    blocker, closing = Gated(), Gated("x")
    closing.release.set()
    try:
        with fresh_sync_pool(limit=1) as pool, anyio.fail_after(5):
            source = open_source(closing.run())
            assert await source.__anext__() == "x"  # started: close() runs its finally
            busy = open_source(blocker.run())
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(busy.__anext__)
                await wait_until(blocker.entered.is_set)
                with anyio.fail_after(0.5):
                    await source.aclose()
                assert source.finished
                assert not closing.finally_ran.is_set()
                blocker.release.set()
            assert closing.finally_ran.wait(GATE_BOUND), "the close left in line never ran"
            await wait_until(lambda: pool.busy == 0)
    finally:
        blocker.release.set()


async def test_aclose_cancelled_while_close_runs_returns_at_once() -> None:
    gated = Gated("x", block_in_finally=True)
    try:
        with fresh_sync_pool() as pool, anyio.fail_after(5):
            source = open_source(gated.run())
            assert await source.__anext__() == "x"
            with anyio.move_on_after(0.05) as scope:
                await source.aclose()
            assert scope.cancelled_caught
            await source.aclose()  # idempotent: returns at once
            gated.release.set()
            assert gated.finally_ran.wait(GATE_BOUND)
            await wait_until(lambda: pool.busy == 0)
    finally:
        gated.release.set()


async def test_closing_an_unstarted_generator_needs_no_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with fresh_sync_pool() as pool, anyio.fail_after(5):
        monkeypatch.setattr(threading.Thread, "start", refuse_to_start)
        source = open_source(numbers())
        await source.aclose()
        monkeypatch.undo()
        assert source.finished
        assert pool.threads == 0


async def test_a_full_pool_warns_and_names_the_setting(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "sse_sm.source")
    pool = _WorkerPool(1)
    with pool._lock:
        pool._threads = 1  # the one thread is busy
    pool._submit(_Call(lambda: None, anyio.lowlevel.current_token()))
    pool._submit(_Call(lambda: None, anyio.lowlevel.current_token()))
    warnings = [r for r in caplog.records if "sync-source threads are busy" in r.message]
    assert len(warnings) == 1, "at most one warning a minute"
    assert "sse_sm.set_sync_source_threads" in warnings[0].getMessage()
    assert _sources._pool is not pool


async def test_withdrawn_calls_do_not_pile_up_in_the_waiting_line() -> None:
    """Streams that come and go while every thread is blocked leave nothing behind."""
    blocker = Gated()
    try:
        with fresh_sync_pool(limit=1) as pool, anyio.fail_after(10):
            busy = open_source(blocker.run())
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(busy.__anext__)
                await wait_until(blocker.entered.is_set)
                for _ in range(500):
                    with anyio.move_on_after(0):
                        await open_source(numbers()).__anext__()
                assert pool.waiting <= 2 * _sources._COMPACT_AFTER + 2
                blocker.release.set()
            await wait_until(lambda: pool.busy == 0)
            assert pool.waiting == 0
    finally:
        blocker.release.set()


async def test_event_loops_in_two_threads_share_one_pool() -> None:
    expected = [str(n) for n in range(50)]
    results: dict[str, list[str]] = {}

    async def drain(name: str) -> None:
        source = open_source(numbers(50))
        items = []
        while True:
            try:
                items.append(await source.__anext__())
            except StopAsyncIteration:
                break
        results[name] = items

    with fresh_sync_pool(limit=1) as pool:
        other = threading.Thread(
            target=anyio.run, args=(drain, "other"), kwargs={"backend": "trio"}, daemon=True
        )
        other.start()
        with anyio.fail_after(10):
            await drain("here")
            await wait_until(lambda: not other.is_alive())
    assert results == {"here": expected, "other": expected}
    assert pool.threads == 1
