"""What /metrics tells an operator about a signaling node: its sockets and its tasks."""

from __future__ import annotations

import re

from tests.signaling.conftest import Node


def _gauge(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} missing from /metrics"
    return float(found.group(1))


async def test_sockets_and_tasks_are_gauged(node: Node) -> None:
    async def scrape() -> str:
        return await (await node.client.get("/metrics")).text()

    before = await scrape()
    assert _gauge(before, "napalmsky_ws_connections") == 0
    assert _gauge(before, "napalmsky_asyncio_tasks") >= 1
    assert _gauge(before, 'napalmsky_event_loop{loop="asyncio"}') == 1  # pytest's loop
    a, b = await node.user("Ada"), await node.user("Bo")
    assert _gauge(await scrape(), "napalmsky_ws_connections") == 2
    await a.close()
    await b.close()
    node.clients.clear()
    text = await scrape()
    for _ in range(100):  # the node notices the closes on its own loop
        if _gauge(text, "napalmsky_ws_connections") == 0:
            break
        text = await scrape()
    assert _gauge(text, "napalmsky_ws_connections") == 0
