"""Bots that receive without decoding: they count what arrives instead.

aiortc's receivers decode every track, which is far too much CPU for a load test with many
bots per process. `PacketCounter` takes the decrypted RTP at the bot's DTLS transport
(`RTCDtlsTransport._handle_rtp_data`, a private aiortc seam, replaced on the instance) and only
counts: packets and bytes per kind, and the packets expected from the sequence numbers, so loss
shows as gaps. It also counts what the bot sends (wrapping `_send_rtp`). The aiortc receivers
then see no RTP at all: their decoder threads idle, and they send no NACKs, PLIs or REMB, so
measured loss is raw loss, without retransmissions.

Without decoding it still measures, per received stream (`StreamStats`): frames (RTP marker
bits on video), the first complete keyframe (VP8 payload descriptor or H.264 NAL types, every
packet of the frame present), RFC 3550 interarrival jitter, and loss from sequence gaps. RTCP
from the SFU still goes to aiortc (its senders see receiver reports, NACKs and keyframe
requests) and is also read (`_handle_rtcp_data`, wrapped) for the round-trip time (RFC 3550
6.4.1: the report blocks' LSR and DLSR against the sender reports this bot sent).

`CountingBot` joins an SFU room over the join protocol (docs/protocol.md), publishes
pre-encoded media (loadtest/media.py) and counts with a `PacketCounter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import aiohttp
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import is_rtcp
from aiortc.sdp import SessionDescription

from loadtest.ice import (
    ClientNetwork,
    add_bundled_candidates,
    bind_peer_connection,
    rtc_configuration,
)
from loadtest.media import EncodedClip, EncodedTrack

log = logging.getLogger(__name__)

Kind = Literal["audio", "video"]
KINDS: tuple[Kind, Kind] = ("audio", "video")


@dataclass(slots=True)
class KindCounts:
    """What one bot sent and received of one kind of media (RTX counted apart)."""

    sent: int = 0
    sent_bytes: int = 0
    rtx_sent: int = 0
    received: int = 0
    received_bytes: int = 0
    expected: int = 0  # from the sequence numbers of the streams received
    rtx_received: int = 0

    def add(self, other: KindCounts) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def minus(self, other: KindCounts) -> KindCounts:
        return KindCounts(**{k: v - getattr(other, k) for k, v in asdict(self).items()})

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KindCounts:
        return cls(**{k: int(data.get(k, 0)) for k in asdict(cls())})


@dataclass(frozen=True, slots=True)
class StreamStats:
    """What one bot received of one stream, measured without decoding."""

    kind: Kind
    packets: int
    expected: int
    bytes: int
    frames: int  # video: RTP marker bits; audio: packets
    seconds: float  # first to last packet received
    jitter_ms: float
    first_keyframe_at: float | None  # time.monotonic() of the first complete keyframe

    @property
    def loss_pct(self) -> float:
        return max(0.0, 100.0 * (self.expected - self.packets) / self.expected) \
            if self.expected else 0.0

    @property
    def fps(self) -> float:
        # n frames from the first packet to the last span n - 1 frame intervals
        return (self.frames - 1) / self.seconds if self.seconds > 0 and self.frames > 1 else 0.0

    @property
    def kbps(self) -> float:
        return self.bytes * 8 / self.seconds / 1000 if self.seconds > 0 else 0.0


def rtp_payload_offset(data: bytes) -> int | None:
    """Where an RTP packet's payload starts (after CSRCs and a header extension)."""
    offset = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
    return offset if offset < len(data) else None


def vp8_frame_start(payload: bytes) -> tuple[bool, bool] | None:
    """(starts a frame, is a keyframe) from a VP8 RTP payload (RFC 7741 4.2), or None."""
    if not payload:
        return None
    first = payload[0]
    start = bool(first & 0x10) and (first & 0x07) == 0
    offset = 1
    if first & 0x80:  # X: extended control bits
        if len(payload) < 2:
            return None
        ext = payload[1]
        offset = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if len(payload) <= offset:
                return None
            offset += 2 if payload[offset] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            offset += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX
            offset += 1
    if not start:
        return (False, False)
    if len(payload) <= offset:
        return None
    return (True, not payload[offset] & 0x01)  # P bit clear: a keyframe


