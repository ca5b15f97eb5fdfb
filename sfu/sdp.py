"""SDP (RFC 8866) as the SFU reads offers: a lenient parser for the shapes browsers send.

Pure: text in, dataclasses out; no I/O and no aiortc. It keeps every attribute line in order
and derives what an answerer needs (RFC 8829 JSEP, RFC 8843 BUNDLE): per media section its kind,
port, mid, direction, codecs (rtpmap/fmtp/rtcp-fb), header extensions (RFC 8285 extmap, with
an optional direction), SSRCs and SSRC groups (RFC 5576), ICE credentials (RFC 8839) and DTLS
fingerprints/setup (RFC 8122, RFC 4145), inheriting session-level values as Firefox writes them.

What the SFU does not use is kept but not interpreted, so any attribute a browser adds is
accepted. What it does use must be well formed: a malformed m= line, rtpmap or extmap raises
`ValueError` with one of the fixed messages below.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_SECTIONS = 64  # m= sections in one description; a browser sends a handful
MAX_LINES = 4000

SDP_EMPTY = "SDP is empty"
SDP_TOO_LONG = "SDP has too many lines"
SDP_NO_MEDIA = "SDP has no media section"
SDP_TOO_MANY_SECTIONS = "SDP has too many media sections"
SDP_BAD_MEDIA_LINE = "SDP m= line is malformed"
SDP_BAD_RTPMAP = "SDP rtpmap is malformed"
SDP_BAD_EXTMAP = "SDP extmap is malformed"
SDP_BAD_SSRC = "SDP ssrc attribute is malformed"
SDP_BAD_MID = "SDP mid is malformed"
SDP_DUPLICATE_MID = "SDP has duplicate mids"
MAX_MID_LENGTH = 255  # what the MID header extension can carry (RFC 8843 section 15.2)

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass(frozen=True, slots=True)
class Codec:
    """One payload type of a media section (`a=rtpmap`, `a=fmtp`, `a=rtcp-fb`)."""

    payload_type: int
    name: str  # as written ("VP8", "opus", "rtx"...); compare with .lower()
    clock_rate: int
    channels: int | None = None
    fmtp: str = ""
    rtcp_fb: tuple[str, ...] = ()  # "nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"

    @property
    def parameters(self) -> dict[str, str]:
        """The fmtp line as key=value pairs (keys lower-cased; bare tokens map to "")."""
        params: dict[str, str] = {}
        for part in self.fmtp.split(";"):
            key, _, value = part.strip().partition("=")
            if key:
                params[key.lower()] = value.strip()
        return params


@dataclass(frozen=True, slots=True)
class Extmap:
    """`a=extmap:<id>[/<direction>] <uri>` (RFC 8285 section 8)."""

    id: int
    uri: str
    direction: str | None = None


@dataclass(slots=True)
class MediaSection:
    """One m= section with the attributes the SFU interprets, plus every line as written."""

    kind: str  # "audio", "video", "application", anything else as written
    port: int
    proto: str
    formats: list[str]
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    mid: str | None = None
    direction: str = "sendrecv"
    codecs: dict[int, Codec] = field(default_factory=dict)
    extmaps: list[Extmap] = field(default_factory=list)
    ssrcs: dict[int, dict[str, str]] = field(default_factory=dict)  # ssrc -> {attr: value}
    ssrc_groups: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_lite: bool = False
    fingerprints: list[tuple[str, str]] = field(default_factory=list)  # (algorithm, value)
    setup: str | None = None
    candidates: list[str] = field(default_factory=list)  # the value after "a=candidate:"
    end_of_candidates: bool = False
    bundle_only: bool = False
    rtcp_mux: bool = False
    msid: str | None = None

    @property
    def rejected(self) -> bool:
        """Port 0 without a=bundle-only: the offerer rejected or removed it (JSEP 5.2.2)."""
        return self.port == 0 and not self.bundle_only

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.attributes)


@dataclass(slots=True)
class SessionDescription:
    media: list[MediaSection]
    groups: list[tuple[str, tuple[str, ...]]]  # ("BUNDLE", (mid, ...))
    attributes: list[tuple[str, str | None]]  # session-level attribute lines
    origin: str = ""

    def bundle_group(self) -> tuple[str, ...]:
        """The mids of the first BUNDLE group (RFC 8843), or () without one."""
        for semantics, mids in self.groups:
            if semantics.upper() == "BUNDLE":
                return mids
        return ()

    def session_attribute(self, name: str) -> str | None:
        for n, value in self.attributes:
            if n == name:
                return value if value is not None else ""
        return None


def _int(text: str, message: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(message) from None
    return value


def _payload_type(text: str) -> int | None:
    """A payload type in a format list or fmtp, or None when it is not plain ASCII digits
    (int() would take "٣", and refuse "²" or a number of 5000 digits with a ValueError)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else None


