"""Every use of aiortc's and aioice's private internals, in one module.

aiortc is a WebRTC endpoint, not an SFU: its receiver decodes every track and its senders encode.
We keep what it does well (SDP, ICE, DTLS, SRTP) and take the media path over at these seams:

- `RTCDtlsTransport._handle_rtp_data(data, arrival_time_ms)`: each decrypted RTP datagram, before
  aiortc parses it. We replace it per transport instance and hand the bytes to the SFU.
- `RTCDtlsTransport._send_rtp(data)`: protects and sends a datagram; consumers send through it.
- `RTCDtlsTransport._register_rtp_receiver` / `_register_rtp_sender` / `_rtp_router`: the RTCP
  routing table, which we keep using so RTCP reaches our receiver and sender classes.
- `RTCRtpReceiver.receive/stop/_handle_rtcp_packet/_handle_rtp_packet`: replaced by
  `ForwardingReceiver` (no decoder thread, no jitter buffer, no RTCP task of its own).
- `RTCRtpSender.send/stop/_handle_rtcp_packet`: replaced by `ForwardingSender` (no 20 ms polling
  `_run_rtp`, no encoder; NACK and PLI/FIR go to the SFU's consumer).
- `RTCIceGatherer._connection` (an aioice `Connection`): its `gather_candidates` is replaced so
  host candidates bind the configured addresses within the configured UDP port range and announce
  the configured public addresses. aioice's `StunProtocol`, `Candidate`, `_protocols`,
  `_local_candidates`, `_local_candidates_start/_end` and `_components` are used for that.

The versions are pinned exactly in pyproject.toml; `check_versions()` and
tests/sfu/test_internals.py fail loudly when the installed aiortc or aioice differs or when one of
these attributes is gone.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from aioice import Candidate
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import Connection, StunProtocol, get_host_addresses
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import (
    RTCRtpCodecCapability,
    RTCRtpCodecParameters,
    RTCRtpParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)

from core.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)

AIORTC_VERSION = "1.16.0"
AIOICE_VERSION = "0.13.0"
UDP_SOCKET_BUFFER_SIZE = 1 << 21

Kind = str  # "audio" | "video"

# aiortc's receive-side bandwidth estimator (abs-send-time based), public module, reused as is.
BitrateEstimator = RemoteBitrateEstimator


def check_versions() -> None:
    """Refuse to run on an aiortc or aioice other than the one this module was written for."""
    for name, wanted in (("aiortc", AIORTC_VERSION), ("aioice", AIOICE_VERSION)):
        found = version(name)
        if found != wanted:
            raise RuntimeError(
                f"sfu.internals relies on {name} {wanted} private internals, found {found}"
            )


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """Where the SFU's media sockets live and what it tells clients about them."""

    bind: tuple[str, ...] = ()
    announce: tuple[str, ...] = ()
    port_min: int = 0
    port_max: int = 0
    ice_servers: tuple[RTCIceServer, ...] = ()


@dataclass(frozen=True, slots=True)
class NegotiatedStream:
    """What one side of a connection negotiated for one kind of media."""

    kind: Kind
    mid: str | None
    payload_type: int
    clock_rate: int
    codec: str
    rtx_payload_type: int | None
    extensions: dict[str, int]  # uri -> id
    ssrc: int | None = None  # our sender's SSRC (outgoing side only)
    rtx_ssrc: int | None = None


def _stream(kind: Kind, parameters: RTCRtpParameters, ssrc: int | None = None,
            rtx_ssrc: int | None = None) -> NegotiatedStream:
    primary: RTCRtpCodecParameters = parameters.codecs[0]
    rtx_pt = next(
        (c.payloadType for c in parameters.codecs
         if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == primary.payloadType),
        None,
    )
    return NegotiatedStream(
        kind=kind,
        mid=parameters.muxId or None,
        payload_type=primary.payloadType if primary.payloadType is not None else 0,
        clock_rate=primary.clockRate,
        codec=primary.mimeType.split("/", 1)[1].lower(),
        rtx_payload_type=rtx_pt,
        extensions={e.uri: e.id for e in parameters.headerExtensions},
        ssrc=ssrc,
        rtx_ssrc=rtx_ssrc,
    )


class SessionHandler:
    """What a PeerSession reports to its owner (the SFU transport). Override what you need."""

    def on_rtp(self, data: bytes, kind: Kind, arrival_ms: int) -> Awaitable[None] | None:
        """A decrypted RTP packet from the publisher (an RTX one included)."""
        return None

    def on_nack(self, kind: Kind, lost: list[int]) -> Awaitable[None] | None:
        return None

    def on_keyframe_request(self, kind: Kind) -> None: ...

    def on_receiver_report(self, kind: Kind, fraction_lost: int, packets_lost: int,
                           jitter: int, lsr: int, dlsr: int) -> None:
        """A subscriber's report block about our outgoing `kind` stream."""

    def on_remb(self, kind: Kind, bitrate: int) -> None:
        """A subscriber's bandwidth estimate for our outgoing streams."""

    def on_sender_report(self, kind: Kind, ntp_timestamp: int) -> None:
        """The publisher's sender report for its `kind` stream."""

    def on_receiving(self, stream: NegotiatedStream) -> None: ...

    def on_sending(self, stream: NegotiatedStream) -> None: ...

    def on_state(self, state: str) -> None: ...


