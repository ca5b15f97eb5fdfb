"""Offer shapes: SDP offers the way real clients write them, as data a test can tweak.

A `Shape` is the offer minus the transport: its m-sections (`Section`: codecs with their payload
types, header extensions with their ids, direction, SSRCs, msid), the session-level habits of the
client that writes it (`style`), and switches for what a test wants to break. `shape.sdp(local)`
renders it with a peer's own ICE credentials, DTLS fingerprint and candidates (`LocalTransport`).
The sender reads the same `Section` to put the offered payload types and extension ids on the
wire, so what is offered and what is sent cannot drift apart.

The templates follow offers quoted in public bug reports (mediasoup, Janus, Pion, LiveKit,
aiortc, sipsorcery, amazon-kinesis-video-streams): attribute order, payload type numbers,
extension ids and fmtp strings are those browsers' own; values are written here from those facts.

- Chrome (libwebrtc): `o=- <id> 2 IN IP4 127.0.0.1`, `a=extmap-allow-mixed`, `a=msid-semantic: WMS
  <stream>`; per section `a=rtcp:9`, candidates, ice-ufrag/pwd/options, fingerprint, setup, mid,
  extmaps, direction, msid, rtcp-mux(/rsize), then per codec rtpmap, rtcp-fb..., fmtp, then
  ssrc-group:FID and ssrc lines. Extension ids depend on which kind was added first: audio first
  gives audio 1/2/3/4 (audio-level, abs-send-time, transport-cc, mid) and video 14, 2, 13, 3, 5..8,
  4, 10, 11; video first gives video 1..11 and audio 14, 2, 4, 9.
- Firefox: `o=mozilla...THIS_IS_SDPARTA-99.0 <id> 0 IN IP4 0.0.0.0`, session-level fingerprint,
  group, ice-options and `msid-semantic:WMS *`; per section candidates right after `c=`, then the
  direction, `a=end-of-candidates`, and the other attributes grouped by name in alphabetical order
  (extmap, fmtp, ice-pwd, ice-ufrag, mid, msid, rtcp-fb, rtcp-mux, rtcp-rsize, rtpmap, setup, ssrc,
  ssrc-group). Opus 109, VP8 120 (rtx 124), VP9 121 (125), H.264 126 (127) and 97 (98), ulpfec 123,
  red 122 (rtx 119); extension ids 1 audio-level, 2/recvonly csrc-audio-level, 3 mid, 4
  abs-send-time, 5 toffset, 6/recvonly playout-delay, 7 transport-cc. Candidates `UDP` upper case,
  foundations small integers, ufrag 8 and pwd 32 hex digits.
- Safari (libwebrtc in WebKit): Chrome's layout with H.264 first: 640c1f and 42e01f, each in
  packetization-mode 1 then 0 (96..103 with their rtx), H.265 104, VP8 106 (rtx 107), VP9 108/127,
  red 112, ulpfec 114; `a=rtcp-rsize` in audio too.
"""

from __future__ import annotations

import copy
import random
import secrets
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Style = Literal["chrome", "firefox", "safari"]

# ---- header extension URIs ----

URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_CSRC_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:csrc-audio-level"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_RRID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
URI_TOFFSET = "urn:ietf:params:rtp-hdrext:toffset"
URI_VIDEO_ORIENTATION = "urn:3gpp:video-orientation"
URI_PLAYOUT_DELAY = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
URI_VIDEO_CONTENT_TYPE = "http://www.webrtc.org/experiments/rtp-hdrext/video-content-type"
URI_VIDEO_TIMING = "http://www.webrtc.org/experiments/rtp-hdrext/video-timing"
URI_COLOR_SPACE = "http://www.webrtc.org/experiments/rtp-hdrext/color-space"

VIDEO_FB = ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]  # libwebrtc's order
FIREFOX_VIDEO_FB = ["nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"]

_ICE_CHARS = string.ascii_letters + string.digits + "+/"


