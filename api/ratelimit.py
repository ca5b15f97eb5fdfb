"""Fixed-window rate limits through the live-state port, so they hold across nodes."""

from __future__ import annotations

from core.errors import RateLimited
from core.live import LiveState


class RateLimiter:
    def __init__(self, live: LiveState) -> None:
        self.live = live

    async def hit(self, key: str, limit: int, window: float, what: str) -> None:
        count, reset_in = await self.live.incr(f"ratelimit:{key}", window)
        if count > limit:
            raise RateLimited(f"too many {what}; try again later", retry_after=reset_in)