def _parse_media_line(value: str) -> MediaSection:
    parts = value.split()
    if len(parts) < 3:
        raise ValueError(SDP_BAD_MEDIA_LINE)
    port_text = parts[1].split("/", 1)[0]  # "<port>/<count>" is legal
    port = _int(port_text, SDP_BAD_MEDIA_LINE)
    if not 0 <= port <= 65535:
        raise ValueError(SDP_BAD_MEDIA_LINE)
    return MediaSection(kind=parts[0].lower(), port=port, proto=parts[2], formats=parts[3:])


def _parse_rtpmap(value: str) -> tuple[int, str, int, int | None]:
    pt_text, _, encoding = value.partition(" ")
    pt = _int(pt_text, SDP_BAD_RTPMAP)
    pieces = encoding.strip().split("/")
    if not 0 <= pt <= 127 or len(pieces) < 2 or not pieces[0]:
        raise ValueError(SDP_BAD_RTPMAP)
    clock = _int(pieces[1], SDP_BAD_RTPMAP)
    channels = _int(pieces[2], SDP_BAD_RTPMAP) if len(pieces) > 2 and pieces[2] else None
    if clock <= 0:
        raise ValueError(SDP_BAD_RTPMAP)
    return pt, pieces[0], clock, channels


def _parse_extmap(value: str) -> Extmap:
    head, _, rest = value.partition(" ")
    uri = rest.strip().split(" ", 1)[0]
    id_text, _, direction = head.partition("/")
    xid = _int(id_text, SDP_BAD_EXTMAP)
    if not 1 <= xid <= 255 or not uri or (direction and direction not in DIRECTIONS):
        raise ValueError(SDP_BAD_EXTMAP)
    return Extmap(xid, uri, direction or None)


def _mid(value: str) -> str:
    """An RFC 5888 identification-tag (a token), short enough for the MID header extension."""
    if len(value) > MAX_MID_LENGTH or not value.isascii() or not value.isprintable() or (
            " " in value):
        raise ValueError(SDP_BAD_MID)
    return value


def _split_attribute(line: str) -> tuple[str, str | None]:
    name, colon, value = line.partition(":")
    return name.strip(), (value.strip() if colon else None)


def _transport_attribute(m: MediaSection, name: str, value: str | None,
                         fingerprints: list[tuple[str, str]]) -> bool:
    """ICE and DTLS attributes, legal at session and media level alike; True when handled."""
    if name == "fingerprint" and value:
        algorithm, _, fp = value.partition(" ")
        fingerprints.append((algorithm.lower(), fp.strip()))
    elif name == "ice-ufrag" and value:
        m.ice_ufrag = value
    elif name == "ice-pwd" and value:
        m.ice_pwd = value
    elif name == "ice-lite":
        m.ice_lite = True
    elif name == "setup" and value:
        m.setup = value.lower()
    else:
        return False
    return True


