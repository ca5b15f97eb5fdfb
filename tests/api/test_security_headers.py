"""Every response carries the headers a service on the internet needs (issue 10, item 12)."""

from __future__ import annotations

from pathlib import Path

from pytest_aiohttp import AiohttpClient

from tests.api.test_v1 import make_api

APP = "https://app.example.com"


def check_common(headers: object) -> None:
    h = dict(headers)  # type: ignore[call-overload]
    csp = h["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["X-Frame-Options"] == "DENY"
    assert h["Referrer-Policy"] == "no-referrer"
    assert "camera=(self)" in h["Permissions-Policy"]
    assert "microphone=(self)" in h["Permissions-Policy"]
    assert h["Server"] == "napalmsky"  # no framework or version


async def test_pages_api_and_errors_carry_the_headers(aiohttp_client: AiohttpClient,
                                                      tmp_path: Path) -> None:
    api = await make_api(aiohttp_client, tmp_path, {"NAPALMSKY_ROLES": "all"})
    client = api.client
    for path in ("/", "/static/app.js", "/api/v1/config", "/no-such-page", "/health"):
        resp = await client.get(path)
        check_common(resp.headers)
        assert "Strict-Transport-Security" not in resp.headers  # served over http here
    resp = await client.post("/api/v1/auth/guest", json={"name": "Ada", "gender": "female"})
    assert resp.status == 201 and "token" in await resp.json()
    check_common(resp.headers)
    assert resp.headers["Cache-Control"] == "no-store"  # a response with a session token
    assert "Access-Control-Allow-Origin" not in resp.headers
    # no CORS unless configured: a preflight from another origin is refused
    pre = await client.options("/api/v1/me", headers={
        "Origin": APP, "Access-Control-Request-Method": "GET"})
    assert pre.status == 403


async def test_https_public_url_and_configured_cors_origins(aiohttp_client: AiohttpClient,
                                                             tmp_path: Path) -> None:
    api = await make_api(aiohttp_client, tmp_path, {
        "NAPALMSKY_PUBLIC_URL": "https://napalmsky.example.com",
        "NAPALMSKY_CORS_ORIGINS": APP + "/"})
    client = api.client
    resp = await client.get("/api/v1/config", headers={"Origin": APP})
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert "Origin" in resp.headers.getall("Vary", [])
    other = await client.get("/api/v1/config", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    pre = await client.options("/api/v1/me", headers={
        "Origin": APP, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert pre.status == 204
    assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    check_common(pre.headers)


def test_blobs_on_another_origin_may_be_shown_and_played() -> None:
    # selfies, posters (img-src) and intro videos (media-src) from an S3 endpoint
    from api.security import content_security_policy

    csp = dict(part.split(" ", 1) for part in
               content_security_policy(["https://s3.example.com"]).split("; "))
    assert "https://s3.example.com" in csp["img-src"].split()
    assert "https://s3.example.com" in csp["media-src"].split()
    assert "https://s3.example.com" not in csp["script-src"].split()
    plain = dict(part.split(" ", 1) for part in content_security_policy().split("; "))
    assert plain["media-src"] == "'self' blob:"
