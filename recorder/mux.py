"""Writing a call's encoded media to a file without decoding or encoding it.

A `RecordingWriter` takes encoded frames as the SFU receives them (VP8 or H.264 video, Opus
audio; see recorder.depacketize) with their presentation times and muxes them with PyAV into
WebM (VP8 + Opus, RFC 7741 / RFC 7587 payloads as WebM stores them) or Matroska (H.264 + Opus).
Nothing is transcoded: the bytes that reach the file are the bytes the browser sent.

What the containers need that RTP does not carry:

- H.264 in Matroska: CodecPrivate is an avcC record (ISO/IEC 14496-15 5.2.4.1) built by FFmpeg
  from the SPS and PPS; they are taken from the first keyframe's Annex B byte stream, which is
  why video must start on a keyframe.
- Opus in Matroska/WebM: CodecPrivate is the 19-byte OpusHead (RFC 7845 section 5.1); the SFU's
  Opus is 48 kHz stereo with the usual 312-sample pre-skip (3.9.1 of the same RFC).

Crash safety: the file is opened with `live` cluster writing and every packet is flushed to the
operating system as it is muxed, so a process that dies mid-call leaves a Matroska file that
plays up to the last flushed cluster; `close()` finishes it (cues, duration). Blocking file I/O:
call it from a thread or process, never from the event loop.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
from av.container import OutputContainer
from av.stream import Stream
from av.video.stream import VideoStream

VIDEO_TIME_BASE = Fraction(1, 90_000)  # RTP video clock (RFC 7741 / RFC 6184)
AUDIO_TIME_BASE = Fraction(1, 48_000)  # RTP Opus clock (RFC 7587 section 4.1)
OPUS_PRE_SKIP = 312
_START_CODE = b"\x00\x00\x00\x01"


def opus_head(channels: int = 2, pre_skip: int = OPUS_PRE_SKIP, rate: int = 48_000) -> bytes:
    """The OpusHead identification header (RFC 7845 section 5.1), channel mapping family 0."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, rate, 0, 0)


def h264_parameter_sets(annex_b: bytes) -> bytes | None:
    """The SPS and PPS NAL units (types 7 and 8) of an Annex B access unit, as Annex B; None
    when either is missing."""
    units = [u for u in annex_b.split(_START_CODE) if u]
    sps = [u for u in units if u[0] & 0x1F == 7]
    pps = [u for u in units if u[0] & 0x1F == 8]
    if not sps or not pps:
        return None
    return b"".join(_START_CODE + u for u in (sps[0], pps[0]))


