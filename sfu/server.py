"""The SFU of one node: rooms by id, and the interface signaling drives.

Signaling creates a room when a call is accepted, hands each participant a join token, and
closes the room when the call ends. It learns what happens to the media from the events it
subscribes to (a participant's media connected, failed or left; a room closed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from core.clock import Clock
from core.errors import AlreadyExists, NotFound
from sfu.events import CloseReason, RoomClosed, SfuEvent
from sfu.internals import NetworkConfig, SfuCertificate, check_versions
from sfu.mux import UdpMux
from sfu.router import Router
from sfu.srtp import check_version as check_srtp_version
from sfu.stats import ForwardLatency, Totals
from sfu.transport import CONNECT_TIMEOUT, Transport

log = logging.getLogger(__name__)

Listener = Callable[[SfuEvent], None]
CERTIFICATE_LIFETIME = 24 * 3600.0  # seconds one DTLS certificate serves new rooms


@dataclass(frozen=True, slots=True)
class SfuConfig:
    net: NetworkConfig
    video_codec: str = "vp8"
    connect_timeout: float = CONNECT_TIMEOUT


class SfuServer:
    def __init__(self, config: SfuConfig, clock: Clock) -> None:
        check_versions()
        check_srtp_version()
        self.config = config
        self.clock = clock
        self.rooms: dict[str, Router] = {}
        self._listeners: list[Listener] = []
        self.closed = False
        self._retired = Totals()  # what closed rooms had counted
        self.latency = ForwardLatency()
        self._certificate = SfuCertificate.generateCertificate()
        self._certificate_at = clock.monotonic()
        # One UDP port for every connection: bound now, so that a port in use fails the start.
        self.mux: UdpMux | None = None
        if config.net.shared_port:
            self.mux = UdpMux(config.net.bind, config.net.shared_port)

    # ---- the interface signaling calls ----

    def create_room(self, room_id: str) -> Router:
        if room_id in self.rooms:
            raise AlreadyExists("room already exists")
        if self.clock.monotonic() - self._certificate_at > CERTIFICATE_LIFETIME:
            # aiortc's certificates are valid for 30 days: a node running longer rolls its own.
            self._certificate = SfuCertificate.generateCertificate()
            self._certificate_at = self.clock.monotonic()
        router = Router(
            room_id, net=self.config.net, video_codec=self.config.video_codec,
            clock=self.clock, emit=self._emit, connect_timeout=self.config.connect_timeout,
            certificate=self._certificate, latency=self.latency, mux=self.mux,
        )
        self.rooms[room_id] = router
        return router

    async def close_room(self, room_id: str, reason: str) -> None:
        router = self.rooms.pop(room_id, None)
        if router is None:
            return
        await router.close(CloseReason.ROOM_CLOSED)
        self._retired.add(router.retired)
        self._emit(RoomClosed(room_id, reason))

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every event; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # ---- used by the join endpoint ----

    async def join(self, room_id: str, user_id: str) -> Transport:
        router = self.rooms.get(room_id)
        if router is None or router.closed:
            raise NotFound("room not found")
        return await router.join(user_id)

    def totals(self) -> Totals:
        totals = Totals()
        totals.add(self._retired)
        for router in self.rooms.values():
            totals.add(router.totals())
        return totals

    def participant_count(self) -> int:
        return sum(len(router.transports) for router in self.rooms.values())

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for room_id in list(self.rooms):
            await self.close_room(room_id, CloseReason.NODE_SHUTDOWN.value)
        if self.mux is not None:
            self.mux.close()

    def _emit(self, event: SfuEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("SFU event listener failed on %s", type(event).__name__)
