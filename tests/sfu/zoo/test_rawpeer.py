"""The client zoo against the SFU: RawPeers offering real clients' shapes exchange media.

Chrome, Firefox and Safari shapes, a screen beside the camera, inactive video, reordered codecs,
an offer without candidates, many sections and candidates; and the cases the SFU used to fail
(video first, audio or video only, a data channel first, a rejected section, RSA certificates,
ICE restarts from the same and from another address, a publisher restarting its source under a
new SSRC with bases behind the old ones, sender reports that keep capture time when video
reaches the SFU 150 ms after audio).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import pytest

from loadtest.media import AudioParams, VideoParams
from tests.sfu.zoo import shapes
from tests.sfu.zoo.media import (
    Analysis,
    Publisher,
    annexb_nal_units,
    audio_clip,
    h264_clip,
    h264_keyframe,
    h264_payloads,
    video_clip,
    vp8_keyframe,
    vp8_payloads,
)
from tests.sfu.zoo.rawpeer import CertificateKind, OfferRefused, RawPeer, pack_dtls_records
from tests.sfu.zoo.rtp import RtpHeader, build_rtp, parse_rtcp, parse_rtp, pli, sender_report
from tests.sfu.zoo.sdp import MediaSection, parse
from tests.sfu.zoo.shapes import LocalTransport, Shape


class Rooms(Protocol):
    def create_room(self, room_id: str) -> object: ...


class SfuHarness(Protocol):
    """What the zoo uses of tests/sfu/conftest.py's `sfu` fixture (typed here so that the zoo
    type-checks without importing the SFU)."""

    @property
    def server(self) -> Rooms: ...

    @property
    def url(self) -> str: ...

    def token(self, room: str, user: str, ttl: int = 60) -> str: ...


VIDEO = VideoParams(width=320, height=180, fps=30, bitrate=400_000, seconds=2.0)
AUDIO = AudioParams(seconds=2.0)
ICE_TIMEOUT = 4.0  # on loopback ICE takes well under a second; failures should not wait long


async def until(predicate: Callable[[], bool], timeout: float = 10.0,
                what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout} s")
        await asyncio.sleep(0.02)


@pytest.fixture
async def peers() -> AsyncIterator[list[RawPeer]]:
    """Peers a test creates; all closed at the end whatever happened."""
    made: list[RawPeer] = []
    try:
        yield made
    finally:
        for peer in made:
            await peer.close()


def publish(peer: RawPeer, *, video_codec: str = "VP8") -> list[Publisher]:
    """Publish the loadtest clips on the peer's first sending audio and video sections."""
    out: list[Publisher] = []
    for section in peer.shape.sections:
        if section.rejected or section.direction not in ("sendrecv", "sendonly"):
            continue
        if section.kind == "audio" and not any(p.kind == "audio" for p in out):
            out.append(Publisher(peer, section, audio_clip(AUDIO)).start())
        elif section.kind == "video" and not any(p.kind == "video" for p in out):
            out.append(Publisher(peer, section, video_clip(VIDEO), codec=video_codec).start())
    return out


def expected_payload_type(peer: RawPeer, answer: MediaSection, codec: str) -> int:
    """The payload type `peer` offered for `codec` in the section the answer answers."""
    assert answer.mid is not None
    return peer.shape.by_mid(answer.mid).payload_type(codec)


def receiving_sections(peer: RawPeer) -> list[MediaSection]:
    assert peer.answer is not None
    return [s for s in peer.answer.sections
            if not s.rejected and s.kind in ("audio", "video")
            and s.direction in ("sendrecv", "sendonly") and s.media_ssrc is not None]


