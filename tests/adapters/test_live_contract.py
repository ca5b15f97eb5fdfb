"""One contract for every LiveState: the in-process one (fake clock) and Redis (real time).

Each backend comes with an `advance(seconds)` hook: the fake clock is moved, Redis is waited
for. TTLs are short (tenths of a second) so the Redis run stays quick; margins between a TTL and
the time waited are at least 0.15 s.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from adapters.live import MemoryLiveState, RedisLiveState
from core.clock import FakeClock
from core.live import LiveState

TTL = 0.3
"""A time to live that `advance(LONGER)` outlasts and `advance(SHORTER)` does not."""
SHORTER = 0.1
LONGER = 0.5
KEYS = ["k", "k2", "lock", "gone", "count", "set", "other", "bucket"]


@dataclass
class Backend:
    name: str
    state: LiveState
    advance: Callable[[float], Awaitable[None]]


def random_prefix() -> str:
    return f"napalmsky-test:{uuid.uuid4().hex}:"


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, fake_clock: FakeClock) -> AsyncIterator[Backend]:
    if request.param == "memory":
        state: LiveState = MemoryLiveState(fake_clock)

        async def advance(seconds: float) -> None:
            fake_clock.advance(seconds)

    else:
        url = request.getfixturevalue("redis_url")
        state = RedisLiveState(url, prefix=random_prefix())

        async def advance(seconds: float) -> None:
            await asyncio.sleep(seconds)

    try:
        yield Backend(request.param, state, advance)
    finally:
        for key in KEYS:  # the shared Redis keeps nothing of ours
            await state.delete(key)
        await state.close()


async def test_get_set_overwrite_delete(backend: Backend) -> None:
    s = backend.state
    assert await s.get("k") is None
    await s.set("k", "one")
    assert await s.get("k") == "one"
    await s.set("k", "two")
    assert await s.get("k") == "two"
    assert await s.delete("k") is True
    assert await s.get("k") is None
    assert await s.delete("k") is False


async def test_values_expire(backend: Backend) -> None:
    s = backend.state
    await s.set("k", "v", ttl=TTL)
    await s.set("k2", "forever")
    await backend.advance(SHORTER)
    assert await s.get("k") == "v"
    await backend.advance(LONGER)
    assert await s.get("k") is None
    assert await s.get("k2") == "forever"
    assert await s.delete("k") is False


async def test_overwrite_without_ttl_clears_the_ttl(backend: Backend) -> None:
    s = backend.state
    await s.set("k", "v", ttl=TTL)
    await s.set("k", "w")
    assert await s.ttl("k") is None
    await backend.advance(LONGER)
    assert await s.get("k") == "w"


async def test_ttl_and_expire(backend: Backend) -> None:
    s = backend.state
    assert await s.ttl("k") is None
    assert await s.expire("k", TTL) is False
    await s.set("k", "v")
    assert await s.ttl("k") is None
    assert await s.expire("k", TTL) is True
    left = await s.ttl("k")
    assert left is not None and 0 < left <= TTL
    await backend.advance(LONGER)
    assert await s.get("k") is None
    assert await s.ttl("k") is None


async def test_expire_extends_a_ttl(backend: Backend) -> None:
    s = backend.state
    await s.set("k", "v", ttl=TTL)
    assert await s.expire("k", 10) is True
    await backend.advance(LONGER)
    assert await s.get("k") == "v"
    left = await s.ttl("k")
    assert left is not None and 9 < left <= 10


async def test_non_positive_ttl_is_rejected(backend: Backend) -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        await backend.state.set("k", "v", ttl=0)
    with pytest.raises(ValueError, match="window must be positive"):
        await backend.state.incr("count", -1)


async def test_claim_wins_once_and_again_after_expiry(backend: Backend) -> None:
    s = backend.state
    assert await s.claim("lock", "a", TTL) is True
    assert await s.claim("lock", "b", TTL) is False
    assert await s.get("lock") == "a"
    await backend.advance(LONGER)
    assert await s.claim("lock", "b", TTL) is True
    assert await s.get("lock") == "b"


async def test_concurrent_claims_have_one_winner(backend: Backend) -> None:
    s = backend.state
    results = await asyncio.gather(*(s.claim("lock", f"owner-{i}", 10) for i in range(10)))
    assert sorted(results) == [False] * 9 + [True]
    assert await s.get("lock") == f"owner-{results.index(True)}"


async def test_release_only_with_the_expected_value(backend: Backend) -> None:
    s = backend.state
    assert await s.release("lock", "a") is False
    await s.claim("lock", "a", 10)
    assert await s.release("lock", "b") is False
    assert await s.get("lock") == "a"
    assert await s.release("lock", "a") is True
    assert await s.get("lock") is None
    assert await s.release("lock", "a") is False


async def test_pop_goes_to_exactly_one_caller(backend: Backend) -> None:
    s = backend.state
    await s.set("k", "invite")
    results = await asyncio.gather(*(s.pop("k") for _ in range(10)))
    assert [r for r in results if r is not None] == ["invite"]
    assert results.count(None) == 9
    assert await s.get("k") is None
    assert await s.pop("gone") is None


async def test_pop_of_an_expired_key_is_none(backend: Backend) -> None:
    s = backend.state
    await s.set("k", "v", ttl=TTL)
    await backend.advance(LONGER)
    assert await s.pop("k") is None


async def test_incr_counts_in_a_fixed_window(backend: Backend) -> None:
    s = backend.state
    counts = []
    for _ in range(3):
        count, left = await s.incr("count", TTL)
        counts.append(count)
        assert 0 < left <= TTL
    assert counts == [1, 2, 3]
    await backend.advance(SHORTER)
    count, left = await s.incr("count", TTL)
    assert count == 4
    assert 0 < left <= TTL - SHORTER + 0.01  # the window does not slide with each hit
    await backend.advance(LONGER)
    count, left = await s.incr("count", TTL)
    assert count == 1
    assert TTL - 0.1 < left <= TTL


# ---- token buckets (GCRA) ----

STEP = 0.2
"""A bucket's refill interval in these tests: a unit comes back every STEP seconds."""


