"""A session that ends (logout, logout everywhere, expiry, a rotated token) loses its sockets
at once, with 4401, on whichever node they are (issue 10, item 1)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient

from core.clock import FakeClock
from signaling.protocol import CLOSE_UNAUTHENTICATED
from tests.signaling.conftest import Client, Node, make_node

PASSWORD = "correct horse battery staple"


async def register(node: Node) -> tuple[str, str]:
    """A permanent account; returns (email, user id)."""
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    resp = await node.client.post("/api/v1/auth/register", json={
        "email": email, "password": PASSWORD, "name": "Ada", "gender": "female"})
    body = await resp.json()
    assert resp.status == 201, body
    return email, body["user"]["id"]


async def login(node: Node, email: str) -> str:
    resp = await node.client.post("/api/v1/auth/login",
                                  json={"email": email, "password": PASSWORD})
    body = await resp.json()
    assert resp.status == 200, body
    return str(body["token"])


async def closed_with(client: Client, code: int, timeout: float = 1.0) -> None:
    """The server closes `client`'s socket with `code` within `timeout` seconds."""
    if client.reader is not None:
        await asyncio.wait_for(asyncio.shield(client.reader), timeout)
    assert client.ws.closed and client.ws.close_code == code, client.ws.close_code


async def still_open(client: Client) -> None:
    await client.request("presence:heartbeat")
    assert not client.ws.closed


async def post(node: Node, path: str, token: str) -> int:
    resp = await node.client.post(path, headers={"Authorization": f"Bearer {token}"})
    return resp.status


async def test_logout_closes_that_sessions_sockets_only(node: Node) -> None:
    email, user_id = await register(node)
    first, second = await login(node, email), await login(node, email)
    a1 = await node.connect(first, user_id)
    a1b = await node.connect(first, user_id)  # a second tab of the same session
    a2 = await node.connect(second, user_id)
    assert await post(node, "/api/v1/auth/logout", first) == 204
    for client in (a1, a1b):
        await closed_with(client, CLOSE_UNAUTHENTICATED)
        assert client.ws.close_code == 4401
    await still_open(a2)


async def test_logout_everywhere_closes_every_socket_of_the_user(node: Node) -> None:
    email, user_id = await register(node)
    tokens = [await login(node, email) for _ in range(3)]
    clients = [await node.connect(t, user_id) for t in tokens]
    other = await node.user("Bo")
    assert await post(node, "/api/v1/auth/logout-all", tokens[0]) in (200, 204)
    for client in clients:
        await closed_with(client, CLOSE_UNAUTHENTICATED)
    await still_open(other)


async def test_an_expired_session_loses_its_socket(node: Node) -> None:
    token, user_id = await node.guest("Ada")
    client = await node.connect(token, user_id)
    await node.advance(7 * 86400 + 1)  # a guest session lasts 7 days
    await closed_with(client, CLOSE_UNAUTHENTICATED)


@pytest.fixture
def shared_database(postgres_database: object) -> str:
    return str(postgres_database.url)  # type: ignore[attr-defined]


async def test_a_logout_on_one_node_closes_the_socket_on_another(
        aiohttp_client: AiohttpClient, tmp_path: Path, shared_database: str,
        redis_url: str) -> None:
    shared = {"DATABASE_URL": shared_database, "REDIS_URL": redis_url,
              "NAPALMSKY_REDIS_PREFIX": f"test-{uuid.uuid4().hex}:"}
    clock = FakeClock(start=time.time())
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    node_a = await make_node(aiohttp_client, tmp_path / "a", {**shared,
                                                             "NAPALMSKY_NODE_ID": "a"}, clock)
    node_b = await make_node(aiohttp_client, tmp_path / "b", {**shared,
                                                             "NAPALMSKY_NODE_ID": "b"}, clock)
    try:
        email, user_id = await register(node_a)
        token = await login(node_a, email)
        on_b = await node_b.connect(token, user_id)
        # the session is in the shared cache (the socket on B authenticated through it)
        assert await post(node_a, "/api/v1/auth/logout", token) == 204
        await closed_with(on_b, CLOSE_UNAUTHENTICATED)
        async with aiohttp.ClientSession() as http, http.ws_connect(
                node_b.client.make_url("/ws")) as ws:
            await ws.send_json({"type": "auth", "data": {"token": token}})
            refused = await ws.receive_json(timeout=5)
            assert refused["type"] == "error" and refused["data"]["code"] == "unauthenticated"
    finally:
        for n in (node_a, node_b):
            for c in n.clients:
                await c.close()
