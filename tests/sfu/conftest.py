from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from core.clock import SystemClock
from loadtest.bot import BLUE, RED, Bot
from sfu.events import SfuEvent
from sfu.internals import NetworkConfig
from sfu.server import SfuConfig, SfuServer
from sfu.token import mint_join_token
from sfu.ws import sfu_routes

SECRET = b"s" * 40
LOOPBACK = NetworkConfig(bind=("127.0.0.1",))


@dataclass
class SfuHarness:
    server: SfuServer
    url: str
    events: list[SfuEvent] = field(default_factory=list)
    bots: list[Bot] = field(default_factory=list)

    def token(self, room: str, user: str, ttl: int = 60) -> str:
        return mint_join_token(SECRET, room, user, SystemClock(), ttl)

    def bot(self, room: str, user: str, colour: object = RED) -> Bot:
        bot = Bot(self.url, self.token(room, user), colour=colour)  # type: ignore[arg-type]
        self.bots.append(bot)
        return bot


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_port_net() -> NetworkConfig:
    """Loopback, every connection on one shared UDP port (NAPALMSKY_RTC_PORT)."""
    return NetworkConfig(bind=("127.0.0.1",), shared_port=free_udp_port())


@contextlib.asynccontextmanager
async def open_sfu(net: NetworkConfig, video_codec: str = "vp8") -> AsyncIterator[SfuHarness]:
    """The SFU on `net` behind its WebSocket endpoint on 127.0.0.1; bots closed at the end."""
    server = SfuServer(SfuConfig(net=net, video_codec=video_codec, connect_timeout=15),
                       SystemClock())
    app = web.Application()
    app.add_routes(sfu_routes(server, SECRET, SystemClock()))
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    harness = SfuHarness(server, str(test_server.make_url("/sfu/ws")))
    server.subscribe(harness.events.append)
    try:
        yield harness
    finally:
        for bot in harness.bots:
            await bot.close()
        await server.close()
        await test_server.close()


@pytest.fixture
async def sfu() -> AsyncIterator[SfuHarness]:
    async with open_sfu(LOOPBACK) as harness:
        yield harness


@pytest.fixture
async def sfu_one_port() -> AsyncIterator[SfuHarness]:
    """The SFU with every connection on one UDP port (see one_port_net)."""
    async with open_sfu(one_port_net()) as harness:
        yield harness


__all__ = ["BLUE", "RED", "SfuHarness", "free_udp_port", "one_port_net", "open_sfu", "wait_for"]
