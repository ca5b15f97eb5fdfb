"""The join socket refuses bad input with a clear error and leaves nothing behind."""

from __future__ import annotations

import aiohttp
import pytest

from core.clock import FakeClock
from loadtest.bot import BLUE, RED
from sfu.token import mint_join_token
from tests.sfu.conftest import SECRET, SfuHarness, wait_for


async def exchange(url: str, *messages: object) -> tuple[list[dict[str, object]], int | None]:
    """Send `messages` (str as is, others as JSON); collect replies until the server closes."""
    replies: list[dict[str, object]] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for message in messages:
            if isinstance(message, str):
                await ws.send_str(message)
            else:
                await ws.send_json(message)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                replies.append(msg.json())
        return replies, ws.close_code


@pytest.mark.parametrize(
    ("messages", "code", "close"),
    [
        (["not json"], "invalid_argument", 4400),
        ([{"type": "offer", "sdp": "v=0"}], "invalid_argument", 4400),
        ([{"type": "join"}], "invalid_argument", 4400),
        ([{"type": "join", "token": "v1.forged.token"}], "unauthenticated", 4401),
    ],
)
async def test_bad_join_messages(
    sfu: SfuHarness, messages: list[object], code: str, close: int
) -> None:
    replies, close_code = await exchange(sfu.url, *messages)
    assert replies[-1]["type"] == "error" and replies[-1]["code"] == code
    assert close_code == close


async def test_expired_token(sfu: SfuHarness) -> None:
    sfu.server.create_room("r")
    clock = FakeClock(start=1_000_000.0)  # long ago: expired now
    token = mint_join_token(SECRET, "r", "u", clock, ttl=60)
    replies, close_code = await exchange(sfu.url, {"type": "join", "token": token})
    assert replies == [{"type": "error", "code": "unauthenticated",
                        "message": "join token expired"}]
    assert close_code == 4401


async def test_a_token_for_another_room(sfu: SfuHarness) -> None:
    sfu.server.create_room("a")
    sfu.server.create_room("b")
    replies, close_code = await exchange(
        sfu.url, {"type": "join", "token": sfu.token("a", "u"), "roomId": "b"})
    assert replies == [{"type": "error", "code": "permission_denied",
                        "message": "join token is for another room"}]
    assert close_code == 4403
    assert not sfu.server.rooms["a"].transports and not sfu.server.rooms["b"].transports


async def test_unknown_room(sfu: SfuHarness) -> None:
    replies, close_code = await exchange(sfu.url, {"type": "join", "token": sfu.token("nope", "u")})
    assert replies[-1]["code"] == "not_found"
    assert close_code == 4404


async def test_garbage_sdp_is_refused_and_leaves_no_connection(sfu: SfuHarness) -> None:
    router = sfu.server.create_room("r")
    replies, close_code = await exchange(
        sfu.url, {"type": "join", "token": sfu.token("r", "mallory")},
        {"type": "offer", "sdp": "v=0\r\no=garbage\r\nm=video nonsense\r\n"},
    )
    assert replies[0]["type"] == "joined"
    assert replies[-1]["type"] == "error" and replies[-1]["code"] == "invalid_argument"
    assert close_code == 4400
    await wait_for(lambda: not router.transports)


async def test_a_bad_participant_does_not_disturb_the_call(sfu: SfuHarness) -> None:
    sfu.server.create_room("r")
    alice = sfu.bot("r", "alice", RED)
    bob = sfu.bot("r", "bob", BLUE)
    await alice.join()
    await bob.join()
    await wait_for(lambda: alice.received.video_frames >= 5)
    await exchange(sfu.url, {"type": "join", "token": sfu.token("r", "mallory")},
                   {"type": "offer", "sdp": "garbage"})
    await exchange(sfu.url, "{]")
    before = alice.received.video_frames
    await wait_for(lambda: alice.received.video_frames >= before + 10)
    assert set(sfu.server.rooms["r"].transports) == {"alice", "bob"}


async def test_closing_the_room_tells_both_and_closes_everything(sfu: SfuHarness) -> None:
    router = sfu.server.create_room("r")
    alice = sfu.bot("r", "alice", RED)
    bob = sfu.bot("r", "bob", BLUE)
    await alice.join()
    await bob.join()
    await wait_for(lambda: alice.received.video_frames >= 3 and bob.received.video_frames >= 3)
    transports = list(router.transports.values())
    await sfu.server.close_room("r", "call_ended")
    await wait_for(lambda: alice.closed_reason == "room_closed"
                   and bob.closed_reason == "room_closed")
    assert "r" not in sfu.server.rooms
    for transport in transports:
        assert transport.closed
        assert transport.ice.state == "closed"
