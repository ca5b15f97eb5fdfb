"""A broken or hostile peer costs little and harms no one: aiortc peers (the bots) that send,
inside their own SRTP session, what a well-behaved client never would."""

from __future__ import annotations

import asyncio
import random
import struct
import threading
import tracemalloc
from pathlib import Path
from typing import Any

from loadtest.bot import Bot
from sfu import transport as sfu_transport
from sfu.events import CloseReason
from sfu.rtp import RtcpNack
from tests.sfu.conftest import SfuHarness, wait_for
from tests.sfu.test_feedback import call

DATA = Path(__file__).parents[1] / "data"


def dtls_of(bot: Bot) -> Any:
    assert bot.pc is not None
    return bot.pc.getTransceivers()[0].sender.transport


async def test_a_malformed_remb_is_dropped_and_media_goes_on(sfu: SfuHarness) -> None:
    """The 20-byte REMB announcing 255 SSRCs it does not carry, then other broken RTCP."""
    alice, bob, alice_t, bob_t = await call(sfu, "remb")
    dtls = dtls_of(alice)
    ssrc = alice_t.producers["video"].ssrc or 1
    bad = [
        bytes.fromhex("8fce0004") + struct.pack("!I", ssrc) + bytes(4) + b"REMB"
        + bytes.fromhex("ff280001"),
        bytes.fromhex("81c90001") + struct.pack("!I", ssrc),  # RR announcing a missing block
        bytes.fromhex("84ce0003") + struct.pack("!III", ssrc, 0, 0),  # FIR, half an entry
        bytes.fromhex("80c8ffff") + struct.pack("!I", ssrc),  # SR longer than the datagram
        bytes.fromhex("a0c90002") + struct.pack("!II", ssrc, 0),  # padding bit, zero padding
    ]
    before = alice_t.malformed_rtcp
    for data in bad:
        await dtls._send_rtp(data)
    await wait_for(lambda: alice_t.malformed_rtcp >= before + len(bad))
    frames = bob.received.video_frames, alice.received.video_frames
    await wait_for(lambda: bob.received.video_frames >= frames[0] + 15
                   and alice.received.video_frames >= frames[1] + 15)
    assert not alice_t.closed and not bob_t.closed
    assert alice.closed_reason is None


async def test_a_new_ssrc_on_every_packet_is_dropped_before_decryption(
        sfu: SfuHarness) -> None:
    alice, bob, alice_t, _ = await call(sfu, "ssrcs")
    dtls = dtls_of(alice)
    pt = alice_t.producers["video"].payload_type
    rejected = alice_t.sources.rejected
    errors = alice_t.srtp_errors
    rng = random.Random(5)
    loop = asyncio.get_running_loop()
    # Where per-source state would live (the consumers' packet caches, bounded rings that
    # normal media fills meanwhile, are elsewhere).
    package = Path(sfu_transport.__file__).parent
    sfu_code = [tracemalloc.Filter(True, str(package / name))
                for name in ("demux.py", "transport.py", "producer.py", "internals.py")]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(sfu_code)
        started = loop.time()
        for n in range(4000):  # about 2,000 packets a second, each on a new SSRC
            header = struct.pack("!BBHII", 0x80, pt, n, n * 3000, rng.getrandbits(32))
            await dtls._send_rtp(header + b"\x10\x01" + bytes(200))
            if n % 20 == 19:
                await asyncio.sleep(0.01)
        await wait_for(lambda: alice_t.sources.rejected >= rejected + 3500, timeout=30)
        elapsed = loop.time() - started
        after = tracemalloc.take_snapshot().filter_traces(sfu_code)
    finally:
        tracemalloc.stop()
    # what the SFU's own code holds did not grow with the SSRCs (libsrtp never saw them)
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert growth < 16 * 1024, growth
    assert alice_t.sources.switches <= elapsed + 2  # one a second at most
    assert len(list(alice_t.sources.media_ssrcs())) <= 3
    assert alice_t.srtp_errors == errors
    frames = bob.received.video_frames
    await wait_for(lambda: bob.received.video_frames >= frames + 15)


async def test_a_nack_storm_resends_within_the_budget(sfu: SfuHarness) -> None:
    alice, _, _, bob_t = await call(sfu, "storm")
    consumer = bob_t.consumers["video"]
    await wait_for(lambda: consumer.packets >= 300)
    last = consumer.rewriter.last_sequence_number
    assert last is not None
    newest = [(last - i) & 0xFFFF for i in range(272)][::-1]
    bob = sfu.bots[1]
    dtls = dtls_of(bob)
    before = consumer.retransmitted
    nack = bytes(RtcpNack(sender_ssrc=1, media_ssrc=consumer.ssrc, lost=newest))
    for n in range(2000):
        await dtls._send_rtp(nack)
        if n % 50 == 0:
            await asyncio.sleep(0.001)
    await wait_for(lambda: consumer.nacks_received >= 2000, timeout=30)
    resent = consumer.retransmitted - before
    assert resent <= 3 * 272
    responder = consumer.nack_responder
    assert responder.suppressed + responder.over_budget > 0
    assert alice.received.video_frames > 0


