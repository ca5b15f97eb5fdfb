"""No secret or personal data in the logs at any level, and the data directory for its owner
alone: `napalmsky serve` as operators run it, at debug level, through a whole scenario."""

from __future__ import annotations

import io
import signal
import stat
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from tests.napalmsky.served import start_server

PASSWORD_A = "orchid-lantern-" + uuid.uuid4().hex[:8]
PASSWORD_B = "granite-heron-" + uuid.uuid4().hex[:8]
CHAT = "my phone number is 555-" + uuid.uuid4().hex[:6]


async def scenario(url: str) -> list[str]:
    """Register two people, sign in, set socials and a selfie, call, chat: every secret and
    piece of personal data the server saw, for the log check."""
    seen: list[str] = [PASSWORD_A, PASSWORD_B, CHAT]
    async with aiohttp.ClientSession() as http:
        users: list[dict[str, Any]] = []
        for name, password in (("Ada", PASSWORD_A), ("Bo", PASSWORD_B)):
            email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
            async with http.post(f"{url}/api/v1/auth/register", json={
                    "email": email, "password": password, "name": name,
                    "gender": "female"}) as resp:
                assert resp.status == 201, await resp.text()
            async with http.post(f"{url}/api/v1/auth/login",
                                 json={"email": email, "password": password}) as resp:
                body = await resp.json()
                assert resp.status == 200, body
            users.append({"email": email, "token": body["token"], "id": body["user"]["id"]})
            seen += [email, body["token"]]
        ada, bo = users
        headers = {"Authorization": f"Bearer {ada['token']}"}
        instagram = "ada_" + uuid.uuid4().hex[:6]
        seen.append(instagram)
        async with http.patch(f"{url}/api/v1/me", headers=headers,
                              json={"socials": {"instagram": instagram}}) as resp:
            assert resp.status == 200, await resp.text()
        picture = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 30, 30)).save(picture, "PNG")
        async with http.put(f"{url}/api/v1/me/selfie", headers={**headers,
                            "Content-Type": "image/png"}, data=picture.getvalue()) as resp:
            body = await resp.json()
            assert resp.status in (200, 201), body
        selfie_url = body["url"]
        assert selfie_url and "sig=" in selfie_url
        seen.append(selfie_url.split("sig=")[1].split("&")[0])
        async with http.get(selfie_url) as resp:
            assert resp.status == 200
        sockets = []
        for user in users:
            ws = await http.ws_connect(f"{url.replace('http', 'ws')}/ws")
            await ws.send_json({"type": "auth", "data": {"token": user["token"]}})
            assert (await ws.receive_json(timeout=10))["type"] == "state"
            sockets.append(ws)
        ws_a, ws_b = sockets

        async def until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
            while True:
                frame = await ws.receive_json(timeout=10)
                if frame["type"] == kind:
                    return dict(frame)

        await ws_a.send_json({"type": "call:invite", "id": "1", "data": {"to": bo["id"]}})
        invite = await until(ws_b, "call:invite")
        await ws_b.send_json({"type": "call:accept", "id": "2",
                              "data": {"inviteId": invite["data"]["inviteId"]}})
        start = await until(ws_a, "call:start")
        seen.append(start["data"]["sfu"]["token"])
        await ws_a.send_json({"type": "room:message", "id": "3",
                              "data": {"roomId": start["data"]["roomId"], "text": CHAT}})
        await until(ws_b, "room:message")
        for ws in sockets:
            await ws.close()
    return seen


async def test_no_secret_or_personal_data_in_the_logs_and_a_private_data_dir(
        tmp_path: Path) -> None:
    proc, url, log_path = start_server(tmp_path)
    try:
        seen = await scenario(url)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    log = log_path.read_text()
    assert "DEBUG" in log or '"level": "debug"' in log  # the check ran at debug level
    for secret in seen:
        assert secret not in log, f"{secret[:12]}... is in the log"
    assert "$2b$" not in log  # no password hash
    data = tmp_path / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in data.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
