"""`napalmsky loadtest`: check the target, run the bot processes, watch, write the reports.

Before any bot starts, `preflight` makes sure the URL answers and is a Napalm Sky node (its
`/health` and its OpenAPI document), reads its call bounds, and whether it exposes `/metrics`.
Then `processes` workers (loadtest/worker.py) each run their share of the users in one event
loop; the runner shows their progress live, samples the server's `/metrics` (process CPU,
resident memory, open fds), and stops them at the deadline or on Ctrl-C, collecting what they
measured either way, for the JSON and HTML reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.measure import Measurements
from loadtest.media import VideoParams, audio_clip, video_clip
from loadtest.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]
SCRAPE_EVERY = 2.0
WORKER_GRACE = 45.0  # after the stop: the worker's teardown and its result line


class PreflightError(Exception):
    """The target cannot be load-tested; the message is one line for the user."""


@dataclass
class Target:
    url: str
    version: str
    config: dict[str, Any]
    metrics: bool


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url, allow_redirects=False) as response:
        return response.status, await response.text(errors="replace")


async def preflight(url: str, scenario: Scenario, limit: float = 10.0) -> Target:
    """What the target is, or `PreflightError` saying why it cannot be tested."""
    base = url.rstrip("/")
    client_timeout = aiohttp.ClientTimeout(total=limit)
    try:
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            status, body = await _get(session, f"{base}/health")
            try:
                healthy = status == 200 and json.loads(body).get("status") == "ok"
            except (ValueError, AttributeError):
                healthy = False
            if not healthy:
                raise PreflightError(f"{url} is not a Napalm Sky node (GET /health answered "
                                     f"{status}, not {{\"status\": \"ok\"}})")
            status, body = await _get(session, f"{base}/api/v1/openapi.json")
            try:
                document = json.loads(body) if status == 200 else {}
                paths = document.get("paths", {})
            except (ValueError, AttributeError):
                document, paths = {}, {}
            needed = ("/api/v1/auth/guest", "/api/v1/deck", "/api/v1/me/calls")
            if not all(p in paths for p in needed):
                raise PreflightError(
                    f"{url} is not a Napalm Sky node serving the api and signaling roles "
                    f"(GET /api/v1/openapi.json answered {status} without {', '.join(needed)})")
            status, body = await _get(session, f"{base}/api/v1/config")
            config = json.loads(body) if status == 200 else {}
            metrics_status, metrics_body = await _get(session, f"{base}/metrics")
    except PreflightError:
        raise
    except TimeoutError as exc:
        raise PreflightError(f"cannot reach {url}: no answer within {limit:g} s") from exc
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        raise PreflightError(f"cannot reach {url}: {reason}") from exc
    longest = int(config.get("callMaxSeconds", 1800))
    if scenario.mode == "calls" and scenario.call_seconds > longest:
        raise PreflightError(f"--call-seconds {scenario.call_seconds:g} is longer than the "
                             f"node's longest call ({longest} s, NAPALMSKY_CALL_MAX_SECONDS)")
    return Target(url=base, version=str(document.get("info", {}).get("version", "")),
                  config=config, metrics=metrics_status == 200
                  and "process_cpu_seconds_total" in metrics_body)


def parse_prometheus(text: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text exposition (`name value`)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "{" in line:
            continue
        parts = line.split()
        if len(parts) >= 2:
            with contextlib.suppress(ValueError):
                values[parts[0]] = float(parts[1])
    return values


@dataclass
class ServerSampler:
    """The target's process CPU, memory and open fds over time, from its `/metrics`."""

    url: str
    started_at: float
    samples: list[dict[str, float]] = field(default_factory=list)
    failures: int = 0
    _last: tuple[float, float] | None = None

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.scrape(session)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SCRAPE_EVERY)
        await self.scrape(session)

    async def scrape(self, session: aiohttp.ClientSession) -> None:
        try:
            status, body = await _get(session, f"{self.url}/metrics")
        except (aiohttp.ClientError, OSError, TimeoutError):
            self.failures += 1
            return
        if status != 200:
            self.failures += 1
            return
        values = parse_prometheus(body)
        now = time.time()
        cpu = values.get("process_cpu_seconds_total")
        sample = {"t_s": round(now - self.started_at, 3)}
        if cpu is not None:
            if self._last is not None and now > self._last[0]:
                sample["cpu_pct"] = round(100 * (cpu - self._last[1]) / (now - self._last[0]), 2)
            self._last = (now, cpu)
        if "process_resident_memory_bytes" in values:
            sample["rss_mb"] = round(values["process_resident_memory_bytes"] / 2**20, 2)
        if "process_open_fds" in values:
            sample["open_fds"] = values["process_open_fds"]
        self.samples.append(sample)


