"""RawPeer: a WebRTC client for the SFU's client zoo that offers SDP in any shape and speaks raw
RTP/RTCP, on the wire like a browser: ICE through its own aioice `Connection` (controlling),
DTLS-SRTP through aiortc's `RTCDtlsTransport`, real SRTP packets.

    peer = RawPeer(sfu.url, sfu.token("room", "alice"), shapes.firefox())
    answer = await peer.join()            # join, offer, answer, ICE, DTLS: media can flow
    await peer.send_rtp(packet_bytes)     # protected with the negotiated SRTP keys
    peer.received_rtp / peer.received_rtcp
    await peer.restart_ice(bind="127.0.0.2")
    await peer.close()

Private aiortc/aioice attributes used here (test code, pinned versions): `RTCDtlsTransport`'s
`_handle_rtp_data`, `_handle_rtcp_data` (replaced per instance to record packets), `_set_role`,
`_tx_srtp`, `_task`, `_ssl`; `RTCCertificate._create_ssl_context` (overridden to offer RSA
suites); aioice `Connection._local_candidates`, `_local_candidates_start/_end`, `_protocols`.
The DTLS transport runs over `_IceLink`, which gives it the `_recv`/`_send`/`role` it expects of
an `RTCIceTransport` and lets an ICE restart swap the aioice connection under a live session.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import datetime
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import aiohttp
from aioice import Candidate, Connection
from aiortc.rtcdtlstransport import (
    RTCCertificate,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
    SRTPProtectionProfile,
    certificate_digest,
)
from aiortc.rtcicetransport import RTCIceTransport
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from OpenSSL import SSL

from tests.sfu.zoo.rtp import RtcpPacket, parse_rtcp, parse_rtp
from tests.sfu.zoo.sdp import SessionDescription, parse
from tests.sfu.zoo.shapes import LocalTransport, Section, Shape

CertificateKind = Literal["ecdsa", "rsa2048", "rsa4096"]

# What a browser offers as DTLS client (both key types); aiortc's own list is ECDSA only.
BROWSER_CIPHERS = b":".join([
    b"ECDHE-ECDSA-AES128-GCM-SHA256", b"ECDHE-RSA-AES128-GCM-SHA256",
    b"ECDHE-ECDSA-AES256-GCM-SHA384", b"ECDHE-RSA-AES256-GCM-SHA384",
    b"ECDHE-ECDSA-CHACHA20-POLY1305", b"ECDHE-RSA-CHACHA20-POLY1305",
    b"ECDHE-ECDSA-AES128-SHA", b"ECDHE-RSA-AES128-SHA",
    b"ECDHE-ECDSA-AES256-SHA", b"ECDHE-RSA-AES256-SHA",
])

DEFAULT_TIMEOUT = 20.0


class PeerError(Exception):
    """A step of the peer's session failed."""


class JoinRefused(PeerError):
    def __init__(self, reply: dict[str, Any] | None, close_code: int | None = None) -> None:
        super().__init__(f"join refused: {reply} (close code {close_code})")
        self.reply = reply
        self.close_code = close_code


class OfferRefused(PeerError):
    def __init__(self, reply: dict[str, Any] | None, close_code: int | None = None) -> None:
        super().__init__(f"offer refused: {reply} (close code {close_code})")
        self.reply = reply
        self.close_code = close_code


class MediaFailed(PeerError):
    """ICE or DTLS did not come up."""


# ---- certificates ----


