"""How subscriptions and hubs end: garbage, closing, loops, threads, and random sequences.

The hypothesis test at the end drives random subscribe, publish, disconnect
and shutdown sequences and checks that nothing is left behind: no
subscriber, no buffered event, no topic, no waiting publisher, no task, and
no subscription kept alive by the hub.
"""

from __future__ import annotations

import gc
import threading
import weakref
from dataclasses import dataclass, field
from typing import Literal

import anyio
import anyio.abc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_sm import (
    GAP_EVENT,
    Hub,
    MemoryBackend,
    SlowConsumerError,
    SlowConsumerPolicy,
    Subscription,
)
from tests.hub.test_hub import join, parse, read_available, wait_until

# ------------------------------------------------------------------ garbage


async def test_a_subscription_never_iterated_holds_nothing() -> None:
    hub = Hub()
    sub = hub.subscribe("t", last_event_id="whatever")
    ref = weakref.ref(sub)
    await hub.publish("t", "x")
    assert hub.statistics().subscribers == 0
    del sub
    assert ref() is None


async def test_a_dropped_subscription_is_released_by_the_loop_and_frees_a_waiting_publisher() -> (
    None
):
    """Iterated, then dropped without aclose(): its finalizer hands it back to the hub."""
    hub = Hub(buffer_size=1, policy=SlowConsumerPolicy.BLOCK, block_timeout=None)
    sub = hub.subscribe("t")
    published = anyio.Event()

    async def publisher() -> None:
        await hub.publish("t", "waits for room")
        published.set()

    with anyio.fail_after(10):
        await join(hub, sub)
        await hub.publish("t", "fills the buffer")
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publisher)
            await wait_until(lambda: hub.statistics().publishers_waiting == 1)
            ref = weakref.ref(sub)
            del sub
            gc.collect()
            assert ref() is None, "the hub keeps no reference to a subscription"
            await published.wait()  # released on the loop, without a statistics() call
    stats = hub.statistics()
    assert (stats.subscribers, stats.buffered, stats.topics) == (0, 0, {})


async def test_an_abandoned_subscription_on_a_finished_loop_is_reaped_later() -> None:
    hub = Hub()
    holder: list[Subscription] = [hub.subscribe("t")]

    async def first_loop() -> None:
        await join(hub, holder[0])

    # A loop of its own that ends while the subscription is still joined.
    await anyio.to_thread.run_sync(anyio.run, first_loop)
    assert hub.statistics().subscribers == 1
    holder.clear()
    gc.collect()
    assert hub.statistics().subscribers == 0


# ------------------------------------------------------------------ closing the hub


async def test_close_ends_subscriptions_after_what_they_hold() -> None:
    hub = Hub()
    sub = hub.subscribe("t")
    with anyio.fail_after(5):
        await join(hub, sub)
        await hub.publish("t", "a")
        await hub.publish("t", "b")
        hub.close()
        hub.close()  # idempotent
        assert [event.data for event in parse(await read_available(sub))] == ["a", "b"]
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()
    assert hub.statistics().subscribers == 0
    assert hub.statistics().closed


async def test_close_wakes_a_waiting_subscription() -> None:
    hub = Hub()
    sub = hub.subscribe("t")
    with anyio.fail_after(5):
        await join(hub, sub)
        async with anyio.create_task_group() as tasks:

            async def wait_for_the_end() -> None:
                assert [frame async for frame in sub] == []

            tasks.start_soon(wait_for_the_end)
            await anyio.sleep(0.01)
            hub.close()
    assert hub.statistics().subscribers == 0


async def test_close_refuses_publishers_including_those_waiting() -> None:
    hub = Hub(buffer_size=1, policy=SlowConsumerPolicy.BLOCK, block_timeout=None)
    sub = hub.subscribe("t")
    with anyio.fail_after(5):
        await join(hub, sub)
        await hub.publish("t", "fills")
        async with anyio.create_task_group() as tasks:

            async def waiting_publisher() -> None:
                with pytest.raises(anyio.ClosedResourceError):
                    await hub.publish("t", "never")

            tasks.start_soon(waiting_publisher)
            await wait_until(lambda: hub.statistics().publishers_waiting == 1)
            hub.close()
        with pytest.raises(anyio.ClosedResourceError):
            await hub.publish("t", "after")
        await sub.aclose()
    assert hub.statistics().publishers_waiting == 0