@dataclass
class Codec:
    """One payload type of an m-section."""

    pt: int
    name: str  # as in a=rtpmap: "opus", "VP8", "H264", "rtx", "red", "ulpfec", ...
    clock_rate: int
    channels: int | None = None
    fmtp: str | None = None
    rtcp_fb: list[str] = field(default_factory=list)

    @property
    def rtpmap(self) -> str:
        tail = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.pt} {self.name}/{self.clock_rate}{tail}"

    @property
    def params(self) -> dict[str, str]:
        """The fmtp as key=value pairs (values without '=' map to '')."""
        out: dict[str, str] = {}
        for part in (self.fmtp or "").split(";"):
            key, _, value = part.strip().partition("=")
            if key:
                out[key] = value
        return out

    @property
    def apt(self) -> int | None:
        value = self.params.get("apt")
        return int(value) if value else None

    @property
    def is_media(self) -> bool:
        """A codec that carries media itself (not rtx, red, ulpfec, CN or DTMF)."""
        return self.name.lower() not in ("rtx", "red", "ulpfec", "flexfec-03", "cn",
                                         "telephone-event")


@dataclass
class Extension:
    """An a=extmap line; `direction` writes Firefox's `a=extmap:2/recvonly ...` form."""

    id: int
    uri: str
    direction: str | None = None

    @property
    def line(self) -> str:
        suffix = f"/{self.direction}" if self.direction else ""
        return f"a=extmap:{self.id}{suffix} {self.uri}"


@dataclass
class IceCandidate:
    foundation: str
    component: int
    transport: str
    priority: int
    host: str
    port: int
    type: str = "host"
    related_address: str | None = None
    related_port: int | None = None
    extra: str = ""  # e.g. Chrome's "generation 0 network-id 1 network-cost 10"

    @property
    def value(self) -> str:
        text = (f"{self.foundation} {self.component} {self.transport} {self.priority} "
                f"{self.host} {self.port} typ {self.type}")
        if self.related_address is not None:
            text += f" raddr {self.related_address} rport {self.related_port or 0}"
        if self.extra:
            text += " " + self.extra
        return text


@dataclass
class LocalTransport:
    """What a peer puts into its offer about itself: ICE credentials, DTLS fingerprint
    (sha-256, colon-separated upper-case hex) and its gathered candidates."""

    ufrag: str
    pwd: str
    fingerprint: str
    candidates: list[IceCandidate] = field(default_factory=list)


@dataclass
class Section:
    """One m-section. `port=None` renders the default candidate's port (9 without candidates),
    `port=0` rejects the section (and leaves it out of BUNDLE)."""

    kind: str  # "audio" | "video" | "application"
    mid: str | None
    codecs: list[Codec] = field(default_factory=list)
    extensions: list[Extension] = field(default_factory=list)
    direction: str | None = "sendrecv"  # None writes no direction attribute
    protocol: str = "UDP/TLS/RTP/SAVPF"
    port: int | None = None
    ssrc: int | None = None
    rtx_ssrc: int | None = None
    ssrc_lines: bool = True  # False: a=ssrc / a=ssrc-group lines dropped (SSRC still used)
    msid: tuple[str, str] | None = None  # (stream id, track id)
    rtcp_mux: bool = True
    rtcp_rsize: bool = False
    bundle_only: bool = False
    candidates: bool = True  # this section carries the candidates
    sctp_port: int | None = None  # application sections
    max_message_size: int | None = None
    extra_lines: list[str] = field(default_factory=list)  # appended as written ("a=...")

    @property
    def rejected(self) -> bool:
        return self.port == 0 and not self.bundle_only

    @property
    def formats(self) -> list[str]:
        if self.kind == "application":
            return ["webrtc-datachannel"]
        return [str(c.pt) for c in self.codecs]

    def codec(self, name: str, **fmtp: str | int) -> Codec:
        """The first codec called `name` (case-insensitive) whose fmtp has all of `fmtp`
        (keyword names with '_' for '-': `packetization_mode=0`)."""
        for codec in self.codecs:
            if codec.name.lower() != name.lower():
                continue
            params = codec.params
            if all(params.get(k.replace("_", "-")) == str(v) for k, v in fmtp.items()):
                return codec
        raise LookupError(f"no {name} {fmtp} in section {self.mid}")

    def payload_type(self, name: str, **fmtp: str | int) -> int:
        return self.codec(name, **fmtp).pt

    def rtx_payload_type(self, pt: int) -> int | None:
        for codec in self.codecs:
            if codec.name.lower() == "rtx" and codec.apt == pt:
                return codec.pt
        return None

    def extension_id(self, uri: str) -> int | None:
        for ext in self.extensions:
            if ext.uri == uri:
                return ext.id
        return None

    @property
    def primary(self) -> Codec:
        """The preferred media codec (the first one that is not rtx/red/fec/CN/DTMF)."""
        for codec in self.codecs:
            if codec.is_media:
                return codec
        raise LookupError(f"section {self.mid} has no media codec")


