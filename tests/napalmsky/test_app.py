"""The node's HTTP app as the composition root builds it, on embedded and real backends."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from adapters.sql.migrate import upgrade
from core.clock import FakeClock
from core.settings import Settings, load_settings
from napalmsky.composition import SERVICES, build_app
from napalmsky.startup import describe_mode, secret_key
from tests.services import (
    PostgresDatabase,
    PrivateRedis,
    create_postgres_database,
    drop_postgres_database,
)


async def embedded(tmp_path: Path, **env: str) -> Settings:
    settings = load_settings({"NAPALMSKY_DATA_DIR": str(tmp_path), **env}, hostname="test")
    await asyncio.to_thread(upgrade, settings.database_url)
    return settings


async def test_health_and_ready_on_embedded_defaults(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client: TestClient = await aiohttp_client(build_app(await embedded(tmp_path)))
    health = await client.get("/health")
    assert health.status == 200 and await health.json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status == 200
    assert await ready.json() == {"status": "ready", "checks": {"database": "ok"}}
    assert (tmp_path / "napalmsky.db").exists()


async def test_mode_is_logged(
    aiohttp_client: AiohttpClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="napalmsky.composition"):
        await aiohttp_client(build_app(await embedded(tmp_path)))
    assert any("single-node: sqlite, in-process bus, local blobs" in r.getMessage()
               for r in caplog.records)


def test_describe_mode_names_the_production_adapters() -> None:
    settings = load_settings({"DATABASE_URL": "postgresql://db/x", "REDIS_URL": "redis://r:6379/0",
                              "NAPALMSKY_S3_BUCKET": "b"})
    assert describe_mode(settings) == "multi-node: postgresql, redis bus, s3 blobs"


async def test_metrics_count_requests_by_route_template(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client: TestClient = await aiohttp_client(build_app(await embedded(tmp_path)))
    for _ in range(3):
        await client.get("/health")
    await client.get("/no/such/thing")
    await client.get("/ready")
    text = await (await client.get("/metrics")).text()
    assert 'napalmsky_http_requests_total{method="GET",route="/health",status="200"} 3.0' in text
    assert 'route="unmatched",status="404"' in text
    assert "napalmsky_ready 1.0" in text
    assert "process_cpu_seconds_total" in text
    assert "/no/such/thing" not in text


async def test_unknown_route_is_a_json_error(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client: TestClient = await aiohttp_client(build_app(await embedded(tmp_path)))
    resp = await client.get("/nope")
    assert resp.status == 404
    assert await resp.json() == {"error": {"code": "not_found", "message": "not found"}}


async def test_local_blobs_round_trip_through_a_signed_url(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client: TestClient = await aiohttp_client(build_app(await embedded(tmp_path)))
    blobs = client.app[SERVICES].blobs
    await blobs.put("selfies/u1.jpg", b"\xff\xd8jpeg", "image/jpeg")
    url = await blobs.url("selfies/u1.jpg", 60)
    assert url.startswith("http://127.0.0.1:8080/blobs/selfies/u1.jpg?")
    resp = await client.get(url.removeprefix("http://127.0.0.1:8080"))
    assert resp.status == 200
    assert await resp.read() == b"\xff\xd8jpeg"
    assert resp.headers["Content-Type"] == "image/jpeg"
    forged = await client.get(url.removeprefix("http://127.0.0.1:8080")[:-4] + "0000")
    assert forged.status == 403


async def test_signed_urls_expire_by_the_injected_clock(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    clock = FakeClock(start=time.time())
    client: TestClient = await aiohttp_client(build_app(await embedded(tmp_path), clock=clock))
    blobs = client.app[SERVICES].blobs
    await blobs.put("a.txt", b"hi", "text/plain")
    path = (await blobs.url("a.txt", 30)).removeprefix("http://127.0.0.1:8080")
    assert (await client.get(path)).status == 200
    clock.advance(31)
    resp = await client.get(path)
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "permission_denied"


def test_secret_key_is_generated_once_and_private(tmp_path: Path) -> None:
    settings = load_settings({"NAPALMSKY_DATA_DIR": str(tmp_path)})
    first = secret_key(settings)
    assert len(first) >= 32
    assert secret_key(settings) == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    configured = load_settings({"NAPALMSKY_DATA_DIR": str(tmp_path),
                                "NAPALMSKY_SECRET_KEY": "x" * 40})
    assert secret_key(configured) == b"x" * 40


async def test_ready_follows_redis_down_and_back(
    aiohttp_client, tmp_path: Path, own_redis: PrivateRedis
) -> None:
    settings = await embedded(tmp_path, REDIS_URL=own_redis.url, NAPALMSKY_READY_TIMEOUT="3",
                        NAPALMSKY_REDIS_PREFIX=f"test-{tmp_path.name}:")
    client: TestClient = await aiohttp_client(build_app(settings))
    ok = await client.get("/ready")
    assert ok.status == 200
    assert (await ok.json())["checks"] == {"database": "ok", "redis": "ok"}

    own_redis.stop()
    down = await client.get("/ready")
    body = await down.json()
    assert down.status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] != "ok"
    assert body["error"]["code"] == "unavailable"
    assert body["error"]["message"].startswith("redis: ")
    assert (await client.get("/health")).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert "napalmsky_ready 0.0" in metrics

    own_redis.start()
    deadline = time.monotonic() + 15
    while True:
        back = await client.get("/ready")
        if back.status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert back.status == 200
    live = client.app[SERVICES].live
    await live.set("k", "v", ttl=10)
    assert await live.get("k") == "v"


@pytest.fixture
def own_postgres_database() -> Iterator[PostgresDatabase]:
    db = create_postgres_database()
    try:
        yield db
    finally:
        drop_postgres_database(db)


async def test_ready_on_postgresql_and_redis(
    aiohttp_client, tmp_path: Path, own_postgres_database: PostgresDatabase, redis_url: str
) -> None:
    settings = load_settings({"NAPALMSKY_DATA_DIR": str(tmp_path),
                              "DATABASE_URL": own_postgres_database.url, "REDIS_URL": redis_url,
                              "NAPALMSKY_REDIS_PREFIX": f"test-{tmp_path.name}:"})
    await asyncio.to_thread(upgrade, settings.database_url)
    client: TestClient = await aiohttp_client(build_app(settings))
    ready = await client.get("/ready")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"database": "ok", "redis": "ok"}


async def test_a_call_through_the_node_app(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    from core.clock import SystemClock
    from loadtest.bot import BLUE, RED, Bot
    from napalmsky.composition import SFU
    from napalmsky.startup import node_secret
    from sfu.token import mint_join_token

    settings = await embedded(tmp_path, NAPALMSKY_RTC_BIND="127.0.0.1")
    client: TestClient = await aiohttp_client(build_app(settings))
    client.app[SFU].create_room("room-x")
    url = str(client.make_url("/sfu/ws"))
    secret = node_secret(settings)
    bots = [Bot(url, mint_join_token(secret, "room-x", user, SystemClock()), colour=colour)
            for user, colour in (("a", RED), ("b", BLUE))]
    try:
        for bot in bots:
            await bot.join()
        deadline = time.monotonic() + 20
        while min(b.received.video_frames for b in bots) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert min(b.received.video_frames for b in bots) >= 5
    finally:
        for bot in bots:
            await bot.close()


async def test_no_sfu_route_without_the_sfu_role(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client: TestClient = await aiohttp_client(
        build_app(await embedded(tmp_path, NAPALMSKY_ROLES="api,signaling"))
    )
    assert (await client.get("/sfu/ws")).status == 404
