"""sfu.twcc: transport-cc feedback bytes, the recorder's behaviour, the RTP extension reader.

Byte vectors are computed by hand from draft-holmer-rmcat-transport-wide-cc-extensions-01
section 3.1 (layout below) and libwebrtc's chunk choice; each one says how.

     0               1               2               3
    |V=2|P|  FMT=15 |    PT=205     |           length              |  0xAF/0x8F, 0xCD
    |                     SSRC of packet sender                     |
    |                      SSRC of media source                     |
    |      base sequence number     |      packet status count      |
    |                 reference time                | fb pkt. count |
    |  packet chunks (16 bits each) ... | recv deltas (1 or 2 bytes) ... | padding |

Run-length chunk: 0 SS LLLLLLLLLLLLL. 1-bit vector: 1 0 + 14 symbols. 2-bit vector: 1 1 + 7
symbols. Padding as libwebrtc writes it: P bit set, zero bytes, last byte = padding count.
"""

from __future__ import annotations

import random
import struct

import pytest

from sfu import twcc
from sfu.twcc import (
    DELTA_TICK_US,
    MAX_STATUS_COUNT,
    REFERENCE_TICK_US,
    TRANSPORT_CC_URI,
    TransportCcFeedback,
    TransportCcRecorder,
    transport_sequence_number,
)

MS = 1000  # microseconds

PARSE_ERRORS = {
    twcc.TWCC_TOO_SHORT,
    twcc.TWCC_WRONG_VERSION,
    twcc.TWCC_NOT_TRANSPORT_CC,
    twcc.TWCC_TRUNCATED,
    twcc.TWCC_NOT_SINGLE,
    twcc.TWCC_PADDING_INVALID,
    twcc.TWCC_FEEDBACK_TRUNCATED,
    twcc.TWCC_NO_PACKETS,
    twcc.TWCC_RESERVED_SYMBOL,
    twcc.TWCC_TRAILING_BYTES,
}


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def chunks_of(packet: bytes) -> list[int]:
    """The chunk words of a serialized feedback (enough of them to cover the status count)."""
    count = struct.unpack_from("!H", packet, 14)[0]
    words: list[int] = []
    covered = 0
    i = 20
    while covered < count:
        word = struct.unpack_from("!H", packet, i)[0]
        words.append(word)
        covered += len(twcc._decode_chunk(word, count - covered))
        i += 2
    return words


def test_uri_is_the_one_chrome_offers() -> None:
    assert TRANSPORT_CC_URI == (
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
    )


# --------------------------------------------------------------------------------------------
# TransportCcFeedback: hand-computed bytes


def test_single_packet_vector() -> None:
    # base 100, 1 packet received 4 ticks (1 ms) after reference time 1 (64 ms), count 0.
    # Chunk: one symbol 1 -> run-length 0 01 0000000000001 = 0x2001. Delta byte 0x04.
    # 20 + 2 + 1 = 23 bytes -> 1 padding byte (value 1), P set: 24 bytes, length 24/4-1 = 5.
    fb = TransportCcFeedback(0x01020304, 0x0A0B0C0D, 100, 1, 0, [4])
    wire = h("afcd0005 01020304 0a0b0c0d 0064 0001 000001 00 2001 04 01")
    assert bytes(fb) == wire
    assert TransportCcFeedback.parse(wire) == fb


def test_two_bit_vector_with_large_and_negative_deltas() -> None:
    # base 0xFFFE (the run crosses the 16-bit wrap), reference -1 (wire 0xFFFFFF), count 255.
    # Symbols 1 0 2 2 (4, lost, -4, 300): a mixed group of <= 7 ends as a 2-bit vector
    # 11 01 00 10 10 00 00 00 = 0xD280. Deltas 04 | FFFC | 012C. 20 + 2 + 5 = 27 -> pad 1.
    fb = TransportCcFeedback(0x01020304, 0x0A0B0C0D, 0xFFFE, -1, 255, [4, None, -4, 300])
    wire = h("afcd0006 01020304 0a0b0c0d fffe 0004 ffffff ff d280 04 fffc 012c 01")
    assert bytes(fb) == wire
    assert TransportCcFeedback.parse(wire) == fb
    assert fb.arrival_times() == [
        (0xFFFE, -64_000 + 4 * 250),
        (0x0000, -64_000),
        (0x0001, -64_000 + 300 * 250),
    ]


def test_one_bit_vector_then_run_lengths() -> None:
    # 10 received (small), 20 lost, 1 received with delta -1 (negative -> large, 2 bytes).
    # Greedy: the run of ten 1s takes four 0s (still a 14-symbol 1-bit vector:
    # 10 1111111111 0000 = 0xBFF0); the other 16 lost are a run 0 00 0000000010000 = 0x0010;
    # the last symbol 2 is a run of one: 0 10 0000000000001 = 0x4001.
    # Deltas 0A 01*9 FFFF (10 small + 1 large = 12 bytes); 20 + 6 + 12 = 38 -> pad 2, 40 bytes.
    fb = TransportCcFeedback(1, 2, 0, 0, 0, [10, *[1] * 9, *[None] * 20, -1])
    wire = h("afcd0009 00000001 00000002 0000 001f 000000 00 bff0 0010 4001 0a" + "01" * 9)
    wire += h("ffff 0002")
    assert bytes(fb) == wire
    assert TransportCcFeedback.parse(wire) == fb