async def exchange(sfu: SfuHarness, peers: list[RawPeer], room: str, shape_a: Shape,
                   shape_b: Shape | None = None, *, certificate: CertificateKind = "ecdsa",
                   video_packets: int = 60, audio_packets: int = 40,
                   timeout: float = 8.0) -> tuple[RawPeer, RawPeer]:
    """Two peers join `room` and publish; each must receive the other's media on the SSRCs of
    its answer, in the payload types of its own offer, with continuous sequence numbers."""
    sfu.server.create_room(room)
    a = RawPeer(sfu.url, sfu.token(room, "a"), shape_a, certificate=certificate,
                timeout=timeout, ice_timeout=ICE_TIMEOUT)
    b = RawPeer(sfu.url, sfu.token(room, "b"), shape_b or shapes.chrome(), timeout=timeout,
                ice_timeout=ICE_TIMEOUT)
    peers += [a, b]
    await a.join()
    await b.join()
    publish(a)
    publish(b)

    def want(peer: RawPeer, partner: RawPeer) -> dict[int, int]:
        """Packets wanted per SSRC: on the first receiving section of each kind the partner
        publishes (the partner publishes one track per kind)."""
        kinds = {s.kind for s in partner.shape.sections
                 if not s.rejected and s.direction in ("sendrecv", "sendonly")}
        out: dict[int, int] = {}
        for s in receiving_sections(peer):
            if s.kind in kinds and s.media_ssrc is not None:
                kinds.discard(s.kind)
                out[s.media_ssrc] = video_packets if s.kind == "video" else audio_packets
        return out

    wants = {id(a): want(a, b), id(b): want(b, a)}
    assert wants[id(a)] and wants[id(b)], "nothing to receive: the answers send nothing"

    def done() -> bool:
        return all(len(p.rtp(ssrc)) >= n for p in (a, b) for ssrc, n in wants[id(p)].items())

    try:
        await until(done, timeout, "media both ways")
    except AssertionError:
        got = {p.shape.name: {s: len(p.rtp(s)) for s in wants[id(p)]} for p in (a, b)}
        seen = {p.shape.name: sorted({r.ssrc for r in p.received_rtp}) for p in (a, b)}
        raise AssertionError(f"wanted {wants}, got {got}, ssrcs seen {seen}") from None
    for peer in (a, b):
        analysis = Analysis(peer.received_rtp, peer.received_rtcp)
        answer = receiving_sections(peer)
        announced = {x for s in answer for x in (s.media_ssrc, s.rtx_ssrc) if x is not None}
        assert set(analysis.ssrcs()) <= announced, (analysis.ssrcs(), announced)
        for section in answer:
            assert section.media_ssrc is not None
            if section.media_ssrc not in wants[id(peer)]:
                continue
            codec = "opus" if section.kind == "audio" else "VP8"
            stats = analysis.stats(section.media_ssrc)
            assert stats.payload_types == {expected_payload_type(peer, section, codec)}, (
                section.kind, stats.payload_types)
            assert stats.continuous, (section.kind, stats.gaps[:5])
    return a, b


# ---- offline: shapes render, and our parser reads them back ----


@pytest.mark.parametrize("name", sorted(shapes.SHAPES))
def test_every_shape_renders_and_parses(name: str) -> None:
    shape = shapes.SHAPES[name]()
    local = LocalTransport("abcd", "p" * 24, "AA:" * 31 + "AA",
                           [shape.host_candidate("127.0.0.1", 40000)])
    desc = parse(shape.sdp(local))
    assert len(desc.sections) == len(shape.sections)
    assert desc.bundle == shape.bundle_mids()
    for offered, parsed in zip(shape.sections, desc.sections, strict=True):
        assert parsed.kind == offered.kind and parsed.mid == offered.mid
        assert parsed.fingerprints == [("sha-256", local.fingerprint)]
        if offered.kind == "application":
            continue
        assert parsed.payload_types == [c.pt for c in offered.codecs]
        assert {e.id: e.uri for e in offered.extensions} == parsed.extmap
        if offered.rejected:
            assert parsed.port == 0 and parsed.mid not in desc.bundle
            continue
        assert parsed.ice_ufrag == "abcd" and parsed.setup == "actpass"
        if offered.ssrc_lines and offered.ssrc is not None:
            assert parsed.media_ssrc == offered.ssrc
            assert parsed.rtx_ssrc == offered.rtx_ssrc


