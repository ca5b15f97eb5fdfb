"""The SFU's answerer on offers in every legal shape (JSEP, RFC 8829; BUNDLE, RFC 8843).

The Chrome offers in tests/sfu/data were captured from Debian Chromium 156 on this machine; the
Firefox and Safari offers below are written from the shapes those browsers send (session-level
fingerprint, direction-qualified extmaps and fmtp before rtpmap in Firefox; H.264 High first and
packetization-mode 0 and 1 in Safari).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sfu import sdp
from sfu.negotiation import (
    MAX_REMOTE_CANDIDATES,
    OFFER_NO_FINGERPRINT,
    OFFER_NO_ICE,
    OFFER_NO_USABLE_SECTION,
    LocalParameters,
    Negotiation,
    negotiate,
    remote_ice_credentials,
)
from sfu.rtp import ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, MID_URI, TRANSPORT_CC_URI

DATA = Path(__file__).parent / "data"
CHROME = (DATA / "chrome-156-offer.sdp").read_text()
CHROME_VIDEO_FIRST = (DATA / "chrome-156-video-first-offer.sdp").read_text()
CHROME_TWO_VIDEOS = (DATA / "chrome-156-two-videos-offer.sdp").read_text()

FIREFOX = """v=0
o=mozilla...THIS_IS_SDPARTA-128.0 5151826546219547425 0 IN IP4 0.0.0.0
s=-
t=0 0
a=fingerprint:sha-256 {FP}
a=group:BUNDLE 0 1
a=ice-options:trickle
a=msid-semantic:WMS *
m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101
c=IN IP4 0.0.0.0
a=candidate:0 1 UDP 2122252543 127.0.0.1 50000 typ host
a=candidate:1 1 TCP 2105524479 127.0.0.1 9 typ host tcptype active
a=sendrecv
a=end-of-candidates
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level
a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid
a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1
a=fmtp:101 0-15
a=ice-pwd:3c9bd52f39a5a4b5fea2bd6e89b0ed28
a=ice-ufrag:8f7b5d0e
a=mid:0
a=msid:{4a4b0c4f-84e0-4a38-8b0b-6a6f5d5b2c1a} {0f7c4d4e-5a59-4d9a-9f0e-43c7f2a1e2b3}
a=rtcp-mux
a=rtpmap:109 opus/48000/2
a=rtpmap:9 G722/8000/1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000/1
a=setup:actpass
a=ssrc:1811170390 cname:{a8a2b2b3-2c0f-4e44-9b0c-1f4a1d2e3f40}
m=video 9 UDP/TLS/RTP/SAVPF 120 124 121 125 126 127 97 98
c=IN IP4 0.0.0.0
a=sendrecv
a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:4 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:5 urn:ietf:params:rtp-hdrext:toffset
a=extmap:6/recvonly http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
a=extmap:7 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1
a=fmtp:97 profile-level-id=42e01f;level-asymmetry-allowed=1
a=fmtp:120 max-fs=12288;max-fr=60
a=fmtp:124 apt=120
a=fmtp:121 max-fs=12288;max-fr=60
a=fmtp:125 apt=121
a=fmtp:127 apt=126
a=fmtp:98 apt=97
a=ice-pwd:3c9bd52f39a5a4b5fea2bd6e89b0ed28
a=ice-ufrag:8f7b5d0e
a=mid:1
a=msid:{4a4b0c4f-84e0-4a38-8b0b-6a6f5d5b2c1a} {9b2c1f0e-3d4c-4b5a-8e7f-6a5b4c3d2e1f}
a=rtcp-fb:120 nack
a=rtcp-fb:120 nack pli
a=rtcp-fb:120 ccm fir
a=rtcp-fb:120 goog-remb
a=rtcp-fb:120 transport-cc
a=rtcp-fb:126 nack
a=rtcp-fb:126 nack pli
a=rtcp-fb:126 ccm fir
a=rtcp-fb:126 goog-remb
a=rtcp-fb:126 transport-cc
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:120 VP8/90000
a=rtpmap:124 rtx/90000
a=rtpmap:121 VP9/90000
a=rtpmap:125 rtx/90000
a=rtpmap:126 H264/90000
a=rtpmap:127 rtx/90000
a=rtpmap:97 H264/90000
a=rtpmap:98 rtx/90000
a=setup:actpass
a=ssrc:2960416245 cname:{a8a2b2b3-2c0f-4e44-9b0c-1f4a1d2e3f40}
a=ssrc:1393474126 cname:{a8a2b2b3-2c0f-4e44-9b0c-1f4a1d2e3f40}
a=ssrc-group:FID 2960416245 1393474126
""".replace("{FP}", ":".join(["0A", "57", "4C", "37"] * 8))

SAFARI_VIDEO = """m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 102 103 106 107
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Sf4r
a=ice-pwd:Kq8yQ0n4x3V7a1Lm5Zc9Rt2W
a=ice-options:trickle
a=fingerprint:sha-256 {FP}
a=setup:actpass
a=mid:1
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:13 urn:3gpp:video-orientation
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendrecv
a=msid:s1 t2
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 H264/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:98 H264/90000
a=rtcp-fb:98 goog-remb
a=rtcp-fb:98 transport-cc
a=rtcp-fb:98 ccm fir
a=rtcp-fb:98 nack
a=rtcp-fb:98 nack pli
a=fmtp:98 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:99 rtx/90000
a=fmtp:99 apt=98
a=rtpmap:100 H264/90000
a=rtcp-fb:100 nack
a=fmtp:100 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=640c1f
a=rtpmap:101 rtx/90000
a=fmtp:101 apt=100
a=rtpmap:102 H264/90000
a=rtcp-fb:102 nack
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=rtpmap:106 VP8/90000
a=rtcp-fb:106 goog-remb
a=rtcp-fb:106 transport-cc
a=rtcp-fb:106 ccm fir
a=rtcp-fb:106 nack
a=rtcp-fb:106 nack pli
a=rtpmap:107 rtx/90000
a=fmtp:107 apt=106
a=ssrc-group:FID 1000 1001
a=ssrc:1000 cname:safari
a=ssrc:1001 cname:safari
""".replace("{FP}", ":".join(["6E", "3F", "0A", "1B"] * 8))

LOCAL = LocalParameters(
    ice_ufrag="sfuU", ice_pwd="sfupasswordsfupassword",
    fingerprint=":".join(["AB"] * 32),
    candidates=["1 1 udp 2130706431 127.0.0.1 40000 typ host"],
    ssrcs={"audio": (11, 12), "video": (21, 22)}, cname="sfu", stream_id="napalmsky-x",
    session_id=7,
)


def answer_of(offer: str, video_codec: str = "vp8", previous: Negotiation | None = None,
              local: LocalParameters = LOCAL) -> tuple[Negotiation, sdp.SessionDescription]:
    plan = negotiate(sdp.parse(offer), video_codec=video_codec, local=local, previous=previous)
    return plan, sdp.parse(plan.answer)


def sections(text: str) -> list[str]:
    """The offer split at its m= lines: [session, m1, m2, ...] (each with its newline)."""
    parts = re.split(r"(?m)^(?=m=)", text)
    return parts


def bundle(text: str, mids: str) -> str:
    return re.sub(r"(?m)^a=group:BUNDLE .*$", f"a=group:BUNDLE {mids}", text)


def test_chrome_offer() -> None:
    plan, answer = answer_of(CHROME)
    assert [m.kind for m in answer.media] == ["audio", "video"]
    assert [m.mid for m in answer.media] == ["0", "1"]
    assert answer.bundle_group() == ("0", "1")
    audio, video = answer.media
    assert list(audio.codecs) == [111] and audio.codecs[111].name == "opus"
    assert list(video.codecs) == [96, 97]
    assert video.codecs[97].parameters == {"apt": "96"}
    assert {e.uri: e.id for e in audio.extmaps} == {
        AUDIO_LEVEL_URI: 1, ABS_SEND_TIME_URI: 2, TRANSPORT_CC_URI: 3, MID_URI: 4}
    assert {e.uri: e.id for e in video.extmaps} == {
        ABS_SEND_TIME_URI: 2, TRANSPORT_CC_URI: 3, MID_URI: 4}
    assert set(video.codecs[96].rtcp_fb) == {"goog-remb", "transport-cc", "ccm fir", "nack",
                                             "nack pli"}
    assert audio.codecs[111].rtcp_fb == ("transport-cc",)
    assert audio.direction == video.direction == "sendrecv"
    assert audio.setup == video.setup == "active" and plan.dtls_role == "client"
    assert audio.ice_ufrag == "sfuU" and audio.fingerprints == [("sha-256", LOCAL.fingerprint)]
    assert audio.candidates == list(LOCAL.candidates) and audio.end_of_candidates
    assert (video.ssrc_groups, set(video.ssrcs)) == ([("FID", (21, 22))], {21, 22})
    assert set(audio.ssrcs) == {11}
    # remote candidates: UDP only (Chrome also lists TCP active ones), highest priority first
    assert plan.remote_candidates and all(" udp " in c for c in plan.remote_candidates)
    assert plan.remote_ufrag == "D0f/" and plan.publishes == {"audio", "video"}
    assert plan.accepted("video") is not None and plan.accepted("video").rtx is not None  # type: ignore[union-attr]


def test_video_before_audio_keeps_the_offer_order_and_its_bundle_tag() -> None:
    plan, answer = answer_of(CHROME_VIDEO_FIRST)
    assert [m.kind for m in answer.media] == ["video", "audio"]
    assert answer.bundle_group() == ("0", "1")
    assert answer.media[0].candidates == list(LOCAL.candidates)  # on the tagged section
    assert answer.media[0].port == 40000 and answer.media[1].port == 40000
    assert plan.publishes == {"audio", "video"}


def test_audio_only() -> None:
    parts = sections(CHROME)
    offer = bundle(parts[0] + parts[1], "0")
    plan, answer = answer_of(offer)
    assert [m.kind for m in answer.media] == ["audio"]
    assert plan.publishes == {"audio"} and plan.accepted("video") is None


def test_video_only() -> None:
    parts = sections(CHROME)
    plan, answer = answer_of(bundle(parts[0] + parts[2], "1"))
    assert [m.kind for m in answer.media] == ["video"] and plan.publishes == {"video"}


def test_a_second_video_section_is_rejected() -> None:
    plan, answer = answer_of(CHROME_TWO_VIDEOS)
    assert [m.port for m in answer.media] == [40000, 40000, 0]
    assert answer.bundle_group() == ("0", "1")
    assert answer.media[2].mid == "2" and not answer.media[2].codecs
    extra = sdp.parse(CHROME_TWO_VIDEOS).media[2]
    # its SSRCs are known, so its packets are dropped before decryption
    assert set(extra.ssrcs) <= set(plan.allowed_ssrc_sections)
    assert all(plan.allowed_ssrc_sections[s] == 2 for s in extra.ssrcs)


def test_twenty_five_video_sections_one_accepted() -> None:
    parts = sections(CHROME)
    videos = [re.sub(r"(?m)^a=mid:1$", f"a=mid:{i}", parts[2]) for i in range(1, 26)]
    offer = bundle(parts[0] + parts[1] + "".join(videos), " ".join(str(i) for i in range(26)))
    plan, answer = answer_of(offer)
    assert len(answer.media) == 26
    assert [m.port for m in answer.media].count(0) == 24
    assert sum(1 for s in plan.sections if s.accepted) == 2


def test_four_hundred_candidates_are_capped() -> None:
    parts = sections(CHROME)
    many = "".join(f"a=candidate:{i} 1 udp {2000000000 - i} 10.0.{i // 250}.{i % 250} {20000 + i}"
                   f" typ host\r\n" for i in range(400))
    offer = parts[0] + parts[1].replace("a=ice-ufrag", many + "a=ice-ufrag") + parts[2]
    plan, _ = answer_of(offer)
    assert len(plan.remote_candidates) == MAX_REMOTE_CANDIDATES
    assert plan.remote_candidates[0].startswith("3562186761 ")  # the highest priority kept


def test_h264_room_prefers_constrained_baseline_packetization_mode_1() -> None:
    plan, answer = answer_of(CHROME, video_codec="h264")
    video = answer.media[1]
    assert list(video.codecs) == [108, 109]
    assert video.codecs[108].parameters["profile-level-id"] == "42e01f"
    assert plan.accepted("video").codec.payload_type == 108  # type: ignore[union-attr]


def test_safari_h264_high_first() -> None:
    parts = sections(CHROME)
    offer = bundle(parts[0] + parts[1] + SAFARI_VIDEO, "0 1")
    _plan, answer = answer_of(offer, video_codec="h264")
    assert list(answer.media[1].codecs) == [98, 99]  # 42e01f mode 1, not High 640c1f
    _plan, answer = answer_of(offer, video_codec="vp8")
    assert list(answer.media[1].codecs) == [106, 107]
    assert {e.uri for e in answer.media[1].extmaps} == {ABS_SEND_TIME_URI, TRANSPORT_CC_URI,
                                                        MID_URI}


def test_firefox_offer() -> None:
    plan, answer = answer_of(FIREFOX)
    assert plan.remote_fingerprints[0][0] == "sha-256"  # from the session level
    assert plan.remote_ufrag == "8f7b5d0e"
    audio, video = answer.media
    assert list(audio.codecs) == [109]
    assert audio.codecs[109].fmtp == "maxplaybackrate=48000;stereo=1;useinbandfec=1"
    assert {e.id for e in audio.extmaps} == {1, 3}  # 2/recvonly left out
    assert list(video.codecs) == [120, 124]  # RTX found though its fmtp came first
    assert {e.uri: e.id for e in video.extmaps} == {
        MID_URI: 3, ABS_SEND_TIME_URI: 4, TRANSPORT_CC_URI: 7}
    assert all(e.direction is None for e in video.extmaps)
    # TCP candidates are left out
    assert plan.remote_candidates == ("0 1 UDP 2122252543 127.0.0.1 50000 typ host",)
    video_plan = plan.accepted("video")
    assert video_plan is not None and video_plan.remote_ssrcs == (2960416245,)
    assert dict(video_plan.remote_rtx) == {1393474126: 2960416245}


def test_firefox_h264_without_packetization_mode_is_mode_0() -> None:
    _plan, answer = answer_of(FIREFOX, video_codec="h264")
    assert list(answer.media[1].codecs) == [126, 127]


def test_a_data_channel_first_is_rejected_and_the_tag_moves() -> None:
    parts = sections(CHROME)
    app = ("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
           "a=ice-ufrag:D0f/\r\na=ice-pwd:8oajkYLKex6AccLQX2YQEVca\r\n"
           "a=mid:2\r\na=sctp-port:5000\r\n")
    _plan, answer = answer_of(bundle(parts[0] + app + parts[1] + parts[2], "2 0 1"))
    assert [(m.kind, m.port) for m in answer.media] == [
        ("application", 0), ("audio", 40000), ("video", 40000)]
    assert answer.media[0].formats == ["webrtc-datachannel"] and answer.media[0].mid == "2"
    assert answer.bundle_group() == ("0", "1")
    assert answer.media[1].candidates  # the new tag carries the candidates


def test_rejected_and_bundle_only_sections() -> None:
    parts = sections(CHROME)
    rejected_audio = parts[1].replace("m=audio 58361", "m=audio 0", 1)
    plan, answer = answer_of(parts[0] + rejected_audio + parts[2])
    assert [m.port for m in answer.media] == [0, 40000]
    assert answer.bundle_group() == ("1",) and plan.publishes == {"video"}
    bundle_only = parts[1] + parts[2].replace("m=video 9", "m=video 0", 1).replace(
        "a=mid:1", "a=mid:1\r\na=bundle-only", 1)
    plan, answer = answer_of(parts[0] + bundle_only)
    assert [m.port for m in answer.media] == [40000, 40000]


def test_directions_mirror_the_offer() -> None:
    parts = sections(CHROME)
    for offered, answered, publishes in (("sendonly", "recvonly", True),
                                         ("recvonly", "sendonly", False),
                                         ("inactive", "inactive", False)):
        video = parts[2].replace("a=sendrecv", f"a={offered}")
        plan, answer = answer_of(parts[0] + parts[1] + video)
        assert answer.media[1].direction == answered
        assert ("video" in plan.publishes) is publishes
        assert bool(answer.media[1].ssrcs) is (answered in ("sendrecv", "sendonly"))


def test_codec_order_does_not_matter() -> None:
    offer = CHROME.replace("UDP/TLS/RTP/SAVPF 96 97 102", "UDP/TLS/RTP/SAVPF 102 97 96")
    _, answer = answer_of(offer)
    assert list(answer.media[1].codecs) == [96, 97]


def test_a_section_without_the_room_codec_is_rejected_not_the_offer() -> None:
    parts = sections(CHROME)
    video = re.sub(r"(?m)^a=rtpmap:96 VP8/90000\r?\n", "", parts[2])
    plan, answer = answer_of(parts[0] + parts[1] + video)
    assert [m.port for m in answer.media] == [40000, 0]
    assert plan.publishes == {"audio"}


def test_without_bundle_one_section() -> None:
    offer = re.sub(r"(?m)^a=group:BUNDLE .*\r?\n", "", CHROME)
    _plan, answer = answer_of(offer)
    assert [m.port for m in answer.media] == [40000, 0]
    assert not answer.bundle_group()


def test_a_reoffer_keeps_ids_payload_types_mids_and_the_dtls_role() -> None:
    first, answer1 = answer_of(CHROME)
    again = CHROME.replace("a=setup:actpass", "a=setup:active")
    second, answer2 = answer_of(again, previous=first)
    assert second.dtls_role == first.dtls_role == "client"
    assert [m.setup for m in answer2.media] == ["active", "active"]
    for a, b in zip(answer1.media, answer2.media, strict=True):
        assert a.extmaps == b.extmaps and list(a.codecs) == list(b.codecs) and a.mid == b.mid


def test_an_active_offerer_makes_us_the_dtls_server() -> None:
    plan, answer = answer_of(CHROME.replace("a=setup:actpass", "a=setup:active"))
    assert plan.dtls_role == "server" and answer.media[0].setup == "passive"


def test_ice_restart_credentials() -> None:
    restarted = CHROME.replace("a=ice-ufrag:D0f/", "a=ice-ufrag:NeW1").replace(
        "a=ice-pwd:8oajkYLKex6AccLQX2YQEVca", "a=ice-pwd:newpasswordnewpassword12")
    assert remote_ice_credentials(sdp.parse(CHROME)) == ("D0f/", "8oajkYLKex6AccLQX2YQEVca")
    assert remote_ice_credentials(sdp.parse(restarted)) == ("NeW1", "newpasswordnewpassword12")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: re.sub(r"(?m)^a=ice-(ufrag|pwd):.*\r?\n", "", t), OFFER_NO_ICE),
        (lambda t: re.sub(r"(?m)^a=fingerprint:.*\r?\n", "", t), OFFER_NO_FINGERPRINT),
        (lambda t: re.sub(r"(?m)^a=rtpmap:(111|96) .*\r?\n", "", t), OFFER_NO_USABLE_SECTION),
    ],
)
def test_offers_the_sfu_cannot_use(change: object, message: str) -> None:
    offer = change(CHROME)  # type: ignore[operator]
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        answer_of(offer)


def test_sdp_parser_errors_and_leniency() -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(sdp.SDP_BAD_MEDIA_LINE)}$"):
        sdp.parse("v=0\r\nm=audio garbage\r\n")
    with pytest.raises(ValueError, match=f"^{re.escape(sdp.SDP_NO_MEDIA)}$"):
        sdp.parse("v=0\r\ns=-\r\n")
    with pytest.raises(ValueError, match=f"^{re.escape(sdp.SDP_EMPTY)}$"):
        sdp.parse("\r\n")
    with pytest.raises(ValueError, match=f"^{re.escape(sdp.SDP_BAD_RTPMAP)}$"):
        sdp.parse("v=0\r\nm=audio 9 RTP/SAVPF 1\r\na=rtpmap:x opus/48000\r\n")
    with pytest.raises(ValueError, match=f"^{re.escape(sdp.SDP_TOO_MANY_SECTIONS)}$"):
        sdp.parse("v=0\r\n" + "m=audio 9 RTP/SAVPF 0\r\n" * (sdp.MAX_SECTIONS + 1))
    # an extmap with extension attributes, lines that are not SDP, \n line endings
    text = ("v=0\nnot sdp\nm=audio 9 UDP/TLS/RTP/SAVPF 111\n"
            "a=extmap:5 urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on\n"
            "a=rtpmap:111 opus/48000/2\n")
    parsed = sdp.parse(text)
    assert parsed.media[0].extmaps == [sdp.Extmap(5, AUDIO_LEVEL_URI)]
    assert parsed.media[0].codecs[111].channels == 2
