"""The ICE servers clients get: `GET /api/v1/ice-servers`, `call:start` and a resumed call's
`state` carry the same list, TURN with a credential for that user (turn.servers)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp.pytest_plugin import AiohttpClient

from tests.signaling.conftest import make_node
from turn.credentials import verify

SECRET = "ice-test-secret-0123456789"
OLD = "ice-old-secret-0123456789"
TURN_ENV = {
    "NAPALMSKY_REGION": "eu",
    "NAPALMSKY_ICE_SERVERS": "stun:stun.example.com:3478",
    "NAPALMSKY_ICE_SERVERS_BY_REGION": '{"eu": ["stun:eu.example.com", '
    '"turn:eu.example.com:3478?transport=udp", "turns:eu.example.com:443?transport=tcp"], '
    '"us": ["turn:us.example.com"]}',
    "NAPALMSKY_TURN_SECRETS": f"{SECRET},{OLD}",
    "NAPALMSKY_TURN_TTL": "7200",
}


def check_list(servers: list[dict[str, Any]], user_id: str, now: float) -> None:
    """The eu list, its TURN entry with a credential for `user_id` signed by the first secret."""
    assert servers[0] == {"urls": ["stun:eu.example.com"]}
    turn = servers[1]
    assert turn["urls"] == ["turn:eu.example.com:3478?transport=udp",
                            "turns:eu.example.com:443?transport=tcp"]
    expiry, _, owner = turn["username"].partition(":")
    assert owner == user_id
    assert abs(int(expiry) - (now + 7200)) <= 2
    assert verify((SECRET,), turn["username"], turn["credential"], now=now)
    assert len(servers) == 2


async def test_the_endpoint_needs_a_session_and_gives_my_regions_list(
        aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    node = await make_node(aiohttp_client, tmp_path, TURN_ENV)
    resp = await node.client.get("/api/v1/ice-servers")
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthenticated"
    bad = await node.client.get("/api/v1/ice-servers",
                                headers={"Authorization": "Bearer not-a-token"})
    assert bad.status == 401
    token, user_id = await node.guest("Ada")
    status, body = await node.get("/api/v1/ice-servers", token)
    assert status == 200
    check_list(body["iceServers"], user_id, node.clock.time())
    assert body["region"] == "eu"
    expires = datetime.fromisoformat(body["expiresAt"]).timestamp()
    assert abs(expires - (node.clock.time() + 7200)) <= 2


async def test_call_start_and_a_resumed_state_carry_the_same_list(
        aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    node = await make_node(aiohttp_client, tmp_path, TURN_ENV)
    try:
        a, b = await node.user("Ada"), await node.user("Bo")
        invite = await a.request("call:invite", to=b.user_id, seconds=60)
        await b.next("call:invite")
        await b.request("call:accept", inviteId=invite["inviteId"])
        for client in (a, b):
            start = await client.next("call:start")
            check_list(start["iceServers"], client.user_id, node.clock.time())
        # a second socket of Ada's (another tab, a reconnect) gets the call in its state
        again = await node.connect(a.token, a.user_id)
        check_list(again.state["call"]["iceServers"], a.user_id, node.clock.time())
    finally:
        for c in node.clients:
            await c.close()


async def test_without_configuration_the_list_is_empty(aiohttp_client: AiohttpClient,
                                                       tmp_path: Path) -> None:
    node = await make_node(aiohttp_client, tmp_path, {})
    token, _ = await node.guest("Ada")
    status, body = await node.get("/api/v1/ice-servers", token)
    assert status == 200
    assert body == {"iceServers": [], "expiresAt": None, "region": "local"}
