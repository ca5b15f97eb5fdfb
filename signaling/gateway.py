"""`GET /ws`: the signaling WebSocket (docs/protocol.md).

The first frame must be `{"type": "auth", "data": {"token": ...}}` within a few seconds. Then
the server sends `state` (presence, pending invites, the call in progress with a fresh SFU join
token), and the socket carries requests (acked or answered with an error frame) and events.
Events for a user arrive on the bus (their user channel), so it does not matter which node
their socket is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from core import context
from core.accounts import SESSIONS_CHANNEL, AccountService, AuthContext
from core.clock import Clock, iso_utc
from core.errors import ErrorCode, InvalidArgument, NapalmError, RateLimited, Unauthenticated
from core.ids import UserId, new_id
from core.live import Bus, Subscription, user_channel
from core.text import check_text
from signaling.calls import CallService
from signaling.presence import PRESENCE_CHANNEL, Presence
from signaling.protocol import (
    CLOSE_AUTH_TIMEOUT,
    CLOSE_FLOOD,
    CLOSE_TOO_MANY_SOCKETS,
    CLOSE_UNAUTHENTICATED,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Frame,
    FrameId,
    ack,
    error,
    event,
    field_str,
    request_id,
)

log = logging.getLogger(__name__)

AUTH_TIMEOUT = 5.0
FLOODS_BEFORE_CLOSE = 100  # frames over the rate limit before the socket is closed
FLUSH_TIMEOUT = 2.0  # seconds a shutting-down node waits to hand queued events to sockets


class TokenBucket:
    """Per-socket flood control: `rate` frames a second, bursts up to `burst`."""

    def __init__(self, clock: Clock, rate: float = 20.0, burst: float = 40.0) -> None:
        self.clock, self.rate, self.burst = clock, rate, burst
        self.tokens = burst
        self.at = clock.monotonic()

    def take(self) -> bool:
        now = self.clock.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Connection:
    def __init__(self, gateway: Gateway, ws: web.WebSocketResponse, auth: AuthContext) -> None:
        self.gateway = gateway
        self.ws = ws
        self.auth = auth
        self.user_id = str(auth.user_id)
        self.conn_id = new_id()
        self.bucket = TokenBucket(gateway.clock)
        self.floods = 0
        self.available = True  # the user's last `presence:set`, to restore lost live state
        self.subscription: Subscription | None = None  # the user's channel, for this socket
        self._send_lock = asyncio.Lock()
        self._held: list[str] | None = []  # events that arrive before `state` is sent

    async def send(self, text: str) -> None:
        if self._held is not None:
            self._held.append(text)
            return
        await self._write(text)

    async def start(self, state: str) -> None:
        """Send the state frame first, then whatever arrived meanwhile, in order."""
        await self._write(state)
        held, self._held = self._held or [], None
        for text in held:
            await self._write(text)

    async def _write(self, text: str) -> None:
        if self.ws.closed:
            return
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(text)


Handler = Callable[[Connection, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class SocketLimits:
    """How many signaling sockets a node holds: per user, per client IP, before auth."""

    per_user: int = 10
    per_ip: int = 100
    unauthenticated: int = 200


class Gateway:
    def __init__(self, *, accounts: AccountService, presence: Presence, calls: CallService,
                 bus: Bus, clock: Clock, auth_timeout: float = AUTH_TIMEOUT,
                 limits: SocketLimits | None = None,
                 client_ip: Callable[[web.Request], str] | None = None) -> None:
        self.accounts, self.presence, self.calls = accounts, presence, calls
        self.bus, self.clock = bus, clock
        self.auth_timeout = auth_timeout
        self.limits = limits or SocketLimits()
        self._client_ip = client_ip or (lambda request: request.remote or "unknown")
        self._per_ip: dict[str, int] = {}
        self._unauthenticated = 0
        self.connections: dict[str, Connection] = {}
        self._cleanups: set[asyncio.Task[None]] = set()
        self._presence_sub: Subscription | None = None
        self._sessions_sub: Subscription | None = None
        self._handlers: dict[str, Handler] = {
            "presence:heartbeat": self._heartbeat,
            "presence:set": self._set_presence,
            "call:invite": self._invite,
            "call:accept": self._accept,
            "call:decline": self._decline,
            "call:cancel": self._cancel,
            "room:message": self._message,
            "room:media": self._media,
            "room:leave": self._leave,
            "call:token": self._token,
        }

    async def start(self) -> None:
        self._presence_sub = await self.bus.subscribe(PRESENCE_CHANNEL, self._on_presence)
        self._sessions_sub = await self.bus.subscribe(SESSIONS_CHANNEL, self._on_sessions_ended)

    async def close(self) -> None:
        for sub in (self._presence_sub, self._sessions_sub):
            if sub is not None:
                await sub.close()
        self._presence_sub = self._sessions_sub = None
        connections = list(self.connections.values())
        # What was published to these users before the shutdown (the end of the calls this
        # node hosted) reaches them before their sockets close, within a bound.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FLUSH_TIMEOUT):
                await asyncio.gather(*(c.subscription.flush() for c in connections
                                       if c.subscription is not None))
        for conn in connections:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.close(code=1001, message=b"server shutting down")
        await asyncio.gather(*self._cleanups, return_exceptions=True)

    async def _on_presence(self, message: str) -> None:
        """A presence change, for the sockets of the users it is addressed to only."""
        try:
            change = json.loads(message)
            viewers = set(change["to"])
            frame = event("presence:update", **change["state"])
        except (ValueError, KeyError, TypeError):
            return
        for conn in list(self.connections.values()):
            if conn.user_id in viewers:
                await conn.send(frame)

    async def _on_sessions_ended(self, message: str) -> None:
        """Sessions ended somewhere (logout, logout everywhere, a rotated token): their
        sockets on this node close now, with 4401."""
        try:
            ended = json.loads(message)
            tokens = set(ended.get("tokens") or [])
            user = ended.get("user")
        except (ValueError, AttributeError):
            return
        for conn in list(self.connections.values()):
            if conn.auth.token_hash in tokens or (user is not None and conn.user_id == user):
                await self.end_session(conn)

    async def end_session(self, conn: Connection, reason: str = "session ended") -> None:
        await conn.send(error(None, ErrorCode.UNAUTHENTICATED, reason))
        with contextlib.suppress(ConnectionError, RuntimeError):
            await conn.ws.close(code=CLOSE_UNAUTHENTICATED, message=reason.encode())

    def _expire_at_session_end(self, conn: Connection) -> None:
        async def expired() -> None:
            if conn.conn_id in self.connections:
                await self.end_session(conn, "session expired")

        self.calls.timers.call_at(conn.auth.expires_at, f"session-end:{conn.conn_id}", expired)

    # ---- the socket ----

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, heartbeat=30)
        await ws.prepare(request)
        ip = self._client_ip(request)
        if self._unauthenticated >= self.limits.unauthenticated:
            await self._refuse(ws, "too many connections waiting to authenticate")
            return ws
        if self._per_ip.get(ip, 0) >= self.limits.per_ip:
            await self._refuse(ws, "too many connections from this address")
            return ws
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        try:
            return await self._handle(ws, ip)
        finally:
            left = self._per_ip.get(ip, 1) - 1
            if left > 0:
                self._per_ip[ip] = left
            else:
                self._per_ip.pop(ip, None)

    async def _refuse(self, ws: web.WebSocketResponse, reason: str) -> None:
        """Close a socket over a limit: an error frame (rate_limited), then 4430."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(error(None, ErrorCode.RATE_LIMITED, reason))
            await ws.close(code=CLOSE_TOO_MANY_SOCKETS, message=reason.encode())

    async def _handle(self, ws: web.WebSocketResponse, ip: str) -> web.WebSocketResponse:
        self._unauthenticated += 1
        try:
            auth = await self._authenticate(ws)
        finally:
            self._unauthenticated -= 1
        if auth is None:
            return ws
        user_id = str(auth.user_id)
        if sum(1 for c in self.connections.values() if c.user_id == user_id) \
                >= self.limits.per_user:
            await self._refuse(ws, "too many connections for this user")
            return ws
        conn = Connection(self, ws, auth)
        context.user_id.set(conn.user_id)
        subscription = await self.bus.subscribe(user_channel(UserId(conn.user_id)), conn.send)
        conn.subscription = subscription
        self.connections[conn.conn_id] = conn
        self._expire_at_session_end(conn)
        try:
            await self.presence.connect(conn.user_id, conn.conn_id)
            self.calls.timers.cancel(f"grace:{conn.user_id}")
            state = await self.state(conn.user_id)
            conn.available = bool(state["presence"]["available"])
            await conn.start(event("state", **state))
            await self._serve(conn)
        finally:
            # aiohttp may cancel this handler when the peer goes away; the clean-up runs as a
            # task of the gateway's own, so a cancellation here cannot skip it.
            self.connections.pop(conn.conn_id, None)
            self.calls.timers.cancel(f"session-end:{conn.conn_id}")
            cleanup = asyncio.ensure_future(self._cleanup(conn, subscription))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            await asyncio.shield(cleanup)
        return ws

    async def _cleanup(self, conn: Connection, subscription: Subscription) -> None:
        try:
            await subscription.close()
            if await self.presence.disconnect(conn.user_id, conn.conn_id):
                await self.calls.socket_lost(conn.user_id)
        except NapalmError as exc:
            log.warning("clean-up after a socket failed: %s", exc.message)
        finally:
            if not conn.ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await conn.ws.close()

    async def _authenticate(self, ws: web.WebSocketResponse) -> AuthContext | None:
        try:
            msg = await ws.receive(timeout=self.auth_timeout)
        except TimeoutError:
            await ws.send_str(error(None, ErrorCode.UNAUTHENTICATED, "authenticate first"))
            await ws.close(code=CLOSE_AUTH_TIMEOUT, message=b"no auth frame in time")
            return None
        try:
            if msg.type != WSMsgType.TEXT:
                raise InvalidArgument("expected an auth frame")
            frame = Frame.parse(msg.data)
            if frame.type != "auth":
                raise InvalidArgument("the first frame must be 'auth'")
            return await self.accounts.authenticate(field_str(frame.data, "token", max_length=256))
        except NapalmError as exc:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(error(None, exc.code, exc.message))
                await ws.close(code=CLOSE_UNAUTHENTICATED, message=b"authentication failed")
            return None

    async def state(self, user_id: str) -> dict[str, Any]:
        user = await self.accounts.store.users.get(UserId(user_id))
        presence = await self.presence.state(user_id)
        room_id = presence.in_call
        call = None
        if room_id is not None:
            with contextlib.suppress(NapalmError):
                call = await self.calls.call_info(room_id, user_id)
                # What the partner last said it sends (mic or camera off), for a resumed call.
                call["partnerMedia"] = await self.calls.sending(room_id,
                                                                call["partner"]["id"])
        return {
            "protocol": PROTOCOL_VERSION,
            "user": {"id": user_id, "name": user.name if user else ""},
            "presence": presence.to_json(),
            "invites": await self.calls.pending_invites(user_id),
            "call": call,
            "lastCall": await self.calls.last_call(user_id) if call is None else None,
        }

    async def restore_presence(self) -> int:
        """Live state came back empty: put back the presence of this node's sockets (online,
        and unavailable where the user said so). Returns how many sockets."""
        unavailable: set[str] = set()
        conns = list(self.connections.values())
        for conn in conns:
            await self.presence.heartbeat(conn.user_id, conn.conn_id)
            if not conn.available:
                unavailable.add(conn.user_id)
        for user_id in unavailable:
            await self.presence.set_available(user_id, False)
        return len(conns)

    async def _serve(self, conn: Connection) -> None:
        async for msg in conn.ws:
            # Every frame counts against the flood limit, the ones that fail to parse too.
            over = not conn.bucket.take()
            if over:
                conn.floods += 1
                if conn.floods >= FLOODS_BEFORE_CLOSE:
                    await conn.ws.close(code=CLOSE_FLOOD, message=b"too many frames")
                    return
            frame_id: FrameId | None = None
            try:
                if msg.type != WSMsgType.TEXT:
                    raise InvalidArgument("frames must be text")
                frame = Frame.parse(msg.data)
                frame_id = frame.id
                if over:
                    raise RateLimited("too many frames; slow down", retry_after=1.0)
                check_text(frame.data, "data")  # a NUL or lone surrogate cannot be stored
                handler = self._handlers.get(frame.type)
                if handler is None:
                    raise InvalidArgument(f"unknown message type {frame.type!r}")
                result = await handler(conn, frame.data)
                await conn.send(ack(frame_id, **result))
            except NapalmError as exc:
                if frame_id is None:  # a frame that did not parse may still carry its id
                    frame_id = request_id(msg.data)
                await conn.send(error(frame_id, exc.code, exc.message))
            except Exception:
                log.exception("signaling handler failed")
                await conn.send(error(frame_id, ErrorCode.INTERNAL, "internal error"))

    # ---- requests ----

    async def _heartbeat(self, conn: Connection, data: dict[str, Any]) -> dict[str, Any]:
        try:
            conn.auth = await self.accounts.authenticate_context(conn.auth)
        except Unauthenticated:
            await self.end_session(conn)
            raise
        await self.presence.heartbeat(conn.user_id, conn.conn_id)
        return {}

    async def _set_presence(self, conn: Connection, data: dict[str, Any]) -> dict[str, Any]:
        available = data.get("available")
        if not isinstance(available, bool):
            raise InvalidArgument("'available' must be true or false")
        await self.presence.set_available(conn.user_id, available)
        for other in self.connections.values():
            if other.user_id == conn.user_id:
                other.available = available
        return {}

    async def _invite(self, conn: Connection, data: dict[str, Any]) -> dict[str, Any]:
        seconds = data.get("seconds")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)):
            raise InvalidArgument("'seconds' must be an integer")
        invite = await self.calls.invite(conn.user_id, field_str(data, "to", max_length=64),
                                         seconds, record=_flag(data, "record"))
        return {"inviteId": invite.invite_id, "expiresAt": iso_utc(invite.expires_at)}

    async def _accept(self, conn: Connection, data: dict[str, Any]) -> dict[str, Any]:
        room_id = await self.calls.accept(conn.user_id, field_str(data, "inviteId"),
                                          record=_flag(data, "record"))
        return {"roomId": room_id}

    async def _decline(self, conn: Connection, data: dict[str, Any]) -> dict[str, Any]:
        await self.calls.decline(conn.user_id, field_str(data, "inviteId"))
        return {}

    async def _cancel(self, conn: Connection, data: dict[str, Any]) -> dict[str, Any]:
        await self.calls.cancel(conn.user_id, field_str(data, "inviteId"))
        return {}

    async def _message(self, conn: Connection, data: dict[str, Any]) -> dict[str, Any]:
        text = data.get("text")
        if not isinstance(text, str):
            raise InvalidArgument("'text' must be a string")
        out = await self.calls.message(conn.user_id, field_str(data, "roomId"), text)
        return {"messageId": out["messageId"]}

    async def _media(self, conn: Connection, data: dict[str, Any]) -> dict[str, Any]:
        audio, video = data.get("audio"), data.get("video")
        if not isinstance(audio, bool) or not isinstance(video, bool):
            raise InvalidArgument("'audio' and 'video' must be true or false")
        await self.calls.media_state(conn.user_id, field_str(data, "roomId"), audio=audio,
                                     video=video)
        return {}

    async def _token(self, conn: Connection, data: dict[str, Any]) -> dict[str, Any]:
        return await self.calls.join_grant(conn.user_id, field_str(data, "roomId"))

    async def _leave(self, conn: Connection, data: dict[str, Any]) -> dict[str, Any]:
        await self.calls.leave(conn.user_id, field_str(data, "roomId"))
        return {}


def _flag(data: dict[str, Any], name: str) -> bool:
    """An optional boolean field (absent: False); InvalidArgument for anything else."""
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"'{name}' must be true or false")
    return value