class ZooCertificate(RTCCertificate):
    """An ECDSA P-256 or RSA certificate whose DTLS context offers ECDSA and RSA suites."""

    def __init__(self, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
                 cert: x509.Certificate, kind: CertificateKind) -> None:
        super().__init__(cast(ec.EllipticCurvePrivateKey, key), cert)  # aiortc types it EC only
        self.kind = kind

    @classmethod
    def create(cls, kind: CertificateKind = "ecdsa") -> ZooCertificate:
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        if kind == "ecdsa":
            key = ec.generate_private_key(ec.SECP256R1())
        elif kind in ("rsa2048", "rsa4096"):
            key = rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
        else:
            raise ValueError(f"unknown certificate kind {kind!r}")
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME,
                                             binascii.hexlify(os.urandom(16)).decode())])
        now = datetime.datetime.now(tz=datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .sign(key, hashes.SHA256()))
        return cls(key, cert, kind)

    @property
    def sha256(self) -> str:
        return certificate_digest(self._cert, "sha-256")

    def _create_ssl_context(self, srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
        ctx = super()._create_ssl_context(srtp_profiles)
        ctx.set_cipher_list(BROWSER_CIPHERS)
        return ctx


class ZooDtlsTransport(RTCDtlsTransport):
    """aiortc's DTLS transport, flushing whole flights: aiortc sends one `bio_read(1500)` per
    flush, which cuts a flight larger than 1500 bytes (an RSA-4096 certificate) mid-record and
    stalls the handshake. A browser sends every record, packed into MTU-sized datagrams."""

    MTU = 1200

    async def _write_ssl(self) -> None:
        assert self._ssl is not None
        data = b""
        while True:
            try:
                chunk = self._ssl.bio_read(65536)
            except SSL.Error:
                break
            if not chunk:
                break
            data += chunk
        for datagram in pack_dtls_records(data, self.MTU):
            await self.transport._send(datagram)


def pack_dtls_records(data: bytes, mtu: int) -> list[bytes]:
    """Split a byte stream of DTLS records on record boundaries (13-byte headers) and pack
    consecutive records into datagrams of at most `mtu` bytes (a larger record goes alone)."""
    records: list[bytes] = []
    offset = 0
    while offset + 13 <= len(data):
        length = int.from_bytes(data[offset + 11:offset + 13], "big")
        records.append(data[offset:offset + 13 + length])
        offset += 13 + length
    if offset < len(data):
        records.append(data[offset:])
    datagrams: list[bytes] = []
    for record in records:
        if datagrams and len(datagrams[-1]) + len(record) <= mtu:
            datagrams[-1] += record
        else:
            datagrams.append(record)
    return datagrams


# ---- records ----


@dataclass(slots=True)
class RtpRecord:
    """One decrypted RTP packet as received."""

    arrival: float  # time.monotonic()
    ssrc: int
    payload_type: int
    sequence: int
    timestamp: int
    marker: bool
    payload_length: int
    extensions: dict[int, bytes]
    payload: bytes
    size: int


@dataclass(slots=True)
class RtcpRecord:
    """One decrypted compound RTCP datagram as received."""

    arrival: float
    data: bytes

    @property
    def packets(self) -> list[RtcpPacket]:
        return parse_rtcp(self.data)


@dataclass(slots=True)
class DatagramRecord:
    arrival: float
    size: int
    first_byte: int


# ---- the ICE link under DTLS ----


class _IceLink:
    """What RTCDtlsTransport uses of its RTCIceTransport (`_recv`, `_send`, `role`), over a
    current aioice Connection that `use()` can replace while DTLS runs (an ICE restart)."""

    role = "controlling"

    def __init__(self) -> None:
        self.connection: Connection | None = None
        self.closed = False
        self.dtls_datagrams: list[DatagramRecord] = []
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._pumps: dict[Connection, asyncio.Task[None]] = {}

    async def _recv(self) -> bytes:
        data = await self._queue.get()
        if data is None:
            self._queue.put_nowait(None)  # every later reader fails too
            raise ConnectionError("the ICE link is closed")
        return data

    async def _send(self, data: bytes) -> None:
        if self.closed or self.connection is None:
            raise ConnectionError("the ICE link is not connected")
        await self.connection.send(data)

    def use(self, connection: Connection) -> None:
        """Send on `connection` from now on, and receive from it (as well as from any
        connection still open)."""
        self.connection = connection
        if connection not in self._pumps:
            self._pumps[connection] = asyncio.ensure_future(self._pump(connection))

    async def _pump(self, connection: Connection) -> None:
        try:
            while True:
                data = await connection.recv()
                if data and 19 < data[0] < 64:
                    self.dtls_datagrams.append(
                        DatagramRecord(time.monotonic(), len(data), data[0]))
                self._queue.put_nowait(data)
        except ConnectionError:
            if connection is self.connection:
                self._queue.put_nowait(None)

    async def retire(self, connection: Connection) -> None:
        await connection.close()
        pump = self._pumps.pop(connection, None)
        if pump is not None:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    async def close(self) -> None:
        self.closed = True
        for connection in list(self._pumps):
            await self.retire(connection)
        self.connection = None
        self._queue.put_nowait(None)


# ---- the peer ----


class RawPeer:
    """One zoo participant. See the module docstring; every step of `join()` is also callable
    on its own (`open`, `gather`, `negotiate`, `connect`) for tests that break one of them."""

    def __init__(self, ws_url: str, token: str, shape: Shape, *, bind: str = "127.0.0.1",
                 certificate: CertificateKind | ZooCertificate = "ecdsa",
                 room_id: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 ice_timeout: float | None = None) -> None:
        self.ws_url = ws_url
        self.token = token
        self.shape = shape
        self.bind = bind
        self.room_id = room_id
        self.timeout = timeout
        self.ice_timeout = ice_timeout if ice_timeout is not None else timeout
        self.certificate = (certificate if isinstance(certificate, ZooCertificate)
                            else ZooCertificate.create(certificate))
        self.joined: dict[str, Any] | None = None
        self.local: LocalTransport | None = None
        self.offer_sdp: str | None = None
        self.answer_sdp: str | None = None
        self.answer: SessionDescription | None = None
        self.received_rtp: list[RtpRecord] = []
        self.received_rtcp: list[RtcpRecord] = []
        self.malformed_rtp = 0
        self.on_rtp: list[Callable[[RtpRecord], None]] = []
        self.on_rtcp: list[Callable[[RtcpRecord], None]] = []
        self.errors: list[dict[str, Any]] = []
        self.closed_reason: str | None = None
        self.ws_close_code: int | None = None
        self.ice_restarts = 0
        self.ice: Connection | None = None  # the connection carrying media
        self.link = _IceLink()
        self.dtls = ZooDtlsTransport(cast(RTCIceTransport, self.link), [self.certificate])
        self.dtls._handle_rtp_data = self._handle_rtp  # type: ignore[method-assign]
        self.dtls._handle_rtcp_data = self._handle_rtcp  # type: ignore[method-assign]
        self.closed = False
        self._gathered: Connection | None = None  # gathered, not yet connected
        self._connections: list[Connection] = []
        self._protocols: list[Any] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._replies: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._twcc = 0
        self.owned: list[object] = []  # objects whose tasks `leftover_tasks` looks for
        self.cleanups: list[Callable[[], Awaitable[None]]] = []  # awaited first by close()

    # ---- the steps of a join ----

    async def join(self) -> SessionDescription:
        """Open the socket and join, gather, offer, take the answer, connect ICE and DTLS."""
        await self.open()
        await self.gather()
        answer = await self.negotiate()
        await self.connect()
        return answer

    async def open(self) -> dict[str, Any]:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.ws_url)
        message: dict[str, Any] = {"type": "join", "token": self.token}
        if self.room_id is not None:
            message["roomId"] = self.room_id
        await self._ws.send_json(message)
        msg = await self._ws.receive(timeout=self.timeout)
        reply = json.loads(msg.data) if msg.type == aiohttp.WSMsgType.TEXT else None
        if not isinstance(reply, dict) or reply.get("type") != "joined":
            if reply is not None and reply.get("type") == "error":
                self.errors.append(reply)
            with contextlib.suppress(TimeoutError):
                await self._ws.receive(timeout=1.0)  # the close frame, for its code
            raise JoinRefused(reply, self._ws.close_code)
        self.joined = reply
        self._reader = asyncio.ensure_future(self._read(self._ws))
        return reply

    async def gather(self, bind: str | None = None) -> LocalTransport:
        """A new aioice Connection (controlling) with host candidates bound to `bind`, and
        fresh ICE credentials in the shape's style; `self.local` describes them."""
        ufrag, pwd = self.shape.new_credentials()
        connection = Connection(ice_controlling=True, local_username=ufrag, local_password=pwd)
        self._connections.append(connection)
        candidates = await connection.get_component_candidates(component=1,
                                                               addresses=[bind or self.bind])
        if not candidates:
            raise PeerError(f"could not bind a UDP socket on {bind or self.bind}")
        connection._local_candidates_start = True
        connection._local_candidates += candidates
        connection._local_candidates_end = True
        self._protocols += list(connection._protocols)
        self._gathered = connection
        self.local = LocalTransport(
            ufrag, pwd, self.certificate.sha256,
            [self.shape.host_candidate(c.host, c.port, i) for i, c in enumerate(candidates)],
        )
        return self.local

    async def negotiate(self, sdp: str | None = None) -> SessionDescription:
        """Send an offer (the shape rendered with `self.local`, or `sdp` as given) and wait for
        the answer. OfferRefused on an error reply or when the server hangs up."""
        assert self._ws is not None, "open() first"
        if sdp is None:
            assert self.local is not None, "gather() first"
            sdp = self.shape.sdp(self.local)
        self.offer_sdp = sdp
        await self._ws.send_json({"type": "offer", "sdp": sdp})
        reply = await asyncio.wait_for(self._replies.get(), self.timeout)
        if reply is None or reply.get("type") != "answer":
            raise OfferRefused(reply, self.ws_close_code)
        self.shape.session_version += 1
        self.answer_sdp = str(reply["sdp"])
        self.answer = parse(self.answer_sdp)
        return self.answer

    async def connect(self) -> None:
        """ICE (controlling, against the answer's candidates), then DTLS with the role the
        answer's a=setup leaves us, then SRTP."""
        connection = self._gathered
        assert connection is not None and self.answer is not None
        await self._connect_ice(connection, self.answer)
        self._gathered = None
        self.ice = connection
        self.link.use(connection)
        section = self.answer.transport_section
        # The answerer's "active" makes it the DTLS client; "passive" makes us the client.
        self.dtls._set_role("server" if section.setup == "active" else "client")
        fingerprints = [RTCDtlsFingerprint(alg, value) for alg, value in section.fingerprints]
        if not fingerprints:
            raise MediaFailed("the answer has no fingerprint")
        try:
            await asyncio.wait_for(self.dtls.start(RTCDtlsParameters(fingerprints)),
                                   self.timeout)
        except TimeoutError:
            raise MediaFailed("DTLS handshake timed out") from None
        if self.dtls.state != "connected":
            raise MediaFailed(f"DTLS ended {self.dtls.state}")

    async def _connect_ice(self, connection: Connection, answer: SessionDescription) -> None:
        section = answer.transport_section
        connection.remote_username = section.ice_ufrag
        connection.remote_password = section.ice_pwd
        connection.remote_is_lite = answer.ice_lite
        for text in section.candidates:
            with contextlib.suppress(ValueError):
                await connection.add_remote_candidate(Candidate.from_sdp(text))
        # The SFU answers with all its candidates. An answer without any leaves us waiting,
        # as a browser would, for the answerer's checks (peer-reflexive) until the timeout.
        if section.candidates or section.end_of_candidates:
            await connection.add_remote_candidate(None)
        try:
            await asyncio.wait_for(connection.connect(), self.ice_timeout)
        except (TimeoutError, ConnectionError) as exc:
            raise MediaFailed(f"ICE failed: {exc!r}") from None

    async def restart_ice(self, bind: str | None = None) -> SessionDescription:
        """A browser's ICE restart: new ufrag/pwd and a new Connection bound to `bind` (the old
        address by default), a re-offer (same fingerprint), connect the new ICE, move the
        running DTLS/SRTP session onto it, close the old one. No new DTLS handshake."""
        old = self.ice
        if bind is not None:
            self.bind = bind
        await self.gather(self.bind)
        new = self._gathered
        assert new is not None
        answer = await self.negotiate()
        await self._connect_ice(new, answer)
        self._gathered = None
        self.ice = new
        self.link.use(new)
        if old is not None:
            await self.link.retire(old)
        self.ice_restarts += 1
        return answer

    # ---- media ----

    @property
    def connected(self) -> bool:
        return self.dtls.state == "connected" and not self.closed

    def next_transport_sequence(self) -> int:
        """The next transport-wide congestion control sequence number (one per transport)."""
        value = self._twcc
        self._twcc = (self._twcc + 1) & 0xFFFF
        return value

    async def send_rtp(self, data: bytes) -> None:
        """Protect `data` as SRTP (whatever it contains) and send it."""
        if not self.connected:
            raise ConnectionError("not connected")
        await self.link._send(self.dtls._tx_srtp.protect(data))

    async def send_rtcp(self, data: bytes) -> None:
        """Protect `data` as SRTCP (a compound packet, or anything) and send it."""
        if not self.connected:
            raise ConnectionError("not connected")
        await self.link._send(self.dtls._tx_srtp.protect_rtcp(data))

    async def send_raw(self, datagram: bytes) -> None:
        """Send a datagram on the selected ICE pair as it is (no SRTP)."""
        await self.link._send(datagram)

    async def send_signal(self, message: dict[str, Any]) -> None:
        """Send any JSON message on the SFU socket."""
        assert self._ws is not None
        await self._ws.send_json(message)

    async def _handle_rtp(self, data: bytes, arrival_time_ms: int) -> None:
        now = time.monotonic()
        try:
            parsed = parse_rtp(data)
        except ValueError:
            self.malformed_rtp += 1
            return
        h = parsed.header
        record = RtpRecord(now, h.ssrc, h.payload_type, h.sequence, h.timestamp, h.marker,
                           len(parsed.payload), h.extensions, parsed.payload, len(data))
        self.received_rtp.append(record)
        for callback in list(self.on_rtp):
            callback(record)

    async def _handle_rtcp(self, data: bytes) -> None:
        record = RtcpRecord(time.monotonic(), data)
        self.received_rtcp.append(record)
        for callback in list(self.on_rtcp):
            callback(record)

    def rtp(self, ssrc: int | None = None, payload_type: int | None = None) -> list[RtpRecord]:
        return [r for r in self.received_rtp
                if (ssrc is None or r.ssrc == ssrc)
                and (payload_type is None or r.payload_type == payload_type)]

    def rtcp_packets(self) -> list[tuple[float, RtcpPacket]]:
        return [(r.arrival, p) for r in self.received_rtcp for p in r.packets]

    def section(self, kind: str, index: int = 0) -> Section:
        return self.shape.section(kind, index)

    # ---- signaling ----

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                try:
                    message = json.loads(msg.data)
                except ValueError:
                    continue
                kind = message.get("type") if isinstance(message, dict) else None
                if kind in ("answer", "error"):
                    if kind == "error":
                        self.errors.append(message)
                    self._replies.put_nowait(message)
                elif kind == "closed":
                    self.closed_reason = message.get("reason")
        finally:
            self.ws_close_code = ws.close_code
            self._replies.put_nowait(None)

    # ---- shutdown ----

    async def leave(self) -> None:
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._ws.send_json({"type": "leave"})

    async def close(self) -> None:
        """Shut DTLS down (close_notify), close every ICE connection and socket, the WebSocket
        and the HTTP session; no task of ours survives."""
        if self.closed:
            return
        self.closed = True
        for cleanup in list(self.cleanups):
            with contextlib.suppress(Exception):
                await cleanup()
        dtls_task = self.dtls._task
        with contextlib.suppress(Exception):
            await self.dtls.stop()
        if dtls_task is not None:
            dtls_task.cancel()
            await asyncio.gather(dtls_task, return_exceptions=True)
        await self.link.close()
        for connection in self._connections:
            with contextlib.suppress(Exception):
                await connection.close()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # ---- leak checks for tests ----

    def _owned_ids(self) -> set[int]:
        objects: list[object] = [self, self.link, self.dtls, *self._connections, *self._protocols,
                                 *self.owned]
        if self._ws is not None:
            objects.append(self._ws)
        if self._session is not None:
            objects.append(self._session)
        return {id(o) for o in objects}

    def leftover_tasks(self) -> list[asyncio.Task[Any]]:
        """Unfinished tasks whose coroutine chain works on one of this peer's objects."""
        owned = self._owned_ids()
        current = asyncio.current_task()
        return [t for t in asyncio.all_tasks()
                if t is not current and not t.done() and _references(t, owned)]

    def open_sockets(self) -> list[Any]:
        """The UDP transports this peer opened that are not closed."""
        return [p.transport for p in self._protocols if not p.transport.is_closing()]


def _references(task: asyncio.Task[Any], owned: set[int]) -> bool:
    coro: Any = task.get_coro()
    for _ in range(64):
        if coro is None:
            return False
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            for value in frame.f_locals.values():
                if id(value) in owned or id(getattr(value, "__self__", None)) in owned:
                    return True
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return False