def test_the_shapes_carry_their_clients_habits() -> None:
    local = LocalTransport("abcd", "p" * 24, "AA:" * 31 + "AA", [])
    ff = shapes.firefox()
    text = ff.sdp(LocalTransport("0a1b2c3d", "f" * 32, local.fingerprint,
                                 [ff.host_candidate("127.0.0.1", 5000)]))
    assert text.startswith("v=0\r\no=mozilla...THIS_IS_SDPARTA-")
    assert "a=extmap:2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level" in text
    assert "a=end-of-candidates" in text and "a=candidate:0 1 UDP " in text
    session = text.split("m=")[0]
    assert "a=fingerprint:sha-256" in session and "a=ice-options:trickle" in session
    assert ff.section("audio").payload_type("opus") == 109
    assert ff.section("video").payload_type("VP8") == 120
    assert ff.section("video").rtx_payload_type(120) == 124

    chrome = shapes.chrome()
    assert chrome.section("audio").extension_id(shapes.URI_MID) == 4
    assert chrome.section("video").extension_id(shapes.URI_TOFFSET) == 14
    first = shapes.chrome_video_first()
    assert [s.kind for s in first.sections] == ["video", "audio"]
    assert first.section("audio").extension_id(shapes.URI_AUDIO_LEVEL) == 14
    assert first.section("video").extension_id(shapes.URI_MID) == 9

    safari = shapes.safari().section("video")
    assert safari.primary.name == "H264"
    assert safari.payload_type("H264", packetization_mode=0, profile_level_id="42e01f") == 102
    assert safari.payload_type("VP8") == 106

    reordered = shapes.reordered_codecs().section("video")
    assert reordered.codecs[-2].name == "VP8" and reordered.codecs[-1].apt == 96
    text = shapes.with_data_channel().sdp(local)
    assert text.index("m=application") < text.index("m=audio")
    assert "a=group:BUNDLE 0 1 2" in text
    rejected = parse(shapes.with_rejected_section(shapes.firefox()).sdp(local))
    assert rejected.sections[0].port == 0 and rejected.sections[0].mid is None
    assert rejected.bundle == ["0", "1"]
    rejected = parse(shapes.with_rejected_section(shapes.chrome()).sdp(local))
    assert [s.mid for s in rejected.sections] == ["0", "1", "2"] and rejected.bundle == ["1", "2"]


def test_packetizers_and_rtp_round_trip() -> None:
    frame = bytes(range(256)) * 20
    payloads = vp8_payloads(b"\x10" + frame, picture_id=300, max_size=1000)
    assert len(payloads) == 6 and all(len(p) <= 1000 for p in payloads)
    assert vp8_keyframe(payloads[0]) and not vp8_keyframe(payloads[1])
    nal = b"\x65" + bytes(3000)  # an IDR slice
    fu = h264_payloads(b"\x00\x00\x00\x01\x67\x42\x00\x1f\x00\x00\x01" + nal, max_size=1200)
    assert fu[0] == b"\x67\x42\x00\x1f" and fu[1][:2] == bytes([0x7C, 0x85])
    assert fu[-1][1] == 0x45 and b"".join(p[2:] for p in fu[1:]) == nal[1:]
    header = RtpHeader(96, 65535, 1 << 31, 1234, True, extensions={4: b"1", 3: b"\x00\x07"})
    parsed = parse_rtp(build_rtp(header, b"xyz"))
    assert parsed.header == header and parsed.payload == b"xyz"
    two = parse_rtp(build_rtp(RtpHeader(111, 1, 2, 3, extensions={15: b"ab"}), b""))
    assert two.extension_profile == 0x1000 and two.header.extensions == {15: b"ab"}
    sr = parse_rtcp(sender_report(7, 0x0123456789ABCDEF, 99, 3, 4) + pli(7, 8))
    assert sr[0].ntp == 0x0123456789ABCDEF and sr[0].rtp_timestamp == 99 and sr[1].is_pli


def test_h264_clip_fits_packetization_mode_0() -> None:
    clip = h264_clip()
    assert clip.keyframes[0] and sum(clip.keyframes) == 2
    assert [n[0] & 0x1F for n in annexb_nal_units(clip.frames[0])][:2] == [7, 8]  # SPS, PPS
    for frame in clip.frames:
        assert all(len(p) <= 1100 for p in h264_payloads(frame, 1100, packetization_mode=0))
    assert h264_keyframe(h264_payloads(clip.frames[0])[0])
    assert not h264_keyframe(h264_payloads(clip.frames[1])[0])


def test_dtls_flights_are_packed_on_record_boundaries() -> None:
    records = [bytes([22, 254, 253]) + bytes(8) + n.to_bytes(2, "big") + bytes(n)
               for n in (700, 700, 300, 1500)]
    datagrams = pack_dtls_records(b"".join(records), 1200)
    assert datagrams == [records[0], records[1] + records[2], records[3]]


# ---- against the SFU ----


