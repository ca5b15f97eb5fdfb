"""RawPeers against the SFU with every connection on one shared UDP port (NAPALMSKY_RTC_PORT):
the zoo's exchanges and ICE restarts (imported from test_rawpeer, run here on the shared port
through the `sfu` fixture below), and what an ICE restart leaves in the demultiplexer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sfu.server import SfuServer
from tests.sfu.conftest import SfuHarness, one_port_net, open_sfu
from tests.sfu.zoo import shapes
from tests.sfu.zoo.rawpeer import RawPeer
from tests.sfu.zoo.test_rawpeer import (
    exchange,
    peers,
    test_chrome_peers_exchange_vp8_and_opus,
    test_ice_restart_keeps_dtls_and_media,
    test_many_sections_and_candidates,
    test_offer_before_any_candidate,
    test_shape_exchanges_media,
    until,
)

__all__ = [  # collected here again, on the shared port
    "peers",
    "test_chrome_peers_exchange_vp8_and_opus",
    "test_ice_restart_keeps_dtls_and_media",
    "test_many_sections_and_candidates",
    "test_offer_before_any_candidate",
    "test_shape_exchanges_media",
]


@pytest.fixture
async def sfu() -> AsyncIterator[SfuHarness]:
    async with open_sfu(one_port_net()) as harness:
        yield harness


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.0.0.2"])
async def test_an_ice_restart_moves_the_session_on_the_shared_port(
        sfu: SfuHarness, peers: list[RawPeer], bind: str) -> None:
    a, b = await exchange(sfu, peers, "one-port-restart", shapes.chrome(), shapes.chrome())
    server = sfu.server
    assert isinstance(server, SfuServer) and server.mux is not None
    mux = server.mux
    transport = server.rooms["one-port-restart"].transports["a"]
    old = transport.ice.current
    assert old is not None and old.mux_session is not None
    old_session, old_ufrag = old.mux_session, old.local_ufrag
    old_addresses = set(old_session.addresses)
    assert old_addresses and mux.session_count == 2

    answer = await a.restart_ice(bind=bind)
    port = server.config.net.shared_port
    assert answer.transport_section.ice_ufrag != old_ufrag
    found = [c.split() for c in answer.transport_section.candidates]
    assert [(f[4], int(f[5])) for f in found if f[7] == "host"] == [("127.0.0.1", port)]
    before = len(b.received_rtp)
    await until(lambda: transport.ice.current is not old and old.closed, 8.0, "the new path")
    await until(lambda: len(b.received_rtp) >= before + 100, 8.0, "media after the restart")
    # the old session is gone from the demultiplexer: its ufrag and its addresses
    assert old_session.closed and not old_session.addresses
    assert mux.session_count == 2
    assert all(mux.session_for(addr) is not old_session for addr in old_addresses)
    current = transport.ice.current
    assert current is not None and current.mux_session is not None
    assert mux.session_for(current.remote_address() or ("", 0)) is current.mux_session
    assert transport.ice.restarts == 1 and transport.connected
