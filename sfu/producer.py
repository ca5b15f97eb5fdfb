"""Producer: one incoming track of a participant, fanned out to its consumers.

Besides forwarding, a producer is the SFU's receiving end toward the publisher: it keeps
reception statistics for receiver reports, NACKs the packets that did not arrive (and unwraps
the RTX retransmissions that answer), estimates the bandwidth for REMB when the publisher does
not use transport-wide congestion control, keeps the publisher's last sender report (its
NTP <-> RTP mapping, which consumers pass on for lip sync), and passes keyframe requests up,
throttled.

A producer has one source at a time. When the publisher restarts its stream (a new SSRC, or
the same SSRC with sequence numbers that jump and stay jumped, RFC 3550 A.1), everything kept
per source starts afresh and every consumer is told, so the subscriber's stream stays one
continuous stream (sfu.forwarding.SequenceRewriter) that resumes on the new source's keyframe.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.clock import Clock
from sfu.bwe import FrameGroups
from sfu.events import CloseReason
from sfu.forwarding import BitrateMeter, KeyframeRequestThrottle, NackGenerator, StreamStats
from sfu.negotiation import SectionPlan
from sfu.rtp import (
    ABS_SEND_TIME_URI,
    RtcpNack,
    RtcpPli,
    RtcpReportBlock,
    abs_send_time,
    is_h264_keyframe,
    is_vp8_keyframe,
    payload_bounds,
    unwrap_rtx,
)

if TYPE_CHECKING:
    from sfu.consumer import Consumer
    from sfu.transport import Transport

log = logging.getLogger(__name__)

_SEQ_TS_SSRC = struct.Struct("!HII")
_TS = struct.Struct("!I")
REMB_FLOOR = 30_000
REMB_LIFT = 100_000_000  # bits/s: "no limit from us", sent after a cap is lifted
REMB_LIFT_ROUNDS = 3  # RTCP rounds the lifting REMB is repeated (one may be lost)


@dataclass(frozen=True, slots=True)
class SenderReportInfo:
    """The publisher's last SR for the current source: its NTP <-> RTP mapping, and when."""

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP
    rtp_timestamp: int
    received_at: float  # our monotonic clock, seconds


