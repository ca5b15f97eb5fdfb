from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from api.middleware import error_middleware, request_id_middleware
from core.errors import AlreadyExists, InvalidArgument, NapalmError, RateLimited


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("secret detail in /srv/app.py line 3")


async def invalid(request: web.Request) -> web.Response:
    raise InvalidArgument("name is too long")


async def taken(request: web.Request) -> web.Response:
    raise AlreadyExists("email already registered")


async def limited(request: web.Request) -> web.Response:
    raise RateLimited("too many attempts", retry_after=41.2)


async def internal(request: web.Request) -> web.Response:
    raise NapalmError("db row 17 corrupt")


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> TestClient:
    app = web.Application(middlewares=[request_id_middleware, error_middleware])
    app.add_routes([web.get("/boom", boom), web.get("/invalid", invalid), web.get("/taken", taken),
                    web.get("/limited", limited), web.get("/internal", internal),
                    web.get("/ok", ok)])
    return await aiohttp_client(app)


@pytest.mark.parametrize(
    ("path", "status", "code", "message"),
    [
        ("/invalid", 400, "invalid_argument", "name is too long"),
        ("/taken", 409, "already_exists", "email already registered"),
        ("/limited", 429, "rate_limited", "too many attempts"),
        ("/internal", 500, "internal", "internal error"),
        ("/nowhere", 404, "not_found", "not found"),
    ],
)
async def test_errors_are_json_with_stable_codes(
    client: TestClient, path: str, status: int, code: str, message: str
) -> None:
    resp = await client.get(path)
    assert resp.status == status
    assert await resp.json() == {"error": {"code": code, "message": message}}


async def test_rate_limited_says_when_to_retry(client: TestClient) -> None:
    resp = await client.get("/limited")
    assert resp.headers["Retry-After"] == "42"


async def test_wrong_method_is_a_json_error_with_allow(client: TestClient) -> None:
    resp = await client.post("/ok")
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "invalid_argument"
    assert resp.headers["Allow"] == "GET,HEAD" or "GET" in resp.headers["Allow"]


async def test_an_unexpected_exception_never_reaches_the_client(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="api.middleware"):
        resp = await client.get("/boom")
    body = await resp.text()
    assert resp.status == 500
    assert "secret detail" not in body and "Traceback" not in body
    assert (await resp.json())["error"] == {"code": "internal", "message": "internal error"}
    assert any("secret detail" in (r.exc_text or "") for r in caplog.records)


async def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    resp = await client.get("/ok", headers={"X-Request-Id": "abc-123"})
    assert resp.headers["X-Request-Id"] == "abc-123"
    made = await client.get("/ok", headers={"X-Request-Id": "bad id with spaces"})
    assert made.headers["X-Request-Id"] != "bad id with spaces"
    assert len(made.headers["X-Request-Id"]) == 32
    err = await client.get("/invalid")
    assert len(err.headers["X-Request-Id"]) == 32
    missing = await client.get("/nowhere")
    assert "X-Request-Id" in missing.headers
