"""Calls through the SFU where one side reaches it only through a real coturn relay (TURN over
UDP, then over TCP): the ICE servers come from `call:start`, TURN credentials included."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from loadtest.bot import BLUE, RED, Bot
from loadtest.measure import Measurements
from loadtest.wire import Rest, Signaling, sign_up_guest
from tests.napalmsky.served import next_event, start_server, stop_server
from tests.sfu.test_call import close_to
from tests.turn.coturn import Coturn

NODE_ENV = {
    "NAPALMSKY_BCRYPT_ROUNDS": "4", "NAPALMSKY_RATE_TOKEN_PER_MINUTE": "100000",
    "NAPALMSKY_RATE_SIGNUP_PER_HOUR": "100000", "NAPALMSKY_CALL_MIN_SECONDS": "15",
    "NAPALMSKY_CALL_DEFAULT_SECONDS": "60", "NAPALMSKY_CALL_MAX_SECONDS": "600",
}


async def wait_for(predicate: Any, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def nominated_candidate_type(bot: Bot) -> str:
    """The type of our side of the nominated ICE pair (aiortc 1.16 / aioice internals)."""
    assert bot.pc is not None
    transport = bot.pc.getTransceivers()[0].receiver.transport.transport
    pair = transport.iceGatherer._connection._nominated[1]
    return str(pair.local_candidate.type)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_relay_only_client_calls_a_normal_one_through_coturn(
        tmp_path: Path, coturn: Coturn, transport: str) -> None:
    env = {**NODE_ENV, "NAPALMSKY_TURN_SECRETS": coturn.env["NAPALMSKY_TURN_SECRETS"],
           "NAPALMSKY_ICE_SERVERS": f"{coturn.url('udp')},{coturn.url('tcp')}"}
    (tmp_path / "node").mkdir()
    proc, base, log = start_server(tmp_path / "node", **env)
    bots: list[Bot] = []
    try:
        async with aiohttp.ClientSession() as http:
            m = Measurements()
            sockets = []
            for name in ("Relayed", "Direct"):
                auth, _ = await sign_up_guest(Rest(http, base, m), name, "unspecified")
                sig = Signaling(http, base, str(auth["token"]), m)
                await sig.connect()
                sockets.append((str(auth["user"]["id"]), sig))
            (caller_id, caller), (callee_id, callee) = sockets
            await caller.request("call:invite", {"to": callee_id, "seconds": 60})
            invite = await next_event(callee, "call:invite")
            await callee.request("call:accept", {"inviteId": invite["inviteId"]})
            starts = [await next_event(sig, "call:start") for sig in (caller, callee)]
            for start, user_id in zip(starts, (caller_id, callee_id), strict=True):
                turn = [s for s in start["iceServers"] if "username" in s]
                assert len(turn) == 1 and turn[0]["username"].endswith(f":{user_id}")
                assert turn[0]["urls"] == [coturn.url("udp"), coturn.url("tcp")]
            # the relayed side keeps only the transport under test (aiortc uses the first
            # TURN URL it is given)
            relayed_servers = [{**s, "urls": [u for u in s["urls"] if u.endswith(transport)]}
                               for s in starts[0]["iceServers"]]
            relayed = Bot(starts[0]["sfu"]["url"], starts[0]["sfu"]["token"], colour=RED,
                          ice_servers=relayed_servers, relay_only=True)
            direct = Bot(starts[1]["sfu"]["url"], starts[1]["sfu"]["token"], colour=BLUE,
                         ice_servers=starts[1]["iceServers"])
            bots += [relayed, direct]
            await asyncio.gather(relayed.join(wait=30), direct.join(wait=30))
            await wait_for(lambda: relayed.received.video_frames >= 10
                           and direct.received.video_frames >= 10
                           and relayed.received.audio_frames >= 10
                           and direct.received.audio_frames >= 10)
            assert nominated_candidate_type(relayed) == "relay"
            # what each side decodes is the other's picture: media crossed the relay both ways
            await wait_for(lambda: close_to(relayed.received.last_colour, BLUE)
                           and close_to(direct.received.last_colour, RED))
            for sig in (caller, callee):
                await sig.close()
    finally:
        for bot in bots:
            with contextlib.suppress(Exception):
                await bot.close()
        stop_server(proc)
    assert "Traceback" not in log.read_text()
