"""Every use of aiortc's and aioice's private internals, in one module.

The SFU writes its own SDP answers (sfu/negotiation.py) and owns the media path; from aiortc and
aioice it keeps ICE connectivity checks (aioice `Connection`), the DTLS handshake and the SRTP
keys (aiortc `RTCDtlsTransport`). The seams:

- aioice `Connection`: host candidates are gathered by `_gather` (configured bind addresses,
  UDP port range, announced public addresses) through `_protocols`, `_local_candidates`,
  `_local_candidates_start/_end`, `StunProtocol.local_candidate`; `get_component_candidates`
  is called with no host address for TURN relay candidates. Our sockets are read by
  `sfu.udp.UdpReader` (recvmsg with kernel receive timestamps), which hands STUN to aioice's
  `StunProtocol.datagram_received` and everything else straight to the SFU. A connection's own
  socket (`DatagramSocket`, port range mode) stands in for asyncio's datagram transport
  (`StunProtocol.transport`, `connection_made`, `connection_lost`). With one shared port
  (`NetworkConfig.shared_port`), sfu/mux.py's `UdpMux` owns the sockets and each ICE session
  gets a StunProtocol per shared socket whose transport is a `MuxView`; the mux routes STUN
  requests by our ufrag after checking MESSAGE-INTEGRITY (`aioice.stun.parse_message`,
  `Message.check_message_integrity`), responses by address or by the transaction ids in
  `StunProtocol.transactions`, and media by remote address. Datagrams relayed by TURN arrive
  through `Connection.data_received`, replaced per instance so they never queue in aioice.
  We send on the nominated pair (`_nominated[1]`, `CandidatePair.protocol/remote_addr`). DTLS is
  taken from any remote address of the session's check list (`_check_list`). An
  ICE restart (new ufrag/pwd in a re-offer, RFC 8445 section 9) is a new `Connection` with new
  credentials and sockets (or a new session on the shared ones); media keeps flowing on the
  old pair until the new one is nominated.
- aiortc `RTCDtlsTransport`: runs the handshake over `IceShim` (its `_recv`, `_send`, `role`),
  with `SfuCertificate` whose `_create_ssl_context` offers ECDHE suites for both ECDSA and RSA
  certificates (aiortc's own offers ECDSA only, so a browser with an RSA certificate fails);
  `_write_ssl` is replaced to flush a whole flight; after the handshake the SRTP sessions
  `_rx_srtp` / `_tx_srtp` (pylibsrtp) are used directly. SRTP and SRTCP never enter aiortc: its
  RTP/RTCP parsers do not run on our datagrams.

Two other modules lean on pinned internals for speed, each saying so: sfu/srtp.py calls
libsrtp on pylibsrtp's `Session._srtp` context through its cffi binding, and sfu/bwe.py swaps two
parts of aiortc's `RemoteBitrateEstimator` (`incoming_bitrate`, `estimator`) for cheaper ones.

The versions are pinned exactly in pyproject.toml; `check_versions()` and
tests/sfu/test_internals.py fail loudly when the installed aiortc or aioice differs or when one of
these attributes is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import pylibsrtp
from aioice import Candidate, Connection, ConnectionClosed
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import StunProtocol, get_host_addresses
from aiortc import RTCIceServer
from aiortc.rtcdtlstransport import (
    RTCCertificate,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
    SRTPProtectionProfile,
)
from aiortc.rtcicetransport import connection_kwargs
from OpenSSL import SSL

from sfu.mux import MuxSession, UdpMux
from sfu.ports import bind_udp_in_range
from sfu.udp import DatagramHandler, SocketTransport, UdpReader, send_datagram

log = logging.getLogger(__name__)

AIORTC_VERSION = "1.16.0"
AIOICE_VERSION = "0.13.0"
DTLS_QUEUE_LIMIT = 64  # DTLS records waiting for the handshake loop; more are dropped
RESTART_TIMEOUT = 30.0  # seconds an ICE restart may take to get a nominated pair

# ECDHE with ECDSA or RSA authentication (RFC 8827 section 6.5: browsers use either kind of
# certificate), AEAD first.
DTLS_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    b"ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA"
)


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
    shared_port: int = 0  # one UDP port for every connection (UdpMux); 0: a socket each
    ice_servers: tuple[RTCIceServer, ...] = ()


# --------------------------------------------------------------------------------------------
# Sockets and candidates


class DatagramSocket(SocketTransport):
    """One connection's own UDP socket (the port-range mode), read by `sfu.udp.UdpReader`
    (recvmsg with kernel receive timestamps; no aioice in the media path).

    STUN (RFC 8489 section 5: the two top bits zero) goes to aioice's StunProtocol; anything
    else to `handler(data, arrival, addr)`. It stands in for asyncio's datagram transport
    towards StunProtocol; closing it closes the socket.
    """

    def __init__(self, sock: socket.socket, protocol: StunProtocol,
                 handler: DatagramHandler) -> None:
        super().__init__(sock, protocol)
        self._stun_protocol = protocol
        # No routes: every datagram that is not STUN goes to the connection's handler.
        self._reader = UdpReader(sock, self._stun, {}, handler)
        self._reader.attach(asyncio.get_running_loop())
        protocol.connection_made(self)

    def _stun(self, data: bytes, addr: tuple[str, int]) -> None:
        # looked up per datagram: a test may replace it on the instance
        self._stun_protocol.datagram_received(data, addr)

    def _release(self) -> None:
        self._reader.detach()
        self._sock.close()


def _host_candidate(protocol: StunProtocol, host: str, port: int, index: int) -> None:
    protocol.local_candidate = Candidate(
        foundation=candidate_foundation("host", "udp", host),
        component=1,
        transport="udp",
        priority=candidate_priority(1, "host", 65535 - index),
        host=host,
        port=port,
        type="host",
    )


async def _gather(connection: Connection, net: NetworkConfig, handler: DatagramHandler,
                  session: MuxSession | None = None) -> None:
    """aioice's gathering with our bind addresses, port range and announced addresses: a
    socket of our own per bind address, or, given the session of a shared port (UdpMux), a
    StunProtocol on each shared socket."""
    connection._local_candidates_start = True
    protocols: list[StunProtocol] = []
    if session is not None:
        for index in range(len(session.mux.sockets)):
            protocol = StunProtocol(connection)
            session.attach(index, protocol)
            protocols.append(protocol)
    else:
        addresses = list(net.bind) or get_host_addresses(
            use_ipv4=connection._use_ipv4, use_ipv6=connection._use_ipv6
        )
        for address in addresses:
            sock = bind_udp_in_range(address, net.port_min, net.port_max)
            protocol = StunProtocol(connection)
            try:
                DatagramSocket(sock, protocol, handler)
            except BaseException:
                sock.close()
                raise
            protocols.append(protocol)
    for index, protocol in enumerate(protocols):
        bound = protocol.transport.get_extra_info("sockname")
        host = net.announce[index] if index < len(net.announce) else bound[0]
        _host_candidate(protocol, host, bound[1], index)
        connection._protocols.append(protocol)
        connection._local_candidates.append(protocol.local_candidate)
    if connection.turn_server is not None:
        # Relay candidates come from aioice itself (no host sockets of its own).
        connection._local_candidates += await connection.get_component_candidates(
            1, addresses=[]
        )
    connection._local_candidates_end = True


def _nominated_pair(connection: Connection) -> Any:
    return connection._nominated.get(1)


# --------------------------------------------------------------------------------------------
# ICE


class IceGeneration:
    """One ICE session (RFC 8445): local credentials, sockets and candidates, and checks."""

    def __init__(self, net: NetworkConfig, on_datagram: DatagramHandler,
                 mux: UdpMux | None = None) -> None:
        kwargs = connection_kwargs(list(net.ice_servers))
        if mux is not None:
            kwargs["local_username"] = mux.new_ufrag()  # the shared port's key: unique
        self.connection = Connection(ice_controlling=False, components=1, **kwargs)
        self.on_datagram = on_datagram
        self.mux = mux
        self.mux_session: MuxSession | None = None  # on the shared port: our registration
        # Datagrams relayed by a TURN server arrive through aioice: never into its queue.
        self.connection.data_received = (  # type: ignore[method-assign]
            lambda data, component: on_datagram(data, time.monotonic(), None)
        )
        self.net = net
        self.remote_ufrag: str | None = None
        self.checks: asyncio.Task[None] | None = None
        self.deadline: asyncio.TimerHandle | None = None  # an ICE restart's
        self.consent_lost = False
        self.closed = False
        # The send route, worked out again whenever aioice nominates another pair.
        self._nominated: dict[int, Any] = self.connection._nominated
        self._pair: Any = None
        self._sock: socket.socket | None = None  # the pair's socket, when it is one of ours
        self._addr: tuple[str, int] = ("", 0)

    @property
    def local_ufrag(self) -> str:
        return str(self.connection.local_username)

    @property
    def local_pwd(self) -> str:
        return str(self.connection.local_password)

    def local_candidates(self) -> list[str]:
        return [c.to_sdp() for c in self.connection.local_candidates]

    async def gather(self) -> None:
        if self.mux is not None:
            self.mux_session = self.mux.register(self.local_ufrag, self.local_pwd,
                                                 self.on_datagram)
        await _gather(self.connection, self.net, self.on_datagram, self.mux_session)

    def learn_nominated(self) -> None:
        """On the shared port: map the nominated pair's remote address to this session (a
        remote ICE-lite agent sends no checks that would map it)."""
        pair = _nominated_pair(self.connection)
        session = self.mux_session
        if session is not None and pair is not None and pair.protocol in session.protocols:
            host, port = pair.remote_addr
            session.learn((str(host), int(port)))

    async def add_remote_candidates(self, candidates: Sequence[str]) -> None:
        for line in candidates:
            try:
                candidate = Candidate.from_sdp(line)
            except (ValueError, IndexError):
                continue
            await self.connection.add_remote_candidate(candidate)

    def send(self, data: bytes | memoryview) -> bool:
        """Send one datagram on the nominated pair; False (dropped) when there is none.

        On a pair of our own sockets (`sfu.udp.SocketTransport`: a connection's socket or the
        shared port) the datagram goes straight to the socket's sendto; `data` may then be a
        view of a reused buffer (sfu.srtp). A pair relayed by TURN sends through aioice's
        TurnTransport, which frames it, on a copy."""
        pair = self._nominated.get(1)
        if pair is None or self.closed:
            return False
        if pair is not self._pair:
            transport = pair.protocol.transport
            self._pair = pair
            self._addr = pair.remote_addr
            self._sock = transport.sock if isinstance(transport, SocketTransport) else None
        sock = self._sock
        if sock is None:
            pair.protocol.transport.sendto(bytes(data), self._addr)
        else:
            send_datagram(sock, data, self._addr)
        return True

    @property
    def nominated(self) -> bool:
        return _nominated_pair(self.connection) is not None

    def remote_address(self) -> tuple[str, int] | None:
        pair = _nominated_pair(self.connection)
        if pair is None:
            return None
        host, port = pair.remote_addr
        return str(host), int(port)

    def knows(self, address: tuple[str, int]) -> bool:
        """Is `address` one of this session's candidate pairs' remote addresses (a candidate
        the peer signalled, or a peer-reflexive one learned from its authenticated checks)?
        The controlling agent may move to another valid pair at any time (RFC 8445 section
        8.1.1), so its DTLS can come from any of them, not only the one nominated first."""
        for pair in self.connection._check_list:
            host, port = pair.remote_addr
            if port == address[1] and host == address[0]:
                return True
        return False

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.checks is not None:
            self.checks.cancel()
            await asyncio.gather(self.checks, return_exceptions=True)
        try:
            await self.connection.close()
        finally:
            if self.mux_session is not None:
                self.mux_session.close()


class IceAgent:
    """The SFU's ICE for one transport: full ICE, controlled role, one component, restarts.

    States: "new", "checking", "connected", "failed", "closed" (reported to `on_state`).
    """

    def __init__(self, net: NetworkConfig, on_datagram: DatagramHandler,
                 on_state: Callable[[str], None], mux: UdpMux | None = None) -> None:
        self.net = net
        self.mux = mux  # the shared port's sockets; None: a socket per ICE session
        self._on_datagram = on_datagram
        self._on_state = on_state
        self.current: IceGeneration | None = None  # the generation media is sent on
        self.pending: IceGeneration | None = None  # a restart not nominated yet
        self.state = "new"
        self.restarts = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _set_state(self, state: str) -> None:
        if state != self.state and self.state != "closed":
            self.state = state
            self._on_state(state)

    async def new_generation(self) -> IceGeneration:
        """Gather a new ICE session (the first one, or an ICE restart's)."""
        generation = IceGeneration(self.net, self._on_datagram, self.mux)
        try:
            await generation.gather()
        except BaseException:
            await generation.close()
            raise
        return generation

    async def start(self, generation: IceGeneration, remote_ufrag: str, remote_pwd: str,
                    candidates: Sequence[str], remote_lite: bool = False) -> None:
        """Run connectivity checks of `generation` against the remote credentials.

        The first generation becomes current at once; a later one (an ICE restart) replaces
        the current one when its pair is nominated, and the old one is closed then.
        """
        connection = generation.connection
        connection.remote_username = remote_ufrag
        connection.remote_password = remote_pwd
        connection.remote_is_lite = remote_lite
        generation.remote_ufrag = remote_ufrag
        await generation.add_remote_candidates(candidates)
        if self.current is None:
            self.current = generation
            self._set_state("checking")
        else:
            if self.pending is not None and self.pending is not generation:
                self._abandon(self.pending)
            self.pending = generation
            self.restarts += 1
            generation.deadline = asyncio.get_running_loop().call_later(
                RESTART_TIMEOUT, self._restart_expired, generation)
        generation.checks = asyncio.ensure_future(self._run_checks(generation))

    def _abandon(self, generation: IceGeneration) -> None:
        if generation.deadline is not None:
            generation.deadline.cancel()
            generation.deadline = None
        if generation is self.pending:
            self.pending = None
        self._spawn(generation.close())

    def _restart_expired(self, generation: IceGeneration) -> None:
        """An ICE restart that never got a nominated pair: give it up. The old path goes on if
        it still works; if it died meanwhile, the connection has failed."""
        generation.deadline = None
        if generation is not self.pending:
            return
        self._abandon(generation)
        if self.current is None or self.current.consent_lost:
            self._set_state("failed")

    async def _run_checks(self, generation: IceGeneration) -> None:
        connection = generation.connection
        try:
            await connection.connect()
        except ConnectionError:
            if generation is self.current and self.pending is None:
                self._set_state("failed")
            return
        generation.learn_nominated()
        if generation is self.pending:
            if generation.deadline is not None:
                generation.deadline.cancel()
                generation.deadline = None
            old, self.current, self.pending = self.current, generation, None
            if old is not None:
                self._spawn(old.close())
        if generation is self.current:
            self._set_state("connected")
            # Consent freshness (RFC 7675): aioice closes the connection when it expires.
            while True:
                event = await connection.get_event()
                if event is None or isinstance(event, ConnectionClosed):
                    break
            generation.consent_lost = not generation.closed
            if generation is self.current and generation.consent_lost and self.pending is None:
                self._set_state("failed")  # with a restart under way, it decides

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def knows(self, address: tuple[str, int]) -> bool:
        """Has the current or pending ICE session a candidate pair with this remote address?"""
        return any(g is not None and g.knows(address) for g in (self.current, self.pending))

    def send(self, data: bytes | memoryview) -> bool:
        """Send a datagram on the selected pair; False (dropped) when there is none yet."""
        current = self.current
        return current.send(data) if current is not None else False

    @property
    def local(self) -> IceGeneration | None:
        """The generation whose credentials the latest answer carries."""
        return self.pending or self.current

    async def close(self) -> None:
        self.state = "closed"
        for generation in (self.pending, self.current):
            if generation is not None:
                await generation.close()
        self.pending = self.current = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


# --------------------------------------------------------------------------------------------
# DTLS and SRTP


class SfuCertificate(RTCCertificate):
    """The SFU's DTLS certificate (ECDSA P-256), offering suites for either kind of peer."""

    def _create_ssl_context(self, srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
        ctx = super()._create_ssl_context(srtp_profiles)
        ctx.set_cipher_list(DTLS_CIPHERS)
        return ctx

    @property
    def sha256(self) -> str:
        return next(f.value for f in self.getFingerprints() if f.algorithm == "sha-256")


class IceShim:
    """What RTCDtlsTransport needs of an RTCIceTransport: DTLS records in, datagrams out."""

    def __init__(self, ice: IceAgent) -> None:
        self.ice = ice
        self.role = "controlled"
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def feed(self, data: bytes) -> None:
        if self.queue.qsize() < DTLS_QUEUE_LIMIT:
            self.queue.put_nowait(data)

    async def _recv(self) -> bytes:
        data = await self.queue.get()
        if data is None:
            raise ConnectionError("transport closed")
        return data

    async def _send(self, data: bytes) -> None:
        self.ice.send(data)  # UDP semantics: a datagram without a pair yet is dropped

    def close(self) -> None:
        self.queue.put_nowait(None)


class SfuDtlsTransport(RTCDtlsTransport):
    """aiortc's DTLS transport over our ICE, flushing whole flights; SRTP is handled by us."""

    async def _write_ssl(self) -> None:
        assert self._ssl is not None
        while True:
            try:
                data = self._ssl.bio_read(1500)
            except SSL.Error:
                return
            if not data:
                return
            await self.transport._send(data)

    async def _handle_rtp_data(self, data: bytes, arrival_time_ms: int) -> None:
        return None  # never reached: SRTP does not enter aiortc

    async def _handle_rtcp_data(self, data: bytes) -> None:
        return None


class DtlsSrtp:
    """DTLS-SRTP (RFC 5764) for one transport: the handshake, then protect/unprotect."""

    def __init__(self, ice: IceAgent, certificate: SfuCertificate) -> None:
        self.shim = IceShim(ice)
        self.transport = SfuDtlsTransport(self.shim, [certificate])  # type: ignore[arg-type]
        self.rx: pylibsrtp.Session | None = None
        self.tx: pylibsrtp.Session | None = None

    @property
    def state(self) -> str:
        return str(self.transport.state)

    def on_statechange(self, callback: Callable[[str], None]) -> None:
        self.transport.on("statechange", lambda: callback(self.transport.state))

    async def start(self, role: str, fingerprints: Sequence[tuple[str, str]]) -> bool:
        """Handshake as DTLS `role` ("client" or "server"); True when SRTP keys are ready."""
        self.transport._set_role(role)
        params = RTCDtlsParameters(
            fingerprints=[RTCDtlsFingerprint(algorithm=a, value=v) for a, v in fingerprints],
            role="auto",
        )
        await self.transport.start(params)
        if self.transport.state != "connected":
            return False
        self.rx, self.tx = self.transport._rx_srtp, self.transport._tx_srtp
        return True

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.transport.stop()
        self.shim.close()
        self.rx = self.tx = None


def random_ssrc() -> int:
    return secrets.randbits(32) or 1


__all__ = [
    "DtlsSrtp",
    "IceAgent",
    "IceGeneration",
    "NetworkConfig",
    "SfuCertificate",
    "check_versions",
    "random_ssrc",
]