@dataclass
class Shape:
    """A client's offer, as data. Tweak freely: append sections or candidates, drop ssrc
    lines, reorder codecs, or set `mangle` to rewrite the rendered text last."""

    name: str
    style: Style
    sections: list[Section]
    setup: str = "actpass"
    session_id: int = field(default_factory=lambda: random.getrandbits(62))
    session_version: int = 2
    cname: str = ""
    stream_id: str = ""
    ice_options: str | None = "trickle"
    bundle: list[str] | None = None  # None: every section that has a mid and is not rejected
    include_candidates: bool = True  # False: an offer made before any candidate was gathered
    extra_candidates: list[IceCandidate] = field(default_factory=list)  # after the real ones
    end_of_candidates: bool | None = None  # None: the style's habit (Firefox writes it)
    browser_version: str = ""
    extra_session_lines: list[str] = field(default_factory=list)
    mangle: Callable[[str], str] | None = None

    # ---- lookups ----

    def sections_of(self, kind: str) -> list[Section]:
        return [s for s in self.sections if s.kind == kind and not s.rejected]

    def section(self, kind: str, index: int = 0) -> Section:
        return self.sections_of(kind)[index]

    def by_mid(self, mid: str) -> Section:
        for s in self.sections:
            if s.mid == mid:
                return s
        raise LookupError(mid)

    def bundle_mids(self) -> list[str]:
        if self.bundle is not None:
            return list(self.bundle)
        return [s.mid for s in self.sections if s.mid is not None and not s.rejected]

    # ---- what the client would pick for itself ----

    def new_credentials(self) -> tuple[str, str]:
        """ICE ufrag and pwd the way this client makes them."""
        if self.style == "firefox":
            return secrets.token_hex(4), secrets.token_hex(16)
        return ("".join(secrets.choice(_ICE_CHARS) for _ in range(4)),
                "".join(secrets.choice(_ICE_CHARS) for _ in range(24)))

    def host_candidate(self, host: str, port: int, index: int = 0) -> IceCandidate:
        """A host candidate written the way this client writes it."""
        if self.style == "firefox":
            return IceCandidate(str(index * 2), 1, "UDP", 2122252543 - index * 65536, host, port)
        extra = ("generation 0 network-id 1 network-cost 10" if self.style == "chrome"
                 else "generation 0 network-cost 999")
        foundation = str(random.Random(f"{host}|udp").getrandbits(32))
        return IceCandidate(foundation, 1, "udp", 2122260223 - index * 256, host, port,
                            extra=extra)

    # ---- tweaks ----

    def add_copies(self, kind: str, count: int = 1) -> list[Section]:
        """Append `count` copies of the first `kind` section with their own mids, SSRCs and
        track ids, as a client with more tracks of that kind writes them."""
        template = self.section(kind)
        used = {s.mid for s in self.sections}
        added: list[Section] = []
        for _ in range(count):
            section = copy.deepcopy(template)
            number = len(self.sections)
            while str(number) in used:
                number += 1
            section.mid = str(number)
            used.add(section.mid)
            section.ssrc = new_ssrc()
            section.rtx_ssrc = new_ssrc() if template.rtx_ssrc is not None else None
            if section.msid is not None:
                section.msid = (section.msid[0], str(uuid.uuid4()))
            self.sections.append(section)
            added.append(section)
        return added

    def add_fake_candidates(self, count: int) -> None:
        """`count` more host candidates, on private addresses nobody answers from, after the
        real ones (and at lower priority)."""
        for i in range(count):
            host = f"10.{(i >> 8) & 0xFF}.{i & 0xFF}.1"
            self.extra_candidates.append(self.host_candidate(host, 40000 + i % 20000, i + 1))

    # ---- rendering ----

    def sdp(self, local: LocalTransport) -> str:
        candidates = (list(local.candidates) if self.include_candidates else [])
        candidates += self.extra_candidates
        if self.style == "firefox":
            text = _render_firefox(self, local, candidates)
        else:
            text = _render_libwebrtc(self, local, candidates)
        return self.mangle(text) if self.mangle is not None else text

    def copy(self) -> Shape:
        return copy.deepcopy(self)


