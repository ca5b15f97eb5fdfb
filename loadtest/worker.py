"""A bot process: one event loop running its share of the users (`python -m loadtest.worker`).

The runner writes one JSON job line to stdin; the worker answers with progress lines on stdout
(one a second) and, when the run stops (its deadline, a `stop` line, or stdin closing), a last
`result` line with everything it measured. Ctrl-C is the runner's to handle: the worker ignores
SIGINT and stops when told, so that its measurements still reach the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections import Counter
from typing import Any

import aiohttp

from loadtest.measure import Measurements
from loadtest.media import VideoParams, audio_clip, video_clip
from loadtest.scenario import Scenario
from loadtest.user import ClientConfig, LoadUser

log = logging.getLogger(__name__)

TEARDOWN = 30.0  # seconds users get to hang up and close after the stop
PROGRESS_EVERY = 1.0


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _stdin() -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader, transport


async def _commands(reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
    try:
        while line := await reader.readline():
            if json.loads(line).get("command") == "stop":
                break
    finally:
        stop.set()


async def watch_loop_lag(m: Measurements, every: float = 0.1) -> None:
    """How late this process's event loop wakes up (an overloaded bot process shows here, and
    its measurements are then suspect): the worst lag of each second, as `bot_loop_lag`."""
    loop = asyncio.get_running_loop()
    worst, window = 0.0, loop.time() + 1.0
    while True:
        before = loop.time()
        await asyncio.sleep(every)
        worst = max(worst, loop.time() - before - every)
        if loop.time() >= window:
            m.latency("bot_loop_lag", 1000 * worst)
            worst, window = 0.0, loop.time() + 1.0


def progress(users: list[LoadUser], m: Measurements) -> dict[str, Any]:
    states = Counter(u.state for u in users)
    return {"type": "progress", "states": dict(states), "counters": dict(m.counters),
            "errors": dict(m.errors),
            "connected_calls": sum(d for _, d in m.call_edges)}


async def run_job(job: dict[str, Any], stop: asyncio.Event,
                  report: Any = _emit) -> Measurements:
    """Run the users of `job` until its deadline or `stop`; the measurements."""
    scenario = Scenario(**job["scenario"])
    m = Measurements(started_at=float(job["started_at"]))
    loop = asyncio.get_running_loop()
    params = VideoParams(codec=scenario.video_codec)
    clips = await loop.run_in_executor(None, lambda: (video_clip(params), audio_clip()))
    config = ClientConfig.from_json(job.get("config", {}))
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    users: list[LoadUser] = []
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        for index in job["indices"]:
            users.append(LoadUser(int(index), str(job["run_id"]), scenario, str(job["url"]),
                                  session, m, clips, config, stop))

        async def start(user: LoadUser) -> None:
            await asyncio.sleep(max(0.0, m.started_at + user.index / scenario.ramp_per_s
                                    - time.time()))
            if not stop.is_set():
                await user.run()

        tasks = [asyncio.ensure_future(start(u)) for u in users]
        lag = asyncio.ensure_future(watch_loop_lag(m))
        deadline = m.started_at + scenario.duration_s
        while not stop.is_set() and time.time() < deadline and not all(t.done() for t in tasks):
            report(progress(users, m))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(PROGRESS_EVERY,
                                                        max(0.0, deadline - time.time())))
        stop.set()
        report(progress(users, m))
        _, pending = await asyncio.wait(tasks, timeout=TEARDOWN) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        lag.cancel()
        await asyncio.gather(lag, return_exceptions=True)
        if pending:
            m.error("teardown_timeout", "worker", f"{len(pending)} users cancelled")
    return m


async def worker_main() -> None:
    reader, transport = await _stdin()
    try:
        line = await reader.readline()
        if not line:
            return
        job = json.loads(line)
        stop = asyncio.Event()
        commands = asyncio.ensure_future(_commands(reader, stop))
        try:
            m = await run_job(job, stop)
            _emit({"type": "result", "measurements": m.to_json()})
        finally:
            commands.cancel()
            await asyncio.gather(commands, return_exceptions=True)
    finally:
        transport.close()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner stops us and collects results
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="loadtest worker: %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is installed where the platform has it
        asyncio.run(worker_main())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(worker_main())


if __name__ == "__main__":
    main()
