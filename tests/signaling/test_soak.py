"""1,000 connect/disconnect cycles leave no tasks and no memory behind."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import aiohttp

from tests.signaling.conftest import Node

MEMORY_TOLERANCE = 512 * 1024  # bytes: allocator and cache noise, not per-connection growth


async def cycle(node: Node, session: aiohttp.ClientSession, token: str) -> None:
    async with session.ws_connect(node.client.make_url("/ws")) as ws:
        await ws.send_json({"type": "auth", "data": {"token": token}})
        assert (await ws.receive_json(timeout=10))["type"] == "state"
        await ws.send_json({"type": "presence:heartbeat", "id": "h", "data": {}})
        while (await ws.receive_json(timeout=10))["type"] != "ack":
            pass


async def settle(node: Node) -> None:
    for _ in range(50):
        if not node.sig.gateway.connections and not node.sig.gateway._cleanups:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    gc.collect()


async def test_connect_disconnect_cycles(node: Node) -> None:
    tokens = [(await node.guest(f"user{i}"))[0] for i in range(10)]
    async with aiohttp.ClientSession() as session:
        for i in range(100):  # warm-up: caches, pools, lazy imports
            await cycle(node, session, tokens[i % 10])
        await settle(node)
        tasks_before = len(asyncio.all_tasks())
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            for i in range(1000):
                await cycle(node, session, tokens[i % 10])
            await settle(node)
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert len(asyncio.all_tasks()) == tasks_before
    assert not node.sig.gateway.connections
    assert growth < MEMORY_TOLERANCE, f"memory grew by {growth} bytes over 1,000 cycles"
    online = await node.sig.presence.online_users()
    assert online == set(), online
