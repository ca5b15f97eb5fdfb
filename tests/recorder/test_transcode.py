"""Intro-video transcoding: every source is generated here with PyAV, tiny and short."""

from __future__ import annotations

import itertools
import math
import struct
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from recorder.transcode import (
    CANCELLED,
    TRANSCODE_FAILED,
    TranscodeError,
    TranscodeLimits,
    TranscodeResult,
    transcode_intro,
)

LIMITS = TranscodeLimits()


def make_source(path: Path, *, fmt: str, vcodec: str, width: int, height: int, fps: int = 30,
                seconds: float = 1.0, audio: tuple[str, int, str] | None = None,
                noise: bool = False, rotation: float | None = None,
                vcodec_options: dict[str, str] | None = None) -> Path:
    """A test video: a white square moving over a gradient (or noise), a red marker in the top
    left corner, and optionally a 440 Hz tone as (codec, sample rate, layout)."""
    rng = np.random.default_rng(7)
    with av.open(str(path), "w", format=fmt) as out:
        video = out.add_stream(vcodec, rate=fps, options=vcodec_options or {})
        video.width, video.height = width, height
        video.pix_fmt = "yuvj420p" if vcodec == "mjpeg" else "yuv420p"
        if rotation is not None:
            video.set_display_rotation(rotation)
        sound = None
        if audio is not None:
            codec, rate, layout = audio
            sound = out.add_stream(codec, rate=rate)
            sound.layout = layout
        base = np.zeros((height, width, 3), np.uint8)
        base[:, :, 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
        side = max(4, height // 8)
        for index in range(round(seconds * fps)):
            if noise:
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            else:
                pixels = base.copy()
                x = (index * 7) % max(1, width - side)
                pixels[height // 3:height // 3 + side, x:x + side] = 255
            pixels[:side, :side] = (255, 0, 0)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            _, rate, layout = audio  # type: ignore[misc]
            channels = 1 if layout == "mono" else 2
            total = round(seconds * rate)
            t = np.arange(total) / rate
            tone = (0.3 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
            for start in range(0, total, 1024):
                chunk = np.tile(tone[start:start + 1024], (channels, 1))
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp",
                                                   layout=layout)
                frame.sample_rate = rate
                frame.pts = start
                frame.time_base = Fraction(1, rate)
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path


def webm_1080p(tmp_path: Path) -> Path:
    return make_source(tmp_path / "in.webm", fmt="webm", vcodec="libvpx-vp9", width=1920,
                       height=1080, seconds=2.0, audio=("libopus", 48_000, "stereo"),
                       vcodec_options={"deadline": "realtime", "cpu-used": "8", "crf": "40",
                                       "b": "0"})


def mp4_small(tmp_path: Path, **kwargs: object) -> Path:
    options: dict[str, object] = {"fmt": "mp4", "vcodec": "libx264", "width": 640,
                                  "height": 360, "audio": ("aac", 48_000, "stereo")}
    options.update(kwargs)
    return make_source(tmp_path / "in.mp4", vcodec_options={"preset": "ultrafast"},
                       **options)  # type: ignore[arg-type]


def run(tmp_path: Path, source: Path, **kwargs: object) -> TranscodeResult:
    return transcode_intro(source, tmp_path / "out.mp4", tmp_path / "poster.jpg",
                           **kwargs)  # type: ignore[arg-type]


def duration_of(path: Path) -> float:
    with av.open(str(path)) as container:
        assert container.duration is not None
        return container.duration / av.time_base


def top_level_boxes(path: Path) -> list[str]:
    data = path.read_bytes()
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8:offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        assert size >= 8
        boxes.append(kind.decode("latin-1"))
        offset += size
    assert offset == len(data)
    return boxes


def check_output(tmp_path: Path, source: Path, result: TranscodeResult, *,
                 audio: bool = True) -> tuple[int, int]:
    out = tmp_path / "out.mp4"
    with av.open(str(out)) as container:
        assert "mp4" in container.format.name
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        assert video.codec_context.pix_fmt == "yuv420p"
        assert video.codec_context.profile in ("High", "Main")
        width, height = video.codec_context.width, video.codec_context.height
        assert width <= LIMITS.max_width and height <= LIMITS.max_height
        assert width % 2 == 0 and height % 2 == 0
        times = [frame.time for frame in container.decode(video)]
        assert all(b > a for a, b in itertools.pairwise(times))
        if audio:
            assert len(container.streams.audio) == 1
            sound = container.streams.audio[0]
            assert sound.codec_context.name == "aac"
            assert sound.codec_context.sample_rate == 48_000
            assert sound.codec_context.channels == 2
        else:
            assert not container.streams.audio
    duration = duration_of(out)
    assert abs(duration - duration_of(source)) <= 0.1
    assert len(times) / duration <= LIMITS.max_fps + 0.5
    assert result == TranscodeResult(duration=result.duration, width=width, height=height,
                                     video_codec="h264", audio_codec="aac" if audio else None,
                                     size=out.stat().st_size, bitrate=result.bitrate)
    assert abs(result.duration - duration) < 0.01
    assert abs(result.bitrate - out.stat().st_size * 8 / duration) < 100
    boxes = top_level_boxes(out)
    assert boxes.index("moov") < boxes.index("mdat")
    with Image.open(tmp_path / "poster.jpg") as poster:
        assert poster.format == "JPEG"
        assert poster.size == (width, height)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [source.name, "out.mp4", "poster.jpg"])
    return width, height


def test_webm_vp9_opus_1080p_becomes_720p_h264_aac(tmp_path: Path) -> None:
    source = webm_1080p(tmp_path)
    values: list[float] = []
    result = run(tmp_path, source, progress=values.append)
    assert check_output(tmp_path, source, result) == (1280, 720)
    assert values[0] == 0.0 and values[-1] == 1.0
    assert values == sorted(values) and len(values) >= 2
    assert all(value <= 0.99 for value in values[:-1])


def test_small_mp4_is_not_upscaled(tmp_path: Path) -> None:
    source = mp4_small(tmp_path)
    result = run(tmp_path, source)
    assert check_output(tmp_path, source, result) == (640, 360)


def test_mono_44100_audio_becomes_48k_stereo(tmp_path: Path) -> None:
    source = mp4_small(tmp_path, width=320, height=240, audio=("aac", 44_100, "mono"))
    result = run(tmp_path, source)
    assert check_output(tmp_path, source, result) == (320, 240)


def test_video_only_source_gives_video_only_mp4(tmp_path: Path) -> None:
    source = make_source(tmp_path / "in.webm", fmt="webm", vcodec="libvpx", width=320,
                         height=180, vcodec_options={"deadline": "realtime", "cpu-used": "8"})
    result = run(tmp_path, source)
    assert check_output(tmp_path, source, result, audio=False) == (320, 180)


def test_60fps_source_is_capped_at_30fps(tmp_path: Path) -> None:
    source = mp4_small(tmp_path, width=320, height=180, fps=60, seconds=1.0)
    result = run(tmp_path, source)
    check_output(tmp_path, source, result)
    with av.open(str(tmp_path / "out.mp4")) as container:
        times = [frame.time for frame in container.decode(video=0)]
    assert 28 <= len(times) <= 30
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1 / 30 - 0.002


def test_portrait_source_fits_720_high(tmp_path: Path) -> None:
    source = mp4_small(tmp_path, width=1080, height=1920, seconds=0.5, audio=None)
    result = run(tmp_path, source)
    width, height = check_output(tmp_path, source, result, audio=False)
    assert height == 720
    assert abs(width / height - 1080 / 1920) / (1080 / 1920) < 0.01


def test_display_rotation_is_applied_to_the_pixels(tmp_path: Path) -> None:
    # A phone held upright: a landscape picture tagged "turn 90 degrees clockwise" (-90).
    source = mp4_small(tmp_path, width=320, height=176, seconds=0.5, audio=None,
                       rotation=-90)
    with av.open(str(source)) as container:
        assert next(container.decode(video=0)).rotation == -90
    result = run(tmp_path, source)
    assert check_output(tmp_path, source, result, audio=False) == (176, 320)
    with av.open(str(tmp_path / "out.mp4")) as container:
        frame = next(container.decode(video=0))
        assert frame.rotation == 0
        pixels = frame.to_ndarray(format="rgb24")
    # Turned clockwise, the red marker of the top left corner is now in the top right one.
    assert tuple(pixels[5, -5]) > (200, 0, 0) and pixels[5, -5][1] < 80
    assert pixels[5, 5][0] < 120
    with Image.open(tmp_path / "poster.jpg") as poster:
        red, green, _ = poster.convert("RGB").getpixel((170, 5))  # type: ignore[misc]
        assert red > 200 and green < 80


def test_noisy_1080p_source_stays_under_the_bitrate_cap(tmp_path: Path) -> None:
    source = make_source(tmp_path / "in.mkv", fmt="matroska", vcodec="mjpeg", width=1920,
                         height=1080, seconds=1.5, noise=True,
                         audio=("aac", 48_000, "stereo"), vcodec_options={"q:v": "3"})
    result = run(tmp_path, source)
    check_output(tmp_path, source, result)
    assert result.bitrate <= 1_500_000
    assert result.bitrate > 400_000  # demanding enough that the cap, not the crf, decided
    assert result.size * 8 / result.duration <= 1_500_000


def test_cancel_raises_and_leaves_nothing(tmp_path: Path) -> None:
    source = mp4_small(tmp_path, width=320, height=180)
    cancel = threading.Event()
    with pytest.raises(TranscodeError) as caught:
        run(tmp_path, source, cancel=cancel, progress=lambda value: cancel.set())
    assert caught.value.code == CANCELLED
    assert [p.name for p in tmp_path.iterdir()] == [source.name]


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_corrupt_source_raises_and_leaves_nothing(tmp_path: Path, damage: str) -> None:
    source = tmp_path / "in.mp4"
    if damage == "random":
        source.write_bytes(np.random.default_rng(1).bytes(50_000))
    else:
        whole = mp4_small(tmp_path, width=320, height=180, audio=None,
                          ).read_bytes()
        source.write_bytes(whole[:len(whole) // 3])
    with pytest.raises(TranscodeError) as caught:
        run(tmp_path, source)
    assert caught.value.code == TRANSCODE_FAILED
    assert [p.name for p in tmp_path.iterdir()] == [source.name]


def test_failure_leaves_an_existing_target_untouched(tmp_path: Path) -> None:
    (tmp_path / "out.mp4").write_bytes(b"old video")
    (tmp_path / "poster.jpg").write_bytes(b"old poster")
    source = tmp_path / "in.webm"
    source.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(1000))
    with pytest.raises(TranscodeError):
        run(tmp_path, source)
    assert (tmp_path / "out.mp4").read_bytes() == b"old video"
    assert (tmp_path / "poster.jpg").read_bytes() == b"old poster"
    assert len(list(tmp_path.iterdir())) == 3


def test_oversized_frame_is_refused(tmp_path: Path) -> None:
    source = make_source(tmp_path / "in.mkv", fmt="matroska", vcodec="mjpeg", width=8200,
                         height=16, fps=1, seconds=1)
    with pytest.raises(TranscodeError, match="dimensions") as caught:
        run(tmp_path, source)
    assert caught.value.code == TRANSCODE_FAILED
    assert [p.name for p in tmp_path.iterdir()] == [source.name]


def test_source_longer_than_10_minutes_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.mkv"
    with av.open(str(source), "w", format="matroska") as out:
        video = out.add_stream("mjpeg", rate=1)
        video.width, video.height, video.pix_fmt = 16, 16, "yuvj420p"
        for seconds in (0, 601):
            frame = av.VideoFrame(16, 16, "yuvj420p")
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.pts, frame.time_base = seconds, Fraction(1, 1)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    with pytest.raises(TranscodeError, match="10 minutes") as caught:
        run(tmp_path, source)
    assert caught.value.code == TRANSCODE_FAILED
    assert [p.name for p in tmp_path.iterdir()] == [source.name]


def test_variable_frame_rate_keeps_source_timestamps(tmp_path: Path) -> None:
    source = tmp_path / "in.webm"
    stamps = [0, 40, 70, 150, 190, 300, 333, 400, 500, 520, 600, 1000]  # milliseconds
    with av.open(str(source), "w", format="webm") as out:
        video = out.add_stream("libvpx", rate=30, options={"deadline": "realtime"})
        video.width, video.height = 64, 48
        video.codec_context.time_base = Fraction(1, 1000)
        for stamp in stamps:
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), stamp % 256, np.uint8),
                                               format="rgb24")
            frame.pts, frame.time_base = stamp, Fraction(1, 1000)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    run(tmp_path, source)
    with av.open(str(tmp_path / "out.mp4")) as container:
        times = [frame.time for frame in container.decode(video=0)]
    # 520 ms comes 20 ms after a frame, closer than 1/30 s: dropped for the frame-rate cap.
    kept = [stamp for stamp in stamps if stamp != 520]
    assert times == pytest.approx([stamp / 1000 for stamp in kept], abs=0.002)