def test_two_bit_vector_emitted_mid_stream() -> None:
    # Symbols 0 1 0 1 0 1 0 1 then 2: eight 0/1 symbols could still become a 1-bit vector,
    # but a 2 cannot join one, so the first seven go out as a 2-bit vector
    # 11 00 01 00 01 00 01 00 = 0xC444 and "1 2" ends as a 2-bit vector 11 01 10 ... = 0xD800.
    fb = TransportCcFeedback(1, 2, 0, 0, 0, [None, 1, None, 1, None, 1, None, 1, 300])
    wire = h("afcd0007 00000001 00000002 0000 0009 000000 00 c444 d800 01010101 012c 0002")
    assert bytes(fb) == wire
    assert TransportCcFeedback.parse(wire) == fb


def test_draft_chunk_examples_decode() -> None:
    # Draft 3.1.3 example 1: run-length 0x00DD is 221 x "not received".
    wire = h("8fcd0005 00000001 00000002 0007 00dd 000000 05 00dd 0000")
    fb = TransportCcFeedback.parse(wire)
    assert fb.deltas == [None] * 221
    assert (fb.base_sequence_number, fb.feedback_packet_count) == (7, 5)
    # Draft 3.1.4 example 1: 1-bit vector 1 0 01111100011100 = 0x9F1C: 1 lost, 5 received,
    # 3 lost, 3 received, 2 lost (1 = received, as in the example and libwebrtc).
    wire = h("afcd0007 00000001 00000002 0000 000e 000000 00 9f1c 0102030405060708 0002")
    fb = TransportCcFeedback.parse(wire)
    n = None
    assert fb.deltas == [n, 1, 2, 3, 4, 5, n, n, n, 6, 7, 8, n, n]


def test_parse_accepts_zero_padding_without_p_bit() -> None:
    fb = TransportCcFeedback(0x01020304, 0x0A0B0C0D, 100, 1, 0, [4])
    draft_style = h("8fcd0005 01020304 0a0b0c0d 0064 0001 000001 00 2001 04 00")
    assert TransportCcFeedback.parse(draft_style) == fb
    assert TransportCcFeedback.parse(bytearray(draft_style)) == fb


def test_symbols_past_the_status_count_are_ignored() -> None:
    # A 2-bit vector holds 7 symbols; with a status count of 2 the last 5 (even 3s) don't count:
    # 0xD7FF = 11 01 01 11 11 11 11 11. 20 + 2 + 2 = 24 bytes, no padding.
    wire = h("8fcd0005 00000001 00000002 0000 0002 000000 00 d7ff 0102")
    assert TransportCcFeedback.parse(wire).deltas == [1, 2]


def random_feedback(rng: random.Random) -> TransportCcFeedback:
    deltas: list[int | None] = []
    for _ in range(rng.choice([1, 2, 7, 14, 15, 40, 300, 9000])):
        kind = rng.random()
        if kind < 0.3:
            deltas.append(None)
        elif kind < 0.8:
            deltas.append(rng.randrange(256))
        else:
            deltas.append(rng.randrange(-32768, 32768))
    if rng.random() < 0.2:  # long runs
        deltas[rng.randrange(len(deltas)) :] = [rng.choice([None, 7, 700])] * 9000
    return TransportCcFeedback(
        rng.randrange(1 << 32),
        rng.randrange(1 << 32),
        rng.randrange(1 << 16),
        rng.randrange(-(1 << 23), 1 << 23),
        rng.randrange(256),
        deltas,
    )


def test_round_trips() -> None:
    rng = random.Random(1)
    for _ in range(300):
        fb = random_feedback(rng)
        wire = bytes(fb)
        assert len(wire) % 4 == 0
        assert struct.unpack_from("!H", wire, 2)[0] == len(wire) // 4 - 1
        back = TransportCcFeedback.parse(wire)
        assert back == fb
        assert bytes(back) == wire


