"""Media for the zoo: a publisher that packetizes pre-encoded clips (loadtest/media.py's VP8 and
Opus, or an H.264 clip encoded here) and sends them through a RawPeer in real time, with RTCP
sender reports; and a receiver-side analysis of what a RawPeer recorded.

    video = Publisher(peer, peer.section("video"), video_clip()).start()
    audio = Publisher(peer, peer.section("audio"), audio_clip()).start()
    video.restart(ssrc=new_ssrc(), sequence=0, timestamp=0)   # next frame is a keyframe
    video.delay = 0.150                                       # sent 150 ms after capture
    await video.stop()

Payloading: VP8 per RFC 7741 (extended 15-bit PictureID, S bit on a frame's first packet,
marker on its last); Opus one frame per packet (marker on the first packet of a talkspurt, i.e.
after a start or restart); H.264 per RFC 6184 (single NAL unit packets, FU-A above the size limit
in packetization-mode 1). Header extensions go at the ids the section offered: sdes:mid,
abs-send-time, transport-wide-cc (one sequence per transport) and, for audio, ssrc-audio-level.

Sender reports (every `sr_interval` seconds, SR + SDES CNAME) map wall-clock NTP time to the RTP
clock of *capture*: a frame captured at t carries timestamp base + (t - t0) * clock rate whether it
is sent at t or, with `delay`, later; the SR sent at t' says NTP(t') <-> base + (t' - t0) * rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import functools
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import av

from loadtest.media import EncodedClip, audio_clip, video_clip
from tests.sfu.zoo.rawpeer import RawPeer, RtcpRecord, RtpRecord
from tests.sfu.zoo.rtp import (
    RTCP_SR,
    RtpHeader,
    abs_send_time,
    build_rtp,
    bye,
    ntp_from_unix,
    parse_rtcp,
    sdes_cname,
    sender_report,
    unix_from_ntp,
)
from tests.sfu.zoo.shapes import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_TWCC,
    Section,
    new_ssrc,
)

__all__ = ["Analysis", "Publisher", "SentPacket", "StreamStats", "audio_clip", "h264_clip",
           "video_clip"]

MAX_PAYLOAD = 1100


# ---- payloaders ----


def vp8_payloads(frame: bytes, picture_id: int, max_size: int = MAX_PAYLOAD) -> list[bytes]:
    """RFC 7741: X=1 with I=1 and a 15-bit PictureID (M=1) in every packet, S=1 on the first."""
    pid = bytes([0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF])
    room = max_size - 4
    chunks = [frame[i:i + room] for i in range(0, len(frame), room)] or [b""]
    return [bytes([0x90 if i == 0 else 0x80, 0x80]) + pid + chunk
            for i, chunk in enumerate(chunks)]


def annexb_nal_units(data: bytes) -> list[bytes]:
    """Split an Annex B byte stream on its start codes."""
    units: list[bytes] = []
    i, start = 0, -1
    n = len(data)
    while i + 2 < n:
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            if start >= 0:
                units.append(data[start:i].rstrip(b"\x00") if i > start else b"")
            i += 3
            start = i
        else:
            i += 1
    if start >= 0:
        units.append(data[start:])
    return [u for u in units if u]


def h264_payloads(access_unit: bytes, max_size: int = MAX_PAYLOAD,
                  packetization_mode: int = 1) -> list[bytes]:
    """RFC 6184: a single NAL unit packet per NAL unit, FU-A for those above `max_size`
    (mode 1; in mode 0 an oversized NAL unit is sent whole, as mode 0 has no fragmentation)."""
    out: list[bytes] = []
    for nal in annexb_nal_units(access_unit):
        if len(nal) <= max_size or packetization_mode == 0:
            out.append(nal)
            continue
        indicator = (nal[0] & 0xE0) | 28
        nal_type = nal[0] & 0x1F
        body = nal[1:]
        room = max_size - 2
        pieces = [body[i:i + room] for i in range(0, len(body), room)]
        for i, piece in enumerate(pieces):
            header = nal_type | (0x80 if i == 0 else 0) | (0x40 if i == len(pieces) - 1 else 0)
            out.append(bytes([indicator, header]) + piece)
    return out


def vp8_keyframe(payload: bytes) -> bool:
    """Whether a received VP8 RTP payload starts a keyframe."""
    if not payload:
        return False
    first = payload[0]
    offset = 1
    if first & 0x80:
        if len(payload) < 2:
            return False
        ext = payload[1]
        offset = 2
        if ext & 0x80:
            offset += 2 if len(payload) > offset and payload[offset] & 0x80 else 1
        if ext & 0x40:
            offset += 1
        if ext & 0x30:
            offset += 1
    start = bool(first & 0x10) and (first & 0x07) == 0
    return start and len(payload) > offset and not payload[offset] & 0x01


def h264_keyframe(payload: bytes) -> bool:
    """Whether a received H.264 RTP payload carries (the start of) an IDR, SPS or PPS."""
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == 28 and len(payload) > 1:
        return bool(payload[1] & 0x80) and (payload[1] & 0x1F) == 5
    if nal_type == 24:
        i = 1
        while i + 2 < len(payload):
            size = int.from_bytes(payload[i:i + 2], "big")
            if payload[i + 2] & 0x1F in (5, 7, 8):
                return True
            i += 2 + size
        return False
    return nal_type in (5, 7, 8)


@functools.lru_cache(maxsize=4)
def h264_clip(width: int = 320, height: int = 240, fps: int = 30, seconds: float = 2.0,
              keyframe_interval: float = 1.0, max_nal: int = 1000) -> EncodedClip:
    """A constrained-baseline H.264 clip (Annex B access units), IDR first with SPS/PPS before
    every IDR, slices no larger than `max_nal` so that packetization-mode 0 can carry it."""
    gop = max(1, round(keyframe_interval * fps))
    codec = av.CodecContext.create("libx264", "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.framerate = fractions.Fraction(fps, 1)
    codec.options = {
        "preset": "ultrafast", "tune": "zerolatency", "profile": "baseline",
        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:"
                       f"slice-max-size={max_nal}:repeat-headers=1",
    }
    count = max(1, round(seconds * fps))
    rng = random.Random(7)
    size = width * height
    texture = rng.randbytes(size // 4) * 8  # moving noise: every frame costs bits
    frames: list[bytes] = []
    keys: list[bool] = []
    for i in range(count):
        frame = av.VideoFrame(width, height, "yuv420p")
        if frame.planes[0].line_size != width:
            raise RuntimeError("choose a width that is a multiple of 64")
        shift = (i * 7 * width) % size
        frame.planes[0].update(texture[shift:shift + size])
        frame.planes[1].update(bytes([(90 + i) & 0xFF]) * frame.planes[1].buffer_size)
        frame.planes[2].update(bytes([160]) * frame.planes[2].buffer_size)
        frame.pts = i
        frame.time_base = fractions.Fraction(1, fps)
        frame.pict_type = (av.video.frame.PictureType.I if i % gop == 0
                           else av.video.frame.PictureType.NONE)
        for packet in codec.encode(frame):
            frames.append(bytes(packet))
            keys.append(bool(packet.is_keyframe))
    for packet in codec.encode(None):
        frames.append(bytes(packet))
        keys.append(bool(packet.is_keyframe))
    if not frames or not keys[0]:
        raise RuntimeError("libx264 did not start with a keyframe")
    return EncodedClip(kind="video", clock_rate=90000, frame_duration=90000 // fps,
                       frames=tuple(frames[:count]), keyframes=tuple(keys[:count]))


# ---- the publisher ----


@dataclass(slots=True)
class SentPacket:
    ssrc: int
    sequence: int
    timestamp: int
    payload_type: int
    marker: bool
    keyframe: bool  # the packet belongs to a keyframe
    capture: float  # monotonic capture time of its frame
    sent: float  # monotonic
    size: int


@dataclass(slots=True)
class SentReport:
    sent: float
    ssrc: int
    ntp: int
    rtp_timestamp: int
    packets: int
    octets: int


class Publisher:
    """Sends one clip on one m-section of a RawPeer, in real time, until stopped."""

    def __init__(self, peer: RawPeer, section: Section, clip: EncodedClip, *,
                 codec: str | None = None, payload_type: int | None = None,
                 ssrc: int | None = None, sequence: int | None = None,
                 timestamp: int | None = None, delay: float = 0.0, sr_interval: float = 1.0,
                 max_payload: int = MAX_PAYLOAD, max_lag: float = 0.5,
                 extensions: bool = True, answer_keyframe_requests: bool = True) -> None:
        self.peer = peer
        self.section = section
        self.clip = clip
        self.kind = clip.kind
        self.codec = codec or ("opus" if clip.kind == "audio" else "VP8")
        if payload_type is None:
            payload_type = section.payload_type(self.codec)
        self.payload_type = payload_type
        chosen = next((c for c in section.codecs if c.pt == payload_type), None)
        params = chosen.params if chosen is not None else {}
        self.packetization_mode = int(params.get("packetization-mode", "0") or 0)
        self.ssrc = ssrc if ssrc is not None else (section.ssrc or new_ssrc())
        self.sequence = sequence if sequence is not None else random.randrange(1 << 16)
        self.timestamp_base = (timestamp if timestamp is not None
                               else random.randrange(1 << 32))
        self.delay = delay
        self.sr_interval = sr_interval
        self.max_payload = max_payload
        self.max_lag = max_lag
        self.answer_keyframe_requests = answer_keyframe_requests
        self.ext_ids: dict[str, int] = {}
        if extensions:
            wanted = [URI_MID, URI_ABS_SEND_TIME, URI_TWCC]
            if self.kind == "audio":
                wanted.append(URI_AUDIO_LEVEL)
            for uri in wanted:
                ext_id = section.extension_id(uri)
                if ext_id is not None:
                    self.ext_ids[uri] = ext_id
        self.sent: list[SentPacket] = []
        self.reports: list[SentReport] = []
        self.frames_sent = 0
        self.keyframe_requests = 0
        self.send_errors = 0
        self.late = 0
        self._packets = 0  # for the SR, per SSRC
        self._octets = 0
        self._index = 0  # position in the clip
        self._picture_id = random.randrange(1 << 15)
        self._wall_offset = time.time() - time.monotonic()
        self._anchor: tuple[float, int] | None = None  # (capture, rtp timestamp)
        self._restart: dict[str, int | None] | None = None
        self._want_keyframe = False
        self._talkspurt = True
        self._next_sr: float | None = None
        self._task: asyncio.Task[None] | None = None
        peer.on_rtcp.append(self._on_rtcp)
        peer.owned.append(self)
        peer.cleanups.append(self.stop)

    # ---- control ----

    def start(self) -> Publisher:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return self

    def restart(self, *, ssrc: int | None = None, sequence: int | None = None,
                timestamp: int | None = None) -> None:
        """Restart the source at the next frame: a new SSRC and/or new sequence/timestamp bases
        (those not given carry on), starting on a keyframe, with a fresh SR."""
        self._restart = {"ssrc": ssrc, "sequence": sequence, "timestamp": timestamp}

    def request_keyframe(self) -> None:
        self._want_keyframe = True

    async def stop(self, *, send_bye: bool = False) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._on_rtcp in self.peer.on_rtcp:
            self.peer.on_rtcp.remove(self._on_rtcp)
        if send_bye and self.peer.connected:
            with contextlib.suppress(ConnectionError):
                await self.peer.send_rtcp(bye([self.ssrc]))

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # ---- clock ----

    def wall(self, monotonic: float) -> float:
        return monotonic + self._wall_offset

    def rtp_timestamp_at(self, capture: float) -> int:
        assert self._anchor is not None
        anchor_capture, anchor_ts = self._anchor
        return (anchor_ts + round((capture - anchor_capture) * self.clip.clock_rate)) & 0xFFFFFFFF

    def capture_wall_time(self, packet: SentPacket) -> float:
        return self.wall(packet.capture)

    # ---- the loop ----

    async def _run(self) -> None:
        clip = self.clip
        interval = clip.frame_duration / clip.clock_rate
        origin = time.monotonic()
        self._anchor = (origin, self.timestamp_base)
        n = 0
        while True:
            capture = origin + n * interval
            due = capture + self.delay
            now = time.monotonic()
            if now - due > self.max_lag:  # the loop fell behind: skip ahead, like an encoder
                self.late += 1
                skipped = int((now - self.delay - origin) / interval)
                n = max(n + 1, skipped)
                continue
            if due > now:
                await asyncio.sleep(due - now)
            await self._send_frame(capture)
            n += 1
            now = time.monotonic()
            if self._next_sr is None or now >= self._next_sr:
                await self._send_report(now)
                self._next_sr = now + self.sr_interval

    def _apply_restart(self, capture: float) -> None:
        change = self._restart
        self._restart = None
        assert change is not None
        if change["ssrc"] is not None:
            self.ssrc = change["ssrc"]
            self._packets = self._octets = 0
        if change["sequence"] is not None:
            self.sequence = change["sequence"] & 0xFFFF
        if change["timestamp"] is not None:
            self._anchor = (capture, change["timestamp"] & 0xFFFFFFFF)
            self.timestamp_base = change["timestamp"] & 0xFFFFFFFF
        self._want_keyframe = True
        self._talkspurt = True
        self._next_sr = None

    def _seek_keyframe(self) -> None:
        keys = self.clip.keyframes
        for step in range(len(keys)):
            index = (self._index + step) % len(keys)
            if keys[index]:
                self._index = index
                return

    async def _send_frame(self, capture: float) -> None:
        if self._restart is not None:
            self._apply_restart(capture)
        if self._want_keyframe:
            self._want_keyframe = False
            self._seek_keyframe()
        clip = self.clip
        frame = clip.frames[self._index]
        keyframe = clip.keyframes[self._index]
        self._index = (self._index + 1) % len(clip.frames)
        timestamp = self.rtp_timestamp_at(capture)
        if self.kind == "audio":
            payloads = [frame]
        elif self.codec.upper() == "H264":
            payloads = h264_payloads(frame, self.max_payload, self.packetization_mode)
        else:
            payloads = vp8_payloads(frame, self._picture_id, self.max_payload)
            self._picture_id = (self._picture_id + 1) & 0x7FFF
        for i, payload in enumerate(payloads):
            if self.kind == "audio":
                marker = self._talkspurt
                self._talkspurt = False
            else:
                marker = i == len(payloads) - 1
            header = RtpHeader(self.payload_type, self.sequence, timestamp, self.ssrc, marker,
                               extensions=self._extensions())
            data = build_rtp(header, payload)
            self.sequence = (self.sequence + 1) & 0xFFFF
            try:
                await self.peer.send_rtp(data)
            except ConnectionError:
                self.send_errors += 1
                continue
            self._packets += 1
            self._octets += len(payload)
            self.sent.append(SentPacket(self.ssrc, header.sequence, timestamp,
                                        self.payload_type, marker, keyframe, capture,
                                        time.monotonic(), len(data)))
        self.frames_sent += 1

    def _extensions(self) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        ids = self.ext_ids
        if URI_MID in ids and self.section.mid is not None:
            out[ids[URI_MID]] = self.section.mid.encode()
        if URI_ABS_SEND_TIME in ids:
            out[ids[URI_ABS_SEND_TIME]] = abs_send_time()
        if URI_TWCC in ids:
            out[ids[URI_TWCC]] = self.peer.next_transport_sequence().to_bytes(2, "big")
        if URI_AUDIO_LEVEL in ids:
            out[ids[URI_AUDIO_LEVEL]] = bytes([0x80 | 30])  # voice, -30 dBov
        return out

    async def _send_report(self, now: float) -> None:
        if self._anchor is None:
            return
        ntp = ntp_from_unix(self.wall(now))
        rtp_ts = self.rtp_timestamp_at(now)  # the capture clock at `now`, whatever the delay
        data = sender_report(self.ssrc, ntp, rtp_ts, self._packets, self._octets)
        data += sdes_cname(self.ssrc, self.peer.shape.cname or "zoo")
        try:
            await self.peer.send_rtcp(data)
        except ConnectionError:
            self.send_errors += 1
            return
        self.reports.append(SentReport(now, self.ssrc, ntp, rtp_ts, self._packets,
                                       self._octets))

    def _on_rtcp(self, record: RtcpRecord) -> None:
        if not self.answer_keyframe_requests:
            return
        for packet in record.packets:
            if (packet.is_pli and packet.media_ssrc == self.ssrc) or (
                    packet.is_fir and self.ssrc in packet.fir_ssrcs):
                self.keyframe_requests += 1
                self._want_keyframe = True


# ---- receiver-side analysis ----


def _signed(delta: int, bits: int) -> int:
    half = 1 << (bits - 1)
    return ((delta + half) % (1 << bits)) - half


@dataclass
class StreamStats:
    """What arrived on one SSRC, in arrival order."""

    ssrc: int
    packets: int = 0
    payload_types: set[int] = field(default_factory=set)
    first_sequence: int | None = None
    last_sequence: int | None = None
    sequence_steps: Counter[int] = field(default_factory=Counter)
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (after, next) where step != 1
    timestamp_steps: Counter[int] = field(default_factory=Counter)  # between distinct timestamps
    markers: int = 0

    @property
    def continuous(self) -> bool:
        """Every sequence step was +1 (no loss, jump, duplicate or reordering)."""
        return not self.gaps

    @property
    def largest_jump(self) -> int:
        return max((abs(s) for s in self.sequence_steps), default=0)


@dataclass(slots=True)
class ReceivedReport:
    arrival: float
    ssrc: int
    ntp: int
    rtp_timestamp: int
    packets: int
    octets: int


class Analysis:
    """Per-SSRC statistics of recorded packets, and capture times through the sender reports.

    `Analysis(peer.received_rtp, peer.received_rtcp)`; `stats(ssrc)`; `capture_time(packet,
    clock_rate)` is the packet's capture time (Unix seconds) by the latest SR for its SSRC that
    arrived before it (the earliest SR if none did)."""

    def __init__(self, rtp: Sequence[RtpRecord], rtcp: Sequence[RtcpRecord] = ()) -> None:
        self.rtp = list(rtp)
        self.reports: dict[int, list[ReceivedReport]] = {}
        for record in rtcp:
            for p in parse_rtcp(record.data):
                if p.packet_type == RTCP_SR and p.ntp is not None:
                    self.reports.setdefault(p.ssrc, []).append(ReceivedReport(
                        record.arrival, p.ssrc, p.ntp, p.rtp_timestamp or 0,
                        p.packet_count or 0, p.octet_count or 0))

    def ssrcs(self) -> list[int]:
        return sorted({r.ssrc for r in self.rtp})

    def packets(self, ssrc: int) -> list[RtpRecord]:
        return [r for r in self.rtp if r.ssrc == ssrc]

    def stats(self, ssrc: int) -> StreamStats:
        stats = StreamStats(ssrc)
        last_ts: int | None = None
        for record in self.packets(ssrc):
            stats.packets += 1
            stats.payload_types.add(record.payload_type)
            stats.markers += record.marker
            if stats.first_sequence is None:
                stats.first_sequence = record.sequence
            elif stats.last_sequence is not None:
                step = _signed(record.sequence - stats.last_sequence, 16)
                stats.sequence_steps[step] += 1
                if step != 1:
                    stats.gaps.append((stats.last_sequence, record.sequence))
            stats.last_sequence = record.sequence
            if last_ts is not None and record.timestamp != last_ts:
                stats.timestamp_steps[_signed(record.timestamp - last_ts, 32)] += 1
            last_ts = record.timestamp
        return stats

    def sender_reports(self, ssrc: int) -> list[ReceivedReport]:
        return list(self.reports.get(ssrc, []))

    def capture_time(self, packet: RtpRecord, clock_rate: int) -> float | None:
        reports = self.reports.get(packet.ssrc)
        if not reports:
            return None
        before = [r for r in reports if r.arrival <= packet.arrival]
        sr = before[-1] if before else reports[0]
        elapsed = _signed(packet.timestamp - sr.rtp_timestamp, 32) / clock_rate
        return unix_from_ntp(sr.ntp) + elapsed
