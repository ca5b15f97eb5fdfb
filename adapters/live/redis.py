"""Live state and message bus on Redis: what several nodes share.

Nothing connects at construction, so a node starts while Redis is down; every call that cannot
reach Redis raises core.errors.Unavailable promptly (connect and read timeouts, no retries that
could apply a command twice). Every key and channel carries the prefix. Expiry of set members
is computed from the Redis server's clock, so clock skew between nodes does not matter.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from adapters.live.memory import (
    DEFAULT_QUEUE_SIZE,
    RATE_TTL,
    QueuedSubscription,
    cancel_and_wait,
    check_ttl,
)
from core.clock import Clock, SystemClock
from core.errors import Unavailable
from core.live import Bucket, MessageHandler

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "napalmsky:"
CONNECT_TIMEOUT = 3.0
SOCKET_TIMEOUT = 3.0

_OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)

# KEYS[1] = key, ARGV[1] = expected value.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] = counter, ARGV[1] = window in ms. Returns {count, ms until the window resets}.
_INCR = """
local count = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    left = tonumber(ARGV[1])
end
return {count, left}
"""

# KEYS[1] = bucket, ARGV[1] = interval in us, ARGV[2] = capacity * interval in us,
# ARGV[3] = 1 to peek. The value is the bucket's theoretical arrival time (GCRA) in us on the
# Redis server's clock, so every node sees one bucket whatever its own clock says.
# Returns {allowed, us in use after the call, us until a take fits}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local level = math.max(0, tat - now)
local after = level + interval
if after > limit + 1 then
    return {0, level, after - limit}
end
if ARGV[3] == '1' then
    return {1, level, 0}
end
redis.call('SET', KEYS[1], string.format('%d', now + after), 'PX', math.ceil(after / 1000))
return {1, after, 0}
"""

# KEYS[1] = decaying count, ARGV[1] = period in us, ARGV[2] = 1 to add an event, ARGV[3] =
# periods to keep the key. The value is `<count>:<us on the server's clock>`. Returns the count
# as a string (a Lua number would come back truncated to an integer).
_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local count = 0
local stored = redis.call('GET', KEYS[1])
if stored then
    local value, at = string.match(stored, '^([^:]+):(%d+)$')
    count = tonumber(value) * math.exp(-(now - tonumber(at)) / period)
end
if ARGV[2] == '1' then
    count = count + 1
    redis.call('SET', KEYS[1], string.format('%.17g:%d', count, now),
               'PX', math.ceil(period * tonumber(ARGV[3]) / 1000))
end
return string.format('%.17g', count)
"""

# Server time in ms, shared by the set scripts.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1] = zset, ARGV[1] = member, ARGV[2] = ttl in ms. Members are scored by expiry time;
# the zset itself lives until its last member expires.
_SET_ADD = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], tonumber(last[2]))
return 1
"""
)

# KEYS[1] = zset, ARGV[1] = member. Returns 1 when the member was there and alive.
_SET_REMOVE = (
    _NOW
    + """
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expires then
    return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(expires) > now then
    return 1
end
return 0
"""
)

# KEYS[1] = zset. Drops expired members, returns the others.
_SET_MEMBERS = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    found = []
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    return sorted({s for s in found if s}, key=len, reverse=True)


def _client(url: str, socket_timeout: float) -> Redis:
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=min(CONNECT_TIMEOUT, socket_timeout),
        socket_timeout=socket_timeout,
        # No transparent retries: a retried INCR, SET NX or GETDEL could apply twice.
        retry=Retry(NoBackoff(), 0),
        # Plain Redis has no maintenance notifications; asking costs a failed command per connect.
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )


class _Redacting:
    """Turns outage errors into Unavailable with any password from the URL removed."""

    def __init__(self, url: str) -> None:
        self._secrets = _secrets(url)

    def unavailable(self, exc: BaseException) -> Unavailable:
        text = str(exc) or type(exc).__name__
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return Unavailable(f"redis unavailable: {text}")

    @contextmanager
    def outage(self) -> Iterator[None]:
        try:
            yield
        except _OUTAGE_ERRORS as exc:
            raise self.unavailable(exc) from None


