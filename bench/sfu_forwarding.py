"""SFU forwarding benchmark: what `napalmsky serve` spends per forwarded packet and per call.

    python -m bench.sfu_forwarding --calls 10 --seconds 20 [--workers 2] [--json]
    python -m bench.sfu_forwarding --sweep 2,10,20 --seconds 20
    python -m bench.sfu_forwarding --saturate [--saturate-step 10] [--saturate-max 80]

The server is a real `napalmsky serve` process (bench/serve.py), as an operator runs it: all
roles, its own event loop (uvloop when installed), embedded defaults (SQLite, in-process bus,
local disk) in a temporary data directory, everything on 127.0.0.1, with the per-address limits
raised and no cooldown as README's "What one node holds" runs it, and calls long enough for the
run. `--server-env NAME=VALUE` passes more settings (e.g. `NAPALMSKY_RTC_PORT`). Each run of a
sweep or a saturation search starts a fresh server.

Calls are made as users make them, through the public API: two guests sign up (the load
tester's `sign_up_guest`, proof-of-work included), open `/ws`, the caller invites, the callee
accepts, and both get `call:start` with the SFU's URL and a join token. This process does the
signaling and keeps the sockets open; each participant's media is a `CountingBot` (the load
tester's: pre-encoded VP8 640x360 ~1 Mbit/s 30 fps and Opus, counting what it receives without
decoding) in one of `--workers` bot processes (`--worker`, driven over stdin/stdout with JSON
lines); the two bots of a call go to different processes when there are two or more.

Once every bot receives audio and video, and after a settle time, one window of `--seconds` is
measured:
- the server's CPU: user + system of the whole process, all its threads (/proc/<pid>/stat,
  10 ms ticks), as % of one core, per forwarded packet, and as calls per core (one core-second
  divided by the server's CPU seconds per call-second);
- forwarded packets: the delta of `napalmsky_sfu_packets_forwarded_total` in `/metrics`, per
  second between the middles of the two requests (a busy server answers them late);
- server-added latency p50/p99: from the delta of the `napalmsky_sfu_forward_latency_seconds`
  histogram (sfu/stats.py: kernel receive timestamp of the publisher's datagram to the last
  forwarded copy handed to the kernel; one RTP packet in 8 timed), interpolated linearly within
  its bucket: bucket resolution, not exact values;
- loss: packets the bots sent that the partner bots did not receive, in % of those sent (each
  bot's raw counts; the bots send no NACKs, so this is loss without retransmission). Each bot
  process samples its counts every 0.1 s with time.monotonic() (one clock for all processes);
  the samples are read on a common grid over the window. sent - received is the packets lost
  so far plus those in flight or waiting in a busy bot's socket buffer (it counts when its
  loop gets to a datagram), never negative and smallest when the bots have caught up: the
  loss is the growth of that floor from the window's first 2 s to its last 2 s. Compared at
  the window's two instants alone, that backlog showed as +-1% at 10-40 calls on a loaded
  2-core machine with no packet lost; a least-squares trend is tilted by a stall near an end
  (+0.5% at 20 calls, no packet lost). Both are printed, and beside them the loss from
  sequence gaps and the machine's UDP receive-buffer drops (/proc/net/snmp, every process):
  on loopback that is where datagrams are really lost. A loss with neither gaps nor drops is
  the bots' counting, not the server: see the bot lines;
- each bot process's CPU (/proc), its event loop's lag (mean and worst, from its sampler) and
  how often its media fell behind real time (late restarts), so a reader can tell whether the
  bots were the limit; and the whole machine's busy CPU (/proc/stat) with the part that was
  not this run (other work).

`--saturate` raises the number of calls step by step until the loss first exceeds 1% (or the
bots cannot all connect, or `--saturate-max` or `--time-limit` is reached) and reports the last
step under 1% and the first over.

Limits: the bots run on the same machine as the server and share its cores (on a 2-core machine
a few dozen aiortc bots take more CPU than the server: at saturation look at the bot processes'
CPU and loop lag before blaming the server; other work on the machine starves them first);
loopback has no real network; the latency is server-side only (kernel receive to send), not
what a client sees; CPU of the signaling done before the window is not counted, and `/metrics`
is read once inside it. It prints figures; it is not a test, and
asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.serve import (
    BenchError,
    Samples,
    Server,
    load_average,
    machine,
    machine_busy,
    package_version,
    process_cpu,
    read_metrics,
    running_server,
    udp_receive_drops,
)
from loadtest.counting import KINDS, CountingBot, KindCounts
from loadtest.measure import Measurements
from loadtest.media import audio_clip, video_clip
from loadtest.wire import Rest, Signaling, WireError, sign_up_guest

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
# README's "What one node holds": per-address limits out of the way of many sign-ups and
# sockets from one address, no cooldown; calls as long as any run; cheap password hashes.
SERVER_ENV = {
    "NAPALMSKY_RATE_SIGNUP_PER_HOUR": "1000000", "NAPALMSKY_RATE_TOKEN_PER_MINUTE": "1000000",
    "NAPALMSKY_WS_PER_IP": "100000", "NAPALMSKY_WS_UNAUTHENTICATED": "100000",
    "NAPALMSKY_COOLDOWN_HOURS": "0", "NAPALMSKY_RTC_BIND": "127.0.0.1",
    "NAPALMSKY_CALL_MIN_SECONDS": "1", "NAPALMSKY_CALL_DEFAULT_SECONDS": "3600",
    "NAPALMSKY_CALL_MAX_SECONDS": "86400", "NAPALMSKY_BCRYPT_ROUNDS": "4",
    "NAPALMSKY_LOG_FORMAT": "json",
}
SETTLE = 2.0  # seconds between "every bot receives" and the measured window
SERVER_START_TIMEOUT = 60.0
SIGNALING_TIMEOUT = 15.0
SIGNALING_CONCURRENCY = 8
HEARTBEAT_EVERY = 60.0  # presence lives 10 minutes without one
COMMAND_TIMEOUT = 10.0
SAMPLE_EVERY = 0.1  # seconds between a bot process's samples of its counts
SAMPLES_KEPT = 12_000  # 20 minutes of them
FLOOR_SPAN = 2.0  # seconds at each end of the window where bot_loss looks for the floor
BUSY_LAG = 0.01  # seconds: a bot process whose loop runs this late on average is behind
STOP_TIMEOUT = 15.0
LOSS_LIMIT_PCT = 1.0  # saturation: where the loss first exceeds this
FORWARDED = "napalmsky_sfu_packets_forwarded_total"
LATENCY = "napalmsky_sfu_forward_latency_seconds_bucket"
SERVER_COUNTERS = {  # report key -> counter in /metrics
    "sfu_packets_received": "napalmsky_sfu_packets_received_total",
    "forwarded_bytes": "napalmsky_sfu_bytes_forwarded_total",
    "nacks_sent": "napalmsky_sfu_nacks_sent_total",
    "keyframe_requests": "napalmsky_sfu_keyframe_requests_total",
    "retransmitted": "napalmsky_sfu_retransmitted_packets_total",
    "packets_lost_upstream": "napalmsky_sfu_packets_lost_upstream_total",
    "srtp_errors": "napalmsky_sfu_srtp_errors_total",
    "sfu_packets_not_forwarded": "napalmsky_sfu_packets_not_forwarded_total",
}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def server_event_loop(metrics: Samples) -> str | None:
    """The event loop the server says it runs on (`napalmsky_event_loop{loop=...}`)."""
    for name, labels in metrics:
        if name == "napalmsky_event_loop":
            return dict(labels).get("loop")
    return None


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is installed where the platform has it
        return None
    return uvloop.new_event_loop


# ---- bot workers: separate processes, driven over stdin/stdout with JSON lines ----


@dataclass
class WorkerStatus:
    counts: dict[str, KindCounts]
    states: dict[str, int]
    ready: int
    late: int
    # (time.monotonic(), packets sent, packets received) every SAMPLE_EVERY s, RTX apart: the
    # monotonic clock is one for all processes, so counts can be read at a common instant
    samples: list[tuple[float, int, int]]
    errors: list[str]

    def at(self, moment: float) -> tuple[float, float, float]:
        """(sent, received) interpolated at `moment`, and how far the nearest sample is from
        it (s); the last sample when none is later."""
        later = next((i for i, sample in enumerate(self.samples) if sample[0] >= moment), None)
        if later is None or later == 0:
            t, sent, received = self.samples[-1 if later is None else 0]
            return float(sent), float(received), abs(t - moment)
        (t0, s0, r0), (t1, s1, r1) = self.samples[later - 1], self.samples[later]
        f = (moment - t0) / (t1 - t0) if t1 > t0 else 1.0
        return s0 + f * (s1 - s0), r0 + f * (r1 - r0), min(moment - t0, t1 - moment)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerStatus:
        return cls(
            counts={k: KindCounts.from_json(data["counts"][k]) for k in KINDS},
            states={str(k): int(v) for k, v in data["states"].items()},
            ready=int(data["ready"]), late=int(data["late"]),
            samples=[(float(t), int(a), int(b)) for t, a, b in data["samples"]],
            errors=[str(e) for e in data.get("errors", [])],
        )


class Worker:
    """One bot process, started with `python -m bench.sfu_forwarding --worker`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, job: dict[str, Any]) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.sfu_forwarding", "--worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )
        worker = cls(proc)
        await worker._send(job)
        return worker

    def cpu(self) -> float:
        return sum(process_cpu(self.proc.pid))

    async def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        await self.proc.stdin.drain()

    async def request(self, command: str, **data: Any) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with self._lock:
            await self._send({"command": command, **data})
            line = await asyncio.wait_for(self.proc.stdout.readline(), COMMAND_TIMEOUT)
        if not line:
            raise BenchError(f"bot worker exited (code {self.proc.returncode})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def status(self, since: float = math.inf) -> WorkerStatus:
        """Its bots' counts, with its samples from `since` (time.monotonic()) on."""
        return WorkerStatus.from_json(await self.request("status", since=since))

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.request("stop"), STOP_TIMEOUT)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def _read_commands(queue: asyncio.Queue[dict[str, Any] | None]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            queue.put_nowait(json.loads(line))
    finally:
        transport.close()
        queue.put_nowait(None)


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def worker_main() -> None:
    """Run the bots of one job until told to stop, the job's deadline, or stdin closes."""
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    reader = asyncio.ensure_future(_read_commands(queue))
    job = await queue.get()
    if job is None:
        return
    video, audio = video_clip(), audio_clip()
    bots = [CountingBot(b["url"], b["token"], video, audio, start=int(b["start"]),
                        room_id=b.get("room"))
            for b in job["bots"]]
    errors: list[str] = []
    limit = asyncio.Semaphore(int(job.get("join_concurrency", 4)))

    async def join(bot: CountingBot) -> None:
        async with limit:
            try:
                await bot.join(wait=float(job.get("join_timeout", 30)))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    samples: deque[tuple[float, int, int]] = deque(maxlen=SAMPLES_KEPT)
    joins = [asyncio.ensure_future(join(bot)) for bot in bots]
    sampler = asyncio.ensure_future(_sample(bots, samples))
    try:
        async with asyncio.timeout(float(job["deadline"])):
            while (message := await queue.get()) is not None:
                if message.get("command") == "stop":
                    break
                _reply(_worker_status(bots, errors, samples, float(message.get("since", 0))))
    except TimeoutError:
        log.warning("bot worker reached its deadline")
    finally:
        sampler.cancel()
        for task in joins:
            task.cancel()
        await asyncio.gather(*joins, return_exceptions=True)
        await asyncio.gather(*(asyncio.wait_for(b.close(), 10) for b in bots),
                             return_exceptions=True)
        _reply({"stopped": True})
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


def _totals(bots: list[CountingBot]) -> tuple[float, int, int]:
    sent = received = 0
    for bot in bots:
        for counts in bot.counter.snapshot().values():
            sent += counts.sent
            received += counts.received
    return time.monotonic(), sent, received


async def _sample(bots: list[CountingBot], samples: deque[tuple[float, int, int]]) -> None:
    while True:
        samples.append(_totals(bots))
        await asyncio.sleep(SAMPLE_EVERY)


def _worker_status(bots: list[CountingBot], errors: list[str],
                   samples: deque[tuple[float, int, int]], since: float) -> dict[str, Any]:
    counts = {kind: KindCounts() for kind in KINDS}
    states: dict[str, int] = {}
    ready = 0
    for bot in bots:
        snap = bot.counter.snapshot()
        for kind in KINDS:
            counts[kind].add(snap[kind])
        states[bot.state] = states.get(bot.state, 0) + 1
        if bot.state == "connected" and all(snap[k].received > 0 for k in KINDS):
            ready += 1
    return {"counts": {k: c.to_json() for k, c in counts.items()}, "states": states,
            "ready": ready, "late": sum(b.late for b in bots),
            "samples": [*(x for x in samples if x[0] >= since), _totals(bots)],
            "errors": errors[-5:]}


# ---- calls, made through the public API and signaling ----


async def _event(sig: Signaling, kind: str, within: float) -> dict[str, Any]:
    """The data of the next `kind` event on this socket (others are skipped)."""
    async with asyncio.timeout(within):
        while True:
            event = await sig.events.get()
            if event.get("type") == kind:
                data: dict[str, Any] = event.get("data", {})
                return data


async def _online_guest(http: aiohttp.ClientSession, base: str, m: Measurements,
                        name: str) -> tuple[str, Signaling]:
    """Sign up a guest as the web client does and open its `/ws`: (user id, socket)."""
    auth, _solved = await sign_up_guest(Rest(http, base, m), name, "unspecified")
    sig = Signaling(http, base, str(auth["token"]), m)
    await sig.connect(wait=SIGNALING_TIMEOUT)
    return str(auth["user"]["id"]), sig


async def make_call(http: aiohttp.ClientSession, base: str, m: Measurements, index: int,
                    seconds: int, sockets: list[Signaling]) -> list[dict[str, Any]]:
    """Two fresh guests; the caller invites, the callee accepts. The caller's and the callee's
    SFU joins ({url, token, room}) from their `call:start`. Their sockets go into `sockets`
    (kept open for the call's life: a call ends when a participant's sockets are gone)."""
    _, caller = await _online_guest(http, base, m, f"Bench caller {index}")
    sockets.append(caller)
    callee_id, callee = await _online_guest(http, base, m, f"Bench callee {index}")
    sockets.append(callee)
    await caller.request("call:invite", {"to": callee_id, "seconds": seconds},
                         wait=SIGNALING_TIMEOUT)
    invite = await _event(callee, "call:invite", SIGNALING_TIMEOUT)
    await callee.request("call:accept", {"inviteId": invite["inviteId"]}, wait=SIGNALING_TIMEOUT)
    joins = []
    for sig in (caller, callee):
        start = await _event(sig, "call:start", SIGNALING_TIMEOUT)
        joins.append({"url": str(start["sfu"]["url"]), "token": str(start["sfu"]["token"]),
                      "room": str(start["roomId"])})
    return joins


async def _heartbeats(sockets: list[Signaling]) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_EVERY)
        for sig in sockets:
            with contextlib.suppress(WireError):
                await sig.request("presence:heartbeat")


