"""Transport: one participant's WebRTC connection to the SFU.

It answers the participant's offers (sfu/negotiation.py), runs ICE (with restarts) and DTLS
(sfu/internals.py), and owns the media path: every datagram is handled where the socket
delivers it, synchronously. RTP and RTCP are admitted by SSRC before decryption
(sfu/demux.py), decrypted, and handed to the producers (what the participant publishes) and
consumers (what it receives). RTCP is parsed by sfu/rtp.py one packet at a time: a malformed
packet is counted and dropped, never allowed to end the connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pylibsrtp

from core.clock import Clock
from core.errors import InvalidArgument
from sfu.consumer import Consumer
from sfu.demux import Route, SourceTable
from sfu.events import CloseReason
from sfu.internals import DtlsSrtp, IceAgent, IceGeneration, NetworkConfig, SfuCertificate
from sfu.internals import random_ssrc as _random_ssrc
from sfu.mux import UdpMux
from sfu.negotiation import KINDS, LocalParameters, Negotiation, negotiate, remote_ice_credentials
from sfu.producer import Producer
from sfu.rtp import (
    TRANSPORT_CC_URI,
    RtcpFir,
    RtcpNack,
    RtcpPli,
    RtcpReceiverReport,
    RtcpRemb,
    RtcpSenderReport,
    iter_rtcp,
)
from sfu.sdp import parse as parse_sdp
from sfu.srtp import SEND_VIEW, SrtpSession
from sfu.stats import LATENCY_SAMPLE_EVERY
from sfu.twcc import TransportCcRecorder, transport_sequence_number

if TYPE_CHECKING:
    from sfu.router import Router

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
RTCP_INTERVAL = 1.0  # seconds between report rounds (randomised 0.5x..1.5x, RFC 3550 6.2)
TWCC_INTERVAL = 0.05  # seconds between transport-cc feedback packets while media arrives
_SSRC = struct.Struct("!I")
EARLY_DATAGRAMS = 512  # SRTP datagrams kept while our side of the DTLS handshake finishes


class Transport:
    def __init__(
        self, router: Router, user_id: str, net: NetworkConfig, video_codec: str, clock: Clock,
        certificate: SfuCertificate, connect_timeout: float = CONNECT_TIMEOUT,
        mux: UdpMux | None = None,
    ) -> None:
        self.router = router
        self.user_id = user_id
        self.clock = clock
        self.video_codec = video_codec
        self.certificate = certificate
        self.producers: dict[str, Producer] = {}
        self.consumers: dict[str, Consumer] = {
            kind: Consumer(self, kind, _random_ssrc(), _random_ssrc(), clock) for kind in KINDS
        }
        self.sources = SourceTable()
        self.negotiation: Negotiation | None = None
        self.connected = False
        self.closed = False
        self.close_reason: CloseReason | None = None
        self.closed_event = asyncio.Event()
        self.ice = IceAgent(net, self._on_datagram, self._on_ice_state, mux)
        self.dtls = DtlsSrtp(self.ice, certificate)
        self.dtls.on_statechange(self._on_dtls_state)
        self._rx: SrtpSession | None = None
        self._tx: SrtpSession | None = None
        self._rtcp_ssrc = _random_ssrc()
        self._cname = secrets.token_hex(8)
        self._session_id = random.randrange(1 << 62)
        self._answers = 0
        self._closing: asyncio.Task[None] | None = None
        self._connect_timeout = connect_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._dtls_task: asyncio.Task[None] | None = None
        self._rtcp_task: asyncio.Task[None] | None = None
        self._twcc: TransportCcRecorder | None = None
        self._twcc_id: int | None = None
        self._twcc_timer: asyncio.TimerHandle | None = None
        self._early: list[tuple[bytes, float]] | None = []  # SRTP before our keys were ready
        self._negotiating = asyncio.Lock()
        # counters (what a peer sent that we did not use)
        self.srtp_errors = 0
        self.malformed_rtcp = 0
        self.stray_datagrams = 0
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._latency = router.latency
        self._unsampled = 0  # RTP packets until the next one whose forwarding is timed

    # ---- signaling: offer/answer ----

    async def answer(self, offer_sdp: str) -> str:
        """Apply a client's offer (the first one, a renegotiation or an ICE restart) and return
        our answer with all our candidates. Raises InvalidArgument for an offer we cannot use."""
        async with self._negotiating:
            return await self._answer(offer_sdp)

    async def _answer(self, offer_sdp: str) -> str:
        if self.closed:
            raise InvalidArgument("the connection is closed")
        try:
            offer = parse_sdp(offer_sdp)
        except ValueError as exc:
            raise InvalidArgument(f"invalid offer: {exc}") from None
        credentials = remote_ice_credentials(offer)
        previous = self.negotiation
        restart = previous is not None and credentials is not None and credentials != (
            previous.remote_ufrag, previous.remote_pwd)
        generation: IceGeneration | None = self.ice.local
        fresh = generation is None or restart
        if fresh:
            generation = await self.ice.new_generation()
        assert generation is not None
        try:
            self._answers += 1
            local = LocalParameters(
                ice_ufrag=generation.local_ufrag, ice_pwd=generation.local_pwd,
                fingerprint=self.certificate.sha256,
                candidates=generation.local_candidates(),
                ssrcs={k: (c.ssrc, c.rtx_ssrc) for k, c in self.consumers.items()},
                cname=self._cname, stream_id=f"napalmsky-{self._cname[:8]}",
                session_id=self._session_id, session_version=1 + self._answers,
            )
            try:
                negotiation = negotiate(offer, video_codec=self.video_codec, local=local,
                                        previous=previous)
            except ValueError as exc:
                raise InvalidArgument(f"invalid offer: {exc}") from None
        except BaseException:
            if fresh:
                await generation.close()
            raise
        if self._is_closed():  # it may have closed while we gathered
            if fresh:
                await generation.close()
            raise InvalidArgument("the connection is closed")
        self.negotiation = negotiation
        self._apply(negotiation)
        if fresh:
            await self.ice.start(generation, negotiation.remote_ufrag, negotiation.remote_pwd,
                                 negotiation.remote_candidates, negotiation.remote_ice_lite)
        if previous is None and self._timer is None and not self.connected:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(
                self._connect_timeout, self.close_soon, CloseReason.CONNECT_TIMEOUT
            )
        return negotiation.answer

    def _is_closed(self) -> bool:
        return self.closed

    def _apply(self, negotiation: Negotiation) -> None:
        self.sources.configure(negotiation)
        twcc_id: int | None = None
        for kind in KINDS:
            section = negotiation.accepted(kind)
            self.consumers[kind].set_section(section)
            producer = self.producers.get(kind)
            if section is not None and section.receives:
                if TRANSPORT_CC_URI in section.extensions:
                    twcc_id = section.extensions[TRANSPORT_CC_URI]
                if producer is None:
                    producer = Producer(self, section, self.clock)
                    self.producers[kind] = producer
                    self.router.producer_added(self, producer)
                else:
                    producer.update(section)
            elif producer is not None:
                del self.producers[kind]
                producer.close(CloseReason.PRODUCER_CLOSED)
        self._twcc_id = twcc_id
        if twcc_id is not None and self._twcc is None:
            self._twcc = TransportCcRecorder(self._rtcp_ssrc)
        self.router.publishing_changed(self)

    @property
    def publishes(self) -> frozenset[str]:
        """The kinds this participant sends us."""
        return frozenset(self.producers)

    def notify(self, message: dict[str, Any]) -> None:
        """Tell this participant's client something (sent on its SFU socket)."""
        for listener in list(self.listeners):
            try:
                listener(message)
            except Exception:
                log.exception("listener failed")

    # ---- connection state ----

    def _on_ice_state(self, state: str) -> None:
        if self.closed:
            return
        if state == "connected" and self._dtls_task is None and self.negotiation is not None:
            self._dtls_task = self.router.spawn(self._start_dtls())
        elif state == "failed":
            self.close_soon(CloseReason.ICE_FAILED)

    async def _start_dtls(self) -> None:
        negotiation = self.negotiation
        assert negotiation is not None
        ok = await self.dtls.start(negotiation.dtls_role, negotiation.remote_fingerprints)
        if self.closed:
            return
        if not ok:
            self.close_soon(CloseReason.DTLS_FAILED)
            return
        assert self.dtls.rx is not None and self.dtls.tx is not None
        self._rx, self._tx = SrtpSession(self.dtls.rx), SrtpSession(self.dtls.tx)
        early, self._early = self._early or [], None
        self.connected = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._rtcp_task = asyncio.ensure_future(self._run_rtcp())
        for consumer in self.consumers.values():
            consumer.on_connected()
        self.router.transport_connected(self)
        for data, arrival in early:
            self._on_datagram(data, arrival)

    def _on_dtls_state(self, state: str) -> None:
        if state == "closed" and self.connected and not self.closed:
            self.close_soon(CloseReason.LEFT)  # the peer shut DTLS down: it hung up

    # ---- the media path: one datagram at a time, where the socket delivers it ----

    def _on_datagram(self, data: bytes, arrival: float,
                     source: tuple[str, int] | None = None) -> None:
        rx = self._rx
        if rx is not None and len(data) >= 12 and 127 < data[0] < 192 and not (
                192 <= data[1] <= 223):
            # SRTP once the keys are ready (RFC 7983 first byte, RFC 5761 second byte): the
            # forwarding path, with nothing in between.
            try:
                self._receive_rtp(rx, data, arrival)
            except Exception:
                self.stray_datagrams += 1
                log.exception("datagram handling failed for %s", self.user_id)
            return
        if source is not None and data and 19 < data[0] < 64:
            # DTLS only from the peer's candidate addresses: a stranger who learned our port
            # must not feed the handshake (SRTP needs no such check: it is authenticated). Not
            # only from the pair nominated first: the browser may move to another valid pair,
            # and its last flight then comes from there. (Before a pair is selected a
            # ClientHello may come early: it waits in the queue.)
            current = self.ice.current
            remote = current.remote_address() if current is not None else None
            if remote is not None and remote != source and not self.ice.knows(source):
                self.stray_datagrams += 1
                return
        try:
            self._handle_datagram(data, arrival)
        except Exception:
            self.stray_datagrams += 1
            log.exception("datagram handling failed for %s", self.user_id)

    def _handle_datagram(self, data: bytes, arrival: float) -> None:
        """One datagram from the peer, received at `arrival` (monotonic seconds)."""
        if not data:
            self.stray_datagrams += 1
            return
        first = data[0]
        if 127 < first < 192:
            rx = self._rx
            if rx is None:
                # SRTP racing the end of our DTLS handshake (the peer may send as soon as its
                # side is done: bandwidth probes, the first keyframe): kept until the keys are
                # ready, with their arrival times.
                if self._early is not None and len(self._early) < EARLY_DATAGRAMS:
                    self._early.append((data, arrival))
                else:
                    self.stray_datagrams += 1
                return
            if len(data) >= 12 and 192 <= data[1] <= 223:
                self._receive_rtcp(rx, data)
            else:  # shorter than an RTP header (RTP itself took _on_datagram's fast path)
                self.stray_datagrams += 1
        elif 19 < first < 64:
            self.dtls.shim.feed(data)
        else:
            self.stray_datagrams += 1

    def _receive_rtp(self, rx: SrtpSession, data: bytes, arrival: float) -> None:
        ssrc = _SSRC.unpack_from(data, 8)[0]
        sources = self.sources
        route = sources.lookup(ssrc)
        tentative: Route | None = None
        if route is None:
            tentative = sources.classify(data, ssrc, self.clock.monotonic())
            if tentative is None:
                return
        try:
            plain = rx.unprotect(data)
        except pylibsrtp.Error:
            self.srtp_errors += 1
            return
        if route is None:
            assert tentative is not None
            route = tentative
            replaced = sources.learn(ssrc, route, self.clock.monotonic())
            if replaced is not None:
                try:
                    rx.session.remove_stream(replaced)
                except pylibsrtp.Error:
                    pass  # never decrypted anything: libsrtp has no state for it
        arrival_ms = int(arrival * 1000)
        if self._twcc_id is not None and self._twcc is not None:
            seq = transport_sequence_number(plain, self._twcc_id)
            if seq is not None:
                self._twcc.on_packet(seq, int(arrival * 1_000_000))
                if self._twcc_timer is None:
                    loop = asyncio.get_running_loop()
                    self._twcc_timer = loop.call_later(TWCC_INTERVAL, self._send_twcc)
        producer = self.producers.get(route.kind)
        if producer is not None:
            producer.on_rtp(plain, route.rtx, arrival_ms)
            if self._unsampled:
                self._unsampled -= 1
            else:
                self._unsampled = LATENCY_SAMPLE_EVERY - 1
                self._latency.observe(time.monotonic() - arrival)

    def _send_twcc(self) -> None:
        self._twcc_timer = None
        if self._twcc is None or self.closed:
            return
        media = self.sources.ssrc_of("video") or self.sources.ssrc_of("audio") or 0
        self._twcc.media_ssrc = media
        for packet in self._twcc.feedback(int(time.monotonic() * 1_000_000)):
            self.send_rtcp(packet)

    def _receive_rtcp(self, rx: SrtpSession, data: bytes) -> None:
        sender = int.from_bytes(data[4:8], "big")
        if not self.sources.rtcp_allowed(sender):
            self.malformed_rtcp += 1
            return
        try:
            plain = rx.session.unprotect_rtcp(data)
        except pylibsrtp.Error:
            self.srtp_errors += 1
            return
        self.sources.rtcp_seen(sender)
        for packet in iter_rtcp(plain):
            if packet is None:
                self.malformed_rtcp += 1
                continue
            try:
                self._on_rtcp_packet(packet)
            except Exception:
                self.malformed_rtcp += 1
                log.exception("RTCP handling failed for %s", self.user_id)

    def _consumer_for(self, ssrc: int) -> Consumer | None:
        for consumer in self.consumers.values():
            if ssrc in (consumer.ssrc, consumer.rtx_ssrc) and consumer.section is not None:
                return consumer
        return None

    def _on_rtcp_packet(self, packet: object) -> None:
        if isinstance(packet, (RtcpSenderReport, RtcpReceiverReport)):
            if isinstance(packet, RtcpSenderReport):
                route = self.sources.lookup(packet.ssrc)
                producer = self.producers.get(route.kind) if route is not None else None
                if producer is not None and not route.rtx:  # type: ignore[union-attr]
                    producer.on_sender_report(packet.ssrc, packet.ntp_timestamp,
                                              packet.rtp_timestamp)
            for block in packet.reports:
                consumer = self._consumer_for(block.ssrc)
                if consumer is not None:
                    consumer.on_receiver_report(block.fraction_lost, block.packets_lost,
                                                block.jitter, block.lsr, block.dlsr,
                                                block.highest_seq)
        elif isinstance(packet, RtcpNack):
            consumer = self._consumer_for(packet.media_ssrc)
            if consumer is not None:
                consumer.on_nack(packet.lost)
        elif isinstance(packet, RtcpPli):
            consumer = self._consumer_for(packet.media_ssrc)
            if consumer is not None:
                consumer.on_keyframe_request()
        elif isinstance(packet, RtcpFir):
            for ssrc, _seqnr in packet.entries[:4]:
                consumer = self._consumer_for(ssrc)
                if consumer is not None:
                    consumer.on_keyframe_request()
        elif isinstance(packet, RtcpRemb):
            for consumer in self.consumers.values():
                consumer.remb = packet.bitrate

    # ---- sending (used by producers and consumers) ----

    def send_rtp(self, data: bytes | bytearray) -> bool:
        """Protect and send one RTP packet held elsewhere (a retransmission); False when it
        could not go out (not connected, too long)."""
        length = len(data)
        if length > len(SEND_VIEW):
            return False
        SEND_VIEW[:length] = data
        return self.send_rtp_buffer(length)

    def send_rtp_buffer(self, length: int) -> bool:
        """Protect in place and send the `length`-byte RTP packet a consumer wrote at the start
        of `sfu.srtp.SEND_VIEW` (the forwarding path: no copy); False when it could not go out."""
        tx = self._tx
        if tx is None or self.closed:
            return False
        try:
            protected = tx.protect_in_place(length)
        except pylibsrtp.Error:
            return False
        return self.ice.send(protected)

    def send_rtcp(self, data: bytes) -> bool:
        """Protect and send one (compound) RTCP packet."""
        tx = self._tx
        if tx is None or self.closed:
            return False
        try:
            protected = tx.session.protect_rtcp(data)
        except pylibsrtp.Error:
            return False
        return self.ice.send(protected)

    def rtcp_ssrc(self, kind: str) -> int:
        """The SSRC our RTCP about `kind` goes out under (our sender's where we send it)."""
        consumer = self.consumers.get(kind)
        return consumer.ssrc if consumer is not None else self._rtcp_ssrc

    # ---- RTCP: one round per interval for the whole transport, not a timer per track ----

    async def _run_rtcp(self) -> None:
        while not self.closed:
            await asyncio.sleep(RTCP_INTERVAL * (0.5 + random.random()))
            try:
                for datagram in self.rtcp_round():
                    self.send_rtcp(datagram)
            except Exception:
                log.exception("RTCP round failed for %s", self.user_id)

    def rtcp_round(self) -> list[bytes]:
        """This round's compound RTCP packets: per kind, an SR for what we sent (or an RR),
        with a report block for what we received, then REMB and NACK retries."""
        now = self.clock.monotonic()
        datagrams: list[bytes] = []
        for kind in KINDS:
            consumer, producer = self.consumers[kind], self.producers.get(kind)
            consumer.meter.sample(consumer.octets, now)
            if producer is not None:
                producer.meter.sample(producer.octets, now)
            block = producer.report_block(now) if producer is not None else None
            sr = consumer.sender_report(now)
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
        if self._twcc_timer is not None:
            self._twcc_timer.cancel()
            self._twcc_timer = None
        for task in (self._rtcp_task, self._dtls_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for producer in self.producers.values():
            producer.close(CloseReason.TRANSPORT_CLOSED)
        for consumer in self.consumers.values():
            consumer.close(CloseReason.TRANSPORT_CLOSED)
        self._rx = self._tx = None
        self._early = None
        try:
            await self.dtls.stop()
            await self.ice.close()
        except Exception:
            log.exception("closing the connection of %s failed", self.user_id)
        self.closed_event.set()
        self.notify({"type": "closed", "reason": reason.value})
        self.router.transport_closed(self, reason)