class RedisLiveState:
    """Live state in Redis, shared by every node using the same prefix."""

    def __init__(
        self,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock | None = None,
        *,
        socket_timeout: float = SOCKET_TIMEOUT,
    ) -> None:
        # Expiry is decided by the Redis server; the clock is kept for symmetry with the
        # in-process state and is not consulted.
        self._clock = clock or SystemClock()
        self._prefix = prefix
        self._errors = _Redacting(url)
        self._redis = _client(url, socket_timeout)
        self._release = self._redis.register_script(_RELEASE)
        self._incr = self._redis.register_script(_INCR)
        self._take = self._redis.register_script(_TAKE)
        self._rate = self._redis.register_script(_RATE)
        self._set_add = self._redis.register_script(_SET_ADD)
        self._set_remove = self._redis.register_script(_SET_REMOVE)
        self._set_members = self._redis.register_script(_SET_MEMBERS)
        self._closed = False

    def _key(self, key: str) -> str:
        if self._closed:
            raise Unavailable("redis live state is closed")
        return self._prefix + key

    async def get(self, key: str) -> str | None:
        k = self._key(key)
        with self._errors.outage():
            return _text(await self._redis.get(k))

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        k = self._key(key)
        if ttl is not None:
            check_ttl(ttl)
        with self._errors.outage():
            await self._redis.set(k, value, px=None if ttl is None else _ms(ttl))

    async def delete(self, key: str) -> bool:
        """Remove the value or the set stored under `key`; True when it existed."""
        k = self._key(key)
        with self._errors.outage():
            return bool(await self._redis.delete(k))

    async def expire(self, key: str, ttl: float) -> bool:
        k = self._key(key)
        check_ttl(ttl)
        with self._errors.outage():
            return bool(await self._redis.pexpire(k, _ms(ttl)))

    async def ttl(self, key: str) -> float | None:
        k = self._key(key)
        with self._errors.outage():
            left = int(await self._redis.pttl(k))
        return None if left < 0 else left / 1000

    async def claim(self, key: str, value: str, ttl: float) -> bool:
        k = self._key(key)
        check_ttl(ttl)
        with self._errors.outage():
            return bool(await self._redis.set(k, value, px=_ms(ttl), nx=True))

    async def release(self, key: str, expected: str) -> bool:
        k = self._key(key)
        with self._errors.outage():
            return bool(await self._release(keys=[k], args=[expected]))

    async def pop(self, key: str) -> str | None:
        k = self._key(key)
        with self._errors.outage():
            return _text(await self._redis.getdel(k))

    async def incr(self, key: str, window: float) -> tuple[int, float]:
        k = self._key(key)
        check_ttl(window, "window")
        with self._errors.outage():
            count, left = await self._incr(keys=[k], args=[_ms(window)])
        return int(count), int(left) / 1000

    async def take(self, key: str, interval: float, capacity: float, *,
                   peek: bool = False) -> Bucket:
        k = self._key(key)
        check_ttl(interval, "interval")
        check_ttl(capacity, "capacity")
        step = max(1, round(interval * 1_000_000))
        with self._errors.outage():
            allowed, used, wait = await self._take(
                keys=[k], args=[step, round(capacity * step), "1" if peek else "0"])
        return Bucket(bool(allowed), int(used) / step, int(wait) / 1_000_000)

    async def rate(self, key: str, period: float, *, add: bool = True) -> float:
        k = self._key(key)
        check_ttl(period, "period")
        with self._errors.outage():
            count = await self._rate(keys=[k], args=[max(1, round(period * 1_000_000)),
                                                     "1" if add else "0", RATE_TTL])
        return float(count)

    async def set_add(self, key: str, member: str, ttl: float) -> None:
        k = self._key(key)
        check_ttl(ttl)
        with self._errors.outage():
            await self._set_add(keys=[k], args=[member, _ms(ttl)])

    async def set_remove(self, key: str, member: str) -> bool:
        k = self._key(key)
        with self._errors.outage():
            return bool(await self._set_remove(keys=[k], args=[member]))

    async def set_members(self, key: str) -> builtins.set[str]:
        k = self._key(key)
        with self._errors.outage():
            members: list[str] = await self._set_members(keys=[k])
        return set(members)

    async def ping(self) -> None:
        if self._closed:
            raise Unavailable("redis live state is closed")
        with self._errors.outage():
            await self._redis.ping()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._redis.aclose()
        except _OUTAGE_ERRORS as exc:
            logger.debug("closing redis live state: %s", self._errors.unavailable(exc))


