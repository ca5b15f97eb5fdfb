"""sfu.rtp on hand-built bytes: parsing, rewriting, RTX, keyframes, RTCP round trips."""

from __future__ import annotations

import ast
import re
import struct
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from sfu.rtp import (
    ABS_SEND_TIME_URI,
    AUDIO_LEVEL_URI,
    MID_URI,
    TRANSPORT_CC_URI,
    ExtensionPlan,
    RtcpFir,
    RtcpNack,
    RtcpOther,
    RtcpPli,
    RtcpReceiverReport,
    RtcpRemb,
    RtcpReportBlock,
    RtcpSenderReport,
    RtpHeader,
    abs_send_time_from_ntp,
    abs_send_time_of,
    compact_ntp,
    header_extensions,
    is_h264_keyframe,
    is_rtcp,
    is_vp8_keyframe,
    ntp_time,
    parse_rtcp,
    payload_bounds,
    rewrite,
    unwrap_rtx,
    wrap_rtx,
)


# --------------------------------------------------------------------------------------------
# Packet builders
def raises_exactly(message: str) -> AbstractContextManager[Any]:
    """pytest.raises(ValueError) whose message is exactly `message`."""
    return pytest.raises(ValueError, match=f"^{re.escape(message)}$")



def one_byte(elements: Sequence[tuple[int, bytes]]) -> tuple[int, bytes]:
    body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in elements)
    return 0xBEDE, body + bytes(-len(body) % 4)


def two_byte(elements: Sequence[tuple[int, bytes]], appbits: int = 0) -> tuple[int, bytes]:
    body = b"".join(bytes([i, len(v)]) + v for i, v in elements)
    return 0x1000 | appbits, body + bytes(-len(body) % 4)


