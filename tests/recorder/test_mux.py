"""Muxing encoded frames without transcoding (recorder.mux): WebM with VP8 + Opus and Matroska
with H.264 + Opus decode with the right frame counts, duration and A/V alignment; a writer
killed mid-recording leaves a file that plays up to then."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from recorder.mux import (
    OPUS_PRE_SKIP,
    RecordingError,
    RecordingWriter,
    TrackSpec,
    h264_parameter_sets,
    h264_size,
    opus_head,
)

FPS = 30


def encoded_video(codec: str, frames: int, width: int = 320, height: int = 240
                  ) -> list[tuple[bytes, int, bool]]:
    """(frame bytes, pts at 90 kHz, keyframe) as a browser's encoder would send them: VP8
    frames, or H.264 Annex B access units with SPS/PPS before each keyframe."""
    ctx = av.CodecContext.create("libvpx" if codec == "vp8" else "libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"  # type: ignore[attr-defined]
    ctx.time_base = Fraction(1, 90_000)
    ctx.framerate = Fraction(FPS)  # type: ignore[attr-defined]
    ctx.gop_size = 15  # type: ignore[attr-defined]
    if codec == "h264":
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0"}
    rng = np.random.default_rng(3)
    out: list[tuple[bytes, int, bool]] = []
    for i in range(frames):
        picture = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts = i * 90_000 // FPS
        frame.time_base = Fraction(1, 90_000)
        for packet in ctx.encode(frame):  # type: ignore[attr-defined]
            out.append((bytes(packet), int(packet.pts), packet.is_keyframe))
    for packet in ctx.encode(None):  # type: ignore[attr-defined]
        out.append((bytes(packet), int(packet.pts), packet.is_keyframe))
    return out


def encoded_opus(seconds: float) -> list[tuple[bytes, int]]:
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format = 48_000, "stereo", "s16"  # type: ignore[attr-defined]
    ctx.time_base = Fraction(1, 48_000)
    out: list[tuple[bytes, int]] = []
    samples = int(seconds * 48_000)
    tone = (np.sin(np.arange(samples) * 2 * np.pi * 440 / 48_000) * 6000).astype(np.int16)
    for start in range(0, samples - 960 + 1, 960):
        chunk = np.repeat(tone[None, start:start + 960], 2, axis=0).T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="s16",
                                           layout="stereo")
        frame.sample_rate, frame.pts = 48_000, start
        frame.time_base = Fraction(1, 48_000)
        for packet in ctx.encode(frame):  # type: ignore[attr-defined]
            out.append((bytes(packet), int(packet.pts)))
    return out


def record(path: Path, codec: str, video: list[tuple[bytes, int, bool]],
           audio: list[tuple[bytes, int]]) -> RecordingWriter:
    writer = RecordingWriter(path, TrackSpec(codec, 320, 240), TrackSpec("opus"))
    # interleave by time, as the packets arrive
    events = [(pts / 90_000, "v", data, pts, key) for data, pts, key in video]
    events += [(pts / 48_000, "a", data, pts, True) for data, pts in audio]
    for _t, kind, data, pts, key in sorted(events, key=lambda e: (e[0], e[1])):
        if kind == "v":
            writer.write_video(data, pts, key)
        else:
            writer.write_audio(data, pts)
    writer.close()
    return writer


@pytest.mark.parametrize(("codec", "container"), [("vp8", "webm"), ("h264", "matroska")])
def test_a_recording_decodes_with_every_frame_in_sync(tmp_path: Path, codec: str,
                                                      container: str) -> None:
    video = encoded_video(codec, 60)  # 2 s
    audio = encoded_opus(2.0)
    path = tmp_path / f"call.{'webm' if codec == 'vp8' else 'mkv'}"
    writer = record(path, codec, video, audio)
    assert writer.format == container and writer.video_frames == 60
    with av.open(str(path)) as media:
        assert media.format.name.startswith("matroska")
        v, a = media.streams.video[0], media.streams.audio[0]
        assert v.codec_context.name == codec and a.codec_context.name == "opus"
        assert (v.codec_context.width, v.codec_context.height) == (320, 240)
        decoded_video = [f for f in media.decode(v)]
    with av.open(str(path)) as media:
        decoded_audio = list(media.decode(media.streams.audio[0]))
    assert len(decoded_video) == 60
    assert float(decoded_video[-1].time) == pytest.approx(59 / FPS, abs=0.002)
    # audio before the first video keyframe is not recorded (the file starts there): at most
    # the encoder's first packet, whose time lies before 0 (its pre-skip)
    assert writer.audio_frames >= len(audio) - 1
    heard = sum(f.samples for f in decoded_audio)
    assert heard == writer.audio_frames * 960 - OPUS_PRE_SKIP  # all written, less pre-skip
    # audio and video start together (both at 0 in the recording's clock)
    assert abs(float(decoded_video[0].time) - float(decoded_audio[0].time)) < 0.03


def test_video_must_start_on_a_keyframe_and_times_must_rise(tmp_path: Path) -> None:
    video = encoded_video("vp8", 20)
    writer = RecordingWriter(tmp_path / "a.webm", TrackSpec("vp8", 320, 240), TrackSpec("opus"))
    delta = next(v for v in video if not v[2])
    with pytest.raises(RecordingError, match="keyframe"):
        writer.write_video(delta[0], delta[1], False)
    writer.write_audio(b"\xfc\xff\xfe", 960)  # before the first keyframe: not written
    assert writer.audio_frames == 0
    writer.write_video(video[0][0], video[0][1], True)
    with pytest.raises(RecordingError, match="rise"):
        writer.write_video(video[1][0], video[0][1], False)
    writer.close()
    writer.close()  # idempotent


def test_h264_without_parameter_sets_is_refused(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "b.mkv", TrackSpec("h264", 320, 240), None)
    with pytest.raises(RecordingError, match="SPS"):
        writer.write_video(b"\x00\x00\x00\x01\x65\x88\x84", 0, True)  # an IDR slice alone
    assert h264_parameter_sets(b"\x00\x00\x00\x01\x67\x42\x00\x00\x00\x01\x68\xce") is not None
    assert len(opus_head()) == 19 and opus_head().startswith(b"OpusHead")


WRITER_THEN_CRASH = """
import os, sys, pickle
from pathlib import Path
from recorder.mux import RecordingWriter, TrackSpec
frames = pickle.load(sys.stdin.buffer)
w = RecordingWriter(Path(sys.argv[1]), TrackSpec("vp8", 320, 240), None)
for data, pts, key in frames:
    w.write_video(data, pts, key)