def h264_frame_start(payload: bytes) -> tuple[bool, bool] | None:
    """(starts a NAL unit sequence, carries an IDR or SPS) from an H.264 RTP payload."""
    if not payload:
        return None
    nal = payload[0] & 0x1F
    if nal == 28:  # FU-A
        if len(payload) < 2:
            return None
        start = bool(payload[1] & 0x80)
        return (start, start and (payload[1] & 0x1F) in (5, 7))
    if nal == 24:  # STAP-A: NAL units with 16-bit sizes
        offset, key = 1, False
        while offset + 2 < len(payload):
            size = int.from_bytes(payload[offset:offset + 2], "big")
            key = key or (payload[offset + 2] & 0x1F) in (5, 7)
            offset += 2 + size
        return (True, key)
    return (True, nal in (5, 7))


class _Stream:
    """One received stream: sequence numbers, jitter, frames and keyframes."""

    __slots__ = (
        "base",
        "bytes",
        "clock_rate",
        "codec",
        "first_at",
        "first_keyframe_at",
        "frame_key",
        "frame_packets",
        "frame_seq",
        "frame_ts",
        "frames",
        "highest",
        "jitter",
        "kind",
        "last_at",
        "last_ts",
        "received",
        "ts_at",
    )

    def __init__(self, kind: Kind, seq: int, codec: str = "", clock_rate: int = 0) -> None:
        self.kind = kind
        self.codec = codec
        self.clock_rate = clock_rate
        self.base = seq
        self.highest = seq - 1
        self.received = 0
        self.bytes = 0
        self.frames = 0
        self.first_at = self.last_at = self.ts_at = 0.0
        self.last_ts: int | None = None
        self.jitter = 0.0  # in clock ticks
        self.first_keyframe_at: float | None = None
        self.frame_ts: int | None = None  # the video frame being assembled
        self.frame_seq = 0
        self.frame_key = False
        self.frame_packets = 0

    def update(self, seq: int) -> None:
        delta = (seq - self.highest) & 0xFFFF
        if delta < 0x8000:  # newer (or a duplicate); otherwise late and already expected
            self.highest += delta
        self.received += 1

    def on_packet(self, data: bytes, now: float) -> None:
        self.update((data[2] << 8) | data[3])
        self.bytes += len(data)
        if self.received == 1:
            self.first_at = now
        timestamp = int.from_bytes(data[4:8], "big")
        if timestamp != self.last_ts:  # jitter from the first packet of each timestamp
            if self.clock_rate and self.last_ts is not None:
                ts_delta = (timestamp - self.last_ts) & 0xFFFFFFFF
                if ts_delta >= 0x80000000:
                    ts_delta -= 0x100000000
                d = (now - self.ts_at) * self.clock_rate - ts_delta
                self.jitter += (abs(d) - self.jitter) / 16
            self.last_ts, self.ts_at = timestamp, now
        self.last_at = now
        if self.kind == "audio":
            self.frames += 1
            return
        marker = bool(data[1] & 0x80)
        if marker:
            self.frames += 1
        if self.first_keyframe_at is None:
            self._assemble(data, timestamp, marker, now)

    def _assemble(self, data: bytes, timestamp: int, marker: bool, now: float) -> None:
        """Watch for the first keyframe whose packets all arrived (in order, as on loopback)."""
        seq = (data[2] << 8) | data[3]
        offset = rtp_payload_offset(data)
        payload = data[offset:] if offset is not None else b""
        start = (h264_frame_start(payload) if self.codec == "h264"
                 else vp8_frame_start(payload))
        if self.frame_ts != timestamp:
            self.frame_ts, self.frame_key, self.frame_packets = timestamp, False, 0
            self.frame_seq = -1
        if start is not None and start[0] and self.frame_seq < 0:
            self.frame_seq = seq
            self.frame_key = start[1]
        elif start is not None and start[1]:
            self.frame_key = True  # H.264: the IDR after an SPS/PPS packet
        self.frame_packets += 1
        if marker and self.frame_key and self.frame_seq >= 0 and \
                ((seq - self.frame_seq) & 0xFFFF) + 1 == self.frame_packets:
            self.first_keyframe_at = now

    @property
    def expected(self) -> int:
        return self.highest - self.base + 1

    def stats(self) -> StreamStats:
        return StreamStats(
            kind=self.kind, packets=self.received, expected=self.expected, bytes=self.bytes,
            frames=self.frames, seconds=max(0.0, self.last_at - self.first_at),
            jitter_ms=1000 * self.jitter / self.clock_rate if self.clock_rate else 0.0,
            first_keyframe_at=self.first_keyframe_at)


