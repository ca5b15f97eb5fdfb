"""`napalmsky bots`: a demo bot accepts an invite from a client speaking the protocol, and the
client decodes the bot's video (aiortc) and gets its chat echoed."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.bot import Bot

WAIT = 60.0


class Client:
    """The web client's side of /ws, reduced to what the test needs."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def request(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        request_id = next(self.ids)
        await self.ws.send_json({"type": kind, "id": request_id, "data": data})
        while True:
            frame = await self.ws.receive_json(timeout=WAIT)
            if frame.get("id") == request_id:
                assert frame["type"] == "ack", frame
                return dict(frame["data"])

    async def event(self, kind: str, **match: Any) -> dict[str, Any]:
        while True:
            frame = await self.ws.receive_json(timeout=WAIT)
            data = frame.get("data", {})
            if frame["type"] == kind and all(data.get(k) == v for k, v in match.items()):
                return dict(data)


async def wait_for(condition: Any, what: str, limit: float = WAIT) -> None:
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.1)


async def test_a_demo_bot_accepts_an_invite_and_its_video_arrives(node: str,
                                                                   tmp_path: Path) -> None:
    bots = subprocess.Popen(
        [sys.executable, "-m", "napalmsky", "bots", "--count", "1", "--name", "Demo",
         "--duration", "120", node], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{node}/api/v1/auth/guest",
                                 json={"name": "Tester", "gender": "unspecified"}) as resp:
                assert resp.status == 201
                auth = await resp.json()
            headers = {"Authorization": f"Bearer {auth['token']}"}
            async with http.ws_connect(node.replace("http://", "ws://") + "/ws") as ws:
                await ws.send_json({"type": "auth", "data": {"token": auth["token"]}})
                assert (await ws.receive_json(timeout=WAIT))["type"] == "state"
                client = Client(ws)
                bot_id = None
                async with asyncio.timeout(WAIT):
                    while bot_id is None:
                        async with http.get(f"{node}/api/v1/deck", headers=headers) as resp:
                            people = (await resp.json())["people"]
                        bot_id = next((p["id"] for p in people if p["name"] == "Demo 1"), None)
                        await asyncio.sleep(0.2)
                await client.request("call:invite", {"to": bot_id, "seconds": 10})
                start = await client.event("call:start")
                assert start["partner"]["name"] == "Demo 1"

                media = Bot(start["sfu"]["url"], start["sfu"]["token"])
                try:
                    await media.join()
                    await wait_for(lambda: media.received.video_frames >= 10, "bot video")
                    first = media.received.last_colour
                    await client.request("room:message", {"roomId": start["roomId"],
                                                          "text": "hello bot"})
                    echo = await client.event("room:message", **{"from": bot_id})
                    assert echo["text"] == "echo: hello bot"
                    assert media.received.video_frames >= 10 and first is not None
                finally:
                    await media.close()
                await client.request("room:leave", {"roomId": start["roomId"]})
                await client.event("call:ended", roomId=start["roomId"])
    finally:
        bots.send_signal(signal.SIGINT)
        out, _ = bots.communicate(timeout=60)
    assert bots.returncode == 0, out
    assert "Demo 1 is online" in out and "back online" in out and "Traceback" not in out