class Producer:
    def __init__(self, transport: Transport, section: SectionPlan, clock: Clock) -> None:
        assert section.codec is not None
        self.transport = transport
        self.kind = section.kind
        self.clock = clock
        self.consumers: set[Consumer] = set()
        self.ssrc: int | None = None
        self.stats: StreamStats | None = None
        self.packets = 0
        self.octets = 0
        self.malformed = 0
        self.padding = 0
        self.rtx_received = 0
        self.keyframe_requests = 0
        self.nacks_sent = 0
        self.sources = 0  # sources seen (1 + restarts)
        self.meter = BitrateMeter()
        self.sender_report: SenderReportInfo | None = None
        self.closed = False
        self.close_reason: CloseReason | None = None
        self._held: bytes | None = None  # the first packet after a jump, until confirmed
        self._throttle = KeyframeRequestThrottle()
        self._wanted = False  # a keyframe was asked for before the first packet
        self._lift_rounds = 0
        self._deferred: asyncio.TimerHandle | None = None
        self._deferred_since = 0.0
        self._keyframe_at: float | None = None  # when the last keyframe start arrived
        self.nacks: NackGenerator | None = None
        self._estimator: FrameGroups | None = None
        # a room recording's tap: every accepted packet, retransmissions unwrapped (one call)
        self.recorder: Callable[[bytes], None] | None = None
        self.update(section)

    def update(self, section: SectionPlan) -> None:
        """(Re)apply what was negotiated for this track (a re-offer may change it)."""
        assert section.codec is not None
        self.section = section
        self.payload_type = section.codec.payload_type
        self.clock_rate = section.codec.clock_rate
        self.codec = section.codec.name.lower()
        self.rtx_payload_type = section.rtx.payload_type if section.rtx is not None else None
        self.extensions = dict(section.extensions)
        video = self.kind == "video"
        if video and "nack" in section.feedback and self.nacks is None:
            self.nacks = NackGenerator()
        self._abs_id = self.extensions.get(ABS_SEND_TIME_URI) if video else None
        self.transport_cc = "transport-cc" in section.feedback
        if self._abs_id is not None and not self.transport_cc and self._estimator is None:
            self._estimator = FrameGroups()
        elif self.transport_cc:
            self._estimator = None

    def on_rtp(self, data: bytes, rtx: bool, arrival_ms: int) -> None:
        """One decrypted packet from the publisher: account for it, forward it to every consumer."""
        if self.closed:
            return
        try:
            start, end = payload_bounds(data)
        except ValueError:
            self.malformed += 1
            return
        if rtx:
            if self.ssrc is None or data[1] & 0x7F != self.rtx_payload_type:
                self.malformed += 1
                return
            if end - start < 2:
                self.padding += 1  # a bandwidth probe: padding only, nothing to forward
                return
            try:
                data = bytes(unwrap_rtx(data, ssrc=self.ssrc, payload_type=self.payload_type))
            except ValueError:
                self.malformed += 1
                return
            self.rtx_received += 1
            end -= 2
        elif data[1] & 0x7F != self.payload_type:
            self.malformed += 1
            return
        if end <= start:
            # Padding only (a bandwidth probe on the media SSRC): forwarded like any packet,
            # so that the subscriber's sequence numbers have no gap to NACK.
            self.padding += 1
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
        now = self.clock.monotonic()
        if ssrc != self.ssrc or self.stats is None:
            if rtx:
                return  # a retransmission for a source we no longer forward
            self._new_source(ssrc)
        stats = self.stats
        assert stats is not None
        restarts = stats.restarts
        if not stats.update(seq, ts, now):
            self._held = data  # a jump: forward it if the next packet confirms a restart
            return
        held, self._held = self._held, None
        if stats.restarts != restarts:
            self._restart_source()
            if held is not None:
                self._account_and_forward(held, now, arrival_ms)
        self._account_and_forward(data, now, arrival_ms, start, end)

    def _account_and_forward(self, data: bytes, now: float, arrival_ms: int,
                             start: int = -1, end: int = -1) -> None:
        if start < 0:
            start, end = payload_bounds(data)
        seq = (data[2] << 8) | data[3]
        self.packets += 1
        self.octets += len(data)
        if self.nacks is not None:
            lost = self.nacks.on_packet(seq, now)
            if lost:
                self.send_nack(lost)
        estimator = self._estimator
        if estimator is not None:
            sent = abs_send_time(data, self._abs_id or 0)
            if sent is not None:
                estimator.add(_TS.unpack_from(data, 4)[0], sent, arrival_ms, end - start,
                              self.ssrc or 0)
        if self._deferred is not None and self._is_keyframe(data[start:end]):
            self._keyframe_at = now
        if self.recorder is not None:
            self.recorder(data)
        for consumer in tuple(self.consumers):
            consumer.forward(data, start, end, now)

    def _new_source(self, ssrc: int) -> None:
        first = self.ssrc is None
        self.ssrc = ssrc
        self.stats = StreamStats(ssrc, self.clock_rate)
        self.sender_report = None
        self._held = None
        if not first:
            self._restart_source()
        else:
            self.sources = 1
            if self._wanted:
                self._wanted = False
                self.request_keyframe(force=True)

    def _restart_source(self) -> None:
        """Everything kept per source starts afresh; consumers rebase and await a keyframe."""
        self.sources += 1
        if self.nacks is not None:
            self.nacks = NackGenerator()
        self.sender_report = None
        log.info("%s %s: the publisher restarted its stream (SSRC %s)",
                 self.transport.user_id, self.kind, self.ssrc)
        for consumer in tuple(self.consumers):
            consumer.source_changed(self)
        self.request_keyframe(force=True)

    @property
    def estimate(self) -> int | None:
        """Our estimate of the publisher's uplink in bits/s (REMB; None with transport-cc)."""
        return self._estimator.estimate if self._estimator is not None else None

    def remb_bitrate(self) -> int | None:
        """What to tell the publisher it may send (bits/s), or None for no REMB at all.

        A publisher with transport-cc estimates its own uplink from our feedback; REMB then
        only carries a congested subscriber's downlink cap (sfu.forwarding.DownlinkCap).
        Without transport-cc: our estimate of its uplink, capped by what its subscribers
        report they can take."""
        caps = [c.downlink.cap for c in self.consumers if c.downlink.cap is not None]
        if self.transport_cc:
            if caps:
                self._lift_rounds = REMB_LIFT_ROUNDS
                return max(REMB_FLOOR, min(caps))
            if self._lift_rounds:
                # Chrome keeps the last REMB as a ceiling until another arrives: lift it.
                self._lift_rounds -= 1
                return REMB_LIFT
            return None
        candidates = [self.estimate] if self.estimate is not None else []
        candidates += [c.remb for c in self.consumers if c.remb is not None]
        candidates += caps
        return max(REMB_FLOOR, min(candidates)) if candidates else None

    def report_block(self, now: float) -> RtcpReportBlock | None:
        return self.stats.report_block(now) if self.stats is not None else None

    def send_nack(self, lost: list[int]) -> None:
        if self.ssrc is None:
            return
        packet = RtcpNack(sender_ssrc=self.transport.rtcp_ssrc(self.kind), media_ssrc=self.ssrc,
                          lost=lost)
        self.nacks_sent += 1
        self.transport.send_rtcp(bytes(packet))

    def on_sender_report(self, ssrc: int, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """The publisher's SR (RFC 3550 6.4.1) for `ssrc`; other sources' reports are ignored."""
        if self.stats is None or ssrc != self.ssrc:
            return
        now = self.clock.monotonic()
        self.stats.on_sender_report(ntp_timestamp, now)
        self.sender_report = SenderReportInfo(ssrc, ntp_timestamp, rtp_timestamp, now)

    def request_keyframe(self, *, force: bool = False) -> bool:
        """Pass a subscriber's keyframe request up to the publisher (PLI, RFC 4585 6.3.1);
        True when a PLI went out now.

        At most one PLI per throttle interval: a request inside the interval is not dropped but
        deferred to its end, and skipped then if a keyframe came meanwhile. A request before
        the publisher's first packet waits for it.
        """
        if self.closed or self.kind != "video":
            return False
        if self.ssrc is None:
            self._wanted = True
            return False
        now = self.clock.monotonic()
        if force:
            self._throttle.reset()
        if not self._throttle.should_forward(now):
            self._defer(now)
            return False
        return self._send_pli()

    def _send_pli(self) -> bool:
        if self.closed or self.ssrc is None:
            return False
        sent = self.transport.send_rtcp(
            bytes(RtcpPli(self.transport.rtcp_ssrc(self.kind), self.ssrc))
        )
        if not sent:
            self._throttle.reset()  # not connected yet: the next request must not be swallowed
            return False
        self.keyframe_requests += 1
        return True

    def _defer(self, now: float) -> None:
        if self._deferred is not None:
            return  # one deferred request covers every request of this interval
        self._deferred_since = now
        delay = self._throttle.remaining(now)
        self._deferred = asyncio.get_running_loop().call_later(delay, self._send_deferred)

    def _send_deferred(self) -> None:
        self._deferred = None
        if self._keyframe_at is not None and self._keyframe_at >= self._deferred_since:
            return  # a keyframe arrived after the request: it is answered
        self._throttle.mark(self.clock.monotonic())  # scheduled for the interval's end
        self._send_pli()

    def _is_keyframe(self, payload: bytes) -> bool:
        return is_h264_keyframe(payload) if self.codec == "h264" else is_vp8_keyframe(payload)

    def close(self, reason: CloseReason) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        for consumer in tuple(self.consumers):
            consumer.detach(self)
        self.consumers.clear()
