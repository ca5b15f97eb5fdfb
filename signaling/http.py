"""Signaling's HTTP side: the `/ws` route, the deck and my call history."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

from api.endpoints import Endpoint, dump, parse_params
from api.schemas import DeckQuery
from api.v1 import PREFIX, SELFIE_URL_TTL, ApiContext, authenticate_request
from core.clock import utc_from_timestamp
from core.errors import ErrorCode, NotFound
from core.ids import RoomId, UserId, is_uuid
from core.store import BanStatus, RecordingStatus
from recorder.intro_worker import poster_key_of
from signaling.calls import CallService
from signaling.gateway import Gateway
from signaling.presence import Presence
from signaling.protocol import PROTOCOL_VERSION
from signaling.recordings import Recordings
from signaling.recovery import NodeKeeper
from signaling.timers import Timers


class ClientConfig(BaseModel):
    """What a client needs before it signs in."""

    protocol: int
    recordingEnabled: bool = False  # calls may be recorded when both people agree
    callMinSeconds: int
    callMaxSeconds: int
    callDefaultSeconds: int
    inviteSeconds: int
    reconnectGraceSeconds: float


class DeckEntry(BaseModel):
    id: str
    name: str
    gender: str
    selfieUrl: str | None = None
    videoUrl: str | None = None  # the intro video (H.264 + AAC in MP4), signed
    posterUrl: str | None = None  # its poster JPEG, signed


class DeckPage(BaseModel):
    people: list[DeckEntry]
    nextCursor: str | None = None


class ChatLine(BaseModel):
    fromId: str
    text: str
    sentAt: datetime


class CallRecord(BaseModel):
    roomId: str
    partnerId: str
    partnerName: str | None
    startedAt: datetime
    durationSeconds: int
    messages: list[ChatLine]


class CallHistory(BaseModel):
    calls: list[CallRecord]


class RecordingOut(BaseModel):
    """One participant's media of a recorded call. `url` (signed, expiring) once ready."""

    userId: str
    status: str
    url: str | None = None
    container: str | None = None
    videoCodec: str | None = None
    audioCodec: str | None = None
    durationSeconds: float | None = None
    sizeBytes: int | None = None
    error: str | None = None


class CallRecordings(BaseModel):
    recordings: list[RecordingOut]


class Deleted(BaseModel):
    deleted: int


class RoomPath(BaseModel):
    room_id: str