async def test_chrome_peers_exchange_vp8_and_opus(sfu: SfuHarness, peers: list[RawPeer]) -> None:
    a, b = await exchange(sfu, peers, "zoo-chrome", shapes.chrome(), shapes.chrome())
    for peer in (a, b):
        assert peer.answer is not None
        assert [s.kind for s in peer.answer.sections] == ["audio", "video"]
        video = peer.answer.sections_of("video")[0]
        assert video.media_ssrc is not None
        packets = peer.rtp(video.media_ssrc)
        assert {p.payload_type for p in packets} == {96}
        assert any(vp8_keyframe(p.payload) for p in packets)
    assert a.answer is not None
    audio = Analysis(a.received_rtp).stats(a.answer.sections_of("audio")[0].media_ssrc or 0)
    assert audio.timestamp_steps.most_common(1)[0][0] == 960  # 20 ms Opus frames


async def test_close_leaves_no_task_socket_or_thread(sfu: SfuHarness,
                                                     peers: list[RawPeer]) -> None:
    threads = threading.active_count()
    sfu.server.create_room("zoo-close")
    peer = RawPeer(sfu.url, sfu.token("zoo-close", "a"), shapes.chrome())
    peers.append(peer)
    await peer.join()
    publish(peer)
    await until(lambda: bool(peer.received_rtcp), 5.0, "RTCP from the SFU")
    assert peer.leftover_tasks()  # the check sees the running ones
    assert peer.open_sockets()
    await peer.close()
    assert peer.leftover_tasks() == []
    assert peer.open_sockets() == []
    assert peer.link.closed and peer.dtls.state == "closed"
    assert threading.active_count() == threads


async def test_a_broken_first_offer_is_refused(sfu: SfuHarness, peers: list[RawPeer]) -> None:
    sfu.server.create_room("zoo-broken")
    peer = RawPeer(sfu.url, sfu.token("zoo-broken", "a"), shapes.chrome(), timeout=5.0)
    peers.append(peer)
    await peer.open()
    await peer.gather()
    with pytest.raises(OfferRefused) as refused:
        await peer.negotiate("v=0\r\nm=banana\r\n")
    assert refused.value.reply is not None and refused.value.reply["code"] == "invalid_argument"
    await until(lambda: peer.ws_close_code is not None, 5.0, "the socket closed")
    assert peer.ws_close_code == 4400


# ---- shapes and behaviours the SFU interop work fixes ----


@pytest.mark.parametrize("name", [
    "two_videos", "firefox", "safari", "inactive_video", "reordered_codecs",
    "chrome_video_first", "audio_only", "video_only", "with_data_channel",
    "with_rejected_section", "firefox_with_rejected_section",
])
async def test_shape_exchanges_media(sfu: SfuHarness, peers: list[RawPeer], name: str) -> None:
    await exchange(sfu, peers, f"zoo-{name}", shapes.SHAPES[name](), shapes.chrome())


@pytest.mark.parametrize("kind", ["rsa2048", "rsa4096"])
async def test_rsa_certificates(sfu: SfuHarness, peers: list[RawPeer],
                                kind: CertificateKind) -> None:
    await exchange(sfu, peers, f"zoo-{kind}", shapes.chrome(), shapes.chrome(), certificate=kind)


async def test_offer_before_any_candidate(sfu: SfuHarness, peers: list[RawPeer]) -> None:
    shape = shapes.chrome()
    shape.include_candidates = False  # the SFU learns our address from our checks (prflx)
    await exchange(sfu, peers, "zoo-no-candidates", shape, shapes.chrome())


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.0.0.2"])
async def test_ice_restart_keeps_dtls_and_media(sfu: SfuHarness, peers: list[RawPeer],
                                                bind: str) -> None:
    a, b = await exchange(sfu, peers, "zoo-restart", shapes.chrome(), shapes.chrome())
    assert a.answer is not None
    video = a.answer.sections_of("video")[0].media_ssrc or 0
    old_ufrag = a.answer.transport_section.ice_ufrag
    ssl = a.dtls._ssl
    handshake_datagrams = len(a.link.dtls_datagrams)
    answer = await a.restart_ice(bind=bind)
    assert answer.transport_section.ice_ufrag != old_ufrag, "the SFU kept its ICE credentials"
    assert a.ice is not None and a.ice.local_candidates[0].host == bind
    before_a, before_b = len(a.rtp(video)), len(b.received_rtp)
    await until(lambda: len(a.rtp(video)) >= before_a + 60
                and len(b.received_rtp) >= before_b + 100, 8.0, "media after the restart")
    assert a.dtls._ssl is ssl and a.dtls.state == "connected"
    assert len(a.link.dtls_datagrams) == handshake_datagrams, "DTLS handshook again"
    assert Analysis(a.received_rtp).stats(video).continuous