class _ReaderState(StrEnum):
    IDLE = "idle"  # no subscription yet, no connection
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DOWN = "down"  # waiting to retry
    CLOSED = "closed"


_LIVE_STATES = frozenset({_ReaderState.CONNECTING, _ReaderState.CONNECTED})


class RedisBus:
    """Publish/subscribe over Redis between the nodes that share one prefix.

    One pub/sub connection per bus, read by a task the bus owns. When the connection drops, the
    reader retries with a capped backoff and subscribes every live channel again, so
    subscriptions outlive outages. subscribe() returns once Redis confirmed the subscription,
    or at once while Redis is unreachable (the subscription starts when Redis returns); messages
    published while a subscription is not active are lost (delivery is at most once).
    """

    POLL_INTERVAL = 1.0  # seconds a single read waits before the reader checks liveness
    KEEPALIVE_INTERVAL = 15.0  # silence after which the reader pings the server

    def __init__(
        self,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        *,
        socket_timeout: float = SOCKET_TIMEOUT,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 2.0,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self._prefix = prefix
        self._errors = _Redacting(url)
        self._socket_timeout = socket_timeout
        self._redis = _client(url, socket_timeout)
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._queue_size = queue_size
        self._subscriptions: dict[str, list[QueuedSubscription]] = {}
        self._active: set[str] = set()  # channels Redis confirmed on the current connection
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._conn: AbstractConnection | None = None
        self._state = _ReaderState.IDLE
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    # -- Bus ------------------------------------------------------------------------------

    async def publish(self, channel: str, message: str) -> None:
        self._check_open()
        with self._errors.outage():
            await self._redis.publish(self._prefix + channel, message)

    async def subscribe(self, channel: str, handler: MessageHandler) -> QueuedSubscription:
        self._check_open()
        subscription = QueuedSubscription(channel, handler, self._forget, self._queue_size)
        subscription.start()
        self._subscriptions.setdefault(channel, []).append(subscription)
        if self._reader is None:
            self._state = _ReaderState.CONNECTING
            self._reader = asyncio.get_running_loop().create_task(
                self._read_forever(), name="redis-bus-reader"
            )
        if channel in self._active or self._state not in _LIVE_STATES:
            return subscription  # active already, or redis is down: the reader subscribes later
        waiter = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(channel, [])
        waiters.append(waiter)
        try:
            if self._state is _ReaderState.CONNECTED and len(waiters) == 1:
                await self._send("SUBSCRIBE", self._prefix + channel)
            # Bounded: a lost confirmation must not hang the caller; the reader still
            # subscribes the channel whenever it (re)connects.
            async with asyncio.timeout(CONNECT_TIMEOUT + self._socket_timeout):
                await waiter
        except (TimeoutError, *_OUTAGE_ERRORS, RedisError) as exc:
            logger.warning(
                "subscription to %s not confirmed yet (%s); it starts when redis answers",
                channel,
                self._errors.unavailable(exc).message,
            )
        finally:
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(channel, None)
        return subscription

    async def ping(self) -> None:
        self._check_open()
        with self._errors.outage():
            await self._redis.ping()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            await cancel_and_wait(self._reader)  # drops the pub/sub connection
        self._state = _ReaderState.CLOSED
        self._wake_waiters()
        subscriptions = [s for subs in self._subscriptions.values() for s in subs]
        for subscription in subscriptions:
            await subscription.close()
        self._subscriptions.clear()
        try:
            await self._redis.aclose()
        except _OUTAGE_ERRORS as exc:
            logger.debug("closing redis bus: %s", self._errors.unavailable(exc))

    # -- internals ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("message bus is closed")

    async def _forget(self, subscription: QueuedSubscription) -> None:
        channel = subscription.channel
        subs = self._subscriptions.get(channel)
        if subs is None or subscription not in subs:
            return
        subs.remove(subscription)
        if subs:
            return
        del self._subscriptions[channel]
        self._active.discard(channel)
        if self._state is _ReaderState.CONNECTED and not self._closed:
            try:
                await self._send("UNSUBSCRIBE", self._prefix + channel)
            except (*_OUTAGE_ERRORS, RedisError) as exc:
                # The reader reconnects and subscribes only the channels still wanted.
                logger.debug("unsubscribe from %s failed: %s", channel, exc)

    async def _send(self, *args: str) -> None:
        """Send a command on the pub/sub connection; never reconnects behind the reader."""
        conn = self._conn
        if conn is None or not conn.is_connected:
            raise RedisConnectionError("pub/sub connection is down")
        await conn.send_command(*args, check_health=False)

    def _wake_waiters(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _read_forever(self) -> None:
        delay = self._reconnect_delay
        quiet = False  # True while retrying an outage already logged
        while True:
            self._state = _ReaderState.CONNECTING
            failure: Exception
            try:
                conn = await self._redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]
            except Exception as exc:
                failure = exc
            else:
                self._conn = conn
                delay = self._reconnect_delay
                quiet = False
                try:
                    await self._serve(conn)
                    raise RedisConnectionError("pub/sub reader stopped")  # _serve never returns
                except Exception as exc:
                    failure = exc
                finally:
                    self._conn = None
                    self._active.clear()
                    await self._discard(conn)
            self._state = _ReaderState.DOWN
            self._wake_waiters()
            if not isinstance(failure, (*_OUTAGE_ERRORS, RedisError)):
                logger.error("redis bus reader failed; reconnecting", exc_info=failure)
            elif not quiet:
                logger.warning(
                    "redis bus disconnected, reconnecting: %s",
                    self._errors.unavailable(failure).message,
                )
            quiet = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_reconnect_delay)

    async def _discard(self, conn: AbstractConnection) -> None:
        try:
            await conn.disconnect(nowait=True)
        finally:
            await self._redis.connection_pool.release(conn)

    async def _serve(self, conn: AbstractConnection) -> None:
        """Subscribe every wanted channel on `conn`, then dispatch until the connection fails."""
        loop = asyncio.get_running_loop()
        channels = [self._prefix + c for c in self._subscriptions]
        self._state = _ReaderState.CONNECTED
        if channels:
            await conn.send_command("SUBSCRIBE", *channels, check_health=False)
        logger.info("redis bus connected (%d channels)", len(channels))
        heard = loop.time()
        pinged = False
        while True:
            if not conn.is_connected:
                raise RedisConnectionError("pub/sub connection closed")
            reply: Any = await conn.read_response(timeout=self.POLL_INTERVAL, push_request=True)
            now = loop.time()
            if reply is None:
                silence = now - heard
                if pinged and silence > self.KEEPALIVE_INTERVAL + self._socket_timeout:
                    raise RedisTimeoutError("no answer to keepalive ping")
                if not pinged and silence > self.KEEPALIVE_INTERVAL:
                    await conn.send_command("PING", check_health=False)
                    pinged = True
                continue
            heard = now
            pinged = False
            self._dispatch(reply)

    def _dispatch(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 2:
            return  # PONG outside subscribed mode
        kind = reply[0]
        name = reply[1]
        if not isinstance(name, str) or not name.startswith(self._prefix):
            return
        channel = name[len(self._prefix) :]
        if kind == "message" and len(reply) >= 3:
            for subscription in self._subscriptions.get(channel, ()):
                subscription.offer(str(reply[2]))
        elif kind == "subscribe":
            if channel in self._subscriptions:
                self._active.add(channel)
            for waiter in self._waiters.get(channel, ()):
                if not waiter.done():
                    waiter.set_result(None)


__all__ = ["RedisBus", "RedisLiveState"]
