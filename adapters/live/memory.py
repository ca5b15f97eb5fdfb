"""In-process live state and message bus: the single-node embedded default.

Both run on one asyncio loop and need no locks: every operation completes without awaiting, so
it is atomic with respect to other tasks. Time comes from the injected clock, so TTLs are
tested by moving a FakeClock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from core.clock import Clock
from core.errors import Unavailable
from core.live import Bucket, MessageHandler

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 1000
"""Messages a subscription holds for a handler that is behind; later ones are dropped."""


RATE_TTL = 12
"""A decaying count is kept for this many periods after its last event (e^-12: nothing)."""


def check_ttl(ttl: float, name: str = "ttl") -> None:
    if not ttl > 0:
        raise ValueError(f"{name} must be positive")


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for it to end, without swallowing a cancellation of our own."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


@dataclass(slots=True)
class _Value:
    value: str
    expires_at: float | None  # on the clock's monotonic scale


class MemoryLiveState:
    """Live state held in this process. Expired entries vanish on read and in periodic purges."""

    PURGE_MIN_WRITES = 1024

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._values: dict[str, _Value] = {}
        self._sets: dict[str, dict[str, float]] = {}  # key -> member -> expires_at
        # A full purge runs after as many writes as there were live entries at the last purge,
        # so its cost is amortised O(1) per write and expired entries stay within a constant
        # factor of the live ones.
        self._writes_since_purge = 0
        self._purge_after = self.PURGE_MIN_WRITES
        self._closed = False

    # -- values ---------------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        self._check_open()
        entry = self._live(key)
        return None if entry is None else entry.value

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self._check_open()
        if ttl is not None:
            check_ttl(ttl)
        self._values[key] = _Value(value, None if ttl is None else self._now() + ttl)
        self._wrote()

    async def delete(self, key: str) -> bool:
        """Remove the value or the set stored under `key`; True when it existed."""
        self._check_open()
        existed = self._live(key) is not None
        self._values.pop(key, None)
        members = self._sets.pop(key, None)
        if members is not None:
            now = self._now()
            existed = existed or any(expires > now for expires in members.values())
        return existed

    async def expire(self, key: str, ttl: float) -> bool:
        self._check_open()
        check_ttl(ttl)
        entry = self._live(key)
        if entry is None:
            return False
        entry.expires_at = self._now() + ttl
        return True

    async def ttl(self, key: str) -> float | None:
        self._check_open()
        entry = self._live(key)
        if entry is None or entry.expires_at is None:
            return None
        return entry.expires_at - self._now()

    async def claim(self, key: str, value: str, ttl: float) -> bool:
        self._check_open()
        check_ttl(ttl)
        if self._live(key) is not None:
            return False
        self._values[key] = _Value(value, self._now() + ttl)
        self._wrote()
        return True

    async def release(self, key: str, expected: str) -> bool:
        self._check_open()
        entry = self._live(key)
        if entry is None or entry.value != expected:
            return False
        del self._values[key]
        return True

    async def pop(self, key: str) -> str | None:
        self._check_open()
        entry = self._live(key)
        if entry is None:
            return None
        del self._values[key]
        return entry.value

    async def incr(self, key: str, window: float) -> tuple[int, float]:
        self._check_open()
        check_ttl(window, "window")
        now = self._now()
        entry = self._live(key)
        if entry is None:
            entry = self._values[key] = _Value("0", now + window)
            self._wrote()
        try:
            count = int(entry.value) + 1
        except ValueError:
            raise ValueError(f"value of {key!r} is not a counter") from None
        entry.value = str(count)
        if entry.expires_at is None:  # a plain value turned counter: give it a window
            entry.expires_at = now + window
        return count, entry.expires_at - now

    async def take(self, key: str, interval: float, capacity: float, *,
                   peek: bool = False) -> Bucket:
        self._check_open()
        check_ttl(interval, "interval")
        check_ttl(capacity, "capacity")
        # Whole microseconds, as in the Redis script, so both round alike.
        step = max(1, round(interval * 1_000_000))
        limit = round(capacity * step)
        now = round(self._now() * 1_000_000)
        entry = self._live(key)
        try:
            tat = now if entry is None else int(entry.value)
        except ValueError:
            raise ValueError(f"value of {key!r} is not a bucket") from None
        level = max(0, tat - now)
        after = level + step
        if after > limit + 1:
            return Bucket(False, level / step, (after - limit) / 1_000_000)
        if peek:
            return Bucket(True, level / step, 0.0)
        self._values[key] = _Value(str(now + after), (now + after) / 1_000_000)
        self._wrote()
        return Bucket(True, after / step, 0.0)

    async def rate(self, key: str, period: float, *, add: bool = True) -> float:
        self._check_open()
        check_ttl(period, "period")
        now = round(self._now() * 1_000_000)
        entry = self._live(key)
        count = 0.0
        if entry is not None:
            try:
                value, _, at = entry.value.partition(":")
                count = float(value) * math.exp(-(now - int(at)) / (period * 1_000_000))
            except ValueError:
                raise ValueError(f"value of {key!r} is not a rate") from None
        if add:
            count += 1
            self._values[key] = _Value(f"{count!r}:{now}", self._now() + RATE_TTL * period)
            self._wrote()
        return count

    # -- sets with expiring members -------------------------------------------------------

    async def set_add(self, key: str, member: str, ttl: float) -> None:
        self._check_open()
        check_ttl(ttl)
        self._sets.setdefault(key, {})[member] = self._now() + ttl
        self._wrote()

    async def set_remove(self, key: str, member: str) -> bool:
        self._check_open()
        members = self._sets.get(key)
        if members is None:
            return False
        expires = members.pop(member, None)
        if not members:
            del self._sets[key]
        return expires is not None and expires > self._now()

    async def set_members(self, key: str) -> builtins.set[str]:
        self._check_open()
        members = self._sets.get(key)
        if members is None:
            return set()
        now = self._now()
        for member in [m for m, expires in members.items() if expires <= now]:
            del members[member]
        if not members:
            del self._sets[key]
        return set(members)

    # -- lifecycle ------------------------------------------------------------------------

    async def ping(self) -> None:
        self._check_open()

    async def close(self) -> None:
        self._closed = True
        self._values.clear()
        self._sets.clear()

    # -- internals ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("live state is closed")

    def _now(self) -> float:
        return self._clock.monotonic()

    def _live(self, key: str) -> _Value | None:
        entry = self._values.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= self._now():
            del self._values[key]
            return None
        return entry

    def _wrote(self) -> None:
        self._writes_since_purge += 1
        if self._writes_since_purge >= self._purge_after:
            self._purge()

    def _purge(self) -> None:
        now = self._now()
        expired = [
            k for k, v in self._values.items() if v.expires_at is not None and v.expires_at <= now
        ]
        for key in expired:
            del self._values[key]
        live = len(self._values)
        for key in list(self._sets):
            members = self._sets[key]
            for member in [m for m, expires in members.items() if expires <= now]:
                del members[member]
            if members:
                live += len(members)
            else:
                del self._sets[key]
        self._writes_since_purge = 0
        self._purge_after = max(self.PURGE_MIN_WRITES, live)

    def entry_count(self) -> int:
        """Values plus set members held, expired or not (for tests and metrics)."""
        return len(self._values) + sum(len(m) for m in self._sets.values())


class QueuedSubscription:
    """One handler on one channel, fed in order through its own bounded queue.

    A slow handler only delays its own messages; when its queue is full, newer messages for it
    are dropped and logged (delivery is at most once). A handler that raises is logged and the
    next message is delivered as usual.

    The queue and the task that drains it exist only while messages are pending: most
    subscriptions (one per signaling socket) are idle most of the time, and an idle one costs
    this object alone rather than an asyncio.Queue and a parked task (about 5 KiB).
    """

    __slots__ = ("_channel", "_closed", "_dropping", "_handler", "_limit", "_on_close",
                 "_pending", "_task")

    def __init__(
        self,
        channel: str,
        handler: MessageHandler,
        on_close: Callable[[QueuedSubscription], Awaitable[None]],
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self._channel = channel
        self._handler = handler
        self._on_close = on_close
        self._limit = queue_size
        self._pending: collections.deque[str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._dropping = False

    @property
    def channel(self) -> str:
        return self._channel

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        """Nothing to start: delivery begins with the first message (kept for callers)."""

    def offer(self, message: str) -> None:
        """Queue `message` for the handler without waiting; drop it when the queue is full."""
        if self._closed:
            return
        pending = self._pending
        if pending is None:
            pending = self._pending = collections.deque()
        if len(pending) >= self._limit:
            if not self._dropping:
                logger.warning(
                    "handler on channel %s is behind by %d messages: dropping new ones",
                    self._channel,
                    self._limit,
                )
            self._dropping = True
            return
        self._dropping = False
        pending.append(message)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._deliver(), name=f"bus-subscription:{self._channel}"
            )

    async def flush(self) -> None:
        """Wait until the messages queued so far have been handed to the handler."""
        task = self._task
        if task is not None and task is not asyncio.current_task():
            await asyncio.shield(task)

    async def close(self) -> None:
        """Stop delivery. Idempotent; also safe to call from inside this subscription's handler."""
        if self._closed:
            return
        self._closed = True
        self._pending = None
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        try:
            await self._on_close(self)
        finally:
            if task is not None and task is not asyncio.current_task():
                await cancel_and_wait(task)

    async def _deliver(self) -> None:
        try:
            while not self._closed and self._pending:
                message = self._pending.popleft()
                try:
                    await self._handler(message)
                except Exception:
                    logger.exception("handler on channel %s raised", self._channel)
        finally:
            # No await between the loop's last check and here: an offer() cannot slip between.
            self._task = None
            if not self._pending:
                self._pending = None


class MemoryBus:
    """Publish/subscribe between the tasks of this process."""

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._subscriptions: dict[str, list[QueuedSubscription]] = {}
        self._closed = False

    async def publish(self, channel: str, message: str) -> None:
        if self._closed:
            raise Unavailable("message bus is closed")
        for subscription in self._subscriptions.get(channel, ()):
            subscription.offer(message)

    async def subscribe(self, channel: str, handler: MessageHandler) -> QueuedSubscription:
        if self._closed:
            raise Unavailable("message bus is closed")
        subscription = QueuedSubscription(channel, handler, self._forget, self._queue_size)
        subscription.start()
        self._subscriptions.setdefault(channel, []).append(subscription)
        return subscription

    async def ping(self) -> None:
        if self._closed:
            raise Unavailable("message bus is closed")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        subscriptions = [s for subs in self._subscriptions.values() for s in subs]
        for subscription in subscriptions:
            await subscription.close()
        self._subscriptions.clear()

    async def _forget(self, subscription: QueuedSubscription) -> None:
        subs = self._subscriptions.get(subscription.channel)
        if subs is not None and subscription in subs:
            subs.remove(subscription)
            if not subs:
                del self._subscriptions[subscription.channel]
