"""One load-test user, doing what a person does with the web client, over the public protocol.

Guest sign-up (`POST /api/v1/auth/guest`), the client config, `/ws` with the auth frame,
presence heartbeats, the deck, then calls: a caller (even index) picks a callee of this run from
the deck and invites; a callee (odd index) accepts, declines or lets invites expire in the
scenario's shares. Both join the SFU named in `call:start` with its token (one sendrecv aiortc
peer connection publishing pre-encoded media, counting what arrives without decoding), chat,
and the caller hangs up after `call_seconds`; then both read their call history. Users of the
`idle` scenario only stay connected and heartbeat.

Every failure is counted by its code in `Measurements` and the user carries on (or, when it
cannot sign up, stops): a target that fails mid-run shows up in the report, never as a
traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from loadtest.counting import KINDS, CountingBot, JoinRefused, StreamStats
from loadtest.measure import Measurements
from loadtest.media import EncodedClip
from loadtest.scenario import Scenario
from loadtest.wire import (
    PREFIX,
    Rest,
    Signaling,
    WireError,
    connect_with_backoff,
    sign_up_guest,
)

log = logging.getLogger(__name__)

Role = Literal["caller", "callee"]
JOIN_TIMEOUT = 20.0
FIRST_MEDIA_TIMEOUT = 15.0
END_GRACE = 20.0  # seconds to wait for `call:ended` after hanging up


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """`GET /api/v1/config`: call bounds, for booking calls the node accepts."""

    call_min_seconds: int = 30
    call_max_seconds: int = 1800
    invite_seconds: int = 30

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClientConfig:
        return cls(int(data.get("callMinSeconds", 30)), int(data.get("callMaxSeconds", 1800)),
                   int(data.get("inviteSeconds", 30)))

    def booked_seconds(self, call_seconds: float) -> int:
        """What a caller books: at least the node's minimum (the caller hangs up earlier)."""
        return max(self.call_min_seconds, min(self.call_max_seconds, int(call_seconds + 0.999)))


def user_name(run_id: str, index: int) -> str:
    return f"lt-{run_id}-{index}"


def parse_user_name(name: str, run_id: str) -> int | None:
    prefix = f"lt-{run_id}-"
    if name.startswith(prefix) and name[len(prefix):].isdigit():
        return int(name[len(prefix):])
    return None


def track_json(stream: StreamStats | None) -> dict[str, Any]:
    if stream is None:
        return {"packets": 0, "fps": 0.0, "kbps": 0.0, "loss_pct": 0.0, "jitter_ms": 0.0}
    return {"packets": stream.packets, "fps": round(stream.fps, 2),
            "kbps": round(stream.kbps, 1), "loss_pct": round(stream.loss_pct, 3),
            "jitter_ms": round(stream.jitter_ms, 3)}


