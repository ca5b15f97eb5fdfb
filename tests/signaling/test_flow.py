"""The whole call flow over the signaling socket, with the injected clock driving time."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient

from core.clock import SystemClock
from core.ids import UserId
from core.store import BanStatus, CallEndReason
from napalmsky.composition import SETTINGS, SFU
from napalmsky.startup import node_secret
from sfu.token import verify_join_token
from tests.signaling.conftest import Client, Node, Rejected, make_node


async def start_call(node: Node, a: Client, b: Client, seconds: int = 60) -> str:
    invite = await a.request("call:invite", to=b.user_id, seconds=seconds)
    incoming = await b.next("call:invite")
    assert incoming["inviteId"] == invite["inviteId"] and incoming["from"]["id"] == a.user_id
    accepted = await b.request("call:accept", inviteId=invite["inviteId"])
    for client in (a, b):
        start = await client.next("call:start")
        assert start["roomId"] == accepted["roomId"]
    return str(accepted["roomId"])


async def test_state_after_auth(node: Node) -> None:
    a = await node.user("Ada")
    assert a.state["protocol"] == 1
    assert a.state["user"]["id"] == a.user_id
    assert a.state["presence"]["online"] is True and a.state["call"] is None
    assert a.state["invites"] == {"incoming": [], "outgoing": None}


async def test_the_whole_call(node: Node) -> None:
    a, b = await node.user("Ada"), await node.user("Bo")
    status, deck = await node.get("/api/v1/deck", a.token)
    assert status == 200 and [p["id"] for p in deck["people"]] == [b.user_id]

    invite = await a.request("call:invite", to=b.user_id, seconds=60)
    incoming = await b.next("call:invite")
    assert incoming["seconds"] == 60 and incoming["from"]["name"] == "Ada"
    room_id = (await b.request("call:accept", inviteId=invite["inviteId"]))["roomId"]
    secret = node_secret(node.client.app[SETTINGS])
    for client in (a, b):
        start = await client.next("call:start")
        assert start["roomId"] == room_id
        ends_at = datetime.fromisoformat(start["endsAt"]).timestamp()  # ISO 8601, as REST
        assert start["endsAt"].endswith("Z")
        assert ends_at == pytest.approx(node.clock.time() + 60, abs=1)
        assert start["sfu"]["url"].endswith("/sfu/ws")
        grant = verify_join_token(secret, start["sfu"]["token"], SystemClock(), room_id)
        assert grant.user_id == client.user_id
        assert start["iceServers"] == []
    assert room_id in node.client.app[SFU].rooms

    # busy people leave the deck; chat reaches the partner and the record
    status, deck = await node.get("/api/v1/deck", (await node.user("Cy")).token)
    assert [p["id"] for p in deck["people"]] == []
    await a.request("room:message", roomId=room_id, text="hi Bo")
    assert (await b.next("room:message"))["text"] == "hi Bo"
    for text in ("nul \u0000 here", "lone \ud800 surrogate"):  # what no database stores
        with pytest.raises(Rejected) as unstorable:
            await a.request("room:message", roomId=room_id, text=text)
        assert unstorable.value.code == "invalid_argument"
        assert unstorable.value.message.startswith("data.text: ")
    await b.request("room:message", roomId=room_id, text="hello")

    node.clock.advance(20)
    await a.request("room:leave", roomId=room_id)
    for client in (a, b):
        ended = await client.next("call:ended")
        assert ended == {"roomId": room_id, "reason": "left", "durationSeconds": 20}

    status, history = await node.get("/api/v1/me/calls", b.token)
    assert status == 200 and len(history["calls"]) == 1
    record = history["calls"][0]
    assert record["partnerId"] == a.user_id and record["durationSeconds"] == 20
    assert [m["text"] for m in record["messages"]] == ["hi Bo", "hello"]
    metrics = (await node.get("/api/v1/me/metrics", a.token))[1]
    assert metrics["sessionCount"] == 1 and metrics["timerTotalSeconds"] == 20

    with pytest.raises(Rejected) as again:  # a 24-hour cooldown for the pair
        await a.request("call:invite", to=b.user_id)
    assert again.value.code == "failed_precondition"
    status, deck = await node.get("/api/v1/deck", a.token)
    assert b.user_id not in [p["id"] for p in deck["people"]]
    node.clock.advance(24 * 3600 + 1)
    await a.request("presence:heartbeat")  # a day passed: presence needs its heartbeats
    await b.request("presence:heartbeat")
    await a.request("call:invite", to=b.user_id)


async def test_the_server_ends_the_call_at_its_time(node: Node) -> None:
    a, b = await node.user("Ada"), await node.user("Bo")
    room_id = await start_call(node, a, b, seconds=30)
    await node.advance(29)
    assert a.drain("call:ended") == []
    await node.advance(2)
    for client in (a, b):
        assert await client.next("call:ended") == {"roomId": room_id, "reason": "completed",
                                                   "durationSeconds": 30}
    call = await node.sig.api.store.calls.get(room_id)  # type: ignore[arg-type]
    assert call is not None and call.end_reason is CallEndReason.COMPLETED


async def test_invites_expire(node: Node) -> None:
    a, b = await node.user("Ada"), await node.user("Bo")
    invite = await a.request("call:invite", to=b.user_id)
    assert (await b.next("call:invite"))["inviteId"] == invite["inviteId"]
    await node.advance(31)
    for client in (a, b):
        assert (await client.next("call:expired"))["inviteId"] == invite["inviteId"]
    with pytest.raises(Rejected) as late:
        await b.request("call:accept", inviteId=invite["inviteId"])
    assert late.value.code == "not_found"
    await a.request("call:invite", to=b.user_id)  # the caller may invite again


async def test_decline_and_cancel_reach_both(node: Node) -> None:
    a, b = await node.user("Ada"), await node.user("Bo")
    first = await a.request("call:invite", to=b.user_id)
    await b.request("call:decline", inviteId=first["inviteId"])
    for client in (a, b):
        assert (await client.next("call:declined"))["inviteId"] == first["inviteId"]
    second = await a.request("call:invite", to=b.user_id)
    await a.request("call:cancel", inviteId=second["inviteId"])
    for client in (a, b):
        assert (await client.next("call:cancelled"))["inviteId"] == second["inviteId"]


# ---- races: exactly one room or none ----


async def test_two_accepts_make_one_room(node: Node) -> None:
    a, b = await node.user("Ada"), await node.user("Bo")
    b2 = await node.connect(b.token, b.user_id)  # a second tab
    invite = await a.request("call:invite", to=b.user_id)
    results = await asyncio.gather(
        b.request("call:accept", inviteId=invite["inviteId"]),
        b2.request("call:accept", inviteId=invite["inviteId"]), return_exceptions=True)
    rooms = [r for r in results if isinstance(r, dict)]
    errors = [r for r in results if isinstance(r, Rejected)]
    assert len(rooms) == 1 and len(errors) == 1 and errors[0].code == "not_found"
    assert len(node.client.app[SFU].rooms) == 1


@pytest.mark.parametrize("other", ["cancel", "decline", "expiry"])
async def test_accept_racing_the_end_of_the_invite(node: Node, other: str) -> None:
    a, b = await node.user("Ada"), await node.user("Bo")
    invite = await a.request("call:invite", to=b.user_id)
    invite_id = invite["inviteId"]
    racer = {
        "cancel": lambda: a.request("call:cancel", inviteId=invite_id),
        "decline": lambda: b.request("call:decline", inviteId=invite_id),
        "expiry": lambda: node.advance(30),
    }[other]
    results = await asyncio.gather(b.request("call:accept", inviteId=invite_id), racer(),
                                   return_exceptions=True)
    accepted = isinstance(results[0], dict)
    rooms = node.client.app[SFU].rooms
    assert len(rooms) == (1 if accepted else 0)
    if other != "expiry":
        assert accepted != isinstance(results[1], dict)  # exactly one of the two won


async def test_one_callee_accepting_two_invites_joins_one_call(node: Node) -> None:
    a, c, b = await node.user("Ada"), await node.user("Cy"), await node.user("Bo")
    first = await a.request("call:invite", to=b.user_id)
    second = await c.request("call:invite", to=b.user_id)
    results = await asyncio.gather(
        b.request("call:accept", inviteId=first["inviteId"]),
        b.request("call:accept", inviteId=second["inviteId"]), return_exceptions=True)
    assert sum(isinstance(r, dict) for r in results) == 1
    loser = next(r for r in results if isinstance(r, Rejected))
    assert loser.code == "failed_precondition"


async def test_both_leaving_at_once_ends_the_call_once(node: Node) -> None:
    a, b = await node.user("Ada"), await node.user("Bo")
    room_id = await start_call(node, a, b)
    results = await asyncio.gather(a.request("room:leave", roomId=room_id),
                                   b.request("room:leave", roomId=room_id),
                                   return_exceptions=True)
    assert any(isinstance(r, dict) for r in results)
    store = node.sig.api.store
    for user in (a.user_id, b.user_id):
        assert len(await store.chat_history.list_for_user(UserId(user))) == 1
        assert (await store.users.get(UserId(user))).session_count == 1  # type: ignore[union-attr]
    assert (await a.next("call:ended"))["roomId"] == room_id
    await asyncio.sleep(0.2)
    assert a.drain("call:ended") == []  # told once


# ---- dropped sockets ----


async def test_a_dropped_socket_has_a_grace_period(node: Node) -> None:
    a, b = await node.user("Ada"), await node.user("Bo")
    room_id = await start_call(node, a, b)
    await b.close()
    await asyncio.sleep(0.2)  # let the server see the socket go
    await node.advance(10)
    assert a.drain("call:ended") == []
    await a.request("room:message", roomId=room_id, text="are you there?")
    back = await node.connect(b.token, b.user_id)
    assert back.state["call"]["roomId"] == room_id
    assert [m["text"] for m in back.state["call"]["messages"]] == ["are you there?"]
    assert back.state["call"]["sfu"]["token"]  # a fresh join token to resume with
    await node.advance(10)
    assert a.drain("call:ended") == []
    await back.close()
    await asyncio.sleep(0.2)
    assert node.sig.timers.pending(f"grace:{b.user_id}"), node.sig.timers._callbacks
    await node.advance(16)
    assert (await a.next("call:ended"))["reason"] == "disconnected"


# ---- bad input ----


async def test_bad_requests_get_error_frames_and_the_socket_stays(node: Node) -> None:
    a, b = await node.user("Ada"), await node.user("Bo")
    offline_token, offline_id = await node.guest("Off")
    banned = await node.user("Ban")
    await node.sig.api.store.users.update(UserId(banned.user_id),
                                          {"ban_status": BanStatus.PERMANENT})
    cases = [
        ("no:such", {}, "invalid_argument"),
        ("call:invite", {"to": a.user_id}, "invalid_argument"),  # myself
        ("call:invite", {"to": offline_id}, "failed_precondition"),
        ("call:invite", {"to": banned.user_id}, "failed_precondition"),
        ("call:invite", {"to": str(uuid.uuid4())}, "not_found"),
        ("call:invite", {"to": b.user_id, "seconds": 5}, "invalid_argument"),
        ("call:invite", {"to": b.user_id, "seconds": 121}, "invalid_argument"),
        ("call:invite", {"to": b.user_id, "seconds": "60"}, "invalid_argument"),
        ("room:message", {"roomId": str(uuid.uuid4()), "text": "hi"}, "failed_precondition"),
        ("call:accept", {"inviteId": str(uuid.uuid4())}, "not_found"),
        ("presence:set", {"available": "yes"}, "invalid_argument"),
    ]
    for kind, data, code in cases:
        with pytest.raises(Rejected) as info:
            await a.request(kind, **data)
        assert info.value.code == code, (kind, data, info.value)
    await a.ws.send_str("{not json")
    assert (await a.next("error"))["code"] == "invalid_argument"
    await a.ws.send_str('["a list"]')
    assert (await a.next("error"))["code"] == "invalid_argument"

    invite = await a.request("call:invite", to=b.user_id)
    with pytest.raises(Rejected) as twice:
        await a.request("call:invite", to=b.user_id)
    assert twice.value.code == "failed_precondition"  # one pending invite per caller
    c = await node.user("Cy")
    with pytest.raises(Rejected) as not_mine:
        await c.request("call:accept", inviteId=invite["inviteId"])
    assert not_mine.value.code == "permission_denied"
    await a.request("presence:heartbeat")  # still usable
    del offline_token


async def test_floods_are_rate_limited(node: Node) -> None:
    a = await node.user("Ada")
    results = await asyncio.gather(*(a.request("presence:heartbeat") for _ in range(60)),
                                   return_exceptions=True)
    limited = [r for r in results if isinstance(r, Rejected)]
    assert limited and all(r.code == "rate_limited" for r in limited)
    assert sum(isinstance(r, dict) for r in results) >= 40


async def test_oversized_frames_close_the_socket(node: Node) -> None:
    a = await node.user("Ada")
    await a.ws.send_str('{"type":"room:message","data":{"text":"' + "x" * 20000 + '"}}')
    await asyncio.wait_for(a.reader, 5)  # type: ignore[arg-type]
    assert a.ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def test_authentication_is_required_first(node: Node) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(node.client.make_url("/ws")) as ws:
            await ws.send_json({"type": "presence:heartbeat", "data": {}})
            reply = await ws.receive_json()
            assert reply["type"] == "error" and reply["data"]["code"] == "invalid_argument"
            await ws.receive()
            assert ws.close_code == 4401
        async with session.ws_connect(node.client.make_url("/ws")) as ws:
            await ws.send_json({"type": "auth", "data": {"token": "forged"}})
            assert (await ws.receive_json())["data"]["code"] == "unauthenticated"
            await ws.receive()
            assert ws.close_code == 4401
        node.sig.gateway.auth_timeout = 0.2
        async with session.ws_connect(node.client.make_url("/ws")) as ws:
            await ws.receive_json()
            await ws.receive()
            assert ws.close_code == 4001


async def test_busy_people_cannot_be_invited_and_cannot_invite(node: Node) -> None:
    a, b, c = await node.user("Ada"), await node.user("Bo"), await node.user("Cy")
    await start_call(node, a, b)
    with pytest.raises(Rejected) as busy:
        await c.request("call:invite", to=b.user_id)
    assert (busy.value.code, busy.value.message) == ("failed_precondition", "user is busy")
    with pytest.raises(Rejected) as mine:
        await a.request("call:invite", to=c.user_id)
    assert mine.value.message == "you are in a call"
    await c.request("presence:set", available=False)
    d = await node.user("Di")
    with pytest.raises(Rejected) as away:
        await d.request("call:invite", to=c.user_id)
    assert away.value.message == "user is not available"


async def test_client_config(node: Node) -> None:
    resp = await node.client.get("/api/v1/config")
    assert resp.status == 200
    assert await resp.json() == {"protocol": 1, "callMinSeconds": 10, "callMaxSeconds": 120,
                                 "callDefaultSeconds": 60, "inviteSeconds": 30,
                                 "reconnectGraceSeconds": 15.0, "recordingEnabled": False}


async def test_the_deck_pages_through_everyone_available(node: Node) -> None:
    me = await node.user("Me")
    others = [await node.user(f"P{i}") for i in range(5)]
    banned = others[1]
    await node.sig.api.store.users.update(UserId(banned.user_id),
                                          {"ban_status": BanStatus.TEMPORARY})
    await others[2].request("presence:set", available=False)
    seen: list[str] = []
    cursor = ""
    for _ in range(10):
        status, page = await node.get(f"/api/v1/deck?limit=2&cursor={cursor}", me.token)
        assert status == 200 and len(page["people"]) <= 2
        seen += [p["id"] for p in page["people"]]
        if page["nextCursor"] is None:
            break
        cursor = page["nextCursor"]
    expected = sorted(o.user_id for o in others if o not in (banned, others[2]))
    assert seen == expected
    for bad in ("limit=0", "limit=51", "limit=x"):
        status, body = await node.get(f"/api/v1/deck?{bad}", me.token)
        assert (status, body["error"]["code"]) == (400, "invalid_argument")


async def test_bad_frames_count_against_the_flood_limit(node: Node) -> None:
    """3,000 frames that fail to parse used to be answered one by one, never closed."""
    a = await node.user("Ada")
    for n in range(3000):
        if a.ws.closed:
            break
        if n % 2:
            await a.ws.send_bytes(b"\x00binary")
        else:
            await a.ws.send_str("{not json")
    await asyncio.wait_for(a.reader, 10)  # type: ignore[arg-type]
    assert a.ws.close_code == 4429


async def test_socket_caps_per_user_per_ip_and_before_auth(
        aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    node = await make_node(aiohttp_client, tmp_path, {
        "NAPALMSKY_WS_PER_USER": "2", "NAPALMSKY_WS_PER_IP": "5",
        "NAPALMSKY_WS_UNAUTHENTICATED": "3"})
    try:
        token, user_id = await node.guest("Ada")
        first = [await node.connect(token, user_id) for _ in range(2)]
        async with aiohttp.ClientSession() as session:

            async def refused(authenticate: bool) -> tuple[int | None, dict[str, Any]]:
                async with session.ws_connect(node.client.make_url("/ws")) as ws:
                    if authenticate:
                        await ws.send_json({"type": "auth", "data": {"token": token}})
                    frame = await ws.receive_json(timeout=5)
                    await ws.receive(timeout=5)
                    return ws.close_code, frame

            code, frame = await refused(True)  # a third socket for the same user
            assert code == 4430 and frame["data"]["code"] == "rate_limited"
            assert "this user" in frame["data"]["message"]
            # sockets that never authenticate: three wait, the next is refused at once
            waiting = [await session.ws_connect(node.client.make_url("/ws")) for _ in range(3)]
            code, frame = await refused(False)
            assert code == 4430 and "authenticate" in frame["data"]["message"]
            for ws in waiting:
                await ws.close()
            # per IP: 2 signed-in sockets + 3 more reach the cap of 5
            others = [await node.user(f"U{i}") for i in range(3)]
            code, frame = await refused(True)
            assert code == 4430 and "address" in frame["data"]["message"]
            for client in (*first, *others):
                await client.request("presence:heartbeat")  # the ones inside stay usable
    finally:
        for c in node.clients:
            await c.close()


async def test_presence_changes_reach_deck_viewers_only(node: Node) -> None:
    """Every connect used to be broadcast to every socket (the cost grew with the square of
    the sockets), and an unavailable user's comings and goings too (issue 10, item 4)."""
    viewer = await node.user("Ada")
    bystander = await node.user("Cy")
    bo_token, bo_id = await node.guest("Bo")
    bo = await node.connect(bo_token, bo_id)
    status, deck = await node.get("/api/v1/deck", viewer.token)  # Ada is shown Bo
    assert status == 200 and bo_id in [p["id"] for p in deck["people"]]
    viewer.drain("presence:update")
    bystander.drain("presence:update")

    second_tab = await node.connect(bo_token, bo_id)
    update = await viewer.next("presence:update")
    assert update["userId"] == bo_id and update["online"] is True
    await bo.request("presence:set", available=False)
    assert (await viewer.next("presence:update"))["available"] is False
    # unavailable now: closing a tab and opening another tell nobody
    await second_tab.close()
    await node.connect(bo_token, bo_id)
    await viewer.request("presence:heartbeat")  # a round trip: anything sent has arrived
    assert viewer.drain("presence:update") == []
    # the bystander, never shown Bo, heard nothing at all
    await bystander.request("presence:heartbeat")
    assert bystander.drain("presence:update") == []