class ForwardingReceiver(RTCRtpReceiver):
    """An RTCRtpReceiver that starts no decoder: the SFU takes the packets at the transport."""

    _napalm_session: PeerSession
    _napalm_started: bool

    async def receive(self, parameters: RTCRtpReceiveParameters) -> None:
        if self._napalm_started:
            return
        self._napalm_started = True
        self.transport._register_rtp_receiver(self, parameters)
        self._napalm_session._receiver_started(self, parameters)

    async def stop(self) -> None:
        if self._napalm_started:
            self._napalm_started = False
            self.transport._unregister_rtp_receiver(self)

    def _handle_disconnect(self) -> None:
        return None

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        self._napalm_session._publisher_rtcp(self, packet)

    async def _handle_rtp_packet(self, packet: Any, arrival_time_ms: int) -> None:
        # Never reached: RTP is taken at RTCDtlsTransport._handle_rtp_data.
        return None


class ForwardingSender(RTCRtpSender):
    """An RTCRtpSender with no track, no encoder and no polling loop."""

    _napalm_session: PeerSession
    _napalm_started: bool

    async def send(self, parameters: RTCRtpSendParameters) -> None:
        if self._napalm_started:
            return
        self._napalm_started = True
        self.transport._register_rtp_sender(self, parameters)
        self._napalm_session._sender_started(self, parameters)

    async def stop(self) -> None:
        if self._napalm_started:
            self._napalm_started = False
            self.transport._unregister_rtp_sender(self)

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        await self._napalm_session._subscriber_rtcp(self, packet)


def _bind_in_range(
    address: str, port_min: int, port_max: int
) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    ports: Sequence[int]
    if port_min == 0:
        ports = [0]
    else:
        count = port_max - port_min + 1
        start = random.randrange(count)
        ports = [port_min + (start + i) % count for i in range(count)]
    for port in ports:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_SOCKET_BUFFER_SIZE)
            sock.bind((address, port))
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
    raise Unavailable(f"no free UDP port on {address} in {port_min}-{port_max}")


def _install_gatherer(connection: Connection, net: NetworkConfig) -> None:
    """Replace aioice's host-candidate gathering with ours (bind, port range, announce)."""
    original = connection.get_component_candidates

    async def gather_candidates() -> None:
        if connection._local_candidates_start:
            return
        connection._local_candidates_start = True
        addresses = list(net.bind) or get_host_addresses(
            use_ipv4=connection._use_ipv4, use_ipv6=connection._use_ipv6
        )
        loop = asyncio.get_running_loop()
        for component in sorted(connection._components):
            for index, address in enumerate(addresses):
                sock = _bind_in_range(address, net.port_min, net.port_max)
                _, protocol = await loop.create_datagram_endpoint(
                    lambda: StunProtocol(connection), sock=sock
                )
                bound = protocol.transport.get_extra_info("sockname")
                host = net.announce[index] if net.announce else bound[0]
                protocol.local_candidate = Candidate(
                    foundation=candidate_foundation("host", "udp", host),
                    component=component,
                    transport="udp",
                    priority=candidate_priority(component, "host"),
                    host=host,
                    port=bound[1],
                    type="host",
                )
                connection._protocols.append(protocol)
                connection._local_candidates.append(protocol.local_candidate)
            if connection.turn_server is not None:
                # Relay candidates come from aioice itself (no host sockets of its own).
                connection._local_candidates += await original(component, addresses=[])
        connection._local_candidates_end = True

    connection.gather_candidates = gather_candidates  # type: ignore[method-assign]


def bind_peer_connection(pc: RTCPeerConnection, net: NetworkConfig) -> None:
    """Make every ICE gatherer of `pc` use `net` (bind addresses, port range, announce).

    Call after the transceivers exist and before the first local description is set.
    """
    transports = pc._RTCPeerConnection__iceTransports  # type: ignore[attr-defined]
    for ice_transport in transports:
        _install_gatherer(ice_transport.iceGatherer._connection, net)


def codec_preferences(kind: Kind, video_codec: str) -> list[RTCRtpCodecCapability]:
    """The codecs a room allows for `kind`: Opus for audio; the room's video codec."""
    capabilities = RTCRtpSender.getCapabilities(kind)
    wanted = "audio/opus" if kind == "audio" else f"video/{video_codec}"
    chosen = [c for c in capabilities.codecs if c.mimeType.lower() == wanted]
    if not chosen:
        raise InvalidArgument(f"codec {wanted} is not available")
    if kind == "video":  # retransmissions in their own stream (RFC 4588)
        chosen += [c for c in capabilities.codecs if c.mimeType.lower() == "video/rtx"]
    return chosen