def test_largest_feedback_round_trips() -> None:
    fb = TransportCcFeedback(1, 2, 3, 4, 5, [-32768, 32767] * (MAX_STATUS_COUNT // 2) + [None])
    assert TransportCcFeedback.parse(bytes(fb)) == fb


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ("afcd00", twcc.TWCC_TOO_SHORT),
        ("6fcd0005 01020304 0a0b0c0d 0064 0001 000001 00 2001 04 01", twcc.TWCC_WRONG_VERSION),
        ("afce0005 01020304 0a0b0c0d 0064 0001 000001 00 2001 04 01", twcc.TWCC_NOT_TRANSPORT_CC),
        ("a1cd0005 01020304 0a0b0c0d 0064 0001 000001 00 2001 04 01", twcc.TWCC_NOT_TRANSPORT_CC),
        ("afcd0006 01020304 0a0b0c0d 0064 0001 000001 00 2001 04 01", twcc.TWCC_TRUNCATED),
        ("afcd0005 01020304 0a0b0c0d 0064 0001 000001 00 2001 04 01 81c9", twcc.TWCC_NOT_SINGLE),
        ("afcd0005 01020304 0a0b0c0d 0064 0001 000001 00 2001 04 00", twcc.TWCC_PADDING_INVALID),
        ("afcd0005 01020304 0a0b0c0d 0064 0001 000001 00 2001 04 15", twcc.TWCC_PADDING_INVALID),
        ("8fcd0004 01020304 0a0b0c0d 0064 0001 000001 00", twcc.TWCC_FEEDBACK_TRUNCATED),
        ("8fcd0005 01020304 0a0b0c0d 0064 0000 000001 00 2001 0400", twcc.TWCC_NO_PACKETS),
        # 20 statuses but the only chunk covers 1 and nothing follows.
        ("afcd0005 01020304 0a0b0c0d 0064 0014 000001 00 2001 04 01", twcc.TWCC_FEEDBACK_TRUNCATED),
        # Two received packets (run of 2) and only one delta byte.
        ("afcd0005 01020304 0a0b0c0d 0064 0002 000001 00 2002 04 01", twcc.TWCC_FEEDBACK_TRUNCATED),
        # A large delta needs 2 bytes; only 1 is there.
        ("afcd0005 01020304 0a0b0c0d 0064 0001 000001 00 4001 04 01", twcc.TWCC_FEEDBACK_TRUNCATED),
        ("afcd0005 01020304 0a0b0c0d 0064 0001 000001 00 6001 04 01", twcc.TWCC_RESERVED_SYMBOL),
        ("8fcd0006 01020304 0a0b0c0d 0064 0001 000001 00 2001 04 00 00000000",
         twcc.TWCC_TRAILING_BYTES),
    ],
)
def test_parse_errors(wire: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        TransportCcFeedback.parse(h(wire))
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((1 << 32, 0, 0, 0, 0, [1]), twcc.TWCC_SSRC_RANGE),
        ((0, -1, 0, 0, 0, [1]), twcc.TWCC_SSRC_RANGE),
        ((0, 0, 1 << 16, 0, 0, [1]), twcc.TWCC_BASE_RANGE),
        ((0, 0, 0, 1 << 23, 0, [1]), twcc.TWCC_REFERENCE_RANGE),
        ((0, 0, 0, -(1 << 23) - 1, 0, [1]), twcc.TWCC_REFERENCE_RANGE),
        ((0, 0, 0, 0, 256, [1]), twcc.TWCC_COUNT_RANGE),
        ((0, 0, 0, 0, 0, []), twcc.TWCC_STATUS_COUNT_RANGE),
        ((0, 0, 0, 0, 0, [None] * 65536), twcc.TWCC_STATUS_COUNT_RANGE),
        ((0, 0, 0, 0, 0, [32768]), twcc.TWCC_DELTA_RANGE),
        ((0, 0, 0, 0, 0, [None, -32769]), twcc.TWCC_DELTA_RANGE),
    ],
)
def test_serialize_errors(fields: tuple[int, int, int, int, int, list[int | None]],
                          message: str) -> None:
    with pytest.raises(ValueError) as info:
        bytes(TransportCcFeedback(*fields))
    assert str(info.value) == message


def test_parse_fuzz_raises_only_fixed_value_errors() -> None:
    rng = random.Random(2)
    seeds = [bytes(random_feedback(rng)) for _ in range(20)]
    for k in range(20_000):
        if k % 2:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        else:
            mutated = bytearray(rng.choice(seeds)[: rng.randrange(24, 200)])
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated)
        try:
            fb = TransportCcFeedback.parse(data)
        except ValueError as e:
            assert str(e) in PARSE_ERRORS
        else:
            assert TransportCcFeedback.parse(bytes(fb)) == fb


# --------------------------------------------------------------------------------------------
# TransportCcRecorder


def parsed(recorder: TransportCcRecorder, now_us: int) -> list[TransportCcFeedback]:
    """recorder.feedback() decoded, checking every packet round-trips and fits."""
    out = []
    for wire in recorder.feedback(now_us):
        assert len(wire) <= recorder._max_packet_size
        fb = TransportCcFeedback.parse(wire)
        assert bytes(fb) == wire
        out.append(fb)
    return out


