"""Producer -> consumer (sfu/producer.py, sfu/consumer.py), property-based, on fake transports
and a fake clock.

- Whatever a publisher sends on its SSRC, the producer never raises, and the subscriber only
  ever gets well-formed packets on the consumer's SSRC.
- Across stream restarts (a new SSRC, new bases), loss and the 16-bit wrap, the subscriber's
  sequence numbers only move forward, by the publisher's step within a source and by one
  across a restart, with the payload intact.
- The consumer's sender report carries the publisher's NTP <-> RTP mapping translated by the
  offset its rewriter applies: (SR RTP time - outgoing timestamp) equals (publisher's SR RTP
  time - incoming timestamp), modulo 2^32.
"""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from core.clock import FakeClock
from sfu import sdp
from sfu.consumer import Consumer
from sfu.negotiation import LocalParameters, SectionPlan, negotiate
from sfu.producer import Producer
from sfu.rtp import RtpHeader, ntp_time
from sfu.srtp import SEND_VIEW
from tests.fuzz.strategies import damaged, raw_packets, u16, u32

fuzz = settings.get_profile("napalmsky-fuzz")

OFFER = (Path(__file__).parents[1] / "sfu" / "data" / "chrome-156-offer.sdp").read_text()
LOCAL = LocalParameters(
    ice_ufrag="sfuU", ice_pwd="sfupasswordsfupassword", fingerprint=":".join(["AB"] * 32),
    candidates=["1 1 udp 2130706431 127.0.0.1 40000 typ host"],
    ssrcs={"audio": (11, 12), "video": (21, 22)}, cname="sfu", stream_id="s", session_id=1,
)
AUDIO = negotiate(sdp.parse(OFFER), video_codec="vp8", local=LOCAL).accepted("audio")
assert isinstance(AUDIO, SectionPlan) and AUDIO.codec is not None
PT = AUDIO.codec.payload_type
CONSUMER_SSRC = 11


class FakeTransport:
    def __init__(self) -> None:
        self.user_id = "fuzz"
        self.connected = True
        self.sent: list[bytes] = []

    def send_rtp(self, data: bytes | bytearray) -> bool:
        self.sent.append(bytes(data))
        return True

    def send_rtp_buffer(self, length: int) -> bool:  # what Consumer.forward wrote
        return self.send_rtp(bytes(SEND_VIEW[:length]))

    def send_rtcp(self, data: bytes) -> bool:
        return True

    def rtcp_ssrc(self, kind: str) -> int:
        return 42


def pipeline() -> tuple[Producer, Consumer, FakeTransport, FakeClock]:
    clock = FakeClock()
    publisher, subscriber = FakeTransport(), FakeTransport()
    producer = Producer(publisher, AUDIO, clock)  # type: ignore[arg-type]
    consumer = Consumer(subscriber, "audio", CONSUMER_SSRC, 12, clock)  # type: ignore[arg-type]
    consumer.set_section(AUDIO)
    consumer.attach(producer)
    return producer, consumer, subscriber, clock


def opus(ssrc: int, seq: int, ts: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, PT, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


@st.composite
def sources(draw: st.DrawFn) -> list[tuple[int, list[tuple[int, int, bytes]]]]:
    """Sources (SSRC, packets (seq, ts, payload)) one after another, in order with some loss,
    starting anywhere near the 16- and 32-bit wraps. Payloads are unique (source, index)."""
    out = []
    for index, ssrc in enumerate(draw(st.lists(u32, min_size=1, max_size=3, unique=True))):
        seq = draw(st.sampled_from([0xFFF0, 0xFFFF, 0]) | u16)
        ts = draw(st.sampled_from([0xFFFFF000, 0]) | u32)
        packets = []
        for k in range(draw(st.integers(2, 40))):
            payload = struct.pack("!BH", index, k) + draw(st.binary(max_size=6))
            packets.append((seq & 0xFFFF, ts & 0xFFFFFFFF, payload))
            step = draw(st.sampled_from([1, 1, 1, 1, 2, 3]))
            seq += step
            ts += 960 * step
        out.append((ssrc, packets))
    return out


@fuzz
@given(datagrams=st.lists(raw_packets | damaged(st.just(opus(7, 1, 2, b"opus"))), max_size=20))
def test_whatever_the_publisher_sends_the_subscriber_gets_well_formed_packets(
    datagrams: list[bytes],
) -> None:
    producer, _, subscriber, clock = pipeline()
    producer.on_rtp(opus(7, 0, 0, b"x"), False, 0)
    for data in datagrams:
        if len(data) >= 12:  # the transport drops shorter datagrams before decryption
            producer.on_rtp(data, False, 0)
            producer.on_rtp(data, True, 0)  # and as RTX, which this section did not negotiate
        clock.advance(0.02)
    for packet in subscriber.sent:
        header = RtpHeader.parse(packet)
        assert (header.ssrc, header.payload_type) == (CONSUMER_SSRC, PT)


@fuzz
@given(streams=sources())
def test_restarts_and_wraparound_keep_one_forward_stream(
    streams: list[tuple[int, list[tuple[int, int, bytes]]]],
) -> None:
    producer, _, subscriber, clock = pipeline()
    sent_by = {payload: (index, seq) for index, (_, packets) in enumerate(streams)
               for seq, _, payload in packets}
    for ssrc, packets in streams:
        for seq, ts, payload in packets:
            producer.on_rtp(opus(ssrc, seq, ts, payload), False, 0)
            clock.advance(0.02)
    assert subscriber.sent, "nothing was forwarded"
    out = []  # (source, input seq, output seq), in sending order
    for packet in subscriber.sent:
        header = RtpHeader.parse(packet)
        assert (header.ssrc, header.payload_type) == (CONSUMER_SSRC, PT)
        payload = packet[header.payload_offset:]
        assert payload in sent_by  # forwarded byte for byte
        out.append((*sent_by[payload], header.sequence_number))
    for (source_a, in_a, out_a), (source_b, in_b, out_b) in itertools.pairwise(out):
        step = (out_b - out_a) & 0xFFFF
        assert 0 < step < 0x8000  # forward, modulo 2^16
        if source_a == source_b:
            assert step == (in_b - in_a) & 0xFFFF  # loss shows as the same gap
        else:
            assert source_b > source_a and step == 1  # a restart goes on right after


@fuzz
@given(seq=u16, ts=u32, sr_rtp=u32, second=st.tuples(u32, u16, u32), restart=st.booleans())
def test_sender_reports_are_translated_by_the_applied_offset(
    seq: int, ts: int, sr_rtp: int, second: tuple[int, int, int], restart: bool
) -> None:
    producer, consumer, subscriber, clock = pipeline()
    producer.on_rtp(opus(1000, seq, ts, b"a"), False, 0)
    ssrc = 1000
    if restart:  # a new source: the rewriter applies a new offset
        ssrc, seq, ts = second
        ssrc = ssrc if ssrc != 1000 else 1001
        clock.advance(0.5)
        producer.on_rtp(opus(ssrc, seq, ts, b"b"), False, 0)
    out_ts = RtpHeader.parse(subscriber.sent[-1]).timestamp
    producer.on_sender_report(ssrc, ntp_time(clock.time()), sr_rtp)
    report = consumer.sender_report(clock.monotonic())
    assert report is not None and report.ssrc == CONSUMER_SSRC
    assert (report.rtp_timestamp - out_ts) & 0xFFFFFFFF == (sr_rtp - ts) & 0xFFFFFFFF
