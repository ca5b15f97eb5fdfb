"""REST API v1: accounts, sessions, profiles, selfies, admin."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from api.clientip import IPNetwork, client_ip
from api.endpoints import Endpoint, dump, openapi, parse_body, read_body, receive_file
from api.ratelimit import LoginLimiter, RateLimiter
from api.schemas import (
    AdminUser,
    AuthResponse,
    CallSummaryOut,
    ChallengeSolution,
    GuestRequest,
    IntroVideoState,
    LoginRequest,
    Me,
    MetricsResponse,
    ProfilePatch,
    PublicUser,
    RegisterRequest,
    SelfieResponse,
    TotpRequest,
    UpgradeRequest,
    UserPath,
)
from api.signuplimiter import SignupLimiter, Solution
from core.accounts import AccountService, AuthContext, SignedIn, check_name
from core.blobs import BlobStore
from core.clock import Clock, utcnow
from core.errors import ErrorCode, NotFound, Unauthenticated, UnsupportedMediaType
from core.ids import UserId, is_uuid
from core.store import IntroVideoJob, IntroVideoStatus, Store, User, UserChanges
from recorder.intro import IntroLimits, probe_intro
from recorder.intro_worker import poster_key_of
from recorder.selfie import MAX_UPLOAD_BYTES, process_selfie_async

PREFIX = "/api/v1"
SIGNUP_ERRORS = (ErrorCode.CHALLENGE_REQUIRED, ErrorCode.CHALLENGE_FAILED)
SIGNUP_LIMITS = (
    "Sign-ups from one address or network beyond its budget are not refused: the answer is "
    "429 `challenge_required` with `error.challenge`, a proof-of-work to solve; send the same "
    "request again with `challenge: {token, counter}`. A bad, expired or reused solution is "
    "403 `challenge_failed` (ask again without one). Only far beyond the budget is a sign-up "
    "refused: 429 `rate_limited`, with `Retry-After`.")
HOUR = 3600.0
MINUTE = 60.0
SELFIE_URL_TTL = 3600
SELFIE_MEDIA = ("image/jpeg", "image/png", "image/webp")
INTRO_MEDIA = ("video/webm", "video/mp4", "video/quicktime")
INTRO_TOO_LARGE = "the video is larger than 50 MB"
DEFAULT_INTRO_LIMITS = IntroLimits()
INTRO_UPLOADS_PER_HOUR = 20


@dataclass(frozen=True, slots=True)
class Limits:
    token_per_minute: int = 600


@dataclass(frozen=True, slots=True)
class ApiContext:
    accounts: AccountService
    store: Store
    blobs: BlobStore
    limiter: RateLimiter
    signups: SignupLimiter
    logins: LoginLimiter
    clock: Clock
    limits: Limits
    trusted_proxies: tuple[IPNetwork, ...]
    uploads: Path  # where large uploads are staged before they are checked
    intro_limits: IntroLimits = DEFAULT_INTRO_LIMITS
    notify_intro: Callable[[], None] = lambda: None  # a job was queued (this node's worker)


async def authenticate_request(request: web.Request, ctx: ApiContext) -> AuthContext:
    """The caller of a protected route, from `Authorization: Bearer`, within its budget."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("missing bearer token")
    auth = await ctx.accounts.authenticate(token.strip())
    await ctx.limiter.hit(f"token:{auth.token_hash[:32]}", ctx.limits.token_per_minute,
                          MINUTE, "requests")
    return auth