async def test_publisher_restart_with_new_ssrc_and_bases(sfu: SfuHarness,
                                                         peers: list[RawPeer]) -> None:
    sfu.server.create_room("zoo-source-restart")
    a = RawPeer(sfu.url, sfu.token("zoo-source-restart", "a"), shapes.chrome())
    b = RawPeer(sfu.url, sfu.token("zoo-source-restart", "b"), shapes.chrome())
    peers += [a, b]
    await a.join()
    await b.join()
    video = Publisher(a, a.section("video"), video_clip(VIDEO), sequence=30000,
                      timestamp=3_000_000_000).start()
    assert b.answer is not None
    ssrc = b.answer.sections_of("video")[0].media_ssrc or 0
    await until(lambda: len(b.rtp(ssrc)) >= 60, 8.0, "video before the restart")
    before = len(b.rtp(ssrc))
    # New bases "behind" the old ones in 16/32-bit arithmetic: nothing may look like a replay.
    video.restart(ssrc=shapes.new_ssrc(), sequence=7, timestamp=123456)
    await until(lambda: len(b.rtp(ssrc)) >= before + 60, 8.0, "video after the restart")
    stats = Analysis(b.received_rtp).stats(ssrc)
    assert stats.continuous, stats.gaps[:5]  # the SFU hides the publisher's restart
    after = b.rtp(ssrc)[before:]
    assert any(vp8_keyframe(p.payload) for p in after[:10])


async def test_sender_reports_keep_capture_time_when_video_is_late(
        sfu: SfuHarness, peers: list[RawPeer]) -> None:
    """Video sent 150 ms after capture while its SRs map capture time: the subscriber's SRs
    must keep the mapping, so video arrives ~150 ms 'older' than audio (lip sync possible)."""
    sfu.server.create_room("zoo-sync")
    a = RawPeer(sfu.url, sfu.token("zoo-sync", "a"), shapes.chrome())
    b = RawPeer(sfu.url, sfu.token("zoo-sync", "b"), shapes.chrome())
    peers += [a, b]
    await a.join()
    await b.join()
    for publisher in publish(a):
        publisher.delay = 0.150 if publisher.kind == "video" else 0.0
    assert b.answer is not None
    ssrcs = {s.kind: s.media_ssrc or 0 for s in receiving_sections(b)}
    clocks = {"audio": 48000, "video": 90000}

    def reports() -> int:
        analysis = Analysis(b.received_rtp, b.received_rtcp)
        return min(len(analysis.sender_reports(ssrcs[k])) for k in ("audio", "video"))

    await until(lambda: reports() >= 3, 10.0, "three sender reports per kind")
    analysis = Analysis(b.received_rtp, b.received_rtcp)
    wall = time.time() - time.monotonic()
    lag = {}
    for kind, ssrc in ssrcs.items():
        first_sr = analysis.sender_reports(ssrc)[0].arrival
        late = [p.arrival + wall - (analysis.capture_time(p, clocks[kind]) or 0.0)
                for p in analysis.packets(ssrc) if p.arrival > first_sr]
        lag[kind] = sorted(late)[len(late) // 2]
    assert abs(lag["video"] - lag["audio"] - 0.150) < 0.015, lag


async def test_many_sections_and_candidates(sfu: SfuHarness, peers: list[RawPeer]) -> None:
    """A client with 3 more video tracks and 80 unreachable candidates (in its first section:
    a Chrome video section is ~4.8 KB, and the SFU takes SDP up to 32 KiB) still gets camera
    and microphone through."""
    shape = shapes.chrome()
    for section in shape.add_copies("video", 3):
        section.candidates = False
    shape.sections[1].candidates = False
    shape.add_fake_candidates(80)
    await exchange(sfu, peers, "zoo-many", shape, shapes.chrome())
    assert peers[0].offer_sdp is not None and 20_000 < len(peers[0].offer_sdp) < 32 * 1024
