"""Intro-video uploads: is this file a short, decodable video we are willing to transcode?

`probe_intro` looks at an upload already streamed to disk and either describes it or refuses it
with a stable error code and a fixed message, before anything is decoded in full:

1. Size: empty files and files over the limit are refused outright.
2. Container from the bytes, never from a file name or a client's content type: Matroska/WebM
   (the EBML magic, RFC 9559 section 4.1) or ISO BMFF / QuickTime (an `ftyp` box first, ISO/IEC
   14496-12 section 4.3, with a brand of MP4 or QuickTime). Anything else, images included, is
   not a video we take. The demuxer is then chosen by us, so FFmpeg's probing never picks an
   image or playlist demuxer for a file that merely looks like one.
3. Streams from the header: one video stream of a video codec (H.264, HEVC, VP8, VP9, AV1; not
   a still-image codec such as MJPEG or PNG) with declared dimensions inside the limits. A
   decompression bomb (a tiny file declaring a huge picture) stops here, before any decoding.
4. Length by demuxing packets, not decoding them (MediaRecorder's WebM declares no duration):
   the scan stops as soon as the video passes the length limit or the packet count passes what
   that length could hold at the highest frame rate we accept (a frame-count bomb).
5. Decodability: the first frames are decoded, and their real size must match the header.

Pure and blocking (seconds at worst on a 50 MB file): run it off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error

from core.errors import InvalidArgument, PayloadTooLarge, UnsupportedMediaType

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # the source document: intro videos up to 50 MB
MAX_SECONDS = 60.0

EMPTY = "the video file is empty"
TOO_LARGE = "the video is larger than 50 MB"
UNSUPPORTED = "the video must be WebM, MP4 or QuickTime"
NO_VIDEO = "the file has no video stream (audio only?)"
NOT_A_VIDEO = "the file holds a still image, not a video"
BAD_DIMENSIONS = "the video's picture size is not supported (64 to 4096 pixels a side)"
TOO_LONG = "the video is longer than the limit"
TOO_SHORT = "the video is shorter than half a second"
CORRUPT = "the video is corrupt or truncated"

# Codecs a phone or a browser records, that our transcoder decodes; still-image codecs are not
# videos however they are wrapped.
VIDEO_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4"})
STILL_CODECS = frozenset({"mjpeg", "png", "gif", "bmp", "tiff", "webp", "jpeg2000"})
MIN_SIDE = 64
MAX_SIDE = 4096  # 4K portrait or landscape (3840 x 2160) fits
MAX_PIXELS = 4096 * 2304
MAX_FPS = 120  # slow-motion phone video; the packet-count ceiling is MAX_FPS a second
MIN_SECONDS = 0.5
DECODE_FRAMES = 3  # decoded to prove the stream decodes

_MP4_BRANDS = (b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"M4V ",
               b"qt  ", b"dash", b"mmp4", b"MSNV")
_EBML = b"\x1a\x45\xdf\xa3"


@dataclass(frozen=True, slots=True)
class IntroLimits:
    """What an intro upload may be: bytes and seconds (settings decide; defaults as the issue)."""

    max_bytes: int = MAX_UPLOAD_BYTES
    max_seconds: float = MAX_SECONDS


@dataclass(frozen=True, slots=True)
class IntroProbe:
    """An accepted upload: container ("webm" or "mp4"), video codec, declared size (pixels),
    duration (seconds, from packet timestamps), video packets seen, and the audio codec (None
    without audio)."""

    container: str
    video_codec: str
    width: int
    height: int
    duration: float
    frames: int
    audio_codec: str | None


def sniff_container(head: bytes) -> str | None:
    """"webm" (Matroska/WebM), "mp4" (ISO BMFF or QuickTime) or None, from the first bytes."""
    if head.startswith(_EBML):
        return "webm"
    if len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in _MP4_BRANDS:
        return "mp4"
    return None


def probe_intro(path: Path, limits: IntroLimits = IntroLimits()) -> IntroProbe:
    """Describe the upload at `path` or refuse it.

    Raises InvalidArgument (empty, no video, a still image, bad dimensions, too long, too short,
    corrupt or truncated), PayloadTooLarge (over `limits.max_bytes`) or UnsupportedMediaType (not
    WebM, MP4 or QuickTime), each with one of this module's fixed messages.
    """
    size = path.stat().st_size
    if size == 0:
        raise InvalidArgument(EMPTY)
    if size > limits.max_bytes:
        raise PayloadTooLarge(TOO_LARGE)
    with path.open("rb") as f:
        container = sniff_container(f.read(16))
    if container is None:
        raise UnsupportedMediaType(UNSUPPORTED)
    demuxer = "matroska" if container == "webm" else "mov"
    try:
        with av.open(str(path), format=demuxer, options={"probesize": "5000000"}) as media:
            return _probe_open(media, container, limits)
    except (av.error.FFmpegError, EOFError, ValueError, OSError):
        raise InvalidArgument(CORRUPT) from None


def _probe_open(media: av.container.InputContainer, container: str,
                limits: IntroLimits) -> IntroProbe:
    videos = media.streams.video
    if not videos:
        raise InvalidArgument(NO_VIDEO)
    video = videos[0]
    codec = video.codec_context.name
    if codec in STILL_CODECS or video.disposition & av.stream.Disposition.attached_pic:
        raise InvalidArgument(NOT_A_VIDEO)
    if codec not in VIDEO_CODECS:
        raise UnsupportedMediaType(UNSUPPORTED)
    width, height = video.width, video.height
    _check_dimensions(width, height)
    audios = media.streams.audio
    audio_codec = audios[0].codec_context.name if audios else None

    duration, frames = _scan_length(media, video, limits)
    if duration < MIN_SECONDS and frames < 2:
        raise InvalidArgument(NOT_A_VIDEO if frames <= 1 else TOO_SHORT)
    if duration < MIN_SECONDS:
        raise InvalidArgument(TOO_SHORT)
    _decode_first_frames(media, video, width, height)
    return IntroProbe(container, codec, width, height, round(duration, 3), frames, audio_codec)


def _check_dimensions(width: int, height: int) -> None:
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE
            and width * height <= MAX_PIXELS):
        raise InvalidArgument(BAD_DIMENSIONS)


def _scan_length(media: av.container.InputContainer, video: av.VideoStream,
                 limits: IntroLimits) -> tuple[float, int]:
    """(seconds from the first to the end of the last video packet, video packets), by
    demuxing only; raises TOO_LONG as soon as either passes what the limit allows."""
    base = video.time_base or Fraction(1, 1000)
    max_packets = int(limits.max_seconds * MAX_FPS) + 1
    first: int | None = None
    last_end = 0
    frames = 0
    for packet in media.demux(video):
        if packet.pts is None or packet.size == 0:
            continue  # the demuxer's flush packet, or a packet without a time
        frames += 1
        if first is None:
            first = packet.pts
        last_end = max(last_end, packet.pts + (packet.duration or 0))
        if frames > max_packets or float((last_end - first) * base) > limits.max_seconds + 0.5:
            raise InvalidArgument(TOO_LONG)
    if first is None or (video.frames and frames < video.frames):
        # nothing to play, or fewer frames than the index lists: the file was cut short
        raise InvalidArgument(CORRUPT)
    return float((last_end - first) * base), frames


def _decode_first_frames(media: av.container.InputContainer, video: av.VideoStream,
                         width: int, height: int) -> None:
    media.seek(0, stream=video)
    decoded = 0
    for frame in media.decode(video):
        if (frame.width, frame.height) != (width, height):
            _check_dimensions(frame.width, frame.height)  # a stream that grows mid-way
        decoded += 1
        if decoded >= DECODE_FRAMES:
            return
    if decoded == 0:
        raise InvalidArgument(CORRUPT)


__all__ = ["BAD_DIMENSIONS", "CORRUPT", "EMPTY", "MAX_SECONDS", "MAX_UPLOAD_BYTES", "NOT_A_VIDEO",
           "NO_VIDEO", "TOO_LARGE", "TOO_LONG", "TOO_SHORT", "UNSUPPORTED", "IntroLimits",
           "IntroProbe", "probe_intro", "sniff_container"]
