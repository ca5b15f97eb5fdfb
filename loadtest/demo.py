"""`napalmsky bots`: a few bot users to call from a browser while developing.

Each bot signs up as a guest ("Bot 1", "Bot 2", ...), stays online with heartbeats, accepts
every invite, joins the SFU, sends a moving test pattern with its name and a running UTC clock
drawn on it plus a tone, echoes chat, and is back on the deck after each call.

The picture is drawn and encoded per frame (320x240 at 15 fps, aiortc's own VP8 encoder), not
a looped pre-encoded clip: a clock on a loop would jump back every few seconds, and a live
encoder answers the SFU's keyframe requests, so a browser that joins (or reloads) sees a
picture at once instead of waiting for the clip's next keyframe. It costs a few percent of a
core per bot in a call, which is fine for a handful of demo bots; the load-test bots replay
clips instead. Drawing runs in a worker thread; what the bots receive is counted, not decoded.
"""

from __future__ import annotations

import asyncio
import colorsys
import contextlib
import datetime
import fractions
import functools
import hashlib
import logging
import sys
import time
from typing import Any

import aiohttp
import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from PIL import Image, ImageDraw, ImageFont

from loadtest.counting import CountingBot, JoinRefused
from loadtest.measure import Measurements
from loadtest.media import EncodedClip, audio_clip
from loadtest.runner import PreflightError, install_interrupt, preflight
from loadtest.scenario import PRESETS
from loadtest.wire import (
    SESSION_REFUSED,
    Rest,
    Signaling,
    WireError,
    connect_with_backoff,
    sign_up_guest,
)

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
HEARTBEAT = 30.0
MAX_CHAT = 1000


def _hue(name: str) -> float:
    return hashlib.sha256(name.encode()).digest()[0] / 255


class PatternTrack(MediaStreamTrack):
    """A moving colour-bar pattern with the bot's name and a running clock, drawn per frame."""

    kind = "video"

    def __init__(self, name: str, width: int = 320, height: int = 240, fps: int = 15) -> None:
        super().__init__()
        self.name = name
        self.width, self.height, self.fps = width, height, fps
        self.late = 0
        self._start: float | None = None
        self._count = 0
        self._font = ImageFont.load_default(size=26)
        self._small = ImageFont.load_default(size=18)
        self._background = self._bars()

    def _bars(self) -> Image.Image:
        """Twice as wide as the picture, so a window sliding across it loops seamlessly."""
        image = Image.new("RGB", (2 * self.width, self.height))
        draw = ImageDraw.Draw(image)
        bars = 8
        base = _hue(self.name)
        for i in range(2 * bars):
            r, g, b = colorsys.hsv_to_rgb((base + (i % bars) / bars) % 1.0, 0.55, 0.85)
            x = i * self.width // bars
            draw.rectangle((x, 0, x + self.width // bars, self.height),
                           fill=(int(r * 255), int(g * 255), int(b * 255)))
        return image

    def _draw(self, count: int) -> av.VideoFrame:
        offset = (count * 4) % self.width
        image = self._background.crop((offset, 0, offset + self.width, self.height))
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 0, self.width, 76), fill=(0, 0, 0))
        draw.text((10, 6), self.name, font=self._font, fill=(255, 255, 255))
        now = datetime.datetime.now(datetime.UTC)
        draw.text((10, 44), now.strftime("%H:%M:%S.") + f"{now.microsecond // 100_000} UTC",
                  font=self._small, fill=(255, 220, 90))
        y = self.height - 40
        x = int((self.width - 30) * (0.5 + 0.5 * ((count % 60) / 30 - 1) ** 2))
        draw.ellipse((x, y, x + 30, y + 30), fill=(255, 255, 255))
        frame: av.VideoFrame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]
        frame.pts = count * VIDEO_CLOCK // self.fps
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        self._count += 1
        due = self._start + self._count / self.fps
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.5:
            self.late += 1
        return await asyncio.to_thread(self._draw, self._count)