async def test_a_subscription_iterated_after_close_ends_at_once() -> None:
    async with Hub() as hub:
        pass
    sub = hub.subscribe("t")
    assert [frame async for frame in sub] == []
    assert not sub.statistics().joined


# ------------------------------------------------------------------ loops and threads


def test_a_hub_moves_to_a_new_loop_only_without_subscribers() -> None:
    hub = Hub()
    sub = hub.subscribe("t")

    async def leave_it_joined() -> None:
        await join(hub, sub)

    async def subscribe_again() -> None:
        with pytest.raises(RuntimeError, match="another event loop"):
            await hub.subscribe("t").__anext__()

    async def publish_and_read() -> list[str]:
        other = hub.subscribe("t")
        async with other:
            await join(hub, other)
            await hub.publish("t", "on the third loop")
            return [event.data for event in parse(await read_available(other))]

    anyio.run(leave_it_joined)
    anyio.run(subscribe_again, backend="trio")
    anyio.run(sub.aclose)
    assert anyio.run(publish_and_read, backend="trio") == ["on the third loop"]


async def test_publish_from_another_thread() -> None:
    hub = Hub()
    sub = hub.subscribe("t")
    results: list[str] = []

    def plain_thread() -> None:
        results.append(hub.publish_from_thread("t", "from a plain thread"))

    with anyio.fail_after(10):
        await join(hub, sub)
        from_worker = await anyio.to_thread.run_sync(
            hub.publish_from_thread, "t", "from a worker thread"
        )
        thread = threading.Thread(target=plain_thread)
        thread.start()
        await anyio.to_thread.run_sync(thread.join)
        events = parse(await read_available(sub))
        await sub.aclose()
    assert [(e.data, e.id) for e in events] == [
        ("from a worker thread", from_worker),
        ("from a plain thread", results[0]),
    ]
    with pytest.raises(RuntimeError, match="own loop thread"):
        hub.publish_from_thread("t", "here")


def test_publish_from_a_thread_needs_a_hub_that_has_run() -> None:
    with pytest.raises(RuntimeError, match="not been used on an event loop"):
        Hub().publish_from_thread("t", "x")


# ------------------------------------------------------------------ random sequences

TOPICS = ("a", "b")
Mode = Literal["reader", "staller", "idle"]
Ending = Literal["aclose", "cancel", "drop"]


@dataclass(frozen=True)
class Subscribe:
    topic: str
    policy: SlowConsumerPolicy
    buffer_size: int
    #: reader: reads all; staller: reads one, then never again; idle: never iterated.
    mode: Mode
    #: Resume after the event published halfway through the topic so far.
    resume: bool


@dataclass(frozen=True)
class Publish:
    topic: str
    count: int
    #: Yield to the loop after each event, as a publisher waiting for data would.
    paced: bool


@dataclass(frozen=True)
class Disconnect:
    index: int
    #: aclose: as the response does; cancel: stop reading, then aclose; drop: stop
    #: reading and forget it, so only the garbage collector can end it.
    ending: Ending


@dataclass(frozen=True)
class Shutdown:
    pass


Operation = Subscribe | Publish | Disconnect | Shutdown


@st.composite
def operation(draw: st.DrawFn) -> Operation:
    """One step; weighted so that most examples subscribe and publish before they end."""
    kind = draw(st.integers(0, 99))
    if kind < 30:
        return Subscribe(
            draw(st.sampled_from(TOPICS)),
            draw(st.sampled_from(list(SlowConsumerPolicy))),
            draw(st.integers(1, 4)),
            draw(st.sampled_from(["reader", "reader", "staller", "idle"])),
            draw(st.booleans()),
        )
    if kind < 80:
        return Publish(draw(st.sampled_from(TOPICS)), draw(st.integers(1, 10)), draw(st.booleans()))
    if kind < 97:
        return Disconnect(
            draw(st.integers(0, 30)), draw(st.sampled_from(["aclose", "cancel", "drop"]))
        )
    return Shutdown()