# ---- microphone and camera on/off ----


async def test_media_state_reaches_the_partner_and_a_resumed_call(node: Node) -> None:
    a, b = await node.user("Ada"), await node.user("Bo")
    room_id = await start_call(node, a, b)
    assert await a.request("room:media", roomId=room_id, audio=False, video=True) == {}
    for client in (a, b):  # to both: the partner shows it, the sender's other tabs follow
        told = await client.next("room:media")
        assert told == {"roomId": room_id, "userId": a.user_id, "audio": False, "video": True}
    # a reconnecting partner gets the last state with the resumed call; the sender gets null
    again = await node.connect(b.token, b.user_id)
    assert again.state["call"]["partnerMedia"] == {"audio": False, "video": True}
    a2 = await node.connect(a.token, a.user_id)
    assert a2.state["call"]["partnerMedia"] is None


async def test_media_state_only_from_a_participant_and_well_formed(node: Node) -> None:
    a, b, c = await node.user("Ada"), await node.user("Bo"), await node.user("Cy")
    room_id = await start_call(node, a, b)
    cases: list[tuple[Client, dict[str, Any], str]] = [
        (c, {"roomId": room_id, "audio": False, "video": False}, "failed_precondition"),
        (a, {"roomId": str(uuid.uuid4()), "audio": True, "video": True}, "failed_precondition"),
        (a, {"roomId": room_id, "audio": "no", "video": True}, "invalid_argument"),
        (a, {"roomId": room_id, "audio": 0, "video": True}, "invalid_argument"),
        (a, {"roomId": room_id, "audio": True}, "invalid_argument"),
        (a, {"roomId": room_id, "audio": True, "video": None}, "invalid_argument"),
        (a, {"audio": True, "video": True}, "invalid_argument"),
        (a, {"roomId": 5, "audio": True, "video": True}, "invalid_argument"),
    ]
    for client, data, code in cases:
        with pytest.raises(Rejected) as info:
            await client.request("room:media", **data)
        assert info.value.code == code, (data, info.value)
    assert b.drain("room:media") == [] and c.drain("room:media") == []
    await a.request("room:leave", roomId=room_id)
    await a.next("call:ended")
    with pytest.raises(Rejected) as over:  # after the call: no longer a participant
        await a.request("room:media", roomId=room_id, audio=True, video=True)
    assert over.value.code == "failed_precondition"


async def test_no_cooldown_lets_a_pair_call_again_at_once(
        aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    """NAPALMSKY_COOLDOWN_HOURS=0 (load-test and demo targets): the pair meets again."""
    node = await make_node(aiohttp_client, tmp_path, {"NAPALMSKY_COOLDOWN_HOURS": "0"})
    try:
        a, b = await node.user("Ada"), await node.user("Bo")
        for _ in range(2):
            room_id = await start_call(node, a, b)
            await a.request("room:leave", roomId=room_id)
            await a.next("call:ended")
            status, deck = await node.get("/api/v1/deck", a.token)
            assert status == 200 and b.user_id in [p["id"] for p in deck["people"]]
    finally:
        for c in node.clients:
            await c.close()
