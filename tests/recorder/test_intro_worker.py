"""The intro-video worker (recorder.intro_worker) on a real SQLite store and local blobs: a job
whose worker died is taken over and finished; a superseded job's transcode is stopped and
leaves nothing; a transcoder failure is recorded with its reason."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.blobs.local import LocalBlobStore
from adapters.sql import SqlStore, create_engine
from adapters.sql.migrate import upgrade
from core.clock import FakeClock
from core.store import AccountType, Gender, IntroVideoStatus, NewUser
from recorder.intro_worker import (
    GENERIC_FAILURE,
    IntroVideoWorker,
    WorkerConfig,
    poster_key_of,
)
from tests.recorder.samples import make_video


@dataclass
class Rig:
    store: SqlStore
    blobs: LocalBlobStore
    clock: FakeClock
    tmp: Path

    def worker(self, name: str = "node-a", **config: float) -> IntroVideoWorker:
        return IntroVideoWorker(self.store, self.blobs, self.clock, WorkerConfig(
            worker=name, scratch=self.tmp / "work", heartbeat=0.2, **config))  # type: ignore[arg-type]

    async def user_with_upload(self, source: Path) -> tuple[str, str]:
        user = await self.store.users.create(NewUser(name="Ada", gender=Gender.FEMALE,
                                                     account_type=AccountType.GUEST))
        key = f"intro-uploads/{user.user_id}/src.webm"
        await self.blobs.put_file(key, source, "video/webm")
        job, _ = await self.store.intro_videos.create(user.user_id, key)
        return user.user_id, job.job_id


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    await asyncio.to_thread(upgrade, url)
    clock = FakeClock(start=time.time())
    store = SqlStore(create_engine(url), clock)
    blobs = LocalBlobStore(tmp_path / "blobs", "http://127.0.0.1", b"k" * 32, clock)
    try:
        yield Rig(store, blobs, clock, tmp_path)
    finally:
        await store.close()


async def test_a_dead_workers_job_is_taken_over_and_finished(rig: Rig) -> None:
    source = make_video(rig.tmp / "src.webm", seconds=1)
    user_id, job_id = await rig.user_with_upload(source)
    # a worker takes the job and dies (never heartbeats again)
    now = datetime.fromtimestamp(rig.clock.time(), tz=UTC)
    assert await rig.store.intro_videos.claim("dead", stale_before=now, max_attempts=3)
    worker = rig.worker(stale_after=30)
    assert not await worker.run_once()  # still fresh: not taken
    rig.clock.advance(31)
    assert await worker.run_once()
    job = await rig.store.intro_videos.get(job_id)
    assert job is not None and job.status is IntroVideoStatus.DONE and job.attempts == 2
    assert job.worker == "node-a"
    user = await rig.store.users.get(user_id)  # type: ignore[arg-type]
    assert user is not None and user.video_url == job.video_key
    assert await rig.blobs.exists(job.video_key or "")
    assert await rig.blobs.exists(poster_key_of(job.video_key or ""))
    assert not await rig.blobs.exists(job.source_key)  # the upload is gone once done


async def test_a_superseded_job_stops_and_leaves_nothing(rig: Rig) -> None:
    source = make_video(rig.tmp / "src.webm", seconds=3)
    user_id, job_id = await rig.user_with_upload(source)
    worker = rig.worker()
    running = asyncio.create_task(worker.run_once())
    deadline = time.monotonic() + 30
    while (await rig.store.intro_videos.get(job_id)).status is not IntroVideoStatus.RUNNING:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    # a newer upload arrives while the first transcodes
    newer = make_video(rig.tmp / "newer.webm", seconds=1)
    key = f"intro-uploads/{user_id}/newer.webm"
    await rig.blobs.put_file(key, newer, "video/webm")
    await rig.store.intro_videos.create(user_id, key)  # type: ignore[arg-type]
    assert await asyncio.wait_for(running, 60)
    first = await rig.store.intro_videos.get(job_id)
    assert first is not None and first.status is IntroVideoStatus.SUPERSEDED
    assert first.video_key is None
    assert not list((rig.tmp / "blobs").rglob(f"{job_id}*"))
    assert not list((rig.tmp / "work").iterdir())  # the scratch directory is cleaned
    assert await worker.run_once()  # then the newer one is done
    latest = await rig.store.intro_videos.latest(user_id)  # type: ignore[arg-type]
    assert latest is not None and latest.status is IntroVideoStatus.DONE


async def test_a_file_the_transcoder_refuses_fails_the_job_with_a_reason(rig: Rig) -> None:
    broken = rig.tmp / "broken.webm"
    broken.write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00" * 2000)
    _, job_id = await rig.user_with_upload(broken)
    assert await rig.worker().run_once()
    job = await rig.store.intro_videos.get(job_id)
    assert job is not None and job.status is IntroVideoStatus.FAILED
    assert job.error == GENERIC_FAILURE  # no file path or library message reaches the user
