"""The worker role's intro-video job loop: take a queued job, transcode it in a child process,
store the results, mark it done (or failed), and do the next.

Jobs live in the store (core.store.IntroVideoRepository), so nothing is lost on a crash: a job
whose worker stopped heartbeating is taken again after `stale_after` seconds (at most
`max_attempts` times, then failed), and the transcoder never leaves a half-written file under a
final name. A newer upload supersedes a running job: the next heartbeat says so and the child is
killed. The transcode runs as `python -m recorder.transcode_job` (one at a time per worker), off
the event loop and outside the GIL of the node, so forwarding media in the same process is not
slowed by it.

Blob keys: the upload at `source_key`; results at `intro/<user>/<job>.mp4` and `.jpg` (the
poster key is the video key with `.jpg`, see `poster_key_of`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from core.blobs import BlobStore
from core.clock import Clock, utcnow
from core.store import IntroVideoJob, IntroVideoResult, Store

log = logging.getLogger(__name__)

VIDEO_TYPE = "video/mp4"
POSTER_TYPE = "image/jpeg"
GENERIC_FAILURE = "the video could not be processed; please try another file"


def video_key_of(job: IntroVideoJob) -> str:
    return f"intro/{job.user_id}/{job.job_id}.mp4"


def poster_key_of(video_key: str) -> str:
    """The poster's blob key for an intro video's key."""
    return video_key.rsplit(".", 1)[0] + ".jpg"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """`worker`: this worker's name (the node id); `poll`: seconds between looks at the queue
    when idle; `heartbeat`: seconds between heartbeats of a running job; `stale_after`: seconds
    without a heartbeat after which another worker takes a job over; `max_attempts`: workers a
    job may have before it fails; `scratch`: where sources and results are staged."""

    worker: str
    scratch: Path
    poll: float = 2.0
    heartbeat: float = 2.0
    stale_after: float = 30.0
    max_attempts: int = 3


class IntroVideoWorker:
    """`await start()`, `notify()` when a job was queued, `await close()`."""

    def __init__(self, store: Store, blobs: BlobStore, clock: Clock,
                 config: WorkerConfig) -> None:
        self.store, self.blobs, self.clock, self.config = store, blobs, clock, config
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.done = 0  # jobs finished by this worker
        self.failed = 0

    async def start(self) -> None:
        self.config.scratch.mkdir(parents=True, exist_ok=True)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="intro-video-worker")

    def notify(self) -> None:
        """A job was queued: look now rather than at the next poll."""
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                worked = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store away, say: keep the loop alive, try again later
                log.exception("intro-video worker: a round failed")
                worked = False
            if not worked:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.poll)

    async def run_once(self) -> bool:
        """Take one job and see it through; False when the queue was empty."""
        cfg = self.config
        stale_before = utcnow(self.clock) - timedelta(seconds=cfg.stale_after)
        job = await self.store.intro_videos.claim(cfg.worker, stale_before=stale_before,
                                                  max_attempts=cfg.max_attempts)
        if job is None:
            return False
        log.info("intro video %s of %s: transcoding (attempt %d)", job.job_id, job.user_id,
                 job.attempts)
        cfg.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cfg.scratch, prefix="job-") as tmp:
            await self._process(job, Path(tmp))
        return True

    async def _process(self, job: IntroVideoJob, tmp: Path) -> None:
        source = tmp / "source"
        data = await self.blobs.get(job.source_key)
        await asyncio.to_thread(source.write_bytes, data)  # up to 50 MB: not on the loop
        target, poster = tmp / "intro.mp4", tmp / "poster.jpg"
        outcome = await self._transcode(job, source, target, poster)
        if outcome is None:  # superseded or taken over: someone else owns the job now
            return
        result, error = outcome
        if error is not None:
            if await self.store.intro_videos.fail(job.job_id, self.config.worker, error):
                self.failed += 1
                await self._discard(job.source_key)
            return
        assert result is not None
        video_key = video_key_of(job)
        await self.blobs.put_file(poster_key_of(video_key), poster, POSTER_TYPE)
        await self.blobs.put_file(video_key, target, VIDEO_TYPE)
        user = await self.store.users.get(job.user_id)
        previous = user.video_url if user is not None else None
        finished = IntroVideoResult(video_key=video_key, poster_key=poster_key_of(video_key),
                                    duration=float(result["duration"]),
                                    width=int(result["width"]), height=int(result["height"]),
                                    size=int(result["size"]))
        if await self.store.intro_videos.finish(job.job_id, self.config.worker, finished):
            self.done += 1
            await self._discard(job.source_key)
            if previous and previous != video_key:  # the intro this one replaces
                await self._discard(previous, poster_key_of(previous))
            log.info("intro video %s of %s: done", job.job_id, job.user_id)
        else:  # superseded while uploading the results
            await self._discard(video_key, poster_key_of(video_key))

    async def _transcode(self, job: IntroVideoJob, source: Path, target: Path, poster: Path
                         ) -> tuple[dict[str, float] | None, str | None] | None:
        """(result, None), (None, error message), or None when the job is no longer ours."""
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "recorder.transcode_job", str(source), str(target),
            str(poster), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        assert child.stdout is not None
        progress = 0
        ours = True
        result: dict[str, float] | None = None
        error: str | None = None
        beat = asyncio.get_running_loop().time()
        try:
            while True:
                try:
                    line = await asyncio.wait_for(child.stdout.readline(), self.config.heartbeat)
                except TimeoutError:
                    line = None
                if line == b"":
                    break
                if line:
                    message = json.loads(line)
                    if "progress" in message:
                        progress = int(float(message["progress"]) * 100)
                    elif "result" in message:
                        result = message["result"]
                    elif "error" in message:
                        # the transcoder's own words name files and library errors: they go
                        # to the log; the user gets a reason they can act on
                        log.info("intro video %s: transcode refused: %s", job.job_id,
                                 message["error"].get("message"))
                        error = GENERIC_FAILURE
                now = asyncio.get_running_loop().time()
                if now - beat >= self.config.heartbeat or line is None:
                    beat = now
                    ours = await self.store.intro_videos.heartbeat(
                        job.job_id, self.config.worker, min(progress, 99))
                    if not ours:
                        log.info("intro video %s: superseded, stopping", job.job_id)
                        break
            await child.wait() if ours else None
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        if not ours:
            return None
        if result is not None and child.returncode == 0:
            return result, None
        return None, error or GENERIC_FAILURE

    async def _discard(self, *keys: str) -> None:
        for key in keys:
            try:
                await self.blobs.delete(key)
            except Exception:  # a leftover blob is not worth failing a job for
                log.warning("intro video: could not delete blob %s", key, exc_info=True)


__all__ = ["IntroVideoWorker", "WorkerConfig", "poster_key_of", "video_key_of"]
