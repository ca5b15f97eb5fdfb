"""Redis going away and coming back, on a private redis-server the tests stop and start."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import pytest

from adapters.live import RedisBus, RedisLiveState
from core.errors import ErrorCode, Unavailable
from tests.services import PrivateRedis

PROMPT = 15.0  # bound for a call that must fail (or finish) instead of hanging
RECOVERY = 20.0  # bound for waiting until Redis answers again


def random_prefix() -> str:
    return f"napalmsky-test:{uuid.uuid4().hex}:"


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    return f"redis://:{password}@{parts.hostname}:{parts.port}/0"


async def stop(server: PrivateRedis) -> None:
    await asyncio.to_thread(server.stop)


async def start(server: PrivateRedis) -> None:
    await asyncio.to_thread(server.start)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `check` until it is true; fail after RECOVERY seconds."""
    deadline = asyncio.get_running_loop().time() + RECOVERY
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{what} did not happen within {RECOVERY} s")
        await asyncio.sleep(0.1)


async def unavailable(call: Awaitable[object]) -> Unavailable:
    with pytest.raises(Unavailable) as caught:
        async with asyncio.timeout(PROMPT):
            await call
    assert caught.value.code is ErrorCode.UNAVAILABLE
    assert caught.value.message.startswith("redis unavailable: ")
    return caught.value


async def test_live_state_fails_promptly_while_down_and_recovers(own_redis: PrivateRedis) -> None:
    state = RedisLiveState(own_redis.url, prefix=random_prefix())
    try:
        await state.set("k", "before", ttl=60)
        assert await state.get("k") == "before"
        await stop(own_redis)

        await unavailable(state.ping())
        await unavailable(state.get("k"))
        await unavailable(state.set("k", "v", ttl=10))
        await unavailable(state.delete("k"))
        await unavailable(state.expire("k", 10))
        await unavailable(state.ttl("k"))
        await unavailable(state.claim("lock", "me", 10))
        await unavailable(state.release("lock", "me"))
        await unavailable(state.pop("k"))
        await unavailable(state.incr("count", 10))
        await unavailable(state.set_add("online", "u1", 10))
        await unavailable(state.set_remove("online", "u1"))
        await unavailable(state.set_members("online"))

        await start(own_redis)

        async def answers() -> bool:
            try:
                await state.ping()
            except Unavailable:
                return False
            return True

        await eventually(answers, "ping after restart")
        assert await state.get("k") is None  # the private server keeps nothing across restarts
        await state.set("k", "after", ttl=60)
        assert await state.get("k") == "after"
        assert await state.claim("lock", "me", 10) is True
        assert await state.incr("count", 10) == (1, 10.0)
        await state.set_add("online", "u1", 10)
        assert await state.set_members("online") == {"u1"}
    finally:
        await state.close()


async def test_a_restart_between_calls_costs_no_error(own_redis: PrivateRedis) -> None:
    """Pooled connections to the old server are found dead and replaced, not reported."""
    state = RedisLiveState(own_redis.url, prefix=random_prefix())
    try:
        await state.set("k", "v", ttl=60)
        await stop(own_redis)
        await start(own_redis)
        assert await state.get("k") is None
    finally:
        await state.close()


async def test_construction_does_not_connect(own_redis: PrivateRedis) -> None:
    await stop(own_redis)
    prefix = random_prefix()
    state = RedisLiveState(own_redis.url, prefix=prefix)
    bus = RedisBus(own_redis.url, prefix=prefix)
    try:
        await unavailable(state.ping())
        await unavailable(bus.ping())
        await start(own_redis)
        await state.set("k", "v", ttl=10)
        assert await state.get("k") == "v"
        await bus.ping()
    finally:
        await state.close()
        await bus.close()