# ---- one measured run ----


@dataclass
class Snapshot:
    at: float
    server_cpu: tuple[float, float]
    worker_cpu: list[float]
    own_cpu: float  # this process: the signaling sockets and the bookkeeping
    busy: float  # the whole machine
    udp_drops: int  # the machine's UDP receive-buffer errors
    metrics: Samples
    metrics_at: float  # the middle of the /metrics request: a busy server answers late
    workers: list[WorkerStatus]

    @classmethod
    async def take(cls, server: Server, http: aiohttp.ClientSession, workers: list[Worker],
                   since: float | None = None) -> Snapshot:
        """Everything at one instant; the bot processes' samples from `since` (default: the
        second before it)."""
        at = time.monotonic()
        cpu = process_cpu(server.pid)
        worker_cpu = [w.cpu() for w in workers]
        own, busy, drops = time.process_time(), machine_busy(), udp_receive_drops()
        asked = time.monotonic()
        metrics = await read_metrics(http, server.url)
        metrics_at = (asked + time.monotonic()) / 2
        await asyncio.sleep(max(0.0, at + 2 * SAMPLE_EVERY - time.monotonic()))
        first = at - 1.0 if since is None else since
        statuses = await asyncio.gather(*(w.status(first) for w in workers))
        return cls(at, cpu, worker_cpu, own, busy, drops, metrics, metrics_at,
                   [s for s in statuses if isinstance(s, WorkerStatus)])

    def counter(self, name: str) -> float:
        return sum(v for (n, _), v in self.metrics.items() if n == name)

    def histogram(self, name: str) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) of a histogram's buckets, in order."""
        return sorted((float(dict(labels)["le"]), value)
                      for (n, labels), value in self.metrics.items() if n == name)

    def bot_counts(self) -> dict[str, KindCounts]:
        total: dict[str, KindCounts] = {kind: KindCounts() for kind in KINDS}
        for status in self.workers:
            for kind in KINDS:
                total[kind].add(status.counts[kind])
        return total


