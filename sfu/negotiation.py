"""The SFU's answerer: which sections of an offer it accepts and the answer it sends (JSEP).

Pure functions on `sfu.sdp` descriptions. The rules (RFC 8829 JSEP section 5.3, RFC 8843 BUNDLE):

- The answer has one m= section per offered section, in the offer's order, with the same mid.
- The SFU accepts at most one audio and one video section: the first of each kind that is in
  the BUNDLE group (or, in an offer without BUNDLE, the first usable section at all), not
  rejected by the offerer (port 0 without a=bundle-only) and offers the room's codec (Opus;
  VP8 or H.264). On a re-offer the section accepted before keeps its place. Every other
  section (a second camera, a screen, a data channel, an unknown kind) is rejected with port 0
  and left out of the BUNDLE group, so nothing is ever received or sent on it.
- Directions mirror the offer (sendonly -> recvonly, recvonly -> sendonly, inactive stays).
- Codecs are the offerer's payload types; order in the offer does not matter. For H.264 the
  SFU prefers packetization-mode=1 and the Constrained Baseline profile every browser decodes.
  RTX (RFC 4588) is accepted for the chosen video payload type when offered.
- RTCP feedback and header extensions are the intersection of what was offered (at the
  offerer's ids) and what the SFU implements; direction-qualified extmaps are left out.
- DTLS: an offer with setup:actpass gets setup:active (the SFU is the DTLS client), an active
  offerer gets passive; the role chosen first stays for every later answer (RFC 8842).
- ICE: the answer carries the SFU's credentials and all its candidates (no trickle). Remote
  candidates are taken from the bundled sections, UDP only, mDNS hostnames left out (a
  browser's checks reveal its address as peer-reflexive anyway), at most
  MAX_REMOTE_CANDIDATES of them by priority.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from sfu.rtp import ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, MID_URI, TRANSPORT_CC_URI
from sfu.sdp import Codec, MediaSection, SessionDescription

MAX_REMOTE_CANDIDATES = 16

OFFER_NO_ICE = "offer has no ICE username fragment or password"
OFFER_NO_FINGERPRINT = "offer has no DTLS fingerprint"
OFFER_NO_USABLE_SECTION = "offer has no audio or video section the SFU can use"
OFFER_BAD_SETUP = "offer has an invalid a=setup"

Kind = str  # "audio" | "video"
KINDS: tuple[Kind, ...] = ("audio", "video")

SUPPORTED_FEEDBACK = frozenset({"nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"})
SUPPORTED_EXTENSIONS: Mapping[Kind, frozenset[str]] = {
    "audio": frozenset({MID_URI, AUDIO_LEVEL_URI, ABS_SEND_TIME_URI, TRANSPORT_CC_URI}),
    "video": frozenset({MID_URI, ABS_SEND_TIME_URI, TRANSPORT_CC_URI}),
}
_REVERSE = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
            "inactive": "inactive"}


@dataclass(frozen=True, slots=True)
class LocalParameters:
    """What the SFU puts in every answer for one transport."""

    ice_ufrag: str
    ice_pwd: str
    fingerprint: str  # sha-256, upper-case hex pairs separated by colons
    candidates: Sequence[str]  # values for a=candidate: lines
    ssrcs: Mapping[Kind, tuple[int, int]]  # kind -> (primary SSRC, RTX SSRC) we send on
    cname: str
    stream_id: str
    session_id: int
    session_version: int = 2


@dataclass(frozen=True, slots=True)
class SectionPlan:
    """What the answer says about one offered section."""

    index: int
    kind: str
    mid: str | None
    accepted: bool
    direction: str = "inactive"  # the answer's direction (ours)
    codec: Codec | None = None
    rtx: Codec | None = None
    extensions: Mapping[str, int] = field(default_factory=dict)  # uri -> id (the offer's ids)
    feedback: frozenset[str] = frozenset()
    remote_ssrcs: tuple[int, ...] = ()  # the offerer's primary SSRCs (a=ssrc, FID groups)
    remote_rtx: Mapping[int, int] = field(default_factory=dict)  # RTX SSRC -> primary SSRC

    @property
    def receives(self) -> bool:
        """The SFU receives media on this section (the offerer publishes)."""
        return self.accepted and self.direction in ("sendrecv", "recvonly")

    @property
    def sends(self) -> bool:
        return self.accepted and self.direction in ("sendrecv", "sendonly")


@dataclass(frozen=True, slots=True)
class Negotiation:
    sections: tuple[SectionPlan, ...]
    dtls_role: str  # "client" or "server": the SFU's DTLS role
    remote_ufrag: str
    remote_pwd: str
    remote_ice_lite: bool
    remote_fingerprints: tuple[tuple[str, str], ...]
    remote_candidates: tuple[str, ...]
    answer: str
    allowed_ssrc_sections: Mapping[int, int] = field(default_factory=dict)  # ssrc -> index

    def accepted(self, kind: Kind) -> SectionPlan | None:
        return next((s for s in self.sections if s.accepted and s.kind == kind), None)

    @property
    def publishes(self) -> frozenset[Kind]:
        """The kinds the offerer sends us."""
        return frozenset(s.kind for s in self.sections if s.receives)

    @property
    def mids(self) -> Mapping[str, SectionPlan]:
        return {s.mid: s for s in self.sections if s.mid is not None}


def remote_ice_credentials(offer: SessionDescription) -> tuple[str, str] | None:
    """The ICE ufrag/pwd of the offer's first section that has both (bundled sections share)."""
    for section in offer.media:
        if section.ice_ufrag and section.ice_pwd:
            return section.ice_ufrag, section.ice_pwd
    return None