def _compact_ntp(sr: bytes) -> int:
    """The middle 32 bits of a sender report's NTP timestamp (the LSR a receiver echoes)."""
    return int.from_bytes(sr[10:14], "big")


def report_blocks(data: bytes) -> list[tuple[int, int, int]]:
    """(ssrc, lsr, dlsr) of every report block of a compound RTCP packet (SR and RR)."""
    found: list[tuple[int, int, int]] = []
    offset = 0
    while offset + 8 <= len(data):
        count, kind = data[offset] & 0x1F, data[offset + 1]
        length = 4 * (int.from_bytes(data[offset + 2:offset + 4], "big") + 1)
        body = offset + 8 + (20 if kind == 200 else 0)
        if kind in (200, 201):
            for i in range(count):
                block = body + 24 * i
                if block + 24 > offset + length or block + 24 > len(data):
                    break
                found.append((int.from_bytes(data[block:block + 4], "big"),
                              int.from_bytes(data[block + 16:block + 20], "big"),
                              int.from_bytes(data[block + 20:block + 24], "big")))
        offset += length
    return found


RtpHandler = Callable[..., Awaitable[None]]


class PacketCounter:
    """Counts one peer connection's RTP, both ways, without letting aiortc decode anything.

    `attach(pc)` after the remote description is set (the payload types come from it) and
    before the connection is up, so no RTP reaches aiortc's receivers.
    """

    def __init__(self) -> None:
        self._counts: dict[Kind, KindCounts] = {kind: KindCounts() for kind in KINDS}
        self._payload_types: dict[int, tuple[Kind, bool]] = {}  # pt -> (kind, is_rtx)
        self._codecs: dict[int, tuple[str, int]] = {}  # pt -> (codec name, clock rate)
        self._streams: dict[int, _Stream] = {}
        self._attached: list[RTCDtlsTransport] = []
        self._sent_srs: dict[int, float] = {}  # LSR -> time.monotonic() it was sent
        self.rtt_ms: list[float] = []

    def attach(self, pc: RTCPeerConnection) -> None:
        remote = pc.remoteDescription
        if remote is None:
            raise RuntimeError("attach the counter after the remote description is set")
        for media in SessionDescription.parse(remote.sdp).media:
            if media.kind not in KINDS:
                continue
            for codec in media.rtp.codecs:
                if codec.payloadType is not None:
                    rtx = codec.mimeType.lower().endswith("/rtx")
                    self._payload_types[codec.payloadType] = (media.kind, rtx)
                    self._codecs[codec.payloadType] = (codec.mimeType.split("/")[-1].lower(),
                                                       codec.clockRate)
        transports: list[RTCDtlsTransport] = []
        for transceiver in pc.getTransceivers():
            for dtls in (transceiver.receiver.transport, transceiver.sender.transport):
                if dtls is not None and all(dtls is not t for t in transports):
                    transports.append(dtls)
        for dtls in transports:
            self._wrap(dtls)

    def _wrap(self, dtls: RTCDtlsTransport) -> None:
        send_rtp = dtls._send_rtp
        handle_rtcp = dtls._handle_rtcp_data

        async def handle_rtp_data(data: bytes, arrival_time_ms: int = 0) -> None:
            self.on_received(data)

        async def handle_rtcp_data(data: bytes) -> None:
            self.on_rtcp(data)
            await handle_rtcp(data)

        async def counting_send_rtp(data: bytes) -> None:
            await send_rtp(data)
            self.on_sent(data)

        dtls._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]
        dtls._handle_rtcp_data = handle_rtcp_data  # type: ignore[method-assign]
        dtls._send_rtp = counting_send_rtp  # type: ignore[method-assign]
        self._attached.append(dtls)

    def on_rtcp(self, data: bytes, now: float | None = None) -> None:
        """Round-trip times from the report blocks about the streams this bot sends."""
        now = time.monotonic() if now is None else now
        for _ssrc, lsr, dlsr in report_blocks(data):
            sent_at = self._sent_srs.get(lsr) if lsr else None
            if sent_at is not None:
                self.rtt_ms.append(max(0.0, 1000 * (now - sent_at - dlsr / 65536)))

    def on_received(self, data: bytes, now: float | None = None) -> None:
        if len(data) < 12:
            return
        pt = data[1] & 0x7F
        found = self._payload_types.get(pt)
        if found is None:
            return
        kind, rtx = found
        counts = self._counts[kind]
        if rtx:
            counts.rtx_received += 1
            return
        counts.received += 1
        counts.received_bytes += len(data)
        ssrc = int.from_bytes(data[8:12], "big")
        stream = self._streams.get(ssrc)
        if stream is None:
            codec, clock_rate = self._codecs.get(pt, ("", 0))
            stream = self._streams[ssrc] = _Stream(kind, (data[2] << 8) | data[3], codec,
                                                   clock_rate)
        stream.on_packet(data, time.monotonic() if now is None else now)

    def on_sent(self, data: bytes) -> None:
        if len(data) >= 28 and data[1] == 200:  # a sender report: remember when, for RTT
            if len(self._sent_srs) > 64:
                self._sent_srs.pop(next(iter(self._sent_srs)))
            self._sent_srs[_compact_ntp(data)] = time.monotonic()
        if len(data) < 12 or is_rtcp(data):
            return
        found = self._payload_types.get(data[1] & 0x7F)
        if found is None:
            return
        kind, rtx = found
        counts = self._counts[kind]
        if rtx:
            counts.rtx_sent += 1
        else:
            counts.sent += 1
            counts.sent_bytes += len(data)

    def snapshot(self) -> dict[Kind, KindCounts]:
        result: dict[Kind, KindCounts] = {}
        for kind in KINDS:
            counts = KindCounts(**asdict(self._counts[kind]))
            counts.expected = sum(s.expected for s in self._streams.values() if s.kind == kind)
            result[kind] = counts
        return result

    def streams(self) -> list[StreamStats]:
        """Per received stream (SSRC): what arrived, in the order the streams began."""
        return [stream.stats() for stream in self._streams.values()]

    def first_keyframe_at(self) -> float | None:
        found = [s.first_keyframe_at for s in self._streams.values()
                 if s.first_keyframe_at is not None]
        return min(found) if found else None


