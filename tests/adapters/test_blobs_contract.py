"""One contract for core.blobs.BlobStore, run against every adapter.

The local store is served by the real blob route on 127.0.0.1; the S3 store talks to moto in
server mode on 127.0.0.1 (moto checks neither presigned signatures nor expiry, so real expiry is
tested on the local store, and for S3 only that the URL carries it).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from moto.server import ThreadedMotoServer
from yarl import URL

from adapters.blobs import LocalBlobStore, S3BlobStore
from api.blobs import blob_routes
from api.middleware import error_middleware
from core.blobs import BlobStore
from core.clock import FakeClock
from core.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from tests.services import free_port

SECRET = b"0123456789abcdef-test-secret"
ACCESS_KEY_ID = "AKIDTESTONLY"
SECRET_ACCESS_KEY = "moto-dummy-secret-value"
BAD_KEYS = ["../x", "/abs", "", "a//b", "a/../b", "a/", ".hidden", "a\\b", "a b", "x@blob"]


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def make_s3(endpoint: str, bucket: str, **kwargs: str) -> S3BlobStore:
    return S3BlobStore(
        bucket,
        region="us-east-1",
        endpoint_url=endpoint,
        access_key_id=kwargs.get("access_key_id", ACCESS_KEY_ID),
        secret_access_key=kwargs.get("secret_access_key", SECRET_ACCESS_KEY),
        prefix=kwargs.get("prefix", ""),
    )


@dataclass
class Harness:
    kind: str
    store: BlobStore


@pytest.fixture(params=["local", "s3"])
async def harness(
    request: pytest.FixtureRequest, tmp_path: Path, fake_clock: FakeClock
) -> AsyncIterator[Harness]:
    if request.param == "local":
        port = free_port()
        store = LocalBlobStore(tmp_path / "blobs", f"http://127.0.0.1:{port}/", SECRET, fake_clock)
        app = web.Application(middlewares=[error_middleware])
        app.add_routes(blob_routes(store))
        server = TestServer(app, host="127.0.0.1", port=port)
        await server.start_server()
        try:
            yield Harness("local", store)
        finally:
            await store.close()
            await server.close()
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        s3 = make_s3(endpoint, f"blobs-{uuid.uuid4().hex[:16]}", prefix="napalm")
        await s3.ensure_bucket()
        try:
            yield Harness("s3", s3)
        finally:
            await s3.close()


async def fetch(url: str) -> tuple[int, bytes, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(URL(url, encoded=True)) as resp,
    ):
        return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


# -- the contract, for every adapter ------------------------------------------------------------


async def test_put_then_get_returns_the_bytes(harness: Harness) -> None:
    store = harness.store
    assert not await store.exists("selfies/u1/a.jpg")
    await store.put("selfies/u1/a.jpg", b"\xff\xd8jpeg bytes", "image/jpeg")
    assert await store.get("selfies/u1/a.jpg") == b"\xff\xd8jpeg bytes"
    assert await store.exists("selfies/u1/a.jpg")
    assert not await store.exists("selfies/u1")


async def test_empty_blob_round_trips(harness: Harness) -> None:
    await harness.store.put("empty", b"", "application/octet-stream")
    assert await harness.store.exists("empty")
    assert await harness.store.get("empty") == b""


async def test_overwrite_replaces_bytes_and_content_type(harness: Harness) -> None:
    store = harness.store
    await store.put("posters/p.bin", b"first version, longer", "image/png")
    await store.put("posters/p.bin", b"second", "image/webp")
    assert await store.get("posters/p.bin") == b"second"
    status, body, content_type = await fetch(await store.url("posters/p.bin", 60))
    assert (status, body, content_type) == (200, b"second", "image/webp")


async def test_get_absent_raises_not_found(harness: Harness) -> None:
    with pytest.raises(NotFound):
        await harness.store.get("nobody/here.jpg")
    assert not await harness.store.exists("nobody/here.jpg")


async def test_delete_removes_and_absent_delete_is_fine(harness: Harness) -> None:
    store = harness.store
    await store.put("k", b"v", "text/plain")
    await store.delete("k")
    assert not await store.exists("k")
    with pytest.raises(NotFound):
        await store.get("k")
    await store.delete("k")
    await store.delete("never/was/here")
    assert not await store.exists("never/was/here")


async def test_a_key_can_also_be_a_prefix_of_other_keys(harness: Harness) -> None:
    store = harness.store
    await store.put("a", b"parent", "text/plain")
    await store.put("a/b", b"child", "text/plain")
    assert await store.get("a") == b"parent"
    assert await store.get("a/b") == b"child"
    await store.delete("a")
    assert not await store.exists("a")
    assert await store.get("a/b") == b"child"


async def test_put_file_stores_a_multi_megabyte_file(harness: Harness, tmp_path: Path) -> None:
    data = os.urandom(20 * 1024 * 1024 + 123)  # above the S3 adapter's multipart threshold
    source = tmp_path / "upload.webm"
    source.write_bytes(data)
    await harness.store.put_file("recordings/r1.webm", source, "video/webm")
    assert source.read_bytes() == data  # the source is left alone
    assert await harness.store.get("recordings/r1.webm") == data
    status, body, content_type = await fetch(await harness.store.url("recordings/r1.webm", 300))
    assert status == 200
    assert content_type == "video/webm"
    assert body == data


async def test_url_serves_body_and_content_type_with_parameters(harness: Harness) -> None:
    await harness.store.put("notes/n.txt", "héllo".encode(), "text/plain; charset=utf-8")
    status, body, content_type = await fetch(await harness.store.url("notes/n.txt", 60))
    assert status == 200
    assert body == "héllo".encode()
    assert content_type == "text/plain; charset=utf-8"


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_are_invalid_arguments(harness: Harness, key: str, tmp_path: Path) -> None:
    store = harness.store
    source = tmp_path / "f"
    source.write_bytes(b"x")
    with pytest.raises(InvalidArgument):
        await store.put(key, b"x", "text/plain")
    with pytest.raises(InvalidArgument):
        await store.put_file(key, source, "text/plain")
    with pytest.raises(InvalidArgument):
        await store.get(key)
    with pytest.raises(InvalidArgument):
        await store.exists(key)
    with pytest.raises(InvalidArgument):
        await store.delete(key)
    with pytest.raises(InvalidArgument):
        await store.url(key, 60)


@pytest.mark.parametrize(
    "content_type", ["", "text", "text/html\r\nX-Injected: 1", "a/b; c", "é/x", "x/" + "y" * 300]
)
async def test_bad_content_types_are_invalid_arguments(harness: Harness, content_type: str) -> None:
    with pytest.raises(InvalidArgument):
        await harness.store.put("k", b"x", content_type)
    assert not await harness.store.exists("k")


@pytest.mark.parametrize("expires_in", [0, -5, 7 * 24 * 3600 + 1])
async def test_url_lifetime_out_of_range_is_invalid(harness: Harness, expires_in: int) -> None:
    with pytest.raises(InvalidArgument):
        await harness.store.url("k", expires_in)


async def test_ping_answers(harness: Harness) -> None:
    await harness.store.ping()


async def test_close_is_idempotent(harness: Harness) -> None:
    await harness.store.close()
    await harness.store.close()


# -- local adapter: real signatures and expiry, files on disk -----------------------------------


def split_url(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path.startswith("/blobs/")
    return parts.path.removeprefix("/blobs/"), query["expires"][0], query["sig"][0]


@pytest.fixture
def local(tmp_path: Path, fake_clock: FakeClock) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "root", "https://node.example/", SECRET, fake_clock)


async def test_local_url_shape(local: LocalBlobStore, fake_clock: FakeClock) -> None:
    url = await local.url("selfies/u1/a.jpg", 600)
    assert url.startswith("https://node.example/blobs/selfies/u1/a.jpg?expires=")
    key, expires, sig = split_url(url)
    assert key == "selfies/u1/a.jpg"
    assert int(expires) == int(fake_clock.time()) + 600
    assert len(sig) == 64
    local.verify(key, expires, sig)


async def test_local_link_expires(local: LocalBlobStore, fake_clock: FakeClock) -> None:
    key, expires, sig = split_url(await local.url("k", 60))
    fake_clock.advance(59)
    local.verify(key, expires, sig)
    fake_clock.advance(1)
    with pytest.raises(PermissionDenied, match=r"^link expired$"):
        local.verify(key, expires, sig)


async def test_local_tampering_is_refused(local: LocalBlobStore) -> None:
    key, expires, sig = split_url(await local.url("a/b.jpg", 60))
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    for args in [
        (key, expires, flipped),
        ("a/c.jpg", expires, sig),  # a URL for another key
        (key, str(int(expires) + 3600), sig),  # a longer life
        (key, expires, sig.upper()),
        (key, expires, sig[:-1]),
        (key, expires, "é" * 64),
        (key, "\uff11\uff12\uff13", sig),  # fullwidth digits: int() would take them
        (key, "", sig),
    ]:
        with pytest.raises(PermissionDenied, match=r"^invalid signature$"):
            local.verify(*args)


async def test_local_signatures_depend_on_the_secret(
    local: LocalBlobStore, tmp_path: Path, fake_clock: FakeClock
) -> None:
    other = LocalBlobStore(
        tmp_path / "root", "https://node.example", b"another secret, 16+", fake_clock
    )
    key, expires, sig = split_url(await other.url("k", 60))
    with pytest.raises(PermissionDenied, match=r"^invalid signature$"):
        local.verify(key, expires, sig)


async def test_local_verify_rejects_bad_keys(local: LocalBlobStore) -> None:
    _, expires, sig = split_url(await local.url("k", 60))
    with pytest.raises(InvalidArgument):
        local.verify("../k", expires, sig)


def test_local_refuses_a_short_secret(tmp_path: Path, fake_clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        LocalBlobStore(tmp_path, "http://x", b"short", fake_clock)


async def test_local_files_stay_under_root(local: LocalBlobStore, tmp_path: Path) -> None:
    await local.put("a/b/c.txt", b"x", "text/plain")
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["root/a/b/c.txt@blob", "root/a/b/c.txt@meta"]
    assert (await local.open_for_serving("a/b/c.txt")).content_type == "text/plain"


async def test_local_failed_write_keeps_the_old_blob(
    local: LocalBlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local.put("v.webm", b"old bytes", "video/webm")
    source = tmp_path / "new.webm"
    source.write_bytes(b"n" * 100_000)

    def crash_half_way(src: object, dst: object, length: int = 0) -> None:
        dst.write(b"n" * 50_000)  # type: ignore[attr-defined]
        raise OSError("disk on fire")

    monkeypatch.setattr(shutil, "copyfileobj", crash_half_way)
    with pytest.raises(OSError, match="disk on fire"):
        await local.put_file("v.webm", source, "video/mp4")
    assert await local.get("v.webm") == b"old bytes"
    assert (await local.open_for_serving("v.webm")).content_type == "video/webm"
    leftovers = [p.name for p in (tmp_path / "root").iterdir()]
    assert sorted(leftovers) == ["v.webm@blob", "v.webm@meta"]


async def test_local_missing_sidecar_serves_octet_stream(local: LocalBlobStore) -> None:
    await local.put("k", b"x", "image/png")
    (local.root / "k@meta").unlink()
    assert (await local.open_for_serving("k")).content_type == "application/octet-stream"


async def test_local_ping_fails_when_root_is_gone(local: LocalBlobStore) -> None:
    local.root.rmdir()
    with pytest.raises(Unavailable):
        await local.ping()


# -- S3 adapter: what moto cannot check, and failures ------------------------------------------


async def test_s3_url_carries_expiry_and_signature(moto_endpoint: str) -> None:
    store = make_s3(moto_endpoint, f"blobs-{uuid.uuid4().hex[:16]}", prefix="pre/")
    try:
        url = await store.url("selfies/u1/a.jpg", 900)
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        assert parts.path.endswith("/pre/selfies/u1/a.jpg")
        assert query["X-Amz-Expires"] == ["900"]
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert len(query["X-Amz-Signature"][0]) == 64
        assert SECRET_ACCESS_KEY not in url
    finally:
        await store.close()


async def test_s3_prefix_isolates_stores_in_one_bucket(moto_endpoint: str) -> None:
    bucket = f"blobs-{uuid.uuid4().hex[:16]}"
    one, two = make_s3(moto_endpoint, bucket, prefix="one"), make_s3(moto_endpoint, bucket)
    try:
        await one.ensure_bucket()
        await one.ensure_bucket()  # already there: fine
        await one.put("k", b"in one", "text/plain")
        assert not await two.exists("k")
        assert await two.get("one/k") == b"in one"
    finally:
        await one.close()
        await two.close()


async def test_s3_ping_against_a_closed_port_is_unavailable() -> None:
    store = make_s3(f"http://127.0.0.1:{free_port()}", "blobs")
    try:
        with pytest.raises(Unavailable) as caught:
            await store.ping()
        message = caught.value.message
        assert SECRET_ACCESS_KEY not in message
        assert ACCESS_KEY_ID not in message
        assert "127.0.0.1" not in message
        with pytest.raises(Unavailable):
            await store.get("k")
    finally:
        await store.close()


async def test_s3_missing_bucket_is_unavailable(moto_endpoint: str) -> None:
    store = make_s3(moto_endpoint, f"absent-{uuid.uuid4().hex[:16]}")
    try:
        with pytest.raises(Unavailable, match="bucket does not exist"):
            await store.ping()
        with pytest.raises(Unavailable, match="bucket does not exist"):
            await store.get("k")
    finally:
        await store.close()


def test_s3_needs_both_credentials_or_neither() -> None:
    with pytest.raises(ValueError, match="both"):
        S3BlobStore("b", region=None, endpoint_url=None, access_key_id="only-the-id")