def _h264_rank(codec: Codec) -> tuple[int, int]:
    params = codec.parameters
    mode = 1 if params.get("packetization-mode", "0") == "1" else 0
    profile = params.get("profile-level-id", "42001f").lower()
    if profile.startswith("42e0"):
        rank = 3  # Constrained Baseline
    elif profile.startswith("4200"):
        rank = 2  # Baseline
    elif profile.startswith("4d00"):
        rank = 1  # Main
    else:
        rank = 0
    return mode, rank


def _choose_codec(section: MediaSection, video_codec: str) -> tuple[Codec | None, Codec | None]:
    codecs = list(section.codecs.values())
    if section.kind == "audio":
        opus = [c for c in codecs if c.name.lower() == "opus" and c.clock_rate == 48000]
        return (opus[0] if opus else None), None
    wanted = [c for c in codecs if c.name.lower() == video_codec and c.clock_rate == 90000]
    if not wanted:
        return None, None
    chosen = max(wanted, key=_h264_rank) if video_codec == "h264" else wanted[0]
    rtx = next(
        (c for c in codecs if c.name.lower() == "rtx"
         and c.parameters.get("apt") == str(chosen.payload_type)),
        None,
    )
    return chosen, rtx


def _remote_ssrcs(section: MediaSection) -> tuple[tuple[int, ...], dict[int, int]]:
    rtx: dict[int, int] = {}
    for semantics, members in section.ssrc_groups:
        if semantics == "FID" and len(members) == 2:
            rtx[members[1]] = members[0]
    primaries = tuple(s for s in section.ssrcs if s not in rtx)
    return primaries, rtx


def _plan(index: int, section: MediaSection, video_codec: str) -> SectionPlan | None:
    """The plan for an acceptable section, or None when the SFU cannot use it."""
    if section.kind not in KINDS or section.rejected or (not section.proto.upper().endswith(
        "RTP/SAVPF"
    ) and not section.proto.upper().endswith("RTP/SAVP")):
        return None
    codec, rtx = _choose_codec(section, video_codec)
    if codec is None:
        return None
    feedback = frozenset(codec.rtcp_fb) & SUPPORTED_FEEDBACK
    supported = SUPPORTED_EXTENSIONS[section.kind]
    extensions: dict[str, int] = {}
    for ext in section.extmaps:
        if ext.direction not in (None, "sendrecv") or ext.uri not in supported:
            continue
        if ext.uri == TRANSPORT_CC_URI and "transport-cc" not in feedback:
            continue
        extensions.setdefault(ext.uri, ext.id)
    if TRANSPORT_CC_URI not in extensions:
        feedback -= {"transport-cc"}
    primaries, rtx_map = _remote_ssrcs(section)
    return SectionPlan(
        index=index, kind=section.kind, mid=section.mid, accepted=True,
        direction=_REVERSE.get(section.direction, "inactive"), codec=codec,
        rtx=rtx if rtx is not None and "nack" in feedback else None,
        extensions=extensions, feedback=feedback, remote_ssrcs=primaries, remote_rtx=rtx_map,
    )


