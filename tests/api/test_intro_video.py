"""Intro videos through the node app: upload, the worker's transcode, the result by signed URL
on my profile, the public profile and the deck; every kind of bad upload refused, nothing of it
left behind."""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image
from pytest_aiohttp import AiohttpClient

from tests.api.test_v1 import Api, error, make_api
from tests.recorder.samples import make_video


@pytest.fixture
async def api(aiohttp_client: AiohttpClient, tmp_path: Path) -> Api:
    return await make_api(aiohttp_client, tmp_path, {"NAPALMSKY_ROLES": "api,worker"})


async def upload(api: Api, token: str, data: Any, content_type: str = "video/webm"
                 ) -> tuple[int, Any]:
    if isinstance(data, bytes):
        data = io.BytesIO(data)  # aiohttp warns about large raw bodies
    return await api.call("PUT", "/me/intro-video", token, data=data,
                          headers={"Content-Type": content_type})


async def wait_done(api: Api, token: str, within: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        status, body = await api.call("GET", "/me/intro-video", token)
        assert status == 200, body
        if body["status"] in ("done", "failed"):
            return dict(body)
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)


async def fetch(api: Api, url: str) -> tuple[int, str, bytes]:
    resp = await api.client.get(url[url.index("/blobs/"):])
    return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


def leftovers(tmp_path: Path) -> list[Path]:
    """Staged uploads and intro blobs on disk."""
    found = list((tmp_path / "uploads").glob("*")) if (tmp_path / "uploads").exists() else []
    blobs = tmp_path / "blobs"
    if blobs.exists():
        found += [p for p in blobs.rglob("*") if p.is_file() and "intro" in str(p)]
    return found


async def test_an_upload_is_transcoded_and_shown_on_the_profile(api: Api, tmp_path: Path
                                                                 ) -> None:
    token, user = await api.guest()
    (tmp_path / "src").mkdir()
    clip = make_video(tmp_path / "src" / "me.webm", width=640, height=480, seconds=2)
    status, queued = await upload(api, token, clip.read_bytes())
    assert status == 202, queued
    assert queued["status"] in ("queued", "running") and queued["videoUrl"] is None
    done = await wait_done(api, token)
    assert done["status"] == "done" and done["progress"] == 100, done
    assert (done["width"], done["height"]) == (640, 480)
    assert done["durationSeconds"] == pytest.approx(2.0, abs=0.15)
    code, kind, video = await fetch(api, done["videoUrl"])
    assert (code, kind) == (200, "video/mp4")
    with av.open(io.BytesIO(video)) as media:
        assert media.streams.video[0].codec_context.name == "h264"
        assert media.streams.audio[0].codec_context.name == "aac"
        frames = sum(1 for _ in media.decode(video=0))
        assert frames >= 55
    code, kind, poster = await fetch(api, done["posterUrl"])
    assert (code, kind) == (200, "image/jpeg")
    assert Image.open(io.BytesIO(poster)).size == (640, 480)
    # my profile, the public profile
    other, _ = await api.guest("Bo")
    public = (await api.call("GET", f"/users/{user['id']}", other))[1]
    assert public["videoUrl"] and public["posterUrl"]
    # the staged upload and the source blob are gone; the video and poster stay
    kept = leftovers(tmp_path)
    assert kept and not any(p.suffix == ".part" or "intro-uploads" in str(p) for p in kept)
    assert {p.name.split("@")[0].rsplit(".", 1)[1] for p in kept} == {"mp4", "jpg"}


async def test_a_new_upload_supersedes_the_old_one(api: Api, tmp_path: Path) -> None:
    token, _ = await api.guest()
    (tmp_path / "src").mkdir()
    first = make_video(tmp_path / "src" / "a.webm", seconds=1)
    second = make_video(tmp_path / "src" / "b.mp4", container="mp4", codec="libx264",
                        audio="aac", width=240, height=320, seconds=1)
    status, one = await upload(api, token, first.read_bytes())
    assert status == 202
    status, two = await upload(api, token, second.read_bytes(), "video/mp4")
    assert status == 202 and two["jobId"] != one["jobId"]
    done = await wait_done(api, token)
    assert done["jobId"] == two["jobId"] and done["status"] == "done"
    assert (done["width"], done["height"]) == (240, 320)


