"""RTP to encoded frames (recorder.depacketize): the RTP comes from aiortc's own VP8, H.264 and
Opus packetizers, and every emitted video frame is checked by decoding it with PyAV."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from fractions import Fraction
from typing import cast

import av
import numpy as np
import pytest
from aiortc.codecs import h264 as aiortc_h264
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload
from aiortc.rtp import RtpPacket
from av.video.codeccontext import VideoCodecContext

from recorder.depacketize import EncodedFrame, FrameAssembler

PT = 96
SSRC = 0x11223344
FPS = 30


def pictures(count: int, width: int, height: int) -> Iterator[av.VideoFrame]:
    """A moving gradient with some noise: enough detail for frames of several packets."""
    rng = np.random.default_rng(7)
    x = np.arange(width, dtype=np.int32)[None, :]
    y = np.arange(height, dtype=np.int32)[:, None]
    for i in range(count):
        pixels = np.empty((height, width, 3), dtype=np.uint8)
        pixels[..., 0] = (x + 4 * i) % 256
        pixels[..., 1] = (y * 2 + 3 * i) % 256
        pixels[..., 2] = rng.integers(0, 255, (height, width), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        frame.time_base = Fraction(1, FPS)
        yield frame


def rtp(payloads: list[bytes], timestamp: int, seq: int, ssrc: int = SSRC) -> list[bytes]:
    """One frame's packets, the marker bit on the last (as RTCRtpSender sets it)."""
    return [
        RtpPacket(payload_type=PT, marker=int(k == len(payloads) - 1), sequence_number=(seq + k)
                  % 65536, timestamp=timestamp % (1 << 32), ssrc=ssrc, payload=payload).serialize()
        for k, payload in enumerate(payloads)
    ]


def vp8_frames(count: int = 30, keyframe_every: int = 10) -> list[tuple[list[bytes], int]]:
    encoder = Vp8Encoder()
    return [encoder.encode(picture, force_keyframe=i % keyframe_every == 0)
            for i, picture in enumerate(pictures(count, 320, 240))]


@pytest.fixture(scope="module")
def vp8_payloads() -> list[tuple[list[bytes], int]]:
    return vp8_frames()


@pytest.fixture(scope="module")
def h264_payloads() -> list[tuple[list[bytes], int]]:
    encoder = H264Encoder()
    return [encoder.encode(picture, force_keyframe=i % 10 == 0)
            for i, picture in enumerate(pictures(20, 640, 480))]


def packetize(frames: list[tuple[list[bytes], int]], *, seq: int = 1000, ts: int = 5000,
              ssrc: int = SSRC) -> list[list[bytes]]:
    """RTP packets of each frame, sequence numbers and timestamps from the given bases."""
    out = []
    for payloads, timestamp in frames:
        out.append(rtp(payloads, ts + timestamp, seq, ssrc))
        seq += len(payloads)
    return out


def run(assembler: FrameAssembler, packets: list[bytes]) -> list[EncodedFrame]:
    frames: list[EncodedFrame] = []
    for packet in packets:
        frames += assembler.push(packet)
    return frames + assembler.flush()


def vp8() -> FrameAssembler:
    return FrameAssembler("vp8", clock_rate=90000, payload_type=PT)


def decodes(codec: str, frames: list[EncodedFrame], size: tuple[int, int]) -> int:
    """How many pictures PyAV decodes from the frames; every one must be of `size`."""
    context = cast(VideoCodecContext, av.CodecContext.create(codec, "r"))
    pictures = 0
    for frame in frames:
        for picture in context.decode(av.Packet(frame.data)):
            assert (picture.width, picture.height) == size
            pictures += 1
    for picture in context.decode(None):
        assert (picture.width, picture.height) == size
        pictures += 1
    return pictures


def raw_vp8(payloads: list[bytes]) -> bytes:
    return b"".join(vp8_depayload(p) for p in payloads)


def flat(frames: list[list[bytes]]) -> list[bytes]:
    return [packet for packets in frames for packet in packets]


# --------------------------------------------------------------------------------------------
# VP8


def test_vp8_in_order_gives_the_encoders_frames(vp8_payloads: list[tuple[list[bytes], int]]
                                                ) -> None:
    assert any(len(p) > 1 for p, _ts in vp8_payloads)  # some frames take several packets
    assembler = vp8()
    frames = run(assembler, flat(packetize(vp8_payloads)))
    assert [f.data for f in frames] == [raw_vp8(p) for p, _ts in vp8_payloads]
    assert [f.timestamp for f in frames] == [5000 + ts for _p, ts in vp8_payloads]
    assert [f.keyframe for f in frames] == [i % 10 == 0 for i in range(30)]
    assert frames[0].sequence_first == 1000 and frames[0].ssrc == SSRC
    assert decodes("vp8", frames, (320, 240)) == 30
    assert assembler.counters.frames == 30
    assert assembler.counters.packets_lost == assembler.counters.duplicates == 0


