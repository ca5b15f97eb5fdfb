"""GET/HEAD /blobs/{key}: signed local blob URLs, errors as JSON, nothing outside the root."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient

from adapters.blobs import LocalBlobStore
from api.blobs import blob_routes
from api.middleware import error_middleware
from core.clock import FakeClock

SECRET = b"route-test-secret-0123456789"
OUTSIDE = b"TOP SECRET: outside the blob root"

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]


def sign(key: str, expires: str) -> str:
    """The URL signature, computed independently of the store (pins the format)."""
    signing_key = hmac.new(SECRET, b"napalmsky blob url v1", hashlib.sha256).digest()
    return hmac.new(signing_key, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def store(tmp_path: Path, fake_clock: FakeClock) -> LocalBlobStore:
    # Files an escape from the root would reach, under both names a key could map to.
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("secret.txt", "secret.txt@blob", "passwd", "passwd@blob"):
        (outside / name).write_bytes(OUTSIDE)
    (tmp_path / "secret.txt@blob").write_bytes(OUTSIDE)
    return LocalBlobStore(tmp_path / "root", "http://ignored.example", SECRET, fake_clock)


@pytest.fixture
async def client(aiohttp_client: ClientFactory, store: LocalBlobStore) -> Client:
    app = web.Application(middlewares=[error_middleware])
    app.add_routes(blob_routes(store))
    return await aiohttp_client(app)


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def expect_error(resp_status: int, body: object, status: int, code: str) -> None:
    assert resp_status == status
    assert isinstance(body, dict)
    assert body["error"]["code"] == code


async def test_valid_url_serves_body_and_headers(client: Client, store: LocalBlobStore) -> None:
    await store.put("selfies/u1/a.jpg", b"\xff\xd8 a jpeg", "image/jpeg")
    resp = await client.get(path_of(await store.url("selfies/u1/a.jpg", 600)))
    assert resp.status == 200
    assert await resp.read() == b"\xff\xd8 a jpeg"
    assert resp.headers["Content-Type"] == "image/jpeg"
    assert resp.headers["Cache-Control"] == "private, max-age=600"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Security-Policy"] == "sandbox"


async def test_signature_matches_the_documented_format(store: LocalBlobStore) -> None:
    url = await store.url("k/x.png", 60)
    query = dict(part.split("=") for part in urlsplit(url).query.split("&"))
    assert query["sig"] == sign("k/x.png", query["expires"])


async def test_max_age_is_the_time_left(
    client: Client, store: LocalBlobStore, fake_clock: FakeClock
) -> None:
    await store.put("k", b"x", "text/plain")
    path = path_of(await store.url("k", 600))
    fake_clock.advance(450)
    resp = await client.get(path)
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "private, max-age=150"


async def test_head_sends_headers_only(client: Client, store: LocalBlobStore) -> None:
    await store.put("k", b"12345", "video/webm")
    resp = await client.head(path_of(await store.url("k", 60)))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "video/webm"
    assert resp.headers["Content-Length"] == "5"
    assert await resp.read() == b""


async def test_range_requests_work_for_video(client: Client, store: LocalBlobStore) -> None:
    await store.put("v.webm", b"0123456789", "video/webm")
    resp = await client.get(path_of(await store.url("v.webm", 60)), headers={"Range": "bytes=2-5"})
    assert resp.status == 206
    assert await resp.read() == b"2345"


async def test_compressed_sibling_key_is_never_served_instead(
    client: Client, store: LocalBlobStore
) -> None:
    await store.put("doc.txt", b"plain text", "text/plain")
    await store.put("doc.txt.gz", b"another blob entirely", "application/gzip")
    resp = await client.get(
        path_of(await store.url("doc.txt", 60)), headers={"Accept-Encoding": "gzip, br"}
    )
    assert resp.status == 200
    assert "Content-Encoding" not in resp.headers
    assert await resp.read() == b"plain text"


async def test_expired_link_is_403(
    client: Client, store: LocalBlobStore, fake_clock: FakeClock
) -> None:
    await store.put("k", b"x", "text/plain")
    path = path_of(await store.url("k", 60))
    fake_clock.advance(61)
    resp = await client.get(path)
    body = await resp.json()
    expect_error(resp.status, body, 403, "permission_denied")
    assert body["error"]["message"] == "link expired"


async def test_tampered_signature_is_403(client: Client, store: LocalBlobStore) -> None:
    await store.put("a", b"x", "text/plain")
    await store.put("b", b"y", "text/plain")
    path = path_of(await store.url("a", 60))
    sig_at = path.index("sig=") + 4
    flipped = "0" if path[sig_at] != "0" else "1"
    for bad in [
        path[:sig_at] + flipped + path[sig_at + 1 :],
        path.replace("/blobs/a?", "/blobs/b?"),  # a's URL used for b
    ]:
        resp = await client.get(bad)
        body = await resp.json()
        expect_error(resp.status, body, 403, "permission_denied")
        assert body["error"]["message"] == "invalid signature"


@pytest.mark.parametrize("query", ["", "?expires=1700000060", "?sig=" + "0" * 64, "?foo=bar"])
async def test_missing_parameters_are_refused_as_json(
    client: Client, store: LocalBlobStore, query: str
) -> None:
    await store.put("k", b"x", "text/plain")
    resp = await client.get("/blobs/k" + query)
    assert resp.status == 403
    body = await resp.json()
    assert body == {"error": {"code": "permission_denied", "message": "missing signature"}}


async def test_deleted_blob_with_valid_signature_is_404(
    client: Client, store: LocalBlobStore
) -> None:
    await store.put("k", b"x", "text/plain")
    path = path_of(await store.url("k", 60))
    await store.delete("k")
    resp = await client.get(path)
    expect_error(resp.status, await resp.json(), 404, "not_found")


async def test_invalid_key_is_400(client: Client, fake_clock: FakeClock) -> None:
    expires = str(int(fake_clock.time()) + 60)
    resp = await client.get(f"/blobs/a%20b?expires={expires}&sig={sign('a b', expires)}")
    expect_error(resp.status, await resp.json(), 400, "invalid_argument")


async def raw_get(server: BaseTestServer, target: str) -> tuple[int, bytes]:
    """Send the request target exactly as written (no client-side normalisation)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status = int(response.split(b" ", 2)[1])
    return status, response


