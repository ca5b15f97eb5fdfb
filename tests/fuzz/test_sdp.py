"""SDP handling (sfu/sdp.py, sfu/negotiation.py, and the transport around them),
property-based.

- `sdp.parse` raises ValueError with one of its fixed messages, `negotiate` one of its own,
  and the transport turns both into InvalidArgument: no IndexError, KeyError or stray
  ValueError text ever reaches a client.
- An offer that negotiates gets an answer that our own parser reads back with one m= section
  per offered section, in order, with the same kinds and mids; at most one accepted section
  per kind, every accepted one in the BUNDLE group, using the offer's payload types and
  extension ids, with the direction mirrored.

Offers are real browser offers (tests/sfu/data) mutated line by line, offers assembled from
the grammar, and arbitrary text.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from core.clock import SystemClock
from core.errors import InvalidArgument
from sfu import negotiation, sdp
from sfu.internals import NetworkConfig
from sfu.negotiation import KINDS, MAX_REMOTE_CANDIDATES, LocalParameters, negotiate
from sfu.rtp import ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, MID_URI, TRANSPORT_CC_URI
from sfu.server import SfuConfig, SfuServer

fuzz = settings.get_profile("napalmsky-fuzz")

DATA = Path(__file__).parents[1] / "sfu" / "data"
OFFERS = [path.read_text() for path in sorted(DATA.glob("*.sdp"))]
SDP_MESSAGES = {value for name, value in vars(sdp).items() if name.startswith("SDP_")}
OFFER_MESSAGES = {
    value for name, value in vars(negotiation).items() if name.startswith("OFFER_")
}
LOCAL = LocalParameters(
    ice_ufrag="sfuU", ice_pwd="sfupasswordsfupassword", fingerprint=":".join(["AB"] * 32),
    candidates=["1 1 udp 2130706431 127.0.0.1 40000 typ host"],
    ssrcs={"audio": (11, 12), "video": (21, 22)}, cname="sfu", stream_id="napalmsky-x",
    session_id=7,
)
REVERSE = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
           "inactive": "inactive"}

# ---- the grammar, with the values that break naive parsers ---------------------------------

numbers = st.sampled_from(
    ["0", "1", "9", "96", "111", "127", "128", "255", "256", "65535", "65536", "-1", "+5",
     "4294967295", "4294967296", "1_000", "0x10", "", " ", "9" * 5000, "²", "٣", "\uff11", "1e3",
     "96/2", "nan"]
) | st.integers(-5, 300).map(str)
tokens = st.sampled_from(
    ["VP8", "vp8", "H264", "opus", "rtx", "VP9", "*", "0", "1", "2", "audio", "video",
     "application", "sendrecv", "recvonly", "sendonly", "inactive", "actpass", "active",
     "passive", "holdconn", "BUNDLE", "FID", "SIM", "nack", "pli", "ccm", "fir",
     "transport-cc", "goog-remb", "UDP/TLS/RTP/SAVPF", "RTP/SAVP", "UDP/DTLS/SCTP", "IN",
     "IP4", "udp", "tcp", "typ", "host", "x.local", "127.0.0.1", "::1", "apt=96",
     "packetization-mode=1", "profile-level-id=42e01f", MID_URI, ABS_SEND_TIME_URI,
     AUDIO_LEVEL_URI, TRANSPORT_CC_URI, "sha-256", "AB:CD", "\t", "\x00", "\u2028", "\x85",
     "é", "\ud800"]
) | st.text(max_size=6)
values = st.lists(numbers | tokens, max_size=8).map(" ".join) | st.builds(
    "{}/{}/{}".format, tokens, numbers, numbers
) | st.builds("{}/{} {}".format, numbers, tokens, tokens)
ATTRIBUTES = [
    "rtpmap", "fmtp", "rtcp-fb", "extmap", "ssrc", "ssrc-group", "mid", "group", "candidate",
    "fingerprint", "setup", "ice-ufrag", "ice-pwd", "ice-lite", "sendrecv", "recvonly",
    "sendonly", "inactive", "bundle-only", "rtcp-mux", "rtcp-rsize", "msid",
    "extmap-allow-mixed", "end-of-candidates", "rtcp", "x-unknown",
]
attribute_lines = st.builds(
    lambda name, colon, value: f"a={name}{':' + value if colon else ''}",
    st.sampled_from(ATTRIBUTES), st.booleans(), values,
)
media_lines = st.builds(
    lambda kind, port, proto, formats: f"m={kind} {port} {proto} {' '.join(formats)}",
    st.sampled_from(["audio", "video", "AUDIO", "application", "text", "x"]) | tokens,
    st.sampled_from(["9", "0", "9/2"]) | numbers,
    st.sampled_from(["UDP/TLS/RTP/SAVPF", "RTP/SAVP", "RTP/AVP", "UDP/DTLS/SCTP"]) | tokens,
    st.lists(numbers, max_size=5),
)
lines = st.one_of(
    attribute_lines, attribute_lines, media_lines,
    st.sampled_from(["v=0", "o=- 1 2 IN IP4 0.0.0.0", "s=-", "t=0 0", "c=IN IP4 0.0.0.0",
                     "a=group:BUNDLE 0 1", "a=mid:0", "a=mid:1", "a=mid:", "a=bundle-only",
                     "a=setup:actpass", "a=ice-ufrag:u", "a=ice-pwd:p", "a=fingerprint:x y",
                     "m=video 0 UDP/TLS/RTP/SAVPF 96", "a=rtpmap:96 VP8/90000", "garbage",
                     "=", "a", "a=", "m=", ""]),
    st.text(max_size=40),
)


@st.composite
def mutated_offers(draw: st.DrawFn) -> str:
    """A browser offer with a few lines removed, repeated, moved, changed or added."""
    text = draw(st.sampled_from(OFFERS))
    out = text.replace("\r\n", "\n").split("\n")
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(out) - 1))
        operation = draw(st.sampled_from(
            ["delete", "repeat", "move", "value", "insert", "insert", "cut", "char"]))
        line = out[at]
        if operation == "delete":
            del out[at]
        elif operation == "repeat":
            out.insert(at, line)
        elif operation == "move":
            out.insert(draw(st.integers(0, len(out) - 1)), out.pop(at))
        elif operation == "value":
            head = line.split(":", 1)[0] if line.startswith("a=") else line[:2]
            out[at] = f"{head}:{draw(values)}" if line.startswith("a=") else head + draw(values)
        elif operation == "insert":
            out.insert(at, draw(lines))
        elif operation == "cut":
            out[at] = line[: draw(st.integers(0, len(line)))]
        elif line:
            i = draw(st.integers(0, len(line) - 1))
            out[at] = line[:i] + draw(st.characters()) + line[i + 1 :]
        if not out:
            out = [""]
    return draw(st.sampled_from(["\r\n", "\n"])).join(out)


@st.composite
def assembled_offers(draw: st.DrawFn) -> str:
    """An offer from the grammar: a session part, then sections of mostly plausible lines."""
    out = ["v=0", "o=- 1 2 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    mids = draw(st.lists(st.sampled_from(["0", "1", "2", "a b", "0"]), min_size=1, max_size=4))
    if draw(st.booleans()):
        out.append("a=group:BUNDLE " + " ".join(mids))
    out += draw(st.lists(attribute_lines, max_size=3))
    for mid in mids:
        kind = draw(st.sampled_from(["audio", "video"]))
        codec = "111 opus/48000/2" if kind == "audio" else "96 VP8/90000"
        pt = codec.split()[0]
        out += [
            f"m={kind} {draw(st.sampled_from(['9', '0']))} UDP/TLS/RTP/SAVPF {pt} 97",
            f"a=mid:{mid}", "a=ice-ufrag:u", "a=ice-pwd:p", "a=fingerprint:sha-256 AB",
            f"a=rtpmap:{codec}", "a=rtpmap:97 rtx/90000", f"a=fmtp:97 apt={pt}",
            f"a=rtcp-fb:{pt} nack", f"a=rtcp-fb:{pt} transport-cc",
            f"a=extmap:3 {TRANSPORT_CC_URI}", f"a=extmap:4 {MID_URI}",
        ]
        out += draw(st.lists(lines, max_size=4))
    return "\r\n".join(out) + "\r\n"


offers = mutated_offers() | assembled_offers() | st.lists(lines, max_size=30).map("\n".join)


# ---- the properties ---------------------------------------------------------------------------


def check_answer(offer: sdp.SessionDescription, plan: negotiation.Negotiation) -> None:
    answer = sdp.parse(plan.answer)
    assert len(answer.media) == len(offer.media) == len(plan.sections)
    accepted: list[str] = []
    for index, (section, offered, answered) in enumerate(
        zip(plan.sections, offer.media, answer.media, strict=True)
    ):
        assert section.index == index
        assert (answered.kind, answered.mid) == (offered.kind, offered.mid)
        assert answered.rejected == (not section.accepted)
        if not section.accepted:
            continue
        assert offered.kind in KINDS and not offered.rejected
        accepted.append(offered.kind)
        offered_pts = {int(f) for f in offered.formats if f.isascii() and f.isdigit()}
        assert {int(f) for f in answered.formats} <= offered_pts
        assert set(answered.codecs) == {int(f) for f in answered.formats}
        assert answered.direction == REVERSE[offered.direction]
        offered_ids = {(e.id, e.uri) for e in offered.extmaps}
        assert {(e.id, e.uri) for e in answered.extmaps} <= offered_ids
        assert (answered.ice_ufrag, answered.ice_pwd) == (LOCAL.ice_ufrag, LOCAL.ice_pwd)
        assert answered.fingerprints == [("sha-256", LOCAL.fingerprint)]
        assert answered.setup in ("active", "passive")
    assert len(accepted) == len(set(accepted)) >= 1
    if offer.bundle_group():
        mids = [s.mid for s in plan.sections if s.accepted and s.mid is not None]
        assert answer.bundle_group() == tuple(mids)
    else:
        assert answer.bundle_group() == ()
    assert len(plan.remote_candidates) <= MAX_REMOTE_CANDIDATES
    assert plan.dtls_role in ("client", "server")


def parse_and_negotiate(
    text: str, *, record: bool = True
) -> tuple[sdp.SessionDescription, negotiation.Negotiation] | None:
    """The offer and its negotiation, or None when refused (with a fixed message only);
    `record` tallies the outcomes for --hypothesis-show-statistics."""
    note = event if record else (lambda _value: None)
    try:
        offer = sdp.parse(text)
    except ValueError as exc:
        assert type(exc) is ValueError and str(exc) in SDP_MESSAGES, repr(exc)
        note(f"refused: {exc}")
        return None
    try:
        plan = negotiate(offer, video_codec="vp8", local=LOCAL)
    except ValueError as exc:
        assert type(exc) is ValueError and str(exc) in OFFER_MESSAGES, repr(exc)
        note(f"refused: {exc}")
        return None
    note("negotiated")
    return offer, plan


@fuzz
@given(text=offers)
@example(text=OFFERS[0].replace("a=rtpmap:111 ", "a=fmtp:² x\r\na=rtpmap:111 "))
@example(text=OFFERS[0].replace("SAVPF 111 ", "SAVPF ² 111 "))
@example(text=OFFERS[0].replace("a=mid:1", "a=mid:0"))  # two sections, one mid
@example(text=OFFERS[0].replace("a=mid:0\r\n", ""))  # a bundled section without a mid
@example(text="m=audio 9 RTP/SAVPF 0\na=ssrc-group:FID 1 x")
@example(text="m=audio 99999999999999999999 RTP/SAVPF 0")
@example(text="m=video 9 RTP/SAVPF 96\na=rtpmap:96 VP8/" + "9" * 5000)
def test_offers_parse_and_negotiate_or_are_refused_with_fixed_errors(text: str) -> None:
    result = parse_and_negotiate(text)
    if result is not None:
        check_answer(*result)


@fuzz
@given(text=st.text(max_size=400))
def test_any_text_parses_or_is_refused_with_a_fixed_error(text: str) -> None:
    parse_and_negotiate(text)


@fuzz
@given(first=offers, second=offers, codec=st.sampled_from(["vp8", "h264"]))
def test_a_renegotiation_keeps_the_accepted_sections_and_the_dtls_role(
    first: str, second: str, codec: str
) -> None:
    try:
        offer = sdp.parse(first)
        previous = negotiate(offer, video_codec=codec, local=LOCAL)
        reoffer = sdp.parse(second)
        plan = negotiate(reoffer, video_codec=codec, local=LOCAL, previous=previous)
    except ValueError as exc:
        assert str(exc) in SDP_MESSAGES | OFFER_MESSAGES, repr(exc)
        return
    check_answer(reoffer, plan)
    assert plan.dtls_role == previous.dtls_role
    for kind in KINDS:
        before, after = previous.accepted(kind), plan.accepted(kind)
        if before is None or after is None or before.mid is None:
            continue
        still_usable = [
            s for s in plan.sections
            if s.mid == before.mid and s.kind == kind
            and negotiation._plan(s.index, reoffer.media[s.index], codec) is not None
            and (not reoffer.bundle_group() or s.mid in reoffer.bundle_group())
        ]
        if still_usable:
            assert after.mid == before.mid  # the section accepted before keeps its place


def test_the_mutations_reach_the_answer() -> None:
    """Guard against a strategy that only ever produces refused offers: each real offer
    negotiates, and so does a lightly mutated one."""
    for text in OFFERS:
        result = parse_and_negotiate(text, record=False)
        assert result is not None
        check_answer(*result)
    lighter = re.sub("a=rtcp-rsize\r?\n", "", OFFERS[0])
    assert parse_and_negotiate(lighter, record=False) is not None


# ---- the transport: what a client sees --------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[SfuServer]:
    server = SfuServer(SfuConfig(net=NetworkConfig(bind=("127.0.0.1",))), SystemClock())
    server.create_room("fuzz")
    try:
        yield server
    finally:
        await server.close()


# One server for all examples (a certificate per example would cost more than the fuzzing).
@settings(fuzz, max_examples=min(fuzz.max_examples, 30),
          suppress_health_check=[*fuzz.suppress_health_check,
                                 HealthCheck.function_scoped_fixture])
@given(text=offers)
@example(text=OFFERS[0].replace("SAVPF 111 ", "SAVPF ² 111 "))
@example(text=OFFERS[0].replace("a=setup:actpass", "a=setup:holdconn"))
async def test_the_transport_answers_or_raises_invalid_argument(
    server: SfuServer, text: str
) -> None:
    transport = await server.join("fuzz", "user")  # a rejoin closes the previous one
    try:
        answer = await transport.answer(text)
    except InvalidArgument as exc:
        assert exc.message.removeprefix("invalid offer: ") in SDP_MESSAGES | OFFER_MESSAGES
    else:
        assert sdp.parse(answer).media


@pytest.mark.parametrize("mid", ["m" * 256, "\ud800", "é", "a b", "a\tb", "0"])
async def test_a_mid_the_sfu_cannot_use_is_refused_and_harms_no_partner(
    server: SfuServer, mid: str
) -> None:
    """A mid the MID header extension cannot carry used to make ExtensionPlan.build raise
    ValueError while the consumers were set up: from the offerer's answer() when the partner
    published already, from the partner's answer() (an innocent party) when it published
    after. Now such offers (and duplicate mids: "0" is the audio section's) are refused."""
    victim = await server.join("fuzz", "victim")
    mallory = await server.join("fuzz", "mallory")
    offer = OFFERS[0].replace("a=mid:1\n", f"a=mid:{mid}\n").replace(
        "BUNDLE 0 1", f"BUNDLE 0 {mid}")
    with pytest.raises(InvalidArgument, match="mid"):
        await mallory.answer(offer)
    await victim.answer(OFFERS[0])
    await mallory.answer(OFFERS[0])  # and mallory may still send a usable one