def test_vp8_reordered_and_duplicated(vp8_payloads: list[tuple[list[bytes], int]]) -> None:
    packets = flat(packetize(vp8_payloads))
    rng = random.Random(3)
    shuffled: list[bytes] = []
    for i in range(0, len(packets), 8):  # shuffled within windows of 8 packets
        window = packets[i : i + 8]
        rng.shuffle(window)
        shuffled += window
    duplicated = [p for packet in shuffled for p in ([packet, packet] if rng.random() < 0.2
                                                      else [packet])]
    assembler = vp8()
    frames = run(assembler, duplicated)
    assert [f.data for f in frames] == [raw_vp8(p) for p, _ts in vp8_payloads]
    assert assembler.counters.duplicates == len(duplicated) - len(packets) > 0
    assert assembler.counters.late == assembler.counters.packets_lost == 0


def test_vp8_loss_drops_until_the_next_keyframe(vp8_payloads: list[tuple[list[bytes], int]]
                                                ) -> None:
    frames_packets = packetize(vp8_payloads)
    victim = next(i for i in range(3, 10) if len(frames_packets[i]) > 1)
    del frames_packets[victim][1]  # one packet of a P-frame
    assembler = vp8()
    frames = run(assembler, flat(frames_packets))
    expected = [i for i in range(30) if not victim <= i < 10]
    assert [f.timestamp for f in frames] == [5000 + vp8_payloads[i][1] for i in expected]
    assert frames[victim].keyframe  # resumes at frame 10
    assert decodes("vp8", frames, (320, 240)) == len(expected)
    counters = assembler.counters
    assert counters.packets_lost == 1 and counters.frames_dropped_incomplete == 1
    assert counters.frames_dropped_waiting_keyframe == 10 - victim - 1


def test_vp8_lost_last_packet_with_the_marker(vp8_payloads: list[tuple[list[bytes], int]]
                                              ) -> None:
    frames_packets = packetize(vp8_payloads)
    victim = next(i for i in range(11, 20) if len(frames_packets[i]) > 1)
    frames_packets[victim].pop()
    frames = run(vp8(), flat(frames_packets))
    assert len(frames) == 30 - (20 - victim)
    assert decodes("vp8", frames, (320, 240)) == len(frames)


def test_vp8_mid_gop_start_waits_for_a_keyframe(vp8_payloads: list[tuple[list[bytes], int]]
                                                ) -> None:
    frames_packets = packetize(vp8_payloads)[4:]
    frames_packets[0] = frames_packets[0][1:]  # and the first packet starts mid-frame
    assembler = vp8()
    frames = run(assembler, flat(frames_packets))
    assert len(frames) == 20 and frames[0].keyframe
    assert frames[0].timestamp == 5000 + vp8_payloads[10][1]
    assert decodes("vp8", frames, (320, 240)) == 20


def test_vp8_keyframe_reordered_at_the_very_start(vp8_payloads: list[tuple[list[bytes], int]]
                                                  ) -> None:
    packets = flat(packetize(vp8_payloads))
    packets[0], packets[1] = packets[1], packets[0]
    frames = run(vp8(), packets)
    assert len(frames) == 30 and frames[0].keyframe


def test_ssrc_change_rebases_timestamps(vp8_payloads: list[tuple[list[bytes], int]]) -> None:
    old = packetize(vp8_payloads[:15], seq=100, ts=1000)
    # The reconnected publisher: random bases, lower than the old ones, a keyframe at 10.
    new = packetize(vp8_payloads, seq=40000, ts=7, ssrc=0xCAFE)[5:]
    assembler = vp8()
    frames = run(assembler, flat(old) + flat(new))
    assert len(frames) == 15 + 20
    stamps = [f.timestamp for f in frames]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    # One frame interval (the last one seen; aiortc's stamps wobble by a tick around 3000).
    assert stamps[15] - stamps[14] == stamps[14] - stamps[13]
    assert abs(stamps[15] - stamps[14] - 3000) <= 1
    assert stamps[16] - stamps[15] == vp8_payloads[11][1] - vp8_payloads[10][1]
    assert frames[15].ssrc == 0xCAFE and frames[15].keyframe
    assert assembler.counters.restarts == 1
    # A straggler of the old source does not switch back.
    assert assembler.push(old[3][0]) == [] and assembler.counters.late == 1
    assert decodes("vp8", frames[15:], (320, 240)) == 20