# ---- rendering ----


def _default_address(candidates: list[IceCandidate]) -> tuple[int, str]:
    for c in candidates:
        if c.component == 1:
            return c.port, c.host
    return 9, "0.0.0.0"


def _media_line(section: Section, candidates: list[IceCandidate]) -> list[str]:
    port, address = _default_address(candidates if section.candidates else [])
    if section.port is not None:
        port = section.port
    if section.bundle_only:
        port, address = 0, "0.0.0.0"
    if section.rejected:
        address = "0.0.0.0"
    return [f"m={section.kind} {port} {section.protocol} {' '.join(section.formats)}",
            f"c=IN IP4 {address}"]


def _ssrc_lines(shape: Shape, section: Section, with_msid: bool) -> list[str]:
    if not section.ssrc_lines or section.ssrc is None or section.rejected:
        return []
    ssrcs = [section.ssrc] + ([section.rtx_ssrc] if section.rtx_ssrc is not None else [])
    lines: list[str] = []
    if shape.style != "firefox" and section.rtx_ssrc is not None:
        lines.append(f"a=ssrc-group:FID {section.ssrc} {section.rtx_ssrc}")
    for ssrc in ssrcs:
        lines.append(f"a=ssrc:{ssrc} cname:{shape.cname}")
        if with_msid and section.msid is not None:
            lines.append(f"a=ssrc:{ssrc} msid:{section.msid[0]} {section.msid[1]}")
    if shape.style == "firefox" and section.rtx_ssrc is not None:
        lines.append(f"a=ssrc-group:FID {section.ssrc} {section.rtx_ssrc}")
    return lines


def _render_libwebrtc(shape: Shape, local: LocalTransport, cands: list[IceCandidate]) -> str:
    """Chrome's and Safari's layout."""
    lines = ["v=0", f"o=- {shape.session_id} {shape.session_version} IN IP4 127.0.0.1", "s=-",
             "t=0 0"]
    bundle = shape.bundle_mids()
    if bundle:
        lines.append("a=group:BUNDLE " + " ".join(bundle))
    lines.append("a=extmap-allow-mixed")
    lines.append(f"a=msid-semantic: WMS {shape.stream_id}".rstrip())
    lines += shape.extra_session_lines
    end = bool(shape.end_of_candidates)
    for section in shape.sections:
        lines += _media_line(section, cands)
        if section.kind != "application":
            lines.append("a=rtcp:9 IN IP4 0.0.0.0")
        if section.candidates and not section.rejected and not section.bundle_only:
            lines += [f"a=candidate:{c.value}" for c in cands]
            if end:
                lines.append("a=end-of-candidates")
        lines += [f"a=ice-ufrag:{local.ufrag}", f"a=ice-pwd:{local.pwd}"]
        if shape.ice_options:
            lines.append(f"a=ice-options:{shape.ice_options}")
        lines += [f"a=fingerprint:sha-256 {local.fingerprint}", f"a=setup:{shape.setup}"]
        if section.mid is not None:
            lines.append(f"a=mid:{section.mid}")
        if section.bundle_only:
            lines.append("a=bundle-only")
        if section.kind == "application":
            if section.sctp_port is not None:
                lines.append(f"a=sctp-port:{section.sctp_port}")
            if section.max_message_size is not None:
                lines.append(f"a=max-message-size:{section.max_message_size}")
            lines += section.extra_lines
            continue
        lines += [e.line for e in section.extensions]
        if section.direction:
            lines.append(f"a={section.direction}")
        if section.msid is not None and not section.rejected:
            lines.append(f"a=msid:{section.msid[0]} {section.msid[1]}")
        if section.rtcp_mux:
            lines.append("a=rtcp-mux")
        if section.rtcp_rsize:
            lines.append("a=rtcp-rsize")
        for codec in section.codecs:
            lines.append(f"a=rtpmap:{codec.rtpmap}")
            lines += [f"a=rtcp-fb:{codec.pt} {fb}" for fb in codec.rtcp_fb]
            if codec.fmtp is not None:
                lines.append(f"a=fmtp:{codec.pt} {codec.fmtp}")
        lines += _ssrc_lines(shape, section, with_msid=True)
        lines += section.extra_lines
    return "\r\n".join(lines) + "\r\n"