def bucket_percentile(buckets: Sequence[tuple[float, float]], q: float) -> tuple[float | None,
                                                                                   bool]:
    """The q-quantile of a Prometheus histogram (cumulative counts by upper bound), linear
    within the bucket it falls in, as Prometheus' histogram_quantile does; and whether it lies
    past the last finite bound (then the value is that bound). (None, False) when empty."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None, False
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower, True
            return lower + (bound - lower) * (rank - below) / (count - below), False
        lower, below = bound, count
    return lower, True


def _pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 3) if whole > 0 else 0.0


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


@dataclass(frozen=True)
class BotLoss:
    sent: float  # packets all bots sent in the window (RTX apart)
    received: float  # and received
    loss_pct: float  # between the floors at the two ends of the window, see bot_loss
    trend_pct: float  # the slope of sent - received over the slope of sent
    uncertainty_pct: float  # two standard errors of that trend
    endpoints_pct: float  # (sent - received) / sent between the two instants alone
    sample_distance: float  # seconds: the farthest sample from a point it stood for


def loop_lag(begin: Snapshot, end: Snapshot) -> list[tuple[float, float]]:
    """Per bot process, how late its sampler ran in the window, (mean, max) in seconds: it
    sleeps SAMPLE_EVERY between samples, so anything more is its event loop running behind
    (its own work, or waiting for a core): the receive path waits as long."""
    out = []
    for status in end.workers:
        times = [t for t, _, _ in status.samples[:-1] if begin.at <= t <= end.at]
        steps = [b - a - SAMPLE_EVERY for a, b in itertools.pairwise(times)]
        out.append((max(0.0, sum(steps) / len(steps)), max(steps)) if steps else (0.0, 0.0))
    return out


def bot_loss(begin: Snapshot, end: Snapshot) -> BotLoss:
    """Loss between what the bots sent and what the partner bots received, from each bot
    process's samples (one monotonic clock) read on a common grid over the window.

    A bot process counts what it receives when its loop gets to the datagram: a busy one holds
    a backlog in its socket buffer, which comes and goes (its loop stalls for up to a second on
    a loaded machine). Compared at two instants only, the difference of those backlogs shows as
    loss (or as a gain); a stall near an end of the window tilts a trend as well. On the grid,
    D(t) = sent(t) - received(t) is the packets lost so far plus those in flight or waiting,
    which is never negative and smallest when the bots have caught up: the loss is the
    smallest D over the last FLOOR_SPAN seconds of the window minus the smallest D over its
    first FLOOR_SPAN seconds, in % of what was sent. The trend (slope of D over slope of sent,
    +- two standard errors) and the two-instant figure are given too."""
    step = SAMPLE_EVERY
    points = max(2, int((end.at - begin.at) / step) + 1)
    grid = [begin.at + i * (end.at - begin.at) / (points - 1) for i in range(points)]
    sent = [0.0] * points
    received = [0.0] * points
    distance = 0.0
    for status in end.workers:
        for i, moment in enumerate(grid):
            s_i, r_i, d_i = status.at(moment)
            sent[i] += s_i
            received[i] += r_i
            distance = max(distance, d_i)
    gap = [a - b for a, b in zip(sent, received, strict=True)]
    mean_t = sum(grid) / points
    var_t = sum((t - mean_t) ** 2 for t in grid)
    slope_sent = _slope(grid, sent, mean_t, var_t)
    slope_gap = _slope(grid, gap, mean_t, var_t)
    mean_gap = sum(gap) / points
    residual = sum((g - mean_gap - slope_gap * (t - mean_t)) ** 2 for t, g in zip(grid, gap,
                                                                                 strict=True))
    stderr = math.sqrt(residual / (points - 2) / var_t) if points > 2 and var_t > 0 else 0.0
    total_sent, total_received = sent[-1] - sent[0], received[-1] - received[0]
    edge = max(1, min(points // 4, round(FLOOR_SPAN / step)))
    first = min(range(edge), key=lambda i: gap[i])
    last = min(range(points - edge, points), key=lambda i: gap[i])
    return BotLoss(
        sent=total_sent, received=total_received,
        # over what was sent between the two floors
        loss_pct=_pct(max(0.0, gap[last] - gap[first]), sent[last] - sent[first]),
        trend_pct=_pct(max(0.0, slope_gap), slope_sent),
        uncertainty_pct=_pct(2 * stderr, slope_sent),
        endpoints_pct=round(100 * (total_sent - total_received) / total_sent, 3)
        if total_sent > 0 else 0.0,
        sample_distance=distance)


def _slope(xs: Sequence[float], ys: Sequence[float], mean_x: float, var_x: float) -> float:
    if var_x <= 0:
        return 0.0
    mean_y = sum(ys) / len(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var_x


def measure_window(calls: int, begin: Snapshot, end: Snapshot) -> dict[str, Any]:
    window = end.at - begin.at
    user = end.server_cpu[0] - begin.server_cpu[0]
    system = end.server_cpu[1] - begin.server_cpu[1]
    cpu = user + system
    forwarded = int(end.counter(FORWARDED) - begin.counter(FORWARDED))
    # the counters' own window: from the middle of one /metrics request to the other's
    counted = end.metrics_at - begin.metrics_at
    forwarded_pps = forwarded / counted if counted > 0 else 0.0
    server = {key: int(end.counter(name) - begin.counter(name))
              for key, name in SERVER_COUNTERS.items()}
    before, after = begin.bot_counts(), end.bot_counts()
    bots = {kind: after[kind].minus(before[kind]) for kind in KINDS}
    received = sum(c.received for c in bots.values())
    loss = bot_loss(begin, end)
    expected = sum(c.expected for c in bots.values())
    start_h, end_h = begin.histogram(LATENCY), end.histogram(LATENCY)
    latency = [(bound, count - dict(start_h).get(bound, 0.0)) for bound, count in end_h]
    p50, p50_over = bucket_percentile(latency, 0.50)
    p99, p99_over = bucket_percentile(latency, 0.99)
    per_call_second = cpu / (calls * window) if window > 0 else 0.0
    worker_cpu = [round(100 * (e - b) / window, 1)
                  for b, e in zip(begin.worker_cpu, end.worker_cpu, strict=True)]
    late = sum(e.late - b.late for b, e in zip(begin.workers, end.workers, strict=True))
    lag = loop_lag(begin, end)
    return {
        "calls": calls,
        "seconds": round(window, 3),
        "server_event_loop": server_event_loop(end.metrics),
        "forwarded_packets": forwarded,
        "forwarded_pps": round(forwarded_pps, 1),
        "forwarded_mbps": round(server["forwarded_bytes"] * 8 / counted / 1e6, 3)
        if counted > 0 else 0.0,
        "cpu_seconds": round(cpu, 3),
        "cpu_user_seconds": round(user, 3),
        "cpu_system_seconds": round(system, 3),
        "cpu_pct_of_one_core": round(100 * cpu / window, 1),
        "cpu_us_per_forwarded_packet": round(cpu / window / forwarded_pps * 1e6, 2)
        if forwarded_pps > 0 else None,
        "cpu_seconds_per_call_second": round(per_call_second, 5),
        "calls_per_core": round(1 / per_call_second, 1) if per_call_second > 0 else None,
        "latency_ms_p50": _ms(p50),
        "latency_ms_p99": _ms(p99),
        "latency_past_last_bucket": p50_over or p99_over,
        "latency_samples": int(latency[-1][1]) if latency else 0,
        "latency_resolution": "bucket (linear within the histogram bucket)",
        "latency_buckets_ms": [round(b * 1000, 3) for b, _ in latency if not math.isinf(b)],
        "latency_bucket_counts": [int(c - below) for (_, c), below in
                                  zip(latency, [0.0] + [c for _, c in latency], strict=False)],
        "loss_pct": loss.loss_pct,
        "loss_basis": "bot packets sent vs partner packets received: growth of the floor of "
                      f"their difference from the window's first {FLOOR_SPAN:g} s to its last "
                      f"(bot processes' samples every {SAMPLE_EVERY:g} s)",
        "loss_trend_pct": loss.trend_pct,
        "loss_trend_uncertainty_pct": loss.uncertainty_pct,
        "loss_endpoints_pct": loss.endpoints_pct,
        "loss_sample_distance_ms": round(loss.sample_distance * 1000, 1),
        "udp_receive_buffer_drops": end.udp_drops - begin.udp_drops,
        "gap_loss_pct": _pct(max(0, expected - received), expected),
        "bot_packets_sent": round(loss.sent),
        "bot_packets_received": round(loss.received),
        "bot_pps_sent_total": round(loss.sent / window, 1),
        "bot_pps_received_total": round(loss.received / window, 1),
        "bot_pps_received": {k: round(bots[k].received / window, 1) for k in KINDS},
        "bot_rtx_received": sum(c.rtx_received for c in bots.values()),
        "bot_worker_cpu_pct": worker_cpu,
        "bot_late_restarts": late,
        "bot_loop_lag_ms": [[round(1000 * mean, 1), round(1000 * most, 1)] for mean, most in lag],
        # a bot process near a full core, its loop behind, or its media falling behind: the
        # bots may set the pace (and a backlog in them shows as loss)
        "bots_may_be_the_limit": late > 0 or any(c >= 90.0 for c in worker_cpu)
        or any(mean >= BUSY_LAG for mean, _ in lag),
        "bench_cpu_pct": round(100 * (end.own_cpu - begin.own_cpu) / window, 1),
        # everything the machine's cores did in the window, and what of it was not this run
        "machine_busy_pct": round(100 * (end.busy - begin.busy) / window, 1),
        "other_cpu_pct": round(max(0.0, 100 * ((end.busy - begin.busy) - cpu - (
            end.own_cpu - begin.own_cpu)) / window - sum(worker_cpu)), 1),
        **{key: value for key, value in server.items() if key != "forwarded_bytes"},
    }


def _server_settings(extra: Mapping[str, str]) -> dict[str, str]:
    return {**SERVER_ENV, **extra}


async def _profile(pid: int, seconds: float, path: str) -> asyncio.subprocess.Process | None:
    """py-spy on the server for the window (when it is installed), else None."""
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}"
                       f"{os.environ.get('PATH', '')}")
    if spy is None:
        say("--profile: py-spy is not installed (pip install py-spy); not profiling")
        return None
    suffix = Path(path).suffix
    fmt = {".txt": "raw", ".svg": "flamegraph"}.get(suffix, "speedscope")
    return await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
        "--rate", "100", "--nonblocking", "--format", fmt, "--output", path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def run_benchmark(
    calls: int, seconds: float, *, workers: int = 2, settle: float = SETTLE,
    server_env: Mapping[str, str] | None = None, setup_timeout: float | None = None,
    progress: Callable[[str], None] | None = None, profile: str | None = None,
) -> dict[str, Any]:
    """Start `napalmsky serve`, make `calls` calls through its API with bots in `workers`
    processes, measure `seconds` once they all receive media, stop everything, and return the
    window's figures. Raises BenchError when the run cannot be set up in time."""
    if calls < 1 or seconds <= 0:
        raise ValueError("need at least one call and a positive duration")
    tell = progress or (lambda _message: None)
    setup_timeout = setup_timeout if setup_timeout is not None else 30.0 + 2.0 * calls
    deadline = SERVER_START_TIMEOUT + 2 * setup_timeout + settle + seconds + 30.0
    booked = math.ceil(deadline + 60)
    settings = _server_settings(server_env or {})
    # Encode (or load) the clips once here, so the workers only read the cache.
    await asyncio.to_thread(lambda: (video_clip(), audio_clip()))
    started: list[Worker] = []
    sockets: list[Signaling] = []
    heartbeat: asyncio.Task[None] | None = None
    with tempfile.TemporaryDirectory(prefix="napalmsky-sfu-bench-") as tmp, \
            running_server(Path(tmp), settings) as server:
        try:
            async with aiohttp.ClientSession() as http, asyncio.timeout(deadline):
                await server.wait_ready(http, SERVER_START_TIMEOUT)
                tell(f"{calls} calls: napalmsky serve ready at {server.url} (pid {server.pid}); "
                     "signing up guests and making the calls")
                m = Measurements()
                limit = asyncio.Semaphore(SIGNALING_CONCURRENCY)

                async def call(index: int) -> list[dict[str, Any]]:
                    async with limit:
                        return await make_call(http, server.url, m, index, booked, sockets)

                try:
                    async with asyncio.timeout(setup_timeout):
                        pairs = await asyncio.gather(*(call(i) for i in range(calls)))
                except (WireError, TimeoutError) as exc:
                    raise BenchError(f"making the calls failed: {type(exc).__name__}: "
                                     f"{exc}") from exc
                heartbeat = asyncio.ensure_future(_heartbeats(sockets))
                count = max(1, min(workers, 2 * calls))
                rng = random.Random(7)
                jobs: list[list[dict[str, Any]]] = [[] for _ in range(count)]
                for i, pair in enumerate(pairs):
                    for j, join in enumerate(pair):
                        jobs[(2 * i + j) % count].append({**join, "start": rng.randrange(1000)})
                for bots in jobs:
                    started.append(await Worker.start(
                        {"bots": bots, "deadline": deadline, "join_timeout": setup_timeout}))
                tell(f"{calls} calls: {2 * calls} bots joining in {count} worker processes")
                await _wait_ready(started, 2 * calls, setup_timeout, tell)
                await asyncio.sleep(settle)
                begin = await Snapshot.take(server, http, started)
                spy = await _profile(server.pid, seconds, profile) if profile else None
                tell(f"{calls} calls: measuring for {seconds:g} s")
                await asyncio.sleep(seconds)
                end = await Snapshot.take(server, http, started, since=begin.at - 1.0)
                report = measure_window(calls, begin, end)
                if spy is not None:
                    _, err = await asyncio.wait_for(spy.communicate(), 60)
                    report["profile"] = profile if spy.returncode == 0 else None
                    if spy.returncode != 0:
                        say(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
                report["server_settings"] = dict(server_env or {})
                report["server_pid"] = server.pid
                return report
        except TimeoutError as exc:  # the run's own deadline (a stuck worker or server)
            say(f"server log (tail):\n{server.log_tail(1500)}")
            raise BenchError(f"{calls} calls: the run did not finish within {deadline:.0f} s"
                             ) from exc
        except Exception:
            say(f"server log (tail):\n{server.log_tail(1500)}")
            raise
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)
            await asyncio.gather(*(w.stop() for w in started), return_exceptions=True)
            await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)