def api_endpoints(get: Callable[[], ApiContext]) -> list[Endpoint]:
    """The v1 endpoints; `get` returns the context once the app's services are open."""

    def ip_of(request: web.Request) -> str:
        return client_ip(request.remote, request.headers.getall("X-Forwarded-For", []),
                         get().trusted_proxies)

    async def authed(request: web.Request) -> AuthContext:
        return await authenticate_request(request, get())

    async def me_of(user: User) -> Me:
        return Me(**(await public_fields(user)), accountType=user.account_type.value,
                  email=user.email, isAdmin=user.is_admin, createdAt=user.created_at)

    async def public_fields(user: User) -> dict[str, Any]:
        blobs = get().blobs
        selfie = video = poster = None
        if user.selfie_url:
            selfie = await blobs.url(user.selfie_url, SELFIE_URL_TTL)
        if user.video_url:
            video = await blobs.url(user.video_url, SELFIE_URL_TTL)
            poster = await blobs.url(poster_key_of(user.video_url), SELFIE_URL_TTL)
        return {"id": user.user_id, "name": user.name, "gender": user.gender,
                "selfieUrl": selfie, "videoUrl": video, "posterUrl": poster,
                "socials": dict(user.socials)}

    async def signed_in(result: SignedIn, status: int) -> web.Response:
        return dump(AuthResponse(token=result.token, user=await me_of(result.user)), status)

    # ---- auth ----

    async def admit_signup(ip: str, solution: ChallengeSolution | None) -> None:
        await get().signups.admit(
            ip, None if solution is None else Solution(solution.token, solution.counter))

    async def guest(request: web.Request) -> web.Response:
        ctx, ip = get(), ip_of(request)
        body = await parse_body(request, GuestRequest)
        await admit_signup(ip, body.challenge)
        return await signed_in(await ctx.accounts.sign_up_guest(body.name, body.gender, ip), 201)

    async def register(request: web.Request) -> web.Response:
        ctx, ip = get(), ip_of(request)
        body = await parse_body(request, RegisterRequest)
        await admit_signup(ip, body.challenge)
        result = await ctx.accounts.register(body.email, body.password, body.name, body.gender,
                                             ip)
        return await signed_in(result, 201)

    async def login(request: web.Request) -> web.Response:
        ctx, ip = get(), ip_of(request)
        body = await parse_body(request, LoginRequest)
        await ctx.logins.check(ip, body.email)
        try:
            result = await ctx.accounts.login(body.email, body.password, ip)
        except Unauthenticated:
            await ctx.logins.failed(ip, body.email)
            raise
        return await signed_in(result, 200)

    async def upgrade(request: web.Request) -> web.Response:
        auth = await authed(request)
        body = await parse_body(request, UpgradeRequest)
        result = await get().accounts.upgrade(auth, body.email, body.password, ip_of(request))
        return await signed_in(result, 200)

    async def logout(request: web.Request) -> web.Response:
        await get().accounts.logout(await authed(request))
        return web.Response(status=204)

    async def logout_all(request: web.Request) -> web.Response:
        await get().accounts.logout_all(await authed(request))
        return web.Response(status=204)

    async def totp(request: web.Request) -> web.Response:
        auth = await authed(request)
        body = await parse_body(request, TotpRequest)
        result = await get().accounts.verify_second_factor(auth, body.code, ip_of(request))
        return await signed_in(result, 200)

    # ---- profiles ----

    async def get_me(request: web.Request) -> web.Response:
        user = await get().accounts.user(await authed(request))
        return dump(await me_of(user))

    async def patch_me(request: web.Request) -> web.Response:
        auth = await authed(request)
        body = await parse_body(request, ProfilePatch)
        changes: UserChanges = {}
        if body.name is not None:
            changes["name"] = check_name(body.name)
        if body.gender is not None:
            changes["gender"] = body.gender
        if body.socials is not None:
            changes["socials"] = {str(platform): link for platform, link in body.socials.items()}
        ctx = get()
        user = await ctx.accounts.user(auth)
        if changes:
            user = await ctx.store.users.update(user.user_id, changes)
        return dump(await me_of(user))

    async def get_user(request: web.Request) -> web.Response:
        await authed(request)
        user_id = request.match_info["user_id"]
        user = await get().store.users.get(UserId(user_id)) if is_uuid(user_id) else None
        if user is None:
            raise NotFound("user not found")
        return dump(PublicUser(**(await public_fields(user))))

    async def my_metrics(request: web.Request) -> web.Response:
        user = await get().accounts.user(await authed(request))
        return dump(MetricsResponse(
            timerTotalSeconds=user.timer_total_seconds, sessionCount=user.session_count,
            lastSessions=[CallSummaryOut(partnerId=s.partner_id, partnerName=s.partner_name,
                                         roomId=s.room_id, durationSeconds=s.duration_seconds,
                                         endedAt=s.ended_at) for s in user.last_sessions],
        ))

    async def put_selfie(request: web.Request) -> web.Response:
        auth = await authed(request)
        if request.content_type not in SELFIE_MEDIA:
            raise UnsupportedMediaType(f"a selfie is sent as {', '.join(SELFIE_MEDIA)}")
        data = await read_body(request, MAX_UPLOAD_BYTES, "image is larger than 5 MB")
        image = await process_selfie_async(data)
        ctx = get()
        user = await ctx.accounts.user(auth)
        key = f"selfies/{user.user_id}/{secrets.token_hex(8)}.jpg"
        await ctx.blobs.put(key, image.data, image.content_type)
        old = user.selfie_url
        await ctx.store.users.update(user.user_id, {"selfie_url": key})
        if old and old != key:
            await ctx.blobs.delete(old)
        url = await ctx.blobs.url(key, SELFIE_URL_TTL)
        expires = utcnow(ctx.clock) + timedelta(seconds=SELFIE_URL_TTL)
        return dump(SelfieResponse(url=url, expiresAt=expires))

    # ---- intro video ----

    async def intro_state(job: IntroVideoJob) -> IntroVideoState:
        blobs = get().blobs
        video = poster = None
        if job.status is IntroVideoStatus.DONE and job.video_key:
            video = await blobs.url(job.video_key, SELFIE_URL_TTL)
            poster = await blobs.url(job.poster_key or poster_key_of(job.video_key),
                                     SELFIE_URL_TTL)
        return IntroVideoState(
            jobId=job.job_id, status=job.status.value, progress=job.progress, error=job.error,
            videoUrl=video, posterUrl=poster, durationSeconds=job.duration, width=job.width,
            height=job.height, updatedAt=job.updated_at)

    async def put_intro_video(request: web.Request) -> web.Response:
        auth = await authed(request)
        ctx = get()
        if request.content_type not in INTRO_MEDIA:
            raise UnsupportedMediaType(f"an intro video is sent as {', '.join(INTRO_MEDIA)}")
        # each upload is up to 50 MB of disk and a transcode: a few an hour is plenty
        await ctx.limiter.hit(f"intro-upload:{auth.user_id}", INTRO_UPLOADS_PER_HOUR, HOUR,
                              "intro video uploads")
        limits = ctx.intro_limits
        ctx.uploads.mkdir(parents=True, exist_ok=True)
        staged = ctx.uploads / f"intro-{secrets.token_hex(12)}.part"
        try:
            await receive_file(request, staged, limits.max_bytes, INTRO_TOO_LARGE)
            probe = await asyncio.to_thread(probe_intro, staged, limits)
            user = await ctx.accounts.user(auth)
            suffix = "webm" if probe.container == "webm" else "mp4"
            key = f"intro-uploads/{user.user_id}/{secrets.token_hex(8)}.{suffix}"
            await ctx.blobs.put_file(key, staged, f"video/{suffix}")
        finally:
            staged.unlink(missing_ok=True)
        job, superseded = await ctx.store.intro_videos.create(user.user_id, key)
        for old in superseded:  # its worker stops at its next heartbeat
            await ctx.blobs.delete(old.source_key)
        ctx.notify_intro()
        return dump(await intro_state(job), 202)

    async def get_intro_video(request: web.Request) -> web.Response:
        auth = await authed(request)
        job = await get().store.intro_videos.latest(auth.user_id)
        if job is None:
            raise NotFound("no intro video uploaded")
        return dump(await intro_state(job))

    # ---- admin ----

    async def admin_get_user(request: web.Request) -> web.Response:
        auth = await authed(request)
        ctx = get()
        await ctx.accounts.require_admin(auth)
        user_id = request.match_info["user_id"]
        user = await ctx.store.users.get(UserId(user_id)) if is_uuid(user_id) else None
        if user is None:
            raise NotFound("user not found")
        me = await me_of(user)
        return dump(AdminUser(**me.model_dump(), banStatus=user.ban_status.value,
                              paidStatus=user.paid_status.value))

    E = ErrorCode
    endpoints = [
        Endpoint("POST", f"{PREFIX}/auth/guest", guest, "Sign up as a guest",
                 request=GuestRequest, response=AuthResponse, status=201,
                 errors=SIGNUP_ERRORS, description=SIGNUP_LIMITS),
        Endpoint("POST", f"{PREFIX}/auth/register", register, "Create a permanent account",
                 request=RegisterRequest, response=AuthResponse, status=201,
                 errors=(E.ALREADY_EXISTS, *SIGNUP_ERRORS), description=SIGNUP_LIMITS),
        Endpoint("POST", f"{PREFIX}/auth/login", login, "Sign in with email and password",
                 request=LoginRequest, response=AuthResponse, errors=(E.UNAUTHENTICATED,)),
        Endpoint("POST", f"{PREFIX}/auth/upgrade", upgrade,
                 "Turn a guest into a permanent account (same id; the token rotates)",
                 auth="user", request=UpgradeRequest, response=AuthResponse,
                 errors=(E.ALREADY_EXISTS,)),
        Endpoint("POST", f"{PREFIX}/auth/logout", logout, "Revoke this token", auth="user",
                 status=204),
        Endpoint("POST", f"{PREFIX}/auth/logout-all", logout_all,
                 "Revoke every token of this user", auth="user", status=204),
        Endpoint("POST", f"{PREFIX}/auth/totp", totp,
                 "Admins: prove the TOTP code (the token rotates to an admin session)",
                 auth="user", request=TotpRequest, response=AuthResponse,
                 errors=(E.PERMISSION_DENIED,)),
        Endpoint("GET", f"{PREFIX}/me", get_me, "My profile", auth="user", response=Me),
        Endpoint("PATCH", f"{PREFIX}/me", patch_me, "Change my name, gender or socials",
                 auth="user", request=ProfilePatch, response=Me),
        Endpoint("GET", f"{PREFIX}/me/metrics", my_metrics, "My call metrics", auth="user",
                 response=MetricsResponse),
        Endpoint("PUT", f"{PREFIX}/me/selfie", put_selfie,
                 "Upload my selfie (JPEG, PNG or WebP, at most 5 MB)", auth="user",
                 request_media=SELFIE_MEDIA,
                 response=SelfieResponse,
                 errors=(E.PAYLOAD_TOO_LARGE, E.UNSUPPORTED_MEDIA_TYPE)),
        Endpoint("PUT", f"{PREFIX}/me/intro-video", put_intro_video,
                 "Upload my intro video (WebM, MP4 or QuickTime, at most 50 MB and 60 s): "
                 "checked, then queued for transcoding; 202 with the job's state",
                 auth="user", request_media=INTRO_MEDIA, response=IntroVideoState,
                 status=202,
                 errors=(E.PAYLOAD_TOO_LARGE, E.UNSUPPORTED_MEDIA_TYPE, E.INVALID_ARGUMENT,
                         E.RATE_LIMITED)),
        Endpoint("GET", f"{PREFIX}/me/intro-video", get_intro_video,
                 "My intro video's processing state (percent done while it runs; signed "
                 "video and poster URLs once done)", auth="user", response=IntroVideoState,
                 errors=(E.NOT_FOUND,)),
        Endpoint("GET", f"{PREFIX}/users/{{user_id}}", get_user, "A user's public profile",
                 auth="user", params=UserPath, response=PublicUser, errors=(E.NOT_FOUND,)),
        Endpoint("GET", f"{PREFIX}/admin/users/{{user_id}}", admin_get_user,
                 "Admins: a user's account", auth="admin", params=UserPath,
                 response=AdminUser, errors=(E.NOT_FOUND,)),
    ]
    return endpoints


DESCRIPTION = (
    "The REST API: every operation under /api/v1. Errors are JSON "
    "`{\"error\": {\"code\", \"message\"}}` with a stable code. The signaling WebSocket, "
    "GET /ws (a 101 upgrade, then JSON frames), is not a REST operation and is described in "
    "docs/protocol.md."
)


def rest_document(endpoints: Sequence[Endpoint], version: str) -> dict[str, Any]:
    """The OpenAPI document of the REST operations among `endpoints`: those under PREFIX (the
    /ws socket is not one)."""
    rest = [e for e in endpoints if e.path.startswith(f"{PREFIX}/")]
    return openapi(rest, title="Napalm Sky API", version=version, description=DESCRIPTION)


def openapi_endpoint(endpoints: Sequence[Endpoint], version: str) -> Endpoint:
    """GET /api/v1/openapi.json: `rest_document(endpoints)`."""
    document = rest_document(endpoints, version)

    async def serve(request: web.Request) -> web.Response:
        return web.json_response(document)

    return Endpoint("GET", f"{PREFIX}/openapi.json", serve, "This document")