async def test_a_bucket_allows_its_capacity_then_refuses(backend: Backend) -> None:
    s = backend.state
    used = []
    for _ in range(3):
        bucket = await s.take("bucket", STEP, 3)
        assert bucket.allowed and bucket.retry_after == 0
        used.append(round(bucket.used))
    assert used == [1, 2, 3]
    refused = await s.take("bucket", STEP, 3)
    assert not refused.allowed
    assert 2.5 < refused.used <= 3
    assert 0 < refused.retry_after <= STEP
    await backend.advance(STEP + 0.15)  # one unit back, and a bit more
    assert (await s.take("bucket", STEP, 3)).allowed
    assert not (await s.take("bucket", STEP, 3)).allowed


async def test_a_bucket_refills_steadily_and_its_key_expires_when_idle(backend: Backend) -> None:
    s = backend.state
    for _ in range(2):
        await s.take("bucket", STEP, 2)
    left = await s.ttl("bucket")
    assert left is not None and 2 * STEP - 0.05 < left <= 2 * STEP + 0.01
    await backend.advance(2 * STEP + 0.15)
    assert await s.get("bucket") is None  # idle: nothing stored
    assert round((await s.take("bucket", STEP, 2)).used) == 1


async def test_a_peek_takes_nothing(backend: Backend) -> None:
    s = backend.state
    peek = await s.take("bucket", 10, 1, peek=True)
    assert peek.allowed and peek.used == 0
    assert (await s.take("bucket", 10, 1)).allowed
    peek = await s.take("bucket", 10, 1, peek=True)
    assert not peek.allowed and round(peek.used) == 1 and 9 < peek.retry_after <= 10
    assert round((await s.take("bucket", 10, 1, peek=True)).used) == 1


async def test_a_larger_capacity_takes_on_credit(backend: Backend) -> None:
    s = backend.state
    assert (await s.take("bucket", 10, 2)).allowed
    assert (await s.take("bucket", 10, 2)).allowed
    assert not (await s.take("bucket", 10, 2)).allowed
    credit = await s.take("bucket", 10, 5)
    assert credit.allowed and round(credit.used) == 3
    refused = await s.take("bucket", 10, 2)
    assert not refused.allowed
    assert 19 < refused.retry_after <= 20  # two units must come back before one fits


async def test_concurrent_takes_never_exceed_the_capacity(backend: Backend) -> None:
    s = backend.state
    results = await asyncio.gather(*(s.take("bucket", 10, 4) for _ in range(12)))
    assert sorted(b.allowed for b in results) == [False] * 8 + [True] * 4


async def test_bad_bucket_arguments_are_rejected(backend: Backend) -> None:
    with pytest.raises(ValueError, match="interval must be positive"):
        await backend.state.take("bucket", 0, 1)
    with pytest.raises(ValueError, match="capacity must be positive"):
        await backend.state.take("bucket", 1, 0)


# ---- decaying counts ----


async def test_a_rate_counts_events_and_decays_exponentially(backend: Backend) -> None:
    s = backend.state
    assert await s.rate("bucket", 1.0, add=False) == 0
    counts = [await s.rate("bucket", 1.0) for _ in range(4)]
    assert [round(c, 2) for c in counts] == [1, 2, 3, 4] or all(  # Redis: time passes
        abs(c - n) < 0.05 for c, n in zip(counts, [1, 2, 3, 4], strict=True))
    await backend.advance(0.7)
    left = await s.rate("bucket", 1.0, add=False)
    assert 4 * math.exp(-0.85) < left < 4 * math.exp(-0.7) + 0.001  # e^(-t/period)
    assert await s.rate("bucket", 1.0, add=False) == pytest.approx(left, abs=0.02)
    assert await s.rate("bucket", 1.0) == pytest.approx(left + 1, abs=0.02)


