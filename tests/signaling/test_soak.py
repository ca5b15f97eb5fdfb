"""1,000 connect/disconnect cycles leave no tasks and no memory behind."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections import Counter
from typing import Any

import aiohttp

from tests.signaling.conftest import Node

MEMORY_TOLERANCE = 512 * 1024  # bytes: allocator and cache noise, not per-connection growth
QUIET_DEADLINE = 60.0  # seconds: generous, a busy CI machine is slow; a quiet one takes ~0


async def cycle(node: Node, session: aiohttp.ClientSession, token: str) -> None:
    async with session.ws_connect(node.client.make_url("/ws")) as ws:
        await ws.send_json({"type": "auth", "data": {"token": token}})
        assert (await ws.receive_json(timeout=10))["type"] == "state"
        await ws.send_json({"type": "presence:heartbeat", "id": "h", "data": {}})
        while (await ws.receive_json(timeout=10))["type"] != "ack":
            pass


def kind(task: asyncio.Task[Any]) -> str:
    return str(getattr(task.get_coro(), "__qualname__", task.get_name()))


async def quiesce(node: Node, baseline: set[asyncio.Task[Any]]) -> None:
    """Wait until no kind of task is more numerous than in `baseline`, and the gateway is empty.

    A connection's server-side work (its request handler, clean-up task, bus subscription)
    outlives the client's close by a few loop iterations, many more on a busy machine: this
    waits on those tasks themselves, with a generous deadline, rather than for some time.
    Tasks are counted by kind, not by identity: the node's timer loop replaces its
    `Event.wait` task every 0.25 s, and the test client's idle keep-alive connection (a
    `RequestHandler.start` task) may be closed meanwhile; neither is a per-connection leak.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + QUIET_DEADLINE
    allowed = Counter(kind(t) for t in baseline)
    gateway = node.sig.gateway
    while True:
        live = asyncio.all_tasks() - {asyncio.current_task()}
        excess = Counter(kind(t) for t in live) - allowed
        if not excess and not gateway.connections and not gateway._cleanups:
            break
        remaining = deadline - loop.time()
        assert remaining > 0, (
            f"tasks outlived their connections: {dict(excess)}; "
            f"{len(gateway.connections)} connections, {len(gateway._cleanups)} clean-ups left")
        new = live - baseline
        if new:  # woken by the first of them to finish, then count again
            await asyncio.wait(new, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        else:  # only the gateway's bookkeeping is behind: let the loop run, then look again
            await asyncio.sleep(0.01)
    gc.collect()


def snapshot() -> tracemalloc.Snapshot:
    return tracemalloc.take_snapshot().filter_traces((
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
        tracemalloc.Filter(False, "<unknown>"),
    ))


async def test_connect_disconnect_cycles(node: Node) -> None:
    tokens = [(await node.guest(f"user{i}"))[0] for i in range(10)]
    baseline = asyncio.all_tasks()  # the node's own long-lived tasks and this test
    async with aiohttp.ClientSession() as session:
        for i in range(100):  # warm-up: caches, pools, lazy imports
            await cycle(node, session, tokens[i % 10])
        await quiesce(node, baseline)
        tracemalloc.start()
        try:
            before = snapshot()
            for i in range(1000):
                await cycle(node, session, tokens[i % 10])
            await quiesce(node, baseline)  # fails if any connection left a task behind
            after = snapshot()
        finally:
            tracemalloc.stop()
    growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert not node.sig.gateway.connections
    assert growth < MEMORY_TOLERANCE, f"memory grew by {growth} bytes over 1,000 cycles"
    online = await node.sig.presence.online_users()
    assert online == set(), online