async def test_extra_sections_and_candidates_cost_nothing(sfu: SfuHarness) -> None:
    """25 video sections and 400 candidates: one video accepted, no thread per section, a
    bounded number of candidates checked."""
    import re

    text = (DATA / "chrome-156-offer.sdp").read_text()
    session, audio, video = re.split(r"(?m)^(?=m=)", text)
    many = "".join(f"a=candidate:{i} 1 udp {2000000000 - i} 10.9.{i // 250}.{i % 250} "
                   f"{20000 + i} typ host\r\n" for i in range(400))
    audio = audio.replace("a=ice-ufrag", many + "a=ice-ufrag")
    videos = "".join(re.sub(r"(?m)^a=mid:1$", f"a=mid:{i}", video) for i in range(1, 26))
    offer = re.sub(r"(?m)^a=group:BUNDLE .*$",
                   "a=group:BUNDLE " + " ".join(str(i) for i in range(26)),
                   session) + audio + videos
    sfu.server.create_room("big")
    threads = threading.active_count()
    transport = await sfu.server.join("big", "mallory")
    answer = await transport.answer(offer)
    assert answer.count("m=video 0 ") == 24
    assert threading.active_count() == threads
    generation = transport.ice.current
    assert generation is not None
    assert len(generation.connection.remote_candidates) <= 16
    await transport.close(CloseReason.LEFT)


async def test_garbage_from_a_stranger_harms_no_one(sfu: SfuHarness) -> None:
    """Datagrams of every kind from an address that is not the peer's: STUN-like, DTLS-like,
    SRTP-like, empty. The connection stays up and media goes on."""
    import socket

    alice, bob, alice_t, bob_t = await call(sfu, "stranger")
    generation = alice_t.ice.current
    assert generation is not None
    target = generation.connection.local_candidates[0]
    rng = random.Random(11)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for n in range(3000):
            first = rng.choice([0, 1, 0x16, 0x17, 0x80, 0x90, 0xFF])
            data = bytes([first]) + rng.randbytes(rng.randrange(0, 300))
            if n % 100 == 0:
                data = b""
            stranger.sendto(data, (target.host, target.port))
            if n % 100 == 99:
                await asyncio.sleep(0.005)
    finally:
        stranger.close()
    frames = bob.received.video_frames, alice.received.video_frames
    await wait_for(lambda: bob.received.video_frames >= frames[0] + 15
                   and alice.received.video_frames >= frames[1] + 15)
    assert alice_t.connected and not alice_t.closed and not bob_t.closed
    assert alice_t.srtp_errors > 0 or alice_t.sources.rejected > 0


async def test_dtls_from_an_address_other_than_the_peers_is_dropped(sfu: SfuHarness) -> None:
    _, _, alice_t, _ = await call(sfu, "dtls")
    generation = alice_t.ice.current
    assert generation is not None and generation.remote_address() is not None
    stray = alice_t.stray_datagrams
    queued = alice_t.dtls.shim.queue.qsize()
    alice_t._on_datagram(b"\x16\xfe\xfd" + bytes(40), 0.0, ("127.0.0.9", 4444))
    assert alice_t.stray_datagrams == stray + 1
    assert alice_t.dtls.shim.queue.qsize() == queued


async def test_dtls_from_another_candidate_of_the_peer_is_taken(sfu: SfuHarness) -> None:
    """The controlling browser may move to another valid pair after the first nomination
    (RFC 8445 section 8.1.1): its DTLS from that pair's address must reach the handshake."""
    _, _, alice_t, _ = await call(sfu, "dtls-moved")
    generation = alice_t.ice.current
    assert generation is not None and generation.remote_address() is not None
    await generation.add_remote_candidates(
        ["candidate:9 1 udp 2122260223 127.0.0.1 5555 typ host"])
    assert alice_t.ice.knows(("127.0.0.1", 5555))
    stray = alice_t.stray_datagrams
    queued = alice_t.dtls.shim.queue.qsize()
    alice_t._on_datagram(b"\x16\xfe\xfd" + bytes(40), 0.0, ("127.0.0.1", 5555))
    assert alice_t.stray_datagrams == stray
    assert alice_t.dtls.shim.queue.qsize() == queued + 1
