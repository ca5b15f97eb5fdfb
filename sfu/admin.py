"""Operator endpoints of the SFU, behind the operator token (user admin auth comes later)."""

from __future__ import annotations

import hmac

from aiohttp import web

from core.errors import NotFound, PermissionDenied, Unauthenticated
from sfu.server import SfuServer
from sfu.stats import participant_stats


def sfu_admin_routes(server: SfuServer, operator_token: str | None) -> list[web.RouteDef]:
    def check(request: web.Request) -> None:
        if operator_token is None:
            raise PermissionDenied("operator endpoints are disabled: no operator token is set")
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise Unauthenticated("operator token required")
        if not hmac.compare_digest(given.encode(), operator_token.encode()):
            raise PermissionDenied("invalid operator token")

    async def room_stats(request: web.Request) -> web.Response:
        check(request)
        router = server.rooms.get(request.match_info["room_id"])
        if router is None:
            raise NotFound("room not found")
        return web.json_response({
            "roomId": router.room_id,
            "participants": [participant_stats(t) for t in router.transports.values()],
        })

    return [web.get("/sfu/rooms/{room_id}/stats", room_stats)]
