"""Pre-encoded media for bots: encode a few seconds of VP8 (or H.264) and Opus once, then send
the same packets in a loop, so a bot publishes real-sized media without spending CPU on an
encoder.

aiortc's `RTCRtpSender` packs `av.Packet`s as they are (`encoder.pack`) and encodes only
`av.Frame`s, so the tracks here return packets with their pts and time base set. A looped clip
cannot produce a keyframe on request (a PLI sets a flag that `pack` ignores), so the video clip
carries a keyframe every `keyframe_interval` seconds and starts with one: a subscriber that asks
for a keyframe waits at most that long.

Clips are cached on disk (under `NAPALMSKY_MEDIA_CACHE`, or the temp directory), keyed by their
parameters and the PyAV version, and written atomically so concurrent processes can share them.
"""

from __future__ import annotations

import array
import asyncio
import fractions
import hashlib
import json
import math
import os
import random
import struct
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000
CACHE_VERSION = 2  # 2: the codec in the header
_MAGIC = b"NSKYCLIP"
_ENTRY = struct.Struct("!IB")  # frame length, keyframe flag

Kind = Literal["audio", "video"]
VideoCodec = Literal["vp8", "h264"]


@dataclass(frozen=True, slots=True)
class VideoParams:
    width: int = 640
    height: int = 360
    fps: int = 30
    bitrate: int = 1_000_000
    seconds: float = 3.0
    keyframe_interval: float = 1.0
    seed: int = 1
    codec: VideoCodec = "vp8"


@dataclass(frozen=True, slots=True)
class AudioParams:
    bitrate: int = 32_000
    seconds: float = 3.0
    ptime_ms: int = 20
    frequency: float = 440.0
    seed: int = 2


@dataclass(frozen=True, slots=True)
class EncodedClip:
    """Encoded frames of one kind, each lasting `frame_duration` ticks of `clock_rate`."""

    kind: Kind
    clock_rate: int
    frame_duration: int
    frames: tuple[bytes, ...]
    keyframes: tuple[bool, ...]
    codec: str = ""  # "vp8", "h264", "opus"; empty when not stated

    @property
    def seconds(self) -> float:
        return len(self.frames) * self.frame_duration / self.clock_rate

    @property
    def bitrate(self) -> float:
        """Average bits per second over the clip."""
        return sum(len(f) for f in self.frames) * 8 / self.seconds if self.frames else 0.0


# ---- encoding ----


def _texture(width: int, height: int, block: int, rng: random.Random) -> bytes:
    """A blocky random luma texture: detailed enough that VP8 spends its bitrate on it."""
    columns = width // block
    rows: list[bytes] = []
    for _ in range(height // block):
        row = b"".join(bytes([rng.randrange(16, 236)]) * block for _ in range(columns))
        rows.extend([row] * block)
    return b"".join(rows)


def _video_codec(params: VideoParams) -> av.VideoCodecContext:
    """libvpx (VP8) or libx264 (H.264, constrained baseline, SPS/PPS before every IDR), set
    for a keyframe every `keyframe_interval` and nothing else forced."""
    fps = params.fps
    gop = max(1, round(params.keyframe_interval * fps))
    codec = av.CodecContext.create("libvpx" if params.codec == "vp8" else "libx264", "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width, codec.height, codec.pix_fmt = params.width, params.height, "yuv420p"
    codec.bit_rate = params.bitrate
    codec.framerate = fractions.Fraction(fps, 1)
    codec.time_base = fractions.Fraction(1, fps)
    codec.gop_size = gop
    if params.codec == "vp8":
        codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                         "kf-max-dist": str(gop), "kf-min-dist": str(gop)}
    else:
        codec.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline",
                         "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:"
                                        "repeat-headers=1"}
    return codec


