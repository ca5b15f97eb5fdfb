"""A node that stops mid-call (issue 10, item 7): `napalmsky serve` killed or stopped while two
people talk, then started again on the same data. The call is recorded as `node_lost`, lasting
as long as it did (not as long as it was booked), and a client that comes back is told so."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.napalmsky.served import start_server

NODE = {"NAPALMSKY_NODE_ID": "restart-node"}
BOOKED = 300  # seconds the call was booked for
TIMEOUT = 60.0  # seconds: a bound far past what each step needs, for a busy machine


class Person:
    def __init__(self, http: aiohttp.ClientSession, url: str, token: str, user_id: str) -> None:
        self.http, self.url, self.token, self.user_id = http, url, token, user_id
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.state: dict[str, Any] = {}

    async def connect(self) -> None:
        self.ws = await self.http.ws_connect(f"{self.url.replace('http', 'ws')}/ws")
        await self.ws.send_json({"type": "auth", "data": {"token": self.token}})
        frame = await self.ws.receive_json(timeout=TIMEOUT)
        assert frame["type"] == "state", frame
        self.state = frame["data"]

    async def request(self, kind: str, **data: Any) -> dict[str, Any]:
        assert self.ws is not None
        await self.ws.send_json({"type": kind, "id": kind, "data": data})
        while True:
            frame = await self.ws.receive_json(timeout=TIMEOUT)
            if frame.get("id") == kind:
                assert frame["type"] == "ack", frame
                return dict(frame["data"])

    async def next(self, kind: str) -> dict[str, Any] | None:
        """The next event of `kind`; None when the socket closes first."""
        assert self.ws is not None
        async with asyncio.timeout(TIMEOUT):
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    frame = msg.json()
                    if frame["type"] == kind:
                        return dict(frame["data"])
        return None


@asynccontextmanager
async def people(url: str) -> AsyncIterator[tuple[Person, Person]]:
    async with aiohttp.ClientSession() as http:
        pair = []
        for name in ("Ada", "Bo"):
            async with http.post(f"{url}/api/v1/auth/guest",
                                 json={"name": name, "gender": "female"}) as resp:
                body = await resp.json()
                assert resp.status == 201, body
            pair.append(Person(http, url, body["token"], body["user"]["id"]))
        yield pair[0], pair[1]
        for person in pair:
            if person.ws is not None:
                await person.ws.close()


async def start_call(a: Person, b: Person) -> tuple[str, float]:
    """A call between them; its room and when it started (the server's endsAt - BOOKED)."""
    await a.connect()
    await b.connect()
    invite = await a.request("call:invite", to=b.user_id, seconds=BOOKED)
    await b.next("call:invite")
    room_id = (await b.request("call:accept", inviteId=invite["inviteId"]))["roomId"]
    start = await a.next("call:start")
    assert start is not None and start["roomId"] == room_id
    return room_id, datetime.fromisoformat(start["endsAt"]).timestamp() - BOOKED


def alive_for(db: Path, room_id: str) -> float:
    """Seconds the node has vouched for the call so far (its alive_at - started_at)."""
    with sqlite3.connect(db) as conn:
        started, alive = conn.execute("SELECT started_at, alive_at FROM calls WHERE room_id = ?",
                                      (room_id.replace("-", ""),)).fetchone() or \
            conn.execute("SELECT started_at, alive_at FROM calls WHERE room_id = ?",
                         (room_id,)).fetchone()
    return (datetime.fromisoformat(alive) - datetime.fromisoformat(started)).total_seconds()


async def wait_until_vouched(db: Path, room_id: str, seconds: float) -> None:
    deadline = time.monotonic() + TIMEOUT
    while alive_for(db, room_id) < seconds:
        assert time.monotonic() < deadline, "the node never vouched for its call"
        await asyncio.sleep(0.2)


def stop(proc: subprocess.Popen[bytes], how: signal.Signals) -> None:
    proc.send_signal(how)
    proc.wait(timeout=TIMEOUT)


async def history(url: str, person: Person) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(
            f"{url}/api/v1/me/calls", headers={"Authorization": f"Bearer {person.token}"}) as r:
        assert r.status == 200
        return list((await r.json())["calls"])


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["crash", "stop"])
async def test_a_node_that_stops_mid_call_records_how_long_it_really_lasted(
        tmp_path: Path, how: signal.Signals) -> None:
    proc, url, log = start_server(tmp_path, **NODE)
    try:
        async with people(url) as (ada, bo):
            room_id, started = await start_call(ada, bo)
            await wait_until_vouched(tmp_path / "data" / "napalmsky.db", room_id, 2.0)
            if how is signal.SIGTERM:  # a stop: both hear the truth before the sockets close
                stopping = asyncio.ensure_future(asyncio.to_thread(stop, proc, how))
                for person in (ada, bo):
                    ended = await person.next("call:ended")
                    assert ended is not None, log.read_text()[-2000:]
                    assert ended["reason"] == "node_lost"
                    assert 2 <= ended["durationSeconds"] <= time.time() - started + 1
                await stopping
            else:
                stop(proc, how)
            stopped_after = time.time() - started
            proc, url, log = start_server(tmp_path, **NODE)  # the same node, started again
            ada.url = url
            await ada.connect()
            assert ada.state["call"] is None
            last = ada.state["lastCall"]
            assert last is not None and last["roomId"] == room_id, ada.state
            assert last["reason"] == "node_lost"  # so the client says what really happened
            assert 2 <= last["durationSeconds"] <= stopped_after + 1
            assert last["durationSeconds"] < BOOKED / 2
            (record,) = await history(url, ada)
            assert record["durationSeconds"] == last["durationSeconds"]
    finally:
        if proc.poll() is None:
            stop(proc, signal.SIGTERM)
