"""One UDP port for every connection of the SFU (NAPALMSKY_RTC_PORT, sfu/mux.py): calls on it,
what it drops, and that a closed session leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from aioice import stun
from pytest_aiohttp import AiohttpClient

from adapters.sql.migrate import upgrade
from core.clock import SystemClock
from core.errors import Unavailable
from core.settings import load_settings
from loadtest.bot import BLUE, RED, Bot, Colour
from napalmsky.composition import SFU, build_app
from napalmsky.startup import node_secret
from sfu.internals import IceGeneration, NetworkConfig
from sfu.mux import MAX_ADDRESSES, UFRAG_LENGTH, MuxView, UdpMux
from sfu.server import SfuConfig, SfuServer
from sfu.token import mint_join_token
from tests.sfu.conftest import SfuHarness, free_udp_port, wait_for
from tests.sfu.test_call import close_to

GREEN = Colour(145, 54, 34)
YELLOW = Colour(210, 16, 146)


def host_candidates(sdp: str) -> list[tuple[str, int]]:
    found = re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host", sdp)
    return [(host, int(port)) for host, port in found]


def udp_sockets_of_this_process() -> dict[int, int]:
    """inode -> local port of every UDP socket this process holds (/proc/self/fd)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    ports: dict[int, int] = {}
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            inode = int(fields[9])
            if inode in inodes:
                ports[inode] = int(fields[1].rsplit(":", 1)[1], 16)
    return ports


async def test_two_calls_share_one_udp_port(sfu_one_port: SfuHarness) -> None:
    sfu = sfu_one_port
    port = sfu.server.config.net.shared_port
    calls = {"call-1": (("alice", RED), ("bob", BLUE)),
             "call-2": (("carol", GREEN), ("dave", YELLOW))}
    bots = {}
    for room, people in calls.items():
        sfu.server.create_room(room)
        for user, colour in people:
            bots[user] = sfu.bot(room, user, colour)
    for bot in bots.values():
        await bot.join()

    await wait_for(lambda: all(b.received.video_frames >= 15 and b.received.audio_frames >= 25
                               for b in bots.values()), timeout=30)
    for (a, colour_a), (b, colour_b) in calls.values():
        assert close_to(bots[a].received.last_colour, colour_b), bots[a].received.last_colour
        assert close_to(bots[b].received.last_colour, colour_a), bots[b].received.last_colour

    # every answer offers the one shared port, and the server holds one media socket
    for bot in bots.values():
        assert bot.pc is not None and bot.pc.remoteDescription is not None
        assert host_candidates(bot.pc.remoteDescription.sdp) == [("127.0.0.1", port)]
    mux = sfu.server.mux
    assert mux is not None and len(mux.sockets) == 1
    assert mux.session_count == 4 and mux.address_count == 4
    bot_ports = set()
    for bot in bots.values():
        assert bot.pc is not None and bot.pc.localDescription is not None
        bot_ports |= {p for _, p in host_candidates(bot.pc.localDescription.sdp)}
    server_ports = [p for p in udp_sockets_of_this_process().values() if p not in bot_ports]
    assert server_ports == [port]
    for room in calls:
        for transport in sfu.server.rooms[room].transports.values():
            assert transport.ice.current is not None
            protocols = transport.ice.current.connection._protocols
            assert protocols and all(isinstance(p.transport, MuxView) for p in protocols)
            assert transport.stray_datagrams == 0
    assert mux.stray_datagrams == 0

    # one call ends: its sessions and addresses go, the other call goes on
    await sfu.server.close_room("call-1", "ended")
    await wait_for(lambda: mux.session_count == 2 and mux.address_count == 2)
    before = bots["carol"].received.video_frames
    await wait_for(lambda: bots["carol"].received.video_frames >= before + 10)


def stun_request(username: str | None, key: bytes | None) -> stun.Message:
    message = stun.Message(message_method=stun.Method.BINDING,
                           message_class=stun.Class.REQUEST)
    if username is not None:
        message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = 1853824767
    message.attributes["ICE-CONTROLLING"] = 1
    if key is not None:
        message.add_message_integrity(key)
    message.add_fingerprint()
    return message


@pytest.fixture
async def mux() -> AsyncIterator[UdpMux]:
    mux = UdpMux(["127.0.0.1"], free_udp_port())
    yield mux
    mux.close()