def test_recorder_vector() -> None:
    # Sequence numbers 65534, 65535, (0 lost), 1 arriving at 1.000000 s, 1.001000 s, 1.003300 s.
    # Reference time: floor(1_000_000 / 64_000) = 15 (960 ms). First delta: 40 ms = 160 ticks;
    # then 1 ms = 4 ticks; then 2.3 ms = 9.2 -> 9 ticks. Symbols 1 1 0 1 end as a 2-bit vector
    # 11 01 01 00 01 00 00 00 = 0xD440. 20 + 2 + 3 = 25 bytes -> 3 padding bytes (0 0 3).
    rec = TransportCcRecorder(1, 2)
    rec.on_packet(65534, 1_000_000)
    rec.on_packet(65535, 1_001_000)
    rec.on_packet(1, 1_003_300)
    wire = rec.feedback(1_010_000)
    assert wire == [h("afcd0006 00000001 00000002 fffe 0004 00000f 00 d440 a00409 000003")]
    assert rec.feedback(1_020_000) == []  # nothing new: nothing sent, count unchanged
    assert rec.feedback_packet_count == 1


def test_rounding_does_not_accumulate() -> None:
    # Packets 100 us apart: each delta alone would round to 0 ticks, but deltas are taken
    # against the reconstructed time, so the reported times stay within half a tick.
    rec = TransportCcRecorder(1)
    for k in range(50):
        rec.on_packet(k, 5_000_000 + 100 * k)
    (fb,) = parsed(rec, 6_000_000)
    assert fb.reference_time == 5_000_000 // REFERENCE_TICK_US
    for seq, t in fb.arrival_times():
        assert abs(t - (5_000_000 + 100 * seq)) <= DELTA_TICK_US // 2
    assert fb.deltas[0] == (5_000_000 % REFERENCE_TICK_US) // DELTA_TICK_US  # 8 ms: 32 ticks
    assert set(fb.deltas[1:]) == {0, 1}


def test_sequence_numbers_unwrap_across_16_bits() -> None:
    rec = TransportCcRecorder(1)
    seqs = [(65530 + k) & 0xFFFF for k in range(12)]
    for k, seq in enumerate(seqs[:6]):
        rec.on_packet(seq, k * MS)
    (first,) = parsed(rec, 10 * MS)
    assert (first.base_sequence_number, len(first.deltas)) == (65530, 6)
    for k, seq in enumerate(seqs[6:], start=6):
        rec.on_packet(seq, k * MS)
    (second,) = parsed(rec, 20 * MS)
    assert (second.base_sequence_number, len(second.deltas)) == (0, 6)
    assert None not in second.deltas
    # And in one feedback across the wrap.
    rec = TransportCcRecorder(1)
    for k, seq in enumerate(seqs):
        rec.on_packet(seq, k * MS)
    (fb,) = parsed(rec, 20 * MS)
    assert (fb.base_sequence_number, len(fb.deltas)) == (65530, 12)
    assert [s for s, _t in fb.arrival_times()] == seqs


def test_reference_time_wraps_in_24_bits() -> None:
    rec = TransportCcRecorder(1)
    top = (1 << 23) - 1  # the largest positive reference time
    t1 = top * REFERENCE_TICK_US + 100
    rec.on_packet(1, t1)
    rec.on_packet(2, t1 + 63 * MS)  # 252 ticks later, same reference time
    (a,) = parsed(rec, t1 + 63 * MS)
    assert (a.reference_time, a.deltas) == (top, [0, 252])
    rec.on_packet(3, t1 + 64 * MS)  # the next 64 ms unit: 2**23, which is -2**23 in 24 bits
    (b,) = parsed(rec, t1 + 65 * MS)
    assert b.reference_time == -(1 << 23)
    assert bytes(b)[16:19] == h("800000")
    rec.on_packet(4, (1 << 24) * REFERENCE_TICK_US + 5)
    (c,) = parsed(rec, (1 << 24) * REFERENCE_TICK_US + MS)
    assert bytes(c)[16:19] == h("000000")
    # Consecutive reference times differ by 1 modulo 2**24, as the receiver unwraps them.
    assert (b.reference_time - a.reference_time) % (1 << 24) == 1


def test_feedback_packet_count_wraps_at_8_bits() -> None:
    rec = TransportCcRecorder(1)
    counts = []
    for k in range(300):
        rec.on_packet(k, k * MS)
        (fb,) = parsed(rec, k * MS)
        counts.append(fb.feedback_packet_count)
    assert counts == [k % 256 for k in range(300)]


def test_out_of_order_within_one_feedback() -> None:
    # 3 arrives before 2: reported in sequence order, 3's delta against 2 is negative (large).
    rec = TransportCcRecorder(1)
    rec.on_packet(1, 1_000 * MS)
    rec.on_packet(3, 1_001 * MS)
    rec.on_packet(2, 1_002 * MS)
    (fb,) = parsed(rec, 1_010 * MS)
    assert fb.base_sequence_number == 1
    assert fb.deltas[1:] == [8, -4]
    assert chunks_of(bytes(fb)) == [0xC000 | 1 << 12 | 1 << 10 | 2 << 8]
    assert dict(fb.arrival_times()) == {1: 1_000 * MS, 2: 1_002 * MS, 3: 1_001 * MS}


