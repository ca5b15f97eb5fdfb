"""The deck shows a person's intro video and its poster by signed URL."""

from __future__ import annotations

from pathlib import Path

from aiohttp.pytest_plugin import AiohttpClient

from core.ids import UserId
from napalmsky.composition import API
from tests.signaling.conftest import make_node


async def test_the_deck_carries_the_intro_video_and_its_poster(aiohttp_client: AiohttpClient,
                                                               tmp_path: Path) -> None:
    node = await make_node(aiohttp_client, tmp_path, {})
    try:
        a, b = await node.user("Ada"), await node.user("Bo")
        store = node.client.app[API].store
        await store.users.update(UserId(b.user_id), {"video_url": f"intro/{b.user_id}/j.mp4"})
        status, deck = await node.get("/api/v1/deck", a.token)
        assert status == 200
        (bo,) = deck["people"]
        assert f"/blobs/intro/{b.user_id}/j.mp4" in bo["videoUrl"] and "sig=" in bo["videoUrl"]
        assert f"/blobs/intro/{b.user_id}/j.jpg" in bo["posterUrl"]
        status, deck = await node.get("/api/v1/deck", b.token)
        assert deck["people"][0]["videoUrl"] is None and deck["people"][0]["posterUrl"] is None
    finally:
        for c in node.clients:
            await c.close()
