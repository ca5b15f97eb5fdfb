"""Producer -> consumer on bytes, with fake transports and a fake clock: a publisher's stream
restarts, lip sync through the SFU's sender reports, the retransmission budget, keyframe
requests that are deferred rather than lost."""

from __future__ import annotations

import asyncio
import itertools
import struct
from pathlib import Path

from core.clock import FakeClock
from sfu import sdp
from sfu.consumer import Consumer
from sfu.events import CloseReason
from sfu.negotiation import LocalParameters, SectionPlan, negotiate
from sfu.producer import Producer
from sfu.rtp import RtcpPli, RtcpSenderReport, ntp_time, parse_rtcp
from sfu.srtp import SEND_VIEW

DATA = Path(__file__).parent / "data"
LOCAL = LocalParameters(
    ice_ufrag="sfuU", ice_pwd="sfupasswordsfupassword", fingerprint=":".join(["AB"] * 32),
    candidates=["1 1 udp 2130706431 127.0.0.1 40000 typ host"],
    ssrcs={"audio": (11, 12), "video": (21, 22)}, cname="sfu", stream_id="s", session_id=1,
)
NEGOTIATION = negotiate(sdp.parse((DATA / "chrome-156-offer.sdp").read_text()),
                        video_codec="vp8", local=LOCAL)
VP8_KEY = b"\x10\x00\x9d\x01\x2a"  # S=1 PID=0, then a VP8 keyframe header (P bit clear)
VP8_DELTA = b"\x10\x01\x00\x00\x00"
VP8_MORE = b"\x00\x00\x00\x00\x00"  # a later packet of the same frame


def section(kind: str) -> SectionPlan:
    plan = NEGOTIATION.accepted(kind)
    assert plan is not None
    return plan


class FakeTransport:
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.connected = True
        self.sent: list[bytes] = []
        self.rtcp: list[bytes] = []

    def send_rtp(self, data: bytes | bytearray) -> bool:
        self.sent.append(bytes(data))
        return True

    def send_rtp_buffer(self, length: int) -> bool:  # what Consumer.forward wrote
        return self.send_rtp(bytes(SEND_VIEW[:length]))

    def send_rtcp(self, data: bytes) -> bool:
        self.rtcp.append(data)
        return True

    def rtcp_ssrc(self, kind: str) -> int:
        return 42


def packet(ssrc: int, pt: int, seq: int, ts: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc) + payload + b"\x00" * 100


def pair(kind: str = "video") -> tuple[Producer, Consumer, FakeTransport, FakeTransport,
                                       FakeClock]:
    clock = FakeClock()
    pub, sub = FakeTransport("pub"), FakeTransport("sub")
    producer = Producer(pub, section(kind), clock)  # type: ignore[arg-type]
    consumer = Consumer(sub, kind, 21 if kind == "video" else 11, 22, clock)  # type: ignore[arg-type]
    consumer.set_section(section(kind))
    consumer.attach(producer)
    return producer, consumer, pub, sub, clock


class VideoSource:
    """A publisher's video: frames of three packets at 30 fps, a keyframe when asked."""

    def __init__(self, producer: Producer, clock: FakeClock, ssrc: int, seq: int,
                 ts: int) -> None:
        self.producer, self.clock = producer, clock
        self.ssrc, self.seq, self.ts = ssrc, seq, ts

    def frame(self, key: bool = False) -> None:
        pt = self.producer.payload_type
        first = VP8_KEY if key else VP8_DELTA
        for i, payload in enumerate((first, VP8_MORE, VP8_MORE)):
            self.producer.on_rtp(packet(self.ssrc, pt, self.seq, self.ts, payload, i == 2),
                                 False, 0)
            self.seq += 1
        self.ts += 3000
        self.clock.advance(1 / 30)


def headers(sent: list[bytes]) -> list[tuple[int, int, int]]:
    return [struct.unpack_from("!HII", p, 2) for p in sent]