os._exit(0)  # dies without closing: no cues, no duration, no final cluster close
"""


def test_a_writer_killed_mid_recording_leaves_a_file_that_plays_up_to_then(tmp_path: Path
                                                                           ) -> None:
    import pickle

    video = encoded_video("vp8", 90)  # 3 s
    path = tmp_path / "crashed.webm"
    subprocess.run([sys.executable, "-c", WRITER_THEN_CRASH, str(path)],
                   input=pickle.dumps(video), check=True, cwd=Path(__file__).parents[2],
                   timeout=60)
    with av.open(str(path)) as media:
        frames = sum(1 for _ in media.decode(video=0))
    assert frames >= 60  # all but, at worst, the last unflushed cluster


@pytest.mark.parametrize(("width", "height"), [(320, 240), (1920, 1080), (360, 640), (176, 144)])
def test_the_sps_gives_the_picture_size(width: int, height: int) -> None:
    keyframe = encoded_video("h264", 1, width, height)[0][0]
    assert h264_size(keyframe) == (width, height)


def test_a_missing_or_broken_sps_gives_no_size() -> None:
    assert h264_size(b"\x00\x00\x00\x01\x65\x88") == (0, 0)  # an IDR slice alone
    assert h264_size(b"\x00\x00\x00\x01\x67\x64") == (0, 0)  # an SPS cut short