def encode_video(params: VideoParams) -> EncodedClip:
    """Encode `params.seconds` of a moving pattern in `params.codec`, keyframe first."""
    w, h, fps = params.width, params.height, params.fps
    count = max(1, round(params.seconds * fps))
    gop = max(1, round(params.keyframe_interval * fps))
    codec = _video_codec(params)
    rng = random.Random(params.seed)
    tex_w, tex_h = 2 * w, 2 * h
    texture = _texture(tex_w, tex_h, 8, rng)
    band = max(2, h // 45)  # a band of fresh noise per frame keeps every frame non-trivial
    packets: list[av.Packet[Any]] = []
    for i in range(count):
        frame = av.VideoFrame(w, h, "yuv420p")
        dx, dy = (i * 5) % w, (i * 2) % h
        luma = b"".join(
            texture[(y + dy) * tex_w + dx:(y + dy) * tex_w + dx + w] for y in range(h)
        )
        start = ((i * 4) % (h - band)) * w
        luma = luma[:start] + rng.randbytes(w * band) + luma[start + w * band:]
        planes = frame.planes
        if planes[0].line_size != w:
            raise RuntimeError("unexpected luma stride; choose a width that is a multiple of 64")
        planes[0].update(luma)
        planes[1].update(bytes([(64 + i * 2) % 256]) * planes[1].buffer_size)
        planes[2].update(bytes([128]) * planes[2].buffer_size)
        frame.pts = i
        frame.time_base = fractions.Fraction(1, fps)
        # Force the keyframes at clip positions so that the loop point is one too.
        frame.pict_type = av.video.frame.PictureType.I if i % gop == 0 else \
            av.video.frame.PictureType.NONE
        packets.extend(codec.encode(frame))
    packets.extend(codec.encode(None))
    packets = packets[:count]
    if len(packets) != count or not packets[0].is_keyframe:
        raise RuntimeError(f"the {params.codec} encoder did not produce one packet per frame, "
                           "keyframe first")
    return EncodedClip(
        kind="video", clock_rate=VIDEO_CLOCK, frame_duration=VIDEO_CLOCK // fps,
        frames=tuple(bytes(p) for p in packets),
        keyframes=tuple(bool(p.is_keyframe) for p in packets), codec=params.codec,
    )


def encode_vp8(params: VideoParams) -> EncodedClip:
    """Encode `params.seconds` of a moving pattern with libvpx (VP8), keyframe first."""
    return encode_video(replace(params, codec="vp8"))


def encode_opus(params: AudioParams) -> EncodedClip:
    """Encode `params.seconds` of a noisy tone with libopus in `ptime_ms` frames (mono)."""
    samples = AUDIO_CLOCK * params.ptime_ms // 1000
    count = max(1, round(params.seconds * 1000 / params.ptime_ms))
    codec = av.CodecContext.create("libopus", "w")
    assert isinstance(codec, av.AudioCodecContext)
    codec.sample_rate = AUDIO_CLOCK
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = params.bitrate
    codec.options = {"frame_duration": str(params.ptime_ms)}
    rng = random.Random(params.seed)
    step = 2 * math.pi * params.frequency / AUDIO_CLOCK
    packets: list[av.Packet[Any]] = []
    for i in range(count):
        pcm = array.array("h", (
            int(6000 * math.sin(step * (i * samples + k))) + rng.randint(-600, 600)
            for k in range(samples)
        ))
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = i * samples
        frame.time_base = fractions.Fraction(1, AUDIO_CLOCK)
        packets.extend(codec.encode(frame))
    packets.extend(codec.encode(None))
    packets = packets[:count]
    if not packets:
        raise RuntimeError("libopus produced no packets")
    return EncodedClip(
        kind="audio", clock_rate=AUDIO_CLOCK, frame_duration=samples,
        frames=tuple(bytes(p) for p in packets), keyframes=(True,) * len(packets),
        codec="opus",
    )


# ---- the disk cache ----


def cache_dir() -> Path:
    configured = os.environ.get("NAPALMSKY_MEDIA_CACHE")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "napalmsky-media"


def _cache_path(kind: Kind, params: VideoParams | AudioParams, directory: Path) -> Path:
    key = json.dumps({"kind": kind, "params": asdict(params), "av": av.__version__,
                      "format": CACHE_VERSION}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return directory / f"{kind}-{digest}.clip"


def _dump(clip: EncodedClip) -> bytes:
    header = json.dumps({"kind": clip.kind, "clock_rate": clip.clock_rate,
                         "frame_duration": clip.frame_duration, "count": len(clip.frames),
                         "codec": clip.codec})
    parts = [_MAGIC, struct.pack("!I", len(header)), header.encode()]
    for frame, key in zip(clip.frames, clip.keyframes, strict=True):
        parts += [_ENTRY.pack(len(frame), key), frame]
    return b"".join(parts)


def _load(data: bytes) -> EncodedClip:
    if not data.startswith(_MAGIC):
        raise ValueError("not a clip file")
    offset = len(_MAGIC)
    (size,) = struct.unpack_from("!I", data, offset)
    offset += 4
    header = json.loads(data[offset:offset + size])
    offset += size
    frames: list[bytes] = []
    keys: list[bool] = []
    for _ in range(int(header["count"])):
        length, key = _ENTRY.unpack_from(data, offset)
        offset += _ENTRY.size
        frame = data[offset:offset + length]
        if len(frame) != length:
            raise ValueError("truncated clip file")
        frames.append(frame)
        keys.append(bool(key))
        offset += length
    kind = header["kind"]
    if kind not in ("audio", "video") or offset != len(data):
        raise ValueError("corrupt clip file")
    return EncodedClip(kind=kind, clock_rate=int(header["clock_rate"]),
                       frame_duration=int(header["frame_duration"]),
                       frames=tuple(frames), keyframes=tuple(keys),
                       codec=str(header.get("codec", "")))


def _cached(kind: Kind, params: VideoParams | AudioParams, directory: Path | None) -> EncodedClip:
    directory = directory or cache_dir()
    path = _cache_path(kind, params, directory)
    try:
        return _load(path.read_bytes())
    except (OSError, ValueError, KeyError):
        pass
    if isinstance(params, VideoParams):
        clip = encode_video(params)
    else:
        clip = encode_opus(params)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(_dump(clip))
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return clip


def video_clip(params: VideoParams = VideoParams(), directory: Path | None = None) -> EncodedClip:
    return _cached("video", params, directory)


def audio_clip(params: AudioParams = AudioParams(), directory: Path | None = None) -> EncodedClip:
    return _cached("audio", params, directory)


# ---- tracks ----


class EncodedTrack(MediaStreamTrack):
    """Returns the clip's packets in a loop, paced in real time, with increasing pts.

    `start` picks the first frame, moved back to the keyframe at or before it (so that a
    decoder never starts on a delta frame); bots that start at different moments send their
    keyframes at different moments. When the event loop
    falls more than `max_lag` seconds behind, the schedule restarts from now rather than
    sending the backlog in a burst; `late` counts those restarts.
    """

    def __init__(self, clip: EncodedClip, start: int = 0, max_lag: float = 0.5) -> None:
        super().__init__()
        self.kind = clip.kind
        self.clip = clip
        self.max_lag = max_lag
        self.sent = 0
        self.late = 0
        index = start % len(clip.frames)
        while index > 0 and not clip.keyframes[index]:
            index -= 1
        self._index = index
        self._time_base = fractions.Fraction(1, clip.clock_rate)
        self._interval = clip.frame_duration / clip.clock_rate
        self._origin: float | None = None
        self._scheduled = 0  # frames since the origin

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._origin is None:
            self._origin = now
        due = self._origin + self._scheduled * self._interval
        if now - due > self.max_lag:
            self.late += 1
            self._origin, self._scheduled, due = now, 0, now
        elif due > now:
            await asyncio.sleep(due - now)
            if self.readyState != "live":
                raise MediaStreamError
        clip = self.clip
        packet = av.Packet(clip.frames[self._index])
        packet.pts = self.sent * clip.frame_duration
        packet.time_base = self._time_base
        packet.is_keyframe = clip.keyframes[self._index]
        self._index = (self._index + 1) % len(clip.frames)
        self._scheduled += 1
        self.sent += 1
        return packet