def assert_one_continuous_stream(sent: list[bytes], ssrc: int) -> None:
    out = headers(sent)
    assert {s for _, _, s in out} == {ssrc}
    for (seq_a, ts_a, _), (seq_b, ts_b, _) in itertools.pairwise(out):
        assert (seq_b - seq_a) & 0xFFFF == 1, (seq_a, seq_b)
        step = (ts_b - ts_a) & 0xFFFFFFFF
        assert step in (0, 3000) or 0 < step <= 6000, (ts_a, ts_b)


async def test_a_new_ssrc_with_new_bases_continues_the_outgoing_stream() -> None:
    producer, _, pub, sub, clock = pair()
    a = VideoSource(producer, clock, 0xAAAA, 1000, 5000)
    a.frame(key=True)
    for _ in range(9):
        a.frame()
    sent_before = len(sub.sent)
    plis_before = sum(isinstance(p, RtcpPli) for d in pub.rtcp for p in parse_rtcp(d))
    # The camera switches: a new SSRC whose bases are far ahead (+20,000 and +1,003,000).
    b = VideoSource(producer, clock, 0xBBBB, a.seq + 20_000, a.ts + 1_003_000)
    b.frame()  # a delta frame first: held back until the new source's keyframe
    assert len(sub.sent) == sent_before
    plis = sum(isinstance(p, RtcpPli) for d in pub.rtcp for p in parse_rtcp(d))
    assert plis > plis_before  # a keyframe was asked for at once
    b.frame(key=True)
    for _ in range(5):
        b.frame()
    assert len(sub.sent) == 30 + 18
    assert_one_continuous_stream(sub.sent, 21)
    assert producer.sources == 2


async def test_a_new_base_behind_the_old_one_does_not_freeze_the_video() -> None:
    producer, _, _, sub, clock = pair()
    a = VideoSource(producer, clock, 0xAAAA, 40_000, 3_000_000_000)
    a.frame(key=True)
    for _ in range(5):
        a.frame()
    # The encoder restarts under the same SSRC with lower sequence numbers and timestamps.
    a.seq, a.ts = 100, 5000
    a.frame(key=True)
    for _ in range(5):
        a.frame()
    assert len(sub.sent) == 36
    assert_one_continuous_stream(sub.sent, 21)


async def test_a_timestamp_jump_alone_is_rebased() -> None:
    producer, consumer, _, sub, clock = pair()
    a = VideoSource(producer, clock, 0xAAAA, 1000, 5000)
    a.frame(key=True)
    a.frame()
    a.ts += 1_003_000
    for _ in range(3):
        a.frame()
    assert_one_continuous_stream(sub.sent, 21)
    assert consumer.rewriter.rebases == 1


def capture_ntp(report: RtcpSenderReport, rtp_timestamp: int, clock_rate: int) -> float:
    """What a receiver computes: the NTP time (seconds) of a timestamp, from an SR."""
    ntp_seconds = report.ntp_timestamp / (1 << 32)
    delta = (rtp_timestamp - report.rtp_timestamp) & 0xFFFFFFFF
    if delta >= 1 << 31:
        delta -= 1 << 32
    return ntp_seconds + delta / clock_rate