async def _wait_ready(workers: list[Worker], bots: int, limit: float,
                      tell: Callable[[str], None]) -> None:
    give_up = time.monotonic() + limit
    told = time.monotonic()
    while True:
        statuses = await asyncio.gather(*(w.status() for w in workers))
        ready = sum(s.ready for s in statuses)
        if ready == bots:
            return
        if time.monotonic() - told >= 5:
            told = time.monotonic()
            tell(f"{ready} of {bots} bots receiving audio and video")
        if time.monotonic() > give_up:
            states: dict[str, int] = {}
            for s in statuses:
                for k, v in s.states.items():
                    states[k] = states.get(k, 0) + v
            errors = [e for s in statuses for e in s.errors]
            raise BenchError(f"only {ready} of {bots} bots receiving after {limit:g} s; bot "
                             f"states {states}; errors {errors[:3]}")
        await asyncio.sleep(0.5)


# ---- sweeps, saturation and the report ----


def context(workers: int, server_env: Mapping[str, str]) -> dict[str, Any]:
    """On what machine, with what software and settings the figures were taken."""
    return {
        "benchmark": "sfu_forwarding",
        "machine": machine(),
        "versions": {"python": platform.python_version(),
                     "napalmsky": package_version("napalmsky"),
                     "aiortc": package_version("aiortc")},
        "server": {"command": "python -m napalmsky serve", "roles": "all",
                   "mode": "single node: sqlite, in-process bus, local blobs",
                   "settings": _server_settings(server_env)},
        "bot_workers": workers,
        "bots": "loadtest CountingBot: pre-encoded VP8 640x360 ~1 Mbit/s 30 fps + Opus, "
                "counting without decoding",
    }