async def test_no_upload_yet_is_not_found_and_the_route_needs_a_session(api: Api) -> None:
    token, _ = await api.guest()
    status, body = await api.call("GET", "/me/intro-video", token)
    assert (status, error(body)) == (404, "not_found")
    status, body = await api.call("PUT", "/me/intro-video", None, data=b"x",
                                  headers={"Content-Type": "video/webm"})
    assert (status, error(body)) == (401, "unauthenticated")


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), "red").save(out, "PNG")
    return out.getvalue()


async def test_every_kind_of_bad_upload_is_refused_and_nothing_stays(api: Api, tmp_path: Path
                                                                      ) -> None:
    token, _ = await api.guest()
    (tmp_path / "src").mkdir()
    good = make_video(tmp_path / "src" / "good.webm", seconds=1).read_bytes()
    voice = make_video(tmp_path / "src" / "voice.webm", video=False).read_bytes()
    cut_mp4 = make_video(tmp_path / "src" / "cut.mp4", container="mp4", codec="libx264",
                         audio="aac", faststart=False).read_bytes()
    cases = [
        ("empty", b"", "video/webm", 400, "invalid_argument"),
        ("corrupt", b"\x1a\x45\xdf\xa3" + os.urandom(3000), "video/webm", 400,
         "invalid_argument"),
        ("truncated", cut_mp4[: len(cut_mp4) // 2], "video/mp4", 400, "invalid_argument"),
        ("audio only", voice, "video/webm", 400, "invalid_argument"),
        ("image as video", png_bytes(), "video/mp4", 415, "unsupported_media_type"),
        ("wrong content type", good, "image/png", 415, "unsupported_media_type"),
        ("too large", good + b"\x00" * (50 * 1024 * 1024), "video/webm", 413,
         "payload_too_large"),
    ]
    for name, data, content_type, want_status, want_code in cases:
        status, body = await upload(api, token, data, content_type)
        assert (status, error(body)) == (want_status, want_code), name
        assert leftovers(tmp_path) == [], name
    status, body = await api.call("GET", "/me/intro-video", token)
    assert status == 404  # nothing was queued


async def test_a_streamed_upload_without_length_over_the_limit_is_cut_off(
        api: Api, tmp_path: Path) -> None:
    token, _ = await api.guest()

    async def body() -> Any:
        chunk = b"\x1a\x45\xdf\xa3" + b"\x00" * (1024 * 1024 - 4)
        for _ in range(60):
            yield chunk

    status, answer = await upload(api, token, body())  # chunked: no Content-Length
    assert (status, error(answer)) == (413, "payload_too_large")
    assert leftovers(tmp_path) == []


async def test_the_length_limit_is_a_setting(aiohttp_client: AiohttpClient, tmp_path: Path
                                            ) -> None:
    api = await make_api(aiohttp_client, tmp_path, {"NAPALMSKY_ROLES": "api,worker",
                                                    "NAPALMSKY_INTRO_MAX_SECONDS": "1"})
    token, _ = await api.guest()
    (tmp_path / "src").mkdir()
    clip = make_video(tmp_path / "src" / "two.webm", seconds=2)
    status, body = await upload(api, token, clip.read_bytes())
    assert (status, error(body)) == (400, "invalid_argument")
    assert "longer" in body["error"]["message"]
    assert leftovers(tmp_path) == []


async def test_uploads_are_rate_limited_per_user(api: Api, tmp_path: Path) -> None:
    from api.v1 import INTRO_UPLOADS_PER_HOUR

    token, _ = await api.guest()
    for _ in range(INTRO_UPLOADS_PER_HOUR):
        status, _body = await upload(api, token, b"")  # refused as empty, but counted
        assert status == 400
    status, body = await upload(api, token, b"")
    assert (status, error(body)) == (429, "rate_limited")
    other, _ = await api.guest("Bo")
    assert (await upload(api, other, b""))[0] == 400  # another user is not affected


async def test_a_staged_upload_left_by_a_crash_is_removed_at_start(
        aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    (tmp_path / "uploads").mkdir()
    leftover = tmp_path / "uploads" / "intro-deadbeef.part"
    leftover.write_bytes(b"half an upload")
    await make_api(aiohttp_client, tmp_path, {"NAPALMSKY_ROLES": "api,worker"})
    assert not leftover.exists()