def test_late_packet_after_its_loss_was_reported() -> None:
    rec = TransportCcRecorder(1)
    rec.on_packet(1, 1_000 * MS)
    rec.on_packet(3, 1_002 * MS)
    (first,) = parsed(rec, 1_003 * MS)
    assert (first.base_sequence_number, first.deltas[1]) == (1, None)
    rec.on_packet(2, 1_005 * MS)  # late
    (second,) = parsed(rec, 1_006 * MS)
    # The next feedback starts at the late packet; 3 is re-reported received, same time.
    assert second.base_sequence_number == 2
    assert None not in second.deltas
    assert dict(second.arrival_times()) == {2: 1_005 * MS, 3: 1_002 * MS}
    assert parsed(rec, 1_007 * MS) == []


def test_late_packet_among_new_ones() -> None:
    rec = TransportCcRecorder(1)
    for seq in (1, 2, 3):
        rec.on_packet(seq, seq * MS)
    parsed(rec, 4 * MS)
    rec.on_packet(5, 5 * MS)
    rec.on_packet(6, 6 * MS)
    rec.on_packet(4, 7 * MS)
    (fb,) = parsed(rec, 8 * MS)
    assert fb.base_sequence_number == 4
    assert dict(fb.arrival_times()) == {4: 7 * MS, 5: 5 * MS, 6: 6 * MS}


def test_duplicates_keep_the_first_arrival() -> None:
    rec = TransportCcRecorder(1)
    rec.on_packet(1, 10 * MS)
    rec.on_packet(2, 11 * MS)
    rec.on_packet(2, 15 * MS)
    (fb,) = parsed(rec, 20 * MS)
    assert dict(fb.arrival_times()) == {1: 10 * MS, 2: 11 * MS}
    rec.on_packet(2, 21 * MS)  # a duplicate of a reported packet reopens nothing
    assert parsed(rec, 22 * MS) == []
    assert rec.duplicate_packets == 2


def test_loss_pattern_uses_run_lengths_and_a_one_bit_vector() -> None:
    # 0..19 received 1 ms apart, 20..49 lost, 50..63 alternate received/lost, 64 arrives
    # 100 ms after 62 (400 ticks: large). Greedy chunks: run of twenty 1s (0x2014), run of
    # thirty 0s (0x001E), 14 symbols 1 0 1 0 ... 0 as a 1-bit vector (0xAAAA), run of one 2.
    rec = TransportCcRecorder(1)
    t = 1_000 * MS
    for seq in range(20):
        rec.on_packet(seq, t + seq * MS)
    for seq in range(50, 64, 2):
        rec.on_packet(seq, t + seq * MS)
    rec.on_packet(64, t + 162 * MS)
    (fb,) = parsed(rec, t + 200 * MS)
    assert chunks_of(bytes(fb)) == [0x2014, 0x001E, 0xAAAA, 0x4001]
    assert len(fb.deltas) == 65
    assert fb.deltas[64] == 400


def test_loss_pattern_uses_a_two_bit_vector() -> None:
    # 0 received, 1 lost, 2 received 100 ms later (large): 11 01 00 10 ... = 0xD200.
    rec = TransportCcRecorder(1)
    rec.on_packet(0, 0)
    rec.on_packet(2, 100 * MS)
    (fb,) = parsed(rec, 200 * MS)
    assert chunks_of(bytes(fb)) == [0xD200]
    assert fb.deltas == [0, None, 400]


def test_delta_too_large_for_int16_starts_a_new_feedback() -> None:
    rec = TransportCcRecorder(1)
    rec.on_packet(1, 0)
    rec.on_packet(3, 9_000 * MS)  # 36000 ticks > 32767
    first, second = parsed(rec, 9_001 * MS)
    assert (first.base_sequence_number, first.deltas) == (1, [0])
    # The loss before the far packet goes with it; its first delta is against its own
    # reference time: 9 s = 140 * 64 ms + 40 ms, 40 ms = 160 ticks.
    assert second.base_sequence_number == 2
    assert second.deltas == [None, 160]
    assert second.reference_time == 9_000 * MS // REFERENCE_TICK_US
    assert (first.feedback_packet_count, second.feedback_packet_count) == (0, 1)


def test_large_negative_delta_starts_a_new_feedback() -> None:
    rec = TransportCcRecorder(1)
    rec.on_packet(2, 0)
    rec.on_packet(1, 10_000 * MS)  # packet 1 arrived ten seconds after packet 2
    first, second = parsed(rec, 10_001 * MS)
    assert dict(first.arrival_times()) == {1: 10_000 * MS}
    assert dict(second.arrival_times()) == {2: 0}