async def saturate(*, step: int, first: int, most: int, time_limit: float,
                   run: Callable[[int], Any]) -> dict[str, Any]:
    """Runs at first, first+step, ... calls until the loss first exceeds LOSS_LIMIT_PCT, a run
    cannot be set up, `most` calls, or `time_limit` seconds (no step starts that would not fit,
    judging by the last one)."""
    runs: list[dict[str, Any]] = []
    stopped = "max_calls"
    started = time.monotonic()
    last_took = 0.0
    calls = first
    while calls <= most:
        elapsed = time.monotonic() - started
        if runs and elapsed + 1.5 * last_took > time_limit:
            stopped = "time_limit"
            break
        began = time.monotonic()
        try:
            report: dict[str, Any] = await run(calls)
        except BenchError as exc:
            say(f"{calls} calls: could not be set up: {exc}")
            runs.append({"calls": calls, "failed": str(exc)[:500]})
            stopped = "setup_failed"
            break
        last_took = time.monotonic() - began
        runs.append(report)
        if report["loss_pct"] > LOSS_LIMIT_PCT:
            stopped = "loss"
            break
        calls += step
    measured = [r for r in runs if "failed" not in r]
    under = [r for r in measured if r["loss_pct"] <= LOSS_LIMIT_PCT]
    over = [r for r in runs if "failed" in r or r["loss_pct"] > LOSS_LIMIT_PCT]
    return {"loss_limit_pct": LOSS_LIMIT_PCT, "stopped_by": stopped, "runs": runs,
            "last_under": under[-1]["calls"] if under else None,
            "first_over": over[0]["calls"] if over else None}


