"""Consumer: the outgoing copy of a partner's track on one subscriber's connection.

Each transport has one consumer per kind from the start, sending on a fixed SSRC announced in
the SDP answer, so the partner's media arrives without a renegotiation round; when the partner
joins late or rejoins, the consumer switches source and the rewriter keeps sequence numbers and
timestamps continuous. It answers the subscriber's NACKs from its own cache (as RTX where the
subscriber negotiated it), passes keyframe requests to its producer, and counts what it sent for
honest sender reports.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from core.clock import Clock
from sfu.events import CloseReason
from sfu.forwarding import (
    BitrateMeter,
    NackResponder,
    PacketCache,
    SendCounters,
    SequenceRewriter,
)
from sfu.internals import Kind, NegotiatedStream
from sfu.rtp import (
    ExtensionPlan,
    RtcpSenderReport,
    abs_send_time_from_ntp,
    compact_ntp,
    is_h264_keyframe,
    is_vp8_keyframe,
    ntp_time,
    rewrite,
    wrap_rtx,
)

if TYPE_CHECKING:
    from sfu.producer import Producer
    from sfu.transport import Transport

_SEQ_TS = struct.Struct("!HI")


class Consumer:
    def __init__(self, transport: Transport, kind: Kind, clock: Clock) -> None:
        self.transport = transport
        self.kind = kind
        self.clock = clock
        self.stream: NegotiatedStream | None = None  # set when our sender starts
        self.producer: Producer | None = None
        self.counters: SendCounters | None = None
        self.retransmitted = 0
        self.dropped = 0
        self.keyframe_requests = 0
        self.nacks_received = 0
        self.meter = BitrateMeter()
        self.remb: int | None = None  # the subscriber's estimate of its downlink
        self.fraction_lost = 0  # from the subscriber's last receiver report (0..255)
        self.packets_lost = 0
        self.jitter = 0
        self.rtt: float | None = None
        self.closed = False
        self.close_reason: CloseReason | None = None
        self._rewriter = SequenceRewriter()
        self._cache = PacketCache()
        self._nacks = NackResponder(self._cache)
        self._plan: ExtensionPlan | None = None
        self._rtx_seq = 0
        self._last_sr: tuple[int, float] | None = None  # (compact NTP, monotonic) of our last SR
        # After a source switch a video decoder needs a keyframe: drop until one comes.
        self._awaiting_keyframe = False

    @property
    def packets(self) -> int:
        return self.counters.packet_count if self.counters is not None else 0

    @property
    def octets(self) -> int:
        return self.counters.octet_count if self.counters is not None else 0

    def set_stream(self, stream: NegotiatedStream) -> None:
        self.stream = stream
        self.counters = SendCounters(stream.clock_rate)
        self._replan()

    def attach(self, producer: Producer) -> None:
        """Take media from `producer` from now on (replacing any earlier source)."""
        if self.closed or producer.closed or producer is self.producer:
            return
        if self.producer is not None:
            self.producer.consumers.discard(self)
        self.producer = producer
        producer.consumers.add(self)
        self._rewriter.switch_source(producer.stream.clock_rate, self.clock.monotonic())
        self._awaiting_keyframe = self.kind == "video"
        self._replan()
        producer.request_keyframe(force=True)

    def detach(self, producer: Producer) -> None:
        if self.producer is producer:
            self.producer = None

    def _replan(self) -> None:
        if self.stream is not None and self.producer is not None:
            self._plan = ExtensionPlan.build(
                self.producer.stream.extensions, self.stream.extensions, mid=self.stream.mid
            )

    async def forward(self, data: bytes, start: int, end: int) -> None:
        """Send a copy of `data` (payload at data[start:end], as the producer validated it)."""
        stream, counters = self.stream, self.counters
        if stream is None or stream.ssrc is None or counters is None or self.closed:
            self.dropped += 1
            return
        if self._awaiting_keyframe:
            if not self._starts_keyframe(data[start:end]):
                self.dropped += 1
                if self.producer is not None:
                    self.producer.request_keyframe()
                return
            self._awaiting_keyframe = False
        in_seq, in_ts = _SEQ_TS.unpack_from(data, 2)
        now = self.clock.monotonic()
        mapped = self._rewriter.map(in_seq, in_ts, now)
        if mapped is None:
            self.dropped += 1
            return
        seq, ts = mapped
        try:
            out = rewrite(
                data, ssrc=stream.ssrc, payload_type=stream.payload_type,
                sequence_number=seq, timestamp=ts, plan=self._plan,
                abs_send_time=abs_send_time_from_ntp(ntp_time(self.clock.time())),
            )
        except ValueError:
            self.dropped += 1
            return
        packet = bytes(out)  # one copy, shared by the NACK cache and the send
        self._cache.put(seq, packet)
        if await self.transport.send_rtp(packet):
            counters.on_packet(end - start, ts, now)  # rewriting never changes the payload

    def _starts_keyframe(self, payload: bytes) -> bool:
        codec = self.producer.stream.codec if self.producer is not None else "vp8"
        return is_h264_keyframe(payload) if codec == "h264" else is_vp8_keyframe(payload)

    async def on_nack(self, lost: list[int]) -> None:
        self.nacks_received += 1
        stream = self.stream
        if stream is None:
            return
        for packet in self._nacks.respond(lost, self.clock.monotonic()):
            if stream.rtx_payload_type is not None and stream.rtx_ssrc is not None:
                packet = bytes(wrap_rtx(packet, rtx_ssrc=stream.rtx_ssrc,
                                        rtx_payload_type=stream.rtx_payload_type,
                                        rtx_sequence_number=self._rtx_seq))
                self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            if await self.transport.send_rtp(packet):
                self.retransmitted += 1

    def on_keyframe_request(self) -> None:
        self.keyframe_requests += 1
        if self.producer is not None:
            self.producer.request_keyframe()

    def on_receiver_report(self, fraction_lost: int, packets_lost: int, jitter: int,
                           lsr: int, dlsr: int) -> None:
        self.fraction_lost, self.packets_lost, self.jitter = fraction_lost, packets_lost, jitter
        if self._last_sr is not None and lsr == self._last_sr[0] and lsr:
            # RFC 3550 6.4.1: RTT = now - LSR - DLSR, all in 1/65536 s.
            elapsed = self.clock.monotonic() - self._last_sr[1]
            self.rtt = max(0.0, elapsed - dlsr / 65536)

    def sender_report(self, ntp: int, now: float) -> RtcpSenderReport | None:
        if self.counters is None or self.stream is None or self.stream.ssrc is None:
            return None
        report = self.counters.sender_report(self.stream.ssrc, now=now, ntp_timestamp=ntp)
        if report is not None:
            self._last_sr = (compact_ntp(ntp), now)
        return report

    def close(self, reason: CloseReason) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self.producer is not None:
            self.producer.consumers.discard(self)
            self.producer = None
