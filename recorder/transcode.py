"""Intro-video transcoding: any video PyAV opens in, an MP4 every browser plays out.

`transcode_intro` is the media half of the intro-video transcode job: it decodes the first video
stream (and the first audio stream, if any) of an upload, such as a WebM (VP8/VP9 + Opus) from
MediaRecorder or an MP4/QuickTime (H.264 + AAC) from a phone, and writes H.264 (High profile,
yuv420p) + AAC-LC (48 kHz stereo) in an MP4 whose index (moov atom) sits before the media data,
so playback starts before the download ends. The picture is turned upright by the display
matrix of the source (phones record landscape and tag portrait videos), scaled down to fit
within 1280 x 720 (never up), and the frame rate is capped at 30 by dropping frames; the output
keeps the source timestamps, so the variable frame rate of MediaRecorder stays in sync with the
audio. It also writes a poster JPEG: the first frame at or after 1 s, at the output size.

It is pure and CPU-bound (no database, no event loop): run it in a worker thread or process.
A crash can never leave a half-written file under `target` or `poster`: both are written to a
temporary file in the same directory (".<name>.*.part"), flushed to disk and renamed over the
final name only when everything succeeded; on an error or a cancellation the temporary files are
removed. Only a killed process leaves a ".part" file behind, never under the final name.

Not handled: a display matrix with a mirror (hflip/vflip; no phone camera writes one) is applied
as its rotation only; a resolution change in the middle of a stream (MediaRecorder after a camera
switch) is scaled to the output size of the first frame, so its aspect ratio may be off.

Sources: FFmpeg's libx264 wrapper and x264 --fullhelp (preset, crf, vbv-maxrate, vbv-bufsize,
vbv-init), the "faststart" flag of FFmpeg's mov muxer, FFmpeg's autorotate (fftools: the
display matrix angle is counterclockwise, the picture is turned by its opposite), and the PyAV
18 API (VideoFrame.rotation, AudioResampler, OutputContainer).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from io import BytesIO
from pathlib import Path

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image

TRANSCODE_FAILED = "transcode_failed"
CANCELLED = "cancelled"

# Defence in depth: the upload probe refuses these already.
MAX_SOURCE_SIDE = 8192
MAX_DURATION = 600.0  # seconds
# Decoded timestamps may run a little past the declared duration (a last frame's length).
_DURATION_SLACK = 2.0

AUDIO_RATE = 48_000
AUDIO_LAYOUT = "stereo"
AAC_FRAME_SIZE = 1024
POSTER_AT = 1.0  # seconds
POSTER_QUALITY = 85
KEYFRAME_SECONDS = 2.0
# Quality target of x264 for simple content (a face in front of a wall): 23 is x264's default
# and looks clean at 720p; busy content is held down by the VBV cap instead.
CRF = 23
# Initial fill of the VBV buffer (x264's default is 0.9): a full buffer would let the first
# second burst to several times maxrate, which on a short clip shows in the average bitrate.
VBV_INIT = 0.1
# The video time base: 90 kHz, the MPEG clock, represents every source timestamp closely.
VIDEO_TIME_BASE = Fraction(1, 90_000)
# progress is called at most this often (seconds between calls).
PROGRESS_INTERVAL = 0.05

_PART_SUFFIX = ".part"


@dataclass(frozen=True, slots=True)
class TranscodeLimits:
    max_height: int = 720
    max_width: int = 1280
    video_bitrate: int = 1_350_000  # bits/s; with the audio, the file stays under 1.5 Mbit/s
    audio_bitrate: int = 128_000  # bits/s
    max_fps: int = 30


@dataclass(frozen=True, slots=True)
class TranscodeResult:
    duration: float  # seconds
    width: int
    height: int
    video_codec: str  # "h264"
    audio_codec: str | None  # "aac", or None when the source has no audio
    size: int  # bytes of the MP4
    bitrate: int  # bits/s of the whole file


class TranscodeError(Exception):
    """A transcode that did not produce its files. `code` is stable: TRANSCODE_FAILED (a corrupt,
    unsupported or oversized source, or an I/O error) or CANCELLED."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class _Probe:
    rotation: int  # quarter turns counterclockwise to make the picture upright (0 to 3)
    scaled_width: int  # the size frames are scaled to before they are turned
    scaled_height: int
    duration: float | None
    fps: float | None