@pytest.fixture
def client() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        yield sock


async def test_strangers_are_dropped_counted_and_leave_no_state(
        mux: UdpMux, client: socket.socket) -> None:
    received: list[bytes] = []
    net = NetworkConfig(bind=("127.0.0.1",), shared_port=mux.port)
    generation = IceGeneration(net, lambda data, arrival, addr: received.append(data), mux)
    await generation.gather()
    target = ("127.0.0.1", mux.port)
    ufrag, pwd = generation.local_ufrag, generation.local_pwd
    try:
        assert generation.local_candidates()[0].split()[4:6] == ["127.0.0.1", str(mux.port)]
        # media from an address no ICE check has authenticated: a stray
        client.sendto(b"\x80\x60" + bytes(30), target)
        await wait_for(lambda: mux.stray_datagrams == 1)
        # STUN requests: no USERNAME, an unknown ufrag, a wrong password, no integrity at all
        client.sendto(bytes(stun_request(None, pwd.encode())), target)
        client.sendto(bytes(stun_request("nosuchufrag:remote", pwd.encode())), target)
        await wait_for(lambda: mux.unknown_ufrag == 2)
        client.sendto(bytes(stun_request(f"{ufrag}:remote", b"not-the-password")), target)
        client.sendto(bytes(stun_request(f"{ufrag}:remote", None)), target)
        await wait_for(lambda: mux.unauthenticated == 2)
        # a response nobody asked for
        stray_response = stun.Message(message_method=stun.Method.BINDING,
                                      message_class=stun.Class.RESPONSE)
        client.sendto(bytes(stray_response), target)
        await wait_for(lambda: mux.unmatched_stun == 1)
        assert mux.address_count == 0 and received == []
        assert not generation.connection._check_list

        # an authenticated request: answered (the first reply this client gets), and its
        # address now reaches the connection
        good = stun_request(f"{ufrag}:remote", pwd.encode())
        client.sendto(bytes(good), target)
        replies: list[bytes] = []

        def replied() -> bool:
            try:
                replies.append(client.recv(2048))
            except BlockingIOError:
                pass
            return bool(replies)

        await wait_for(replied)
        reply = stun.parse_message(replies[0])
        assert reply.transaction_id == good.transaction_id
        assert reply.message_class == stun.Class.RESPONSE
        assert mux.session_for(client.getsockname()) is generation.mux_session
        client.sendto(b"\x80\x60media", target)
        await wait_for(lambda: received == [b"\x80\x60media"])
        assert mux.stray_datagrams == 1
    finally:
        await generation.close()
    # closed: the ufrag and the address are gone; the same datagrams are strays again
    assert mux.session_count == 0 and mux.address_count == 0
    client.sendto(b"\x80\x60late", target)
    await wait_for(lambda: mux.stray_datagrams == 2)
    client.sendto(bytes(stun_request(f"{ufrag}:remote", pwd.encode())), target)
    await wait_for(lambda: mux.unknown_ufrag == 3)
    assert received == [b"\x80\x60media"]
    assert mux.sockets[0].fileno() != -1  # a session's close never closes the shared socket


async def test_addresses_latest_authenticated_wins_and_are_bounded(mux: UdpMux) -> None:
    net = NetworkConfig(bind=("127.0.0.1",), shared_port=mux.port)
    first = IceGeneration(net, lambda d, t, a: None, mux)
    second = IceGeneration(net, lambda d, t, a: None, mux)
    await first.gather()
    await second.gather()
    try:
        assert first.mux_session is not None and second.mux_session is not None
        first.mux_session.learn(("192.0.2.1", 1000))
        second.mux_session.learn(("192.0.2.1", 1000))  # the same address moves
        assert mux.session_for(("192.0.2.1", 1000)) is second.mux_session
        assert not first.mux_session.addresses
        for port in range(MAX_ADDRESSES + 3):
            first.mux_session.learn(("192.0.2.2", port))
        assert len(first.mux_session.addresses) == MAX_ADDRESSES
        assert mux.session_for(("192.0.2.2", 0)) is None  # the oldest went
        assert mux.address_count == MAX_ADDRESSES + 1
    finally:
        await first.close()
    assert mux.address_count == 1 and mux.session_count == 1
    await second.close()
    assert mux.address_count == 0 and mux.session_count == 0