def rtp(
    *,
    pt: int = 96,
    marker: bool = False,
    seq: int = 1,
    ts: int = 1000,
    ssrc: int = 0x11223344,
    csrcs: Sequence[int] = (),
    ext: tuple[int, bytes] | None = None,
    payload: bytes = b"",
    padding: int = 0,
) -> bytes:
    b0 = 0x80 | (0x20 if padding else 0) | (0x10 if ext else 0) | len(csrcs)
    out = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    out += b"".join(struct.pack("!I", c) for c in csrcs)
    if ext:
        profile, body = ext
        out += struct.pack("!HH", profile, len(body) // 4) + body
    out += payload
    if padding:
        out += bytes(padding - 1) + bytes([padding])
    return out


VP8_KEY_PAYLOAD = (
    b"\x90\x80\x81\x23"  # X=1 S=1 PID=0; I=1; 15-bit picture id 0x0123
    + b"\x50\x42\x00\x9d\x01\x2a\x80\x02\xe0\x01"  # keyframe header, start code, 640x480
    + bytes(range(64))
)
# Chrome-like video packet: abs-send-time (2), transport-cc (3), mid (4).
VP8_EXT = one_byte([(2, b"\x4a\x6b\x2c"), (3, b"\x01\x5f"), (4, b"0")])
VP8_PACKET = rtp(
    pt=96, marker=True, seq=23481, ts=2863311530, ssrc=0x6E5A2B01, ext=VP8_EXT,
    payload=VP8_KEY_PAYLOAD,
)
# Chrome-like Opus packet: audio level (1), abs-send-time (2), transport-cc (3), mid (4).
OPUS_EXT = one_byte([(1, b"\xb8"), (2, b"\x4a\x6b\x30"), (3, b"\x01\x60"), (4, b"1")])
OPUS_PACKET = rtp(
    pt=111, seq=4711, ts=960 * 300, ssrc=0x0BADCAFE, ext=OPUS_EXT,
    payload=b"\x78" + bytes(range(7, 90)),
)
TWO_BYTE_PACKET = rtp(
    pt=100, seq=7, ts=123, ssrc=9, ext=two_byte([(1, b""), (17, b"video-main"), (2, b"\x01")]),
    payload=b"payload bytes",
)
CSRC_PADDED_PACKET = rtp(
    pt=0, marker=True, seq=65535, ts=0xFFFFFFFF, ssrc=1, csrcs=(0xAAAA0001, 0xBBBB0002),
    payload=b"\xd5" * 160, padding=4,
)
PLAIN_PACKET = rtp(payload=b"x")
SAMPLES = {
    "vp8": VP8_PACKET,
    "opus": OPUS_PACKET,
    "two_byte": TWO_BYTE_PACKET,
    "csrc_padded": CSRC_PADDED_PACKET,
    "plain": PLAIN_PACKET,
}

PUBLISHER = {AUDIO_LEVEL_URI: 1, ABS_SEND_TIME_URI: 2, TRANSPORT_CC_URI: 3, MID_URI: 4}


# --------------------------------------------------------------------------------------------
# Imports


def test_rtp_and_forwarding_use_the_standard_library_only() -> None:
    allowed = {"__future__", "struct", "dataclasses", "enum", "collections", "typing"}
    root = Path(__file__).resolve().parents[2] / "sfu"
    for name in ("rtp.py", "forwarding.py"):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert {a.name.split(".")[0] for a in node.names} <= allowed, name
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module and node.module.split(".")[0] in allowed, name


# --------------------------------------------------------------------------------------------
# Header parsing


def test_parse_chrome_vp8_packet() -> None:
    h = RtpHeader.parse(VP8_PACKET)
    assert (h.marker, h.payload_type, h.sequence_number) == (True, 96, 23481)
    assert (h.timestamp, h.ssrc, h.csrcs) == (2863311530, 0x6E5A2B01, ())
    assert (h.padding, h.extension, h.extension_profile) == (False, True, 0xBEDE)
    assert h.header_length == h.payload_offset == 12 + 4 + 12
    assert (h.payload_length, h.padding_length) == (len(VP8_KEY_PAYLOAD), 0)
    assert header_extensions(VP8_PACKET) == [(2, b"\x4a\x6b\x2c"), (3, b"\x01\x5f"), (4, b"0")]
    assert h.extensions == tuple(header_extensions(VP8_PACKET))
    assert payload_bounds(VP8_PACKET) == (28, len(VP8_PACKET))


def test_parse_opus_packet() -> None:
    h = RtpHeader.parse(OPUS_PACKET)
    assert (h.marker, h.payload_type, h.sequence_number, h.timestamp) == (False, 111, 4711, 288000)
    assert header_extensions(OPUS_PACKET)[0] == (1, b"\xb8")
    assert OPUS_PACKET[h.payload_offset] == 0x78


def test_parse_csrcs_and_padding() -> None:
    h = RtpHeader.parse(CSRC_PADDED_PACKET)
    assert h.csrcs == (0xAAAA0001, 0xBBBB0002) and h.csrc_count == 2
    assert (h.padding, h.padding_length, h.payload_length) == (True, 4, 160)
    assert (h.extension, h.extension_profile, h.header_length) == (False, None, 20)
    assert header_extensions(CSRC_PADDED_PACKET) == []


def test_parse_two_byte_extensions() -> None:
    assert RtpHeader.parse(TWO_BYTE_PACKET).extension_profile == 0x1000
    assert header_extensions(TWO_BYTE_PACKET) == [(1, b""), (17, b"video-main"), (2, b"\x01")]


def test_one_byte_padding_bytes_are_skipped_and_id_15_stops() -> None:
    body = b"\x00\x00\x10\xaa\xf0\x20\xbb\x00"  # pad, pad, id1, id15 (stop), ignored
    packet = rtp(ext=(0xBEDE, body))
    assert header_extensions(packet) == [(1, b"\xaa")]


def test_unknown_extension_profile_has_no_elements() -> None:
    packet = rtp(ext=(0x1234, b"\x01\x02\x03\x04"), payload=b"p")
    assert header_extensions(packet) == []
    assert RtpHeader.parse(packet).extension_profile == 0x1234


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "RTP packet is too short"),
        (VP8_PACKET[:11], "RTP packet is too short"),
        (b"\x40" + VP8_PACKET[1:], "RTP packet has wrong version"),
        (b"\x00" * 12, "RTP packet has wrong version"),
        (rtp(csrcs=(1, 2))[:19], "RTP CSRC list is truncated"),
        (VP8_PACKET[:15], "RTP header extension is truncated"),
        (VP8_PACKET[:27], "RTP header extension is truncated"),
        (rtp(ext=(0xBEDE, b"\x13\xaa\x00\x00")), "RTP header extension is truncated"),
        (rtp(ext=(0x1000, b"\x00\x00\x00\x05")), "RTP header extension is truncated"),
        (rtp(ext=(0x1000, b"\x05\x03\xaa\x00")), "RTP header extension is truncated"),
        (b"\xa0" + rtp(payload=b"ab\x00")[1:], "RTP padding is invalid"),
        (b"\xa0" + rtp(payload=b"ab\x04")[1:], "RTP padding is invalid"),
        (b"\xa0" + rtp()[1:], "RTP padding is invalid"),
    ],
)
def test_malformed_rtp(data: bytes, message: str) -> None:
    with raises_exactly(message):
        RtpHeader.parse(data)
    with raises_exactly(message):
        header_extensions(data)
    with raises_exactly(message):
        forward(data, PLAN, abs_send_time=1)  # a plan that walks the extension elements


def test_fast_path_checks_framing_but_not_extension_elements() -> None:
    # Elements are only read when a plan needs them: a verbatim copy stays verbatim.
    packet = rtp(ext=(0x1000, b"\x05\x03\xaa\x00"))
    assert forward(packet, None)[12:] == packet[12:]
    with raises_exactly("RTP header extension is truncated"):
        forward(VP8_PACKET[:27], None)


def test_padding_may_fill_the_whole_payload() -> None:
    h = RtpHeader.parse(rtp(padding=8))
    assert (h.payload_length, h.padding_length) == (0, 8)


PLAN = ExtensionPlan.build(PUBLISHER, {MID_URI: 1, ABS_SEND_TIME_URI: 5}, mid="v")
RTP_OPERATIONS: dict[str, Callable[[bytes], Any]] = {
    "parse": RtpHeader.parse,
    "extensions": header_extensions,
    "rewrite": lambda d: rewrite(
        d, ssrc=1, payload_type=2, sequence_number=3, timestamp=4, plan=PLAN, abs_send_time=5
    ),
    "rewrite_fast": lambda d: rewrite(
        d, ssrc=1, payload_type=2, sequence_number=3, timestamp=4, plan=None
    ),
    "wrap_rtx": lambda d: wrap_rtx(d, rtx_ssrc=1, rtx_payload_type=97, rtx_sequence_number=2),
    "unwrap_rtx": lambda d: unwrap_rtx(d, ssrc=1, payload_type=96),
}


@pytest.mark.parametrize("operation", sorted(RTP_OPERATIONS))
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_truncation_raises_value_error_or_parses(name: str, operation: str) -> None:
    packet = SAMPLES[name]
    fn = RTP_OPERATIONS[operation]
    for cut in range(len(packet) + 1):
        try:
            fn(packet[:cut])
        except ValueError:
            pass


def test_is_rtcp() -> None:
    assert is_rtcp(b"\x80\xc8") and is_rtcp(b"\x81\xdf\x00\x01")
    assert not is_rtcp(VP8_PACKET) and not is_rtcp(OPUS_PACKET)
    assert not is_rtcp(b"\x80\xbf") and not is_rtcp(b"\x80\xe0") and not is_rtcp(b"\x80")


# --------------------------------------------------------------------------------------------
# Rewrite


def forward(packet: bytes, plan: ExtensionPlan | None, **kwargs: Any) -> bytearray:
    return rewrite(
        packet, ssrc=0xCAFEBABE, payload_type=101, sequence_number=42, timestamp=7_000_000,
        plan=plan, **kwargs,
    )


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_rewrite_without_plan_changes_only_the_fixed_header(name: str) -> None:
    packet = SAMPLES[name]
    out = forward(packet, None)
    assert isinstance(out, bytearray) and len(out) == len(packet)
    assert out[0] == packet[0] and out[12:] == packet[12:]
    before, after = RtpHeader.parse(packet), RtpHeader.parse(out)
    assert after.marker == before.marker
    assert (after.payload_type, after.sequence_number) == (101, 42)
    assert (after.timestamp, after.ssrc) == (7_000_000, 0xCAFEBABE)
    assert after.csrcs == before.csrcs and after.padding_length == before.padding_length


def test_rewrite_keeps_the_marker_bit_both_ways() -> None:
    assert forward(rtp(marker=True, pt=0), None)[1] == 0x80 | 101
    assert forward(rtp(marker=False, pt=127), None)[1] == 101


def test_identity_plan_is_the_fast_path() -> None:
    plan = ExtensionPlan.build(
        {AUDIO_LEVEL_URI: 1, TRANSPORT_CC_URI: 3}, {AUDIO_LEVEL_URI: 1, TRANSPORT_CC_URI: 3}
    )
    assert plan.verbatim
    packet = rtp(ext=one_byte([(1, b"\x90"), (3, b"\x00\x01"), (9, b"?")]), payload=b"opus")
    out = forward(packet, plan)
    # Verbatim: even the element the publisher did not negotiate (id 9) is copied.
    assert out[12:] == packet[12:] and out[0] == packet[0]


def test_plan_verbatim_only_when_abs_send_time_is_not_replaced() -> None:
    same = {ABS_SEND_TIME_URI: 2, TRANSPORT_CC_URI: 3}
    plan = ExtensionPlan.build(same, same)
    assert not plan.verbatim and plan.verbatim_without_abs_send_time
    packet = rtp(ext=one_byte([(2, b"\x01\x02\x03"), (3, b"\x00\x07")]), payload=b"p")
    assert forward(packet, plan)[12:] == packet[12:]
    out = forward(packet, plan, abs_send_time=0xABCDEF)
    assert header_extensions(out) == [(2, b"\xab\xcd\xef"), (3, b"\x00\x07")]


def test_rewrite_remaps_drops_and_replaces_chrome_video_extensions() -> None:
    subscriber = {MID_URI: 1, ABS_SEND_TIME_URI: 9, AUDIO_LEVEL_URI: 2}  # no transport-cc
    plan = ExtensionPlan.build(PUBLISHER, subscriber, mid="video-1")
    assert not plan.verbatim
    out = forward(VP8_PACKET, plan, abs_send_time=0x123456)
    h = RtpHeader.parse(out)
    assert h.extension_profile == 0xBEDE
    assert header_extensions(out) == [(9, b"\x12\x34\x56"), (1, b"video-1")]
    # (1 + 3) + (1 + 7) bytes of elements -> 3 words, no padding needed.
    assert struct.unpack_from("!HH", out, 12) == (0xBEDE, 3)
    assert out[h.payload_offset :] == VP8_KEY_PAYLOAD
    assert (h.marker, h.payload_type, h.sequence_number, h.ssrc) == (True, 101, 42, 0xCAFEBABE)
    assert h.timestamp == 7_000_000


def test_rewrite_keeps_the_publisher_abs_send_time_when_none_is_given() -> None:
    plan = ExtensionPlan.build(PUBLISHER, {ABS_SEND_TIME_URI: 2, MID_URI: 4}, mid="1")
    out = forward(VP8_PACKET, plan)
    assert header_extensions(out) == [(2, b"\x4a\x6b\x2c"), (4, b"1")]


def test_rewrite_drop_list_and_missing_mid() -> None:
    plan = ExtensionPlan.build(PUBLISHER, PUBLISHER, drop={TRANSPORT_CC_URI})
    assert not plan.verbatim
    out = forward(OPUS_PACKET, plan, abs_send_time=1)
    # No subscriber mid: the publisher's mid must not leak through, so it is removed.
    assert header_extensions(out) == [(1, b"\xb8"), (2, b"\x00\x00\x01")]
    assert out[RtpHeader.parse(out).payload_offset :] == OPUS_PACKET[28:]


def test_rewrite_removes_the_block_when_nothing_is_left() -> None:
    plan = ExtensionPlan.build(PUBLISHER, {})
    out = forward(VP8_PACKET, plan)
    h = RtpHeader.parse(out)
    assert not h.extension and out[0] == 0x80
    assert h.header_length == 12 and bytes(out[12:]) == VP8_KEY_PAYLOAD


def test_rewrite_upgrades_to_two_byte_when_a_subscriber_id_needs_it() -> None:
    plan = ExtensionPlan.build(PUBLISHER, {AUDIO_LEVEL_URI: 20, MID_URI: 4}, mid="1")
    out = forward(OPUS_PACKET, plan)
    assert RtpHeader.parse(out).extension_profile == 0x1000
    assert header_extensions(out) == [(20, b"\xb8"), (4, b"1")]


def test_rewrite_keeps_the_two_byte_profile_and_appbits() -> None:
    publisher = {"urn:a": 1, "urn:b": 17, "urn:c": 2}
    packet = rtp(
        ext=two_byte([(1, b""), (17, b"video-main"), (2, b"\x01")], appbits=5), payload=b"xyz",
        padding=3,
    )
    plan = ExtensionPlan.build(publisher, {"urn:a": 3, "urn:b": 4})
    out = forward(packet, plan)
    h = RtpHeader.parse(out)
    assert h.extension_profile == 0x1005
    assert header_extensions(out) == [(3, b""), (4, b"video-main")]
    assert (h.payload_length, h.padding_length) == (3, 3)
    assert bytes(out[-6:]) == b"xyz\x00\x00\x03"


def test_rewrite_drops_an_unknown_profile_and_keeps_csrcs() -> None:
    packet = rtp(csrcs=(5, 6), ext=(0x1234, b"\x01\x02\x03\x04"), payload=b"data")
    out = forward(packet, ExtensionPlan.build({MID_URI: 1}, {MID_URI: 1}, mid="0"))
    assert out[0] == 0x82 and RtpHeader.parse(out).csrcs == (5, 6)
    assert bytes(out[20:]) == b"data"


def test_rewrite_without_extension_ignores_the_plan() -> None:
    plan = ExtensionPlan.build(PUBLISHER, {MID_URI: 1}, mid="x")
    out = forward(CSRC_PADDED_PACKET, plan)
    assert out[12:] == CSRC_PADDED_PACKET[12:]


@pytest.mark.parametrize(
    ("publisher", "subscriber", "mid", "message"),
    [
        ({"urn:a": 0}, {}, None, "publisher header extension id is out of range: urn:a"),
        ({}, {"urn:a": 256}, None, "subscriber header extension id is out of range: urn:a"),
        ({"urn:a": 1, "urn:b": 1}, {}, None, "publisher header extension ids are not unique"),
        ({}, {}, "", "MID must be 1 to 255 bytes"),
        ({}, {}, "m" * 256, "MID must be 1 to 255 bytes"),
    ],
)
def test_plan_validation(
    publisher: dict[str, int], subscriber: dict[str, int], mid: str | None, message: str
) -> None:
    with raises_exactly(message):
        ExtensionPlan.build(publisher, subscriber, mid=mid)


# --------------------------------------------------------------------------------------------
# RTX


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_rtx_round_trip(name: str) -> None:
    packet = SAMPLES[name]
    original = RtpHeader.parse(packet)
    rtx = wrap_rtx(packet, rtx_ssrc=0x5555, rtx_payload_type=97, rtx_sequence_number=900)
    h = RtpHeader.parse(rtx)
    assert (h.ssrc, h.payload_type, h.sequence_number) == (0x5555, 97, 900)
    assert (h.timestamp, h.marker, h.csrcs) == (original.timestamp, original.marker, original.csrcs)
    assert h.payload_length == original.payload_length + 2
    assert struct.unpack_from("!H", rtx, h.payload_offset)[0] == original.sequence_number
    back = unwrap_rtx(rtx, ssrc=original.ssrc, payload_type=original.payload_type)
    assert bytes(back) == packet


def test_unwrap_rtx_needs_the_original_sequence_number() -> None:
    with raises_exactly("RTX packet is too short"):
        unwrap_rtx(rtp(payload=b"\x01"), ssrc=1, payload_type=96)
    with raises_exactly("RTX packet is too short"):
        unwrap_rtx(rtp(payload=b"\x01", padding=4), ssrc=1, payload_type=96)
    out = unwrap_rtx(rtp(payload=b"\x01\x02"), ssrc=1, payload_type=96)
    assert RtpHeader.parse(out).sequence_number == 0x0102 and len(out) == 12


# --------------------------------------------------------------------------------------------
# Keyframes


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (VP8_KEY_PAYLOAD, True),
        (b"\x10\x50\x42\x00\x9d", True),  # no extension byte
        (b"\x90\x80\x23\x50", True),  # 7-bit picture id
        (b"\x90\xc0\x81\x23\x07\x50", True),  # I (15-bit), L
        (b"\x90\xf0\x81\x23\x07\x40\x50", True),  # I, L, T/K
        (b"\x90\x10\x40\x50", True),  # K only
        (b"\x90\x80\x81\x23\x51", False),  # P=1: interframe
        (b"\x10\x31", False),  # interframe without extension
        (b"\x80\x80\x81\x23\x50", False),  # S=0: not the start of a frame
        (b"\x91\x80\x81\x23\x50", False),  # PID=1
        (b"", False),
        (b"\x90", False),
        (b"\x90\x80", False),
        (b"\x90\x80\x81", False),
        (b"\x90\x80\x81\x23", False),
        (b"\x90\xf0\x81\x23\x07", False),
    ],
)
def test_vp8_keyframe(payload: bytes, expected: bool) -> None:
    assert is_vp8_keyframe(payload) is expected


def stap_a(*nals: bytes) -> bytes:
    return b"\x78" + b"".join(struct.pack("!H", len(n)) + n for n in nals)


SPS = b"\x67\x42\xc0\x1f\x8c\x8d\x40"
PPS = b"\x68\xce\x3c\x80"
IDR = b"\x65\x88\x84\x00\x33"
NON_IDR = b"\x41\x9a\x02\x03"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (IDR, True),
        (SPS, True),
        (NON_IDR, False),
        (PPS, False),
        (b"\x06\x05\x10", False),  # SEI
        (stap_a(SPS, PPS, IDR), True),
        (stap_a(PPS, IDR), True),
        (stap_a(NON_IDR, NON_IDR), False),
        (stap_a(SPS, PPS)[:-2], False),  # truncated aggregate
        (stap_a(SPS) + b"\x00", False),  # dangling size byte
        (b"\x78\x00\x00", False),  # zero-size unit
        (b"\x78", False),
        (b"\x7c\x85\x88\x84", True),  # FU-A start of an IDR
        (b"\x7c\x87\x00", True),  # FU-A start of an SPS (unusual but a keyframe)
        (b"\x7c\x05\x88", False),  # FU-A middle fragment
        (b"\x7c\x45\x88", False),  # FU-A end fragment
        (b"\x7c\x81\x9a", False),  # FU-A start of a non-IDR slice
        (b"\x7c", False),
        (b"", False),
    ],
)
def test_h264_keyframe(payload: bytes, expected: bool) -> None:
    assert is_h264_keyframe(payload) is expected


def test_keyframe_detection_never_raises_on_truncation() -> None:
    for payload in (VP8_KEY_PAYLOAD, stap_a(SPS, PPS, IDR), b"\x7c\x85\x88\x84"):
        for cut in range(len(payload) + 1):
            is_vp8_keyframe(payload[:cut])
            is_h264_keyframe(payload[:cut])


# --------------------------------------------------------------------------------------------
# Time


def test_ntp_and_abs_send_time() -> None:
    assert ntp_time(0.5) == (2_208_988_800 << 32) | 0x80000000
    assert ntp_time(1_700_000_000.25) == ((1_700_000_000 + 2_208_988_800) << 32) | 0x40000000
    assert abs_send_time_from_ntp((1 << 32) | (1 << 31)) == 0x60000  # 1.5 s in 6.18
    assert abs_send_time_from_ntp((64 << 32) | (1 << 30)) == 0x10000  # 64 s wraps: 0.25 s
    assert compact_ntp(0x0123456789ABCDEF) == 0x456789AB
    for unix in (0.0, 0.5, 1_700_000_000.25, 1_764_547_200.123456, 2_000_000_000.999):
        assert abs_send_time_of(unix) == abs_send_time_from_ntp(ntp_time(unix))


# --------------------------------------------------------------------------------------------
# RTCP

REPORT = struct.pack(
    "!IIIIII", 0x0BADCAFE, (25 << 24) | 0x000011, 0x0001_5BC9, 37, 0x456789AB, 98304
)
SR = struct.pack("!BBH", 0x81, 200, 12) + struct.pack(
    "!IQIII", 0x6E5A2B01, 0xE9A1B2C3D4E5F607, 2863311530, 1500, 1_234_567
) + REPORT
SR_NO_REPORTS = struct.pack("!BBH", 0x80, 200, 6) + struct.pack("!IQIII", 1, 2, 3, 4, 5)
RR = struct.pack("!BBH", 0x82, 201, 13) + struct.pack("!I", 0x11) + REPORT + REPORT
RR_EMPTY = struct.pack("!BBHI", 0x80, 201, 1, 0x11)
NACK = struct.pack("!BBHII", 0x81, 205, 4, 1, 0x6E5A2B01) + struct.pack(
    "!HHHH", 100, 0x0005, 140, 0
)
PLI = struct.pack("!BBHII", 0x81, 206, 2, 1, 0x6E5A2B01)
FIR = (
    struct.pack("!BBHII", 0x84, 206, 6, 1, 0)
    + struct.pack("!II", 0x6E5A2B01, 7 << 24)
    + struct.pack("!II", 0x0BADCAFE, 200 << 24)
)
REMB = (
    struct.pack("!BBHII", 0x8F, 206, 6, 1, 0)
    + b"REMB"
    + struct.pack("!I", (2 << 24) | (2 << 18) | 250000)
    + struct.pack("!II", 0x6E5A2B01, 0x0BADCAFE)
)
SDES = struct.pack("!BBHI", 0x81, 202, 3, 0x6E5A2B01) + b"\x01\x04abcd\x00\x00"
BYE = struct.pack("!BBHI", 0x81, 203, 1, 0x6E5A2B01)
TRANSPORT_CC = struct.pack("!BBHII", 0x8F, 205, 3, 1, 2) + b"\x00\x01\x00\x00"
AFB_OTHER = struct.pack("!BBHII", 0x8F, 206, 3, 1, 0) + b"GOOG"

ROUND_TRIPS: list[tuple[type[Any], bytes]] = [
    (RtcpSenderReport, SR),
    (RtcpSenderReport, SR_NO_REPORTS),
    (RtcpReceiverReport, RR),
    (RtcpReceiverReport, RR_EMPTY),
    (RtcpNack, NACK),
    (RtcpPli, PLI),
    (RtcpFir, FIR),
    (RtcpRemb, REMB),
    (RtcpOther, SDES),
    (RtcpOther, BYE),
    (RtcpOther, TRANSPORT_CC),
    (RtcpOther, AFB_OTHER),
]


@pytest.mark.parametrize(("cls", "data"), ROUND_TRIPS)
def test_rtcp_round_trip(cls: type[Any], data: bytes) -> None:
    packet = cls.parse(data)
    assert isinstance(packet, cls)
    assert bytes(packet) == data


def test_parse_sender_report() -> None:
    sr = RtcpSenderReport.parse(SR)
    assert (sr.ssrc, sr.ntp_timestamp, sr.rtp_timestamp) == (
        0x6E5A2B01, 0xE9A1B2C3D4E5F607, 2863311530,
    )
    assert (sr.packet_count, sr.octet_count) == (1500, 1_234_567)
    assert sr.reports == [
        RtcpReportBlock(0x0BADCAFE, 25, 17, 0x0001_5BC9, 37, 0x456789AB, 98304)
    ]


def test_report_block_packets_lost_is_signed_24_bit() -> None:
    block = RtcpReportBlock(1, 0, -5, 0, 0, 0, 0)
    assert bytes(block)[4:8] == b"\x00\xff\xff\xfb"
    rr = RtcpReceiverReport.parse(bytes(RtcpReceiverReport(9, [block])))
    assert rr.reports[0].packets_lost == -5
    huge = RtcpReportBlock(1, 255, 1 << 30, 0, 0, 0, 0)
    assert bytes(huge)[4:8] == b"\xff\x7f\xff\xff"
    tiny = RtcpReportBlock(1, 0, -(1 << 30), 0, 0, 0, 0)
    assert bytes(tiny)[4:8] == b"\x00\x80\x00\x00"


def test_parse_nack_expands_pid_and_blp() -> None:
    nack = RtcpNack.parse(NACK)
    assert (nack.sender_ssrc, nack.media_ssrc) == (1, 0x6E5A2B01)
    assert nack.lost == [100, 101, 103, 140]


def test_nack_wraps_around() -> None:
    data = struct.pack("!BBHII", 0x81, 205, 3, 1, 2) + struct.pack("!HH", 65534, 0b11)
    nack = RtcpNack.parse(data)
    assert nack.lost == [65534, 65535, 0]
    assert bytes(nack) == data


def test_nack_serializer_packs_greedily() -> None:
    nack = RtcpNack(1, 2, [10, 11, 26, 27, 40])
    fci = bytes(nack)[12:]
    assert struct.unpack("!HHHH", fci) == (10, 0x8001, 27, 0x1000)
    assert RtcpNack.parse(bytes(nack)).lost == [10, 11, 26, 27, 40]


def test_parse_fir_and_remb() -> None:
    fir = RtcpFir.parse(FIR)
    assert fir.entries == [(0x6E5A2B01, 7), (0x0BADCAFE, 200)]
    remb = RtcpRemb.parse(REMB)
    assert (remb.bitrate, remb.ssrcs) == (1_000_000, [0x6E5A2B01, 0x0BADCAFE])


def test_remb_serializer_truncates_to_the_mantissa() -> None:
    assert RtcpRemb.parse(bytes(RtcpRemb(1, 1_000_003, [5]))).bitrate == 1_000_000
    assert RtcpRemb.parse(bytes(RtcpRemb(1, 200_000))).bitrate == 200_000
    with raises_exactly("REMB bitrate is negative"):
        bytes(RtcpRemb(1, -1))


def test_rtcp_other_exposes_type_and_count() -> None:
    other = RtcpOther.parse(TRANSPORT_CC)
    assert (other.packet_type, other.count) == (205, 15)


def test_compound_packet() -> None:
    compound = SR + SDES + PLI + NACK + REMB + BYE
    packets = parse_rtcp(compound)
    assert [type(p) for p in packets] == [
        RtcpSenderReport, RtcpOther, RtcpPli, RtcpNack, RtcpRemb, RtcpOther,
    ]
    assert b"".join(bytes(p) for p in packets) == compound
    assert parse_rtcp(bytearray(RR)) == [RtcpReceiverReport.parse(RR)]


def test_rtcp_padding_is_honoured() -> None:
    padded = struct.pack("!BBHII", 0xA1, 206, 3, 1, 2) + b"\x00\x00\x00\x04"
    assert parse_rtcp(padded) == [RtcpPli(1, 2)]


def test_single_packet_parse_rejects_the_wrong_type_or_a_compound() -> None:
    with raises_exactly("RTCP data is not a single RtcpPli"):
        RtcpPli.parse(NACK)
    with raises_exactly("RTCP data is not a single RtcpPli"):
        RtcpPli.parse(PLI + PLI)


def test_rtcp_serializer_rejects_too_many_reports() -> None:
    with raises_exactly("RTCP packet has too many items"):
        bytes(RtcpReceiverReport(1, [RtcpReportBlock(1, 0, 0, 0, 0, 0, 0)] * 32))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "RTCP packet is too short"),
        (b"\x80\xc8\x00", "RTCP packet is too short"),
        (PLI + b"\x80\xce", "RTCP packet is too short"),
        (b"\x40" + PLI[1:], "RTCP packet has wrong version"),
        (PLI + b"\x00" + PLI[1:], "RTCP packet has wrong version"),
        (PLI[:-1], "RTCP packet is truncated"),
        (SR[:-4], "RTCP packet is truncated"),
        (struct.pack("!BBHII", 0xA1, 206, 2, 1, 0), "RTCP padding is invalid"),
        (struct.pack("!BBHII", 0xA1, 206, 2, 1, 9), "RTCP padding is invalid"),
        (struct.pack("!BBH", 0x81, 200, 6) + bytes(24), "RTCP sender report is truncated"),
        (struct.pack("!BBH", 0x80, 200, 5) + bytes(20), "RTCP sender report is truncated"),
        (struct.pack("!BBH", 0x81, 201, 1) + bytes(4), "RTCP receiver report is truncated"),
        (struct.pack("!BBH", 0x80, 201, 0), "RTCP receiver report is truncated"),
        (struct.pack("!BBHI", 0x81, 206, 1, 1), "RTCP feedback packet is truncated"),
        (struct.pack("!BBHI", 0x81, 205, 1, 1), "RTCP feedback packet is truncated"),
        (
            struct.pack("!BBHIIHH", 0xA1, 205, 4, 1, 2, 1, 0) + b"\x00\x00\x00\x02",
            "RTCP NACK is truncated",
        ),
        (struct.pack("!BBHIII", 0x84, 206, 3, 1, 0, 2), "RTCP FIR is truncated"),
        (struct.pack("!BBHII", 0x8F, 206, 3, 1, 0) + b"REMB", "RTCP REMB is truncated"),
        (
            struct.pack("!BBHII", 0x8F, 206, 5, 1, 0) + b"REMB" + struct.pack("!II", 2 << 24, 7),
            "RTCP REMB is truncated",
        ),
    ],
)
def test_malformed_rtcp(data: bytes, message: str) -> None:
    with raises_exactly(message):
        parse_rtcp(data)