def test_split_by_packet_size() -> None:
    rec = TransportCcRecorder(1, max_packet_size=64)
    expected = {}
    for seq in range(300):
        if seq % 3 == 2:
            continue
        arrival = seq * 40 * MS if seq % 2 else seq * 40 * MS + 100  # mixes small and large
        rec.on_packet(seq, arrival)
        expected[seq] = arrival
    fbs = parsed(rec, 20_000 * MS)
    assert len(fbs) > 5
    next_base = 0
    seen: dict[int, int] = {}
    for k, fb in enumerate(fbs):
        assert fb.base_sequence_number == next_base
        assert fb.feedback_packet_count == k
        next_base += len(fb.deltas)
        seen.update(fb.arrival_times())
    assert next_base == 299  # 299 itself is one of the lost (299 % 3 == 2)
    assert seen.keys() == expected.keys()
    assert all(abs(seen[s] - expected[s]) <= 125 for s in expected)


def test_split_by_status_count() -> None:
    rec = TransportCcRecorder(1, max_statuses=10)
    for seq in range(25):
        rec.on_packet(seq, seq * MS)
    fbs = parsed(rec, 30 * MS)
    assert [(fb.base_sequence_number, len(fb.deltas)) for fb in fbs] == [(0, 10), (10, 10),
                                                                          (20, 5)]
    # A loss run longer than the limit before the first received packet: the oldest losses
    # are dropped so the feedback still fits.
    rec.on_packet(60, 60 * MS)
    (fb,) = parsed(rec, 61 * MS)
    assert (fb.base_sequence_number, fb.deltas) == (51, [*[None] * 9, 60 * MS % 64_000 // 250])


def test_jump_within_the_window_is_reported_as_loss() -> None:
    rec = TransportCcRecorder(1, window=1024)
    for seq in range(10):
        rec.on_packet(seq, seq * MS)
    parsed(rec, 10 * MS)
    rec.on_packet(1009, 11 * MS)
    (fb,) = parsed(rec, 12 * MS)
    assert (fb.base_sequence_number, len(fb.deltas)) == (10, 1000)
    assert len(bytes(fb)) == 28  # runs: 999 lost + 1 received in 2 chunks
    assert rec.restarts == 0


def test_hostile_forward_jump_starts_afresh() -> None:
    rec = TransportCcRecorder(1, window=1024)
    for seq in range(10):
        rec.on_packet(seq, seq * MS)
    parsed(rec, 10 * MS)
    rec.on_packet(20, 11 * MS)  # unreported when the jump comes: dropped
    rec.on_packet(30_000, 12 * MS)
    rec.on_packet(30_001, 13 * MS)
    (fb,) = parsed(rec, 14 * MS)
    assert (fb.base_sequence_number, len(fb.deltas)) == (30_000, 2)
    assert rec.restarts == 1
    # The old numbering is now far behind: ignored as stale.
    rec.on_packet(11, 15 * MS)
    assert parsed(rec, 16 * MS) == []
    assert rec.stale_packets == 1


def test_sender_restarting_lower_starts_afresh_after_a_run_of_stale_packets() -> None:
    rec = TransportCcRecorder(1, window=1024)
    for seq in range(20_000, 20_010):
        rec.on_packet(seq, 0)
    parsed(rec, MS)
    for k in range(twcc._STALE_RESTART):
        rec.on_packet(100 + k, 2 * MS + k)
    assert rec.restarts == 1
    assert rec.stale_packets == twcc._STALE_RESTART - 1
    rec.on_packet(100 + twcc._STALE_RESTART, 3 * MS)
    (fb,) = parsed(rec, 4 * MS)
    assert (fb.base_sequence_number, len(fb.deltas)) == (100 + twcc._STALE_RESTART - 1, 2)


def test_memory_and_work_stay_bounded_whatever_the_sender_does() -> None:
    rng = random.Random(3)
    rec = TransportCcRecorder(1, window=256)
    tags, arrivals = rec._tags, rec._arrivals
    seq = 0
    t = 0
    for k in range(30_000):
        r = rng.random()
        if r < 0.3:
            seq = rng.randrange(1 << 16)  # anywhere
        elif r < 0.6:
            seq = (seq + rng.randrange(1, 2000)) & 0xFFFF  # jumps around the window size
        else:
            seq = (seq + rng.randrange(-300, 300)) & 0xFFFF
        t += rng.randrange(0, 3 * MS)
        rec.on_packet(seq, t)
        if k % 50 == 0:
            for fb in parsed(rec, t):
                assert 1 <= len(fb.deltas) <= 256
    assert rec._tags is tags and rec._arrivals is arrivals
    assert len(tags) == len(arrivals) == 256
    assert rec.restarts > 0


def test_history_bounds_how_late_a_packet_may_be() -> None:
    rec = TransportCcRecorder(1, history_us=500 * MS)
    rec.on_packet(1, 0)
    rec.on_packet(3, MS)
    parsed(rec, 2 * MS)
    rec.on_packet(2, 400 * MS)  # late but within the history: reported
    (fb,) = parsed(rec, 401 * MS)
    assert fb.base_sequence_number == 2
    rec.on_packet(4, 402 * MS)
    rec.on_packet(6, 403 * MS)
    parsed(rec, 1_000 * MS)  # forgets what arrived before 500 ms
    rec.on_packet(5, 1_001 * MS)  # too late now
    assert parsed(rec, 1_002 * MS) == []
    assert rec.stale_packets == 1


def test_a_loss_is_forgotten_with_the_packet_that_revealed_it() -> None:
    rec = TransportCcRecorder(1, history_us=500 * MS)
    rec.on_packet(1, 0)
    rec.on_packet(3, 600 * MS)  # reveals that 2 is missing, at 600 ms
    parsed(rec, 601 * MS)  # forgets 1 (arrived at 0) but not the loss of 2
    rec.on_packet(2, 602 * MS)
    (fb,) = parsed(rec, 603 * MS)
    assert dict(fb.arrival_times()) == {2: 602 * MS, 3: 600 * MS}
    assert rec.stale_packets == 0


def test_packets_below_the_first_one_are_reported() -> None:
    rec = TransportCcRecorder(1)
    rec.on_packet(5, 10 * MS)
    (first,) = parsed(rec, 11 * MS)
    assert (first.base_sequence_number, len(first.deltas)) == (5, 1)
    rec.on_packet(3, 12 * MS)  # sent before 5, arrived after it (and after a feedback)
    (second,) = parsed(rec, 13 * MS)
    assert second.base_sequence_number == 3
    assert dict(second.arrival_times()) == {3: 12 * MS, 5: 10 * MS}
    assert second.deltas[1] is None


def test_random_stream_invariants() -> None:
    """Loss, jitter-induced reordering and duplicates across the 16-bit wrap: every received
    packet is reported received within half a tick of its arrival, no packet reported received
    is ever reported lost later, every sequence number is covered, counts are consecutive."""
    rng = random.Random(4)
    first_seq = 65_000
    n = 3000
    events: list[tuple[int, int]] = []  # (arrival, index)
    for k in range(n):
        if rng.random() < 0.05:
            continue
        sent = 1_000_000 + k * 2 * MS
        arrival = sent + 20 * MS + int(rng.expovariate(1 / (3 * MS)))
        events.append((arrival, k))
        if rng.random() < 0.01:
            events.append((arrival + rng.randrange(1, 20 * MS), k))
    events.sort()
    first_arrival: dict[int, int] = {}
    rec = TransportCcRecorder(0xABCDEF01, 0x12345678, history_us=10**9)
    reported_received: dict[int, int] = {}
    reported: set[int] = set()
    fbs: list[TransportCcFeedback] = []
    next_flush = events[0][0] + 50 * MS

    def flush(now: int) -> None:
        for fb in parsed(rec, now):
            fbs.append(fb)
            for offset, delta in enumerate(fb.deltas):
                k = (fb.base_sequence_number + offset - first_seq) & 0xFFFF
                reported.add(k)
                if delta is None:
                    assert k not in reported_received, f"{k} reported lost after received"
            for seq, t in fb.arrival_times():
                k = (seq - first_seq) & 0xFFFF
                assert abs(t - first_arrival[k]) <= DELTA_TICK_US // 2
                reported_received[k] = t

    for arrival, k in events:
        while arrival >= next_flush:
            flush(next_flush)
            next_flush += 50 * MS
        first_arrival.setdefault(k, arrival)
        rec.on_packet((first_seq + k) & 0xFFFF, arrival)
    flush(next_flush)
    assert reported_received.keys() == first_arrival.keys()
    assert reported == set(range(max(first_arrival) + 1)) - set(range(min(first_arrival)))
    assert [fb.feedback_packet_count for fb in fbs] == [k % 256 for k in range(len(fbs))]
    assert {(fb.sender_ssrc, fb.media_ssrc) for fb in fbs} == {(0xABCDEF01, 0x12345678)}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sender_ssrc": -1},
        {"media_ssrc": 1 << 32},
        {"window": 15},
        {"window": (1 << 15) + 1},
        {"history_us": -1},
        {"max_packet_size": 63},
        {"max_statuses": 0},
        {"max_statuses": MAX_STATUS_COUNT + 1},
    ],
)
def test_recorder_rejects_bad_settings(kwargs: dict[str, int]) -> None:
    args = {"sender_ssrc": 1} | kwargs
    with pytest.raises(ValueError):
        TransportCcRecorder(**args)