def _render_firefox(shape: Shape, local: LocalTransport, cands: list[IceCandidate]) -> str:
    lines = ["v=0",
             f"o=mozilla...THIS_IS_SDPARTA-{shape.browser_version or '99.0'} "
             f"{shape.session_id} {shape.session_version} IN IP4 0.0.0.0",
             "s=-", "t=0 0",
             f"a=fingerprint:sha-256 {local.fingerprint}"]
    bundle = shape.bundle_mids()
    if bundle:
        lines.append("a=group:BUNDLE " + " ".join(bundle))
    if shape.ice_options:
        lines.append(f"a=ice-options:{shape.ice_options}")
    lines.append("a=msid-semantic:WMS *")
    lines += shape.extra_session_lines
    end = shape.end_of_candidates is not False
    for section in shape.sections:
        lines += _media_line(section, cands)
        carries = section.candidates and not section.rejected and not section.bundle_only
        if carries:
            lines += [f"a=candidate:{c.value}" for c in cands]
        if section.bundle_only:
            lines.append("a=bundle-only")
        if section.direction:
            lines.append(f"a={section.direction}")
        if carries and end and cands:
            lines.append("a=end-of-candidates")
        if section.kind == "application":
            lines += [f"a=ice-pwd:{local.pwd}", f"a=ice-ufrag:{local.ufrag}"]
            if section.mid is not None:
                lines.append(f"a=mid:{section.mid}")
            lines.append(f"a=setup:{shape.setup}")
            if section.sctp_port is not None:
                lines.append(f"a=sctp-port:{section.sctp_port}")
            if section.max_message_size is not None:
                lines.append(f"a=max-message-size:{section.max_message_size}")
            lines += section.extra_lines
            continue
        lines += [e.line for e in section.extensions]
        lines += [f"a=fmtp:{c.pt} {c.fmtp}" for c in section.codecs if c.fmtp is not None]
        lines += [f"a=ice-pwd:{local.pwd}", f"a=ice-ufrag:{local.ufrag}"]
        if section.mid is not None:
            lines.append(f"a=mid:{section.mid}")
        if section.msid is not None and not section.rejected:
            lines.append(f"a=msid:{section.msid[0]} {section.msid[1]}")
        lines += [f"a=rtcp-fb:{c.pt} {fb}" for c in section.codecs for fb in c.rtcp_fb]
        if section.rtcp_mux:
            lines.append("a=rtcp-mux")
        if section.rtcp_rsize:
            lines.append("a=rtcp-rsize")
        lines += [f"a=rtpmap:{c.rtpmap}" for c in section.codecs]
        lines.append(f"a=setup:{shape.setup}")
        lines += _ssrc_lines(shape, section, with_msid=False)
        lines += section.extra_lines
    return "\r\n".join(lines) + "\r\n"


# ---- building blocks ----


def new_ssrc() -> int:
    return random.randint(1, 0xFFFFFFFF)


def _token(n: int = 16) -> str:
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(n))


def _exts(*pairs: tuple[int, str]) -> list[Extension]:
    return [Extension(i, uri) for i, uri in pairs]


def _with_rtx(pt: int, rtx: int, name: str, fmtp: str | None, fb: list[str]) -> list[Codec]:
    return [Codec(pt, name, 90000, fmtp=fmtp, rtcp_fb=list(fb)),
            Codec(rtx, "rtx", 90000, fmtp=f"apt={pt}")]


def _h264(pm: int, profile: str) -> str:
    return f"level-asymmetry-allowed=1;packetization-mode={pm};profile-level-id={profile}"


def chrome_audio_codecs() -> list[Codec]:
    return [
        Codec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1", ["transport-cc"]),
        Codec(63, "red", 48000, 2, "111/111"),
        Codec(9, "G722", 8000),
        Codec(0, "PCMU", 8000),
        Codec(8, "PCMA", 8000),
        Codec(13, "CN", 8000),
        Codec(110, "telephone-event", 48000),
        Codec(126, "telephone-event", 8000),
    ]