def _fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def format_context(ctx: dict[str, Any]) -> str:
    m, server = ctx["machine"], ctx["server"]
    extra = {k: v for k, v in server["settings"].items() if k not in SERVER_ENV
             or SERVER_ENV[k] != v}
    return "\n".join([
        "SFU forwarding through `napalmsky serve` (all roles, "
        f"{server['mode']}); bots in {ctx['bot_workers']} processes",
        f"machine   {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable); load average "
        f"{' '.join(map(str, m['load_start']))} before, "
        f"{' '.join(map(str, m.get('load_end', [])))} after",
        f"versions  Python {ctx['versions']['python']}, aiortc {ctx['versions']['aiortc']}",
        "settings  README's load-test limits, no cooldown, RTC on 127.0.0.1"
        + (f"; plus {extra}" if extra else ""),
        *(["note      the machine was busy before the run (load average over half its "
           "cores): other work shares the CPU; see 'other work' below"]
          if m["load_start"] and m["load_start"][0] > m["cores"] / 2 else []),
    ])


def _histogram(r: dict[str, Any]) -> str:
    """Samples per bucket, as `<=0.1 ms: 40, <=0.25: 3, ... >100: 0`."""
    bounds = [f"<={b:g}" for b in r["latency_buckets_ms"]] + [
        f">{r['latency_buckets_ms'][-1]:g}" if r["latency_buckets_ms"] else "all"]
    return ", ".join(f"{b}: {c}" for b, c in zip(bounds, r["latency_bucket_counts"],
                                                  strict=False)) + " (ms: samples)"


