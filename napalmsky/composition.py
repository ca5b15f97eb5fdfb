"""The composition root: the one place that reads settings and picks adapters.

`build_app(settings)` returns the aiohttp application of a node; its services (store, live state,
bus, blobs) open on start-up and close on clean-up through `cleanup_ctx`, so teardown runs only
for what started.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path

from aiohttp import web
from aiortc import RTCIceServer
from prometheus_client import CollectorRegistry

from adapters.blobs import LocalBlobStore, S3BlobStore
from adapters.live import MemoryBus, MemoryLiveState, RedisBus, RedisLiveState
from adapters.passwords import BcryptHasher
from adapters.sql import SqlStore, create_engine
from api.blobs import blob_routes
from api.clientip import client_ip, parse_networks
from api.endpoints import BODY_TIMEOUT
from api.endpoints import routes as endpoint_routes
from api.health import Probe, health_routes
from api.metrics import HttpMetrics, metrics_middleware, metrics_routes, new_registry
from api.middleware import error_middleware, request_id_middleware
from api.powchallenge import Challenges
from api.ratelimit import LoginLimiter, RateLimiter
from api.security import cors_preflight, security_headers
from api.signuplimiter import SignupLimiter, SignupPolicy
from api.v1 import ApiContext, Limits, api_endpoints, openapi_endpoint
from core import context
from core.accounts import AccountService, SessionPolicy
from core.blobs import BlobStore
from core.clock import Clock, SystemClock
from core.live import Bus, LiveState
from core.settings import Role, Settings
from core.store import CallEndReason, Store
from napalmsky.startup import describe_mode, ensure_private_dir, node_secret, secret_key
from recorder.intro import IntroLimits
from recorder.intro_worker import IntroVideoWorker, WorkerConfig
from sfu.admin import sfu_admin_routes
from sfu.internals import NetworkConfig
from sfu.server import SfuConfig, SfuServer
from sfu.stats import SfuCollector
from sfu.ws import sfu_routes
from signaling.calls import CallRules, CallService
from signaling.gateway import Gateway, SocketLimits
from signaling.http import SignalingContext, signaling_endpoints
from signaling.placement import LocalPlacement
from signaling.presence import Presence
from signaling.recordings import Recordings
from signaling.recovery import NodeKeeper
from signaling.timers import Timers
from turn.servers import IceServers
from web import STATIC_DIR

log = logging.getLogger(__name__)

__version__ = version("napalmsky")


@dataclass
class Services:
    settings: Settings
    clock: Clock
    store: Store
    live: LiveState
    bus: Bus
    blobs: BlobStore
    _closed: bool = field(default=False, repr=False)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for name, closer in (
            ("bus", self.bus.close),
            ("live state", self.live.close),
            ("blobs", self.blobs.close),
            ("store", self.store.close),
        ):
            try:
                await closer()
            except Exception:
                log.exception("closing %s failed", name)


SERVICES = web.AppKey("services", Services)
SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", CollectorRegistry)
SFU = web.AppKey("sfu", SfuServer)
API = web.AppKey("api", ApiContext)
SIGNALING = web.AppKey("signaling", SignalingContext)
SWEEP_INTERVAL = 10.0  # seconds between sweeps for calls nobody else will finish


def make_sfu(settings: Settings, clock: Clock) -> SfuServer:
    ice_servers = tuple(
        RTCIceServer(
            urls=url,
            username=settings.sfu_turn_username if url.startswith("turn") else None,
            credential=settings.sfu_turn_credential if url.startswith("turn") else None,
        )
        for url in settings.sfu_ice_servers
    )
    net = NetworkConfig(
        bind=settings.rtc_bind,
        announce=settings.rtc_announce,
        port_min=settings.rtc_port_min,
        port_max=settings.rtc_port_max,
        shared_port=settings.rtc_port,
        ice_servers=ice_servers,
    )
    if net.shared_port:
        log.info("SFU media: one UDP port (%d) per bind address, shared by every connection",
                 net.shared_port)
    else:
        log.info("SFU media: a UDP socket per connection (ports %s)",
                 f"{net.port_min}-{net.port_max}" if net.port_min else "any free")
    return SfuServer(SfuConfig(net=net, video_codec=settings.sfu_video_codec), clock)


def ice_servers(settings: Settings, clock: Clock) -> IceServers:
    """The ICE servers handed to clients, per region, TURN with credentials (turn.servers)."""
    return IceServers(settings.ice_servers, dict(settings.ice_servers_by_region),
                      secrets=settings.turn_secrets, lifetime=settings.turn_ttl, clock=clock)


def make_accounts(settings: Settings, store: Store, live: LiveState,
                  clock: Clock, bus: Bus | None = None) -> AccountService:
    policy = SessionPolicy(guest_ttl=timedelta(days=settings.guest_session_days),
                           permanent_ttl=timedelta(days=settings.session_days))
    return AccountService(store, live, BcryptHasher(settings.bcrypt_rounds), clock, policy,
                          bus=bus)


def make_signup_limiter(settings: Settings, live: LiveState, clock: Clock) -> SignupLimiter:
    """Sign-up budgets; challenges are signed with the node secret, so any node checks any."""
    policy = SignupPolicy(
        per_hour=settings.rate_signup_per_hour,
        network_per_hour=settings.rate_signup_network_per_hour,
        ceiling_per_hour=settings.rate_signup_ceiling_per_hour,
        network_ceiling_per_hour=settings.rate_signup_network_ceiling_per_hour,
        base_bits=settings.signup_challenge_bits,
        max_bits=settings.signup_challenge_max_bits,
    )
    return SignupLimiter(live, Challenges(node_secret(settings), clock), clock, policy)


def make_api_context(services: Services,
                     notify_intro: Callable[[], None] | None = None) -> ApiContext:
    settings = services.settings
    uploads = settings.data_dir / "uploads"
    # An upload in progress does not survive a restart: what a crash left staged goes.
    for stale in uploads.glob("*.part") if uploads.is_dir() else ():
        stale.unlink(missing_ok=True)
    return ApiContext(
        accounts=make_accounts(settings, services.store, services.live, services.clock,
                               services.bus),
        store=services.store,
        blobs=services.blobs,
        limiter=RateLimiter(services.live),
        signups=make_signup_limiter(settings, services.live, services.clock),
        logins=LoginLimiter(services.live, settings.rate_login_per_hour),
        clock=services.clock,
        limits=Limits(token_per_minute=settings.rate_token_per_minute),
        trusted_proxies=parse_networks(settings.trusted_proxies),
        uploads=uploads,
        intro_limits=IntroLimits(max_seconds=float(settings.intro_max_seconds)),
        notify_intro=notify_intro or (lambda: None),
    )


async def open_signaling(app: web.Application, services: Services) -> SignalingContext:
    settings = services.settings
    timers = Timers(services.clock)
    presence = Presence(services.live, services.bus)
    recordings = Recordings(services.store, services.blobs, settings.node_id)
    await recordings.recover()
    placement = LocalPlacement(app.get(SFU), settings.node_id, settings.public_url,
                               recordings=settings.data_dir / "recordings",
                               on_recorded=recordings.finish)
    rules = CallRules(
        min_seconds=settings.call_min_seconds, max_seconds=settings.call_max_seconds,
        default_seconds=settings.call_default_seconds, invite_ttl=settings.invite_ttl,
        reconnect_grace=settings.reconnect_grace,
        cooldown=timedelta(hours=settings.cooldown_hours), recording=settings.recording,
    )
    calls = CallService(store=services.store, live=services.live, bus=services.bus,
                        presence=presence, placement=placement, timers=timers,
                        clock=services.clock, rules=rules, node_secret=node_secret(settings),
                        ice=ice_servers(settings, services.clock), region=settings.region,
                        node_id=settings.node_id)
    await calls.start()
    trusted = parse_networks(settings.trusted_proxies)
    gateway = Gateway(
        accounts=app[API].accounts, presence=presence, calls=calls, bus=services.bus,
        clock=services.clock,
        limits=SocketLimits(per_user=settings.ws_per_user, per_ip=settings.ws_per_ip,
                            unauthenticated=settings.ws_unauthenticated),
        client_ip=lambda request: client_ip(
            request.remote, request.headers.getall("X-Forwarded-For", []), trusted),
    )
    await gateway.start()
    keeper = NodeKeeper(calls=calls, gateway=gateway, live=services.live,
                        node_id=settings.node_id)
    await keeper.beat()  # vouch first, so the sweep below knows this node reaches the database
    finished = await calls.sweep()
    if finished:
        log.info("finished %d calls left over by a node that stopped", finished)

    async def beat_again() -> None:
        timers.call_at(services.clock.time() + keeper.interval, "beat", beat_again)
        await keeper.beat()

    async def sweep_again() -> None:
        timers.call_at(services.clock.time() + SWEEP_INTERVAL, "sweeper", sweep_again)
        await calls.sweep()

    timers.call_at(services.clock.time() + keeper.interval, "beat", beat_again)
    timers.call_at(services.clock.time() + SWEEP_INTERVAL, "sweeper", sweep_again)
    return SignalingContext(api=app[API], presence=presence, gateway=gateway, calls=calls,
                            timers=timers, keeper=keeper, recordings=recordings)


def make_blob_store(settings: Settings, clock: Clock) -> BlobStore:
    if settings.s3_bucket:
        return S3BlobStore(
            settings.s3_bucket,
            region=settings.s3_region,
            endpoint_url=settings.s3_endpoint_url,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            prefix=settings.s3_prefix,
        )
    return LocalBlobStore(Path(settings.blob_dir), settings.public_url, secret_key(settings), clock)


async def open_services(settings: Settings, clock: Clock, blobs: BlobStore) -> Services:
    ensure_private_dir(settings.data_dir)
    store: Store = SqlStore(create_engine(settings.database_url), clock)
    live: LiveState
    bus: Bus
    if settings.redis_url:
        live = RedisLiveState(settings.redis_url, prefix=settings.redis_prefix, clock=clock)
        bus = RedisBus(settings.redis_url, prefix=settings.redis_prefix)
    else:
        live = MemoryLiveState(clock)
        bus = MemoryBus()
    return Services(settings, clock, store, live, bus, blobs)


def build_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    clock = clock or SystemClock()
    blobs = make_blob_store(settings, clock)
    registry, gauges = new_registry()
    metrics = HttpMetrics(registry)
    app = web.Application(
        middlewares=[request_id_middleware, metrics_middleware(metrics), error_middleware,
                     cors_preflight(settings.cors_origins)]
    )
    app.on_response_prepare.append(security_headers(
        public_url=settings.public_url, cors_origins=settings.cors_origins,
        image_url=settings.s3_endpoint_url if settings.s3_bucket else None,
    ))
    app[SETTINGS] = settings
    app[REGISTRY] = registry
    gauges.add("napalmsky_ws_connections", "Authenticated /ws sockets open on this node.",
               lambda: float(len(app[SIGNALING].gateway.connections)) if SIGNALING in app
               else 0.0)
    app[BODY_TIMEOUT] = settings.http_body_timeout

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        context.node_id.set(settings.node_id)
        log.info("mode %s; node %s in region %s; roles %s", describe_mode(settings),
                 settings.node_id, settings.region, ",".join(sorted(settings.roles)))
        services = await open_services(settings, clock, blobs)
        app[SERVICES] = services
        worker: IntroVideoWorker | None = None
        if Role.WORKER in settings.roles:
            # Media jobs: off the event loop (the transcode is a child process), one at a time.
            worker = IntroVideoWorker(services.store, services.blobs, clock, WorkerConfig(
                worker=settings.node_id, scratch=settings.data_dir / "work"))
            await worker.start()
        app[API] = make_api_context(services, worker.notify if worker is not None else None)
        runner: asyncio.Task[None] | None = None
        try:
            if Role.SIGNALING in settings.roles:
                app[SIGNALING] = await open_signaling(app, services)
                runner = asyncio.ensure_future(app[SIGNALING].timers.run())
            yield
        finally:
            if runner is not None:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
            if SIGNALING in app:
                await app[SIGNALING].gateway.close()
                await app[SIGNALING].calls.close()
            if worker is not None:
                await worker.close()
            await services.close()

    app.cleanup_ctx.append(services_ctx)

    async def close_sockets(app: web.Application) -> None:
        """On shutdown, before aiohttp waits for handlers: hang up long-lived sockets so
        clients hear 1001 (going away) at once and reconnect elsewhere."""
        if SIGNALING in app:
            # The calls this node hosts end now, truthfully, while their sockets still listen.
            await app[SIGNALING].calls.end_hosted(CallEndReason.NODE_LOST)
            await app[SIGNALING].gateway.close()
        if SFU in app:
            await app[SFU].close()

    app.on_shutdown.append(close_sockets)

    def probe(name: str) -> Probe:
        async def check() -> None:
            services = app[SERVICES]
            if name == "database":
                await services.store.ping()
            elif name == "redis":
                await services.live.ping()
            else:
                await services.blobs.ping()

        return check

    probes = {"database": probe("database")}
    if settings.redis_url:
        probes["redis"] = probe("redis")
    if settings.s3_bucket:
        probes["blobs"] = probe("blobs")
    app.add_routes(health_routes(probes, settings.ready_timeout, metrics))
    app.add_routes(metrics_routes(registry))
    if isinstance(blobs, LocalBlobStore):
        app.add_routes(blob_routes(blobs))
    if Role.SFU in settings.roles:
        sfu = make_sfu(settings, clock)
        app[SFU] = sfu
        app.add_routes(sfu_routes(sfu, node_secret(settings), clock))
        app.add_routes(sfu_admin_routes(sfu, settings.operator_token))
        registry.register(SfuCollector(sfu))

        async def sfu_ctx(app: web.Application) -> AsyncIterator[None]:
            yield
            await sfu.close()

        app.cleanup_ctx.append(sfu_ctx)
    endpoints = []
    if Role.SIGNALING in settings.roles:
        endpoints += signaling_endpoints(lambda: app[SIGNALING])
    if Role.API in settings.roles:
        endpoints += api_endpoints(lambda: app[API])
    if endpoints:
        app.add_routes(endpoint_routes([*endpoints, openapi_endpoint(endpoints, __version__)]))
    app.add_routes(_web_routes())
    return app


def _web_routes() -> list[web.AbstractRouteDef]:
    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    return [web.get("/", index), web.static("/static", STATIC_DIR)]
