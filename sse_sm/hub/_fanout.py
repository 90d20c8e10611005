"""The fan-out: which subscribers a topic has, and the mechanics of their buffers.

Both sides of a subscription go through one :class:`FanOut`: the :class:`Hub`
(publishing, closing, statistics) and each :class:`Subscription` (joining,
leaving, taking from its buffer).  Neither reaches into the other; this is
the one place that adds a subscriber, removes one, delivers an entry or a
backend's hole, applies a slow-consumer policy, wakes a blocked publisher,
and frees a buffer.

Invariants:

* **One event loop.**  Every method but :meth:`FanOut.abandon` runs on the
  loop the fan-out is bound to, and none suspends: a buffer is only touched
  between awaits, so no lock guards it.
* **Never raises into a publisher.**  :meth:`FanOut.deliver` is the backend's
  listener: the entry is already stored when it runs, so a subscriber that
  cannot take it is let go (it resumes from the store), the others get it.
* **Nothing leaks.**  A subscriber leaves through :meth:`FanOut.leave` or
  :meth:`FanOut.let_go`, or, when its subscription was collected without
  being closed, through :meth:`FanOut.abandon` (any thread), which hands the
  work to the loop.  Each frees the buffer the same way
  (:meth:`~sse_sm.hub._buffers.SubscriberState.free`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import final

import anyio.lowlevel
from anyio.lowlevel import EventLoopToken

from .._clock import loop_clock
from .._shutdown import call_soon_on_loop
from ._buffers import DropMarker, SubscriberState, Tally, TopicState
from ._replay import Entry, Gap
from ._types import SlowConsumerPolicy

__all__ = ("FanOut",)


@final
class FanOut:
    """The topics of one hub, their subscribers and their buffers."""

    __slots__ = (
        "abandoned",
        "clock",
        "closed",
        "loop_thread",
        "retired",
        "subscribers",
        "token",
        "topics",
    )

    def __init__(self) -> None:
        self.topics: dict[str, TopicState] = {}
        #: Subscribers joined right now, over every topic.
        self.subscribers = 0
        #: Counters of the subscribers that left, kept for statistics.
        self.retired = Tally()
        self.closed = False
        #: States of subscriptions collected without being closed; appended to
        #: by finalizers on any thread, emptied on the loop by :meth:`reap`.
        self.abandoned: deque[SubscriberState] = deque()
        self.token: EventLoopToken | None = None
        self.loop_thread: int | None = None
        #: The bound loop's clock (the fairness slice is measured in it).
        self.clock: Callable[[], float] = time.monotonic

    # ---------------------------------------------------------------- loop

    def bind(self) -> None:
        """Tie to the running loop; refuse another loop while this one has subscribers."""
        self.reap()
        token = anyio.lowlevel.current_token()
        bound = self.token
        if bound is not None and bound.native_token is token.native_token:
            return
        if self.subscribers:
            raise RuntimeError(
                "this hub has subscribers on another event loop; a hub belongs to one loop"
            )
        self.token = token
        self.loop_thread = threading.get_ident()
        # The fairness slice in the loop's time, as the driver measures it
        # (under trio's MockClock, time.monotonic would never end a slice).
        self.clock = loop_clock()

    # ------------------------------------------------------- joining, leaving

    def join(self, topic_name: str, policy: SlowConsumerPolicy, size: int) -> SubscriberState:
        """A new subscriber of ``topic_name``, on the running loop."""
        self.bind()
        topic = self.topics.get(topic_name)
        if topic is None:
            topic = self.topics[topic_name] = TopicState(topic_name)
        state = SubscriberState(topic, policy, size)
        topic.subscribers[state] = None
        self.subscribers += 1
        return state

    def leave(self, state: SubscriberState) -> None:
        """Take ``state`` out of its topic and keep its counters (idempotent, never suspends)."""
        if state.removed:
            return
        state.removed = True
        state.live = False
        topic = state.topic
        del topic.subscribers[state]
        if state.blocks and state.count >= state.size:
            self.made_room(state)
        topic.retired.retire(state)
        self.retired.retire(state)
        self.subscribers -= 1
        self.discard_if_idle(topic)

    def discard_if_idle(self, topic: TopicState) -> None:
        """Forget a topic with no subscriber and no waiting publisher."""
        if not topic.subscribers and not topic.waiting and self.topics.get(topic.name) is topic:
            del self.topics[topic.name]

    def made_room(self, state: SubscriberState) -> None:
        """A BLOCK subscriber is no longer full; wake the publisher when none is."""
        topic = state.topic
        topic.full_blockers -= 1
        if not topic.full_blockers and topic.room is not None:
            room, topic.room = topic.room, None
            room.set()

    def let_go(self, state: SubscriberState, reason: str, *, refused: int) -> None:
        """End a slow subscriber: free its buffer; its iterator raises SlowConsumerError."""
        if state.removed:
            return
        state.failure = reason
        state.dropped += state.count + refused
        self.leave(state)
        state.free()
        state.wake()

    def abandon(self, state: SubscriberState) -> None:
        """A finalizer's call, on any thread, at any point: the work goes to the loop."""
        self.abandoned.append(state)
        token = self.token
        if token is not None:
            # A loop that is gone is skipped: reaped at the next bind or statistics.
            call_soon_on_loop(token, self.reap)

    def reap(self) -> None:
        """Let go of every abandoned subscriber (on the loop)."""
        abandoned = self.abandoned
        while abandoned:
            state = abandoned.popleft()
            self.leave(state)
            state.free()

    # ------------------------------------------------------------- delivery

    def deliver(self, entry: Entry) -> None:
        """The backend's listener: one entry into every subscriber's buffer.  Never suspends.

        Never raises either: the entry is already stored, so a subscriber
        that cannot take it (its buffer or its wake-up failed, which only a
        bug or exhausted memory can do) is let go with the error as its
        reason, like a slow consumer, and resumes from the store; the others
        get the entry.  Raising instead would skip the subscribers after it
        (a silent hole) and tell the publisher that a stored event failed.
        """
        topic = self.topics.get(entry.topic)
        if topic is None:
            return
        position = entry.position
        overflowed: list[SubscriberState] | None = None
        failed: list[tuple[SubscriberState, Exception]] | None = None
        for state in topic.subscribers:
            if position <= state.after:
                continue  # the replay already has it
            try:
                count = state.count
                if count < state.size:
                    state.buffer.append(entry)
                    state.count = count = count + 1
                    if count == state.size and state.blocks:
                        topic.full_blockers += 1
                    waiter = state.waiter
                    if waiter is not None:
                        state.waiter = None
                        waiter.set()
                    continue
                policy = state.policy
                if policy is SlowConsumerPolicy.DROP_OLDEST:
                    state.drop_oldest(entry)
                elif policy is SlowConsumerPolicy.DROP_NEWEST:
                    state.drop_newest()
                else:  # DISCONNECT, or BLOCK reached by an entry that did not wait for room
                    if overflowed is None:
                        overflowed = []
                    overflowed.append(state)
            except Exception as exc:  # let go after the loop: it changes topic.subscribers
                if failed is None:
                    failed = []
                failed.append((state, exc))
        if overflowed is not None:
            for state in overflowed:
                reason = f"the subscriber to {topic.name!r} fell {state.size} events behind"
                self.let_go(state, reason, refused=1)
        if failed is not None:
            for state, error in failed:
                reason = (
                    f"the subscriber to {topic.name!r} could not take event {entry.id!r} "
                    f"(it resumes from the store): {error!r}"
                )
                self.let_go(state, reason, refused=1)

    def deliver_gap(self, topic_name: str, gap: Gap, position: int | None) -> None:
        """The backend's hole signal: a gap marker at the end of every live buffer.

        Never suspends.  A subscriber whose replay already reaches the entry
        after the hole (``position``) is skipped: its replay said what it had.
        The marker joins a hole already at the end of the buffer, so markers
        never sit side by side (the drop policies rely on that).
        """
        topic = self.topics.get(topic_name)
        if topic is None:
            return
        for state in topic.subscribers:
            if position is not None and position <= state.after:
                continue
            buffer = state.buffer
            last = buffer[-1] if buffer else None
            if type(last) is DropMarker:
                last.add_lost(gap)
            else:
                marker = DropMarker(0)
                marker.add_lost(gap)
                buffer.append(marker)
            state.wake()

    # ------------------------------------------------------------ the end

    def close(self) -> None:
        """End every subscription (each yields what it holds first) and wake waiting publishers."""
        self.closed = True
        for topic in self.topics.values():
            if topic.room is not None:
                room, topic.room = topic.room, None
                room.set()
            for state in topic.subscribers:
                state.ended = True
                state.wake()
