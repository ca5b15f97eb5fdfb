"""RTCP through the SFU between real aiortc peers: keyframe requests, NACK/RTX under induced
loss in either direction, honest sender/receiver reports, REMB, and malformed packets."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket

from loadtest.bot import BLUE, RED, Bot
from sfu.transport import Transport
from tests.sfu.conftest import SfuHarness, wait_for

RtpHandler = Callable[[bytes, int], Awaitable[None]]


async def call(sfu: SfuHarness, room: str) -> tuple[Bot, Bot, Transport, Transport]:
    sfu.server.create_room(room)
    alice, bob = sfu.bot(room, "alice", RED), sfu.bot(room, "bob", BLUE)
    await alice.join()
    await bob.join()
    await wait_for(lambda: alice.received.video_frames >= 3 and bob.received.video_frames >= 3)
    transports = sfu.server.rooms[room].transports
    return alice, bob, transports["alice"], transports["bob"]


def video_transceiver(bot: Bot) -> Any:
    assert bot.pc is not None
    return next(t for t in bot.pc.getTransceivers() if t.kind == "video")


def lossy(original: RtpHandler, payload_type: int, every: int, dropped: list[int]) -> RtpHandler:
    """Drop the first copy of every `every`-th packet of `payload_type`."""
    seen: set[int] = set()
    count = 0

    async def handler(data: bytes, arrival_time_ms: int) -> None:
        nonlocal count
        if data[1] & 0x7F == payload_type:
            seq = struct.unpack_from("!H", data, 2)[0]
            if seq not in seen:
                seen.add(seq)
                count += 1
                if count % every == 0 and len(dropped) < 40:
                    dropped.append(seq)
                    return
        await original(data, arrival_time_ms)

    return handler


def lossy_datagrams(original: Callable[[Any, bytes, float], None], payload_type: int,
                    every: int, dropped: list[int]) -> Callable[[Any, bytes, float], None]:
    """Drop the first copy of every `every`-th SRTP datagram of `payload_type` (a wrapper of
    `Transport._receive_rtp`)."""
    seen: set[int] = set()
    count = 0

    def handler(rx: Any, data: bytes, arrival: float) -> None:
        nonlocal count
        if len(data) >= 12 and 128 <= data[0] < 192 and data[1] & 0x7F == payload_type:
            seq = struct.unpack_from("!H", data, 2)[0]
            if seq not in seen:
                seen.add(seq)
                count += 1
                if count % every == 0 and len(dropped) < 40:
                    dropped.append(seq)
                    return
        original(rx, data, arrival)

    return handler


def rtx_recorder(original: RtpHandler, rtx_payload_type: int, recovered: set[int]) -> RtpHandler:
    async def handler(data: bytes, arrival_time_ms: int) -> None:
        if data[1] & 0x7F == rtx_payload_type:
            header = 12 + 4 * (data[0] & 0x0F)
            if data[0] & 0x10:
                header += 4 + 4 * struct.unpack_from("!H", data, header + 2)[0]
            recovered.add(struct.unpack_from("!H", data, header)[0])
        await original(data, arrival_time_ms)

    return handler


async def test_a_subscriber_keyframe_request_reaches_the_publisher(sfu: SfuHarness) -> None:
    alice, bob, _, bob_t = await call(sfu, "kf")
    sender = video_transceiver(alice).sender
    requests = 0
    original = sender._send_keyframe

    def counting() -> None:
        nonlocal requests
        requests += 1
        original()

    sender._send_keyframe = counting
    receiver = video_transceiver(bob).receiver
    sfu_ssrc = bob_t.consumers["video"].ssrc
    for _ in range(5):  # a burst: the SFU passes one up, not five
        await receiver._send_rtcp_pli(sfu_ssrc)
    await wait_for(lambda: requests >= 1)
    await wait_for(lambda: bob_t.consumers["video"].keyframe_requests == 5)
    producer = sfu.server.rooms["kf"].transports["alice"].producers["video"]
    await wait_for(lambda: producer._deferred is None)  # a deferred request, if any, went out
    # One PLI for the burst; a second only when the answering keyframe took longer than the
    # throttle interval (a busy machine): never one per request.
    assert 1 <= requests <= 2


async def test_downstream_loss_is_repaired_from_the_sfu_cache(sfu: SfuHarness) -> None:
    _, bob, _, bob_t = await call(sfu, "nack-down")
    consumer = bob_t.consumers["video"]
    assert consumer.section is not None and consumer.section.rtx is not None
    assert consumer.section.codec is not None
    dtls = video_transceiver(bob).receiver.transport
    dropped: list[int] = []
    recovered: set[int] = set()
    inner = rtx_recorder(dtls._handle_rtp_data, consumer.section.rtx.payload_type, recovered)
    dtls._handle_rtp_data = lossy(inner, consumer.section.codec.payload_type, 10, dropped)
    await wait_for(lambda: len(dropped) >= 10 and set(dropped[:10]) <= recovered)
    assert consumer.retransmitted >= 10
    before = bob.received.video_frames
    await wait_for(lambda: bob.received.video_frames >= before + 10)


async def test_upstream_loss_is_nacked_to_the_publisher(sfu: SfuHarness) -> None:
    _, bob, alice_t, _ = await call(sfu, "nack-up")
    producer = alice_t.producers["video"]
    dropped: list[int] = []
    # Lose packets on the way in: the RTP header is readable before decryption.
    alice_t._receive_rtp = lossy_datagrams(  # type: ignore[method-assign]
        alice_t._receive_rtp, producer.payload_type, 8, dropped)
    await wait_for(lambda: len(dropped) >= 10 and producer.rtx_received >= 10)
    assert producer.nacks_sent >= 1
    assert producer.nacks is not None and producer.nacks.recovered >= 10
    before = bob.received.video_frames
    await wait_for(lambda: bob.received.video_frames >= before + 10)


async def test_reports_are_honest_and_publishers_get_remb(sfu: SfuHarness) -> None:
    alice, bob, alice_t, bob_t = await call(sfu, "rtcp")
    sender = video_transceiver(alice).sender
    rembs: list[int] = []
    original = sender._handle_rtcp_packet

    async def record(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            rembs.append(1)
        await original(packet)

    sender._handle_rtcp_packet = record
    receiver = video_transceiver(bob).receiver

    async def remote_outbound() -> Any:
        stats = await receiver.getStats()
        return next((s for s in stats.values() if s.type == "remote-outbound-rtp"), None)

    found: list[Any] = []

    async def poll() -> bool:
        found[:] = [await remote_outbound()]
        return found[0] is not None

    deadline = time.monotonic() + 10
    while not await poll():
        assert time.monotonic() < deadline, "no sender report reached the subscriber"
        await asyncio.sleep(0.2)
    report = found[0]
    consumer = bob_t.consumers["video"]
    assert 0 < report.packetsSent <= consumer.packets
    assert 0 < report.bytesSent <= consumer.octets

    # the publisher hears our receiver reports (its remote-inbound stats) and REMB
    await wait_for(lambda: bool(rembs), timeout=10)
    stats = await sender.getStats()
    inbound = [s for s in stats.values() if s.type == "remote-inbound-rtp"]
    assert inbound and inbound[0].packetsLost >= 0
    await wait_for(lambda: bob_t.consumers["video"].rtt is not None, timeout=10)
    assert 0 <= (bob_t.consumers["video"].rtt or 0) < 1.0
    assert alice_t.producers["video"].stats is not None


async def test_malformed_packets_are_ignored(sfu: SfuHarness) -> None:
    alice, bob, alice_t, _ = await call(sfu, "garbage")
    producer = alice_t.producers["video"]
    pt = producer.payload_type
    ssrc = producer.ssrc or 0
    header = struct.pack("!BBHII", 0x80, pt, 1, 2, ssrc)
    garbage = [
        bytes([0x90]) + header[1:] + b"\xbe\xde\x00\x09",  # extension longer than the packet
        bytes([0xA0]) + header[1:] + b"ab\x09",  # padding longer than the payload
        bytes([0x8F]) + header[1:],  # 15 CSRCs announced, none present
        struct.pack("!BBHII", 0x80, 77, 1, 2, ssrc) + b"unknown payload type",
    ]
    before = producer.malformed
    for data in garbage:
        producer.on_rtp(data, False, 0)
    assert producer.malformed - before == 4
    assert producer.ssrc == ssrc
    frames = bob.received.video_frames
    await wait_for(lambda: bob.received.video_frames >= frames + 10)
    assert alice.received.video_frames > 0