# --------------------------------------------------------------------------------------------
# transport_sequence_number


def rtp(ext: tuple[int, bytes] | None, *, csrcs: int = 0, payload: bytes = b"payload") -> bytes:
    """An RTP packet with an optional (profile, body) header extension block."""
    b0 = 0x80 | csrcs | (0x10 if ext else 0)
    packet = struct.pack("!BBHII", b0, 96, 1234, 5678, 0x11223344)
    packet += b"\x00\x00\x00\x07" * csrcs
    if ext:
        profile, body = ext
        body += bytes(-len(body) % 4)
        packet += struct.pack("!HH", profile, len(body) // 4) + body
    return packet + payload


def one_byte(*elements: tuple[int, bytes], raw: bytes = b"") -> tuple[int, bytes]:
    body = b"".join(bytes([(xid << 4) | (len(v) - 1)]) + v for xid, v in elements)
    return 0xBEDE, body + raw


def two_byte(*elements: tuple[int, bytes], profile: int = 0x1000) -> tuple[int, bytes]:
    return profile, b"".join(bytes([xid, len(v)]) + v for xid, v in elements)


# Chrome-like video packet: abs-send-time (2), transport-cc (3), mid (4).
CHROME = rtp(one_byte((2, b"\x12\x34\x56"), (3, b"\xbe\xef"), (4, b"0")))


def test_one_byte_profile() -> None:
    assert transport_sequence_number(CHROME, 3) == 0xBEEF
    assert transport_sequence_number(bytearray(CHROME), 3) == 0xBEEF
    assert transport_sequence_number(CHROME, 5) is None  # absent
    assert transport_sequence_number(CHROME, 2) is None  # 3 bytes: not a sequence number
    with_csrcs = rtp(one_byte((3, b"\x00\x05")), csrcs=2)
    assert transport_sequence_number(with_csrcs, 3) == 5
    padded = rtp(one_byte((1, b"\x80"), raw=b"\x00\x00\x31\x00\x09"))  # padding bytes, then id 3
    assert transport_sequence_number(padded, 3) == 9
    # transport-wide-cc-02 form: sequence number then a feedback request (4 bytes).
    assert transport_sequence_number(rtp(one_byte((3, b"\x01\x02\x80\x10"))), 3) == 0x0102


def test_two_byte_profile() -> None:
    packet = rtp(two_byte((1, b""), (200, b"\xff\xfe"), (4, b"0")))
    assert transport_sequence_number(packet, 200) == 0xFFFE
    assert transport_sequence_number(packet, 1) is None  # zero-length value
    appbits = rtp(two_byte((3, b"\x00\x07"), profile=0x100F))
    assert transport_sequence_number(appbits, 3) == 7
    padded = rtp((0x1000, b"\x00\x00\x03\x02\x00\x08"))
    assert transport_sequence_number(padded, 3) == 8


def test_absent_or_malformed_is_none() -> None:
    assert transport_sequence_number(rtp(None), 3) is None  # no X bit
    assert transport_sequence_number(b"", 3) is None
    assert transport_sequence_number(CHROME[:15], 3) is None
    wrong_version = bytes([0x50]) + CHROME[1:]
    assert transport_sequence_number(wrong_version, 3) is None
    # Extension length word claims more than the packet has.
    assert transport_sequence_number(CHROME[:20], 3) is None
    # The element's value runs past the extension block.
    truncated = rtp((0xBEDE, b"\x22\x12\x34\x56\x00\x00\x00\x31"))  # id 3 at the end
    assert transport_sequence_number(truncated, 3) is None
    two_truncated = rtp((0x1000, b"\x01\x09\x00\x00\x03\x02\x00\x00"))
    assert transport_sequence_number(two_truncated, 3) is None
    # Id 15 stops processing (RFC 8285 section 4.2): what follows is not looked at.
    stopped = rtp(one_byte((15, b"\x00"), (3, b"\x00\x01")))
    assert transport_sequence_number(stopped, 3) is None
    unknown_profile = rtp((0x1234, b"\x31\x00\x01\x00"))
    assert transport_sequence_number(unknown_profile, 3) is None
    for bad_id in (-1, 0, 15, 256):
        assert transport_sequence_number(CHROME, bad_id) is None


def test_transport_sequence_number_fuzz_never_raises() -> None:
    rng = random.Random(5)
    seeds = [
        CHROME,
        rtp(two_byte((3, b"\x00\x07"), (9, b"abc"))),
        rtp(one_byte((3, b"\x00\x05")), csrcs=3),
    ]
    found = 0
    for k in range(30_000):
        if k % 3 == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(48)))
            if data and k % 2:
                data = bytes([0x90 | (data[0] & 0x2F)]) + data[1:]  # look like RTP with X
        else:
            mutated = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated[: rng.randrange(len(mutated) + 1)])
        ext_id = rng.choice([rng.randrange(-2, 258), 3])
        result = transport_sequence_number(data, ext_id)
        assert result is None or 0 <= result <= 0xFFFF
        found += result is not None
    assert found > 1000  # the mutations keep many packets valid
