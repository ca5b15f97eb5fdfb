"""Producer: one incoming track of a participant, fanned out to its consumers.

Besides forwarding, a producer is the SFU's receiving end toward the publisher: it keeps
reception statistics for receiver reports, NACKs the packets that did not arrive (and unwraps
the RTX retransmissions that answer), estimates the bandwidth for REMB, and passes keyframe
requests up, throttled.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import TYPE_CHECKING

from core.clock import Clock
from sfu.events import CloseReason
from sfu.forwarding import BitrateMeter, KeyframeRequestThrottle, NackGenerator, StreamStats
from sfu.internals import BitrateEstimator, Kind, NegotiatedStream
from sfu.rtp import (
    ABS_SEND_TIME_URI,
    RtcpNack,
    RtcpReportBlock,
    header_extensions,
    payload_bounds,
    unwrap_rtx,
)

if TYPE_CHECKING:
    from sfu.consumer import Consumer
    from sfu.transport import Transport

log = logging.getLogger(__name__)

_SEQ_TS_SSRC = struct.Struct("!HII")
REMB_FLOOR = 30_000


class Producer:
    def __init__(self, transport: Transport, stream: NegotiatedStream, clock: Clock) -> None:
        self.transport = transport
        self.stream = stream
        self.kind: Kind = stream.kind
        self.clock = clock
        self.consumers: set[Consumer] = set()
        self.ssrc: int | None = None
        self.stats: StreamStats | None = None
        self.packets = 0
        self.octets = 0
        self.malformed = 0
        self.rtx_received = 0
        self.keyframe_requests = 0
        self.nacks_sent = 0
        self.meter = BitrateMeter()
        self.estimate: int | None = None  # our own bandwidth estimate of the publisher's uplink
        self.closed = False
        self.close_reason: CloseReason | None = None
        video = self.kind == "video"
        self.nacks = NackGenerator() if video else None
        self._abs_id = stream.extensions.get(ABS_SEND_TIME_URI) if video else None
        self._estimator = BitrateEstimator() if self._abs_id is not None else None
        self._throttle = KeyframeRequestThrottle()
        self._pli_task: asyncio.Task[None] | None = None

    async def on_rtp(self, data: bytes, arrival_ms: int) -> None:
        """One decrypted packet from the publisher: account for it, forward it to every consumer."""
        if self.closed:
            return
        try:
            start, end = payload_bounds(data)
        except ValueError:
            self.malformed += 1
            return
        payload_type = data[1] & 0x7F
        if payload_type != self.stream.payload_type:
            if payload_type != self.stream.rtx_payload_type or self.ssrc is None:
                self.malformed += 1
                return
            try:
                data = bytes(
                    unwrap_rtx(data, ssrc=self.ssrc, payload_type=self.stream.payload_type)
                )
            except ValueError:
                self.malformed += 1
                return
            self.rtx_received += 1
            end -= 2
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
        if ssrc != self.ssrc:
            self.ssrc = ssrc  # first packet, or the publisher restarted its stream
            self.stats = StreamStats(ssrc, self.stream.clock_rate)
        now = self.clock.monotonic()
        assert self.stats is not None
        self.stats.update(seq, ts, now)
        self.packets += 1
        self.octets += len(data)
        if self.nacks is not None:
            lost = self.nacks.on_packet(seq, now)
            if lost:
                await self.send_nack(lost)
        if self._estimator is not None:
            self._estimate(data, arrival_ms, end - start, ssrc)
        for consumer in tuple(self.consumers):
            await consumer.forward(data, start, end)

    def _estimate(self, data: bytes, arrival_ms: int, payload_size: int, ssrc: int) -> None:
        assert self._estimator is not None
        try:
            elements = header_extensions(data)
        except ValueError:
            return
        for xid, value in elements:
            if xid == self._abs_id and len(value) == 3:
                remb = self._estimator.add(
                    arrival_time_ms=arrival_ms, abs_send_time=int.from_bytes(value, "big"),
                    payload_size=payload_size, ssrc=ssrc,
                )
                if remb is not None:
                    self.estimate = remb[0]
                return

    def remb_bitrate(self) -> int | None:
        """What to tell the publisher it may send: our estimate of its uplink, capped by what
        its subscribers report they can take."""
        candidates = [self.estimate] if self.estimate is not None else []
        candidates += [c.remb for c in self.consumers if c.remb is not None]
        return max(REMB_FLOOR, min(candidates)) if candidates else None

    def report_block(self, now: float) -> RtcpReportBlock | None:
        return self.stats.report_block(now) if self.stats is not None else None

    async def send_nack(self, lost: list[int]) -> None:
        if self.ssrc is None:
            return
        packet = RtcpNack(sender_ssrc=self.transport.rtcp_ssrc(self.kind), media_ssrc=self.ssrc,
                          lost=lost)
        self.nacks_sent += 1
        await self.transport.send_rtcp(bytes(packet))

    def on_sender_report(self, ntp_timestamp: int) -> None:
        if self.stats is not None:
            self.stats.on_sender_report(ntp_timestamp, self.clock.monotonic())

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
