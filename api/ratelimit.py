"""Rate limits through the live-state port, so they hold across nodes: fixed windows for
per-session request budgets, token buckets for failed sign-ins."""

from __future__ import annotations

import hashlib
import math

from api.signuplimiter import about
from core.errors import RateLimited
from core.live import LiveState


class RateLimiter:
    def __init__(self, live: LiveState) -> None:
        self.live = live

    async def hit(self, key: str, limit: int, window: float, what: str) -> None:
        count, reset_in = await self.live.incr(f"ratelimit:{key}", window)
        if count > limit:
            raise RateLimited(f"too many {what}; try again later", retry_after=reset_in)


class LoginLimiter:
    """Failed sign-ins, limited so that guessing passwords is slow while people behind one
    shared address (a campus, a café, a carrier NAT) are not locked out by each other.

    Two token buckets (GCRA through `LiveState.take`, so they hold across nodes), charged only
    by failures; a successful sign-in costs nothing:
    - per address and account: `per_hour` failures an hour, `per_hour` at once (a person
      mistyping; a guesser working on one account from one address);
    - per address: ADDRESS_FACTOR times as many, over all accounts (one address trying many).
    Raises RateLimited (with `retry_after` in seconds and the wait in words) before the
    password is checked when either bucket is empty.
    """

    ADDRESS_FACTOR = 10
    HOUR = 3600.0

    def __init__(self, live: LiveState, per_hour: int) -> None:
        self.live = live
        self.per_hour = per_hour

    def _buckets(self, ip: str, email: str) -> list[tuple[str, float, float]]:
        account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]  # no PII
        per_address = self.per_hour * self.ADDRESS_FACTOR
        return [(f"login-fail:{ip}:{account}", self.HOUR / self.per_hour, self.per_hour),
                (f"login-fail:{ip}", self.HOUR / per_address, per_address)]

    async def check(self, ip: str, email: str) -> None:
        for key, interval, capacity in self._buckets(ip, email):
            bucket = await self.live.take(key, interval, capacity, peek=True)
            if not bucket.allowed:
                raise RateLimited(
                    f"Too many failed sign-ins from your address. Try again in "
                    f"{about(bucket.retry_after)}.", retry_after=math.ceil(bucket.retry_after))

    async def failed(self, ip: str, email: str) -> None:
        for key, interval, capacity in self._buckets(ip, email):
            await self.live.take(key, interval, capacity)
