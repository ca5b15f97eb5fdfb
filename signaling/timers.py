"""Timers on the injected clock: invite expiry, call end, reconnect grace.

Production runs `run()` as a background task; tests move a FakeClock and call `run_due()`, so
races are driven deterministically, never by sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable

from core.clock import Clock

log = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[object]]


class Timers:
    def __init__(self, clock: Clock, max_sleep: float = 0.25) -> None:
        self.clock = clock
        self.max_sleep = max_sleep
        self._heap: list[tuple[float, int, str]] = []
        self._callbacks: dict[str, tuple[int, Callback]] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()

    def call_at(self, when: float, key: str, callback: Callback) -> None:
        """Run `callback` at `when` (clock seconds); a later call with the same key replaces it."""
        seq = next(self._seq)
        self._callbacks[key] = (seq, callback)
        heapq.heappush(self._heap, (when, seq, key))
        self._wake.set()

    def cancel(self, key: str) -> None:
        self._callbacks.pop(key, None)

    def pending(self, key: str) -> bool:
        return key in self._callbacks

    def __len__(self) -> int:
        return len(self._callbacks)

    async def run_due(self) -> int:
        """Run every callback that is due now; a failing one is logged and contained."""
        ran = 0
        now = self.clock.time()
        while self._heap and self._heap[0][0] <= now:
            _, seq, key = heapq.heappop(self._heap)
            entry = self._callbacks.get(key)
            if entry is None or entry[0] != seq:
                continue  # cancelled or replaced
            del self._callbacks[key]
            try:
                await entry[1]()
            except Exception:
                log.exception("timer %s failed", key)
            ran += 1
        while self._heap and self._heap[0][1] != self._callbacks.get(self._heap[0][2], (-1,))[0]:
            heapq.heappop(self._heap)  # drop cancelled heads so memory stays bounded
        return ran

    async def run(self) -> None:
        while True:
            await self.run_due()
            delay = self.max_sleep
            if self._heap:
                delay = max(0.0, min(delay, self._heap[0][0] - self.clock.time()))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass
