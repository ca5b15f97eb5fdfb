"""The pure parts of the load tester: scenarios, counting without decoding, report numbers."""

from __future__ import annotations

import math

import pytest

from loadtest.counting import (
    PacketCounter,
    h264_frame_start,
    report_blocks,
    rtp_payload_offset,
    vp8_frame_start,
)
from loadtest.report import percentile, summary
from loadtest.runner import parse_prometheus
from loadtest.scenario import PRESETS, ScenarioError, build


def rtp(seq: int, ts: int, payload: bytes, *, pt: int = 96, marker: bool = False,
        ssrc: int = 1234, extension: bytes = b"") -> bytes:
    first = 0x80 | (0x10 if extension else 0)
    header = bytes([first, pt | (0x80 if marker else 0)]) + seq.to_bytes(2, "big") + \
        ts.to_bytes(4, "big") + ssrc.to_bytes(4, "big")
    if extension:
        header += b"\xbe\xde" + (len(extension) // 4).to_bytes(2, "big") + extension
    return header + payload


def test_presets_are_valid_and_overrides_apply() -> None:
    for name in PRESETS:
        assert build(name).name == name
    assert build("churn", users=6).users == 6
    with pytest.raises(ScenarioError, match="unknown preset 'x'"):
        build("x")
    with pytest.raises(ScenarioError, match="--ramp must be a positive rate"):
        build("smoke", ramp_per_s=0.0)
    with pytest.raises(ScenarioError, match="--call-seconds must be positive"):
        build("smoke", call_seconds=math.inf)
    assert build("idle", users=1).users == 1  # idle needs no partner


def test_vp8_descriptor_tells_frame_starts_and_keyframes() -> None:
    assert vp8_frame_start(bytes([0x10, 0x00])) == (True, True)  # S, PID 0, P clear
    assert vp8_frame_start(bytes([0x10, 0x01])) == (True, False)  # inter frame
    assert vp8_frame_start(bytes([0x00, 0x00])) == (False, False)  # continuation
    # X, I with a 15-bit picture id, then the payload header
    assert vp8_frame_start(bytes([0x90, 0x80, 0x81, 0x23, 0x00])) == (True, True)
    assert vp8_frame_start(b"") is None


def test_h264_nal_types_tell_keyframes() -> None:
    assert h264_frame_start(bytes([0x65])) == (True, True)  # IDR
    assert h264_frame_start(bytes([0x41])) == (True, False)  # non-IDR slice
    assert h264_frame_start(bytes([0x7C, 0x85])) == (True, True)  # FU-A start of an IDR
    assert h264_frame_start(bytes([0x7C, 0x05])) == (False, False)  # FU-A middle
    stap = bytes([0x78, 0x00, 0x01, 0x67, 0x00, 0x01, 0x68])  # STAP-A: SPS, PPS
    assert h264_frame_start(stap) == (True, True)


def test_payload_offset_skips_the_header_extension() -> None:
    packet = rtp(1, 0, b"\x10\x00", extension=b"\x10\xff\x00\x00")
    assert rtp_payload_offset(packet) == 20
    assert packet[20:] == b"\x10\x00"


def counter() -> PacketCounter:
    c = PacketCounter()
    c._payload_types = {96: ("video", False), 111: ("audio", False)}
    c._codecs = {96: ("vp8", 90_000), 111: ("opus", 48_000)}
    return c


def test_the_first_complete_keyframe_is_found_and_loss_counted() -> None:
    c = counter()
    c.on_received(rtp(10, 3000, b"\x10\x01", marker=True), now=1.0)  # an inter frame
    c.on_received(rtp(11, 6000, b"\x10\x00"), now=1.1)  # a keyframe, first packet
    c.on_received(rtp(13, 6000, b"\x00\x00", marker=True), now=1.2)  # 12 is missing
    assert c.first_keyframe_at() is None
    c.on_received(rtp(14, 9000, b"\x10\x00"), now=1.3)
    c.on_received(rtp(15, 9000, b"\x00\x00"), now=1.35)
    c.on_received(rtp(16, 9000, b"\x00\x00", marker=True), now=1.4)
    assert c.first_keyframe_at() == 1.4
    (video,) = c.streams()
    assert (video.packets, video.expected, video.frames) == (6, 7, 3)
    assert video.loss_pct == pytest.approx(100 / 7)
    assert video.seconds == pytest.approx(0.4)


def test_jitter_follows_rfc_3550_for_a_steady_stream() -> None:
    c = counter()
    for i in range(50):  # 20 ms frames arriving exactly on time: no jitter
        c.on_received(rtp(i, i * 960, b"x", pt=111), now=10 + i * 0.02)
    (audio,) = c.streams()
    assert audio.jitter_ms == pytest.approx(0.0, abs=1e-6)
    assert audio.fps == pytest.approx(50.0)


def test_rtt_comes_from_report_blocks_about_our_sender_reports() -> None:
    c = counter()
    ntp = (0x0123456789ABCDEF).to_bytes(8, "big")
    sender_report = bytes([0x80, 200, 0, 6]) + (1).to_bytes(4, "big") + ntp + bytes(12)
    c.on_sent(sender_report)
    sent_at = c._sent_srs[0x456789AB]
    block = (1).to_bytes(4, "big") + bytes(12) + (0x456789AB).to_bytes(4, "big") + \
        (65536 // 100).to_bytes(4, "big")  # the SFU held it 10 ms
    receiver_report = bytes([0x81, 201, 0, 7]) + (2).to_bytes(4, "big") + block
    assert report_blocks(receiver_report) == [(1, 0x456789AB, 655)]
    c.on_rtcp(receiver_report, now=sent_at + 0.035)
    assert c.rtt_ms == [pytest.approx(25.0, abs=0.1)]


def test_percentiles_and_summaries() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert math.isnan(percentile([], 0.5))
    block = summary([5.0, 1.0, 3.0])
    assert block["count"] == 3 and block["p50_ms"] == 3.0 and block["max_ms"] == 5.0
    assert summary([])["p95_ms"] is None


def test_prometheus_text_is_read_for_process_figures() -> None:
    text = ("# HELP process_cpu_seconds_total x\nprocess_cpu_seconds_total 12.5\n"
            'napalmsky_http_requests_total{route="/"} 3\nprocess_open_fds 17.0\n')
    assert parse_prometheus(text) == {"process_cpu_seconds_total": 12.5,
                                      "process_open_fds": 17.0}