@dataclass
class Client:
    """One subscription and the task (if any) that reads it."""

    sub: Subscription | None
    topic: str
    resumed_after: int | None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    data: list[int] = field(default_factory=list)
    gaps: int = 0
    let_go: bool = False
    finished: anyio.Event = field(default_factory=anyio.Event)


async def run_client(client: Client, mode: Mode) -> None:
    sub = client.sub
    assert sub is not None
    try:
        with client.scope:
            async for frame in sub:
                for event in parse([frame]):
                    if event.event == GAP_EVENT:
                        client.gaps += 1
                    else:
                        client.data.append(int(event.data))
                if mode == "staller":
                    await anyio.sleep_forever()
    except SlowConsumerError:
        client.let_go = True
    finally:
        client.finished.set()


def check_order(client: Client) -> None:
    """Strictly increasing, never twice; contiguous when nothing could be lost."""
    data = client.data
    assert data == sorted(set(data)), f"out of order or repeated: {data}"
    if client.gaps == 0 and not client.let_go and data:
        assert data == list(range(data[0], data[0] + len(data))), f"a silent hole: {data}"
        if client.resumed_after is not None:
            assert data[0] == client.resumed_after + 1, "a resume must start right after"


class Run:
    """One example's hub, clients and what was published."""

    def __init__(self, tasks: anyio.abc.TaskGroup) -> None:
        self.hub = Hub(MemoryBackend(max_events=6), block_timeout=0.01)
        self.tasks = tasks
        self.clients: list[Client] = []
        self.refs: list[weakref.ref[Subscription]] = []
        self.published = dict.fromkeys(TOPICS, 0)
        self.ids: dict[str, list[str]] = {topic: [] for topic in TOPICS}

    async def apply(self, op: Operation) -> None:
        if isinstance(op, Subscribe):
            ids = self.ids[op.topic]
            after = len(ids) // 2 if op.resume and ids else None
            sub = self.hub.subscribe(
                op.topic,
                last_event_id=None if after is None else ids[after],
                buffer_size=op.buffer_size,
                policy=op.policy,
            )
            client = Client(sub, op.topic, after)
            self.clients.append(client)
            self.refs.append(weakref.ref(sub))
            if op.mode == "idle":
                client.finished.set()
            else:
                self.tasks.start_soon(run_client, client, op.mode)
        elif isinstance(op, Publish):
            for _ in range(op.count):
                try:
                    event_id = await self.hub.publish(op.topic, str(self.published[op.topic]))
                except anyio.ClosedResourceError:
                    return
                self.ids[op.topic].append(event_id)
                self.published[op.topic] += 1
                if op.paced:
                    await anyio.lowlevel.checkpoint()
        elif isinstance(op, Disconnect):
            if self.clients:
                await self.end(self.clients[op.index % len(self.clients)], op.ending)
        else:
            self.hub.close()

    async def end(self, client: Client, ending: Ending) -> None:
        client.scope.cancel()
        await client.finished.wait()
        if client.sub is not None and ending != "drop":
            await client.sub.aclose()
        if ending != "aclose":
            client.sub = None


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(operation(), min_size=3, max_size=30))
async def test_random_sequences_leave_nothing_behind(ops: list[Operation]) -> None:
    tasks_before = len(anyio.get_running_tasks())
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            run = Run(tasks)
            for op in ops:
                await run.apply(op)
                await anyio.lowlevel.checkpoint()
            # What is still open ends the way a response ends it.
            for client in run.clients:
                await run.end(client, "aclose")
    assert len(anyio.get_running_tasks()) == tasks_before, "a task outlived the example"
    for client in run.clients:
        check_order(client)
        client.sub = None
    gc.collect()  # finalizers of dropped subscriptions run here; statistics() reaps them
    stats = run.hub.statistics()
    assert (stats.subscribers, stats.buffered, stats.publishers_waiting) == (0, 0, 0)
    assert stats.topics == {}
    assert [ref for ref in run.refs if ref() is not None] == [], "the hub kept a subscription"
    assert stats.published == sum(run.published.values())