class IceServer(BaseModel):
    """One W3C RTCIceServer (WebRTC 1.0 section 4.2.1): STUN URLs alone, or TURN URLs with a
    TURN REST username and credential."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # a STUN entry has no credential fields at all: a browser turns a null into "null"
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if value is not None}


class IceServerConfig(BaseModel):
    """The ICE servers of my region, for `new RTCPeerConnection({iceServers})`. `expiresAt`:
    when the TURN credential stops working (null without TURN); ask again before then."""

    iceServers: list[IceServer]
    expiresAt: datetime | None
    region: str


@dataclass(frozen=True, slots=True)
class SignalingContext:
    api: ApiContext
    presence: Presence
    gateway: Gateway
    calls: CallService
    timers: Timers
    keeper: NodeKeeper
    recordings: Recordings


def signaling_endpoints(get: Callable[[], SignalingContext]) -> list[Endpoint]:
    async def socket(request: web.Request) -> web.StreamResponse:
        return await get().gateway.handle(request)

    async def config(request: web.Request) -> web.Response:
        rules = get().calls.rules
        return dump(ClientConfig(
            protocol=PROTOCOL_VERSION, callMinSeconds=rules.min_seconds,
            callMaxSeconds=rules.max_seconds, callDefaultSeconds=rules.default_seconds,
            inviteSeconds=rules.invite_ttl, reconnectGraceSeconds=rules.reconnect_grace,
            recordingEnabled=rules.recording))

    async def deck(request: web.Request) -> web.Response:
        ctx = get()
        auth = await authenticate_request(request, ctx.api)
        query = parse_params(request, DeckQuery)
        limit, cursor = query.limit, query.cursor
        me = str(auth.user_id)
        store = ctx.api.store
        cooling = {str(u) for u in await store.cooldowns.active_partners(auth.user_id)}
        candidates = sorted(u for u in await ctx.presence.online_users()
                            if u != me and u > cursor and u not in cooling)
        people: list[DeckEntry] = []
        next_cursor = None
        blobs = ctx.api.blobs
        for start in range(0, len(candidates), limit):
            chunk = candidates[start:start + limit]
            free = [u for u in chunk if (s := await ctx.presence.state(u)).available
                    and s.in_call is None]
            users = await store.users.get_many([UserId(u) for u in free])
            for user_id in free:
                user = users.get(UserId(user_id))
                if user is None or user.ban_status is not BanStatus.NONE:
                    continue
                if len(people) == limit:
                    next_cursor = people[-1].id
                    break
                people.append(DeckEntry(
                    id=user_id, name=user.name, gender=user.gender.value,
                    selfieUrl=await blobs.url(user.selfie_url, SELFIE_URL_TTL)
                    if user.selfie_url else None,
                    videoUrl=await blobs.url(user.video_url, SELFIE_URL_TTL)
                    if user.video_url else None,
                    posterUrl=await blobs.url(poster_key_of(user.video_url), SELFIE_URL_TTL)
                    if user.video_url else None,
                ))
            if next_cursor is not None:
                break
        await ctx.presence.record_viewers(me, [p.id for p in people])
        return dump(DeckPage(people=people, nextCursor=next_cursor))

    async def my_calls(request: web.Request) -> web.Response:
        ctx = get()
        auth = await authenticate_request(request, ctx.api)
        entries = await ctx.api.store.chat_history.list_for_user(auth.user_id, limit=50)
        return dump(CallHistory(calls=[
            CallRecord(roomId=e.room_id, partnerId=e.partner_id, partnerName=e.partner_name,
                       startedAt=e.started_at, durationSeconds=e.duration_seconds,
                       messages=[ChatLine(fromId=m.sender_id, text=m.text, sentAt=m.sent_at)
                                 for m in e.messages])
            for e in entries
        ]))

    async def ice_servers(request: web.Request) -> web.Response:
        ctx = get()
        auth = await authenticate_request(request, ctx.api)
        calls = ctx.calls
        found = calls.ice.for_user(str(auth.user_id), calls.region)
        return dump(IceServerConfig(
            iceServers=[IceServer(**server) for server in found.servers],
            expiresAt=utc_from_timestamp(found.expires_at) if found.expires_at else None,
            region=calls.region))

    async def recorded_call(request: web.Request) -> tuple[SignalingContext, str]:
        """The call's id, when the caller was in it or is an admin; NotFound otherwise (a
        stranger learns nothing, not even that the call exists)."""
        ctx = get()
        auth = await authenticate_request(request, ctx.api)
        room_id = parse_params(request, RoomPath).room_id
        call = await ctx.api.store.calls.get(RoomId(room_id)) if is_uuid(room_id) else None
        if call is None:
            raise NotFound("call not found")
        if auth.user_id not in (call.caller_id, call.callee_id):
            user = await ctx.api.accounts.user(auth)
            if not user.is_admin:
                raise NotFound("call not found")
        return ctx, room_id

    async def call_recordings(request: web.Request) -> web.Response:
        ctx, room_id = await recorded_call(request)
        out = []
        for row in await ctx.api.store.recordings.for_room(RoomId(room_id)):
            url = None
            if row.status is RecordingStatus.READY and row.blob_key:
                url = await ctx.api.blobs.url(row.blob_key, SELFIE_URL_TTL)
            out.append(RecordingOut(
                userId=row.user_id, status=row.status.value, url=url, container=row.container,
                videoCodec=row.video_codec, audioCodec=row.audio_codec,
                durationSeconds=row.duration, sizeBytes=row.size, error=row.error))
        return dump(CallRecordings(recordings=out))

    async def delete_recordings(request: web.Request) -> web.Response:
        ctx, room_id = await recorded_call(request)
        return dump(Deleted(deleted=await ctx.recordings.delete(room_id)))

    return [
        Endpoint("GET", "/ws", socket, "The signaling WebSocket (see docs/protocol.md)"),
        Endpoint("GET", f"{PREFIX}/config", config,
                 "Call bounds and protocol version, for clients", response=ClientConfig),
        Endpoint("GET", f"{PREFIX}/deck", deck,
                 "People available to call: online, not me, not busy, not banned, not in "
                 "cooldown with me (paginated by `cursor`, `limit` up to 50)",
                 auth="user", response=DeckPage, params=DeckQuery),
        Endpoint("GET", f"{PREFIX}/me/calls", my_calls, "My call history, newest first",
                 auth="user", response=CallHistory),
        Endpoint("GET", f"{PREFIX}/calls/{{room_id}}/recordings", call_recordings,
                 "A recorded call's files (each participant's media) with signed URLs once "
                 "ready: for the call's participants and admins", auth="user",
                 params=RoomPath, response=CallRecordings, errors=(ErrorCode.NOT_FOUND,)),
        Endpoint("DELETE", f"{PREFIX}/calls/{{room_id}}/recordings", delete_recordings,
                 "Delete a call's recordings (either participant, or an admin)", auth="user",
                 params=RoomPath, response=Deleted, errors=(ErrorCode.NOT_FOUND,)),
        Endpoint("GET", f"{PREFIX}/ice-servers", ice_servers,
                 "STUN and TURN servers of my region, TURN with a short-lived credential "
                 "(the same list `call:start` carries)", auth="user", response=IceServerConfig),
    ]
