"""sfu.forwarding: sequence continuity, NACK answers, keyframe throttling, RTCP statistics."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from typing import Any

import pytest

from sfu.forwarding import (
    KeyframeRequestThrottle,
    NackResponder,
    PacketCache,
    SendCounters,
    SequenceRewriter,
    StreamStats,
)
from sfu.rtp import RtcpReceiverReport, RtcpReportBlock, RtcpSenderReport


def raises_exactly(message: str) -> AbstractContextManager[Any]:
    """pytest.raises(ValueError) whose message is exactly `message`."""
    return pytest.raises(ValueError, match=f"^{re.escape(message)}$")

# --------------------------------------------------------------------------------------------
# SequenceRewriter


def test_first_source_maps_to_itself() -> None:
    r = SequenceRewriter()
    assert (r.last_sequence_number, r.last_timestamp) == (None, None)
    assert r.map(100, 5000, 0.0) == (100, 5000)
    assert r.map(101, 5960, 0.02) == (101, 5960)
    assert (r.last_sequence_number, r.last_timestamp) == (101, 5960)


def test_a_switch_before_any_packet_still_maps_to_itself() -> None:
    r = SequenceRewriter()
    r.switch_source(90000, 0.0)
    assert r.map(7, 9, 0.1) == (7, 9)


def test_input_sequence_and_timestamp_wrap() -> None:
    r = SequenceRewriter()
    ts0 = 2**32 - 1920
    seqs = [65534, 65535, 0, 1]
    out = [r.map(seq, (ts0 + 960 * k) % 2**32, 0.02 * k) for k, seq in enumerate(seqs)]
    assert out == [(65534, ts0), (65535, ts0 + 960), (0, 0), (1, 960)]


def test_reordered_and_retransmitted_packets_map_consistently() -> None:
    r = SequenceRewriter()
    r.switch_source(90000, 0.0)
    assert r.map(10, 100, 0.0) == (10, 100)
    assert r.map(12, 100, 0.01) == (12, 100)
    assert r.map(11, 100, 0.02) == (11, 100)
    assert r.map(10, 100, 0.5) == (10, 100)  # retransmission
    assert r.last_sequence_number == 12  # late packets do not move the newest


def test_reordering_across_the_wrap_is_consistent() -> None:
    r = SequenceRewriter()
    r.map(65530, 0, 0.0)
    r.switch_source(90000, 1.0)
    assert r.map(65533, 0, 1.0) == (65531, 90000)
    assert r.map(2, 0, 1.1) == (0, 90000)  # 65533 -> 2 is 5 ahead: the output wraps too
    assert r.map(65535, 0, 1.2) == (65533, 90000)
    assert r.map(0, 0, 1.3) == (65534, 90000)
    assert r.map(65534, 0, 1.4) == (65532, 90000)
    assert r.map(1, 0, 1.5) == (65535, 90000)
    assert r.map(3, 0, 1.6) == (1, 90000)


@pytest.mark.parametrize(("behind", "dropped"), [(999, False), (1000, False), (1001, True)])
def test_packets_older_than_the_window_are_dropped(behind: int, dropped: bool) -> None:
    r = SequenceRewriter(window=1000)
    for seq in range(5000, 7001, 100):
        r.map(seq, 0, 0.0)
    result = r.map(7000 - behind, 0, 0.0)
    assert (result is None) is dropped
    if not dropped:
        assert result == (7000 - behind, 0)


def test_packets_before_the_first_of_a_source_are_dropped() -> None:
    r = SequenceRewriter()
    r.map(500, 0, 0.0)
    assert r.map(499, 0, 0.0) is None
    r.switch_source(48000, 1.0)
    assert r.map(9000, 0, 1.0) == (501, 48000)
    assert r.map(8999, 0, 1.0) is None  # would collide with the previous source's 500


def test_switch_source_continues_sequence_and_advances_timestamp_by_the_gap() -> None:
    r = SequenceRewriter()
    r.switch_source(90000, 0.0)
    for k in range(3):
        r.map(100 + k, 1000 + 3000 * k, 0.9 + 0.05 * k)  # last packet at 1.0: (102, 7000)
    r.switch_source(90000, 1.5)
    assert r.map(40000, 777, 2.0) == (103, 7000 + 90000)
    assert r.map(40001, 777 + 3000, 2.03) == (104, 7000 + 90000 + 3000)
    assert r.map(40000, 777, 2.2) == (103, 97000)  # retransmission of the first packet
    assert r.map(40005, 777 + 6000, 2.1) == (108, 97000 + 6000)  # a gap is kept


def test_switch_source_advances_at_least_one_tick() -> None:
    r = SequenceRewriter()
    r.map(1, 50, 3.0)
    r.switch_source(48000, 3.0)
    assert r.map(900, 123456, 3.0) == (2, 51)


def test_switch_source_never_counts_the_gap_from_before_the_switch() -> None:
    r = SequenceRewriter()
    r.map(1, 0, 1.0)
    r.switch_source(1000, 4.0)
    assert r.map(50, 0, 2.0) == (2, 3000)  # gap measured up to the switch at least


def test_switch_source_wraps_outgoing_sequence_and_timestamp() -> None:
    r = SequenceRewriter()
    r.map(65535, 2**32 - 10, 0.0)
    r.switch_source(8000, 0.0)
    assert r.map(17, 5, 0.01) == (0, 70)  # 2**32 - 10 + 80
    assert r.map(18, 165, 0.03) == (1, 230)


def test_several_switches_stay_continuous() -> None:
    r = SequenceRewriter()
    now = 0.0
    expected_seq = 1000
    r.map(1000, 0, now)
    for source in range(5):
        now += 1.0
        r.switch_source(90000, now)
        base = 20000 * source + 3
        for k in range(10):
            expected_seq += 1
            result = r.map(base + k, 9 * k, now + 0.01 * k)
            assert result is not None and result[0] == expected_seq % 65536


def test_window_validation() -> None:
    with raises_exactly("window must be between 1 and 32767"):
        SequenceRewriter(window=0)


# --------------------------------------------------------------------------------------------
# PacketCache and NackResponder


def test_cache_get_and_overwrite() -> None:
    cache = PacketCache(size=4)
    for seq in range(6):
        cache.put(seq, bytes([seq]))
    assert cache.get(0) is None and cache.get(1) is None  # overwritten by 4 and 5
    assert [cache.get(s) for s in range(2, 6)] == [b"\x02", b"\x03", b"\x04", b"\x05"]
    assert cache.get(6) is None and cache.get(100) is None  # never stored
    cache.clear()
    assert cache.get(5) is None


def test_cache_across_the_sequence_wrap() -> None:
    cache = PacketCache()
    assert cache.size == 512
    for k in range(600):
        cache.put((65300 + k) % 65536, k.to_bytes(2, "big"))
    assert cache.get(65300 + 87) is None  # the oldest 88 were overwritten
    assert cache.get(65300 + 88) == (88).to_bytes(2, "big")
    assert cache.get(363) == (599).to_bytes(2, "big")


def test_cache_stores_a_copy_of_a_bytearray() -> None:
    cache = PacketCache(size=8)
    packet = bytearray(b"abc")
    cache.put(1, packet)
    packet[0] = 0  # e.g. encrypted in place afterwards
    assert cache.get(1) == b"abc"


def test_cache_size_validation() -> None:
    with raises_exactly("size must be between 1 and 32768"):
        PacketCache(size=0)


def make_responder(min_interval: float = 0.1) -> NackResponder:
    cache = PacketCache(size=16)
    for seq in range(100, 110):
        cache.put(seq, b"p%d" % seq)
    return NackResponder(cache, min_interval=min_interval)


def test_nack_resends_cached_packets_in_order() -> None:
    r = make_responder()
    assert r.respond([103, 101, 200], 0.0) == [b"p103", b"p101"]
    assert (r.resent, r.missed, r.suppressed) == (2, 1, 0)


def test_nack_storm_is_deduplicated_within_the_interval() -> None:
    r = make_responder()
    assert r.respond([101, 102], 0.0) == [b"p101", b"p102"]
    assert r.respond([101, 102, 103], 0.05) == [b"p103"]
    assert r.respond([101, 101, 101], 0.099) == []
    assert r.respond([101, 101], 0.1) == [b"p101"]  # interval elapsed: once more, not twice
    assert r.respond([102], 0.1) == [b"p102"]
    assert (r.resent, r.suppressed) == (5, 6)


def test_nack_interval_is_configurable() -> None:
    r = make_responder(min_interval=0.0)
    assert r.respond([105, 105], 1.0) == [b"p105", b"p105"]
    r = make_responder(min_interval=1.0)
    r.respond([105], 1.0)
    assert r.respond([105], 1.9) == [] and r.respond([105], 2.0) == [b"p105"]


def test_nack_for_an_overwritten_packet_is_missed() -> None:
    cache = PacketCache(size=4)
    r = NackResponder(cache)
    for seq in range(10):
        cache.put(seq, b"x")
    assert r.respond([1, 9], 0.0) == [b"x"]
    assert r.missed == 1


# --------------------------------------------------------------------------------------------
# KeyframeRequestThrottle


def test_throttle_forwards_one_request_per_interval() -> None:
    t = KeyframeRequestThrottle()
    assert t.should_forward(10.0)
    assert not t.should_forward(10.1)
    assert not t.should_forward(10.499)
    assert t.should_forward(10.5)
    assert not t.should_forward(10.9)  # suppressed requests do not extend the interval
    assert t.should_forward(11.0)


def test_throttle_forwards_the_first_request_after_a_source_switch() -> None:
    t = KeyframeRequestThrottle(interval=1.0)
    assert t.should_forward(0.0)
    t.reset()
    assert t.should_forward(0.1)
    assert not t.should_forward(0.2)


# --------------------------------------------------------------------------------------------
# StreamStats


def feed(stats: StreamStats, seqs: list[int], start: float = 0.0) -> None:
    for seq in seqs:
        stats.update(seq, seq * 960, start + seq * 0.02)


def test_loss_counts_and_fraction_per_interval() -> None:
    stats = StreamStats(ssrc=0xABC, clock_rate=48000)
    feed(stats, [s for s in range(10) if s not in (3, 7)])
    assert (stats.expected, stats.received, stats.cumulative_lost) == (10, 8, 2)
    block = stats.report_block(1.0)
    assert (block.ssrc, block.fraction_lost, block.packets_lost, block.highest_seq) == (
        0xABC, 2 * 256 // 10, 2, 9,
    )
    feed(stats, list(range(10, 20)))
    block = stats.report_block(2.0)
    assert (block.fraction_lost, block.packets_lost, block.highest_seq) == (0, 2, 19)
    feed(stats, [19, 19])  # duplicates count as received (RFC 3550 A.3)
    assert stats.cumulative_lost == 0
    assert stats.report_block(3.0).fraction_lost == 0


def test_fraction_lost_when_everything_is_lost_saturates() -> None:
    stats = StreamStats(1, 90000)
    stats.update(0, 0, 0.0)
    stats.report_block(0.0)
    stats.update(11, 0, 1.0)  # 10 lost, 1 received: 10/11
    assert stats.report_block(1.0).fraction_lost == 10 * 256 // 11
    assert stats.report_block(1.0).fraction_lost == 0  # empty interval


def test_extended_sequence_across_the_wrap() -> None:
    stats = StreamStats(1, 90000)
    for seq in [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 4, 5]:
        assert stats.update(seq, 0, 0.0)
    assert stats.extended_highest_seq == 65536 + 5
    assert (stats.expected, stats.received) == (12, 12)
    assert stats.report_block(0.0).highest_seq == 65541
    stats.update(65535, 0, 0.0)  # a late packet from before the wrap
    assert stats.extended_highest_seq == 65541 and stats.received == 13


def test_a_large_jump_is_confirmed_before_it_counts() -> None:
    stats = StreamStats(1, 90000)
    feed(stats, [100, 101])
    assert not stats.update(40000, 0, 5.0)  # a jump: not counted yet
    assert stats.update(102, 0, 5.1)  # back to normal
    assert (stats.expected, stats.received) == (3, 3)
    assert not stats.update(40000, 0, 5.2)
    assert stats.update(40001, 0, 5.3)  # confirmed: the source restarted
    assert (stats.extended_highest_seq, stats.expected, stats.received) == (40001, 1, 1)


def test_jitter_follows_rfc3550_a8() -> None:
    stats = StreamStats(1, 48000)
    stats.update(0, 0, 0.0)
    stats.update(1, 960, 0.020)  # on time: D = 0
    assert stats.jitter == pytest.approx(0.0)
    stats.update(2, 1920, 0.050)  # 10 ms late: D = 480 ticks
    assert stats.jitter == pytest.approx(30.0)
    stats.update(3, 2880, 0.060)  # back on schedule: D = -480
    assert stats.jitter == pytest.approx(30 + (480 - 30) / 16)
    stats.update(1, 960, 0.5)  # a retransmission does not move jitter
    assert stats.jitter == pytest.approx(58.125)
    assert stats.report_block(1.0).jitter == 58


def test_jitter_across_the_timestamp_wrap() -> None:
    stats = StreamStats(1, 90000)
    stats.update(0, 2**32 - 1500, 0.0)
    stats.update(1, 1500, 1 / 30)  # 3000 ticks later in 1/30 s: no jitter
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_lsr_and_dlsr() -> None:
    stats = StreamStats(5, 90000)
    stats.update(1, 0, 10.0)
    block = stats.report_block(10.0)
    assert (block.lsr, block.dlsr) == (0, 0)
    stats.on_sender_report(0x0123456789ABCDEF, 10.0)
    block = stats.report_block(10.5)
    assert (block.lsr, block.dlsr) == (0x456789AB, 32768)
    assert RtcpReceiverReport.parse(bytes(RtcpReceiverReport(7, [block]))).reports == [block]


def test_report_before_any_packet_is_empty() -> None:
    block = StreamStats(5, 90000).report_block(0.0)
    assert block == RtcpReportBlock(5, 0, 0, 0, 0, 0, 0)


# --------------------------------------------------------------------------------------------
# SendCounters


def test_send_counters_and_sender_report() -> None:
    c = SendCounters(clock_rate=90000)
    assert c.sender_report(1, now=0.0, ntp_timestamp=0) is None
    c.on_packet(1000, 3000, 1.0)
    c.on_packet(200, 6000, 1.02)
    c.on_packet(1000, 3000, 1.1)  # a resend with an older timestamp
    assert (c.packet_count, c.octet_count) == (3, 2200)
    assert (c.last_rtp_timestamp, c.last_sent_at) == (6000, 1.02)
    block = RtcpReportBlock(2, 0, 0, 0, 0, 0, 0)
    sr = c.sender_report(0x77, now=1.52, ntp_timestamp=0xAAAA_BBBB_CCCC_DDDD, reports=[block])
    assert sr == RtcpSenderReport(0x77, 0xAAAA_BBBB_CCCC_DDDD, 6000 + 45000, 3, 2200, [block])
    assert RtcpSenderReport.parse(bytes(sr)) == sr


def test_send_counters_wrap() -> None:
    c = SendCounters(clock_rate=8000, packet_count=2**32 - 1, octet_count=2**32 - 10)
    c.on_packet(20, 2**32 - 80, 0.0)
    c.on_packet(20, 80, 0.02)  # the timestamp wrapped forward
    sr = c.sender_report(1, now=0.03, ntp_timestamp=0)
    assert sr is not None
    assert (sr.packet_count, sr.octet_count, sr.rtp_timestamp) == (1, 30, 160)


# ---- NackGenerator ----


def test_nack_generator_reports_gaps_once_and_retries() -> None:
    from sfu.forwarding import NackGenerator

    gen = NackGenerator(retry_interval=0.1, max_retries=3, max_age=1.0)
    assert gen.on_packet(100, 0.0) == []
    assert gen.on_packet(101, 0.01) == []
    assert gen.on_packet(104, 0.02) == [102, 103]
    assert gen.missing == [102, 103]
    assert gen.due(0.05) == []  # too soon to ask again
    assert gen.due(0.13) == [102, 103]
    assert gen.on_packet(102, 0.14) == []  # recovered (retransmission)
    assert gen.recovered == 1
    assert gen.due(0.24) == [103]
    assert gen.due(0.35) == []  # third ask was the last
    assert gen.due(0.50) == []
    assert gen.missing == []


def test_nack_generator_across_the_wrap_and_big_jumps() -> None:
    from sfu.forwarding import NackGenerator

    gen = NackGenerator(max_gap=50)
    gen.on_packet(65534, 0.0)
    assert gen.on_packet(1, 0.01) == [65535, 0]
    assert gen.on_packet(500, 0.02) == []  # a restart, not 498 losses
    assert gen.missing == []


def test_nack_generator_gives_up_on_old_packets() -> None:
    from sfu.forwarding import NackGenerator

    gen = NackGenerator(max_age=0.5, retry_interval=0.1, max_retries=10)
    gen.on_packet(1, 0.0)
    gen.on_packet(3, 0.0)
    assert gen.due(0.2) == [2]
    assert gen.due(0.6) == []
    assert gen.missing == []


def test_bitrate_meter() -> None:
    from sfu.forwarding import BitrateMeter

    meter = BitrateMeter()
    meter.sample(0, 10.0)
    assert meter.bitrate == 0.0
    meter.sample(125_000, 11.0)
    assert meter.bitrate == 1_000_000
    meter.sample(125_000, 11.0)  # no time passed: keep the last figure
    assert meter.bitrate == 1_000_000
    meter.sample(187_500, 12.0)
    assert meter.bitrate == 500_000


def test_downlink_cap_follows_loss_like_googcc() -> None:
    from sfu.forwarding import DownlinkCap

    cap = DownlinkCap(floor=50_000)
    cap.on_report(0, 1_000_000, remb=300_000)
    assert cap.cap is None  # no loss: no cap, and a receive-side REMB alone sets none
    cap.on_report(round(0.2 * 256), 1_000_000)  # 20 % loss once: a burst, maybe
    assert cap.cap is None
    cap.on_report(round(0.2 * 256), 1_000_000)  # and again: congestion
    assert cap.cap is not None and 890_000 <= cap.cap <= 910_000  # (1 - 0.2 / 2) x sent
    cap.on_report(round(0.05 * 256), 900_000)  # 5 %: hold
    assert 890_000 <= cap.cap <= 910_000
    cap.on_report(round(0.3 * 256), 900_000, remb=400_000)  # congested, REMB lower still
    assert cap.cap == 400_000
    for _ in range(5):  # loss gone: +8 % a report
        cap.on_report(0, 400_000)
    assert cap.cap is not None and 580_000 <= cap.cap <= 590_000
    for _ in range(20):
        cap.on_report(0, 400_000)
    assert cap.cap is None  # far above what flows: no longer a constraint
    cap.on_report(255, 60_000)
    cap.on_report(255, 60_000)
    assert cap.cap == 50_000  # never under the floor