def format_run(r: dict[str, Any]) -> str:
    if "failed" in r:
        return f"== {r['calls']} calls: not set up: {r['failed']} =="
    over = " (past the last bucket)" if r["latency_past_last_bucket"] else ""
    return "\n".join([
        f"== {r['calls']} calls, {r['seconds']} s measured, server on "
        f"{r['server_event_loop']} ==",
        f"forwarded           {r['forwarded_pps']} packets/s, {r['forwarded_mbps']} Mbit/s",
        f"server CPU          {r['cpu_seconds']} s (user {r['cpu_user_seconds']}, system "
        f"{r['cpu_system_seconds']}), {r['cpu_pct_of_one_core']}% of a core",
        f"CPU per packet      {_fmt(r['cpu_us_per_forwarded_packet'])} us",
        f"CPU per call        {r['cpu_seconds_per_call_second']} s per call-second -> "
        f"{_fmt(r['calls_per_core'])} calls per core",
        f"latency (server)    p50 {_fmt(r['latency_ms_p50'])} ms, p99 "
        f"{_fmt(r['latency_ms_p99'])} ms{over} ({r['latency_samples']} samples; bucket "
        f"resolution)",
        f"latency histogram   {_histogram(r)}",
        f"loss                {r['loss_pct']}% (floor; trend {r['loss_trend_pct']}% +- "
        f"{r['loss_trend_uncertainty_pct']}, end points alone {r['loss_endpoints_pct']}%; sent "
        f"{r['bot_pps_sent_total']} vs received "
        f"{r['bot_pps_received_total']} packets/s); sequence gaps {r['gap_loss_pct']}%; "
        f"UDP receive-buffer drops on the machine {r['udp_receive_buffer_drops']}",
        f"bots                sent {r['bot_packets_sent']}, received "
        f"{r['bot_packets_received']}; worker CPU {r['bot_worker_cpu_pct']}% of a core each, "
        f"loop lag mean/max {r['bot_loop_lag_ms']} ms, late restarts {r['bot_late_restarts']}"
        + ("  <- the bots may be the limit" if r["bots_may_be_the_limit"] else ""),
        f"machine CPU         {r['machine_busy_pct']}% of a core busy in all: server, bots, "
        f"this process {r['bench_cpu_pct']}%, other work {r['other_cpu_pct']}%",
        f"server feedback     copies not forwarded {r['sfu_packets_not_forwarded']}, keyframe "
        f"requests {r['keyframe_requests']}, NACKs sent "
        f"{r['nacks_sent']}, retransmitted {r['retransmitted']}, lost upstream "
        f"{r['packets_lost_upstream']}",
    ])


def _loss(r: dict[str, Any]) -> str:
    return f"{r['loss_pct']} ({r['loss_trend_pct']})"