def chrome_video_codecs() -> list[Codec]:
    fb = VIDEO_FB
    return [
        *_with_rtx(96, 97, "VP8", None, fb),
        *_with_rtx(102, 103, "H264", _h264(1, "42001f"), fb),
        *_with_rtx(104, 105, "H264", _h264(0, "42001f"), fb),
        *_with_rtx(106, 107, "H264", _h264(1, "42e01f"), fb),
        *_with_rtx(108, 109, "H264", _h264(0, "42e01f"), fb),
        *_with_rtx(127, 125, "H264", _h264(1, "4d001f"), fb),
        *_with_rtx(39, 40, "H264", _h264(0, "4d001f"), fb),
        *_with_rtx(45, 46, "AV1", "level-idx=5;profile=0;tier=0", fb),
        *_with_rtx(98, 99, "VP9", "profile-id=0", fb),
        *_with_rtx(100, 101, "VP9", "profile-id=2", fb),
        *_with_rtx(112, 113, "H264", _h264(1, "64001f"), fb),
        Codec(116, "red", 90000), Codec(117, "rtx", 90000, fmtp="apt=116"),
        Codec(118, "ulpfec", 90000),
    ]


def safari_video_codecs() -> list[Codec]:
    fb = VIDEO_FB
    return [
        *_with_rtx(96, 97, "H264", _h264(1, "640c1f"), fb),
        *_with_rtx(98, 99, "H264", _h264(1, "42e01f"), fb),
        *_with_rtx(100, 101, "H264", _h264(0, "640c1f"), fb),
        *_with_rtx(102, 103, "H264", _h264(0, "42e01f"), fb),
        *_with_rtx(104, 105, "H265", None, fb),
        *_with_rtx(106, 107, "VP8", None, fb),
        *_with_rtx(108, 109, "VP9", "profile-id=0", fb),
        *_with_rtx(127, 125, "VP9", "profile-id=2", fb),
        Codec(112, "red", 90000), Codec(113, "rtx", 90000, fmtp="apt=112"),
        Codec(114, "ulpfec", 90000),
    ]


def firefox_audio_codecs() -> list[Codec]:
    return [
        Codec(109, "opus", 48000, 2, "maxplaybackrate=48000;stereo=1;useinbandfec=1"),
        Codec(9, "G722", 8000, 1),
        Codec(0, "PCMU", 8000),
        Codec(8, "PCMA", 8000),
        Codec(101, "telephone-event", 8000, 1, "0-15"),
    ]


def firefox_video_codecs() -> list[Codec]:
    fb = FIREFOX_VIDEO_FB
    return [
        Codec(120, "VP8", 90000, fmtp="max-fs=12288;max-fr=60", rtcp_fb=list(fb)),
        Codec(124, "rtx", 90000, fmtp="apt=120"),
        Codec(121, "VP9", 90000, fmtp="max-fs=12288;max-fr=60", rtcp_fb=list(fb)),
        Codec(125, "rtx", 90000, fmtp="apt=121"),
        Codec(126, "H264", 90000, rtcp_fb=list(fb),
              fmtp="profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1"),
        Codec(127, "rtx", 90000, fmtp="apt=126"),
        Codec(97, "H264", 90000, rtcp_fb=list(fb),
              fmtp="profile-level-id=42e01f;level-asymmetry-allowed=1"),
        Codec(98, "rtx", 90000, fmtp="apt=97"),
        Codec(123, "ulpfec", 90000),
        Codec(122, "red", 90000),
        Codec(119, "rtx", 90000, fmtp="apt=122"),
    ]


# libwebrtc's extension ids, by which kind was added first.
CHROME_AUDIO_FIRST_AUDIO = [(1, URI_AUDIO_LEVEL), (2, URI_ABS_SEND_TIME), (3, URI_TWCC),
                            (4, URI_MID)]
CHROME_AUDIO_FIRST_VIDEO = [(14, URI_TOFFSET), (2, URI_ABS_SEND_TIME),
                            (13, URI_VIDEO_ORIENTATION), (3, URI_TWCC), (5, URI_PLAYOUT_DELAY),
                            (6, URI_VIDEO_CONTENT_TYPE), (7, URI_VIDEO_TIMING),
                            (8, URI_COLOR_SPACE), (4, URI_MID), (10, URI_RID), (11, URI_RRID)]