@pytest.mark.parametrize("password", ["s3cret-pa55word", "127.0.0.1"])
async def test_errors_never_show_the_password(own_redis: PrivateRedis, password: str) -> None:
    # A password equal to the host also occurs in the socket error itself ("connecting to
    # 127.0.0.1:..."), so that case passes only when the password is scrubbed from the message.
    await stop(own_redis)
    url = with_password(own_redis.url, password)
    state = RedisLiveState(url, prefix=random_prefix())
    bus = RedisBus(url, prefix=random_prefix())
    try:
        errors = [
            await unavailable(state.ping()),
            await unavailable(state.get("k")),
            await unavailable(state.incr("count", 10)),
            await unavailable(bus.publish("room:1", "m")),
            await unavailable(bus.ping()),
        ]
        for error in errors:
            assert password not in str(error)
            assert password not in repr(error)
    finally:
        await state.close()
        await bus.close()


async def test_bus_resubscribes_after_an_outage(own_redis: PrivateRedis) -> None:
    prefix = random_prefix()
    bus = RedisBus(own_redis.url, prefix=prefix, max_reconnect_delay=0.5)
    publisher = RedisBus(own_redis.url, prefix=prefix)
    received: list[str] = []

    async def handler(message: str) -> None:
        received.append(message)

    try:
        await bus.subscribe("room:1", handler)
        await publisher.publish("room:1", "before")
        await eventually(lambda: _has(received, "before"), "delivery before the outage")

        await stop(own_redis)
        await unavailable(publisher.publish("room:1", "during"))
        await asyncio.sleep(0.3)  # the reader notices and starts retrying
        await start(own_redis)

        # Messages published before the reader has resubscribed are lost (at most once), so
        # publish until one arrives; the test never subscribes again itself.
        attempt = 0

        async def delivered_after_restart() -> bool:
            nonlocal attempt
            attempt += 1
            try:
                await publisher.publish("room:1", f"after-{attempt}")
            except Unavailable:
                return False
            await asyncio.sleep(0.05)
            return any(m.startswith("after-") for m in received)

        await eventually(delivered_after_restart, "delivery after the restart")
        assert received[0] == "before"
        assert "during" not in received
    finally:
        await bus.close()
        await publisher.close()


async def test_subscribe_while_down_starts_when_redis_returns(own_redis: PrivateRedis) -> None:
    prefix = random_prefix()
    bus = RedisBus(own_redis.url, prefix=prefix, max_reconnect_delay=0.5)
    publisher = RedisBus(own_redis.url, prefix=prefix)
    received: list[str] = []

    async def handler(message: str) -> None:
        received.append(message)

    try:
        await stop(own_redis)
        async with asyncio.timeout(PROMPT):
            await bus.subscribe("node:1", handler)  # does not wait for Redis
        await start(own_redis)

        async def delivered() -> bool:
            try:
                await publisher.publish("node:1", "hello")
            except Unavailable:
                return False
            await asyncio.sleep(0.05)
            return "hello" in received

        await eventually(delivered, "delivery to a subscription made during the outage")
    finally:
        await bus.close()
        await publisher.close()


async def test_close_after_an_outage_is_prompt(own_redis: PrivateRedis) -> None:
    prefix = random_prefix()
    state = RedisLiveState(own_redis.url, prefix=prefix)
    bus = RedisBus(own_redis.url, prefix=prefix)
    received: list[str] = []

    async def handler(message: str) -> None:
        received.append(message)

    subscription = await bus.subscribe("room:1", handler)
    await state.set("k", "v", ttl=10)
    await bus.publish("room:1", "m")
    await stop(own_redis)
    await asyncio.sleep(0.3)  # let the reader fail over to retrying
    async with asyncio.timeout(PROMPT):
        await subscription.close()
        await bus.close()
        await state.close()
        await bus.close()
        await state.close()
    await unavailable_after_close(state, bus)


async def unavailable_after_close(state: RedisLiveState, bus: RedisBus) -> None:
    with pytest.raises(Unavailable, match="closed"):
        await state.get("k")
    with pytest.raises(Unavailable, match="closed"):
        await bus.publish("room:1", "m")


async def _has(messages: list[str], message: str) -> bool:
    return message in messages
