"""What recording calls costs the SFU node, and how soon the files are ready after hang-up.

    python -m bench.recording [--calls 4] [--seconds 20]

Starts `napalmsky serve` (all roles, embedded defaults, NAPALMSKY_RECORDING on) and makes the
same number of calls twice through the public API and signaling: first without recording,
then with both participants agreeing to it. Each participant is a bot in this process
publishing pre-encoded VP8 (640x360, 30 fps, about 1 Mbit/s) and Opus, counting what it
receives. In each round it measures the server process's CPU over `--seconds` once every bot
receives media. Then the callers hang up, and for the recorded round it times each call from
hang-up until both of its files are listed as ready.

It prints CPU per call and the server-added forwarding latency (p99, from /metrics) in each
round, their difference per recorded call (the recording's
cost, in cores; target <= 0.05), and file-ready times (median, max; target <= 10 s), with the
machine and its load. The bots share the machine with the server, as in bench.sfu_forwarding.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.serve import Samples, load_average, machine, process_cpu, read_metrics, running_server
from bench.sfu_forwarding import LATENCY, SERVER_ENV, bucket_percentile
from loadtest.counting import CountingBot
from loadtest.measure import Measurements
from loadtest.media import audio_clip, video_clip
from loadtest.wire import Rest, Signaling, sign_up_guest

SETTLE = 2.0


async def event(sig: Signaling, kind: str, within: float = 20) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            item = await sig.events.get()
            if item.get("type") == kind:
                data: dict[str, Any] = item.get("data", {})
                return data


class Call:
    def __init__(self, room_id: str, caller: Signaling, callee: Signaling, token: str,
                 bots: list[CountingBot]) -> None:
        self.room_id, self.caller, self.callee = room_id, caller, callee
        self.token = token  # the caller's, to list the recordings
        self.bots = bots


async def make_calls(http: aiohttp.ClientSession, base: str, count: int,
                     record: bool) -> list[Call]:
    m = Measurements()
    video, audio = video_clip(), audio_clip()
    calls = []
    for i in range(count):
        people = []
        for role in ("caller", "callee"):
            auth, _ = await sign_up_guest(Rest(http, base, m), f"Bench {role} {i}", "unspecified")
            sig = Signaling(http, base, str(auth["token"]), m)
            await sig.connect()
            people.append((str(auth["user"]["id"]), str(auth["token"]), sig))
        (_, token, caller), (callee_id, _, callee) = people
        await caller.request("call:invite", {"to": callee_id, "seconds": 3600,
                                             "record": record})
        invite = await event(callee, "call:invite")
        await callee.request("call:accept", {"inviteId": invite["inviteId"], "record": record})
        starts = [await event(sig, "call:start") for sig in (caller, callee)]
        bots = [CountingBot(s["sfu"]["url"], s["sfu"]["token"], video, audio, start=7 * n,
                            room_id=s["roomId"]) for n, s in enumerate(starts)]
        await asyncio.gather(*(b.join() for b in bots))
        calls.append(Call(starts[0]["roomId"], caller, callee, token, bots))
    return calls


def _histogram(metrics: Samples) -> dict[float, float]:
    return {float(dict(labels)["le"]): value for (name, labels), value in metrics.items()
            if name == LATENCY}


async def measure(http: aiohttp.ClientSession, url: str, pid: int, calls: list[Call],
                  seconds: float) -> tuple[float, float | None]:
    """Server CPU seconds per second (cores) over the window, once every bot receives, and the
    server-added forwarding latency's p99 in that window (seconds, bucket resolution)."""
    deadline = time.monotonic() + 30
    while not all(b.counter.snapshot()["video"].received > 0 for c in calls for b in c.bots):
        if time.monotonic() > deadline:
            raise RuntimeError("not every bot receives media")
        await asyncio.sleep(0.1)
    await asyncio.sleep(SETTLE)
    before = _histogram(await read_metrics(http, url))
    user0, system0 = process_cpu(pid)
    start = time.monotonic()
    await asyncio.sleep(seconds)
    user1, system1 = process_cpu(pid)
    cores = (user1 + system1 - user0 - system0) / (time.monotonic() - start)
    after = _histogram(await read_metrics(http, url))
    window = sorted((bound, count - before.get(bound, 0.0)) for bound, count in after.items())
    p99, _over = bucket_percentile(window, 0.99)
    return cores, p99


async def hang_up(http: aiohttp.ClientSession, base: str, calls: list[Call],
                  recorded: bool) -> list[float]:
    """End every call; for recorded ones, seconds from hang-up until both files are ready."""
    ended: dict[str, float] = {}
    for call in calls:
        ended[call.room_id] = time.monotonic()
        await call.caller.request("room:leave", {"roomId": call.room_id})
    for call in calls:
        for bot in call.bots:
            await bot.close()
    if not recorded:
        return []
    ready: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while len(ready) < len(calls) and time.monotonic() < deadline:
        for call in calls:
            if call.room_id in ready:
                continue
            async with http.get(f"{base}/api/v1/calls/{call.room_id}/recordings",
                                headers={"Authorization": f"Bearer {call.token}"}) as resp:
                rows = (await resp.json()).get("recordings", [])
            if len(rows) == 2 and all(r["status"] != "recording" for r in rows):
                if any(r["status"] != "ready" for r in rows):
                    raise RuntimeError(f"a recording failed: {rows}")
                ready[call.room_id] = time.monotonic() - ended[call.room_id]
        await asyncio.sleep(0.1)
    if len(ready) < len(calls):
        raise RuntimeError("recordings were not ready within 120 s")
    return list(ready.values())


async def run(calls: int, seconds: float) -> int:
    info = machine()
    with tempfile.TemporaryDirectory(prefix="bench-recording-") as tmp:
        env = {**SERVER_ENV, "NAPALMSKY_RECORDING": "true"}
        with running_server(Path(tmp), env) as server:
            async with aiohttp.ClientSession() as http:
                await server.wait_ready(http, 60)
                print(f"machine   {info['cpu']}, {info['cores']} cores; load average "
                      f"{' '.join(str(x) for x in load_average())} before")
                print(f"server    napalmsky serve (all roles, embedded defaults) pid "
                      f"{server.pid}; {calls} calls a round, {seconds:.0f} s windows")
                cores: dict[bool, float] = {}
                ready: list[float] = []
                for recorded in (False, True):
                    made = await make_calls(http, server.url, calls, recorded)
                    try:
                        cores[recorded], p99 = await measure(http, server.url, server.pid,
                                                             made, seconds)
                        label = "recorded" if recorded else "plain"
                        shown = "n/a" if p99 is None else f"{1000 * p99:.2f} ms"
                        print(f"{label:9s} {100 * cores[recorded]:.1f} % of a core, "
                              f"{100 * cores[recorded] / calls:.2f} % a call; forwarding "
                              f"latency p99 {shown}")
                    finally:
                        times = await hang_up(http, server.url, made, recorded)
                    ready += times
                    for call in made:
                        for sig in (call.caller, call.callee):
                            with contextlib.suppress(Exception):
                                await sig.close()
    per_call = (cores[True] - cores[False]) / calls
    print(f"recording cost: {per_call:.4f} cores per recorded call (target <= 0.05)")
    print(f"file ready after hang-up: median {statistics.median(ready):.2f} s, "
          f"max {max(ready):.2f} s over {len(ready)} calls (target <= 10 s)")
    print(f"load average after: {' '.join(str(x) for x in load_average())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recording", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=4, help="calls a round (4)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window (20)")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.calls, args.seconds))


if __name__ == "__main__":
    sys.exit(main())
