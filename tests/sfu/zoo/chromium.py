"""Headless Debian Chromium as SFU clients: the zoo's browsers, with the settings a test asks for.

`chromium_sfu` runs the SFU in the test's event loop behind an aiohttp server that also serves a
small page (ZOO_PAGE) whose script `window.zoo` joins a room over /sfu/ws with one
RTCPeerConnection, built as the test says: certificate kind (ECDSA, RSA 2048/4096), which tracks
in which order (video before audio, audio only, no camera, a second camera), a data channel,
codec preferences, ICE restarts. `zoo.stats()` reads getStats(). Chromium comes from Debian
(.ci/run installs it); Playwright's own browser download is never used.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from core.clock import SystemClock
from sfu.events import SfuEvent
from sfu.internals import NetworkConfig
from sfu.server import SfuConfig, SfuServer
from sfu.token import mint_join_token
from sfu.ws import sfu_routes
from tests.e2e.conftest import CHROMIUM_FLAGS

SECRET = b"z" * 40

ZOO_PAGE = (Path(__file__).parent / "zoo.html").read_text()
WEB_STATIC = Path(__file__).parents[3] / "web" / "static"
# The web client's own media code (web/static/call.js) on a bare page: no sign-up, no signaling.
CLIENT_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>client</title></head>
<body><video id="local" muted playsinline></video><video id="remote" playsinline muted></video>
<script type="module">
import { MediaCall, napalmsky } from "/static/call.js";
const call = new MediaCall(document.getElementById("local"), document.getElementById("remote"));
window.client = { call, napalmsky, events: [], sent: [] };
for (const type of ["phase", "connected", "closed", "need-token", "error", "partner"]) {
  call.addEventListener(type, (e) => window.client.events.push({ type, detail: e.detail }));
}
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  window.client.sent.push(data);
  return send.call(this, data);
};
</script></body></html>"""


@dataclass
class ChromiumSfu:
    server: SfuServer
    base: str
    browser: Any
    events: list[SfuEvent] = field(default_factory=list)
    contexts: list[Any] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return self.base.replace("http://", "ws://") + "/sfu/ws"

    def token(self, room: str, user: str) -> str:
        return mint_join_token(SECRET, room, user, SystemClock(), 120)

    async def page(self) -> Any:
        context = await self.browser.new_context()
        self.contexts.append(context)
        page = await context.new_page()
        await page.goto(self.base + "/zoo.html")
        return page

    async def close_page(self, page: Any) -> None:
        """Hang up, stop the camera and close the page's context (frees its CPU)."""
        await page.evaluate("zoo.close()")
        context = page.context
        await context.close()
        if context in self.contexts:
            self.contexts.remove(context)

    async def client(self, room: str, user: str) -> Any:
        """A page running the web client's MediaCall, joined to `room` as `user`."""
        context = await self.browser.new_context()
        self.contexts.append(context)
        page = await context.new_page()
        await page.goto(self.base + "/client.html")
        await page.wait_for_function("() => window.client !== undefined")
        info = {"roomId": room, "sfu": {"url": self.ws_url, "token": self.token(room, user)},
                "iceServers": []}
        await page.evaluate("(info) => { window.client.call.join(info); }", info)
        return page

    async def join(self, room: str, user: str, **opts: Any) -> Any:
        """A new page that joined `room` as `user` with zoo options `opts`."""
        page = await self.page()
        await page.evaluate("([u, t, o]) => zoo.start(u, t, o)",
                            [self.ws_url, self.token(room, user), opts])
        return page


