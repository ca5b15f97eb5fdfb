"""Lifecycle: everything closes on failure, hang-up and room end, and nothing accumulates."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCBundlePolicy

from core.clock import SystemClock
from loadtest.bot import BLUE, RED, Bot
from loadtest.ice import bind_peer_connection
from sfu.events import CloseReason, ParticipantFailed, SfuEvent
from sfu.server import SfuConfig, SfuServer
from sfu.token import mint_join_token
from sfu.ws import sfu_routes
from tests.sfu.conftest import LOOPBACK, SECRET, wait_for


class Node:
    def __init__(self, server: SfuServer, url: str) -> None:
        self.server, self.url = server, url
        self.events: list[SfuEvent] = []
        server.subscribe(self.events.append)

    def token(self, room: str, user: str) -> str:
        return mint_join_token(SECRET, room, user, SystemClock())


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    server = SfuServer(SfuConfig(net=LOOPBACK, connect_timeout=2.0), SystemClock())
    app = web.Application()
    app.add_routes(sfu_routes(server, SECRET, SystemClock()))
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield Node(server, str(test_server.make_url("/sfu/ws")))
    finally:
        await server.close()
        await test_server.close()


async def light_cycle(node: Node, room: str, user: str, *, connect: bool = True) -> str | None:
    """A participant without media: join, offer, (connect,) leave. Returns a 'closed' reason."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[],
                                            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    closed: str | None = None
    try:
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        bind_peer_connection(pc)
        async with aiohttp.ClientSession() as session, session.ws_connect(node.url) as ws:
            await ws.send_json({"type": "join", "token": node.token(room, user)})
            assert (await ws.receive_json(timeout=10))["type"] == "joined"
            await pc.setLocalDescription(await pc.createOffer())
            await ws.send_json({"type": "offer", "sdp": pc.localDescription.sdp})
            answer = await ws.receive_json(timeout=10)
            assert answer["type"] == "answer"
            if connect:
                await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
                await wait_for(lambda: pc.connectionState == "connected", timeout=10)
                await ws.send_json({"type": "leave"})
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT and msg.json().get("type") == "closed":
                    closed = msg.json()["reason"]
    finally:
        await pc.close()
    return closed


def resources() -> tuple[int, int, int]:
    tasks = len(asyncio.all_tasks())
    threads = threading.active_count()
    fds = len(os.listdir("/proc/self/fd"))
    return tasks, threads, fds


async def test_a_client_that_never_connects_times_out(node: Node) -> None:
    router = node.server.create_room("r")
    reason = await light_cycle(node, "r", "ghost", connect=False)
    assert reason == CloseReason.CONNECT_TIMEOUT.value
    assert not router.transports
    failed = [e for e in node.events if isinstance(e, ParticipantFailed)]
    assert failed and failed[0].reason is CloseReason.CONNECT_TIMEOUT


async def test_a_hang_up_closes_the_peer_connection(node: Node) -> None:
    router = node.server.create_room("r")
    bot = Bot(node.url, node.token("r", "alice"), colour=RED)
    partner = Bot(node.url, node.token("r", "bob"), colour=BLUE)
    try:
        await bot.join()
        await partner.join()
        await wait_for(lambda: partner.received.video_frames >= 3)
        transport = router.transports["alice"]
        await bot.close()  # the browser tab goes away: DTLS close and socket close
        await wait_for(transport.closed_event.is_set)
        assert transport.ice.state == "closed"
        assert "alice" not in router.transports
        consumer = router.transports["bob"].consumers["video"]
        assert consumer.producer is None  # detached from the gone publisher
    finally:
        await partner.close()


async def test_two_hundred_join_leave_cycles_leave_nothing_behind(node: Node) -> None:
    node.server.create_room("soak")

    async def media_call(tag: str) -> None:
        bots = [Bot(node.url, node.token("soak", f"{tag}-{n}"), colour=c)
                for n, c in (("a", RED), ("b", BLUE))]
        for bot in bots:
            await bot.join()
        await wait_for(lambda: all(b.received.video_frames >= 3 for b in bots))
        for bot in bots:
            await bot.close()
        await wait_for(lambda: not node.server.rooms["soak"].transports, timeout=10)

    # Warm-up: the default executor's threads (the bots' encoders run there) and lazy imports
    # persist by design, so take the baseline after they exist.
    for i in range(10):
        await light_cycle(node, "soak", f"warm-{i}")
    await media_call("warm")
    # The default executor starts its threads lazily, up to its maximum, and keeps them: start
    # them all now so later growth can only be a leak.
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(None, time.sleep, 0.1) for _ in range(64)))
    await asyncio.sleep(0.5)
    before = resources()
    started = time.monotonic()
    for batch in range(50):  # 200 cycles, 4 at a time
        await asyncio.gather(*(light_cycle(node, "soak", f"u{batch}-{k}") for k in range(4)))
    await media_call("after")  # and a real call through the same room

    deadline = time.monotonic() + 15
    while resources() != before and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert resources() == before, f"tasks, threads, fds: {before} -> {resources()}"
    assert time.monotonic() - started < 300