class LoadUser:
    def __init__(self, index: int, run_id: str, scenario: Scenario, base: str,
                 session: aiohttp.ClientSession, m: Measurements, clips: tuple[EncodedClip,
                 EncodedClip], config: ClientConfig, stop: asyncio.Event) -> None:
        self.index = index
        self.run_id = run_id
        self.scenario = scenario
        self.base = base
        self.session = session
        self.m = m
        self.video, self.audio = clips
        self.config = config
        self.stop = stop
        self.rest = Rest(session, base, m)
        self.role: Role = "caller" if index % 2 == 0 else "callee"
        self.name = user_name(run_id, index)
        self.token = ""
        self.user_id = ""
        self.sig: Signaling | None = None
        self.state = "new"  # new, signing_up, online, in_call, done, failed
        self.rng = random.Random(f"{run_id}-{index}")
        self._met: set[str] = set()

    # ---- the life of a user ----

    async def run(self) -> None:
        heartbeat: asyncio.Task[None] | None = None
        try:
            if not await self._sign_up() or not await self._connect():
                self.state = "failed"
                return
            self.state = "online"
            heartbeat = asyncio.ensure_future(self._heartbeat())
            await self._deck()
            if self.scenario.mode == "idle":
                await self._browse()
            elif self.role == "caller":
                await self._caller()
            else:
                await self._callee()
        except Exception as exc:  # a bot must never take its process down
            log.debug("user %s failed", self.name, exc_info=True)
            self.m.error("bot_error", "user", f"{type(exc).__name__}: {exc}")
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)
            if self.sig is not None:
                await self.sig.close()
            if self.state != "failed":
                self.state = "done"

    async def _sign_up(self) -> bool:
        self.state = "signing_up"
        started = time.perf_counter()
        try:
            auth, solved = await sign_up_guest(self.rest, self.name, "unspecified")
        except WireError as exc:
            self.m.count("signup_failed")
            self.m.error(exc.code, "POST /api/v1/auth/guest", exc.message)
            return False
        self.m.latency("signup", 1000 * (time.perf_counter() - started))
        self.m.count("signup_ok")
        if solved:
            self.m.count("signup_challenges", solved)
        self.token, self.user_id = auth["token"], auth["user"]["id"]
        with contextlib.suppress(WireError):  # the web client reads the call bounds too
            await self.rest.call("GET", f"{PREFIX}/config", token=self.token)
        return True

    async def _connect(self) -> bool:
        """Open `/ws` (again, after a drop), with backoff, until it works or the run stops."""
        def failed(error: WireError, delay: float) -> None:
            self.m.count("ws_connect_failed")
            self.m.error(error.code, "/ws connect", error.message)

        self.sig = await connect_with_backoff(self.session, self.base, self.token, self.m,
                                              self.stop, previous=self.sig, on_error=failed)
        if self.sig is not None:
            self.m.count("ws_connect_ok")
        return self.sig is not None

    async def _online(self) -> Signaling | None:
        """The signaling socket, reconnected if it dropped (the drop counted by close code)."""
        sig = self.sig
        if sig is not None and not sig.closed.is_set():
            return sig
        if sig is not None:
            self.m.error(f"ws_closed_{sig.close_code or 1006}", "/ws")
        return self.sig if await self._connect() else None

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.scenario.heartbeat_s * self.rng.uniform(0.9, 1.1))
            sig = self.sig
            if sig is None or sig.closed.is_set():
                continue
            try:
                await sig.request("presence:heartbeat")
            except WireError as exc:
                self.m.error(exc.code, "presence:heartbeat", exc.message)

    async def _deck(self) -> list[dict[str, Any]]:
        try:
            page = await self.rest.call("GET", f"{PREFIX}/deck", path=f"{PREFIX}/deck?limit=50",
                                        token=self.token)
        except WireError as exc:
            self.m.error(exc.code, "GET /api/v1/deck", exc.message)
            return []
        people: list[dict[str, Any]] = page.get("people", [])
        return people

    async def _browse(self) -> None:
        """Idle: stay connected; with --browse, read what the web client's screens read
        (deck, my profile, my call history) every `browse_s` seconds, from a random phase."""
        every = self.scenario.browse_s
        if every <= 0:
            await self.stop.wait()
            return
        await self._sleep(self.rng.uniform(0, every))
        while not self.stop.is_set():
            await self._deck()
            for route in (f"{PREFIX}/me", f"{PREFIX}/me/calls"):
                try:
                    await self.rest.call("GET", route, token=self.token)
                except WireError as exc:
                    self.m.error(exc.code, f"GET {route}", exc.message)
            # Jittered, as people are: fixed intervals would keep in step the users that one
            # slow moment bunched together, and measure the bunching instead of the node.
            await self._sleep(every * self.rng.uniform(0.5, 1.5))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), max(0.0, seconds))

    async def _event(self, within: float) -> dict[str, Any] | None:
        """The next server event; None after `within` seconds, when the run stops or /ws drops."""
        sig = self.sig
        if sig is None:
            return None
        end = time.monotonic() + max(0.0, within)
        while not self.stop.is_set() and not sig.closed.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(sig.events.get(), min(left, 0.5))
        return sig.events.get_nowait() if not sig.events.empty() else None

    # ---- calling ----

    async def _caller(self) -> None:
        while not self.stop.is_set():
            sig = await self._online()
            if sig is None:
                return
            # The deck already leaves out whom this caller may not meet again (the node's
            # cooldown); among the rest, someone not met yet comes first.
            callees = [p for p in await self._deck()
                       if (i := parse_user_name(str(p.get("name", "")), self.run_id))
                       is not None and i % 2 == 1]
            people = [p for p in callees if p["id"] not in self._met] or callees
            if not people:
                self.m.count("deck_empty")
                await self._sleep(max(1.0, self.scenario.think_seconds))
                continue
            partner = self.rng.choice(people)["id"]
            started = time.perf_counter()
            try:
                ack = await sig.request("call:invite", {
                    "to": partner, "seconds": self.config.booked_seconds(
                        self.scenario.call_seconds)})
            except WireError as exc:
                # busy, or taken by another caller between the deck and the invite: a race
                # every dating app has; counted, and the caller tries someone else
                self.m.error(exc.code, "call:invite", exc.message)
                await self._sleep(0.5 + self.rng.random())
                continue
            self.m.count("invites_sent")
            invite_id = ack.get("inviteId")
            start = await self._invite_outcome(str(invite_id), partner)
            if start is not None:
                self._met.add(partner)
                self.m.latency("invite_to_call_start", 1000 * (time.perf_counter() - started))
                await self._call(start, invite_ms=1000 * (time.perf_counter() - started))
            await self._sleep(self.scenario.think_seconds)

    async def _invite_outcome(self, invite_id: str, partner: str) -> dict[str, Any] | None:
        """`call:start` data, or None after a decline, an expiry or the run's end."""
        limit = self.config.invite_seconds + 10
        end = time.monotonic() + limit
        while (left := end - time.monotonic()) > 0:
            event = await self._event(left)
            if event is None:
                break
            kind, data = event.get("type"), event.get("data", {})
            if kind == "call:start" and data.get("partner", {}).get("id") == partner:
                return dict(data)
            if data.get("inviteId") == invite_id and kind in ("call:declined", "call:expired",
                                                              "call:cancelled"):
                self.m.count("invites_" + kind.split(":")[1])
                return None
        if self.stop.is_set() and self.sig is not None and not self.sig.closed.is_set():
            with contextlib.suppress(WireError):
                await self.sig.request("call:cancel", {"inviteId": invite_id}, wait=5)
            return None
        self.m.error("timeout", "call:invite outcome", "no call:start, decline or expiry")
        return None

    async def _callee(self) -> None:
        while not self.stop.is_set():
            if await self._online() is None:
                return
            event = await self._event(1.0)
            if event is None:
                continue
            kind, data = event.get("type"), event.get("data", {})
            if kind == "call:invite":
                await self._answer(str(data.get("inviteId")))
            elif kind == "call:start":
                await self._call(dict(data), invite_ms=None)

    async def _answer(self, invite_id: str) -> None:
        assert self.sig is not None
        draw = self.rng.random()
        if draw < self.scenario.decline_share:
            action = "call:decline"
        elif draw < self.scenario.decline_share + self.scenario.expire_share:
            self.m.count("invites_left_to_expire")
            return
        else:
            action = "call:accept"
        try:
            await self.sig.request(action, {"inviteId": invite_id})
            self.m.count("invites_accepted" if action == "call:accept" else "invites_declined_sent")
        except WireError as exc:
            self.m.error(exc.code, action, exc.message)

    async def _call(self, start: dict[str, Any], invite_ms: float | None) -> None:
        """One call, from `call:start` to `call:ended`: media, chat, hang-up, history."""
        t_start = time.monotonic()
        self.state = "in_call"
        self.m.count("calls_started")
        room_id = str(start.get("roomId"))
        sfu = start.get("sfu", {})
        record: dict[str, Any] = {
            "room_id": room_id, "role": self.role, "user": self.index,
            "t_start_s": round(self.m.now(), 3), "invite_to_call_start_ms":
            None if invite_ms is None else round(invite_ms, 3),
            "call_start_to_ice_connected_ms": None, "call_start_to_first_keyframe_ms": None,
            "ice_connected": False, "chat_sent": 0, "chat_received": 0, "ended_reason": None,
        }
        media = CountingBot(str(sfu.get("url")), str(sfu.get("token")), self.video, self.audio,
                            start=self.rng.randrange(len(self.video.frames)), room_id=room_id,
                            ice_servers=start.get("iceServers") or ())
        watcher: asyncio.Task[None] | None = None
        connected = False
        try:
            try:
                await media.join(wait=JOIN_TIMEOUT)
            except JoinRefused as exc:
                self.m.error(exc.code, "/sfu/ws join", str(exc))
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                self.m.error("sfu_join_timeout" if isinstance(exc, TimeoutError)
                             else "sfu_unreachable", "/sfu/ws join", str(exc))
            else:
                watcher = asyncio.ensure_future(self._watch_media(media, t_start, record))
            ended = await self._in_call(room_id, t_start, record)
            record["ended_reason"] = ended
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            connected = bool(record["ice_connected"])
            if connected:
                self.m.call_edges.append((round(self.m.now(), 3), -1))
            self._media_stats(media, record)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(media.close(), 10)
            record["duration_s"] = round(time.monotonic() - t_start, 3)
            record["cut_by_run_end"] = self.stop.is_set()  # hung up because the run ended
            self.m.calls.append(record)
            self.state = "online"
        if not self.stop.is_set():
            try:  # what the web client shows after a call
                await self.rest.call("GET", f"{PREFIX}/me/calls", token=self.token)
            except WireError as exc:
                self.m.error(exc.code, "GET /api/v1/me/calls", exc.message)

    async def _watch_media(self, media: CountingBot, t_start: float,
                           record: dict[str, Any]) -> None:
        """Record ICE connected and the first complete keyframe, relative to `call:start`."""
        deadline = t_start + JOIN_TIMEOUT + FIRST_MEDIA_TIMEOUT
        while time.monotonic() < deadline:
            if media.ice_connected_at is not None and not record["ice_connected"]:
                ms = 1000 * (media.ice_connected_at - t_start)
                record["ice_connected"] = True
                record["call_start_to_ice_connected_ms"] = round(ms, 3)
                self.m.latency("call_start_to_ice_connected", ms)
                self.m.call_edges.append((round(self.m.now(), 3), 1))
                self.m.count("calls_ice_connected")
            key_at = media.counter.first_keyframe_at()
            if key_at is not None:
                ms = 1000 * (key_at - t_start)
                record["call_start_to_first_keyframe_ms"] = round(ms, 3)
                self.m.latency("call_start_to_first_keyframe", ms)
                self.m.count("calls_keyframe_received")
                return
            if media.state == "failed":
                self.m.error("ice_failed", "/sfu/ws media")
                return
            await asyncio.sleep(0.05)
        self.m.error("no_keyframe" if record["ice_connected"] else "ice_timeout",
                     "/sfu/ws media", "within the call's first seconds")

    async def _in_call(self, room_id: str, t_start: float, record: dict[str, Any]) -> str:
        """Chat, hang up (the caller, after `call_seconds`), and wait for `call:ended`."""
        scenario = self.scenario
        chats = [t_start + (i + 1) * scenario.call_seconds / (scenario.chat_per_call + 1)
                 for i in range(scenario.chat_per_call)]
        hang_up_at = t_start + scenario.call_seconds if self.role == "caller" else None
        hard_end = t_start + self.config.booked_seconds(scenario.call_seconds) + END_GRACE
        left = False
        while True:
            sig = self.sig
            now = time.monotonic()
            if sig is None or sig.closed.is_set():
                self.m.error(f"ws_closed_{sig.close_code if sig else 1006}", "/ws in call")
                return "socket_lost"
            if chats and now >= chats[0]:
                chats.pop(0)
                try:
                    await sig.request("room:message", {
                        "roomId": room_id, "text": f"hello {record['chat_sent'] + 1} from "
                        f"{self.name}"})
                    record["chat_sent"] += 1
                except WireError as exc:
                    self.m.error(exc.code, "room:message", exc.message)
                continue
            if not left and (self.stop.is_set() or (hang_up_at is not None and now >= hang_up_at)):
                left = True
                hard_end = min(hard_end, now + END_GRACE)
                try:
                    await sig.request("room:leave", {"roomId": room_id})
                except WireError as exc:
                    self.m.error(exc.code, "room:leave", exc.message)
                continue
            if now >= hard_end:
                self.m.error("timeout", "call:ended", "no call:ended in time")
                return "timeout"
            wake = min([hard_end, *chats[:1], *([hang_up_at] if hang_up_at and not left
                                                else [])])
            if self.stop.is_set() and not left:
                wake = now
            try:
                event = await asyncio.wait_for(sig.events.get(), max(0.0, min(wake - now, 0.5)))
            except TimeoutError:
                continue
            kind, data = event.get("type"), event.get("data", {})
            if kind == "call:ended" and data.get("roomId") == room_id:
                self.m.count(f"calls_ended_{data.get('reason', 'unknown')}")
                return str(data.get("reason", "unknown"))
            if kind == "room:message" and data.get("roomId") == room_id and \
                    data.get("from") != self.user_id:
                record["chat_received"] += 1
                self.m.count("chat_received")
            elif kind == "call:invite":  # a second invite while busy: not for now
                with contextlib.suppress(WireError):
                    await sig.request("call:decline", {"inviteId": data.get("inviteId")})

    def _media_stats(self, media: CountingBot, record: dict[str, Any]) -> None:
        streams = media.counter.streams()
        tracks: dict[str, Any] = {}
        received: dict[str, bool] = {}
        for kind in KINDS:
            mine = [s for s in streams if s.kind == kind]
            best = max(mine, key=lambda s: s.packets) if mine else None
            tracks[kind] = track_json(best)
            received[kind] = best is not None and best.packets > 0
        record["tracks"] = tracks
        record["media_received"] = received
        sent = media.counter.snapshot()
        record["sent_packets"] = {kind: sent[kind].sent for kind in KINDS}
        rtts = sorted(media.counter.rtt_ms)
        record["rtt_ms"] = round(rtts[len(rtts) // 2], 3) if rtts else None
        record["late_media"] = media.late
        if all(received.values()):
            self.m.count("calls_media_both_ways")
