"""One contract for every Bus: in-process and Redis; then Redis between two buses (two nodes)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import pytest

from adapters.live import MemoryBus, RedisBus
from core.errors import Unavailable
from core.ids import NodeId, UserId, new_id
from core.live import Bus, node_channel, user_channel

WAIT = 5.0  # bound on waiting for a delivery that must happen


class Inbox:
    """A handler that records messages and lets a test wait for a number of them."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._changed = asyncio.Event()

    async def __call__(self, message: str) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait_for(self, count: int) -> list[str]:
        async with asyncio.timeout(WAIT):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages


def random_prefix() -> str:
    return f"napalmsky-test:{uuid.uuid4().hex}:"


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "memory":
        instance: Bus = MemoryBus()
    else:
        instance = RedisBus(request.getfixturevalue("redis_url"), prefix=random_prefix())
    try:
        yield instance
    finally:
        await instance.close()


async def test_delivery_in_order(bus: Bus) -> None:
    inbox = Inbox()
    subscription = await bus.subscribe("room:1", inbox)
    assert subscription.channel == "room:1"
    sent = [f"m{i}" for i in range(50)]
    for message in sent:
        await bus.publish("room:1", message)
    assert await inbox.wait_for(50) == sent


async def test_several_subscribers_on_one_channel(bus: Bus) -> None:
    inboxes = [Inbox() for _ in range(3)]
    for inbox in inboxes:
        await bus.subscribe("room:1", inbox)
    await bus.publish("room:1", "hello")
    await bus.publish("room:1", "again")
    for inbox in inboxes:
        assert await inbox.wait_for(2) == ["hello", "again"]


async def test_channels_are_isolated(bus: Bus) -> None:
    one, two = Inbox(), Inbox()
    await bus.subscribe("room:1", one)
    await bus.subscribe("room:2", two)
    await bus.publish("room:1", "for one")
    await bus.publish("room:2", "for two")
    await bus.publish("room:3", "for nobody")
    assert await one.wait_for(1) == ["for one"]
    assert await two.wait_for(1) == ["for two"]
    await asyncio.sleep(0.05)
    assert one.messages == ["for one"]
    assert two.messages == ["for two"]


async def test_no_delivery_after_subscription_close(bus: Bus) -> None:
    closed, witness = Inbox(), Inbox()
    subscription = await bus.subscribe("room:1", closed)
    await bus.subscribe("room:1", witness)
    await bus.publish("room:1", "before")
    await closed.wait_for(1)
    await subscription.close()
    await subscription.close()  # idempotent
    await bus.publish("room:1", "after")
    assert await witness.wait_for(2) == ["before", "after"]
    await asyncio.sleep(0.05)
    assert closed.messages == ["before"]


async def test_resubscribe_after_the_last_subscription_closed(bus: Bus) -> None:
    first = Inbox()
    subscription = await bus.subscribe("room:1", first)
    await subscription.close()
    second = Inbox()
    await bus.subscribe("room:1", second)
    await bus.publish("room:1", "hello")
    assert await second.wait_for(1) == ["hello"]
    assert first.messages == []


async def test_a_handler_may_close_its_own_subscription(bus: Bus) -> None:
    seen: list[str] = []
    done = asyncio.Event()

    async def once(message: str) -> None:
        seen.append(message)
        await subscription.close()
        done.set()

    witness = Inbox()
    subscription = await bus.subscribe("room:1", once)
    await bus.subscribe("room:1", witness)
    for message in ("a", "b", "c"):
        await bus.publish("room:1", message)
    await witness.wait_for(3)
    async with asyncio.timeout(WAIT):
        await done.wait()
    await asyncio.sleep(0.05)
    assert seen == ["a"]