def test_same_ssrc_sequence_jump_restarts(vp8_payloads: list[tuple[list[bytes], int]]) -> None:
    old = packetize(vp8_payloads[:12], seq=100, ts=1000)
    new = packetize(vp8_payloads[10:], seq=30000, ts=1 << 31)
    assembler = vp8()
    frames = run(assembler, flat(old) + flat(new))
    assert len(frames) == 12 + 20 and assembler.counters.restarts == 1
    stamps = [f.timestamp for f in frames]
    assert all(b > a for a, b in itertools.pairwise(stamps))


def test_sequence_and_timestamp_wrap(vp8_payloads: list[tuple[list[bytes], int]]) -> None:
    packets = flat(packetize(vp8_payloads, seq=65530, ts=(1 << 32) - 20000))
    frames = run(vp8(), packets)
    assert [f.data for f in frames] == [raw_vp8(p) for p, _ts in vp8_payloads]
    assert [f.timestamp for f in frames] == [(1 << 32) - 20000 + ts for _p, ts in vp8_payloads]
    assert frames[-1].timestamp > 1 << 32
    assert frames[-1].sequence_first > 65536


def test_malformed_and_foreign_packets_are_counted(vp8_payloads: list[tuple[list[bytes], int]]
                                                   ) -> None:
    packets = flat(packetize(vp8_payloads))
    good = packets[0]
    version1 = bytes([0x40 | (good[0] & 0x3F)]) + good[1:]
    rtx = RtpPacket(payload_type=97, sequence_number=1, timestamp=5, ssrc=99,
                    payload=b"\x03\xe8" + good[12:]).serialize()
    cut_descriptor = RtpPacket(payload_type=PT, sequence_number=999, timestamp=5000, ssrc=SSRC,
                               payload=b"\x90\x80").serialize()  # X and I set, no PictureID
    bad = [b"", b"\x80", good[:11], version1, b"\x8f" + good[1:40],  # 15 CSRCs: cut
           cut_descriptor]
    padding = RtpPacket(payload_type=PT, sequence_number=1000 + len(packets),
                        timestamp=6000, ssrc=SSRC, payload=b"").serialize()
    padding = bytes([padding[0] | 0x20]) + padding[1:] + bytes(15) + b"\x10"
    assembler = vp8()
    frames = run(assembler, [*bad, rtx, *packets, padding])
    assert len(frames) == 30
    counters = assembler.counters
    assert counters.malformed == len(bad) and counters.packets_lost == 0
    assert counters.ignored == 1 and counters.padding == 1


def test_padding_packets_hold_their_sequence_numbers(
    vp8_payloads: list[tuple[list[bytes], int]],
) -> None:
    probe = RtpPacket(payload_type=PT, sequence_number=0, timestamp=0, ssrc=SSRC).serialize()
    # Renumber: a padding probe after the second frame takes one sequence number.
    packets: list[bytes] = []
    seq = 1000
    for i, (payloads, ts) in enumerate(vp8_payloads[:5]):
        packets += rtp(payloads, 5000 + ts, seq)
        seq += len(payloads)
        if i == 1:
            packets.append(bytes([probe[0] | 0x20, probe[1]]) + seq.to_bytes(2, "big")
                           + (5000 + ts).to_bytes(4, "big") + probe[8:] + bytes(3) + b"\x04")
            seq += 1
    assembler = vp8()
    assert len(run(assembler, packets)) == 5
    assert assembler.counters.packets_lost == 0 and assembler.counters.padding == 1


def test_a_truncated_packet_never_raises(vp8_payloads: list[tuple[list[bytes], int]]) -> None:
    packets = flat(packetize(vp8_payloads[:10]))
    assembler = vp8()
    rng = random.Random(5)
    for packet in packets:
        assembler.push(packet[: rng.randrange(len(packet) + 1)])
        assembler.push(bytes(rng.randrange(256) for _ in range(rng.randrange(40))))
    assembler.flush()


# --------------------------------------------------------------------------------------------
# H.264


def test_h264_stap_a_and_fu_a_decode(h264_payloads: list[tuple[list[bytes], int]]) -> None:
    kinds = {p[0] & 0x1F for payloads, _ts in h264_payloads for p in payloads}
    assert {24, 28} <= kinds  # STAP-A (SPS, PPS) and FU-A fragments
    assembler = FrameAssembler("h264", clock_rate=90000, payload_type=PT)
    frames = run(assembler, flat(packetize(h264_payloads)))
    assert len(frames) == 20
    assert [f.keyframe for f in frames] == [i % 10 == 0 for i in range(20)]
    assert all(f.data.startswith(b"\x00\x00\x00\x01") for f in frames)
    assert decodes("h264", frames, (640, 480)) == 20