async def test_a_taken_port_fails_the_start() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        net = NetworkConfig(bind=("127.0.0.1",), shared_port=port)
        with pytest.raises(Unavailable, match=f"UDP port {port} on 127.0.0.1 is taken"):
            SfuServer(SfuConfig(net=net), SystemClock())


async def test_the_server_binds_at_once_and_closes_the_shared_socket() -> None:
    port = free_udp_port()
    server = SfuServer(SfuConfig(net=NetworkConfig(bind=("127.0.0.1",), shared_port=port)),
                       SystemClock())
    assert server.mux is not None
    assert list(udp_sockets_of_this_process().values()).count(port) == 1
    await server.close()
    assert port not in udp_sockets_of_this_process().values()


async def test_a_restart_from_the_same_address_keeps_the_route(mux: UdpMux) -> None:
    """Two sessions of one connection (an ICE restart) from the same client address: a late
    check on the old ufrag moves the address back to the old session; when the old session
    closes, the address passes to the new one instead of going dark."""
    received: list[bytes] = []

    def handler(data: bytes, arrival: float, addr: tuple[str, int] | None) -> None:
        received.append(data)

    net = NetworkConfig(bind=("127.0.0.1",), shared_port=mux.port)
    old, new = IceGeneration(net, handler, mux), IceGeneration(net, handler, mux)
    other = IceGeneration(net, lambda d, t, a: None, mux)  # another connection
    for generation in (old, new, other):
        await generation.gather()
    assert old.mux_session and new.mux_session and other.mux_session
    client = ("192.0.2.9", 5000)
    try:
        new.mux_session.learn(client)
        old.mux_session.learn(client)  # the old ufrag's consent check came last
        await old.close()
        assert mux.session_for(client) is new.mux_session
        await new.close()  # no session of this connection left: the address goes
        assert mux.session_for(client) is None and mux.address_count == 0
    finally:
        await other.close()
    assert mux.session_count == 0 and not mux._families


async def test_ufrags_on_the_shared_port_are_long_and_unique(mux: UdpMux) -> None:
    net = NetworkConfig(bind=("127.0.0.1",), shared_port=mux.port)
    generations = [IceGeneration(net, lambda d, t, a: None, mux) for _ in range(3)]
    for generation in generations:
        await generation.gather()
    try:
        ufrags = {g.local_ufrag for g in generations}
        assert len(ufrags) == 3 and all(len(u) == UFRAG_LENGTH for u in ufrags)
        with pytest.raises(ValueError, match="already registered"):
            mux.register(generations[0].local_ufrag, "x" * 22, lambda d, t, a: None)
    finally:
        for generation in generations:
            await generation.close()


async def test_a_node_configured_with_one_port(aiohttp_client: AiohttpClient,
                                               tmp_path: Path) -> None:
    """NAPALMSKY_RTC_PORT through the composition root: the node's SFU binds the port, carries
    a call on it, and /metrics counts what the port dropped."""
    port = free_udp_port()
    settings = load_settings({"NAPALMSKY_DATA_DIR": str(tmp_path),
                              "NAPALMSKY_RTC_BIND": "127.0.0.1",
                              "NAPALMSKY_RTC_PORT": str(port)})
    await asyncio.to_thread(upgrade, settings.database_url)
    client: TestClient = await aiohttp_client(build_app(settings))
    sfu = client.app[SFU]
    assert sfu.mux is not None and sfu.mux.port == port
    sfu.create_room("room-p")
    url = str(client.make_url("/sfu/ws"))
    secret = node_secret(settings)
    bots = [Bot(url, mint_join_token(secret, "room-p", u, SystemClock()), colour=c)
            for u, c in (("alice", RED), ("bob", BLUE))]
    try:
        for bot in bots:
            await bot.join()
        await wait_for(lambda: all(b.received.video_frames >= 10 for b in bots))
        assert close_to(bots[0].received.last_colour, BLUE)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.sendto(b"\x80\x60" + bytes(20), ("127.0.0.1", port))
        await wait_for(lambda: sfu.mux is not None and sfu.mux.stray_datagrams == 1)
        text = await (await client.get("/metrics")).text()
        assert 'napalmsky_sfu_shared_port_dropped_total{reason="stray"} 1.0' in text
        assert 'napalmsky_sfu_shared_port_dropped_total{reason="unauthenticated"} 0.0' in text
    finally:
        for bot in bots:
            await bot.close()