CHROME_VIDEO_FIRST_VIDEO = [(1, URI_TOFFSET), (2, URI_ABS_SEND_TIME), (3, URI_VIDEO_ORIENTATION),
                            (4, URI_TWCC), (5, URI_PLAYOUT_DELAY), (6, URI_VIDEO_CONTENT_TYPE),
                            (7, URI_VIDEO_TIMING), (8, URI_COLOR_SPACE), (9, URI_MID),
                            (10, URI_RID), (11, URI_RRID)]
CHROME_VIDEO_FIRST_AUDIO = [(14, URI_AUDIO_LEVEL), (2, URI_ABS_SEND_TIME), (4, URI_TWCC),
                            (9, URI_MID)]


def _libwebrtc_audio(mid: str, stream: str, *, style: Style, video_first: bool = False,
                     ssrc: int | None = None) -> Section:
    ids = CHROME_VIDEO_FIRST_AUDIO if video_first else CHROME_AUDIO_FIRST_AUDIO
    return Section("audio", mid, chrome_audio_codecs(), _exts(*ids),
                   ssrc=ssrc or new_ssrc(), msid=(stream, str(uuid.uuid4())),
                   rtcp_rsize=(style == "safari"))


def _libwebrtc_video(mid: str, stream: str, *, style: Style, video_first: bool = False,
                     ssrc: int | None = None, rtx_ssrc: int | None = None) -> Section:
    ids = CHROME_VIDEO_FIRST_VIDEO if video_first else CHROME_AUDIO_FIRST_VIDEO
    codecs = safari_video_codecs() if style == "safari" else chrome_video_codecs()
    return Section("video", mid, codecs, _exts(*ids), ssrc=ssrc or new_ssrc(),
                   rtx_ssrc=rtx_ssrc or new_ssrc(), msid=(stream, str(uuid.uuid4())),
                   rtcp_rsize=True)


def _libwebrtc_shape(name: str, style: Style, kinds: list[str], *, video_first: bool) -> Shape:
    stream = str(uuid.uuid4())
    sections: list[Section] = []
    for index, kind in enumerate(kinds):
        if kind == "audio":
            sections.append(_libwebrtc_audio(str(index), stream, style=style,
                                             video_first=video_first))
        else:
            sections.append(_libwebrtc_video(str(index), stream, style=style,
                                             video_first=video_first))
    return Shape(name, style, sections, cname=_token(16), stream_id=stream)


# ---- the shapes ----


def chrome() -> Shape:
    """Chrome: unified plan, audio then video, BUNDLE, VP8 96 with rtx 97 (FID group), Opus 111."""
    return _libwebrtc_shape("chrome", "chrome", ["audio", "video"], video_first=False)


def chrome_video_first() -> Shape:
    """Chrome after addTrack(video) before addTrack(audio): video is mid 0 and tags BUNDLE,
    and the extension ids are assigned from the video side (mid is 9, audio-level 14)."""
    return _libwebrtc_shape("chrome_video_first", "chrome", ["video", "audio"], video_first=True)


def audio_only() -> Shape:
    return _libwebrtc_shape("audio_only", "chrome", ["audio"], video_first=False)


def video_only() -> Shape:
    return _libwebrtc_shape("video_only", "chrome", ["video"], video_first=True)


def two_videos() -> Shape:
    """Camera and screen: audio, video, and a second sendrecv video section (its own stream)."""
    shape = chrome()
    screen = _libwebrtc_video("2", str(uuid.uuid4()), style="chrome")
    shape.sections.append(screen)
    shape.name = "two_videos"
    return shape