def format_table(runs: list[dict[str, Any]]) -> str:
    lines = [f"{'calls':>5} {'fwd pkt/s':>10} {'CPU %core':>9} {'us/pkt':>7} {'calls/core':>10} "
             f"{'p50 ms':>7} {'p99 ms':>7} {'loss % (trend)':>15} {'other %':>7}  bot CPU %"]
    for r in runs:
        if "failed" in r:
            lines.append(f"{r['calls']:>5} (not set up)")
            continue
        lines.append(
            f"{r['calls']:>5} {r['forwarded_pps']:>10} {r['cpu_pct_of_one_core']:>9} "
            f"{_fmt(r['cpu_us_per_forwarded_packet']):>7} {_fmt(r['calls_per_core']):>10} "
            f"{_fmt(r['latency_ms_p50']):>7} {_fmt(r['latency_ms_p99']):>7} "
            f"{_loss(r):>15} {r['other_cpu_pct']:>7}  {r['bot_worker_cpu_pct']}")
    lines.append("(latency: server-side, kernel receive to send, bucket resolution; other %: "
                 "CPU of processes not in this run, in % of a core)")
    return "\n".join(lines)


def _limit(runs: list[dict[str, Any]], calls: int | None) -> str:
    """What the first step over the limit says of the bots and the machine."""
    run = next((r for r in runs if r["calls"] == calls and "failed" not in r), None)
    if run is None:
        return ""
    text = (f"\nat {calls} calls: server {run['cpu_pct_of_one_core']}% of a core, bots "
            f"{run['bot_worker_cpu_pct']}%, machine {run['machine_busy_pct']}% of a core busy; "
            f"sequence gaps {run['gap_loss_pct']}%, UDP drops {run['udp_receive_buffer_drops']}")
    if run["bots_may_be_the_limit"]:
        text += "; the bots may be the limit (see their loop lag)"
    return text


def format_report(report: dict[str, Any]) -> str:
    parts = [format_context(report)]
    parts += [format_run(r) for r in report["runs"]]
    if len(report["runs"]) > 1:
        parts.append(format_table(report["runs"]))
    sat = report.get("saturation")
    if sat is not None:
        parts.append(
            f"saturation (loss > {sat['loss_limit_pct']}%): last step under "
            f"{_fmt(sat['last_under'])} calls, first over {_fmt(sat['first_over'])} calls; "
            f"stopped by {sat['stopped_by']}" + _limit(report["runs"], sat["first_over"]))
    return "\n\n".join(parts)


def _parse_env(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("NAPALMSKY_"):
            raise ValueError(f"--server-env wants NAPALMSKY_NAME=VALUE, not {item!r}")
        out[name] = value
    return out


def _profile_path(path: str | None, calls: int, several: bool) -> str | None:
    if path is None or not several:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}-{calls}calls{p.suffix}"))


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    # SIGTERM stops a run as Ctrl-C does (asyncio.Runner's): cancelled, so every `finally`
    # stops the bots and the server.
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    server_env = _parse_env(args.server_env)
    report = context(args.workers, server_env)
    several = bool(args.sweep or args.saturate)

    async def run(calls: int) -> dict[str, Any]:
        return await run_benchmark(calls, args.seconds, workers=args.workers,
                                   settle=args.settle, server_env=server_env, progress=say,
                                   profile=_profile_path(args.profile, calls, several))

    if args.saturate:
        sat = await saturate(step=args.saturate_step,
                             first=args.saturate_start or args.saturate_step,
                             most=args.saturate_max, time_limit=args.time_limit, run=run)
        report["runs"] = sat.pop("runs")
        report["saturation"] = sat
    elif args.sweep:
        report["runs"] = [await run(calls) for calls in args.sweep]
    else:
        report["runs"] = [await run(args.calls)]
    report["machine"]["load_end"] = load_average()
    return report


def _calls_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("a comma list of positive call counts, e.g. 2,10,20")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sfu_forwarding",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--calls", type=int, default=10, help="1:1 calls in one run (default 10)")
    mode.add_argument("--sweep", type=_calls_list, metavar="N,N,...",
                      help="one run per call count, a fresh server each (e.g. 2,10,20)")
    mode.add_argument("--saturate", action="store_true",
                      help=f"add calls step by step until the loss exceeds {LOSS_LIMIT_PCT}%%")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window (20)")
    parser.add_argument("--settle", type=float, default=SETTLE,
                        help=f"seconds after every bot receives, before the window ({SETTLE:g})")
    parser.add_argument("--workers", type=int, default=2, help="bot processes (2)")
    parser.add_argument("--saturate-step", type=int, default=10, help="calls per step (10)")
    parser.add_argument("--saturate-start", type=int, default=0,
                        help="calls of the first step (default: one step)")
    parser.add_argument("--saturate-max", type=int, default=80, help="most calls tried (80)")
    parser.add_argument("--time-limit", type=float, default=1200.0,
                        help="--saturate starts no step past this many seconds (1200)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a NAPALMSKY_* setting for the server (repeatable)")
    parser.add_argument("--profile", metavar="PATH",
                        help="py-spy the server over the window into PATH (speedscope JSON; "
                             ".svg: flamegraph, .txt: raw collapsed stacks); needs py-spy")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.worker:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(worker_main())
        return 0
    if args.calls < 1 or args.seconds <= 0 or args.workers < 1 or args.saturate_step < 1:
        parser.error("--calls, --seconds, --workers and --saturate-step must be positive")
    try:
        _parse_env(args.server_env)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            report = runner.run(_main(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted: bots and server stopped")
        return 130
    except (BenchError, TimeoutError, ValueError) as exc:
        say(f"benchmark failed: {type(exc).__name__}: {exc}")
        return 1
    readable = format_report(report)
    if args.json:
        print(readable, file=sys.stderr)
        print(json.dumps(report))
    else:
        print(readable)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "BotLoss",
    "Snapshot",
    "WorkerStatus",
    "bot_loss",
    "bucket_percentile",
    "context",
    "format_report",
    "main",
    "make_call",
    "measure_window",
    "run_benchmark",
    "saturate",
]