def _dtls_role(offer_setup: str | None, previous: Negotiation | None) -> str:
    if previous is not None:
        return previous.dtls_role
    if offer_setup in (None, "actpass", "passive"):
        return "client"
    if offer_setup == "active":
        return "server"
    raise ValueError(OFFER_BAD_SETUP)


def _candidate_priority(candidate: str) -> int:
    parts = candidate.split()
    try:
        return int(parts[3])
    except (IndexError, ValueError):
        return 0


def _usable_candidate(candidate: str) -> bool:
    parts = candidate.split()
    return (len(parts) >= 8 and parts[2].lower() == "udp" and parts[1] == "1"
            and not parts[4].lower().endswith(".local") and parts[5].isdigit())


def negotiate(
    offer: SessionDescription,
    *,
    video_codec: str,
    local: LocalParameters,
    previous: Negotiation | None = None,
) -> Negotiation:
    """Plan the answer to `offer` and write it.

    Raises ValueError (OFFER_* messages) when the offer has no ICE credentials or DTLS
    fingerprint on the sections the SFU would use, or no section it can use at all.
    """
    bundle = offer.bundle_group()
    in_bundle = [i for i, m in enumerate(offer.media) if m.mid is not None and m.mid in bundle]
    candidates_order = in_bundle or list(range(len(offer.media)))
    kept_mids = {s.kind: s.mid for s in previous.sections if s.accepted} if previous else {}
    plans: dict[int, SectionPlan] = {}
    for kind in KINDS:
        usable = [(i, p) for i in candidates_order
                  if offer.media[i].kind == kind
                  and (p := _plan(i, offer.media[i], video_codec)) is not None]
        if not usable:
            continue
        kept = [(i, p) for i, p in usable if p.mid is not None and p.mid == kept_mids.get(kind)]
        index, plan = (kept or usable)[0]
        plans[index] = plan
    if not bundle and len(plans) > 1:
        first = min(plans)  # without BUNDLE only one transport: keep the first section alone
        plans = {first: plans[first]}
    if not plans:
        raise ValueError(OFFER_NO_USABLE_SECTION)
    tagged = offer.media[min(plans)]
    if not tagged.ice_ufrag or not tagged.ice_pwd:
        raise ValueError(OFFER_NO_ICE)
    if not tagged.fingerprints:
        raise ValueError(OFFER_NO_FINGERPRINT)
    sections = tuple(
        plans.get(i) or SectionPlan(index=i, kind=m.kind, mid=m.mid, accepted=False)
        for i, m in enumerate(offer.media)
    )
    role = _dtls_role(tagged.setup, previous)
    seen: set[str] = set()
    remote: list[str] = []
    for i in (in_bundle or [min(plans)]):
        for cand in offer.media[i].candidates:
            key = " ".join(cand.split()[4:6])
            if _usable_candidate(cand) and key not in seen:
                seen.add(key)
                remote.append(cand)
    remote.sort(key=_candidate_priority, reverse=True)
    allowed: dict[int, int] = {}
    for i, m in enumerate(offer.media):
        for ssrc in m.ssrcs:
            allowed[ssrc] = i
    negotiation = Negotiation(
        sections=sections, dtls_role=role, remote_ufrag=tagged.ice_ufrag,
        remote_pwd=tagged.ice_pwd, remote_ice_lite=tagged.ice_lite,
        remote_fingerprints=tuple(tagged.fingerprints),
        remote_candidates=tuple(remote[:MAX_REMOTE_CANDIDATES]), answer="",
        allowed_ssrc_sections=allowed,
    )
    return replace(negotiation, answer=write_answer(offer, negotiation, local))


