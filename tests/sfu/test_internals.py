"""The aiortc/aioice internals sfu.internals relies on: these fail loudly when they change."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiortc
import pylibsrtp
import pytest
from aioice import Connection, stun
from aioice.ice import CandidatePair, StunProtocol, get_host_addresses
from aiortc import RTCPeerConnection
from aiortc.rate import OveruseEstimator, RateCounter, RemoteBitrateEstimator
from aiortc.rtcdtlstransport import SRTP_PROFILES, RTCCertificate, RTCDtlsTransport
from OpenSSL import SSL

from core.clock import SystemClock
from core.errors import InvalidArgument, Unavailable
from loadtest.ice import bind_peer_connection
from sfu import internals
from sfu.internals import DTLS_CIPHERS, NetworkConfig, SfuCertificate, check_versions
from sfu.ports import bind_udp_in_range
from sfu.server import SfuConfig, SfuServer
from tests.services import free_port


def test_pinned_versions_are_installed() -> None:
    check_versions()
    assert aiortc.__version__ == internals.AIORTC_VERSION


def test_version_mismatch_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internals, "AIORTC_VERSION", "0.0.1")
    with pytest.raises(RuntimeError, match=r"aiortc 0\.0\.1"):
        check_versions()


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (RTCDtlsTransport, "_write_ssl"),
        (RTCDtlsTransport, "_handle_rtp_data"),
        (RTCDtlsTransport, "_handle_rtcp_data"),
        (RTCDtlsTransport, "_set_role"),
        (RTCDtlsTransport, "_recv_next"),
        (RTCCertificate, "_create_ssl_context"),
        (Connection, "get_component_candidates"),
        (Connection, "data_received"),
        (Connection, "connect"),
        (Connection, "get_event"),
        (StunProtocol, "datagram_received"),
        (StunProtocol, "connection_made"),
        (StunProtocol, "connection_lost"),
        (stun.Message, "check_message_integrity"),
    ],
)
def test_the_seams_exist(owner: type, name: str) -> None:
    assert callable(getattr(owner, name, None)), f"{owner.__name__}.{name} is gone"


def test_instance_internals_exist() -> None:
    connection = Connection(ice_controlling=False)
    for attr in ("_local_candidates_start", "_local_candidates_end", "_protocols",
                 "_local_candidates", "_nominated", "_use_ipv4", "_use_ipv6", "turn_server",
                 "_check_list"):
        assert hasattr(connection, attr), attr
    for attr in ("protocol", "remote_addr"):
        assert attr in CandidatePair.__init__.__code__.co_names or hasattr(CandidatePair, attr)
    # transaction id -> Transaction, read by sfu.mux to route STUN responses
    assert "transactions" in StunProtocol.__init__.__code__.co_names
    assert "transactions" in StunProtocol.request.__code__.co_names
    assert callable(stun.parse_message) and callable(get_host_addresses)
    dtls = RTCDtlsTransport(internals.IceShim(None), [RTCCertificate.generateCertificate()])  # type: ignore[arg-type]
    for attr in ("_rx_srtp", "_tx_srtp", "_ssl", "_role", "_state"):
        assert hasattr(dtls, attr), attr
    # sfu.bwe replaces two parts of aiortc's receive-side estimator by attribute
    estimator = RemoteBitrateEstimator()
    assert isinstance(estimator.incoming_bitrate, RateCounter)
    assert isinstance(estimator.estimator, OveruseEstimator)
    assert isinstance(OveruseEstimator().ts_delta_hist, list)
    # sfu.srtp calls libsrtp on pylibsrtp's context
    assert pylibsrtp.Session()._srtp[0] is not None


def test_the_sfu_certificate_offers_rsa_and_ecdsa_suites() -> None:
    certificate = SfuCertificate.generateCertificate()
    ctx = certificate._create_ssl_context(srtp_profiles=SRTP_PROFILES)
    ciphers = SSL.Connection(ctx).get_cipher_list()
    assert "ECDHE-RSA-AES128-GCM-SHA256" in ciphers
    assert "ECDHE-ECDSA-AES128-GCM-SHA256" in ciphers
    assert all(name.encode() in DTLS_CIPHERS for name in ciphers if "ECDHE" in name)
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", certificate.sha256)


def candidates(sdp: str) -> list[tuple[str, int]]:
    found = re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host", sdp)
    return [(host, int(port)) for host, port in found]


async def offer_sdp() -> str:
    client = RTCPeerConnection()
    try:
        client.addTransceiver("audio")
        client.addTransceiver("video")
        bind_peer_connection(client)
        await client.setLocalDescription(await client.createOffer())
        return str(client.localDescription.sdp)
    finally:
        await client.close()


@pytest.fixture
async def server() -> AsyncIterator[SfuServer]:
    low = free_port()
    net = NetworkConfig(bind=("127.0.0.1",), announce=("203.0.113.7",), port_min=low,
                        port_max=low + 20)
    srv = SfuServer(SfuConfig(net=net), SystemClock())
    srv.create_room("r")
    yield srv
    await srv.close()


async def test_bind_port_range_and_announce(server: SfuServer) -> None:
    net = server.config.net
    transport = await server.join("r", "u")
    answer = await transport.answer(await offer_sdp())
    found = candidates(answer)
    assert found and all(host == "203.0.113.7" for host, _ in found)
    assert all(net.port_min <= port <= net.port_max for _, port in found)
    assert "stun" not in answer.lower()
    # one bundled transport: one socket, bound where we asked
    assert len(set(found)) == 1
    assert "m=video" in answer and "VP8/90000" in answer and "H264" not in answer
    assert "opus/48000" in answer


async def test_a_full_port_range_is_unavailable() -> None:
    port = free_port()
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", port))
    try:
        with pytest.raises(Unavailable, match="no free UDP port"):
            bind_udp_in_range("127.0.0.1", port, port)
    finally:
        holder.close()


async def test_h264_rooms_negotiate_h264_only() -> None:
    srv = SfuServer(SfuConfig(net=NetworkConfig(bind=("127.0.0.1",)), video_codec="h264"),
                    SystemClock())
    srv.create_room("r")
    try:
        transport = await srv.join("r", "u")
        answer = await transport.answer(await offer_sdp())
        assert "H264/90000" in answer and "VP8" not in answer
    finally:
        await srv.close()


async def test_garbage_offer_is_invalid_argument(server: SfuServer) -> None:
    transport = await server.join("r", "u")
    with pytest.raises(InvalidArgument, match="invalid offer"):
        await transport.answer("v=0\r\nm=audio garbage\r\n")
    assert transport.ice.current is None  # nothing was bound for a refused offer


async def test_the_socket_reader_stamps_arrivals_and_splits_stun_from_media() -> None:
    import time

    received: list[tuple[bytes, float]] = []
    stun: list[bytes] = []

    class Stun:
        transport: Any = None
        lost = False

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            stun.append(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self.lost = True

    sock = bind_udp_in_range("127.0.0.1", 0, 0)
    protocol = Stun()
    reader = internals.DatagramSocket(sock, protocol,  # type: ignore[arg-type]
                                      lambda d, t, a: received.append((d, t)))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        before = time.monotonic()
        for data in (b"\x00\x01stun-ish", b"\x80\x60rtp-ish", b"\x16dtls-ish", b""):
            peer.sendto(data, reader.get_extra_info("sockname"))
        deadline = time.monotonic() + 5
        while len(received) + len(stun) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert stun == [b"\x00\x01stun-ish"]
        assert [d for d, _ in received] == [b"\x80\x60rtp-ish", b"\x16dtls-ish", b""]
        # kernel receive times, on the monotonic clock
        assert all(before - 0.05 <= t <= time.monotonic() + 0.05 for _, t in received)
        reader.sendto(b"back", peer.getsockname())
        assert peer.recv(10) == b"back"
    finally:
        reader.close()
        peer.close()
    await asyncio.sleep(0)
    assert protocol.lost and reader.is_closing() and sock.fileno() == -1


async def test_an_ice_restart_that_never_connects_is_abandoned(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internals, "RESTART_TIMEOUT", 0.1)
    states: list[str] = []
    agent = internals.IceAgent(NetworkConfig(bind=("127.0.0.1",)), lambda d, t, a: None,
                               states.append)
    try:
        first = await agent.new_generation()
        await agent.start(first, "ufrA", "passwordpasswordpassA", [])
        restart = await agent.new_generation()
        assert restart.local_ufrag != first.local_ufrag
        await agent.start(restart, "ufrB", "passwordpasswordpassB", [])
        assert agent.pending is restart and agent.local is restart and agent.restarts == 1
        for _ in range(100):
            if restart.closed:
                break
            await asyncio.sleep(0.01)
        # given up: the old session stays (its path may still work), nothing failed
        assert restart.closed and agent.pending is None and agent.current is first
        assert states == ["checking"]
        first.consent_lost = True  # the old path died meanwhile
        again = await agent.new_generation()
        await agent.start(again, "ufrC", "passwordpasswordpassC", [])
        for _ in range(100):
            if states[-1] == "failed":
                break
            await asyncio.sleep(0.01)
        assert states == ["checking", "failed"] and again.closed
    finally:
        await agent.close()