# What PyAV and the OS raise on a corrupt source or a failed write (InvalidDataError and its
# kin subclass FFmpegError; some also subclass ValueError or OSError).
_MEDIA_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError)


def transcode_intro(
    source: Path,
    target: Path,
    poster: Path,
    *,
    limits: TranscodeLimits = TranscodeLimits(),  # frozen, so a shared default is safe
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
) -> TranscodeResult:
    """Transcode `source` into an MP4 at `target` and a poster JPEG at `poster`.

    `progress` receives fractions rising from 0.0 to exactly 1.0 (the last call, once both files
    are in place), at most about 20 times a second. `cancel` is checked between frames. Raises
    TranscodeError (TRANSCODE_FAILED or CANCELLED) and then leaves `target` and `poster` as they
    were, with no temporary file behind. Blocks for about the length of the video: call it from a
    worker thread or process.
    """
    reporter = _Progress(progress)
    reporter.report(0.0)
    video_part: Path | None = None
    poster_part: Path | None = None
    try:
        try:
            video_part = _part_path(target)
            poster_part = _part_path(poster)
            probe = _probe(source, limits)
            audio_codec = _transcode(source, video_part, poster_part, probe, limits, reporter,
                                     cancel)
            _fsync_file(video_part)
            _fsync_file(poster_part)
            result = _inspect(video_part, audio_codec)
        except _MEDIA_ERRORS as exc:
            raise TranscodeError(TRANSCODE_FAILED, f"transcode failed: {exc}") from exc
        _check_cancel(cancel)
        try:
            os.replace(poster_part, poster)
            os.replace(video_part, target)
            _fsync_dir(target.parent)
            if poster.parent != target.parent:
                _fsync_dir(poster.parent)
        except OSError as exc:
            raise TranscodeError(TRANSCODE_FAILED, f"transcode failed: {exc}") from exc
    except BaseException:
        for part in (video_part, poster_part):
            if part is not None:
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
        raise
    reporter.report(1.0, final=True)
    return result


def _probe(source: Path, limits: TranscodeLimits) -> _Probe:
    """Read the first video frame: its real size and rotation decide the output size (the
    container header can be wrong or empty, the display matrix reaches the frames only)."""
    with av.open(str(source), "r") as container:
        if not container.streams.video:
            raise TranscodeError(TRANSCODE_FAILED, "source has no video stream")
        stream = container.streams.video[0]
        if stream.codec_context.width > MAX_SOURCE_SIDE or (
                stream.codec_context.height > MAX_SOURCE_SIDE):
            raise TranscodeError(TRANSCODE_FAILED, "source video dimensions are too large")
        duration = _duration(container, stream)
        if duration is not None and duration > MAX_DURATION:
            raise TranscodeError(TRANSCODE_FAILED, "source video is longer than 10 minutes")
        first = next(container.decode(stream), None)
        if first is None:
            raise TranscodeError(TRANSCODE_FAILED, "source has no decodable video frame")
        _check_frame_size(first)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        rotation = _quarter_turns(first.rotation)
        width, height = _fit(first.width, first.height, rotation, stream.sample_aspect_ratio,
                             limits)
    return _Probe(rotation, width, height, duration, fps)


def _duration(container: InputContainer, stream: VideoStream) -> float | None:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def _check_frame_size(frame: VideoFrame) -> None:
    if frame.width > MAX_SOURCE_SIDE or frame.height > MAX_SOURCE_SIDE:
        raise TranscodeError(TRANSCODE_FAILED, "source video dimensions are too large")
    if frame.width <= 0 or frame.height <= 0:
        raise TranscodeError(TRANSCODE_FAILED, "source video frame is empty")


