"""`GET /sfu/ws`: the join and offer/answer exchange of one participant (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from core import context
from core.clock import Clock
from core.errors import ErrorCode, InvalidArgument, NapalmError, PayloadTooLarge
from sfu.events import CloseReason
from sfu.server import SfuServer
from sfu.token import verify_join_token
from sfu.transport import Transport

log = logging.getLogger(__name__)

JOIN_TIMEOUT = 10.0
MAX_MESSAGE = 64 * 1024
MAX_SDP = 32 * 1024

# WebSocket close codes: 4000 + the HTTP status our error code maps to.
_CLOSE_CODES = {
    ErrorCode.INVALID_ARGUMENT: 4400,
    ErrorCode.UNAUTHENTICATED: 4401,
    ErrorCode.PERMISSION_DENIED: 4403,
    ErrorCode.NOT_FOUND: 4404,
    ErrorCode.PAYLOAD_TOO_LARGE: 4413,
    ErrorCode.UNAVAILABLE: 4503,
}


_INTERNAL = NapalmError("internal error")


def _parse(data: str) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except ValueError:
        raise InvalidArgument("message is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise InvalidArgument("message must be an object with a string 'type'")
    return message


async def _send_error(ws: web.WebSocketResponse, exc: NapalmError) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_json({"type": "error", "code": exc.code.value, "message": exc.message})


async def _close(ws: web.WebSocketResponse, exc: NapalmError | None = None) -> None:
    code = _CLOSE_CODES.get(exc.code, 4500) if exc is not None else 1000
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.close(code=code, message=(exc.message if exc else "bye").encode()[:120])


def sfu_routes(server: SfuServer, secret: bytes, clock: Clock) -> list[web.RouteDef]:
    async def join_socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=20)
        await ws.prepare(request)
        transport: Transport | None = None
        watcher: asyncio.Task[None] | None = None
        try:
            try:
                first = await ws.receive(timeout=JOIN_TIMEOUT)
            except TimeoutError:
                raise InvalidArgument("no join message in time") from None
            if first.type != WSMsgType.TEXT:
                raise InvalidArgument("expected a join message")
            message = _parse(first.data)
            if message["type"] != "join" or not isinstance(message.get("token"), str):
                raise InvalidArgument("expected {\"type\": \"join\", \"token\": ...}")
            wanted = message.get("roomId")
            if wanted is not None and not isinstance(wanted, str):
                raise InvalidArgument("'roomId' must be a string")
            grant = verify_join_token(secret, message["token"], clock, room_id=wanted)
            context.room_id.set(grant.room_id)
            context.user_id.set(grant.user_id)
            transport = await server.join(grant.room_id, grant.user_id)
            await ws.send_json({"type": "joined", "roomId": grant.room_id,
                                "userId": grant.user_id})
            watcher = asyncio.ensure_future(_watch(ws, transport))
            await _serve(ws, transport)
        except NapalmError as exc:
            await _send_error(ws, exc)
            await _close(ws, exc)
        except Exception:
            log.exception("SFU socket failed")
            await _send_error(ws, _INTERNAL)
            await _close(ws, _INTERNAL)
        finally:
            # aiohttp may cancel this handler when the client goes away: the transport's close
            # runs as a task its router owns, so a cancellation here cannot skip it.
            if transport is not None:
                transport.close_soon(CloseReason.LEFT)
            if watcher is not None:
                watcher.cancel()
            await _close(ws)
        return ws

    return [web.get("/sfu/ws", join_socket)]


async def _serve(ws: web.WebSocketResponse, transport: Transport) -> None:
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            raise InvalidArgument("expected text messages")
        try:
            message = _parse(msg.data)
            kind = message["type"]
            if kind == "offer":
                sdp = message.get("sdp")
                if not isinstance(sdp, str) or not sdp:
                    raise InvalidArgument("offer needs an 'sdp' string")
                if len(sdp) > MAX_SDP:
                    raise PayloadTooLarge(f"the offer's SDP is over {MAX_SDP // 1024} KiB")
                first = transport.negotiation is None
                answer = await transport.answer(sdp)
                await ws.send_json({"type": "answer", "sdp": answer})
                partner = transport.router.partner_message(transport) if first else None
                if partner is not None:
                    await ws.send_json(partner)
            elif kind == "leave":
                return
            else:
                raise InvalidArgument(f"unknown message type {kind[:32]!r}")
        except (InvalidArgument, PayloadTooLarge) as exc:
            if transport.negotiation is None:
                raise  # nothing negotiated yet: a broken first offer ends the session
            await _send_error(ws, exc)


async def _watch(ws: web.WebSocketResponse, transport: Transport) -> None:
    """Pass the transport's messages to the client (the partner's media, say); when the server
    ends the transport, tell the client why and hang up."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=64)

    def enqueue(message: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(message)

    transport.listeners.append(enqueue)
    try:
        if transport.closed_event.is_set():
            enqueue(_closed_message(transport))
        while True:
            message = await queue.get()
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json(message)
            if message.get("type") == "closed":
                break
    finally:
        with contextlib.suppress(ValueError):
            transport.listeners.remove(enqueue)
    await _close(ws)


def _closed_message(transport: Transport) -> dict[str, Any]:
    reason = transport.close_reason.value if transport.close_reason else "closed"
    return {"type": "closed", "reason": reason}
