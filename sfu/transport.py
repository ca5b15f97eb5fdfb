"""Transport: one participant's WebRTC connection to the SFU (audio + video, sendrecv)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from core.clock import Clock
from sfu.consumer import Consumer
from sfu.events import CloseReason
from sfu.internals import Kind, NegotiatedStream, NetworkConfig, PeerSession, SessionHandler
from sfu.producer import Producer
from sfu.rtp import RtcpNack, RtcpReceiverReport, RtcpRemb, ntp_time

if TYPE_CHECKING:
    from sfu.router import Router

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
RTCP_INTERVAL = 1.0  # seconds between report rounds (randomised 0.5x..1.5x, RFC 3550 6.2)


class Transport(SessionHandler):
    def __init__(
        self, router: Router, user_id: str, net: NetworkConfig, video_codec: str, clock: Clock,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.router = router
        self.user_id = user_id
        self.clock = clock
        self.producers: dict[Kind, Producer] = {}
        self.consumers: dict[Kind, Consumer] = {
            kind: Consumer(self, kind, clock) for kind in ("audio", "video")
        }
        self.connected = False
        self.closed = False
        self.close_reason: CloseReason | None = None
        self.session = PeerSession(self, net, video_codec)
        self._closing: asyncio.Task[None] | None = None
        self._connect_timeout = connect_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._rtcp_task: asyncio.Task[None] | None = None
        self.closed_event = asyncio.Event()

    async def answer(self, offer_sdp: str) -> str:
        sdp = await self.session.answer(offer_sdp)
        if not self.connected and self._timer is None and not self.closed:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(
                self._connect_timeout, self.close_soon, CloseReason.CONNECT_TIMEOUT
            )
        return sdp

    # ---- SessionHandler: called by the peer session ----

    def on_rtp(self, data: bytes, kind: Kind, arrival_ms: int) -> Awaitable[None] | None:
        producer = self.producers.get(kind)
        return producer.on_rtp(data, arrival_ms) if producer is not None else None

    def on_receiving(self, stream: NegotiatedStream) -> None:
        if self.closed or stream.kind in self.producers:
            return
        producer = Producer(self, stream, self.clock)
        self.producers[stream.kind] = producer
        self.router.producer_added(self, producer)

    def on_sending(self, stream: NegotiatedStream) -> None:
        self.consumers[stream.kind].set_stream(stream)

    def on_nack(self, kind: Kind, lost: list[int]) -> Awaitable[None] | None:
        return self.consumers[kind].on_nack(lost)

    def on_keyframe_request(self, kind: Kind) -> None:
        self.consumers[kind].on_keyframe_request()

    def on_sender_report(self, kind: Kind, ntp_timestamp: int) -> None:
        producer = self.producers.get(kind)
        if producer is not None:
            producer.on_sender_report(ntp_timestamp)

    def on_receiver_report(self, kind: Kind, fraction_lost: int, packets_lost: int,
                           jitter: int, lsr: int, dlsr: int) -> None:
        self.consumers[kind].on_receiver_report(fraction_lost, packets_lost, jitter, lsr, dlsr)

    def on_remb(self, kind: Kind, bitrate: int) -> None:
        for consumer in self.consumers.values():
            consumer.remb = bitrate

    def on_state(self, state: str) -> None:
        if state == "connected" and not self.connected and not self.closed:
            self.connected = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._rtcp_task = asyncio.ensure_future(self._run_rtcp())
            self.router.transport_connected(self)
        elif state == "failed":
            ice_failed = self.session.pc.iceConnectionState == "failed"
            self.close_soon(CloseReason.ICE_FAILED if ice_failed else CloseReason.DTLS_FAILED)
        elif state == "closed" and not self.closed:
            # The peer shut DTLS down: it hung up.
            self.close_soon(CloseReason.LEFT)

    # ---- used by producers and consumers ----

    async def send_rtp(self, data: bytes | bytearray) -> bool:
        if self.closed:
            return False
        return await self.session.send_rtp(bytes(data))

    async def send_rtcp(self, data: bytes) -> bool:
        return await self.send_rtp(data)

    def rtcp_ssrc(self, kind: Kind) -> int:
        """The SSRC our RTCP about `kind` goes out under (our sender's, as aiortc does)."""
        return self.session.sender_ssrc(kind)

    async def send_pli(self, kind: Kind, media_ssrc: int) -> None:
        if not self.closed:
            await self.session.send_pli(kind, media_ssrc)

    # ---- RTCP: one round per interval for the whole transport, not a timer per track ----

    async def _run_rtcp(self) -> None:
        while not self.closed:
            await asyncio.sleep(RTCP_INTERVAL * (0.5 + random.random()))
            try:
                for datagram in self.rtcp_round():
                    await self.send_rtcp(datagram)
            except Exception:
                log.exception("RTCP round failed for %s", self.user_id)

    def rtcp_round(self) -> list[bytes]:
        """This round's compound RTCP packets: per kind, an SR for what we sent (or an RR),
        with a report block for what we received, then REMB and NACK retries."""
        now = self.clock.monotonic()
        ntp = ntp_time(self.clock.time())
        datagrams: list[bytes] = []
        for kind in ("audio", "video"):
            consumer, producer = self.consumers[kind], self.producers.get(kind)
            consumer.meter.sample(consumer.octets, now)
            if producer is not None:
                producer.meter.sample(producer.octets, now)
            block = producer.report_block(now) if producer is not None else None
            sr = consumer.sender_report(ntp, now)
            parts: list[bytes] = []
            if sr is not None:
                if block is not None:
                    sr.reports.append(block)
                parts.append(bytes(sr))
            elif block is not None:
                parts.append(bytes(RtcpReceiverReport(self.rtcp_ssrc(kind), [block])))
            if producer is not None and producer.ssrc is not None:
                bitrate = producer.remb_bitrate()
                if bitrate is not None and parts:
                    parts.append(bytes(RtcpRemb(self.rtcp_ssrc(kind), bitrate, [producer.ssrc])))
                retry = producer.nacks.due(now) if producer.nacks is not None else []
                if retry and parts:
                    parts.append(bytes(RtcpNack(self.rtcp_ssrc(kind), producer.ssrc, retry)))
            if parts:
                datagrams.append(b"".join(parts))
        return datagrams

    # ---- lifecycle ----

    def close_soon(self, reason: CloseReason) -> None:
        """Close from a callback that cannot await; the router owns the closing task."""
        if self._closing is None and not self.closed:
            self._closing = self.router.spawn(self.close(reason))

    async def close(self, reason: CloseReason) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._rtcp_task is not None:
            self._rtcp_task.cancel()
            await asyncio.gather(self._rtcp_task, return_exceptions=True)
        for producer in self.producers.values():
            await producer.close(CloseReason.TRANSPORT_CLOSED)
        for consumer in self.consumers.values():
            consumer.close(CloseReason.TRANSPORT_CLOSED)
        try:
            await self.session.close()
        except Exception:
            log.exception("closing the peer connection of %s failed", self.user_id)
        self.closed_event.set()
        self.router.transport_closed(self, reason)
