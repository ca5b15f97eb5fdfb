"""The aiortc/aioice internals sfu.internals relies on: these fail loudly when they change."""

from __future__ import annotations

import re
import socket

import aiortc
import pytest
from aioice.ice import Connection
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter

from core.errors import InvalidArgument, Unavailable
from sfu import internals
from sfu.internals import NetworkConfig, PeerSession, SessionHandler, check_versions
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
        (RTCDtlsTransport, "_handle_rtp_data"),
        (RTCDtlsTransport, "_send_rtp"),
        (RTCDtlsTransport, "_register_rtp_receiver"),
        (RTCDtlsTransport, "_register_rtp_sender"),
        (RTCDtlsTransport, "_unregister_rtp_receiver"),
        (RTCDtlsTransport, "_unregister_rtp_sender"),
        (RtpRouter, "route_rtcp"),
        (RTCRtpReceiver, "_send_rtcp_pli"),
        (RTCRtpReceiver, "_handle_rtp_packet"),
        (RTCRtpReceiver, "_handle_rtcp_packet"),
        (RTCRtpReceiver, "_handle_disconnect"),
        (RTCRtpSender, "_handle_rtcp_packet"),
        (RTCRtpSender, "_run_rtp"),
        (Connection, "gather_candidates"),
        (Connection, "get_component_candidates"),
    ],
)
def test_the_seams_exist(owner: type, name: str) -> None:
    assert callable(getattr(owner, name, None)), f"{owner.__name__}.{name} is gone"


async def test_instance_internals_exist() -> None:
    pc = RTCPeerConnection()
    try:
        transceiver = pc.addTransceiver("video")
        assert isinstance(transceiver.sender._ssrc, int)
        assert isinstance(transceiver.sender._rtx_ssrc, int)
        assert hasattr(transceiver.receiver, "_RTCRtpReceiver__decoder_thread")
        ice_transports = pc._RTCPeerConnection__iceTransports  # type: ignore[attr-defined]
        connection = next(iter(ice_transports)).iceGatherer._connection
        for attr in ("_local_candidates_start", "_local_candidates_end", "_protocols",
                     "_local_candidates", "_components", "_use_ipv4", "_use_ipv6", "turn_server"):
            assert hasattr(connection, attr), attr
        assert isinstance(transceiver.receiver.transport._rtp_router, RtpRouter)
    finally:
        await pc.close()


def candidates(sdp: str) -> list[tuple[str, int]]:
    found = re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host", sdp)
    return [(host, int(port)) for host, port in found]


async def offer_sdp() -> str:
    client = RTCPeerConnection()
    try:
        client.addTransceiver("audio")
        client.addTransceiver("video")
        internals.bind_peer_connection(client, NetworkConfig(bind=("127.0.0.1",)))
        await client.setLocalDescription(await client.createOffer())
        return str(client.localDescription.sdp)
    finally:
        await client.close()


async def test_bind_port_range_and_announce() -> None:
    low = free_port()
    net = NetworkConfig(bind=("127.0.0.1",), announce=("203.0.113.7",), port_min=low,
                        port_max=low + 20)
    session = PeerSession(SessionHandler(), net, "vp8")
    try:
        answer = await session.answer(await offer_sdp())
        found = candidates(answer)
        assert found and all(host == "203.0.113.7" for host, _ in found)
        assert all(low <= port <= low + 20 for _, port in found)
        assert "stun" not in answer.lower()
        # one bundled transport: one socket, bound where we asked
        assert len(set(found)) == 1
        assert "m=video" in answer and "VP8/90000" in answer and "H264" not in answer
        assert "opus/48000" in answer
    finally:
        await session.close()


async def test_a_full_port_range_is_unavailable() -> None:
    port = free_port()
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", port))
    try:
        with pytest.raises(Unavailable, match="no free UDP port"):
            internals._bind_in_range("127.0.0.1", port, port)
    finally:
        holder.close()


async def test_h264_rooms_negotiate_h264_only() -> None:
    session = PeerSession(SessionHandler(), NetworkConfig(bind=("127.0.0.1",)), "h264")
    try:
        answer = await session.answer(await offer_sdp())
        assert "H264/90000" in answer and "VP8" not in answer
    finally:
        await session.close()


async def test_garbage_offer_is_invalid_argument() -> None:
    session = PeerSession(SessionHandler(), NetworkConfig(bind=("127.0.0.1",)), "vp8")
    try:
        with pytest.raises(InvalidArgument, match="invalid offer"):
            await session.answer("v=0\r\nm=audio garbage\r\n")
    finally:
        await session.close()
