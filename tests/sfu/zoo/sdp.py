"""A small SDP parser of our own, for answers (and offers) the zoo reads: per m-section the port,
mid, direction, payload types with rtpmap/fmtp/rtcp-fb, extmap, ssrc lines and groups, ICE
credentials, fingerprints, setup and candidates; at session level the groups (BUNDLE) and the
attributes sections inherit. Lenient: unknown lines are kept in `attributes`, never refused."""

from __future__ import annotations

from dataclasses import dataclass, field

_INHERITED = ("ice-ufrag", "ice-pwd", "setup", "ice-options")
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass
class RtpMap:
    pt: int
    name: str = ""
    clock_rate: int = 0
    channels: int | None = None
    fmtp: str | None = None
    rtcp_fb: list[str] = field(default_factory=list)

    @property
    def params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in (self.fmtp or "").split(";"):
            key, _, value = part.strip().partition("=")
            if key:
                out[key] = value
        return out


@dataclass
class MediaSection:
    kind: str
    port: int
    protocol: str
    formats: list[str]
    connection: str | None = None
    mid: str | None = None
    direction: str = "sendrecv"
    codecs: dict[int, RtpMap] = field(default_factory=dict)
    extmap: dict[int, str] = field(default_factory=dict)
    extmap_direction: dict[int, str] = field(default_factory=dict)
    ssrcs: dict[int, dict[str, str]] = field(default_factory=dict)
    ssrc_groups: list[tuple[str, list[int]]] = field(default_factory=list)
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_options: str | None = None
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None
    candidates: list[str] = field(default_factory=list)
    end_of_candidates: bool = False
    rtcp_mux: bool = False
    rtcp_rsize: bool = False
    msid: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        return self.port == 0 and not any(k == "bundle-only" for k, _ in self.attributes)

    @property
    def payload_types(self) -> list[int]:
        return [int(f) for f in self.formats if f.isdigit()]

    def payload_type(self, name: str) -> int | None:
        """The first payload type (in m= order) whose rtpmap name is `name`."""
        for pt in self.payload_types:
            codec = self.codecs.get(pt)
            if codec is not None and codec.name.lower() == name.lower():
                return pt
        return None

    def rtx_payload_type(self, pt: int) -> int | None:
        for codec in self.codecs.values():
            if codec.name.lower() == "rtx" and codec.params.get("apt") == str(pt):
                return codec.pt
        return None

    def extension_id(self, uri: str) -> int | None:
        for ext_id, ext_uri in self.extmap.items():
            if ext_uri == uri:
                return ext_id
        return None

    @property
    def fid(self) -> tuple[int, int] | None:
        for semantics, ssrcs in self.ssrc_groups:
            if semantics == "FID" and len(ssrcs) >= 2:
                return ssrcs[0], ssrcs[1]
        return None

    @property
    def media_ssrc(self) -> int | None:
        """The SSRC media arrives on: the first of a FID group, else the first a=ssrc."""
        fid = self.fid
        if fid is not None:
            return fid[0]
        return next(iter(self.ssrcs), None)

    @property
    def rtx_ssrc(self) -> int | None:
        fid = self.fid
        return fid[1] if fid is not None else None

    @property
    def primary_payload_type(self) -> int | None:
        for pt in self.payload_types:
            codec = self.codecs.get(pt)
            if codec is None or codec.name.lower() not in ("rtx", "red", "ulpfec", "cn",
                                                           "telephone-event"):
                return pt
        return None


@dataclass
class SessionDescription:
    version: str | None = None
    origin: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    groups: list[tuple[str, list[str]]] = field(default_factory=list)
    sections: list[MediaSection] = field(default_factory=list)
    ice_lite: bool = False

    @property
    def bundle(self) -> list[str]:
        for semantics, mids in self.groups:
            if semantics == "BUNDLE":
                return mids
        return []

    def section(self, mid: str) -> MediaSection:
        for s in self.sections:
            if s.mid == mid:
                return s
        raise LookupError(f"no section with mid {mid!r}")

    def sections_of(self, kind: str) -> list[MediaSection]:
        return [s for s in self.sections if s.kind == kind]

    @property
    def transport_section(self) -> MediaSection:
        """The section whose ICE/DTLS parameters carry the bundle (the BUNDLE tag), else the
        first section that is not rejected."""
        bundle = self.bundle
        for s in self.sections:
            if bundle and s.mid == bundle[0]:
                return s
        for s in self.sections:
            if not s.rejected:
                return s
        raise LookupError("no usable section")


