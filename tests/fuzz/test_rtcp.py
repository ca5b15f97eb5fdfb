"""RTCP parsing and serialization (sfu/rtp.py, sfu/twcc.py), property-based.

- Whatever the bytes, `parse_rtcp` and `TransportCcFeedback.parse` raise ValueError with one of
  the fixed messages, and `iter_rtcp` (what the transport runs) never raises and agrees with
  `parse_rtcp` on what both accept.
- Packets round-trip: parse(bytes(p)) == p, compound packets included; what parses re-encodes
  to something that parses the same.
- The transport-cc recorder only ever writes feedback that fits, parses, and reports as
  received exactly packets that arrived, at the times they arrived (to the 250 us tick).
"""

from __future__ import annotations

import struct

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sfu import rtp, twcc
from sfu.rtp import (
    RtcpFir,
    RtcpNack,
    RtcpOther,
    RtcpPacket,
    RtcpPli,
    RtcpReceiverReport,
    RtcpRemb,
    RtcpReportBlock,
    RtcpSenderReport,
    iter_rtcp,
    parse_rtcp,
)
from sfu.twcc import TransportCcFeedback, TransportCcRecorder
from tests.fuzz.strategies import damaged, raw_packets, u8, u16, u32

fuzz = settings.get_profile("napalmsky-fuzz")

RTCP_MESSAGES = {
    rtp.RTCP_TOO_SHORT,
    rtp.RTCP_WRONG_VERSION,
    rtp.RTCP_TRUNCATED,
    rtp.RTCP_PADDING_INVALID,
    rtp.RTCP_SR_TRUNCATED,
    rtp.RTCP_RR_TRUNCATED,
    rtp.RTCP_FEEDBACK_TRUNCATED,
    rtp.RTCP_NACK_TRUNCATED,
    rtp.RTCP_FIR_TRUNCATED,
    rtp.RTCP_REMB_TRUNCATED,
}
TWCC_MESSAGES = {value for name, value in vars(twcc).items() if name.startswith("TWCC_")}

report_blocks = st.builds(
    RtcpReportBlock,
    ssrc=u32, fraction_lost=u8, packets_lost=st.integers(-(1 << 23), (1 << 23) - 1),
    highest_seq=u32, jitter=u32, lsr=u32, dlsr=u32,
)
reports = st.lists(report_blocks, max_size=3)
other_packets = st.builds(
    lambda count, pt, words: RtcpOther(pt, struct.pack("!BBH", 0x80 | count, pt, len(words))
                                       + b"".join(words)),
    st.integers(0, 31),
    st.sampled_from([rtp.RTCP_SDES, rtp.RTCP_BYE, 204, 207]),
    st.lists(st.binary(min_size=4, max_size=4), max_size=4),
)
rtcp_packets: st.SearchStrategy[RtcpPacket] = st.one_of(
    st.builds(RtcpSenderReport, ssrc=u32, ntp_timestamp=st.integers(0, (1 << 64) - 1),
              rtp_timestamp=u32, packet_count=u32, octet_count=u32, reports=reports),
    st.builds(RtcpReceiverReport, ssrc=u32, reports=reports),
    st.builds(RtcpNack, sender_ssrc=u32, media_ssrc=u32, lost=st.lists(u16, max_size=40)),
    st.builds(RtcpPli, sender_ssrc=u32, media_ssrc=u32),
    st.builds(RtcpFir, sender_ssrc=u32, media_ssrc=u32,
              entries=st.lists(st.tuples(u32, u8), max_size=3)),
    st.builds(RtcpRemb, sender_ssrc=u32, bitrate=st.integers(0, (1 << 18) - 1)
              | st.integers(0, ((1 << 18) - 1) << 63), ssrcs=st.lists(u32, max_size=4),
              media_ssrc=u32),
    other_packets,
)
compounds = st.lists(rtcp_packets, min_size=1, max_size=4)
feedbacks = st.builds(
    TransportCcFeedback,
    sender_ssrc=u32, media_ssrc=u32, base_sequence_number=u16,
    reference_time=st.integers(-(1 << 23), (1 << 23) - 1), feedback_packet_count=u8,
    deltas=st.lists(
        st.none() | st.integers(0, 255) | st.integers(-0x8000, 0x7FFF), min_size=1, max_size=60
    ) | st.builds(lambda n, d: [None] * n + [d], st.integers(0, 20000), st.integers(0, 255)),
)


