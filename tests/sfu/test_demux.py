"""sfu.demux: which SSRCs a transport admits, bounded whatever a peer sends."""

from __future__ import annotations

import struct
from pathlib import Path

from sfu import sdp
from sfu.demux import Route, SourceTable
from sfu.negotiation import LocalParameters, Negotiation, negotiate

DATA = Path(__file__).parent / "data"
LOCAL = LocalParameters(
    ice_ufrag="sfuU", ice_pwd="sfupasswordsfupassword", fingerprint=":".join(["AB"] * 32),
    candidates=["1 1 udp 2130706431 127.0.0.1 40000 typ host"],
    ssrcs={"audio": (11, 12), "video": (21, 22)}, cname="sfu", stream_id="s", session_id=1,
)
VIDEO, VIDEO_RTX, AUDIO = Route("video", False), Route("video", True), Route("audio", False)


def plan(name: str = "chrome-156-offer.sdp", strip_ssrcs: bool = False) -> Negotiation:
    text = (DATA / name).read_text()
    if strip_ssrcs:
        text = "".join(line for line in text.splitlines(keepends=True)
                       if not line.startswith(("a=ssrc:", "a=ssrc-group:")))
    return negotiate(sdp.parse(text), video_codec="vp8", local=LOCAL)


def rtp(ssrc: int, pt: int, seq: int = 1, mid: bytes | None = None) -> bytes:
    if mid is None:
        return struct.pack("!BBHII", 0x80, pt, seq, 0, ssrc) + b"payload"
    ext = bytes([(4 << 4) | (len(mid) - 1)]) + mid  # Chrome's mid id is 4
    ext += bytes(-len(ext) % 4)
    return (struct.pack("!BBHII", 0x90, pt, seq, 0, ssrc)
            + struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext + b"payload")


def test_signalled_ssrcs_are_known_at_once() -> None:
    negotiation = plan()
    table = SourceTable()
    table.configure(negotiation)
    video = negotiation.accepted("video")
    audio = negotiation.accepted("audio")
    assert video is not None and audio is not None
    primary = video.remote_ssrcs[0]
    rtx = next(iter(video.remote_rtx))
    assert table.lookup(primary) == VIDEO
    assert table.lookup(rtx) == VIDEO_RTX
    assert table.lookup(audio.remote_ssrcs[0]) == AUDIO


def test_unsignalled_ssrcs_are_learned_by_payload_type_once_a_second() -> None:
    table = SourceTable(switch_interval=1.0)
    table.configure(plan(strip_ssrcs=True))
    first = rtp(1111, 96)
    assert table.lookup(1111) is None
    assert table.classify(first, 1111, 0.0) == VIDEO
    assert table.learn(1111, VIDEO, 0.0) is None
    assert table.lookup(1111) == VIDEO
    # a restarted stream (new SSRC) replaces it, but not twice within the interval
    assert table.classify(rtp(2222, 96), 2222, 0.5) is None
    assert table.classify(rtp(2222, 96), 2222, 1.0) == VIDEO
    assert table.learn(2222, VIDEO, 1.0) == 1111
    assert table.lookup(1111) is None and table.lookup(2222) == VIDEO
    assert table.switches == 1
    # audio and RTX have slots of their own
    assert table.classify(rtp(3333, 111), 3333, 1.1) == AUDIO
    assert table.classify(rtp(4444, 97), 4444, 1.1) == VIDEO_RTX
    # unknown payload types never get in
    assert table.classify(rtp(5555, 100), 5555, 5.0) is None


def test_a_new_ssrc_every_packet_leaves_the_table_bounded() -> None:
    table = SourceTable()
    table.configure(plan(strip_ssrcs=True))
    now = 0.0
    learned = 0
    for n in range(20_000):  # 2,000 packets/s for 10 s, each on a new SSRC
        now = n / 2000
        ssrc = 100_000 + n
        if table.lookup(ssrc) is None:
            route = table.classify(rtp(ssrc, 96), ssrc, now)
            if route is not None:
                table.learn(ssrc, route, now)
                learned += 1
    assert learned <= 11  # the first, then one a second
    assert len(list(table.media_ssrcs())) == 1
    assert table.rejected >= 20_000 - 11


def test_ssrcs_of_rejected_sections_are_dropped() -> None:
    negotiation = plan("chrome-156-two-videos-offer.sdp")
    table = SourceTable()
    table.configure(negotiation)
    extra = sdp.parse((DATA / "chrome-156-two-videos-offer.sdp").read_text()).media[2]
    for ssrc in extra.ssrcs:
        assert table.lookup(ssrc) is None
        assert table.classify(rtp(ssrc, 96), ssrc, 10.0) is None


def test_mid_of_another_section_is_dropped() -> None:
    table = SourceTable()
    table.configure(plan(strip_ssrcs=True))
    assert table.classify(rtp(7, 96, mid=b"1"), 7, 0.0) == VIDEO
    assert table.classify(rtp(8, 96, mid=b"2"), 8, 0.0) is None  # the rejected camera
    assert table.classify(rtp(9, 96, mid=b"0"), 9, 0.0) is None  # video PT on the audio mid


def test_rtcp_senders_are_bounded() -> None:
    negotiation = plan()
    table = SourceTable(max_rtcp_senders=4)
    table.configure(negotiation)
    video = negotiation.accepted("video")
    assert video is not None
    assert table.rtcp_allowed(video.remote_ssrcs[0])
    for ssrc in range(1, 5):
        assert table.rtcp_allowed(ssrc)
        table.rtcp_seen(ssrc)
    assert table.rtcp_allowed(3)  # seen before
    assert not table.rtcp_allowed(99)  # a fifth stranger
    assert table.rtcp_allowed(video.remote_ssrcs[0])


def test_reconfiguring_keeps_learned_ssrcs() -> None:
    negotiation = plan(strip_ssrcs=True)
    table = SourceTable()
    table.configure(negotiation)
    table.learn(1234, VIDEO, 0.0)
    table.configure(negotiation)  # a re-offer (an ICE restart, say)
    assert table.lookup(1234) == VIDEO
