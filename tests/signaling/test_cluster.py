"""Two app instances sharing one Redis and one PostgreSQL: a user on A calls a user on B."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from core.clock import FakeClock
from loadtest.bot import BLUE, RED, Bot
from napalmsky.composition import SFU
from tests.signaling.conftest import Node, make_node


@pytest.fixture
def shared_database(postgres_database: object) -> str:
    return str(postgres_database.url)  # type: ignore[attr-defined]


async def test_a_call_across_two_nodes(aiohttp_client: AiohttpClient, tmp_path: Path,
                                       shared_database: str, redis_url: str) -> None:
    shared = {"DATABASE_URL": shared_database, "REDIS_URL": redis_url,
              "NAPALMSKY_REDIS_PREFIX": f"test-{uuid.uuid4().hex}:",
              "NAPALMSKY_NODE_SECRET": "n" * 40}
    clock = FakeClock(start=time.time())
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    node_a = await make_node(aiohttp_client, tmp_path / "a", {
        **shared, "NAPALMSKY_NODE_ID": "node-a",
        "NAPALMSKY_PUBLIC_URL": "https://node-a.example"}, clock)
    node_b = await make_node(aiohttp_client, tmp_path / "b", {
        **shared, "NAPALMSKY_NODE_ID": "node-b",
        "NAPALMSKY_PUBLIC_URL": "https://node-b.example"}, clock)
    nodes: list[Node] = [node_a, node_b]
    bots: list[Bot] = []
    try:
        a = await node_a.user("Ada")
        b = await node_b.user("Bo")
        status, deck = await node_a.get("/api/v1/deck", a.token)
        assert status == 200 and b.user_id in [p["id"] for p in deck["people"]]
        # A was shown B: B's changes reach A across nodes
        await b.request("presence:set", available=False)
        presence = await a.next("presence:update")
        assert presence["userId"] == b.user_id and presence["available"] is False
        await b.request("presence:set", available=True)
        assert (await a.next("presence:update"))["available"] is True

        invite = await a.request("call:invite", to=b.user_id, seconds=60)
        assert (await b.next("call:invite"))["inviteId"] == invite["inviteId"]
        room_id = (await b.request("call:accept", inviteId=invite["inviteId"]))["roomId"]
        start_a, start_b = await a.next("call:start"), await b.next("call:start")
        assert start_a["roomId"] == start_b["roomId"] == room_id
        assert room_id in node_b.client.app[SFU].rooms  # placed where it was accepted
        assert room_id not in node_a.client.app[SFU].rooms
        assert start_a["sfu"]["url"] == start_b["sfu"]["url"] == "wss://node-b.example/sfu/ws"
        # A reconnects (to node A): the resumed call still names node B's SFU
        a2 = await node_a.connect(a.token, a.user_id)
        assert a2.state["call"]["sfu"]["url"] == "wss://node-b.example/sfu/ws"

        # both open their media to the SFU named in call:start; signaling hears of it
        for start, colour in ((start_a, RED), (start_b, BLUE)):
            url = str(node_b.client.make_url("/sfu/ws"))
            bot = Bot(url, start["sfu"]["token"], colour=colour)
            bots.append(bot)
            await bot.join()
        deadline = time.monotonic() + 20
        while min(bot.received.video_frames for bot in bots) < 5:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        media = {(e["userId"], e["state"]) for e in [await a.next("call:media"),
                                                     await a.next("call:media")]}
        assert media == {(a.user_id, "connected"), (b.user_id, "connected")}

        await a.request("room:message", roomId=room_id, text="from node A")
        assert (await b.next("room:message"))["text"] == "from node A"
        await a.request("room:media", roomId=room_id, audio=False, video=True)
        muted = await b.next("room:media")  # relayed across nodes, like the chat
        assert (muted["userId"], muted["audio"], muted["video"]) == (a.user_id, False, True)
        await a.request("room:leave", roomId=room_id)
        assert (await a.next("call:ended"))["reason"] == "left"
        assert (await b.next("call:ended"))["reason"] == "left"
        deadline = time.monotonic() + 10
        while room_id in node_b.client.app[SFU].rooms:  # closed through node B's channel
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        status, history = await node_b.get("/api/v1/me/calls", b.token)
        assert [m["text"] for m in history["calls"][0]["messages"]] == ["from node A"]
    finally:
        for bot in bots:
            await bot.close()
        for node in nodes:
            for client in node.clients:
                await client.close()
