"""Consumer: the outgoing copy of a partner's track on one subscriber's connection.

Each transport has one consumer per kind from the start, sending on a fixed SSRC announced in
the SDP answer, so the partner's media arrives without a renegotiation round; when the partner
joins late or rejoins, the consumer switches source and the rewriter keeps sequence numbers and
timestamps continuous.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from core.clock import Clock
from sfu.forwarding import NackResponder, PacketCache, SequenceRewriter
from sfu.internals import Kind, NegotiatedStream
from sfu.rtp import (
    ExtensionPlan,
    abs_send_time_from_ntp,
    is_h264_keyframe,
    is_vp8_keyframe,
    ntp_time,
    payload_bounds,
    rewrite,
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
        self.packets = 0
        self.octets = 0
        self.retransmitted = 0
        self.dropped = 0
        self.closed = False
        self._rewriter = SequenceRewriter()
        self._cache = PacketCache()
        self._nacks = NackResponder(self._cache)
        self._plan: ExtensionPlan | None = None
        # After a source switch a video decoder needs a keyframe: drop until one comes.
        self._awaiting_keyframe = False

    def set_stream(self, stream: NegotiatedStream) -> None:
        self.stream = stream
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

    async def forward(self, data: bytes) -> None:
        stream = self.stream
        if stream is None or stream.ssrc is None or self.closed:
            self.dropped += 1
            return
        if self._awaiting_keyframe:
            if not self._starts_keyframe(data):
                self.dropped += 1
                if self.producer is not None:
                    self.producer.request_keyframe()
                return
            self._awaiting_keyframe = False
        in_seq, in_ts = _SEQ_TS.unpack_from(data, 2)
        mapped = self._rewriter.map(in_seq, in_ts, self.clock.monotonic())
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
        self._cache.put(seq, out)
        if await self.transport.send_rtp(out):
            self.packets += 1
            self.octets += len(out)

    def _starts_keyframe(self, data: bytes) -> bool:
        try:
            start, end = payload_bounds(data)
        except ValueError:
            return False
        payload = data[start:end]
        codec = self.producer.stream.codec if self.producer is not None else "vp8"
        return is_h264_keyframe(payload) if codec == "h264" else is_vp8_keyframe(payload)

    async def on_nack(self, lost: list[int]) -> None:
        for packet in self._nacks.respond(lost, self.clock.monotonic()):
            if await self.transport.send_rtp(packet):
                self.retransmitted += 1

    def on_keyframe_request(self) -> None:
        if self.producer is not None:
            self.producer.request_keyframe()

    def close(self) -> None:
        self.closed = True
        if self.producer is not None:
            self.producer.consumers.discard(self)
            self.producer = None