async def test_a_raising_handler_is_logged_and_contained(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    async def broken(message: str) -> None:
        calls.append(message)
        raise RuntimeError(f"boom on {message}")

    other = Inbox()
    await bus.subscribe("room:1", broken)
    await bus.subscribe("room:1", other)
    with caplog.at_level(logging.ERROR):
        await bus.publish("room:1", "first")
        await bus.publish("room:1", "second")
        assert await other.wait_for(2) == ["first", "second"]
        async with asyncio.timeout(WAIT):
            while len(calls) < 2:
                await asyncio.sleep(0.01)
    assert calls == ["first", "second"]  # the next message still reached the broken handler
    failures = [r for r in caplog.records if r.exc_info and "room:1" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.name.startswith("adapters.live") for r in failures)
    assert str(failures[0].exc_info[1]) == "boom on first"  # type: ignore[index]


async def test_a_slow_handler_does_not_block_publish_or_others(bus: Bus) -> None:
    release = asyncio.Event()
    slow_seen: list[str] = []

    async def slow(message: str) -> None:
        slow_seen.append(message)
        await release.wait()

    fast = Inbox()
    await bus.subscribe("room:1", slow)
    await bus.subscribe("room:1", fast)
    async with asyncio.timeout(WAIT):
        for i in range(20):
            await bus.publish("room:1", f"m{i}")
    assert await fast.wait_for(20) == [f"m{i}" for i in range(20)]
    assert slow_seen == ["m0"]
    release.set()
    async with asyncio.timeout(WAIT):
        while len(slow_seen) < 20:
            await asyncio.sleep(0.01)
    assert slow_seen == [f"m{i}" for i in range(20)]


async def test_idle_subscriptions_hold_no_task(bus: Bus) -> None:
    """One subscription per signaling socket: an idle one must not park a task (or a queue)."""
    before = len(asyncio.all_tasks())
    inboxes = [Inbox() for _ in range(200)]
    for i, inbox in enumerate(inboxes):
        await bus.subscribe(f"user:{i}", inbox)
    assert len(asyncio.all_tasks()) <= before + 2  # a bus may run one reader of its own
    idle = len(asyncio.all_tasks())
    for i in range(0, 200, 20):
        for n in range(3):
            await bus.publish(f"user:{i}", f"m{n}")
    for i in range(0, 200, 20):
        assert await inboxes[i].wait_for(3) == ["m0", "m1", "m2"]
    async with asyncio.timeout(WAIT):  # delivery tasks end once their queue is empty
        while len(asyncio.all_tasks()) > idle:
            await asyncio.sleep(0.01)


async def test_flush_returns_once_received_messages_are_handled(bus: Bus) -> None:
    handled: list[str] = []
    inbox = Inbox()

    async def slow(message: str) -> None:
        await asyncio.sleep(0.01)
        handled.append(message)
        await inbox(message)

    subscription = await bus.subscribe("user:flush", slow)
    probe = Inbox()
    await bus.subscribe("user:flush", probe)
    for n in range(5):
        await bus.publish("user:flush", f"m{n}")
    await probe.wait_for(5)  # received on this node (for Redis, after the round trip)
    await subscription.flush()
    assert handled == [f"m{n}" for n in range(5)]


async def test_close_stops_everything(bus: Bus) -> None:
    inbox = Inbox()
    subscription = await bus.subscribe("room:1", inbox)
    await bus.ping()
    await bus.close()
    await bus.close()  # idempotent
    await subscription.close()
    with pytest.raises(Unavailable):
        await bus.publish("room:1", "late")
    with pytest.raises(Unavailable):
        await bus.subscribe("room:1", inbox)
    with pytest.raises(Unavailable):
        await bus.ping()


# -- in-process only ----------------------------------------------------------------------


async def test_memory_bus_drops_for_a_full_queue_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = MemoryBus(queue_size=2)
    started, release = asyncio.Event(), asyncio.Event()
    seen: list[str] = []

    async def slow(message: str) -> None:
        seen.append(message)
        started.set()
        await release.wait()

    try:
        await bus.subscribe("room:1", slow)
        await bus.publish("room:1", "m0")
        await started.wait()  # m0 is in the handler, the queue is empty
        with caplog.at_level(logging.WARNING):
            for i in range(1, 6):
                await bus.publish("room:1", f"m{i}")
        release.set()
        async with asyncio.timeout(WAIT):
            while len(seen) < 3:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert seen == ["m0", "m1", "m2"]
        drops = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(drops) == 1  # once per run of drops, not once per message
        assert "room:1" in drops[0].getMessage()
    finally:
        await bus.close()


# -- Redis between nodes ------------------------------------------------------------------


@pytest.fixture
async def two_nodes(redis_url: str) -> AsyncIterator[tuple[RedisBus, RedisBus]]:
    prefix = random_prefix()
    a, b = RedisBus(redis_url, prefix=prefix), RedisBus(redis_url, prefix=prefix)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_two_redis_buses_deliver_to_each_other(two_nodes: tuple[RedisBus, RedisBus]) -> None:
    a, b = two_nodes
    user = user_channel(UserId(new_id()))
    node = node_channel(NodeId(new_id()))
    on_b, on_a = Inbox(), Inbox()
    await b.subscribe(user, on_b)
    await a.subscribe(node, on_a)
    await a.publish(user, '{"type": "call:invite"}')
    await b.publish(node, '{"type": "room:close"}')
    assert await on_b.wait_for(1) == ['{"type": "call:invite"}']
    assert await on_a.wait_for(1) == ['{"type": "room:close"}']


async def test_a_user_channel_reaches_every_node_with_a_socket(
    two_nodes: tuple[RedisBus, RedisBus],
) -> None:
    a, b = two_nodes
    user = user_channel(UserId(new_id()))
    someone_else = user_channel(UserId(new_id()))
    on_a, on_b, other = Inbox(), Inbox(), Inbox()
    await a.subscribe(user, on_a)
    await b.subscribe(user, on_b)
    await b.subscribe(someone_else, other)
    await a.publish(user, "1")
    await b.publish(user, "2")
    assert await on_a.wait_for(2) == ["1", "2"]
    assert await on_b.wait_for(2) == ["1", "2"]
    await asyncio.sleep(0.05)
    assert other.messages == []


async def test_redis_prefixes_isolate_buses(redis_url: str) -> None:
    a, b = RedisBus(redis_url, prefix=random_prefix()), RedisBus(redis_url, prefix=random_prefix())
    try:
        on_a, on_b = Inbox(), Inbox()
        await a.subscribe("room:1", on_a)
        await b.subscribe("room:1", on_b)
        await a.publish("room:1", "only a")
        assert await on_a.wait_for(1) == ["only a"]
        await asyncio.sleep(0.05)
        assert on_b.messages == []
    finally:
        await a.close()
        await b.close()
