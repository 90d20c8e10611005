"""A subscription: the async iterator that one response (or one task) reads from a hub.

It joins its topic when first iterated, yields the gap signal and the replay
(if it resumes), then live events, and leaves the topic on every way out:
:meth:`Subscription.aclose`, its end, its slow-consumer failure, or garbage
collection.  It calls a few of the hub's private methods; the two classes
are one unit split for size.
"""

from __future__ import annotations

import weakref
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel

from .._events import FRAMES_MAX_BYTES, Frames
from .._exceptions import SlowConsumerError
from ._buffers import DropMarker, SubscriberState
from ._replay import Entry, Gap
from ._types import SlowConsumerPolicy, SubscriptionStatistics

if TYPE_CHECKING:
    from ._backend import HubBackend
    from ._fanout import FanOut

__all__ = ("Subscription",)


@final
class Subscription:
    """One subscriber of a topic: an async iterator of encoded events (``bytes``).

    Made by :meth:`Hub.subscribe`.  Give it to an
    :class:`~sse_sm.EventSourceResponse`, which closes it on every path; or
    iterate it yourself, preferably as ``async with hub.subscribe(...) as
    sub:``.  One task at a time may iterate it.

    ``__anext__`` returns without suspending while events are buffered and
    waits otherwise; cancelling the wait loses nothing.  It raises
    :class:`~sse_sm.SlowConsumerError` once when the hub lets the subscriber
    go, and ends (``StopAsyncIteration``) after :meth:`aclose`, or once the
    hub is closed and what was buffered has been yielded.
    """

    __slots__ = (
        "__weakref__",
        "_backend",
        "_closed",
        "_fanout",
        "_finalizer",
        "_last_event_id",
        "_policy",
        "_sep",
        "_size",
        "_state",
        "topic",
    )

    def __init__(
        self,
        fanout: FanOut,
        backend: HubBackend,
        sep: str,
        topic: str,
        last_event_id: str | None,
        buffer_size: int,
        policy: SlowConsumerPolicy,
    ) -> None:
        self._fanout = fanout
        self._backend = backend
        self._sep = sep
        self.topic = topic
        self._last_event_id = last_event_id
        self._size = buffer_size
        self._policy = policy
        self._state: SubscriberState | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._closed = False

    @property
    def last_event_id(self) -> str | None:
        """The id this subscription resumes after, if any."""
        return self._last_event_id

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> bytes:
        state = self._state
        # The per-event fast path: the steps of _live_item written inline (a
        # call per event costs more than the rest of it); keep the two alike.
        if state is not None and state.live:
            buffer = state.buffer
            if buffer:
                item = buffer.popleft()
                if type(item) is Entry:
                    count = state.count
                    state.count = count - 1
                    if count == state.size and state.blocks:
                        self._fanout.made_room(state)
                    state.delivered += 1
                    state.last_id = item.id
                    return item.frame
                return self._dropped_frame(state, item)
        return await self._next()

    async def _sse_sm_next_frames(self) -> bytes | Frames:
        """What the driver sends next: one event's ``bytes``, or a backlog as :class:`Frames`.

        The driver's ``__anext__`` (see ``sse_sm._sources``); it yields the
        same events, gap signals and ends as :meth:`__anext__`, in the same
        order, but joins a backlog.  When events are already waiting as the
        driver asks (they queued up while its previous send was in flight,
        or the replay is under way), it takes every one of them without
        suspending, the replay's and then the buffer's, gap signals in their
        place, while the joined body stays within
        :data:`~sse_sm._events.FRAMES_MAX_BYTES`.  When it has to wait (to
        join, for the replay, for an event), it returns the first event
        alone, as ``__anext__`` would: a subscriber that keeps up sends each
        event as it comes, one message each, and what piles up behind that
        send goes out together on the next call.

        Every event taken is counted, made room for (``BLOCK``) and becomes
        the last id, as if yielded alone; a ``SlowConsumerError`` or the end
        comes on a later call, after what was taken.  A single event is its
        shared ``bytes``: nothing is allocated for it.
        """
        state = self._state
        if state is not None:
            if state.live:
                buffer = state.buffer
                if len(buffer) == 1:  # keeping up: the common case, as in __anext__
                    return self._live_item(state)
                if buffer:
                    return self._more(state, self._live_item(state))
            elif state.pending and state.failure is None and not self._closed:
                return self._more(state, self._pending_item(state))
        return await self._next()

    def _more(self, state: SubscriberState, first: bytes) -> bytes | Frames:
        """``first`` and the events ready after it, joined (see :meth:`_sse_sm_next_frames`).

        Never suspends, so nothing else touches the buffer meanwhile: no
        failure, end or close can arrive between the events taken.
        """
        parts = [first]
        size = len(first)
        pending = state.pending
        buffer = state.buffer
        while size < FRAMES_MAX_BYTES:
            if pending:
                replayed = pending[0]
                if type(replayed) is Entry and size + len(replayed.frame) > FRAMES_MAX_BYTES:
                    break
                frame = self._pending_item(state)
            elif buffer:
                buffered = buffer[0]
                if type(buffered) is Entry and size + len(buffered.frame) > FRAMES_MAX_BYTES:
                    break
                frame = self._live_item(state)
            else:
                break
            parts.append(frame)
            size += len(frame)
        if len(parts) == 1:
            return first
        return Frames(b"".join(parts), len(parts))

    async def _next(self) -> bytes:
        """Everything but a buffered live event: joining, replay, ends, waiting."""
        yielded = False
        while True:
            if self._closed:
                raise StopAsyncIteration
            state = self._state
            if state is None:
                await self._join()
                continue
            if state.failure is not None:
                self._release()
                raise SlowConsumerError(state.failure)
            if state.pending:
                return self._pending_item(state)
            if state.buffer:
                return self._live_item(state)
            if state.ended or state.removed:
                self._release()
                raise StopAsyncIteration
            if not yielded:
                # Yield once before parking.  A publisher in the middle of a
                # burst refills the buffer meanwhile, and this subscriber takes
                # a batch without a wake-up; parking and waking every
                # subscriber for each event was 5x slower at 1,000 subscribers
                # on asyncio.  An idle subscription pays one task switch.
                yielded = True
                await anyio.lowlevel.checkpoint()
                continue
            if state.waiter is not None:
                raise anyio.BusyResourceError("receiving from")
            waiter = state.waiter = anyio.Event()
            try:
                await waiter.wait()
            finally:
                if state.waiter is waiter:
                    state.waiter = None

    def _pending_item(self, state: SubscriberState) -> bytes:
        """The next of the replay (the gap signal first, if any); ``pending`` is not empty."""
        item = state.pending.popleft()
        if not state.pending:
            state.live = not state.removed
        if isinstance(item, Gap):
            state.gaps += 1
            return item.to_event(self._sep).encode()
        state.delivered += 1
        state.replayed += 1
        state.last_id = item.id
        return item.frame

    def _live_item(self, state: SubscriberState) -> bytes:
        item = state.buffer.popleft()
        if type(item) is not Entry:
            return self._dropped_frame(state, item)
        count = state.count
        state.count = count - 1
        if count == state.size and state.blocks:
            self._fanout.made_room(state)
        state.delivered += 1
        state.last_id = item.id
        return item.frame

    def _dropped_frame(self, state: SubscriberState, item: Entry | DropMarker) -> bytes:
        assert type(item) is DropMarker
        state.gaps += 1
        following = state.buffer[0] if state.buffer else None
        if type(following) is Entry:
            state.promised = following  # due next: DROP_OLDEST must not drop it now
            next_id: str | None = following.id
        else:
            next_id = None
        return item.gap(state.last_id, next_id).to_event(self._sep).encode()

    async def _join(self) -> None:
        """Join the topic first, then ask for the replay: no hole between the two."""
        fanout = self._fanout
        if fanout.closed:
            self._closed = True
            return
        # A backend that reads only the topics it watches (Redis) starts on the
        # first subscriber.  Watched before joining, with no checkpoint between
        # the two, so whatever is stored after this join reaches it; cancelled
        # here, the subscription has not joined and the next read starts again.
        watch = getattr(self._backend, "watch", None)
        if watch is not None:
            await watch(self.topic)
            if fanout.closed:
                self._closed = True
                return
        state = fanout.join(self.topic, self._policy, self._size)
        self._state = state
        # Collected while joined: the fan-out lets go of it on its loop.
        finalizer = weakref.finalize(self, fanout.abandon, state)
        finalizer.atexit = False
        self._finalizer = finalizer
        resume = self._last_event_id
        if resume is None:
            state.live = True
            return
        state.last_id = resume
        try:
            replay = await self._backend.replay(self.topic, resume)
        except BaseException:
            self._release()
            raise
        if state.removed:
            return
        state.after = replay.head
        if state.buffer:
            self._forget_replayed(state, replay.head)
        if replay.gap is not None:
            state.pending.append(replay.gap)
        state.pending.extend(replay.entries)
        state.live = not state.pending

    def _forget_replayed(self, state: SubscriberState, head: int) -> None:
        """Drop live entries that arrived while the backend read the replay (never in memory)."""
        was_full = state.count >= state.size
        kept: deque[Entry | DropMarker] = deque(
            item for item in state.buffer if type(item) is not Entry or item.position > head
        )
        state.buffer = kept
        state.count = sum(1 for item in kept if type(item) is Entry)
        if was_full and state.blocks and state.count < state.size:
            self._fanout.made_room(state)

    def _release(self) -> None:
        """Leave the topic and free the buffer; idempotent, never suspends."""
        self._closed = True
        state = self._state
        if state is not None:
            self._fanout.leave(state)
            state.free()
            state.wake()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    async def aclose(self) -> None:
        """Leave the topic and free what is buffered.  Idempotent; never suspends.

        A task waiting in ``__anext__`` wakes and the iteration ends.
        """
        self._release()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def statistics(self) -> SubscriptionStatistics:
        state = self._state
        return SubscriptionStatistics(
            topic=self.topic,
            last_event_id=self._last_event_id,
            policy=self._policy,
            buffer_size=self._size,
            joined=state is not None,
            closed=self._closed,
            buffered=0 if state is None else state.count,
            pending=0 if state is None else len(state.pending),
            delivered=0 if state is None else state.delivered,
            replayed=0 if state is None else state.replayed,
            dropped=0 if state is None else state.dropped,
            gaps=0 if state is None else state.gaps,
            failure=None if state is None else state.failure,
        )

    def __repr__(self) -> str:
        if self._closed:
            where = "closed"
        elif self._state is None:
            where = "not joined"
        else:
            where = f"{self._state.count} buffered"
        return f"<Subscription to {self.topic!r}: {where}>"