def parse(text: str) -> SessionDescription:
    desc = SessionDescription()
    session_attrs: dict[str, str] = {}
    session_fingerprints: list[tuple[str, str]] = []
    current: MediaSection | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            parts = value.split()
            port_text = parts[1].split("/")[0] if len(parts) > 1 else "0"
            current = MediaSection(
                kind=parts[0] if parts else "",
                port=int(port_text) if port_text.isdigit() else 0,
                protocol=parts[2] if len(parts) > 2 else "",
                formats=parts[3:],
            )
            desc.sections.append(current)
            continue
        if kind == "v":
            desc.version = value
        elif kind == "o" and current is None:
            desc.origin = value
        elif kind == "c" and current is not None:
            current.connection = value
        if kind != "a":
            continue
        name, colon, attr = value.partition(":")
        attr_value: str | None = attr if colon else None
        if current is None:
            desc.attributes.append((name, attr_value))
            if name == "group" and attr_value:
                semantics, *mids = attr_value.split()
                desc.groups.append((semantics, mids))
            elif name == "ice-lite":
                desc.ice_lite = True
            elif name == "fingerprint" and attr_value:
                alg, _, fp = attr_value.partition(" ")
                session_fingerprints.append((alg.lower(), fp.strip()))
            elif name in _INHERITED and attr_value is not None:
                session_attrs[name] = attr_value
            continue
        _section_attribute(current, name, attr_value)
    for section in desc.sections:
        section.ice_ufrag = section.ice_ufrag or session_attrs.get("ice-ufrag")
        section.ice_pwd = section.ice_pwd or session_attrs.get("ice-pwd")
        section.setup = section.setup or session_attrs.get("setup")
        section.ice_options = section.ice_options or session_attrs.get("ice-options")
        if not section.fingerprints:
            section.fingerprints = list(session_fingerprints)
    return desc


def _section_attribute(s: MediaSection, name: str, value: str | None) -> None:
    s.attributes.append((name, value))
    if name in _DIRECTIONS:
        s.direction = name
    elif value is None:
        if name == "rtcp-mux":
            s.rtcp_mux = True
        elif name == "rtcp-rsize":
            s.rtcp_rsize = True
        elif name == "end-of-candidates":
            s.end_of_candidates = True
    elif name == "mid":
        s.mid = value
    elif name == "rtpmap":
        pt_text, _, rest = value.partition(" ")
        if pt_text.isdigit():
            bits = rest.split("/")
            codec = s.codecs.setdefault(int(pt_text), RtpMap(int(pt_text)))
            codec.name = bits[0]
            codec.clock_rate = int(bits[1]) if len(bits) > 1 and bits[1].isdigit() else 0
            codec.channels = int(bits[2]) if len(bits) > 2 and bits[2].isdigit() else None
    elif name == "fmtp":
        pt_text, _, rest = value.partition(" ")
        if pt_text.isdigit():
            s.codecs.setdefault(int(pt_text), RtpMap(int(pt_text))).fmtp = rest
    elif name == "rtcp-fb":
        pt_text, _, rest = value.partition(" ")
        if pt_text.isdigit():
            s.codecs.setdefault(int(pt_text), RtpMap(int(pt_text))).rtcp_fb.append(rest)
    elif name == "extmap":
        ref, _, uri = value.partition(" ")
        ext_id, _, direction = ref.partition("/")
        if ext_id.isdigit():
            s.extmap[int(ext_id)] = uri.split(" ")[0]
            if direction:
                s.extmap_direction[int(ext_id)] = direction
    elif name == "ssrc":
        ssrc_text, _, rest = value.partition(" ")
        if ssrc_text.isdigit():
            key, _, attr = rest.partition(":")
            s.ssrcs.setdefault(int(ssrc_text), {})
            if key:
                s.ssrcs[int(ssrc_text)][key] = attr
    elif name == "ssrc-group":
        semantics, *ssrcs = value.split()
        s.ssrc_groups.append((semantics, [int(x) for x in ssrcs if x.isdigit()]))
    elif name == "ice-ufrag":
        s.ice_ufrag = value
    elif name == "ice-pwd":
        s.ice_pwd = value
    elif name == "ice-options":
        s.ice_options = value
    elif name == "fingerprint":
        alg, _, fp = value.partition(" ")
        s.fingerprints.append((alg.lower(), fp.strip()))
    elif name == "setup":
        s.setup = value
    elif name == "candidate":
        s.candidates.append(value)
    elif name == "msid":
        s.msid = value