TRAVERSALS = [
    "..%2F..%2Fetc%2Fpasswd",
    "..%2Foutside%2Fsecret.txt",
    "../outside/secret.txt",
    "%2e%2e/outside/secret.txt",
    "%2E%2E%2Foutside%2Fsecret.txt",
    "..%252Foutside%252Fsecret.txt",
    "a/../../outside/secret.txt",
    "..%5Coutside%5Csecret.txt",
    "%2Fetc%2Fpasswd",
    "/etc/passwd",
    "..",
    "%2e%2e",
    "..%2Fsecret.txt",
    "../secret.txt",
]


@pytest.mark.parametrize("raw_key", TRAVERSALS)
async def test_path_traversal_never_leaves_the_root(
    client: Client, fake_clock: FakeClock, raw_key: str
) -> None:
    expires = str(int(fake_clock.time()) + 60)
    # Signed for every form the server could see, as if the secret had leaked.
    decoded = raw_key
    forms = {raw_key}
    for _ in range(2):
        decoded = decoded.replace("%25", "%").replace("%2F", "/").replace("%2f", "/")
        decoded = decoded.replace("%2e", ".").replace("%2E", ".").replace("%5C", "\\")
        forms.add(decoded)
    for form in forms:
        target = f"/blobs/{raw_key}?expires={expires}&sig={sign(form, expires)}"
        status, response = await raw_get(client.server, target)
        assert 400 <= status < 500, (target, status)
        assert OUTSIDE not in response
