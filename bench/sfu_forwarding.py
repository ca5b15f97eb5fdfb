"""SFU forwarding benchmark: how much CPU the SFU spends per call, and what it delivers.

    python -m bench.sfu_forwarding --calls 10 --seconds 20 [--baseline] [--json]

This process is the SFU (or, with `--baseline`, also a relay built from aiortc as shipped:
decode with `MediaRelay`, re-encode). Bots run in worker processes (`--worker`, started by this
one): each publishes pre-encoded VP8 (~1 Mbit/s, 640x360, 30 fps) and Opus and counts what it
receives without decoding (loadtest/counting.py), so their CPU stays out of the figures.

After a warm-up (every bot receiving audio and video) the measured window reports this
process's CPU (user + system, all threads), the packets the SFU forwarded, loss (packets the
publishers sent against packets the subscribers received), and the SFU-added latency: from the
datagram reaching the SFU's socket callback to the forwarded copy leaving `Consumer.forward`,
measured by benchmark-only hooks installed on the instances (time a datagram waits in the kernel
buffer while the loop is busy is not seen). The baseline reports loss from sequence gaps, since
it re-encodes, and no latency.

It prints figures; it is not a test, and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import logging
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from aiohttp import WSMsgType, web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.rtcconfiguration import RTCBundlePolicy

from core.clock import SystemClock
from core.errors import NapalmError
from loadtest.counting import KINDS, CountingBot, KindCounts
from loadtest.ice import bind_peer_connection
from loadtest.media import audio_clip, video_clip
from sfu.consumer import Consumer
from sfu.events import ParticipantConnected, SfuEvent
from sfu.internals import NetworkConfig
from sfu.server import SfuConfig, SfuServer
from sfu.token import mint_join_token, verify_join_token
from sfu.transport import Transport
from sfu.ws import sfu_routes

log = logging.getLogger(__name__)

Mode = Literal["sfu", "baseline"]
LOOPBACK = NetworkConfig(bind=("127.0.0.1",))
ROOT = Path(__file__).resolve().parents[1]
SETTLE = 2.0  # seconds between "everyone receives" and the measured window
COMMAND_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is installed where the platform has it
        return None
    return uvloop.new_event_loop


def _cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


# ---- SFU-added latency: benchmark-only hooks on the SFU's instances ----


class LatencyProbe:
    """Stamps each RTP datagram when it reaches the SFU's socket callback (keyed by its
    cleartext SSRC and sequence number) and measures when `Consumer.forward` has sent it on."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.recording = False
        self._new: dict[bytes, float] = {}
        self._old: dict[bytes, float] = {}
        self._rotation: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._rotate()

    def _rotate(self) -> None:
        # Stamps of packets that were never forwarded (RTX, dropped) age out in two rounds.
        self._old, self._new = self._new, {}
        self._rotation = asyncio.get_running_loop().call_later(1.0, self._rotate)

    def stop(self) -> None:
        if self._rotation is not None:
            self._rotation.cancel()
            self._rotation = None

    def install(self, transport: Transport) -> None:
        generation = transport.ice.current
        if generation is not None:
            for protocol in generation.connection._protocols:
                self._hook_socket(protocol)
        for consumer in transport.consumers.values():
            self._hook_consumer(consumer)

    def _hook_socket(self, protocol: Any) -> None:
        # The SFU's socket reader (sfu.internals.DatagramSocket) hands media to a handler.
        reader = protocol.transport
        received = reader._handler
        stamps = self

        def handler(data: bytes, arrival: float, source: Any) -> None:
            # RTP, not RTCP (RFC 5761 demultiplexing on the second byte)
            if len(data) >= 12 and 127 < data[0] < 192 and not 191 < data[1] < 224:
                stamps._new[data[2:4] + data[8:12]] = time.perf_counter()
            received(data, arrival, source)

        reader._handler = handler

    def _hook_consumer(self, consumer: Consumer) -> None:
        forward = consumer.forward

        def timed_forward(data: bytes, start: int, end: int, now: float) -> None:
            key = data[2:4] + data[8:12]
            before = consumer.packets
            forward(data, start, end, now)
            stamp = self._new.pop(key, None)
            if stamp is None:
                stamp = self._old.pop(key, None)
            if stamp is not None and self.recording and consumer.packets != before:
                self.samples.append(time.perf_counter() - stamp)

        consumer.forward = timed_forward  # type: ignore[method-assign]

    def percentile_ms(self, fraction: float) -> float | None:
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
        return ordered[index] * 1000