P2P_STEP = """async ([role, remote, opts]) => {
  if (!window.p2p) {
    const pc = new RTCPeerConnection({iceServers: []});
    window.p2p = pc;
    zoo.pc = pc;
    const s = await navigator.mediaDevices.getUserMedia(
      {audio: true, video: {width: opts.width, height: opts.height, frameRate: opts.fps}});
    window.p2pStream = s;
    for (const t of s.getTracks()) pc.addTransceiver(t, {direction: "sendrecv", streams: [s]});
    pc.ontrack = (ev) => {
      const el = document.createElement("video");
      el.muted = true; el.autoplay = true; el.srcObject = new MediaStream([ev.track]);
      document.body.appendChild(el);
    };
  }
  const pc = window.p2p;
  if (role === "offer") await pc.setLocalDescription(await pc.createOffer());
  else if (role === "answer") {
    await pc.setRemoteDescription({type: "offer", sdp: remote});
    await pc.setLocalDescription(await pc.createAnswer());
  } else { await pc.setRemoteDescription({type: "answer", sdp: remote}); return ""; }
  if (pc.iceGatheringState !== "complete") await new Promise((r) => {
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") r(); };
  });
  return pc.localDescription.sdp;
}"""


async def p2p_call(caller: Any, callee: Any, width: int = 640, height: int = 480,
                   fps: int = 30) -> None:
    """Connect two zoo pages directly, Chromium to Chromium (no SFU), camera both ways."""
    opts = {"width": width, "height": height, "fps": fps}
    offer = await caller.evaluate(P2P_STEP, ["offer", "", opts])
    answer = await callee.evaluate(P2P_STEP, ["answer", offer, opts])
    await caller.evaluate(P2P_STEP, ["final", answer, opts])


async def zoo_stats(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate("zoo.stats()")
    return result


async def wait_stats(page: Any, predicate: Callable[[dict[str, Any]], bool],
                     timeout: float = 30.0) -> dict[str, Any]:
    """Poll the page's stats until `predicate` holds (AssertionError with the last stats)."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = await zoo_stats(page)
        try:
            if last and predicate(last):
                return last
        except (KeyError, TypeError):
            pass
        await asyncio.sleep(0.25)
    raise AssertionError(f"condition not met; last stats: {json.dumps(last)[:2000]}")


def decoding(stats: dict[str, Any], kind: str = "video", minimum: int = 10) -> bool:
    inbound = stats["inbound"].get(kind)
    if kind == "video":
        return bool(inbound) and (inbound["frames"] or 0) >= minimum
    return bool(inbound) and (inbound["packets"] or 0) >= minimum


def noise_camera(width: int = 640, height: int = 480, frames: int = 30) -> Path:
    """A y4m clip of noise for --use-file-for-fake-video-capture: a camera whose picture no
    encoder can compress, so Chrome sends what its bandwidth estimate allows (the default fake
    camera compresses to about 0.5 Mbit/s whatever the path holds). Cached in the temp dir."""
    path = Path(tempfile.gettempdir()) / f"napalmsky-noise-{width}x{height}-{frames}.y4m"
    if path.exists() and path.stat().st_size > 0:
        return path
    rng = random.Random(7)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        chroma = bytes([128]) * (width * height // 2)
        for _ in range(frames):
            out.write(b"FRAME\n")
            out.write(rng.randbytes(width * height))
            out.write(chroma)
    tmp.replace(path)
    return path


@asynccontextmanager
async def open_chromium_sfu(chromium_path: str, extra_args: Sequence[str] = (),
                            net: NetworkConfig | None = None) -> AsyncIterator[ChromiumSfu]:
    from playwright.async_api import async_playwright

    clock = SystemClock()
    server = SfuServer(SfuConfig(net=net or NetworkConfig(bind=("127.0.0.1",)),
                                 connect_timeout=20), clock)
    app = web.Application()
    app.add_routes(sfu_routes(server, SECRET, clock))

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=ZOO_PAGE, content_type="text/html")

    async def client(_request: web.Request) -> web.Response:
        return web.Response(text=CLIENT_PAGE, content_type="text/html")

    app.add_routes([web.get("/zoo.html", page), web.get("/client.html", client),
                    web.static("/static", WEB_STATIC)])
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path,
                                                   args=[*CHROMIUM_FLAGS, *extra_args])
        harness = ChromiumSfu(server, str(test_server.make_url("")).rstrip("/"), browser)
        server.subscribe(harness.events.append)
        try:
            yield harness
        finally:
            for context in harness.contexts:
                await context.close()
            await browser.close()
            await server.close()
            await test_server.close()
