"""Bots that receive without decoding: they count what arrives instead.

aiortc's receivers decode every track, which is far too much CPU for a load test with many
bots per process. `PacketCounter` takes the decrypted RTP at the bot's DTLS transport
(`RTCDtlsTransport._handle_rtp_data`, a private aiortc seam, replaced on the instance) and only
counts: packets and bytes per kind, and the packets expected from the sequence numbers, so loss
shows as gaps. It also counts what the bot sends (wrapping `_send_rtp`). The aiortc receivers
then see no RTP at all: their decoder threads idle, and they send no NACKs, PLIs or REMB, so
measured loss is raw loss, without retransmissions.

`CountingBot` joins an SFU room over the join protocol (docs/protocol.md), publishes
pre-encoded media (loadtest/media.py) and counts with a `PacketCounter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import is_rtcp
from aiortc.sdp import SessionDescription

from loadtest.ice import ClientNetwork, bind_peer_connection
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


class _Sequence:
    """Extended highest sequence number and count of one received stream."""

    __slots__ = ("base", "highest", "kind", "received")

    def __init__(self, kind: Kind, seq: int) -> None:
        self.kind = kind
        self.base = seq
        self.highest = seq
        self.received = 1

    def update(self, seq: int) -> None:
        delta = (seq - self.highest) & 0xFFFF
        if delta < 0x8000:  # newer (or a duplicate); otherwise late and already expected
            self.highest += delta
        self.received += 1

    @property
    def expected(self) -> int:
        return self.highest - self.base + 1


RtpHandler = Callable[..., Awaitable[None]]


class PacketCounter:
    """Counts one peer connection's RTP, both ways, without letting aiortc decode anything.

    `attach(pc)` after the remote description is set (the payload types come from it) and
    before the connection is up, so no RTP reaches aiortc's receivers.
    """

    def __init__(self) -> None:
        self._counts: dict[Kind, KindCounts] = {kind: KindCounts() for kind in KINDS}
        self._payload_types: dict[int, tuple[Kind, bool]] = {}  # pt -> (kind, is_rtx)
        self._streams: dict[int, _Sequence] = {}
        self._attached: list[RTCDtlsTransport] = []

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
        transports: list[RTCDtlsTransport] = []
        for transceiver in pc.getTransceivers():
            for dtls in (transceiver.receiver.transport, transceiver.sender.transport):
                if dtls is not None and all(dtls is not t for t in transports):
                    transports.append(dtls)
        for dtls in transports:
            self._wrap(dtls)

    def _wrap(self, dtls: RTCDtlsTransport) -> None:
        send_rtp = dtls._send_rtp

        async def handle_rtp_data(data: bytes, arrival_time_ms: int = 0) -> None:
            self.on_received(data)

        async def counting_send_rtp(data: bytes) -> None:
            await send_rtp(data)
            self.on_sent(data)

        dtls._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]
        dtls._send_rtp = counting_send_rtp  # type: ignore[method-assign]
        self._attached.append(dtls)

    def on_received(self, data: bytes) -> None:
        if len(data) < 12:
            return
        found = self._payload_types.get(data[1] & 0x7F)
        if found is None:
            return
        kind, rtx = found
        counts = self._counts[kind]
        if rtx:
            counts.rtx_received += 1
            return
        counts.received += 1
        counts.received_bytes += len(data)
        seq = (data[2] << 8) | data[3]
        ssrc = int.from_bytes(data[8:12], "big")
        stream = self._streams.get(ssrc)
        if stream is None:
            self._streams[ssrc] = _Sequence(kind, seq)
        else:
            stream.update(seq)

    def on_sent(self, data: bytes) -> None:
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


BotState = Literal["new", "joining", "connected", "failed", "closed"]


class CountingBot:
    """One participant publishing pre-encoded media and counting what it receives.

    `await bot.join()`; read `bot.counter.snapshot()`; `await bot.close()` (idempotent).
    """

    def __init__(
        self, ws_url: str, token: str, video: EncodedClip, audio: EncodedClip, *,
        start: int = 0, net: ClientNetwork | None = None,
    ) -> None:
        self.ws_url = ws_url
        self.token = token
        self.net = net or ClientNetwork()
        self.counter = PacketCounter()
        self.video_track = EncodedTrack(video, start=start)
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
        return self.video_track.late + self.audio_track.late

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
        await self._ws.send_json({"type": "join", "token": self.token})
        joined = await self._ws.receive_json(timeout=wait)
        if joined.get("type") != "joined":
            raise RuntimeError(f"join refused: {joined}")
        self._reader = asyncio.ensure_future(self._read())
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[],
                                                bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.pc = pc
        pc.addTrack(self.audio_track)
        pc.addTrack(self.video_track)
        bind_peer_connection(pc, self.net)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected" and self.state == "joining":
                self.state = "connected"
            elif pc.connectionState == "failed" and self.state != "closed":
                self.state = "failed"

        await pc.setLocalDescription(await pc.createOffer())
        await self._ws.send_json({"type": "offer", "sdp": pc.localDescription.sdp})
        answer = await asyncio.wait_for(self._answers.get(), wait)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
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
