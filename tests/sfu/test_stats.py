"""Node totals in /metrics and the operator's per-participant room stats."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from adapters.sql.migrate import upgrade
from core.clock import SystemClock
from core.settings import load_settings
from loadtest.bot import BLUE, RED, Bot
from napalmsky.composition import SFU, build_app
from napalmsky.startup import node_secret
from sfu.stats import LATENCY_BUCKETS, LATENCY_SAMPLE_EVERY, ForwardLatency
from sfu.token import mint_join_token

OPERATOR = "o" * 40


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


async def test_metrics_and_room_stats(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    settings = load_settings({"NAPALMSKY_DATA_DIR": str(tmp_path),
                              "NAPALMSKY_RTC_BIND": "127.0.0.1",
                              "NAPALMSKY_OPERATOR_TOKEN": OPERATOR})
    await asyncio.to_thread(upgrade, settings.database_url)
    client: TestClient = await aiohttp_client(build_app(settings))
    sfu = client.app[SFU]
    sfu.create_room("room-s")
    url = str(client.make_url("/sfu/ws"))
    secret = node_secret(settings)
    bots = [Bot(url, mint_join_token(secret, "room-s", u, SystemClock()), colour=c)
            for u, c in (("alice", RED), ("bob", BLUE))]
    try:
        for bot in bots:
            await bot.join()
        deadline = time.monotonic() + 20
        while min(b.received.video_frames for b in bots) < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

        text = await (await client.get("/metrics")).text()
        assert metric(text, "napalmsky_sfu_rooms") == 1
        assert metric(text, "napalmsky_sfu_participants") == 2
        forwarded = metric(text, "napalmsky_sfu_packets_forwarded_total")
        assert forwarded > 100
        assert metric(text, "napalmsky_sfu_bytes_forwarded_total") > forwarded * 10
        assert "alice" not in text and "room-s" not in text  # no per-user or per-room labels
        # One packet in LATENCY_SAMPLE_EVERY is timed, from its kernel receive timestamp.
        timed = metric(text, "napalmsky_sfu_forward_latency_seconds_count")
        received = metric(text, "napalmsky_sfu_packets_received_total")
        assert received / LATENCY_SAMPLE_EVERY - 2 <= timed <= received / LATENCY_SAMPLE_EVERY + 2
        assert metric(text, 'napalmsky_sfu_forward_latency_seconds_bucket{le="+Inf"}') == timed
        assert 0 < metric(text, "napalmsky_sfu_forward_latency_seconds_sum") < timed * 0.1

        auth = {"Authorization": f"Bearer {OPERATOR}"}
        deadline = time.monotonic() + 15
        while True:  # bit rates need two report rounds (~1 s apart) to exist
            resp = await client.get("/sfu/rooms/room-s/stats", headers=auth)
            assert resp.status == 200
            body = await resp.json()
            rates = [p["out"]["video"]["bitrateBps"] for p in body["participants"]]
            if all(rates) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert body["roomId"] == "room-s"
        people = {p["userId"]: p for p in body["participants"]}
        assert set(people) == {"alice", "bob"}
        alice = people["alice"]
        assert alice["connected"] is True
        assert alice["in"]["video"]["packets"] > 0 and alice["out"]["video"]["packets"] > 0
        assert alice["out"]["video"]["bitrateBps"] > 0  # sampled by the report rounds
        assert set(alice["out"]["video"]) >= {"rttMs", "jitterMs", "fractionLost",
                                              "keyframeRequests", "retransmitted"}

        for headers, status, code in (
            ({}, 401, "unauthenticated"),
            ({"Authorization": "Bearer " + "x" * 40}, 403, "permission_denied"),
            ({"Authorization": "Basic abc"}, 401, "unauthenticated"),
        ):
            refused = await client.get("/sfu/rooms/room-s/stats", headers=headers)
            assert refused.status == status
            assert (await refused.json())["error"]["code"] == code
        missing = await client.get("/sfu/rooms/nope/stats", headers=auth)
        assert missing.status == 404

        await sfu.close_room("room-s", "call_ended")
        after = await (await client.get("/metrics")).text()
        assert metric(after, "napalmsky_sfu_rooms") == 0
        assert metric(after, "napalmsky_sfu_participants") == 0
        # totals survive the room: counters never go down
        assert metric(after, "napalmsky_sfu_packets_forwarded_total") >= forwarded
    finally:
        for bot in bots:
            await bot.close()


async def test_room_stats_are_off_without_an_operator_token(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    settings = load_settings({"NAPALMSKY_DATA_DIR": str(tmp_path)})
    await asyncio.to_thread(upgrade, settings.database_url)
    client: TestClient = await aiohttp_client(build_app(settings))
    client.app[SFU].create_room("r")
    resp = await client.get("/sfu/rooms/r/stats", headers={"Authorization": "Bearer anything"})
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "permission_denied"


def test_forward_latency_buckets_are_cumulative() -> None:
    latency = ForwardLatency()
    for seconds in (0.00005, 0.0001, 0.0003, 0.004, 7.0):
        latency.observe(seconds)
    buckets = dict(latency.buckets())
    assert buckets["0.0001"] == 2  # an upper bound includes its own value
    assert buckets["0.0005"] == 3
    assert buckets["0.005"] == 4
    assert buckets[str(LATENCY_BUCKETS[-1])] == 4
    assert buckets["+Inf"] == 5
    assert abs(latency.total - 7.00445) < 1e-9