class WorkerProcess:
    """One `python -m loadtest.worker` process, its latest progress and its result."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.progress: dict[str, Any] = {}
        self.result: Measurements | None = None
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, job: dict[str, Any], log_path: Path) -> WorkerProcess:
        with log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "loadtest.worker", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=log, cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, limit=1 << 26)
        worker = cls(proc)
        await worker._send(job)
        return worker

    async def _send(self, message: dict[str, Any]) -> None:
        if self.proc.stdin is None or self.proc.stdin.is_closing():
            return
        with contextlib.suppress(ConnectionError):
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            await self.proc.stdin.drain()

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            with contextlib.suppress(ValueError, KeyError):
                message = json.loads(line)
                if message.get("type") == "progress":
                    self.progress = message
                elif message.get("type") == "result":
                    self.result = Measurements.from_json(message["measurements"])

    async def stop(self, grace: float) -> None:
        await self._send({"command": "stop"})
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), grace)
        except TimeoutError:
            self.proc.kill()
        with contextlib.suppress(Exception):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        await self.proc.wait()
        await asyncio.gather(self._reader, return_exceptions=True)


@dataclass
class RunResult:
    measurements: Measurements
    server: list[dict[str, float]]
    server_metrics: bool
    stopped_by: str  # "deadline", "finished" or "interrupt"
    ended_at: float
    workers_lost: int


def merged_progress(workers: list[WorkerProcess]) -> dict[str, Any]:
    states: dict[str, int] = {}
    counters: dict[str, int] = {}
    errors: dict[str, int] = {}
    connected = 0
    for worker in workers:
        p = worker.progress
        for target, source in ((states, p.get("states", {})), (counters, p.get("counters", {})),
                               (errors, p.get("errors", {}))):
            for key, value in source.items():
                target[key] = target.get(key, 0) + int(value)
        connected += int(p.get("connected_calls", 0))
    return {"states": states, "counters": counters, "errors": errors,
            "connected_calls": connected}


async def run(target: Target, scenario: Scenario, out: Path, *, on_progress: Any = None,
              interrupt: asyncio.Event | None = None) -> RunResult:
    """Run the scenario against `target` until its deadline or `interrupt`."""
    loop = asyncio.get_running_loop()
    params = VideoParams(codec=scenario.video_codec)  # encoded once, here, for every worker
    await loop.run_in_executor(None, lambda: (video_clip(params), audio_clip()))
    stop = interrupt or asyncio.Event()
    run_id = secrets.token_hex(3)
    started_at = time.time() + 1.0
    log_path = out / "workers.log"
    workers = [
        await WorkerProcess.start({
            "url": target.url, "run_id": run_id, "scenario": scenario.to_json(),
            "indices": list(range(w, scenario.users, scenario.processes)),
            "started_at": started_at, "config": target.config,
        }, log_path)
        for w in range(scenario.processes)
    ]
    sampler = ServerSampler(target.url, started_at)
    stop_sampler = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        sampling = asyncio.ensure_future(sampler.run(session, stop_sampler)) \
            if target.metrics else None
        deadline = started_at + scenario.duration_s
        stopped_by = "deadline"
        try:
            while time.time() < deadline:
                if on_progress is not None:
                    on_progress(merged_progress(workers), time.time() - started_at,
                                sampler.samples[-1] if sampler.samples else None)
                if all(w.proc.returncode is not None or w.result is not None for w in workers):
                    stopped_by = "finished"
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                if stop.is_set():
                    stopped_by = "interrupt"
                    break
        finally:
            await asyncio.gather(*(w.stop(WORKER_GRACE) for w in workers))
            stop_sampler.set()
            if sampling is not None:
                await asyncio.gather(sampling, return_exceptions=True)
    merged = Measurements(started_at=started_at)
    lost = 0
    for worker in workers:
        if worker.result is None:
            lost += 1
            merged.error("worker_lost", "bot process",
                         f"exit code {worker.proc.returncode}; see {log_path}")
        else:
            merged.merge(worker.result)
    return RunResult(measurements=merged, server=sampler.samples, server_metrics=target.metrics,
                     stopped_by=stopped_by, ended_at=time.time(), workers_lost=lost)


def install_interrupt(stop: asyncio.Event) -> None:
    """Ctrl-C (and SIGTERM) stop the run; the report is still written."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