def _quarter_turns(rotation: int) -> int:
    """VideoFrame.rotation is the counterclockwise angle of the display matrix (-90 for a phone
    held upright). Like FFmpeg's autorotate, the picture is turned by that angle, counted here
    in quarter turns counterclockwise (np.rot90's direction); odd angles round to the nearest."""
    return round(rotation / 90) % 4


def _fit(width: int, height: int, turns: int, sar: Fraction | None,
         limits: TranscodeLimits) -> tuple[int, int]:
    """The size to scale frames to before turning them: the upright picture fits the limits,
    keeps its display aspect ratio, is never enlarged, and has even sides."""
    display_width = width * float(sar) if sar else float(width)
    display_height = float(height)
    if turns % 2:
        display_width, display_height = display_height, display_width
    scale = min(1.0, limits.max_width / display_width, limits.max_height / display_height)
    out_width = max(2, int(display_width * scale) // 2 * 2)
    out_height = max(2, int(display_height * scale) // 2 * 2)
    return (out_height, out_width) if turns % 2 else (out_width, out_height)


def _transcode(source: Path, video_part: Path, poster_part: Path, probe: _Probe,
               limits: TranscodeLimits, reporter: _Progress,
               cancel: threading.Event | None) -> str | None:
    """Decode, convert and encode; returns the audio codec written (None: video only)."""
    with av.open(str(source), "r") as container:
        in_video = container.streams.video[0]
        in_video.thread_type = "AUTO"
        in_audio = container.streams.audio[0] if container.streams.audio else None
        origin = container.start_time / av.time_base if container.start_time else 0.0
        with av.open(str(video_part), "w", format="mp4",
                     options={"movflags": "+faststart"}) as output:
            out_video = _add_video_stream(output, probe, limits)
            out_audio = _add_audio_stream(output, limits) if in_audio is not None else None
            video = _VideoPath(out_video, probe, limits.max_fps, origin)
            audio = _AudioPath(out_audio, origin) if out_audio is not None else None
            streams = [in_video] if in_audio is None else [in_video, in_audio]
            for packet in container.demux(streams):
                _check_cancel(cancel)
                for frame in packet.decode():
                    _check_cancel(cancel)
                    if isinstance(frame, VideoFrame):
                        _check_frame_size(frame)
                        time_s = video.push(output, frame)
                    elif isinstance(frame, AudioFrame) and audio is not None:
                        time_s = audio.push(output, frame)
                    else:
                        continue
                    if time_s is not None:
                        if time_s > MAX_DURATION + _DURATION_SLACK:
                            raise TranscodeError(TRANSCODE_FAILED,
                                                 "source video is longer than 10 minutes")
                        if probe.duration:
                            reporter.report(min(0.99, time_s / probe.duration))
            video.flush(output)
            if audio is not None:
                audio.flush(output)
        if video.poster is None:
            raise TranscodeError(TRANSCODE_FAILED, "source has no decodable video frame")
        poster_part.write_bytes(_jpeg(video.poster))
    return "aac" if audio is not None else None


def _add_video_stream(output: OutputContainer, probe: _Probe,
                      limits: TranscodeLimits) -> VideoStream:
    fps = min(float(limits.max_fps), probe.fps or float(limits.max_fps))
    # Cap the average of short clips too: over T seconds VBV lets through maxrate * T plus the
    # initial buffer, so that buffer is taken off the rate.
    bufsize = 2 * limits.video_bitrate
    maxrate = limits.video_bitrate
    if probe.duration:
        maxrate -= int(VBV_INIT * bufsize / max(probe.duration, 1.0))
        maxrate = max(maxrate, limits.video_bitrate // 2)
    stream = output.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
    stream.width = probe.scaled_width if probe.rotation % 2 == 0 else probe.scaled_height
    stream.height = probe.scaled_height if probe.rotation % 2 == 0 else probe.scaled_width
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = VIDEO_TIME_BASE
    stream.time_base = VIDEO_TIME_BASE
    stream.gop_size = max(1, round(KEYFRAME_SECONDS * fps))
    stream.options = {
        # veryfast: a transcode of a minute runs in well under a minute on one core of a small
        # worker, at a few percent more bits than "medium" for the same quality; the bitrate
        # cap makes the difference in size irrelevant and the saved CPU serves more uploads.
        "preset": "veryfast",
        # High profile: every browser that plays H.264 in MP4 decodes it, and it compresses
        # better than Main (8x8 transforms); level 3.1 covers 1280x720 at 30 fps.
        "profile": "high",
        "level": "3.1",
        "crf": str(CRF),
        "maxrate": str(maxrate),
        "bufsize": str(bufsize),
        "x264-params": f"vbv-init={VBV_INIT}",
        "keyint_min": str(max(1, round(fps))),
    }
    return stream


def _add_audio_stream(output: OutputContainer, limits: TranscodeLimits) -> AudioStream:
    stream = output.add_stream("aac", rate=AUDIO_RATE)
    stream.layout = AUDIO_LAYOUT
    stream.format = "fltp"
    stream.bit_rate = limits.audio_bitrate
    stream.codec_context.time_base = Fraction(1, AUDIO_RATE)
    stream.time_base = Fraction(1, AUDIO_RATE)
    return stream


class _VideoPath:
    """Scales, turns and encodes video frames, dropping those that would exceed max_fps."""

    def __init__(self, stream: VideoStream, probe: _Probe, max_fps: int, origin: float) -> None:
        self.stream = stream
        self.probe = probe
        self.max_fps = max_fps
        self.origin = origin
        self.last_slot = -1
        self.last_pts = -1
        self.last_time = 0.0
        self.frame_step = 1.0 / (probe.fps or max_fps)
        self.poster: VideoFrame | None = None
        self.first: VideoFrame | None = None

    def push(self, output: OutputContainer, frame: VideoFrame) -> float | None:
        if frame.pts is not None and frame.time_base is not None:
            time_s = float(frame.pts * frame.time_base) - self.origin
        else:  # no timestamp (rare): continue at the nominal rate
            time_s = self.last_time + self.frame_step
        time_s = max(0.0, time_s)
        # One frame per 1/max_fps slot (the first of each): a faster source loses frames rather
        # than being resampled; the quarter-slot offset keeps a jittery source at the limit
        # (timestamps in milliseconds) from losing frames.
        slot = math.floor(time_s * self.max_fps + 0.25)
        pts = round(time_s / VIDEO_TIME_BASE)
        keep = slot > self.last_slot and pts > self.last_pts
        want_poster = self.poster is None and time_s >= POSTER_AT
        if not keep and not want_poster:
            return time_s
        picture = self._convert(frame)
        if want_poster:
            self.poster = picture
        if self.first is None:
            self.first = picture
        if keep:
            self.last_slot, self.last_pts, self.last_time = slot, pts, time_s
            picture.pts = pts
            picture.time_base = VIDEO_TIME_BASE
            output.mux(self.stream.encode(picture))
        return time_s

    def flush(self, output: OutputContainer) -> None:
        if self.first is None:
            raise TranscodeError(TRANSCODE_FAILED, "source has no decodable video frame")
        output.mux(self.stream.encode(None))
        if self.poster is None:  # shorter than POSTER_AT: the first frame
            self.poster = self.first

    def _convert(self, frame: VideoFrame) -> VideoFrame:
        scaled = frame.reformat(width=self.probe.scaled_width, height=self.probe.scaled_height,
                                format="yuv420p", interpolation="AREA")
        turns = self.probe.rotation
        if turns == 0:
            # No turn: any display matrix the frame still carries says "upright" too, so the
            # scaled frame goes to the encoder as it is (no copy through numpy).
            return scaled
        # Turned: a fresh frame, without the source's display matrix (it would otherwise travel
        # on, and a player would turn the upright picture again).
        return _rotate(scaled, turns)


def _rotate(frame: VideoFrame, turns: int) -> VideoFrame:
    """Turn a yuv420p frame by quarter turns counterclockwise, plane by plane."""
    width, height = frame.width, frame.height
    planes = []
    for index, (plane_width, plane_height) in enumerate(
            ((width, height), (width // 2, height // 2), (width // 2, height // 2))):
        plane = frame.planes[index]
        pixels = np.frombuffer(memoryview(plane), dtype=np.uint8)
        pixels = pixels.reshape(-1, plane.line_size)[:plane_height, :plane_width]
        planes.append(np.rot90(pixels, turns).ravel())
    new_width = height if turns % 2 else width
    packed = np.concatenate(planes).reshape(-1, new_width)
    return VideoFrame.from_ndarray(packed, format="yuv420p")


class _AudioPath:
    """Resamples audio to 48 kHz stereo in AAC-sized frames with continuous timestamps."""

    def __init__(self, stream: AudioStream, origin: float) -> None:
        self.stream = stream
        self.origin = origin
        self.resampler = AudioResampler(format="fltp", layout=AUDIO_LAYOUT, rate=AUDIO_RATE,
                                        frame_size=AAC_FRAME_SIZE)
        # Timestamps count samples from the first frame's time: the resampler's own pts are not
        # in its output time base (PyAV 18 passes the input's pts through).
        self.next_pts: int | None = None

    def push(self, output: OutputContainer, frame: AudioFrame) -> float | None:
        time_s: float | None = None
        if frame.pts is not None and frame.time_base is not None:
            time_s = max(0.0, float(frame.pts * frame.time_base) - self.origin)
        if self.next_pts is None:
            self.next_pts = round((time_s or 0.0) * AUDIO_RATE)
        frame.pts = None
        self._encode(output, self.resampler.resample(frame))
        return time_s

    def flush(self, output: OutputContainer) -> None:
        if self.next_pts is not None:
            self._encode(output, self.resampler.resample(None))
        output.mux(self.stream.encode(None))

    def _encode(self, output: OutputContainer, frames: list[AudioFrame]) -> None:
        for resampled in frames:
            assert self.next_pts is not None
            resampled.pts = self.next_pts
            resampled.time_base = Fraction(1, AUDIO_RATE)
            self.next_pts += resampled.samples
            output.mux(self.stream.encode(resampled))


class _Progress:
    def __init__(self, callback: Callable[[float], None] | None) -> None:
        self.callback = callback
        self.last_value = -1.0
        self.last_call = -math.inf

    def report(self, value: float, *, final: bool = False) -> None:
        if self.callback is None or value <= self.last_value:
            return
        now = time.monotonic()
        if not final and self.last_value >= 0 and now - self.last_call < PROGRESS_INTERVAL:
            return
        self.last_value, self.last_call = value, now
        self.callback(value)


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise TranscodeError(CANCELLED, "transcode cancelled")


def _jpeg(frame: VideoFrame) -> bytes:
    image = Image.fromarray(frame.to_ndarray(format="rgb24"))
    out = BytesIO()
    image.save(out, format="JPEG", quality=POSTER_QUALITY, optimize=True)
    return out.getvalue()


def _inspect(path: Path, audio_codec: str | None) -> TranscodeResult:
    with av.open(str(path), "r") as container:
        video = container.streams.video[0]
        if container.duration:
            duration = container.duration / av.time_base
        else:
            duration = float((video.duration or 0) * (video.time_base or 0))
        width, height = video.codec_context.width, video.codec_context.height
    size = path.stat().st_size
    bitrate = round(size * 8 / duration) if duration > 0 else 0
    return TranscodeResult(duration=duration, width=width, height=height, video_codec="h264",
                           audio_codec=audio_codec, size=size, bitrate=bitrate)


def _part_path(final: Path) -> Path:
    """An empty temporary file next to `final` (same directory, so os.replace is atomic)."""
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=_PART_SUFFIX)
    os.close(fd)
    return Path(name)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