class _Bits:
    """An RBSP bit reader with Exp-Golomb codes (ITU-T H.264 section 9.1)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]  # IndexError past the end: the caller's to catch
            value = (value << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("Exp-Golomb code too long")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def h264_size(annex_b: bytes) -> tuple[int, int]:
    """The picture size an access unit's SPS declares (ITU-T H.264 7.3.2.1.1, cropping
    applied); (0, 0) without an SPS or for one that does not parse."""
    units = [u for u in annex_b.split(_START_CODE) if u and u[0] & 0x1F == 7]
    if not units:
        return 0, 0
    rbsp = units[0][1:].replace(b"\x00\x00\x03", b"\x00\x00")  # emulation prevention
    try:
        bits = _Bits(rbsp)
        profile = bits.u(8)
        bits.u(16)  # constraint flags, level
        bits.ue()  # seq_parameter_set_id
        chroma = 1
        if profile in _HIGH_PROFILES:
            chroma = bits.ue()
            if chroma == 3:
                bits.u(1)
            bits.ue()
            bits.ue()
            bits.u(1)
            if bits.u(1):  # seq_scaling_matrix_present_flag
                for i in range(12 if chroma == 3 else 8):
                    if bits.u(1):
                        last = following = 8
                        for _ in range(16 if i < 6 else 64):
                            if following:
                                following = (last + bits.se()) % 256
                            last = following or last
        bits.ue()  # log2_max_frame_num_minus4
        poc_type = bits.ue()
        if poc_type == 0:
            bits.ue()
        elif poc_type == 1:
            bits.u(1)
            bits.se()
            bits.se()
            for _ in range(bits.ue()):
                bits.se()
        bits.ue()  # max_num_ref_frames
        bits.u(1)
        width_mbs = bits.ue() + 1
        height_units = bits.ue() + 1
        frame_mbs_only = bits.u(1)
        if not frame_mbs_only:
            bits.u(1)
        bits.u(1)  # direct_8x8_inference_flag
        left = right = top = bottom = 0
        if bits.u(1):  # frame_cropping_flag
            left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
    except (IndexError, ValueError):
        return 0, 0
    unit_x = 1 if chroma == 0 else (1 if chroma == 3 else 2)
    unit_y = (2 - frame_mbs_only) * (2 if chroma == 1 else 1)
    width = width_mbs * 16 - unit_x * (left + right)
    height = (2 - frame_mbs_only) * height_units * 16 - unit_y * (top + bottom)
    return (width, height) if width > 0 and height > 0 else (0, 0)


class RecordingError(Exception):
    """A frame the writer cannot put in the file (out of order, a video start without a
    keyframe, H.264 without parameter sets)."""


@dataclass(frozen=True, slots=True)
class TrackSpec:
    """One track: codec ("vp8", "h264", "opus") and, for video, the picture size the first
    keyframe declares (Matroska's PixelWidth/PixelHeight)."""

    codec: str
    width: int = 0
    height: int = 0


class RecordingWriter:
    """`write_video(data, pts, keyframe)` and `write_audio(data, pts)` in any interleaving,
    each track's times rising; `close()` once. Times are in the tracks' RTP clocks (90 kHz
    video, 48 kHz audio) from the recording's start; the caller maps RTP timestamps onto that
    common origin (from the senders' RTCP SR, for lip sync)."""

    def __init__(self, path: Path, video: TrackSpec | None, audio: TrackSpec | None) -> None:
        if video is None and audio is None:
            raise ValueError("a recording needs a track")
        if video is not None and video.codec not in ("vp8", "h264"):
            raise ValueError(f"video codec {video.codec!r} is not recorded")
        if audio is not None and audio.codec != "opus":
            raise ValueError(f"audio codec {audio.codec!r} is not recorded")
        webm = video is None or video.codec == "vp8"
        self.format = "webm" if webm else "matroska"
        self.path = path
        self._video_spec = video
        self._audio_spec = audio
        # live: clusters are written as they fill, no seeking back until the end
        self._out: OutputContainer = av.open(
            str(path), "w", format=self.format, options={"live": "1", "flush_packets": "1"})
        self._video: Stream | None = None
        self._audio: Stream | None = None
        self._started = False
        self._last = {"video": -1, "audio": -1}
        self.video_frames = 0
        self.audio_frames = 0
        self.closed = False

    def _start(self, first_video: bytes | None) -> None:
        """Streams are declared when the first frame arrives (the header needs H.264's
        parameter sets), then the header is written."""
        video, audio = self._video_spec, self._audio_spec
        if video is not None:
            vstream = cast(VideoStream, self._out.add_stream(video.codec))
            vstream.time_base = VIDEO_TIME_BASE
            vctx = vstream.codec_context
            vctx.width, vctx.height = video.width, video.height
            vctx.time_base = VIDEO_TIME_BASE
            if video.codec == "h264":
                params = h264_parameter_sets(first_video or b"")
                if params is None:
                    raise RecordingError("H.264 video must start with SPS and PPS")
                vctx.extradata = params
            self._video = vstream
        if audio is not None:
            astream = self._out.add_stream("libopus", rate=48_000)
            astream.time_base = AUDIO_TIME_BASE
            astream.codec_context.extradata = opus_head()
            self._audio = astream
        self._out.start_encoding()
        self._started = True

    def write_video(self, data: bytes, pts: int, keyframe: bool) -> None:
        """One video frame (VP8 frame or H.264 Annex B access unit) at `pts` (90 kHz)."""
        if self._video_spec is None:
            raise RecordingError("this recording has no video track")
        if not self._started:
            if not keyframe:
                raise RecordingError("video must start on a keyframe")
            self._start(data)
        assert self._video is not None
        self._mux(self._video, "video", data, pts, keyframe)
        self.video_frames += 1

    def write_audio(self, data: bytes, pts: int) -> None:
        """One Opus packet at `pts` (48 kHz)."""
        if self._audio_spec is None:
            raise RecordingError("this recording has no audio track")
        if not self._started:
            if self._video_spec is not None:
                return  # nothing before the first video keyframe: the file starts there
            self._start(None)
        assert self._audio is not None
        self._mux(self._audio, "audio", data, pts, True)
        self.audio_frames += 1

    def _mux(self, stream: Stream, kind: str, data: bytes, pts: int, keyframe: bool) -> None:
        if pts <= self._last[kind]:
            raise RecordingError(f"{kind} times must rise ({pts} after {self._last[kind]})")
        self._last[kind] = pts
        packet = av.Packet(data)
        packet.stream = stream
        packet.time_base = VIDEO_TIME_BASE if kind == "video" else AUDIO_TIME_BASE
        packet.pts = packet.dts = pts
        packet.is_keyframe = keyframe
        self._out.mux(packet)

    def close(self) -> None:
        """Finish the file (idempotent). A recording with no frame at all is still closed."""
        if self.closed:
            return
        self.closed = True
        self._out.close()


@dataclass(frozen=True, slots=True)
class RecordingFacts:
    """What a finished recording holds: seconds from its first to its last packet, codecs."""

    duration: float
    video_codec: str | None
    audio_codec: str | None


def inspect_recording(path: Path) -> RecordingFacts | None:
    """The facts of a recording file that plays (its first video frame, or for an audio-only
    file its first audio frame, decodes), else None. Demuxes every packet (no decoding beyond
    that frame): seconds on a long call."""
    try:
        with av.open(str(path)) as media:
            video = media.streams.video[0] if media.streams.video else None
            audio = media.streams.audio[0] if media.streams.audio else None
            if video is None and audio is None:
                return None
            first: float | None = None
            last = 0.0
            for packet in media.demux():
                if packet.pts is None or packet.time_base is None:
                    continue
                at = float(packet.pts * packet.time_base)
                first = at if first is None else min(first, at)
                last = max(last, at)
            media.seek(0)
            decoded = media.decode(video=0) if video is not None else media.decode(audio=0)
            if next(iter(decoded), None) is None:
                return None
            return RecordingFacts(
                duration=round(last - (first or 0.0), 3),
                video_codec=video.codec_context.name if video is not None else None,
                audio_codec=audio.codec_context.name if audio is not None else None)
    except (av.FFmpegError, OSError, ValueError, EOFError):
        return None


__all__ = ["AUDIO_TIME_BASE", "OPUS_PRE_SKIP", "VIDEO_TIME_BASE", "RecordingError",
           "RecordingFacts", "RecordingWriter", "TrackSpec", "h264_parameter_sets", "h264_size",
           "inspect_recording", "opus_head"]