async def test_a_rate_key_expires_once_the_count_has_decayed(backend: Backend) -> None:
    s = backend.state
    await s.rate("bucket", 0.02)
    left = await s.ttl("bucket")
    assert left is not None and 0 < left <= 0.02 * 12 + 0.01
    await backend.advance(0.4)
    assert await s.get("bucket") is None
    assert await s.rate("bucket", 0.02, add=False) == 0


async def test_bad_rate_arguments_are_rejected(backend: Backend) -> None:
    with pytest.raises(ValueError, match="period must be positive"):
        await backend.state.rate("bucket", 0)


async def test_set_members_expire_individually(backend: Backend) -> None:
    s = backend.state
    assert await s.set_members("set") == set()
    await s.set_add("set", "short", TTL)
    await s.set_add("set", "long", 10)
    assert await s.set_members("set") == {"short", "long"}
    await backend.advance(LONGER)
    assert await s.set_members("set") == {"long"}


async def test_set_add_refreshes_a_member(backend: Backend) -> None:
    s = backend.state
    await s.set_add("set", "a", 0.5)
    await s.set_add("set", "b", 0.5)
    await backend.advance(0.3)
    await s.set_add("set", "a", 0.5)  # a heartbeat
    await backend.advance(0.3)  # 0.6 after the first add: b is gone, a is not
    assert await s.set_members("set") == {"a"}
    await backend.advance(LONGER)
    assert await s.set_members("set") == set()


async def test_set_remove(backend: Backend) -> None:
    s = backend.state
    assert await s.set_remove("set", "a") is False
    await s.set_add("set", "a", 10)
    await s.set_add("set", "b", 10)
    assert await s.set_remove("set", "a") is True
    assert await s.set_remove("set", "a") is False
    assert await s.set_members("set") == {"b"}


async def test_set_remove_of_an_expired_member_is_false(backend: Backend) -> None:
    s = backend.state
    await s.set_add("set", "a", TTL)
    await backend.advance(LONGER)
    assert await s.set_remove("set", "a") is False


async def test_sets_and_keys_are_separate_names(backend: Backend) -> None:
    s = backend.state
    await s.set_add("set", "a", 10)
    await s.set_add("other", "b", 10)
    assert await s.set_members("set") == {"a"}
    assert await s.set_members("other") == {"b"}
    assert await s.delete("set") is True
    assert await s.set_members("set") == set()


async def test_ping(backend: Backend) -> None:
    await backend.state.ping()


# -- Redis only ---------------------------------------------------------------------------


async def test_prefixes_isolate_redis_keys(redis_url: str) -> None:
    a = RedisLiveState(redis_url, prefix=random_prefix())
    b = RedisLiveState(redis_url, prefix=random_prefix())
    try:
        await a.set("k", "from-a", ttl=10)
        await a.set_add("set", "a", 10)
        await a.incr("count", 10)
        assert await b.get("k") is None
        assert await b.set_members("set") == set()
        assert await b.incr("count", 10) == (1, 10.0)
        assert await b.claim("k", "from-b", 10) is True
        assert await a.get("k") == "from-a"
    finally:
        for state in (a, b):
            for key in KEYS:
                await state.delete(key)
            await state.close()


async def test_abandoned_redis_sets_vanish(redis_url: str) -> None:
    prefix = random_prefix()
    state = RedisLiveState(redis_url, prefix=prefix)
    raw = Redis.from_url(redis_url)
    try:
        await state.set_add("set", "a", 0.2)
        await state.set_add("set", "b", TTL)
        assert await raw.exists(prefix + "set") == 1
        ttl = await state.ttl("set")  # the set lives as long as its longest-lived member
        assert ttl is not None and 0.2 < ttl <= TTL
        await asyncio.sleep(LONGER)
        assert await raw.exists(prefix + "set") == 0  # gone without anyone reading it
    finally:
        await state.delete("set")
        await state.close()
        await raw.aclose()


async def test_memory_purges_expired_entries_without_reads(fake_clock: FakeClock) -> None:
    state = MemoryLiveState(fake_clock)
    for round_ in range(5):
        for i in range(2000):
            await state.set(f"k{round_}-{i}", "v", ttl=1)
            await state.set_add("online", f"u{round_}-{i}", 1)
        fake_clock.advance(2)
    # 20,000 entries were written and each expired before the next round; a purge keeps
    # what is held within a small multiple of what is alive (4,000 per round at most).
    assert state.entry_count() <= 3 * 4000
    assert await state.set_members("online") == set()
    await state.close()