def _finish_section(m: MediaSection, session: list[tuple[str, str | None]]) -> None:
    """Derive the interpreted fields from the attribute lines (session-level ones inherited)."""
    rtpmaps: dict[int, tuple[str, int, int | None]] = {}
    fmtps: dict[int, str] = {}
    feedback: dict[str, list[str]] = {}
    for name, value in session:
        if _transport_attribute(m, name, value, m.fingerprints):
            continue
        if name in DIRECTIONS:
            m.direction = name
        elif name == "extmap" and value:
            m.extmaps.append(_parse_extmap(value))
    own_fingerprints: list[tuple[str, str]] = []
    for name, value in m.attributes:
        if _transport_attribute(m, name, value, own_fingerprints):
            continue
        if name in DIRECTIONS:
            m.direction = name
        elif name == "mid" and value:
            m.mid = _mid(value)
        elif name == "rtpmap" and value is not None:
            pt, codec_name, clock, channels = _parse_rtpmap(value)
            rtpmaps[pt] = (codec_name, clock, channels)
        elif name == "fmtp" and value:
            pt_text, _, params = value.partition(" ")
            fmtp_pt = _payload_type(pt_text)
            if fmtp_pt is not None:
                fmtps[fmtp_pt] = params.strip()
        elif name == "rtcp-fb" and value:
            pt_text, _, kind = value.partition(" ")
            feedback.setdefault(pt_text, []).append(" ".join(kind.split()).lower())
        elif name == "extmap" and value:
            ext = _parse_extmap(value)
            m.extmaps = [e for e in m.extmaps if e.id != ext.id] + [ext]
        elif name == "ssrc" and value:
            ssrc_text, _, rest = value.partition(" ")
            ssrc = _int(ssrc_text, SDP_BAD_SSRC)
            if not 0 <= ssrc <= 0xFFFFFFFF:
                raise ValueError(SDP_BAD_SSRC)
            attr, _, attr_value = rest.partition(":")
            m.ssrcs.setdefault(ssrc, {})
            if attr:
                m.ssrcs[ssrc][attr.strip()] = attr_value.strip()
        elif name == "ssrc-group" and value:
            semantics, *members = value.split()
            ssrcs = tuple(_int(s, SDP_BAD_SSRC) for s in members)
            if any(not 0 <= s <= 0xFFFFFFFF for s in ssrcs):
                raise ValueError(SDP_BAD_SSRC)
            m.ssrc_groups.append((semantics.upper(), ssrcs))
        elif name == "candidate" and value:
            m.candidates.append(value)
        elif name == "end-of-candidates":
            m.end_of_candidates = True
        elif name == "bundle-only":
            m.bundle_only = True
        elif name == "rtcp-mux":
            m.rtcp_mux = True
        elif name == "msid" and value:
            m.msid = value
    if own_fingerprints:  # media-level fingerprints replace session-level ones (RFC 8122)
        m.fingerprints = own_fingerprints
    wildcard = feedback.get("*", [])
    for pt_text in m.formats:
        format_pt = _payload_type(pt_text)
        if format_pt is None or format_pt not in rtpmaps:
            continue  # static payload types without rtpmap are never ours to use
        pt = format_pt
        codec_name, clock, channels = rtpmaps[pt]
        fb = tuple(dict.fromkeys(wildcard + feedback.get(pt_text, [])))
        m.codecs[pt] = Codec(pt, codec_name, clock, channels, fmtps.get(pt, ""), fb)


def parse(text: str) -> SessionDescription:
    """Parse an SDP description (offer or answer) as browsers write it.

    Raises ValueError (one of this module's SDP_* messages) when the text has no media section,
    more than MAX_SECTIONS of them, a malformed m=, rtpmap, extmap, ssrc or mid line, or two
    sections with one mid.
    """
    lines = [line.rstrip("\r") for line in text.split("\n")]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise ValueError(SDP_EMPTY)
    if len(lines) > MAX_LINES:
        raise ValueError(SDP_TOO_LONG)
    session: list[tuple[str, str | None]] = []
    groups: list[tuple[str, tuple[str, ...]]] = []
    media: list[MediaSection] = []
    origin = ""
    current: MediaSection | None = None
    for line in lines:
        if len(line) < 2 or line[1] != "=":
            continue  # not an SDP line: ignore, as browsers do
        kind, value = line[0], line[2:]
        if kind == "m":
            if len(media) >= MAX_SECTIONS:
                raise ValueError(SDP_TOO_MANY_SECTIONS)
            current = _parse_media_line(value)
            media.append(current)
        elif kind == "o" and current is None:
            origin = value
        elif kind == "a":
            attribute = _split_attribute(value)
            if current is None:
                session.append(attribute)
                if attribute[0] == "group" and attribute[1]:
                    semantics, *mids = attribute[1].split()
                    groups.append((semantics, tuple(mids)))
            else:
                current.attributes.append(attribute)
    if not media:
        raise ValueError(SDP_NO_MEDIA)
    for section in media:
        _finish_section(section, session)
    mids = [section.mid for section in media if section.mid is not None]
    if len(set(mids)) != len(mids):
        raise ValueError(SDP_DUPLICATE_MID)
    return SessionDescription(media=media, groups=groups, attributes=session, origin=origin)