class DemoBot:
    def __init__(self, name: str, base: str, session: aiohttp.ClientSession,
                 audio: EncodedClip, stop: asyncio.Event, say: Any = None) -> None:
        self.name = name
        self.base = base
        self.session = session
        self.audio = audio
        self.stop = stop
        self.say = say or functools.partial(print, flush=True)
        self.m = Measurements()
        self.rest = Rest(session, base, self.m)
        self.token = ""
        self.user_id = ""
        self.sig: Signaling | None = None
        self.calls = 0

    async def run(self) -> None:
        try:
            auth, _ = await sign_up_guest(self.rest, self.name, "unspecified")
        except WireError as exc:
            hint = (" (raise NAPALMSKY_RATE_SIGNUP_PER_HOUR on the node)"
                    if exc.code == "rate_limited" else "")
            self.say(f"{self.name}: could not sign up: {exc.code} {exc.message}{hint}")
            return
        self.token, self.user_id = auth["token"], auth["user"]["id"]
        heartbeat = asyncio.ensure_future(self._heartbeat())
        try:
            while not self.stop.is_set():
                if not await self._connect():
                    return
                await self._serve()
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            if self.sig is not None:
                await self.sig.close()

    async def _connect(self) -> bool:
        def failed(error: WireError, delay: float) -> None:
            if error.code in SESSION_REFUSED:
                self.say(f"{self.name}: session refused ({error.code}); stopping")
            else:
                self.say(f"{self.name}: cannot connect ({error.code}); retrying in {delay:g} s")

        first = self.sig is None
        self.sig = await connect_with_backoff(self.session, self.base, self.token, self.m,
                                              self.stop, previous=self.sig, max_delay=30.0,
                                              on_error=failed)
        if self.sig is not None and first:
            self.say(f"{self.name} is online: invite it from the deck")
        return self.sig is not None

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            if self.sig is not None and not self.sig.closed.is_set():
                with contextlib.suppress(WireError):
                    await self.sig.request("presence:heartbeat")

    async def _next(self) -> dict[str, Any] | None:
        sig = self.sig
        assert sig is not None
        while not self.stop.is_set() and not sig.closed.is_set():
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(sig.events.get(), 0.5)
        return None

    async def _serve(self) -> None:
        """Answer events until the socket drops or the bots stop."""
        while (event := await self._next()) is not None:
            kind, data = event.get("type"), event.get("data", {})
            if kind == "call:invite":
                caller = data.get("from", {}).get("name", "someone")
                try:
                    assert self.sig is not None
                    await self.sig.request("call:accept", {"inviteId": data.get("inviteId")})
                    self.say(f"{self.name}: accepted {caller}'s invite")
                except WireError as exc:
                    self.say(f"{self.name}: could not accept {caller}'s invite: {exc.code}")
            elif kind == "call:start":
                await self._call(dict(data))

    async def _call(self, start: dict[str, Any]) -> None:
        room_id = str(start.get("roomId"))
        partner = start.get("partner", {}).get("name", "?")
        sfu = start.get("sfu", {})
        media = CountingBot(str(sfu.get("url")), str(sfu.get("token")), self.audio, self.audio,
                            room_id=room_id, video_track=PatternTrack(self.name),
                            ice_servers=start.get("iceServers") or ())
        self.calls += 1
        self.say(f"{self.name}: in a call with {partner}")
        reason = "?"
        try:
            try:
                await media.join(wait=20)
            except (JoinRefused, TimeoutError, aiohttp.ClientError, OSError) as exc:
                self.say(f"{self.name}: media did not join: {exc}")
            while (event := await self._next()) is not None:
                kind, data = event.get("type"), event.get("data", {})
                if data.get("roomId") != room_id:
                    continue
                if kind == "call:ended":
                    reason = str(data.get("reason"))
                    break
                if kind == "room:message" and data.get("from") != self.user_id:
                    text = f"echo: {data.get('text', '')}"[:MAX_CHAT]
                    with contextlib.suppress(WireError):
                        assert self.sig is not None
                        await self.sig.request("room:message", {"roomId": room_id, "text": text})
            else:
                if self.stop.is_set() and self.sig is not None:
                    with contextlib.suppress(WireError):
                        await self.sig.request("room:leave", {"roomId": room_id}, wait=5)
                    reason = "bots stopping"
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(media.close(), 10)
        self.say(f"{self.name}: call with {partner} ended ({reason}); back online")


async def _demo(url: str, count: int, prefix: str, duration: float | None) -> int:
    stop = asyncio.Event()
    install_interrupt(stop)
    try:
        target = await preflight(url, PRESETS["smoke"])
    except PreflightError as exc:
        print(f"napalmsky bots: error: {exc}", file=sys.stderr)
        return 1
    audio = await asyncio.get_running_loop().run_in_executor(None, audio_clip)
    if duration is not None:
        asyncio.get_running_loop().call_later(duration, stop.set)
    async with aiohttp.ClientSession() as session:
        bots = [DemoBot(f"{prefix} {i + 1}", target.url, session, audio, stop)
                for i in range(count)]
        print(f"napalmsky bots: {count} bots joining {target.url}; open it in a browser, sign "
              f"up and invite one. Ctrl-C stops them.", flush=True)
        tasks = [asyncio.ensure_future(bot.run()) for bot in bots]
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        all_done: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*tasks, return_exceptions=True))
        await asyncio.wait([stopping, all_done], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        await stopping
        _, pending = await asyncio.wait(tasks, timeout=20)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, all_done, return_exceptions=True)
    return 0 if any(bot.user_id for bot in bots) else 1


def run_demo_bots(url: str, count: int, prefix: str, duration: float | None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(_demo(url, count, prefix, duration))
