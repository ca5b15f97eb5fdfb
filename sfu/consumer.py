"""Consumer: the outgoing copy of a partner's track on one subscriber's connection.

Each accepted section the subscriber receives on has one consumer from the start, sending on a
fixed SSRC announced in the SDP answer, so the partner's media arrives without a renegotiation
round; when the partner joins late, rejoins or restarts its stream, the consumer switches source
and the rewriter keeps sequence numbers and timestamps continuous, holding video back until the
new source's keyframe. It answers the subscriber's NACKs from its own cache (as RTX where the
subscriber negotiated it) within a budget, passes keyframe requests to its producer, and sends
sender reports that carry the publisher's own NTP <-> RTP mapping (RFC 3550 6.4.1, translated
by the rewriter's timestamp offset), so that a receiver synchronises audio and video as they
were captured, whatever the delays on the publisher's uplink.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from core.clock import Clock
from sfu.events import CloseReason
from sfu.forwarding import (
    BitrateMeter,
    DownlinkCap,
    NackResponder,
    PacketCache,
    SendCounters,
    SequenceRewriter,
)
from sfu.negotiation import SectionPlan
from sfu.rtp import (
    TRANSPORT_CC_URI,
    ExtensionPlan,
    RtcpSenderReport,
    abs_send_time_of,
    compact_ntp,
    is_h264_keyframe,
    is_vp8_keyframe,
    rewrite_into,
    wrap_rtx,
)
from sfu.srtp import SEND_VIEW

if TYPE_CHECKING:
    from sfu.producer import Producer
    from sfu.transport import Transport

_SEQ_TS = struct.Struct("!HI")
_NTP_FRACTION = 1 << 32
SR_SILENCE = 2.0  # seconds without media after which no more sender reports go out
MAX_GAPS = 1024  # skipped sequence numbers remembered for late retransmissions
MIN_REPORT_PACKETS = 30  # packets a loss figure must cover before it moves a downlink cap


class Consumer:
    def __init__(self, transport: Transport, kind: str, ssrc: int, rtx_ssrc: int,
                 clock: Clock) -> None:
        self.transport = transport
        self.kind = kind
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.clock = clock
        self.section: SectionPlan | None = None  # set while the subscriber receives this kind
        self.producer: Producer | None = None
        self.counters = SendCounters(90_000 if kind == "video" else 48_000)
        self.retransmitted = 0
        self.dropped = 0
        self.keyframe_requests = 0
        self.nacks_received = 0
        self.meter = BitrateMeter()
        self.remb: int | None = None  # the subscriber's estimate of its downlink
        self.downlink = DownlinkCap()  # from the subscriber's receiver reports
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
        self._payload_type = 0
        self._rtx_payload_type: int | None = None
        self._rtx_seq = 0
        self._sent_srs: list[tuple[int, float]] = []  # (compact NTP, monotonic) of recent SRs
        # After a source switch a video decoder needs a keyframe: drop until one comes.
        self._awaiting_keyframe = False
        self._unsent = 0  # outgoing sequence numbers skipped (upstream loss not recovered)
        self._gaps: dict[int, None] = {}  # the skipped ones that a retransmission may fill
        self._last_report: tuple[int, int, int] | None = None

    @property
    def packets(self) -> int:
        return self.counters.packet_count

    @property
    def octets(self) -> int:
        return self.counters.octet_count

    @property
    def nack_responder(self) -> NackResponder:
        return self._nacks

    @property
    def rewriter(self) -> SequenceRewriter:
        return self._rewriter

    def set_section(self, section: SectionPlan | None) -> None:
        """What the subscriber negotiated for this kind (None: it does not receive it)."""
        self.section = section if section is not None and section.sends else None
        if self.section is not None and self.section.codec is not None:
            self._payload_type = self.section.codec.payload_type
            self.counters.clock_rate = self.section.codec.clock_rate
            self._rtx_payload_type = (
                self.section.rtx.payload_type if self.section.rtx is not None else None
            )
        self._replan()

    def attach(self, producer: Producer) -> None:
        """Take media from `producer` from now on (replacing any earlier source)."""
        if self.closed or producer.closed or producer is self.producer:
            return
        if self.producer is not None:
            self.producer.consumers.discard(self)
        self.producer = producer
        producer.consumers.add(self)
        self._replan()
        self.source_changed(producer)

    def source_changed(self, producer: Producer) -> None:
        """The producer's next packet starts a new source: rebase, and for video await a
        keyframe (asked for at once)."""
        if producer is not self.producer:
            return
        self._rewriter.switch_source(producer.clock_rate, self.clock.monotonic())
        self._awaiting_keyframe = self.kind == "video"
        if self._awaiting_keyframe:
            producer.request_keyframe(force=True)

    def on_connected(self) -> None:
        """The subscriber's connection is up: from now on what we send arrives."""
        if self.producer is not None and self.kind == "video":
            self._awaiting_keyframe = True
            self.producer.request_keyframe(force=True)

    def detach(self, producer: Producer) -> None:
        if self.producer is producer:
            self.producer = None

    def _replan(self) -> None:
        section, producer = self.section, self.producer
        if section is not None and producer is not None:
            # Transport-wide sequence numbers belong to the publisher's uplink: on the downlink
            # the subscriber estimates from abs-send-time and tells us by REMB.
            self._plan = ExtensionPlan.build(
                producer.extensions, section.extensions, mid=section.mid,
                drop=(TRANSPORT_CC_URI,),
            )

    def forward(self, data: bytes, start: int, end: int, now: float) -> None:
        """Send a copy of `data` (payload at data[start:end], as the producer validated it),
        received at `now` (the clock's monotonic seconds)."""
        if self.section is None or self.closed or not self.transport.connected:
            # Not connected yet: what we sent now would be lost, a keyframe above all. The
            # transport asks for a keyframe when it connects.
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
        last_seq = self._rewriter.last_sequence_number
        mapped = self._rewriter.map(in_seq, in_ts, now)
        if mapped is None:
            self.dropped += 1
            return
        seq, ts = mapped
        if last_seq is not None:
            step = (seq - last_seq) & 0xFFFF
            if 1 < step < 0x8000:  # a gap: packets the publisher's uplink lost (so far)
                self._unsent += step - 1
                gaps = self._gaps
                for missing in range(last_seq + 1, last_seq + min(step, MAX_GAPS + 1)):
                    gaps[missing & 0xFFFF] = None
                while len(gaps) > MAX_GAPS:
                    del gaps[next(iter(gaps))]  # too old to be filled: stays unsent
            elif step >= 0x8000 and self._gaps.pop(seq, False) is None:
                self._unsent -= 1  # a late packet (a retransmission) filled a gap
        plan = self._plan
        abs_send_time = None
        if plan is not None and plan.stamps_send_time:
            abs_send_time = abs_send_time_of(self.clock.time())
        try:
            length = rewrite_into(
                SEND_VIEW, data, ssrc=self.ssrc, payload_type=self._payload_type,
                sequence_number=seq, timestamp=ts, plan=plan, abs_send_time=abs_send_time,
            )
        except ValueError:
            self.dropped += 1
            return
        self._cache.put(seq, bytes(SEND_VIEW[:length]))  # the plaintext, for NACK answers
        if self.transport.send_rtp_buffer(length):
            self.counters.on_packet(end - start, ts, now)  # rewriting never changes the payload

    def _starts_keyframe(self, payload: bytes) -> bool:
        codec = self.producer.codec if self.producer is not None else "vp8"
        return is_h264_keyframe(payload) if codec == "h264" else is_vp8_keyframe(payload)

    def on_nack(self, lost: list[int]) -> None:
        self.nacks_received += 1
        if self.section is None:
            return
        packets = self._nacks.respond(lost, self.clock.monotonic(), rtt=self.rtt,
                                      bitrate=self.meter.bitrate)
        for packet in packets:
            if self._rtx_payload_type is not None:
                packet = bytes(wrap_rtx(packet, rtx_ssrc=self.rtx_ssrc,
                                        rtx_payload_type=self._rtx_payload_type,
                                        rtx_sequence_number=self._rtx_seq))
                self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            if self.transport.send_rtp(packet):
                self.retransmitted += 1

    def on_keyframe_request(self) -> None:
        self.keyframe_requests += 1
        if self.producer is not None:
            self.producer.request_keyframe()

    def on_receiver_report(self, fraction_lost: int, packets_lost: int, jitter: int,
                           lsr: int, dlsr: int, highest_seq: int | None = None) -> None:
        """A report block about our stream (RFC 3550 6.4.1): loss, jitter, and the RTT."""
        self.fraction_lost, self.packets_lost, self.jitter = fraction_lost, packets_lost, jitter
        if highest_seq is not None:
            downlink = self._downlink_fraction(packets_lost, highest_seq)
            if downlink is not None:
                self.downlink.on_report(downlink, self.meter.bitrate, self.remb)
        if not lsr:
            return
        for sent_lsr, sent_at in self._sent_srs:
            if sent_lsr == lsr:
                # RFC 3550 6.4.1: RTT = now - LSR - DLSR, all in 1/65536 s.
                elapsed = self.clock.monotonic() - sent_at
                self.rtt = max(0.0, elapsed - dlsr / 65536)
                return

    def _downlink_fraction(self, packets_lost: int, highest_seq: int) -> int | None:
        """The share (0..255) of the last interval's packets lost between us and the
        subscriber: what it reports lost minus the sequence numbers we never sent (lost on
        the publisher's uplink and not recovered), so upstream loss caps nobody's downlink."""
        previous = self._last_report
        if previous is None:
            self._last_report = (packets_lost, highest_seq, self._unsent)
            return None
        lost_before, highest_before, unsent_before = previous
        expected = (highest_seq - highest_before) & 0xFFFFFFFF
        if expected >= 1 << 31:
            self._last_report = (packets_lost, highest_seq, self._unsent)
            return None
        if expected < MIN_REPORT_PACKETS:
            return None  # too few packets to tell loss from reports racing media: wait
        self._last_report = (packets_lost, highest_seq, self._unsent)
        lost = (packets_lost - lost_before) - (self._unsent - unsent_before)
        return max(0, min(255, (lost << 8) // expected))

    def sender_report(self, now: float) -> RtcpSenderReport | None:
        """Our SR: the publisher's NTP <-> RTP mapping moved forward to `now` and translated
        onto our timestamps; None until the publisher has sent one and we have sent media."""
        producer = self.producer
        if self.section is None or producer is None or self.counters.last_rtp_timestamp is None:
            return None
        if now - self.counters.last_sent_at > SR_SILENCE:
            return None  # a silent stream: an extrapolated mapping would claim media never sent
        report = producer.sender_report
        offset = self._rewriter.timestamp_offset
        if report is None or offset is None or report.ssrc != producer.ssrc:
            return None
        elapsed = max(0.0, now - report.received_at)
        ntp = (report.ntp_timestamp + int(elapsed * _NTP_FRACTION)) & 0xFFFF_FFFF_FFFF_FFFF
        rtp = (report.rtp_timestamp + offset + round(elapsed * producer.clock_rate)) & 0xFFFFFFFF
        self._sent_srs = [*self._sent_srs[-3:], (compact_ntp(ntp), now)]
        return RtcpSenderReport(
            ssrc=self.ssrc, ntp_timestamp=ntp, rtp_timestamp=rtp,
            packet_count=self.counters.packet_count & 0xFFFFFFFF,
            octet_count=self.counters.octet_count & 0xFFFFFFFF,
        )

    def close(self, reason: CloseReason) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self.producer is not None:
            self.producer.consumers.discard(self)
            self.producer = None
