from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from adapters.sql.migrate import upgrade
from core.clock import FakeClock
from core.settings import load_settings
from napalmsky.composition import API, SIGNALING, build_app
from signaling.http import SignalingContext

FAST = {
    "NAPALMSKY_BCRYPT_ROUNDS": "4", "NAPALMSKY_RATE_TOKEN_PER_MINUTE": "100000",
    "NAPALMSKY_RATE_SIGNUP_PER_HOUR": "100000", "NAPALMSKY_RATE_LOGIN_PER_HOUR": "100000",
    "NAPALMSKY_RTC_BIND": "127.0.0.1", "NAPALMSKY_CALL_MIN_SECONDS": "10",
    "NAPALMSKY_CALL_DEFAULT_SECONDS": "60", "NAPALMSKY_CALL_MAX_SECONDS": "120",
}


class Rejected(Exception):
    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(f"{data['code']}: {data['message']}")
        self.code = data["code"]
        self.message = data["message"]


@dataclass
class Client:
    ws: aiohttp.ClientWebSocketResponse
    session: aiohttp.ClientSession
    user_id: str
    token: str
    state: dict[str, Any]
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    acks: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    counter: int = 0
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = msg.json()
            frame_id = frame.get("id")
            if frame_id is not None and frame_id in self.acks:
                self.acks.pop(frame_id).set_result(frame)
            else:
                self.events.put_nowait(frame)

    async def request(self, kind: str, **data: Any) -> dict[str, Any]:
        self.counter += 1
        frame_id = f"r{self.counter}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.acks[frame_id] = future
        await self.ws.send_json({"type": kind, "id": frame_id, "data": data})
        frame = await asyncio.wait_for(future, 10)
        if frame["type"] == "error":
            raise Rejected(frame["data"])
        assert frame["type"] == "ack"
        return dict(frame["data"])

    async def next(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        """The next event of `kind` (other kinds in between are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {kind} event")
            frame = await asyncio.wait_for(self.events.get(), remaining)
            if frame["type"] == kind:
                return dict(frame["data"])

    def drain(self, kind: str) -> list[dict[str, Any]]:
        found, keep = [], []
        while not self.events.empty():
            frame = self.events.get_nowait()
            (found if frame["type"] == kind else keep).append(frame)
        for frame in keep:
            self.events.put_nowait(frame)
        return [f["data"] for f in found]

    async def close(self) -> None:
        await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)
        await self.session.close()


@dataclass
class Node:
    client: TestClient
    clock: FakeClock
    clients: list[Client] = field(default_factory=list)

    @property
    def sig(self) -> SignalingContext:
        return self.client.app[SIGNALING]

    async def guest(self, name: str = "Ada") -> tuple[str, str]:
        resp = await self.client.post("/api/v1/auth/guest", json={"name": name,
                                                                  "gender": "female"})
        body = await resp.json()
        assert resp.status == 201, body
        return body["token"], body["user"]["id"]

    async def connect(self, token: str, user_id: str) -> Client:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(self.client.make_url("/ws"))
        await ws.send_json({"type": "auth", "data": {"token": token}})
        state = await ws.receive_json(timeout=10)
        assert state["type"] == "state", state
        client = Client(ws, session, user_id, token, state["data"])
        client.reader = asyncio.ensure_future(client.read())
        self.clients.append(client)
        return client

    async def user(self, name: str) -> Client:
        token, user_id = await self.guest(name)
        return await self.connect(token, user_id)

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.sig.timers.run_due()

    async def get(self, path: str, token: str) -> tuple[int, Any]:
        resp = await self.client.get(path, headers={"Authorization": f"Bearer {token}"})
        return resp.status, await resp.json()


async def make_node(aiohttp_client: AiohttpClient, data_dir: Path, extra: dict[str, str],
                    clock: FakeClock | None = None) -> Node:
    settings = load_settings({"NAPALMSKY_DATA_DIR": str(data_dir), **FAST, **extra})
    await asyncio.to_thread(upgrade, settings.database_url)
    clock = clock or FakeClock(start=time.time())
    client = await aiohttp_client(build_app(settings, clock=clock))
    assert client.app[API] is not None
    return Node(client, clock)


@pytest.fixture
async def node(aiohttp_client: AiohttpClient, tmp_path: Path) -> AsyncIterator[Node]:
    n = await make_node(aiohttp_client, tmp_path, {})
    try:
        yield n
    finally:
        for c in n.clients:
            await c.close()