class PeerSession:
    """One participant's RTCPeerConnection, with the media path handed to a SessionHandler."""

    def __init__(self, handler: SessionHandler, net: NetworkConfig, video_codec: str) -> None:
        self.handler = handler
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=list(net.ice_servers),
                             bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self._transceivers: dict[Kind, RTCRtpTransceiver] = {}
        self._pt_kind: dict[int, Kind] = {}
        self._ssrc_kind: dict[int, Kind] = {}
        self._closed = False
        for kind in ("audio", "video"):
            transceiver = self.pc.addTransceiver(kind, direction="sendrecv")
            transceiver.setCodecPreferences(codec_preferences(kind, video_codec))
            receiver, sender = transceiver.receiver, transceiver.sender
            receiver.__class__ = ForwardingReceiver
            sender.__class__ = ForwardingSender
            receiver._napalm_session = sender._napalm_session = self  # type: ignore[attr-defined]
            receiver._napalm_started = sender._napalm_started = False  # type: ignore[attr-defined]
            self._transceivers[kind] = transceiver
        dtls = self._dtls
        dtls._handle_rtp_data = self._handle_rtp_data  # type: ignore[method-assign]
        bind_peer_connection(self.pc, net)

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            handler.on_state(self.pc.connectionState)

    @property
    def _dtls(self) -> RTCDtlsTransport:
        transport: RTCDtlsTransport = self._transceivers["audio"].receiver.transport
        return transport

    def sender_ssrc(self, kind: Kind) -> int:
        ssrc: int = self._transceivers[kind].sender._ssrc
        return ssrc

    async def answer(self, offer_sdp: str) -> str:
        """Apply a client's offer and return our answer (all candidates included)."""
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except Exception as exc:  # aiortc raises ValueError, AssertionError, its own errors...
            log.debug("offer refused: %r", exc)
            raise InvalidArgument("invalid offer: the SDP could not be parsed or applied") from None
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        local = self.pc.localDescription
        return str(local.sdp)

    # ---- media path ----

    async def _handle_rtp_data(self, data: bytes, arrival_time_ms: int) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        ssrc = int.from_bytes(data[8:12], "big")
        kind = self._ssrc_kind.get(ssrc)
        if kind is None:
            kind = self._pt_kind.get(data[1] & 0x7F)
            if kind is None:
                return
            self._ssrc_kind[ssrc] = kind
        pending = self.handler.on_rtp(data, kind, arrival_time_ms)
        if pending is not None:
            await pending

    async def send_rtp(self, data: bytes) -> bool:
        """Protect and send one RTP or RTCP datagram; False when the connection is not up."""
        try:
            await self._dtls._send_rtp(data)
        except ConnectionError:
            return False
        return True

    def _receiver_started(self, receiver: RTCRtpReceiver, params: RTCRtpReceiveParameters) -> None:
        kind = self._kind_of_receiver(receiver)
        for codec in params.codecs:
            if codec.payloadType is not None:
                self._pt_kind[codec.payloadType] = kind
        for encoding in params.encodings:
            self._ssrc_kind[encoding.ssrc] = kind
        self.handler.on_receiving(_stream(kind, params))

    def _sender_started(self, sender: RTCRtpSender, params: RTCRtpSendParameters) -> None:
        kind = sender.kind
        self.handler.on_sending(_stream(kind, params, sender._ssrc, sender._rtx_ssrc))

    def _publisher_rtcp(self, receiver: RTCRtpReceiver, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpSrPacket):
            self.handler.on_sender_report(
                self._kind_of_receiver(receiver), packet.sender_info.ntp_timestamp
            )

    async def _subscriber_rtcp(self, sender: RTCRtpSender, packet: AnyRtcpPacket) -> None:
        kind = sender.kind
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            pending = self.handler.on_nack(kind, list(packet.lost))
            if pending is not None:
                await pending
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            self.handler.on_keyframe_request(kind)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, _ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            self.handler.on_remb(kind, bitrate)
        elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == sender._ssrc:
                    self.handler.on_receiver_report(
                        kind, report.fraction_lost, report.packets_lost, report.jitter,
                        report.lsr, report.dlsr,
                    )

    def _kind_of_receiver(self, receiver: RTCRtpReceiver) -> Kind:
        for kind, transceiver in self._transceivers.items():
            if transceiver.receiver is receiver:
                return kind
        raise LookupError("unknown receiver")

    async def send_pli(self, kind: Kind, media_ssrc: int) -> None:
        """Ask the publisher for a keyframe of its `kind` stream."""
        await self._transceivers[kind].receiver._send_rtcp_pli(media_ssrc)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.pc.close()