def _codec_lines(codec: Codec, feedback: frozenset[str]) -> list[str]:
    encoding = f"{codec.name}/{codec.clock_rate}"
    if codec.channels:
        encoding += f"/{codec.channels}"
    lines = [f"a=rtpmap:{codec.payload_type} {encoding}"]
    lines += [f"a=rtcp-fb:{codec.payload_type} {fb}" for fb in codec.rtcp_fb if fb in feedback]
    if codec.fmtp:
        lines.append(f"a=fmtp:{codec.payload_type} {codec.fmtp}")
    return lines


def write_answer(offer: SessionDescription, plan: Negotiation, local: LocalParameters) -> str:
    """The answer text for `plan` (CRLF line endings, as RFC 8866 asks)."""
    accepted = [s for s in plan.sections if s.accepted]
    host, port = "0.0.0.0", 9  # noqa: S104 (SDP's "no address yet", RFC 8829 5.3.1)
    if local.candidates:
        parts = local.candidates[0].split()
        if len(parts) >= 6 and parts[5].isdigit():
            host, port = parts[4], int(parts[5])
    family = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=- {local.session_id} {local.session_version} IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
    ]
    bundled = [s.mid for s in accepted if s.mid is not None]
    if offer.bundle_group() and bundled:
        lines.append("a=group:BUNDLE " + " ".join(bundled))
    if offer.session_attribute("extmap-allow-mixed") is not None:
        lines.append("a=extmap-allow-mixed")
    lines.append(f"a=msid-semantic: WMS {local.stream_id}")
    setup = "active" if plan.dtls_role == "client" else "passive"
    first = True
    for section, offered in zip(plan.sections, offer.media, strict=True):
        if not section.accepted or section.codec is None:
            fmt = " ".join(offered.formats[:1]) or "0"
            lines.append(f"m={offered.kind} 0 {offered.proto} {fmt}")
            lines.append("c=IN IP4 0.0.0.0")
            if section.mid is not None:
                lines.append(f"a=mid:{section.mid}")
            continue
        formats = [str(section.codec.payload_type)]
        if section.rtx is not None:
            formats.append(str(section.rtx.payload_type))
        lines.append(f"m={section.kind} {port} {offered.proto} {' '.join(formats)}")
        lines.append(f"c=IN {family} {host}")
        lines.append("a=rtcp:9 IN IP4 0.0.0.0")
        lines.append(f"a=ice-ufrag:{local.ice_ufrag}")
        lines.append(f"a=ice-pwd:{local.ice_pwd}")
        lines.append(f"a=fingerprint:sha-256 {local.fingerprint}")
        lines.append(f"a=setup:{setup}")
        if section.mid is not None:
            lines.append(f"a=mid:{section.mid}")
        for uri, xid in sorted(section.extensions.items(), key=lambda item: item[1]):
            lines.append(f"a=extmap:{xid} {uri}")
        lines.append(f"a={section.direction}")
        ours = local.ssrcs.get(section.kind)
        if section.sends and ours is not None:
            lines.append(f"a=msid:{local.stream_id} {section.kind}")
        lines.append("a=rtcp-mux")
        if offered.has("rtcp-rsize"):
            lines.append("a=rtcp-rsize")
        lines += _codec_lines(section.codec, section.feedback)
        if section.rtx is not None:
            lines += _codec_lines(section.rtx, frozenset())
        if section.sends and ours is not None:
            ssrc, rtx_ssrc = ours
            if section.rtx is not None:
                lines.append(f"a=ssrc-group:FID {ssrc} {rtx_ssrc}")
            for s in ((ssrc, rtx_ssrc) if section.rtx is not None else (ssrc,)):
                lines.append(f"a=ssrc:{s} cname:{local.cname}")
                lines.append(f"a=ssrc:{s} msid:{local.stream_id} {section.kind}")
        if first:
            lines += [f"a=candidate:{c}" for c in local.candidates]
            lines.append("a=end-of-candidates")
            first = False
    return "\r\n".join(lines) + "\r\n"