def test_every_rtcp_truncation_raises_value_error_or_parses() -> None:
    compound = SR + SDES + RR + NACK + PLI + FIR + REMB + BYE
    boundaries = set()
    offset = 0
    for part in (SR, SDES, RR, NACK, PLI, FIR, REMB, BYE):
        offset += len(part)
        boundaries.add(offset)
    for cut in range(len(compound) + 1):
        try:
            packets = parse_rtcp(compound[:cut])
        except ValueError:
            assert cut not in boundaries
        else:
            assert cut in boundaries
            assert b"".join(bytes(p) for p in packets) == compound[:cut]


# ---- in-place patching of one-byte extension blocks ----

SAME_IDS = {AUDIO_LEVEL_URI: 1, ABS_SEND_TIME_URI: 2, MID_URI: 4}


@pytest.mark.parametrize(
    ("elements", "mid", "patched"),
    [
        ([(1, b"\xb8"), (2, b"\x4a\x6b\x30"), (4, b"1")], "7", True),  # same ids and lengths
        ([(2, b"\x4a\x6b\x30"), (4, b"1")], "video", False),  # MID changes length: rebuild
        # id 3 unknown: dropped, as padding in place (RFC 8285 4.2: zero bytes are skipped)
        ([(1, b"\xb8"), (3, b"\x01\x60"), (4, b"1")], "1", True),
        ([(3, b"\x01\x60")], "1", False),  # nothing left: rebuilt without a block
    ],
)
def test_in_place_patch_matches_the_rebuild(
    elements: list[tuple[int, bytes]], mid: str, patched: bool
) -> None:
    plan = ExtensionPlan.build(SAME_IDS, SAME_IDS, mid=mid)
    assert not plan.verbatim  # abs-send-time is replaced: not the verbatim fast path
    packet = rtp(ext=one_byte(elements), payload=b"frame")
    out = forward(packet, plan, abs_send_time=0x123456)
    expected = {1: b"\xb8", 2: b"\x12\x34\x56", 4: mid.encode()}
    assert dict(header_extensions(out)) == {k: v for k, v in expected.items()
                                            if k in dict(elements)}
    assert RtpHeader.parse(out).payload_offset == len(out) - len(b"frame")
    assert out.endswith(b"frame")
    if patched:  # the in-place path leaves the block's length (and the packet's) as it was
        assert len(out) == len(packet)


def test_in_place_patch_renumbers_and_pads() -> None:
    # transport-cc dropped (the subscriber's downlink estimate is its own), ids renumbered
    publisher = {AUDIO_LEVEL_URI: 1, ABS_SEND_TIME_URI: 2, TRANSPORT_CC_URI: 3, MID_URI: 4}
    subscriber = {AUDIO_LEVEL_URI: 5, ABS_SEND_TIME_URI: 6, TRANSPORT_CC_URI: 3, MID_URI: 7}
    plan = ExtensionPlan.build(publisher, subscriber, mid="1", drop=(TRANSPORT_CC_URI,))
    packet = rtp(ext=one_byte([(1, b"\xb8"), (3, b"\x01\x60"), (2, b"\x4a\x6b\x30"),
                               (4, b"0")]), payload=b"frame")
    out = forward(packet, plan, abs_send_time=0x010203)
    assert len(out) == len(packet)  # patched where it lay
    assert header_extensions(out) == [(5, b"\xb8"), (6, b"\x01\x02\x03"), (7, b"1")]
    assert out[12 + 4 + 2 : 12 + 4 + 5] == b"\x00\x00\x00"  # the dropped element, as padding
    wide = ExtensionPlan.build(publisher, {**subscriber, AUDIO_LEVEL_URI: 100}, mid="1")
    rebuilt = forward(packet, wide, abs_send_time=0x010203)  # id 100 needs the two-byte form
    assert dict(header_extensions(rebuilt))[100] == b"\xb8"


def test_in_place_patch_keeps_padding_between_elements() -> None:
    plan = ExtensionPlan.build(SAME_IDS, SAME_IDS, mid="0")
    body = bytes([0x10, 0xB8, 0x00, 0x22, 0x4A, 0x6B, 0x30, 0x40, ord("1")])  # padding byte
    packet = rtp(ext=(0xBEDE, body + bytes(-len(body) % 4)), payload=b"p")
    out = forward(packet, plan, abs_send_time=0xABCDEF)
    assert len(out) == len(packet)
    assert out[12 + 4 + 2] == 0  # the padding byte is still there: patched, not rebuilt
    assert dict(header_extensions(out)) == {1: b"\xb8", 2: b"\xab\xcd\xef", 4: b"0"}
