"""Recorded calls through a real `napalmsky serve`: consent in the invite and the accept, the
SFU's files stored when the call ends, fetched by the participants by signed URL (decoding
with PyAV), refused to strangers, deleted by a participant; no consent, no recording."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from pathlib import Path
from typing import Any

import aiohttp
import av

from loadtest.bot import BLUE, RED, Bot
from loadtest.measure import Measurements
from loadtest.wire import Rest, Signaling, WireError, sign_up_guest
from tests.napalmsky.served import next_event, start_server, stop_server

NODE_ENV = {
    "NAPALMSKY_BCRYPT_ROUNDS": "4", "NAPALMSKY_RATE_TOKEN_PER_MINUTE": "100000",
    "NAPALMSKY_RATE_SIGNUP_PER_HOUR": "100000", "NAPALMSKY_CALL_MIN_SECONDS": "15",
    "NAPALMSKY_CALL_DEFAULT_SECONDS": "60", "NAPALMSKY_CALL_MAX_SECONDS": "600",
    "NAPALMSKY_COOLDOWN_HOURS": "0",
}


async def until(check: Any, within: float = 60) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


class People:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base, self.m = http, base, Measurements()

    async def guest(self, name: str) -> tuple[str, str, Signaling]:
        auth, _ = await sign_up_guest(Rest(self.http, self.base, self.m), name, "unspecified")
        sig = Signaling(self.http, self.base, str(auth["token"]), self.m)
        await sig.connect()
        return str(auth["user"]["id"]), str(auth["token"]), sig

    async def call(self, caller: Signaling, callee: Signaling, callee_id: str, *,
                   agree: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The caller invites asking to record; the callee accepts, agreeing or not: (the
        invite as the callee saw it, both call:start payloads, caller's first)."""
        await caller.request("call:invite", {"to": callee_id, "seconds": 60, "record": True})
        invite = await next_event(callee, "call:invite")
        await callee.request("call:accept", {"inviteId": invite["inviteId"], "record": agree})
        return invite, [await next_event(sig, "call:start") for sig in (caller, callee)]

    async def get(self, path: str, token: str) -> tuple[int, Any]:
        async with self.http.get(f"{self.base}/api/v1{path}",
                                 headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.json()

    async def delete(self, path: str, token: str) -> tuple[int, Any]:
        async with self.http.delete(f"{self.base}/api/v1{path}",
                                    headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.json()


async def test_a_call_both_agreed_to_is_recorded_stored_and_deletable(tmp_path: Path) -> None:
    (tmp_path / "node").mkdir()
    proc, base, log = start_server(tmp_path / "node", **NODE_ENV, NAPALMSKY_RECORDING="true")
    bots: list[Bot] = []
    try:
        async with aiohttp.ClientSession() as http:
            people = People(http, base)
            ada_id, ada_token, ada = await people.guest("Ada")
            bo_id, bo_token, bo = await people.guest("Bo")
            _, cy_token, _cy = await people.guest("Cy")
            status, config = await people.get("/config", ada_token)
            assert (status, config["recordingEnabled"]) == (200, True)
            invite, starts = await people.call(ada, bo, bo_id)
            assert invite["record"] is True  # Bo sees that Ada asks to record
            assert all(s["recorded"] is True for s in starts)
            room_id = starts[0]["roomId"]
            for start, colour in zip(starts, (RED, BLUE), strict=True):
                bot = Bot(start["sfu"]["url"], start["sfu"]["token"], colour=colour)
                bots.append(bot)
            await asyncio.gather(*(b.join(wait=30) for b in bots))
            await until(lambda: _received(bots, 45))
            status, listed = await people.get(f"/calls/{room_id}/recordings", ada_token)
            assert status == 200
            assert {r["status"] for r in listed["recordings"]} == {"recording"}
            await ada.request("room:leave", {"roomId": room_id})  # the call ends
            await next_event(bo, "call:ended")

            async def ready() -> list[dict[str, Any]] | None:
                _code, body = await people.get(f"/calls/{room_id}/recordings", bo_token)
                rows = body["recordings"]
                return rows if rows and all(r["status"] == "ready" for r in rows) else None

            rows = await until(ready)
            assert {r["userId"] for r in rows} == {ada_id, bo_id}
            for row in rows:
                assert row["container"] == "webm" and row["videoCodec"] == "vp8"
                assert row["audioCodec"] == "opus" and row["durationSeconds"] >= 1.0
                async with http.get(row["url"]) as resp:
                    assert resp.status == 200
                    data = await resp.read()
                assert len(data) == row["sizeBytes"]
                with av.open(io.BytesIO(data)) as media:
                    frames = sum(1 for _ in media.decode(video=0))
                assert frames >= 30
            # a stranger learns nothing; a participant deletes the call's recordings
            status, body = await people.get(f"/calls/{room_id}/recordings", cy_token)
            assert (status, body["error"]["code"]) == (404, "not_found")
            status, body = await people.delete(f"/calls/{room_id}/recordings", cy_token)
            assert status == 404
            status, body = await people.delete(f"/calls/{room_id}/recordings", bo_token)
            assert (status, body) == (200, {"deleted": 2})
            status, body = await people.get(f"/calls/{room_id}/recordings", ada_token)
            assert body == {"recordings": []}
            async with http.get(rows[0]["url"]) as resp:
                assert resp.status == 404  # the file is gone too
            for sig in (ada, bo):
                await sig.close()
    finally:
        for bot in bots:
            with contextlib.suppress(Exception):
                await bot.close()
        stop_server(proc)
    assert "Traceback" not in log.read_text()
    assert not list((tmp_path / "node" / "data" / "recordings").glob("*"))  # nothing left


def _received(bots: list[Bot], frames: int) -> Any:
    async def check() -> bool:
        return all(b.received.video_frames >= frames and b.received.audio_frames >= frames
                   for b in bots)
    return check()


async def test_without_both_consents_nothing_is_recorded(tmp_path: Path) -> None:
    (tmp_path / "node").mkdir()
    proc, base, _log = start_server(tmp_path / "node", **NODE_ENV, NAPALMSKY_RECORDING="true")
    try:
        async with aiohttp.ClientSession() as http:
            people = People(http, base)
            _, ada_token, ada = await people.guest("Ada")
            bo_id, _, bo = await people.guest("Bo")
            _, (start, _) = await people.call(ada, bo, bo_id, agree=False)  # Bo says no
            assert start["recorded"] is False
            status, body = await people.get(f"/calls/{start['roomId']}/recordings", ada_token)
            assert (status, body) == (200, {"recordings": []})
            for sig in (ada, bo):
                await sig.close()
    finally:
        stop_server(proc)


async def test_asking_to_record_where_recording_is_off_is_refused(tmp_path: Path) -> None:
    (tmp_path / "node").mkdir()
    proc, base, _log = start_server(tmp_path / "node", **NODE_ENV)
    try:
        async with aiohttp.ClientSession() as http:
            people = People(http, base)
            _, ada_token, ada = await people.guest("Ada")
            bo_id, _, bo = await people.guest("Bo")
            status, config = await people.get("/config", ada_token)
            assert (status, config["recordingEnabled"]) == (200, False)
            try:
                await ada.request("call:invite", {"to": bo_id, "seconds": 60, "record": True})
            except WireError as exc:
                assert exc.code == "failed_precondition"
            else:
                raise AssertionError("the invite was accepted")
            for sig in (ada, bo):
                await sig.close()
    finally:
        stop_server(proc)


async def test_a_node_killed_mid_call_marks_the_recording_failed_never_ready(
        tmp_path: Path) -> None:
    import signal as signals

    (tmp_path / "node").mkdir()
    env = {**NODE_ENV, "NAPALMSKY_RECORDING": "true"}
    proc, base, _log = start_server(tmp_path / "node", **env)
    port = int(base.rsplit(":", 1)[1])
    bots: list[Bot] = []
    try:
        async with aiohttp.ClientSession() as http:
            people = People(http, base)
            _, ada_token, ada = await people.guest("Ada")
            bo_id, _, bo = await people.guest("Bo")
            _, starts = await people.call(ada, bo, bo_id)
            room_id = starts[0]["roomId"]
            bots = [Bot(s["sfu"]["url"], s["sfu"]["token"], colour=c)
                    for s, c in zip(starts, (RED, BLUE), strict=True)]
            await asyncio.gather(*(b.join(wait=30) for b in bots))
            await until(lambda: _received(bots, 30))
            for sig in (ada, bo):
                await sig.close()
        stop_server(proc, signals.SIGKILL)  # the node dies mid-call
        for bot in bots:
            await bot.close()
        proc, base, _log = start_server(tmp_path / "node", port=port, **env)
        async with aiohttp.ClientSession() as http:
            status, body = await People(http, base).get(f"/calls/{room_id}/recordings",
                                                         ada_token)
        assert status == 200
        assert [r["status"] for r in body["recordings"]] == ["failed", "failed"]
        assert all(r["url"] is None for r in body["recordings"])
    finally:
        for bot in bots:
            with contextlib.suppress(Exception):
                await bot.close()
        stop_server(proc)


async def test_a_participant_without_a_camera_has_an_audio_only_recording(
        tmp_path: Path) -> None:
    (tmp_path / "node").mkdir()
    proc, base, _log = start_server(tmp_path / "node", **NODE_ENV, NAPALMSKY_RECORDING="true")
    bots: list[Bot] = []
    try:
        async with aiohttp.ClientSession() as http:
            people = People(http, base)
            ada_id, ada_token, ada = await people.guest("Ada")
            bo_id, _, bo = await people.guest("Bo")
            _, starts = await people.call(ada, bo, bo_id)
            room_id = starts[0]["roomId"]
            bots = [Bot(starts[0]["sfu"]["url"], starts[0]["sfu"]["token"], colour=RED),
                    Bot(starts[1]["sfu"]["url"], starts[1]["sfu"]["token"], camera=False)]
            await asyncio.gather(*(b.join(wait=30) for b in bots))

            async def heard() -> bool:
                return all(b.received.audio_frames >= 45 for b in bots)

            await until(heard)
            await ada.request("room:leave", {"roomId": room_id})

            async def ready() -> list[dict[str, Any]] | None:
                _code, body = await people.get(f"/calls/{room_id}/recordings", ada_token)
                rows = body["recordings"]
                return rows if rows and all(r["status"] != "recording" for r in rows) else None

            rows = {r["userId"]: r for r in await until(ready)}
            assert rows[ada_id]["status"] == rows[bo_id]["status"] == "ready"
            assert rows[bo_id]["videoCodec"] is None and rows[bo_id]["audioCodec"] == "opus"
            assert rows[ada_id]["videoCodec"] == "vp8"
            for sig in (ada, bo):
                await sig.close()
    finally:
        for bot in bots:
            with contextlib.suppress(Exception):
                await bot.close()
        stop_server(proc)