async def test_sender_reports_keep_audio_and_video_in_sync() -> None:
    """Audio reaches the SFU 20 ms after capture, video 150 ms: what the subscriber derives
    from our SRs must still put frames captured together at the same time (within 15 ms)."""
    clock = FakeClock()
    pub, sub = FakeTransport("pub"), FakeTransport("sub")
    producers = {k: Producer(pub, section(k), clock) for k in ("audio", "video")}  # type: ignore[arg-type]
    consumers = {}
    for kind, (ssrc, rtx) in LOCAL.ssrcs.items():
        consumer = Consumer(sub, kind, ssrc, rtx, clock)  # type: ignore[arg-type]
        consumer.set_section(section(kind))
        consumer.attach(producers[kind])
        consumers[kind] = consumer
    rates = {"audio": 48_000, "video": 90_000}
    bases = {"audio": 1_111_111, "video": 2_222_222}  # the publisher's random timestamp origins
    delays = {"audio": 0.020, "video": 0.150}
    ssrcs = {"audio": 0xA0, "video": 0xB0}
    start = clock.time()
    events: list[tuple[float, str, int]] = []  # (arrival, kind, capture index in ms)
    for ms in range(0, 3000, 10):
        for kind in ("audio", "video"):
            if kind == "video" and ms % 30:
                continue
            events.append((ms / 1000 + delays[kind], kind, ms))
    events.sort()
    seq = {"audio": 1, "video": 1}
    sr_sent: set[tuple[str, int]] = set()
    for arrival, kind, ms in events:
        now = start + arrival
        clock.advance(max(0.0, now - clock.time()))
        ts = bases[kind] + ms * rates[kind] // 1000
        payload = VP8_KEY if kind == "video" else b"\x01\x02\x03"
        producers[kind].on_rtp(packet(ssrcs[kind], producers[kind].payload_type, seq[kind], ts,
                                      payload), False, 0)
        seq[kind] += 1
        second = ms // 1000
        if (kind, second) not in sr_sent and ms % 1000 == 0:
            # The publisher's SR maps capture time: sent at capture, it travels like its media.
            sr_sent.add((kind, second))
            producers[kind].on_sender_report(ssrcs[kind], ntp_time(start + ms / 1000), ts)
    reports = {k: consumers[k].sender_report(clock.monotonic()) for k in ("audio", "video")}
    assert reports["audio"] is not None and reports["video"] is not None
    # A frame and an audio packet captured at 2.40 s: where do our SRs put them?
    out_ts = {}
    for kind in ("audio", "video"):
        offset = consumers[kind].rewriter.timestamp_offset
        assert offset is not None
        out_ts[kind] = (bases[kind] + 2400 * rates[kind] // 1000 + offset) & 0xFFFFFFFF
    audio_at = capture_ntp(reports["audio"], out_ts["audio"], 48_000)
    video_at = capture_ntp(reports["video"], out_ts["video"], 90_000)
    assert abs(video_at - audio_at) < 0.015, video_at - audio_at


async def test_no_sender_report_before_the_publishers_and_none_for_a_silent_stream() -> None:
    producer, consumer, _, _, clock = pair()
    a = VideoSource(producer, clock, 0xAAAA, 1000, 5000)
    a.frame(key=True)
    assert consumer.sender_report(clock.monotonic()) is None  # no publisher SR yet
    producer.on_sender_report(0xAAAA, ntp_time(clock.time()), a.ts)
    assert consumer.sender_report(clock.monotonic()) is not None
    producer.on_sender_report(0xCCCC, ntp_time(clock.time()), 1)  # another source's: ignored
    assert producer.sender_report is not None and producer.sender_report.ssrc == 0xAAAA
    clock.advance(3.0)
    assert consumer.sender_report(clock.monotonic()) is None


async def test_a_nack_storm_is_answered_within_the_budget() -> None:
    producer, consumer, _, sub, clock = pair()
    a = VideoSource(producer, clock, 0xAAAA, 1000, 5000)
    a.frame(key=True)
    while len(sub.sent) < 272:
        a.frame()
    newest = [struct.unpack_from("!H", p, 2)[0] for p in sub.sent[-272:]]
    size = len(sub.sent[-1])
    consumer.meter.bitrate = 1_000_000.0
    consumer.rtt = 0.05
    sent_before = len(sub.sent)
    for _ in range(2000):  # 2,000 NACKs over 2 s, each for the newest 272 packets
        consumer.on_nack(newest)
        clock.advance(0.001)
    resent = len(sub.sent) - sent_before
    assert resent == consumer.retransmitted
    assert resent <= 3 * 272  # a few times each at most
    responder = consumer.nack_responder
    budget = responder.share * 1_000_000 / 8 * (2.0 + responder.burst) + responder.floor
    assert resent * size <= budget
    assert responder.over_budget + responder.suppressed > 0


async def test_a_keyframe_request_inside_the_interval_is_deferred_not_dropped() -> None:
    clock = FakeClock()
    pub = FakeTransport("pub")
    producer = Producer(pub, section("video"), clock)  # type: ignore[arg-type]
    producer._throttle.interval = 0.05
    producer.on_rtp(packet(0xAAAA, producer.payload_type, 1, 0, VP8_DELTA), False, 0)

    def plis() -> int:
        return sum(isinstance(p, RtcpPli) for d in pub.rtcp for p in parse_rtcp(d))

    before = plis()
    assert producer.request_keyframe()
    assert not producer.request_keyframe()  # inside the interval: deferred
    assert plis() == before + 1
    clock.advance(0.05)
    for _ in range(200):
        if plis() == before + 2:
            break
        await asyncio.sleep(0.01)
    assert plis() == before + 2  # the deferred request went out at the interval's end

    # A keyframe arriving meanwhile answers a deferred request: nothing more is sent.
    clock.advance(0.06)
    assert producer.request_keyframe()
    assert not producer.request_keyframe()
    producer.on_rtp(packet(0xAAAA, producer.payload_type, 2, 3000, VP8_KEY), False, 0)
    for _ in range(30):
        await asyncio.sleep(0.01)
    assert plis() == before + 3
    producer.close(CloseReason.LEFT)


async def test_a_request_before_the_first_packet_waits_for_it() -> None:
    clock = FakeClock()
    pub = FakeTransport("pub")
    producer = Producer(pub, section("video"), clock)  # type: ignore[arg-type]
    assert not producer.request_keyframe()
    assert not pub.rtcp
    producer.on_rtp(packet(0xAAAA, producer.payload_type, 1, 0, VP8_DELTA), False, 0)
    assert any(isinstance(p, RtcpPli) for d in pub.rtcp for p in parse_rtcp(d))


async def test_upstream_loss_does_not_cap_the_subscribers_downlink() -> None:
    producer, consumer, _, sub, clock = pair()
    consumer.meter.bitrate = 1_000_000.0
    pt = producer.payload_type
    seq = 1000
    producer.on_rtp(packet(0xAAAA, pt, seq, 0, VP8_KEY), False, 0)
    out_first = struct.unpack_from("!H", sub.sent[0], 2)[0]

    def report(lost: int) -> None:
        highest = struct.unpack_from("!H", sub.sent[-1], 2)[0]
        consumer.on_receiver_report(0, lost, 0, 0, 0, highest)

    report(0)
    for n in range(1, 101):  # every fifth packet lost on the publisher's uplink
        seq += 1
        if n % 5:
            producer.on_rtp(packet(0xAAAA, pt, seq, n * 3000, VP8_MORE), False, 0)
        clock.advance(0.01)
    missing = 100 // 5
    assert struct.unpack_from("!H", sub.sent[-1], 2)[0] - out_first == 100 - 1
    report(missing)  # the subscriber saw those gaps: 20 % "lost", all of it upstream
    assert consumer.downlink.cap is None
    lost = missing
    for _ in range(2):  # now the downlink loses 20 % of what we send, two reports in a row
        for n in range(100):
            seq += 1
            producer.on_rtp(packet(0xAAAA, pt, seq, n * 3000, VP8_MORE), False, 0)
        lost += 20
        report(lost)
    assert consumer.downlink.cap is not None and consumer.downlink.cap < 1_000_000
    # The publisher (transport-cc) is told by REMB; once the cap goes, REMB lifts the
    # ceiling Chrome would otherwise keep, a few times, then stops.
    assert producer.remb_bitrate() == consumer.downlink.cap
    consumer.downlink.cap = None
    lifts = [producer.remb_bitrate() for _ in range(4)]
    assert lifts[:3] == [100_000_000] * 3 and lifts[3] is None


async def test_late_fills_and_duplicates_keep_the_upstream_loss_count_right() -> None:
    producer, consumer, _, _, _ = pair()
    pt = producer.payload_type
    producer.on_rtp(packet(0xAAAA, pt, 100, 0, VP8_KEY), False, 0)
    producer.on_rtp(packet(0xAAAA, pt, 104, 0, VP8_MORE), False, 0)  # 101-103 missing
    assert consumer._unsent == 3
    producer.on_rtp(packet(0xAAAA, pt, 102, 0, VP8_MORE), False, 0)  # retransmitted late
    assert consumer._unsent == 2
    producer.on_rtp(packet(0xAAAA, pt, 102, 0, VP8_MORE), False, 0)  # a duplicate of it
    producer.on_rtp(packet(0xAAAA, pt, 100, 0, VP8_KEY), False, 0)  # and of one never lost
    assert consumer._unsent == 2