def firefox(version: str = "99.0") -> Shape:
    """Firefox: session-level fingerprint and ice-options, Opus 109, VP8 120 (rtx 124),
    direction-qualified extmaps, a=end-of-candidates, attributes sorted by name. (Recent
    Firefox offers quoted in bug reports all say THIS_IS_SDPARTA-99.0, whatever the version.)"""
    stream = "{" + str(uuid.uuid4()) + "}"
    audio = Section(
        "audio", "0", firefox_audio_codecs(),
        [Extension(1, URI_AUDIO_LEVEL), Extension(2, URI_CSRC_AUDIO_LEVEL, "recvonly"),
         Extension(3, URI_MID)],
        ssrc=new_ssrc(), msid=(stream, "{" + str(uuid.uuid4()) + "}"),
    )
    video = Section(
        "video", "1", firefox_video_codecs(),
        [Extension(3, URI_MID), Extension(4, URI_ABS_SEND_TIME), Extension(5, URI_TOFFSET),
         Extension(6, URI_PLAYOUT_DELAY, "recvonly"), Extension(7, URI_TWCC)],
        ssrc=new_ssrc(), rtx_ssrc=new_ssrc(), msid=(stream, "{" + str(uuid.uuid4()) + "}"),
        rtcp_rsize=True,
    )
    return Shape("firefox", "firefox", [audio, video], session_version=0,
                 cname="{" + str(uuid.uuid4()) + "}", stream_id=stream, browser_version=version)


def safari() -> Shape:
    """Safari: audio then video, H.264 first (640c1f and 42e01f, packetization-mode 1 and 0),
    then H.265, VP8 106, VP9."""
    return _libwebrtc_shape("safari", "safari", ["audio", "video"], video_first=False)


def _renumber(shape: Shape) -> None:
    for index, section in enumerate(shape.sections):
        if section.mid is not None:
            section.mid = str(index)


def with_data_channel(base: Shape | None = None) -> Shape:
    """A data channel created before the tracks: m=application is mid 0 and tags BUNDLE."""
    shape = base or chrome()
    application = Section("application", "0", protocol="UDP/DTLS/SCTP", direction=None,
                          rtcp_mux=False, sctp_port=5000, max_message_size=262144)
    shape.sections.insert(0, application)
    _renumber(shape)
    shape.name += "+data_channel"
    return shape


def with_rejected_section(base: Shape | None = None, *, kind: str = "audio",
                          position: int = 0, keep_mid: bool | None = None) -> Shape:
    """A stopped transceiver: a section with port 0, `a=inactive`, outside BUNDLE. Firefox
    writes it with a bare codec list and no a=mid; libwebrtc keeps its mid (the default
    follows the base's style)."""
    shape = base or chrome()
    if keep_mid is None:
        keep_mid = shape.style != "firefox"
    codec = Codec(0, "PCMU", 8000) if kind == "audio" else Codec(96, "VP8", 90000)
    rejected = Section(kind, "rejected" if keep_mid else None, [codec], direction="inactive",
                       port=0, ssrc=None, rtcp_mux=False)
    shape.sections.insert(position, rejected)
    if keep_mid:
        _renumber(shape)
    shape.name += "+rejected_section"
    return shape


def inactive_video(base: Shape | None = None) -> Shape:
    """Camera off before the call: the video transceiver is `a=inactive` (no ssrc lines)."""
    shape = base or chrome()
    video = shape.section("video")
    video.direction = "inactive"
    video.ssrc_lines = False
    video.msid = None
    shape.name += "+inactive_video"
    return shape


def reordered_codecs(base: Shape | None = None) -> Shape:
    """setCodecPreferences with the room's codecs last: every section's codec list reversed
    (rtx kept after its codec), same payload types."""
    shape = base or chrome()
    for section in shape.sections_of("audio") + shape.sections_of("video"):
        groups: list[list[Codec]] = []
        for codec in section.codecs:
            if codec.name.lower() == "rtx" and groups and codec.apt == groups[-1][0].pt:
                groups[-1].append(codec)
            else:
                groups.append([codec])
        section.codecs = [c for group in reversed(groups) for c in group]
    shape.name += "+reordered_codecs"
    return shape


SHAPES: dict[str, Callable[[], Shape]] = {
    "chrome": chrome,
    "chrome_video_first": chrome_video_first,
    "audio_only": audio_only,
    "video_only": video_only,
    "two_videos": two_videos,
    "firefox": firefox,
    "safari": safari,
    "with_data_channel": with_data_channel,
    "with_rejected_section": with_rejected_section,
    "firefox_with_rejected_section": lambda: with_rejected_section(firefox()),
    "inactive_video": inactive_video,
    "reordered_codecs": reordered_codecs,
}
