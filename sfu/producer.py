"""Producer: one incoming track of a participant, fanned out to its consumers."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from core.clock import Clock
from sfu.events import CloseReason
from sfu.forwarding import KeyframeRequestThrottle
from sfu.internals import Kind, NegotiatedStream

if TYPE_CHECKING:
    from sfu.consumer import Consumer
    from sfu.transport import Transport

log = logging.getLogger(__name__)


class Producer:
    def __init__(self, transport: Transport, stream: NegotiatedStream, clock: Clock) -> None:
        self.transport = transport
        self.stream = stream
        self.kind: Kind = stream.kind
        self.clock = clock
        self.consumers: set[Consumer] = set()
        self.ssrc: int | None = None
        self.packets = 0
        self.octets = 0
        self.keyframe_requests = 0
        self.closed = False
        self.close_reason: CloseReason | None = None
        self._throttle = KeyframeRequestThrottle()
        self._pli_task: asyncio.Task[None] | None = None

    async def on_rtp(self, data: bytes) -> None:
        """One decrypted packet from the publisher: forward a copy to every consumer."""
        if self.closed:
            return
        if self.ssrc is None:
            self.ssrc = int.from_bytes(data[8:12], "big")
        self.packets += 1
        self.octets += len(data)
        for consumer in tuple(self.consumers):
            await consumer.forward(data)

    def request_keyframe(self, *, force: bool = False) -> None:
        """Pass a subscriber's keyframe request up to the publisher, throttled."""
        if self.closed or self.kind != "video" or self.ssrc is None:
            return
        now = self.clock.monotonic()
        if force:
            self._throttle.reset()
        if not self._throttle.should_forward(now):
            return
        if self._pli_task is not None and not self._pli_task.done():
            return
        self.keyframe_requests += 1
        self._pli_task = asyncio.ensure_future(self.transport.send_pli(self.kind, self.ssrc))

    async def close(self, reason: CloseReason) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        for consumer in tuple(self.consumers):
            consumer.detach(self)
        self.consumers.clear()
        if self._pli_task is not None:
            self._pli_task.cancel()
            await asyncio.gather(self._pli_task, return_exceptions=True)