def with_padding(packet: bytes, pad: int) -> bytes:
    """`packet` with RTCP padding of `pad` bytes (a multiple of 4), P bit and length updated."""
    b0, pt, words = struct.unpack_from("!BBH", packet)
    return (struct.pack("!BBH", b0 | 0x20, pt, words + pad // 4) + packet[4:]
            + bytes(pad - 1) + bytes([pad]))


def normal(packet: RtcpPacket) -> object:
    """What a round trip keeps: a NACK's set of lost packets (its pairs are repacked)."""
    if isinstance(packet, RtcpNack):
        return (packet.sender_ssrc, packet.media_ssrc, frozenset(packet.lost))
    return packet


any_rtcp = (
    raw_packets
    | compounds.map(lambda ps: b"".join(bytes(p) for p in ps))
    | damaged(compounds.map(lambda ps: b"".join(bytes(p) for p in ps)))
    | damaged(feedbacks.map(bytes))
)


# --------------------------------------------------------------------------------------------
# Nothing but the documented errors


@fuzz
@given(data=any_rtcp)
@example(data=bytes.fromhex("8fce0004") + bytes(8) + b"REMB" + bytes.fromhex("ff280001"))
@example(data=bytes.fromhex("81c90001") + bytes(4))  # RR announcing a missing block
@example(data=bytes.fromhex("84ce0003") + bytes(12))  # FIR, half an entry
@example(data=bytes.fromhex("80c8ffff") + bytes(4))  # a length past the datagram
@example(data=bytes.fromhex("a0c90002") + bytes(8))  # padding bit, zero padding count
@example(data=bytes.fromhex("a0c90001") + bytes(3) + b"\x08")  # padding eats the header
@example(data=bytes.fromhex("81cd0002") + bytes(8))  # NACK without a single PID/BLP
def test_rtcp_parsing_raises_only_the_fixed_errors(data: bytes) -> None:
    try:
        parsed = parse_rtcp(data)
    except ValueError as exc:
        assert str(exc) in RTCP_MESSAGES, repr(exc)
        parsed = None
    walked = list(iter_rtcp(data))
    if parsed is not None:
        assert walked == parsed
    elif data:
        assert None in walked
    for cls in (RtcpSenderReport, RtcpReceiverReport, RtcpNack, RtcpPli, RtcpFir, RtcpRemb,
                RtcpOther):
        try:
            cls.parse(data)  # type: ignore[attr-defined]
        except ValueError as exc:
            assert str(exc) in RTCP_MESSAGES or str(exc).startswith("RTCP data is not a single")


@fuzz
@given(data=any_rtcp | feedbacks.map(bytes))
@example(data=bytes.fromhex("8fcd0004") + bytes(8) + bytes.fromhex("0000ffff00000000"))
@example(data=bytes.fromhex("afcd0005") + bytes(8) + bytes.fromhex("0000000100000000")
         + bytes.fromhex("20010000"))  # one chunk, the delta eaten by the padding
def test_transport_cc_parsing_raises_only_the_fixed_errors(data: bytes) -> None:
    try:
        fb = TransportCcFeedback.parse(data)
    except ValueError as exc:
        assert str(exc) in TWCC_MESSAGES, repr(exc)
        return
    assert 1 <= len(fb.deltas) <= twcc.MAX_STATUS_COUNT
    assert TransportCcFeedback.parse(bytes(fb)) == fb
    for packet in parse_rtcp(data):  # also a well-formed RTCP packet
        assert isinstance(packet, RtcpOther)


# --------------------------------------------------------------------------------------------
# Round trips


@fuzz
@given(packets=compounds, pad=st.sampled_from([0, 4, 8]))
def test_compound_packets_round_trip(packets: list[RtcpPacket], pad: int) -> None:
    data = b"".join(bytes(p) for p in packets)
    parsed = parse_rtcp(data)
    assert [normal(p) for p in parsed] == [
        normal(RtcpRemb(p.sender_ssrc, RtcpRemb.parse(bytes(p)).bitrate, p.ssrcs, p.media_ssrc))
        if isinstance(p, RtcpRemb) else normal(p)
        for p in packets
    ]
    assert list(iter_rtcp(data)) == parsed
    if pad and not isinstance(packets[-1], RtcpOther):
        padded = data[: -len(bytes(packets[-1]))] + with_padding(bytes(packets[-1]), pad)
        assert [normal(p) for p in parse_rtcp(padded)] == [normal(p) for p in parsed]


@fuzz
@given(bitrate=st.integers(0, ((1 << 18) - 1) << 63))
def test_remb_keeps_the_bitrate_to_its_18_bit_mantissa(bitrate: int) -> None:
    parsed = RtcpRemb.parse(bytes(RtcpRemb(1, bitrate, [2])))
    assert parsed.bitrate <= bitrate
    assert bitrate - parsed.bitrate < max(1, bitrate >> 17)
    assert RtcpRemb.parse(bytes(parsed)).bitrate == parsed.bitrate


@fuzz
@given(data=any_rtcp)
def test_what_parses_reencodes_to_the_same_packets(data: bytes) -> None:
    try:
        parsed = parse_rtcp(data)
    except ValueError:
        return
    again = parse_rtcp(b"".join(bytes(p) for p in parsed))
    assert [normal(p) for p in again] == [normal(p) for p in parsed]


@fuzz
@given(fb=feedbacks)
def test_transport_cc_feedback_round_trips(fb: TransportCcFeedback) -> None:
    data = bytes(fb)
    assert len(data) % 4 == 0
    assert TransportCcFeedback.parse(data) == fb
    assert [type(p) for p in parse_rtcp(data)] == [RtcpOther]


# --------------------------------------------------------------------------------------------
# The transport-cc recorder


@st.composite
def arrivals(draw: st.DrawFn) -> list[tuple[int, int, bool]]:
    """(sequence number, arrival us, build feedback after it): mostly in order, with loss,
    reordering, duplicates, wraparound and now and then a long pause."""
    seq = draw(st.sampled_from([0, 0xFFF0]) | u16)
    now = draw(st.integers(0, 10**9))
    out = []
    for _ in range(draw(st.integers(1, 120))):
        seq = (seq + draw(st.sampled_from([1, 1, 1, 1, 2, 3, 0, -1, -2, 40]))) & 0xFFFF
        now += draw(st.sampled_from([0, 100, 900, 5000, 20000]) | st.integers(0, 10_000_000))
        out.append((seq, now, draw(st.integers(0, 9)) == 0))
    return out


@fuzz
@given(events=arrivals(), max_size=st.sampled_from([64, 100, 1200]),
       max_statuses=st.sampled_from([1, 7, 100, 0xFFFF]))
def test_recorded_feedback_fits_parses_and_tells_the_truth(
    events: list[tuple[int, int, bool]], max_size: int, max_statuses: int
) -> None:
    recorder = TransportCcRecorder(1, 2, window=64, max_packet_size=max_size,
                                   max_statuses=max_statuses)
    first_arrival: dict[int, int] = {}
    for seq, now, flush in [*events, (-1, events[-1][1], True)]:
        if seq >= 0:
            recorder.on_packet(seq, now)
            first_arrival.setdefault(seq, now)
        if not flush:
            continue
        for data in recorder.feedback(now):
            assert len(data) <= max_size and len(data) % 4 == 0
            fb = TransportCcFeedback.parse(data)
            assert len(fb.deltas) <= max_statuses
            times = fb.arrival_times()
            assert times  # every feedback reports a received packet
            for reported_seq, at in times:
                assert reported_seq in first_arrival, "reported a packet that never came"
                # To the nearest tick, rounding errors not accumulating (no wrap this soon).
                assert abs(at - first_arrival[reported_seq]) <= twcc.DELTA_TICK_US // 2