BotState = Literal["new", "joining", "connected", "failed", "closed"]


class JoinRefused(RuntimeError):
    """The SFU answered the join with an error (its `code`), or closed the socket."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"join refused: {code} {message}".strip())
        self.code = code


class CountingBot:
    """One participant publishing pre-encoded media and counting what it receives.

    `await bot.join()`; read `bot.counter.snapshot()`; `await bot.close()` (idempotent).
    """

    def __init__(
        self, ws_url: str, token: str, video: EncodedClip, audio: EncodedClip, *,
        start: int = 0, net: ClientNetwork | None = None, room_id: str | None = None,
        counter: PacketCounter | None = None, video_track: MediaStreamTrack | None = None,
        ice_servers: Sequence[Mapping[str, Any]] = (), relay_only: bool = False,
    ) -> None:
        self.ws_url = ws_url
        self.token = token
        self.room_id = room_id
        self.net = net or ClientNetwork()
        self.ice_servers = ice_servers  # as `call:start` hands them out
        self.relay_only = relay_only  # every candidate through TURN
        self.counter = counter or PacketCounter()
        self.ice_connected_at: float | None = None  # time.monotonic()
        # a track of the caller's (the demo bots' drawn pattern), or the clip replayed
        self.video_track: MediaStreamTrack = video_track or EncodedTrack(video, start=start)
        # a clip can only be sent in its own codec: offer just that one (and RTX)
        self.video_codec = video.codec if video_track is None else ""
        self.audio_track = EncodedTrack(audio, start=start * 5 // 3)
        self.state: BotState = "new"
        self.closed_reason: str | None = None
        self.errors: list[dict[str, Any]] = []
        self.pc: RTCPeerConnection | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._answers: asyncio.Queue[str] = asyncio.Queue()

    @property
    def late(self) -> int:
        """How often the media tracks fell behind real time (an overloaded bot process)."""
        return int(getattr(self.video_track, "late", 0)) + self.audio_track.late

    async def join(self, wait: float = 20.0) -> None:
        self.state = "joining"
        try:
            await asyncio.wait_for(self._join(wait), wait)
        except BaseException:
            self.state = "failed"
            raise

    async def _join(self, wait: float) -> None:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.ws_url)
        join: dict[str, Any] = {"type": "join", "token": self.token}
        if self.room_id is not None:
            join["roomId"] = self.room_id
        await self._ws.send_json(join)
        reply = await self._ws.receive(timeout=wait)
        if reply.type != aiohttp.WSMsgType.TEXT:
            raise JoinRefused(f"sfu_closed_{self._ws.close_code or 1006}")
        joined = reply.json()
        if joined.get("type") != "joined":
            raise JoinRefused(str(joined.get("code", "bad_response")),
                              str(joined.get("message", "")))
        self._reader = asyncio.ensure_future(self._read())
        pc = RTCPeerConnection(rtc_configuration(self.ice_servers, relay_only=self.relay_only))
        self.pc = pc
        pc.addTrack(self.audio_track)
        pc.addTrack(self.video_track)
        if self.video_codec in ("vp8", "h264"):
            wanted = {f"video/{self.video_codec}", "video/rtx"}
            codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs
                      if c.mimeType.lower() in wanted]
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "video":
                    transceiver.setCodecPreferences(codecs)
        if not self.relay_only:  # relay only: no host candidates to bind
            bind_peer_connection(pc, self.net)

        @pc.on("iceconnectionstatechange")
        def on_ice_state() -> None:
            if pc.iceConnectionState in ("completed", "connected") and \
                    self.ice_connected_at is None:
                self.ice_connected_at = time.monotonic()

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected" and self.state == "joining":
                self.state = "connected"
            elif pc.connectionState == "failed" and self.state != "closed":
                self.state = "failed"

        await pc.setLocalDescription(await pc.createOffer())
        await self._ws.send_json({"type": "offer", "sdp": pc.localDescription.sdp})
        answer = await asyncio.wait_for(self._answers.get(), wait)
        if any(m.kind == "video" and m.port == 0 for m in SessionDescription.parse(answer).media):
            raise JoinRefused("video_codec_mismatch", f"the SFU's rooms do not take "
                              f"{self.video_codec or 'our video codec'} (see --video-codec)")
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await add_bundled_candidates(pc, answer)
        self.counter.attach(pc)

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            message = msg.json()
            kind = message.get("type")
            if kind == "answer":
                self._answers.put_nowait(message["sdp"])
            elif kind == "closed":
                self.closed_reason = message.get("reason")
            elif kind == "error":
                self.errors.append(message)

    async def close(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._ws.send_json({"type": "leave"})
        if self.pc is not None:
            await self.pc.close()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