def test_h264_small_mtu_loss_and_reordering(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc_h264, "PACKET_MAX", 300)  # more FU-A fragments per frame
    encoder = H264Encoder()
    encoded = [encoder.encode(picture, force_keyframe=i % 6 == 0)
               for i, picture in enumerate(pictures(12, 320, 240))]
    frames_packets = packetize(encoded, seq=65500)
    victim = next(i for i in range(1, 6) if len(frames_packets[i]) > 2)
    del frames_packets[victim][1]
    packets = flat(frames_packets)
    packets[3], packets[5] = packets[5], packets[3]
    assembler = FrameAssembler("h264", clock_rate=90000, payload_type=PT)
    frames = run(assembler, packets)
    assert len(frames) == 12 - (6 - victim)
    assert frames[victim].keyframe
    assert decodes("h264", frames, (320, 240)) == len(frames)


def test_h264_malformed_payloads_are_counted() -> None:
    assembler = FrameAssembler("h264", clock_rate=90000, payload_type=PT)
    bad = [b"\x18\x00\x05\x67", b"\x18\x00\x00", b"\x1c\x85", b"\x1c\xc5\x00", b"\x19\x00",
           b"\x1d\x85\x00", b"\x00"]
    for k, payload in enumerate(bad):
        assembler.push(RtpPacket(payload_type=PT, sequence_number=k, timestamp=0, ssrc=1,
                                 payload=payload).serialize())
    assert assembler.counters.malformed == len(bad)
    assert assembler.flush() == []


# --------------------------------------------------------------------------------------------
# Opus


def test_opus_one_frame_per_packet_and_losses_skipped() -> None:
    encoder = OpusEncoder()
    payloads: list[tuple[bytes, int]] = []
    tone = (np.sin(np.arange(960 * 10) * 2 * np.pi * 440 / 48000) * 8000).astype(np.int16)
    for k in range(10):
        chunk = av.AudioFrame.from_ndarray(tone[None, k * 960 : (k + 1) * 960], format="s16",
                                           layout="mono")
        chunk.sample_rate = 48000
        chunk.pts = k * 960
        chunk.time_base = Fraction(1, 48000)
        encoded, ts = encoder.encode(chunk)
        payloads += [(p, ts) for p in encoded]
    assert len(payloads) >= 8
    packets = [RtpPacket(payload_type=111, sequence_number=(65534 + k) % 65536,
                         timestamp=(ts + 2**32 - 1000) % 2**32, ssrc=7, payload=p).serialize()
               for k, (p, ts) in enumerate(payloads)]
    lost = packets.pop(3)
    packets[5], packets[6] = packets[6], packets[5]
    assembler = FrameAssembler("opus", clock_rate=48000, payload_type=111)
    frames = run(assembler, [*packets, packets[0]])
    expected = [payloads[k] for k in range(len(payloads)) if k != 3]
    assert [f.data for f in frames] == [p for p, _ts in expected]
    assert [f.timestamp for f in frames] == [ts + 2**32 - 1000 for _p, ts in expected]
    assert all(f.keyframe and f.codec == "opus" for f in frames)
    assert assembler.counters.packets_lost == 1 and assembler.counters.duplicates == 1
    assert assembler.push(lost) == [] and assembler.counters.late == 1


def test_opus_gap_waits_for_the_reorder_window() -> None:
    assembler = FrameAssembler("opus", clock_rate=48000, payload_type=111, reorder_window=4)

    def packet(k: int) -> bytes:
        return RtpPacket(payload_type=111, sequence_number=k, timestamp=960 * k, ssrc=7,
                         payload=bytes([k])).serialize()

    assert len(assembler.push(packet(0))) == 1
    assert assembler.push(packet(2)) == []  # 1 may still come
    assert [f.data for f in assembler.push(packet(1))] == [b"\x01", b"\x02"]
    assert assembler.push(packet(4)) == [] and assembler.push(packet(5)) == []
    assert assembler.push(packet(6)) == []
    assert [f.data for f in assembler.push(packet(7))] == [b"\x04", b"\x05", b"\x06", b"\x07"]
    assert assembler.counters.packets_lost == 1


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        FrameAssembler("vp9", clock_rate=90000, payload_type=PT)
    with pytest.raises(ValueError):
        FrameAssembler("vp8", clock_rate=0, payload_type=PT)
    with pytest.raises(ValueError):
        FrameAssembler("vp8", clock_rate=90000, payload_type=128)
