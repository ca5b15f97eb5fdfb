"""Two real aiortc peers through the SFU: each decodes the other's video and audio."""

from __future__ import annotations

import threading

from loadtest.bot import BLUE, RED, Colour
from sfu.events import ParticipantConnected, ParticipantLeft
from tests.sfu.conftest import SfuHarness, wait_for


def close_to(seen: Colour | None, want: Colour, slack: int = 24) -> bool:
    return seen is not None and all(
        abs(a - b) <= slack for a, b in ((seen.y, want.y), (seen.u, want.u), (seen.v, want.v))
    )


def decoder_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.endswith("-decoder"))


async def test_each_peer_decodes_the_other(sfu: SfuHarness) -> None:
    sfu.server.create_room("room-1")
    alice = sfu.bot("room-1", "alice", RED)
    bob = sfu.bot("room-1", "bob", BLUE)
    await alice.join()
    await bob.join()

    await wait_for(lambda: alice.received.video_frames >= 15 and bob.received.video_frames >= 15
                   and alice.received.audio_frames >= 25 and bob.received.audio_frames >= 25)
    assert close_to(alice.received.last_colour, BLUE), alice.received.last_colour
    assert close_to(bob.received.last_colour, RED), bob.received.last_colour

    connected = {e.user_id for e in sfu.events if isinstance(e, ParticipantConnected)}
    assert connected == {"alice", "bob"}

    # The SFU never decodes: only the two bots run decoders (audio + video each).
    assert decoder_threads() == 4
    router = sfu.server.rooms["room-1"]
    for transport in router.transports.values():
        # no aiortc receiver or sender, hence no decoder, no encoder and no polling loop
        assert not hasattr(transport, "pc")
        assert set(transport.producers) == {"audio", "video"}
        assert transport.consumers["video"].packets > 0
        assert transport.producers["video"].packets > 0


async def test_a_late_partner_arrives_without_renegotiation(sfu: SfuHarness) -> None:
    sfu.server.create_room("room-2")
    alice = sfu.bot("room-2", "alice", RED)
    await alice.join()
    await wait_for(lambda: any(isinstance(e, ParticipantConnected) for e in sfu.events))
    assert alice.received.video_frames == 0
    bob = sfu.bot("room-2", "bob", BLUE)
    await bob.join()
    await wait_for(lambda: alice.received.video_frames >= 10 and bob.received.video_frames >= 10)
    assert close_to(alice.received.last_colour, BLUE)


async def test_rejoin_replaces_the_old_connection(sfu: SfuHarness) -> None:
    sfu.server.create_room("room-3")
    alice = sfu.bot("room-3", "alice", RED)
    bob = sfu.bot("room-3", "bob", BLUE)
    await alice.join()
    await bob.join()
    await wait_for(lambda: alice.received.video_frames >= 5)
    await bob.close()

    bob2 = sfu.bot("room-3", "bob", Colour(145, 54, 34))  # green
    await bob2.join()
    before = alice.received.video_frames
    await wait_for(lambda: alice.received.video_frames >= before + 15
                   and close_to(alice.received.last_colour, Colour(145, 54, 34)))
    await wait_for(lambda: bob2.received.video_frames >= 5)
    assert close_to(bob2.received.last_colour, RED)
    left = [e for e in sfu.events if isinstance(e, ParticipantLeft) and e.user_id == "bob"]
    assert left, sfu.events


async def test_an_h264_room_forwards_h264() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from core.clock import SystemClock
    from loadtest.bot import Bot
    from sfu.server import SfuConfig, SfuServer
    from sfu.token import mint_join_token
    from sfu.ws import sfu_routes
    from tests.sfu.conftest import LOOPBACK, SECRET

    server = SfuServer(SfuConfig(net=LOOPBACK, video_codec="h264"), SystemClock())
    app = web.Application()
    app.add_routes(sfu_routes(server, SECRET, SystemClock()))
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    url = str(test_server.make_url("/sfu/ws"))
    server.create_room("h")
    bots = [Bot(url, mint_join_token(SECRET, "h", u, SystemClock()), colour=c)
            for u, c in (("a", RED), ("b", BLUE))]
    try:
        for bot in bots:
            await bot.join()
        await wait_for(lambda: all(b.received.video_frames >= 10 for b in bots))
        assert close_to(bots[0].received.last_colour, BLUE)
        assert close_to(bots[1].received.last_colour, RED)
        producer = server.rooms["h"].transports["a"].producers["video"]
        assert producer.codec == "h264"
    finally:
        for bot in bots:
            await bot.close()
        await server.close()
        await test_server.close()