# ---- the hosts: the SFU, and the decode/re-encode baseline ----


def _codec_preferences(kind: str) -> list[Any]:
    """Opus, or VP8 with RTX: what the SFU's rooms negotiate by default."""
    wanted = {"audio/opus"} if kind == "audio" else {"video/vp8", "video/rtx"}
    return [c for c in RTCRtpSender.getCapabilities(kind).codecs
            if c.mimeType.lower() in wanted]


class Host(Protocol):
    ws_url: str

    async def start(self) -> None: ...

    def create_room(self, room_id: str) -> None: ...

    def counters(self) -> dict[str, int]: ...

    async def close(self) -> None: ...


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    return runner, port


class SfuHost:
    """The project's SFU behind its join endpoint, with optional latency hooks."""

    def __init__(self, secret: bytes, *, latency: bool) -> None:
        self.clock = SystemClock()
        self.server = SfuServer(SfuConfig(net=LOOPBACK, connect_timeout=60), self.clock)
        self.secret = secret
        self.probe = LatencyProbe() if latency else None
        self.ws_url = ""
        self._runner: web.AppRunner | None = None
        self.server.subscribe(self._on_event)

    async def start(self) -> None:
        app = web.Application()
        app.add_routes(sfu_routes(self.server, self.secret, self.clock))
        self._runner, port = await _serve(app)
        self.ws_url = f"ws://127.0.0.1:{port}/sfu/ws"
        if self.probe is not None:
            self.probe.start()

    def create_room(self, room_id: str) -> None:
        self.server.create_room(room_id)

    def _on_event(self, event: SfuEvent) -> None:
        if self.probe is None or not isinstance(event, ParticipantConnected):
            return
        router = self.server.rooms.get(event.room_id)
        transport = router.transports.get(event.user_id) if router is not None else None
        if transport is not None:
            self.probe.install(transport)

    def counters(self) -> dict[str, int]:
        totals = dict.fromkeys(
            ("forwarded", "forwarded_bytes", "received", "received_bytes", "keyframe_requests",
             "subscriber_keyframe_requests", "nacks_sent", "retransmitted", "rtx_received",
             "dropped", "transports"), 0)
        for router in self.server.rooms.values():
            for transport in router.transports.values():
                totals["transports"] += 1
                for producer in transport.producers.values():
                    totals["received"] += producer.packets
                    totals["received_bytes"] += producer.octets
                    totals["keyframe_requests"] += producer.keyframe_requests
                    totals["nacks_sent"] += producer.nacks_sent
                    totals["rtx_received"] += producer.rtx_received
                for consumer in transport.consumers.values():
                    totals["forwarded"] += consumer.packets
                    totals["forwarded_bytes"] += consumer.octets
                    totals["subscriber_keyframe_requests"] += consumer.keyframe_requests
                    totals["retransmitted"] += consumer.retransmitted
                    totals["dropped"] += consumer.dropped
        return totals

    async def close(self) -> None:
        if self.probe is not None:
            self.probe.stop()
        await self.server.close()
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class _Participant:
    user_id: str
    pc: RTCPeerConnection | None = None
    senders: dict[str, RTCRtpSender] = field(default_factory=dict)
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)


