"""A bot participant: a real aiortc peer that joins an SFU room, publishes synthetic audio and
video, and decodes what it receives, so tests and load tests can check what arrived.

Its video is a flat colour of its own choosing, so a receiver can tell whose picture it decodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from loadtest.ice import (
    ClientNetwork,
    add_bundled_candidates,
    bind_peer_connection,
    rtc_configuration,
)

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
AUDIO_RATE = 48_000


@dataclass(frozen=True, slots=True)
class Colour:
    """A flat picture in YUV (BT.601 limited range)."""

    y: int
    u: int
    v: int


RED = Colour(81, 90, 240)
BLUE = Colour(41, 240, 110)


class ColourVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, colour: Colour, width: int = 320, height: int = 240, fps: int = 30):
        super().__init__()
        self.colour = colour
        self.width, self.height, self.fps = width, height, fps
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        self._count += 1
        due = self._start + self._count / self.fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for plane, value in zip(frame.planes, (self.colour.y, self.colour.u, self.colour.v),
                                strict=True):
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts = self._count * VIDEO_CLOCK // self.fps
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


class ToneAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, frequency: float = 440.0, ptime: float = 0.02) -> None:
        super().__init__()
        self.frequency = frequency
        self.samples = int(AUDIO_RATE * ptime)
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._pts / AUDIO_RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        buf = bytearray()
        for i in range(self.samples):
            t = (self._pts + i) / AUDIO_RATE
            sample = int(8000 * math.sin(2 * math.pi * self.frequency * t))
            buf += sample.to_bytes(2, "little", signed=True)
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.samples)
        frame.planes[0].update(bytes(buf))
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._pts += self.samples
        return frame


@dataclass
class Received:
    video_frames: int = 0
    audio_frames: int = 0
    last_colour: Colour | None = None
    colours: list[Colour] = field(default_factory=list)


def _mean_colour(frame: av.VideoFrame) -> Colour:
    values = []
    for plane in frame.planes:
        data = bytes(plane)
        # sample the middle row, away from encoder edge effects
        row = plane.line_size * (plane.height // 2)
        middle = data[row + plane.width // 4: row + 3 * plane.width // 4]
        values.append(sum(middle) // max(1, len(middle)))
    return Colour(values[0], values[1], values[2])


class Bot:
    """One participant. `await bot.join()`, then watch `bot.received`; `await bot.close()`."""

    def __init__(self, ws_url: str, token: str, *, colour: Colour = RED,
                 net: ClientNetwork | None = None,
                 ice_servers: Sequence[Mapping[str, Any]] = (), relay_only: bool = False,
                 camera: bool = True) -> None:
        self.ws_url = ws_url
        self.token = token
        self.colour = colour
        self.net = net or ClientNetwork()
        self.ice_servers = ice_servers  # as `call:start` hands them out
        self.relay_only = relay_only  # every candidate through TURN
        self.camera = camera  # False: audio only, like a browser without a camera
        self.received = Received()
        self.pc: RTCPeerConnection | None = None
        self.closed_reason: str | None = None
        self.errors: list[dict[str, Any]] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._answers: asyncio.Queue[str] = asyncio.Queue()

    async def join(self, wait: float = 20.0) -> None:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.ws_url)
        await self._ws.send_json({"type": "join", "token": self.token})
        joined = await self._ws.receive_json(timeout=wait)
        if joined.get("type") != "joined":
            raise RuntimeError(f"join refused: {joined}")
        self._spawn(self._read())
        pc = RTCPeerConnection(rtc_configuration(self.ice_servers, relay_only=self.relay_only))
        self.pc = pc
        pc.addTrack(ToneAudioTrack())
        if self.camera:
            pc.addTrack(ColourVideoTrack(self.colour))
        if not self.relay_only:  # relay only: no host candidates to bind
            bind_peer_connection(pc, self.net)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._spawn(self._consume(track))

        await self.negotiate(wait)

    async def negotiate(self, wait: float = 20.0) -> None:
        assert self.pc is not None and self._ws is not None
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self._ws.send_json({"type": "offer", "sdp": self.pc.localDescription.sdp})
        answer = await asyncio.wait_for(self._answers.get(), wait)
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await add_bundled_candidates(self.pc, answer)

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            message = msg.json()
            if message.get("type") == "answer":
                self._answers.put_nowait(message["sdp"])
            elif message.get("type") == "closed":
                self.closed_reason = message.get("reason")
            elif message.get("type") == "error":
                self.errors.append(message)

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):
                    self.received.video_frames += 1
                    colour = _mean_colour(frame)
                    self.received.last_colour = colour
                else:
                    self.received.audio_frames += 1

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def leave(self) -> None:
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError):
                await self._ws.send_json({"type": "leave"})

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        if self._ws is not None:
            await self._ws.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
