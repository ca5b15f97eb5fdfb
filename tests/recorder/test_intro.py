"""Intro-video uploads (recorder.intro): what is accepted and every kind of bad file refused,
with a stable code, before it is decoded in full."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from core.errors import ErrorCode, NapalmError
from recorder.intro import (
    BAD_DIMENSIONS,
    CORRUPT,
    EMPTY,
    NO_VIDEO,
    NOT_A_VIDEO,
    TOO_LARGE,
    TOO_LONG,
    UNSUPPORTED,
    IntroLimits,
    probe_intro,
)
from tests.recorder.samples import make_video

DEFAULT = IntroLimits()


def refused(path: Path, limits: IntroLimits = DEFAULT) -> tuple[ErrorCode, str]:
    with pytest.raises(NapalmError) as info:
        probe_intro(path, limits)
    return info.value.code, info.value.message


def test_a_webm_from_a_browser_and_an_mp4_from_a_phone_are_accepted(tmp_path: Path) -> None:
    webm = probe_intro(make_video(tmp_path / "a.webm", seconds=1.5))
    assert (webm.container, webm.video_codec, webm.audio_codec) == ("webm", "vp8", "opus")
    assert (webm.width, webm.height) == (320, 240)
    assert webm.duration == pytest.approx(1.5, abs=0.1) and webm.frames == 45
    mp4 = probe_intro(make_video(tmp_path / "b.mp4", container="mp4", codec="libx264",
                                 audio="aac", width=240, height=320))
    assert (mp4.container, mp4.video_codec, mp4.audio_codec) == ("mp4", "h264", "aac")
    assert (mp4.width, mp4.height) == (240, 320)
    silent = probe_intro(make_video(tmp_path / "c.webm", audio=None, codec="libvpx-vp9"))
    assert silent.audio_codec is None and silent.video_codec == "vp9"


def test_the_name_does_not_matter_only_the_bytes(tmp_path: Path) -> None:
    mp4_named_webm = make_video(tmp_path / "x.mp4", container="mp4", codec="libx264",
                                audio="aac").rename(tmp_path / "x.webm")
    assert probe_intro(mp4_named_webm).container == "mp4"
    png = tmp_path / "holiday.mp4"
    Image.new("RGB", (640, 480), "red").save(png, format="PNG")
    assert refused(png) == (ErrorCode.UNSUPPORTED_MEDIA_TYPE, UNSUPPORTED)


def test_empty_and_oversized_uploads_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    assert refused(empty) == (ErrorCode.INVALID_ARGUMENT, EMPTY)
    clip = make_video(tmp_path / "clip.webm")
    limit = IntroLimits(max_bytes=clip.stat().st_size - 1)
    assert refused(clip, limit) == (ErrorCode.PAYLOAD_TOO_LARGE, TOO_LARGE)


def test_corrupt_and_truncated_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.webm"
    garbage.write_bytes(b"\x1a\x45\xdf\xa3" + os.urandom(4000))  # EBML magic, then noise
    assert refused(garbage) == (ErrorCode.INVALID_ARGUMENT, CORRUPT)
    fake_mp4 = tmp_path / "fake.mp4"
    fake_mp4.write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(4000))
    assert refused(fake_mp4) == (ErrorCode.INVALID_ARGUMENT, CORRUPT)
    # cut in half: an MP4 whose index (moov) is at the end has none left; one whose index is
    # first lists frames the file no longer holds
    for faststart in (False, True):
        whole = make_video(tmp_path / f"whole{faststart}.mov", container="mov",
                           codec="libx264", audio="aac", faststart=faststart)
        data = whole.read_bytes()
        cut = tmp_path / f"cut{faststart}.mov"
        cut.write_bytes(data[: len(data) // 2])
        assert sniff_ok(cut)
        assert refused(cut) == (ErrorCode.INVALID_ARGUMENT, CORRUPT), faststart


def sniff_ok(path: Path) -> bool:
    from recorder.intro import sniff_container

    return sniff_container(path.read_bytes()[:16]) is not None


def test_audio_only_and_still_images_are_not_videos(tmp_path: Path) -> None:
    audio_only = make_video(tmp_path / "voice.webm", video=False)
    assert refused(audio_only) == (ErrorCode.INVALID_ARGUMENT, NO_VIDEO)
    # a single picture in an MP4 (MJPEG): an image dressed as a video
    still = make_video(tmp_path / "still.mov", container="mov", codec="mjpeg", audio=None,
                       seconds=1 / 30, fps=30)
    assert refused(still) == (ErrorCode.INVALID_ARGUMENT, NOT_A_VIDEO)
    one_frame = make_video(tmp_path / "one.webm", audio=None, seconds=1 / 30)
    assert refused(one_frame) == (ErrorCode.INVALID_ARGUMENT, NOT_A_VIDEO)


def test_too_long_is_refused_without_decoding_it(tmp_path: Path) -> None:
    # 64x64 at 4 fps: cheap to make, 61 s long
    long_clip = make_video(tmp_path / "long.webm", width=64, height=64, fps=4, seconds=61,
                           audio=None)
    assert refused(long_clip) == (ErrorCode.INVALID_ARGUMENT, TOO_LONG)
    assert probe_intro(long_clip, IntroLimits(max_seconds=90)).duration == pytest.approx(61,
                                                                                       abs=0.5)


def test_a_frame_count_bomb_is_refused_while_scanning(tmp_path: Path) -> None:
    # 0.2 s at 1000 frames a second: short, but more packets than half a second could hold at
    # the highest frame rate we take
    bomb = make_video(tmp_path / "bomb.webm", width=64, height=64, fps=1000, seconds=0.2,
                      audio=None)
    assert refused(bomb, IntroLimits(max_seconds=0.5)) == (ErrorCode.INVALID_ARGUMENT, TOO_LONG)


def test_a_huge_picture_is_refused_from_the_header(tmp_path: Path) -> None:
    # one 4800 x 4800 frame of noise-free black compresses to a few kilobytes
    import av
    import numpy as np

    bomb = tmp_path / "bomb.mp4"
    with av.open(str(bomb), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=1)
        stream.width = stream.height = 4800
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.zeros((4800, 4800, 3), np.uint8),
                                               format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert bomb.stat().st_size < 200_000
    assert refused(bomb) == (ErrorCode.INVALID_ARGUMENT, BAD_DIMENSIONS)
    tiny = make_video(tmp_path / "tiny.webm", width=32, height=32, audio=None)
    assert refused(tiny) == (ErrorCode.INVALID_ARGUMENT, BAD_DIMENSIONS)


def test_an_image_file_renamed_is_unsupported(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), "blue").save(buf, format="JPEG")
    jpeg = tmp_path / "me.webm"
    jpeg.write_bytes(buf.getvalue())
    assert refused(jpeg) == (ErrorCode.UNSUPPORTED_MEDIA_TYPE, UNSUPPORTED)