class BaselineHost:
    """aiortc as shipped: one RTCPeerConnection per participant answering its offer; each
    participant's incoming tracks go to the partner through `MediaRelay` (decode, re-encode)."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.clock = SystemClock()
        self.relay = MediaRelay()
        self.rooms: dict[str, dict[str, _Participant]] = {}
        self.ws_url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.get("/baseline/ws", self._socket)])
        self._runner, port = await _serve(app)
        self.ws_url = f"ws://127.0.0.1:{port}/baseline/ws"

    def create_room(self, room_id: str) -> None:
        self.rooms[room_id] = {}

    def counters(self) -> dict[str, int]:
        return {"transports": sum(len(room) for room in self.rooms.values())}

    def _feed(self, participant: _Participant, track: MediaStreamTrack) -> None:
        sender = participant.senders.get(track.kind)
        if sender is not None:
            sender.replaceTrack(self.relay.subscribe(track, buffered=False))

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024)
        await ws.prepare(request)
        room: dict[str, _Participant] | None = None
        me: _Participant | None = None
        try:
            first = await ws.receive_json(timeout=10)
            if not isinstance(first, dict) or first.get("type") != "join":
                raise ValueError("expected a join message")
            grant = verify_join_token(self.secret, str(first.get("token")), self.clock)
            room = self.rooms.get(grant.room_id)
            if room is None or grant.user_id in room:
                await ws.send_json({"type": "error", "code": "not_found", "message": "no room"})
                return ws
            me = room[grant.user_id] = _Participant(grant.user_id)
            await ws.send_json({"type": "joined", "roomId": grant.room_id,
                                "userId": grant.user_id})
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                message = json.loads(msg.data)
                if message.get("type") == "offer" and me.pc is None:
                    answer = await self._answer(room, me, str(message["sdp"]))
                    await ws.send_json({"type": "answer", "sdp": answer})
                elif message.get("type") == "leave":
                    break
        except (NapalmError, ValueError, TimeoutError) as exc:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json({"type": "error", "code": "invalid_argument",
                                    "message": str(exc)[:200]})
        finally:
            if room is not None and me is not None and room.get(me.user_id) is me:
                del room[me.user_id]
            if me is not None and me.pc is not None:
                await me.pc.close()
            await ws.close()
        return ws

    async def _answer(self, room: dict[str, _Participant], me: _Participant, sdp: str) -> str:
        pc = me.pc = RTCPeerConnection(RTCConfiguration(
            iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            me.tracks[track.kind] = track
            for other in room.values():
                if other is not me:
                    self._feed(other, track)

        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        for transceiver in pc.getTransceivers():
            transceiver.direction = "sendrecv"
            transceiver.setCodecPreferences(_codec_preferences(transceiver.kind))
            me.senders[transceiver.kind] = transceiver.sender
        bind_peer_connection(pc)
        for other in room.values():
            if other is not me:
                for track in other.tracks.values():
                    self._feed(me, track)
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    async def close(self) -> None:
        for room in self.rooms.values():
            for participant in list(room.values()):
                if participant.pc is not None:
                    await participant.pc.close()
        self.rooms.clear()
        if self._runner is not None:
            await self._runner.cleanup()


# ---- bot workers: separate processes, driven over stdin/stdout with JSON lines ----


@dataclass
class WorkerStatus:
    counts: dict[str, KindCounts]
    states: dict[str, int]
    ready: int
    late: int
    cpu: float
    errors: list[str]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerStatus:
        return cls(
            counts={k: KindCounts.from_json(data["counts"][k]) for k in KINDS},
            states={str(k): int(v) for k, v in data["states"].items()},
            ready=int(data["ready"]), late=int(data["late"]), cpu=float(data["cpu"]),
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

    async def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        await self.proc.stdin.drain()

    async def request(self, command: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with self._lock:
            await self._send({"command": command})
            line = await asyncio.wait_for(self.proc.stdout.readline(), COMMAND_TIMEOUT)
        if not line:
            raise RuntimeError(f"bot worker exited (code {self.proc.returncode})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def status(self) -> WorkerStatus:
        return WorkerStatus.from_json(await self.request("status"))

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
    bots = [CountingBot(b["url"], b["token"], video, audio, start=int(b["start"]))
            for b in job["bots"]]
    errors: list[str] = []
    limit = asyncio.Semaphore(int(job.get("join_concurrency", 4)))

    async def join(bot: CountingBot) -> None:
        async with limit:
            try:
                await bot.join(wait=float(job.get("join_timeout", 30)))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    joins = [asyncio.ensure_future(join(bot)) for bot in bots]
    try:
        async with asyncio.timeout(float(job["deadline"])):
            while (message := await queue.get()) is not None:
                if message.get("command") == "stop":
                    break
                _reply(_worker_status(bots, errors))
    except TimeoutError:
        log.warning("bot worker reached its deadline")
    finally:
        for task in joins:
            task.cancel()
        await asyncio.gather(*joins, return_exceptions=True)
        await asyncio.gather(*(asyncio.wait_for(b.close(), 10) for b in bots),
                             return_exceptions=True)
        _reply({"stopped": True})
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


def _worker_status(bots: list[CountingBot], errors: list[str]) -> dict[str, Any]:
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
            "ready": ready, "late": sum(b.late for b in bots), "cpu": time.process_time(),
            "errors": errors[-5:]}


# ---- the benchmark ----


@dataclass
class _Snapshot:
    at: float
    cpu: tuple[float, float]
    host: dict[str, int]
    workers: list[WorkerStatus]

    @classmethod
    async def take(cls, host: Host, workers: list[Worker]) -> _Snapshot:
        statuses = await asyncio.gather(*(w.status() for w in workers))
        return cls(time.monotonic(), _cpu_seconds(), host.counters(), list(statuses))

    def bot_counts(self) -> dict[str, KindCounts]:
        total: dict[str, KindCounts] = {kind: KindCounts() for kind in KINDS}
        for status in self.workers:
            for kind in KINDS:
                total[kind].add(status.counts[kind])
        return total


def _pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 3) if whole > 0 else 0.0


def _report(mode: Mode, calls: int, begin: _Snapshot, end: _Snapshot,
            probe: LatencyProbe | None) -> dict[str, Any]:
    window = end.at - begin.at
    user, system = end.cpu[0] - begin.cpu[0], end.cpu[1] - begin.cpu[1]
    cpu = user + system
    before, after = begin.bot_counts(), end.bot_counts()
    bots = {kind: after[kind].minus(before[kind]) for kind in KINDS}
    sent = sum(c.sent for c in bots.values())
    received = sum(c.received for c in bots.values())
    expected = sum(c.expected for c in bots.values())
    host = {k: end.host.get(k, 0) - begin.host.get(k, 0) for k in end.host}
    forwarded = host["forwarded"] if mode == "sfu" else received
    forwarded_bytes = host["forwarded_bytes"] if mode == "sfu" else sum(
        c.received_bytes for c in bots.values())
    per_call_second = cpu / (calls * window)
    delivery_loss = _pct(max(0, sent - received), sent)
    gap_loss = _pct(max(0, expected - received), expected)
    report: dict[str, Any] = {
        "mode": mode,
        "calls": calls,
        "seconds": round(window, 3),
        "event_loop": "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__
        else "asyncio",
        "forwarded_packets": forwarded,
        "forwarded_pps": round(forwarded / window, 1),
        "forwarded_mbps": round(forwarded_bytes * 8 / window / 1e6, 3),
        "cpu_seconds": round(cpu, 3),
        "cpu_user_seconds": round(user, 3),
        "cpu_system_seconds": round(system, 3),
        "cpu_pct_of_one_core": round(100 * cpu / window, 1),
        "cpu_us_per_forwarded_packet": round(cpu / forwarded * 1e6, 2) if forwarded else None,
        "sfu_cpu_seconds_per_call_second": round(per_call_second, 5),
        "calls_per_core": round(1 / per_call_second, 1) if per_call_second > 0 else None,
        "latency_ms_p50": None,
        "latency_ms_p99": None,
        "latency_samples": 0,
        "loss_pct": delivery_loss if mode == "sfu" else gap_loss,
        "loss_basis": "sent_vs_received" if mode == "sfu" else "sequence_gaps",
        "gap_loss_pct": gap_loss,
        "bot_packets_sent": sent,
        "bot_packets_received": received,
        "bot_pps_received": {k: round(bots[k].received / window, 1) for k in KINDS},
        "bot_rtx_received": sum(c.rtx_received for c in bots.values()),
        "bot_worker_cpu_pct": [round(100 * (e.cpu - b.cpu) / window, 1)
                               for b, e in zip(begin.workers, end.workers, strict=True)],
        "bot_late_restarts": sum(e.late - b.late for b, e in
                                 zip(begin.workers, end.workers, strict=True)),
    }
    if mode == "sfu":
        report.update({
            "keyframe_requests": host["keyframe_requests"],
            "subscriber_keyframe_requests": host["subscriber_keyframe_requests"],
            "nacks_sent": host["nacks_sent"],
            "retransmitted": host["retransmitted"],
            "dropped": host["dropped"],
            "sfu_packets_received": host["received"],
        })
    if probe is not None:
        report["latency_ms_p50"] = _round(probe.percentile_ms(0.50))
        report["latency_ms_p99"] = _round(probe.percentile_ms(0.99))
        report["latency_samples"] = len(probe.samples)
    return report


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def run_benchmark(
    calls: int, seconds: float, *, mode: Mode = "sfu", workers: int = 2, latency: bool = True,
    setup_timeout: float | None = None, progress: Callable[[str], None] | None = None,
    profile: str | None = None,
) -> dict[str, Any]:
    """Run `calls` 1:1 calls of bots through the SFU (or the baseline), measure `seconds`,
    and return the report. Everything stops by itself within a hard deadline.

    With `profile`, cProfile records this process's main thread during the measured window
    only and writes its statistics to that path (`python -m pstats PATH`). Its times are wall
    times: a `sendto` on loopback also runs the receiver's side in the kernel and may yield
    the core to the woken bot process, so socket sends look dearer than their CPU cost."""
    if calls < 1 or seconds <= 0:
        raise ValueError("need at least one call and a positive duration")
    say = progress or (lambda _message: None)
    setup_timeout = setup_timeout if setup_timeout is not None else 30.0 + 2.0 * calls
    deadline = setup_timeout + SETTLE + seconds + 20.0
    secret = os.urandom(32)
    clock = SystemClock()
    host: SfuHost | BaselineHost = (
        SfuHost(secret, latency=latency) if mode == "sfu" else BaselineHost(secret))
    # Encode (or load) the clips once here, so the workers only read the cache.
    await asyncio.get_running_loop().run_in_executor(None, lambda: (video_clip(), audio_clip()))
    started: list[Worker] = []
    await host.start()
    try:
        async with asyncio.timeout(deadline):
            count = max(1, min(workers, 2 * calls))
            rng = random.Random(7)
            jobs: list[list[dict[str, Any]]] = [[] for _ in range(count)]
            for i in range(calls):
                room = f"call-{i}"
                host.create_room(room)
                for j, user in enumerate(("a", "b")):
                    token = mint_join_token(secret, room, f"{room}-{user}", clock, ttl=3600)
                    jobs[(2 * i + j) % count].append(
                        {"url": host.ws_url, "token": token, "start": rng.randrange(1000)})
            for bots in jobs:
                started.append(await Worker.start(
                    {"bots": bots, "deadline": deadline, "join_timeout": setup_timeout}))
            say(f"{mode}: {calls} calls, {2 * calls} bots in {count} worker processes")
            await _wait_ready(host, started, 2 * calls, setup_timeout, say)
            await asyncio.sleep(SETTLE)
            probe = host.probe if isinstance(host, SfuHost) else None
            begin = await _Snapshot.take(host, started)
            if probe is not None:
                probe.recording = True
            profiler = cProfile.Profile() if profile else None
            say(f"{mode}: measuring for {seconds:g} s")
            if profiler is not None:
                profiler.enable()
            await asyncio.sleep(seconds)
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(str(profile))
            end = await _Snapshot.take(host, started)
            if probe is not None:
                probe.recording = False
            return _report(mode, calls, begin, end, probe)
    finally:
        await asyncio.gather(*(w.stop() for w in started), return_exceptions=True)
        await host.close()


async def _wait_ready(host: Host, workers: list[Worker], bots: int, limit: float,
                      say: Callable[[str], None]) -> None:
    give_up = time.monotonic() + limit
    told = time.monotonic()
    while True:
        statuses = await asyncio.gather(*(w.status() for w in workers))
        ready = sum(s.ready for s in statuses)
        if ready == bots:
            return
        if time.monotonic() - told >= 5:
            told = time.monotonic()
            say(f"{ready} of {bots} bots receiving audio and video")
        if time.monotonic() > give_up:
            states: dict[str, int] = {}
            for s in statuses:
                for k, v in s.states.items():
                    states[k] = states.get(k, 0) + v
            errors = [e for s in statuses for e in s.errors]
            raise TimeoutError(
                f"only {ready} of {bots} bots receiving after {limit:g} s; bot states "
                f"{states}; host {host.counters()}; errors {errors[:3]}")
        await asyncio.sleep(0.5)


# ---- command line ----


def _format(report: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        return "-" if value is None else str(value)

    lines = [
        f"== {report['mode']}: {report['calls']} calls, {report['seconds']} s measured, "
        f"{report['event_loop']} ==",
        f"forwarded           {report['forwarded_pps']} packets/s, "
        f"{report['forwarded_mbps']} Mbit/s",
        f"CPU (this process)  {report['cpu_seconds']} s "
        f"(user {report['cpu_user_seconds']}, system {report['cpu_system_seconds']}), "
        f"{report['cpu_pct_of_one_core']}% of a core",
        f"CPU per packet      {fmt(report['cpu_us_per_forwarded_packet'])} us",
        f"CPU per call        {report['sfu_cpu_seconds_per_call_second']} s per call-second "
        f"-> {fmt(report['calls_per_core'])} calls per core",
        f"latency (in host)   p50 {fmt(report['latency_ms_p50'])} ms, "
        f"p99 {fmt(report['latency_ms_p99'])} ms ({report['latency_samples']} samples)",
        f"loss                {report['loss_pct']}% ({report['loss_basis']}); "
        f"sequence gaps {report['gap_loss_pct']}%",
        f"bots                sent {report['bot_packets_sent']}, received "
        f"{report['bot_packets_received']}, worker CPU {report['bot_worker_cpu_pct']}%, "
        f"late restarts {report['bot_late_restarts']}",
    ]
    if report["mode"] == "sfu":
        lines.append(
            f"feedback            keyframe requests {report['keyframe_requests']}, "
            f"NACKs sent {report['nacks_sent']}, retransmitted {report['retransmitted']}, "
            f"dropped {report['dropped']}")
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    result = await run_benchmark(args.calls, args.seconds, workers=args.workers,
                                 latency=not args.no_latency, progress=say,
                                 profile=args.profile)
    if args.baseline:
        baseline = await run_benchmark(args.baseline_calls, args.seconds, mode="baseline",
                                       workers=args.workers, progress=say)
        result["baseline"] = baseline
        sfu_cost = result["sfu_cpu_seconds_per_call_second"]
        base_cost = baseline["sfu_cpu_seconds_per_call_second"]
        result["baseline_cpu_per_call_ratio"] = (
            round(base_cost / sfu_cost, 2) if sfu_cost > 0 else None)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sfu_forwarding",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=5, help="1:1 calls through the SFU")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument("--workers", type=int, default=2, help="bot processes")
    parser.add_argument("--baseline", action="store_true",
                        help="also measure aiortc's decode/re-encode relay")
    parser.add_argument("--baseline-calls", type=int, default=1)
    parser.add_argument("--no-latency", action="store_true",
                        help="leave the latency hooks out (their cost is in the CPU figures)")
    parser.add_argument("--profile", metavar="PATH",
                        help="cProfile the SFU's measured window into PATH (inflates its CPU)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # The baseline's decoders complain about delta frames until their first keyframe arrives.
    logging.getLogger("aiortc.rtcrtpreceiver").setLevel(logging.ERROR)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        if args.worker:
            runner.run(worker_main())
            return 0
        try:
            result = runner.run(_main(args))
        except (TimeoutError, RuntimeError, ValueError) as exc:
            print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    readable = _format(result)
    if "baseline" in result:
        readable += "\n" + _format(result["baseline"])
        readable += (f"\nbaseline / SFU CPU per call: {result['baseline_cpu_per_call_ratio']}x")
    if args.json:
        print(readable, file=sys.stderr)
        print(json.dumps(result))
    else:
        print(readable)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["BaselineHost", "LatencyProbe", "SfuHost", "main", "run_benchmark"]
