"""RTP and RTCP on bytes, written here so the zoo shares no parsing code with the SFU:
RTP headers with one-byte and two-byte header extensions (RFC 8285), and the RTCP packets a
client sends or reads (SR, RR, SDES CNAME, BYE, PLI, FIR, NACK, REMB)."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_RTPFB = 205
RTCP_PSFB = 206


def ntp_from_unix(seconds: float) -> int:
    """A 64-bit NTP timestamp (32.32 fixed point) for a Unix time."""
    return int((seconds + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def unix_from_ntp(ntp: int) -> float:
    return ntp / (1 << 32) - NTP_EPOCH_OFFSET


def abs_send_time(unix_seconds: float | None = None) -> bytes:
    """The abs-send-time extension value: 6.18 fixed-point seconds, 24 bits."""
    ntp = ntp_from_unix(time.time() if unix_seconds is None else unix_seconds)
    return ((ntp >> 14) & 0xFFFFFF).to_bytes(3, "big")


# ---- RTP ----


@dataclass(slots=True)
class RtpHeader:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool = False
    csrcs: list[int] = field(default_factory=list)
    extensions: dict[int, bytes] = field(default_factory=dict)
    padding: int = 0  # bytes of padding at the end of the packet


def build_rtp(header: RtpHeader, payload: bytes, *, two_byte: bool | None = None) -> bytes:
    """Serialise a packet. Extensions use the one-byte form unless an id or a length needs the
    two-byte form (or `two_byte` forces it)."""
    ext = b""
    if header.extensions:
        items = sorted(header.extensions.items())
        if two_byte is None:
            two_byte = any(i > 14 or not 1 <= len(v) <= 16 for i, v in items)
        if two_byte:
            body = b"".join(bytes([i, len(v)]) + v for i, v in items)
            profile = 0x1000
        else:
            body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in items)
            profile = 0xBEDE
        body += b"\x00" * (-len(body) % 4)
        ext = struct.pack("!HH", profile, len(body) // 4) + body
    first = 0x80 | (0x20 if header.padding else 0) | (0x10 if ext else 0) | len(header.csrcs)
    second = (0x80 if header.marker else 0) | (header.payload_type & 0x7F)
    out = struct.pack("!BBHII", first, second, header.sequence & 0xFFFF,
                      header.timestamp & 0xFFFFFFFF, header.ssrc & 0xFFFFFFFF)
    out += b"".join(struct.pack("!I", c) for c in header.csrcs) + ext + payload
    if header.padding:
        out += b"\x00" * (header.padding - 1) + bytes([header.padding])
    return out


@dataclass(slots=True)
class ParsedRtp:
    header: RtpHeader
    payload: bytes
    extension_profile: int | None


def parse_rtp(data: bytes) -> ParsedRtp:
    """Parse an RTP packet; ValueError when it is not one."""
    if len(data) < 12 or data[0] >> 6 != 2:
        raise ValueError("not RTP")
    first, second, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    offset = 12
    csrcs = [struct.unpack_from("!I", data, offset + 4 * i)[0] for i in range(first & 0x0F)]
    offset += 4 * len(csrcs)
    extensions: dict[int, bytes] = {}
    profile: int | None = None
    if first & 0x10:
        if len(data) < offset + 4:
            raise ValueError("truncated extension header")
        profile, words = struct.unpack_from("!HH", data, offset)
        offset += 4
        body = data[offset:offset + 4 * words]
        if len(body) != 4 * words:
            raise ValueError("truncated extension")
        offset += 4 * words
        extensions = _parse_extensions(profile, body)
    end = len(data)
    padding = 0
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or padding > end - offset:
            raise ValueError("bad padding")
        end -= padding
    if offset > end:
        raise ValueError("truncated packet")
    header = RtpHeader(second & 0x7F, seq, ts, ssrc, bool(second & 0x80), csrcs, extensions,
                       padding)
    return ParsedRtp(header, data[offset:end], profile)


def _parse_extensions(profile: int, body: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 0
    if profile == 0xBEDE:
        while i < len(body):
            b = body[i]
            if b == 0:
                i += 1
                continue
            ext_id, length = b >> 4, (b & 0x0F) + 1
            if ext_id == 15:
                break
            out[ext_id] = body[i + 1:i + 1 + length]
            i += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while i + 1 < len(body):
            ext_id = body[i]
            if ext_id == 0:
                i += 1
                continue
            length = body[i + 1]
            out[ext_id] = body[i + 2:i + 2 + length]
            i += 2 + length
    return out


def is_rtcp(data: bytes) -> bool:
    return len(data) >= 2 and 192 <= data[1] <= 223


# ---- RTCP ----


@dataclass(slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int


@dataclass(slots=True)
class RtcpPacket:
    """One packet of a compound RTCP datagram, with what the zoo reads of it."""

    packet_type: int
    fmt: int
    ssrc: int
    body: bytes
    # SR
    ntp: int | None = None
    rtp_timestamp: int | None = None
    packet_count: int | None = None
    octet_count: int | None = None
    reports: list[ReportBlock] = field(default_factory=list)
    # feedback
    media_ssrc: int | None = None
    lost: list[int] = field(default_factory=list)  # NACK
    bitrate: int | None = None  # REMB
    remb_ssrcs: list[int] = field(default_factory=list)
    fir_ssrcs: list[int] = field(default_factory=list)
    cname: str | None = None

    @property
    def is_pli(self) -> bool:
        return self.packet_type == RTCP_PSFB and self.fmt == 1

    @property
    def is_fir(self) -> bool:
        return self.packet_type == RTCP_PSFB and self.fmt == 4

    @property
    def is_nack(self) -> bool:
        return self.packet_type == RTCP_RTPFB and self.fmt == 1

    @property
    def is_remb(self) -> bool:
        return self.packet_type == RTCP_PSFB and self.fmt == 15 and self.bitrate is not None


def _report_blocks(data: bytes, count: int) -> list[ReportBlock]:
    blocks = []
    for i in range(count):
        chunk = data[24 * i:24 * i + 24]
        if len(chunk) < 24:
            break
        ssrc, lost_word, highest, jitter, lsr, dlsr = struct.unpack("!IIIIII", chunk)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        blocks.append(ReportBlock(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr))
    return blocks


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Split a compound RTCP datagram; stops at the first malformed packet."""
    out: list[RtcpPacket] = []
    offset = 0
    while offset + 8 <= len(data):
        first, packet_type, words = struct.unpack_from("!BBH", data, offset)
        end = offset + 4 * (words + 1)
        if first >> 6 != 2 or end > len(data):
            break
        fmt = first & 0x1F
        body = data[offset + 8:end]
        (ssrc,) = struct.unpack_from("!I", data, offset + 4)
        packet = RtcpPacket(packet_type, fmt, ssrc, body)
        if packet_type == RTCP_SR and len(body) >= 20:
            hi, lo, ts, pc, oc = struct.unpack_from("!IIIII", body)
            packet.ntp, packet.rtp_timestamp = (hi << 32) | lo, ts
            packet.packet_count, packet.octet_count = pc, oc
            packet.reports = _report_blocks(body[20:], fmt)
        elif packet_type == RTCP_RR:
            packet.reports = _report_blocks(body, fmt)
        elif packet_type == RTCP_SDES and len(body) >= 2:
            if body[0] == 1:  # CNAME of the first chunk
                packet.cname = body[2:2 + body[1]].decode(errors="replace")
        elif packet_type in (RTCP_RTPFB, RTCP_PSFB) and len(body) >= 4:
            (packet.media_ssrc,) = struct.unpack_from("!I", body)
            fci = body[4:]
            if packet_type == RTCP_RTPFB and fmt == 1:
                for i in range(0, len(fci) - 3, 4):
                    pid, blp = struct.unpack_from("!HH", fci, i)
                    packet.lost.append(pid)
                    packet.lost += [(pid + b + 1) & 0xFFFF for b in range(16) if blp >> b & 1]
            elif packet_type == RTCP_PSFB and fmt == 15 and fci[:4] == b"REMB":
                count, exp_mant = fci[4], int.from_bytes(fci[5:8], "big")
                packet.bitrate = (exp_mant & 0x3FFFF) << (exp_mant >> 18)
                packet.remb_ssrcs = [struct.unpack_from("!I", fci, 8 + 4 * i)[0]
                                     for i in range(count) if 12 + 4 * i <= len(fci)]
            elif packet_type == RTCP_PSFB and fmt == 4:
                packet.fir_ssrcs = [struct.unpack_from("!I", fci, i)[0]
                                    for i in range(0, len(fci) - 7, 8)]
        out.append(packet)
        offset = end
    return out


def _header(fmt: int, packet_type: int, body_len: int) -> bytes:
    return struct.pack("!BBH", 0x80 | fmt, packet_type, (body_len + 4) // 4 - 1)


def sender_report(ssrc: int, ntp: int, rtp_timestamp: int, packets: int, octets: int,
                  reports: Iterable[ReportBlock] = ()) -> bytes:
    blocks = list(reports)
    body = struct.pack("!IIIIII", ssrc, ntp >> 32, ntp & 0xFFFFFFFF, rtp_timestamp & 0xFFFFFFFF,
                       packets & 0xFFFFFFFF, octets & 0xFFFFFFFF)
    body += b"".join(_block(b) for b in blocks)
    return _header(len(blocks), RTCP_SR, len(body)) + body


def receiver_report(ssrc: int, reports: Iterable[ReportBlock] = ()) -> bytes:
    blocks = list(reports)
    body = struct.pack("!I", ssrc) + b"".join(_block(b) for b in blocks)
    return _header(len(blocks), RTCP_RR, len(body)) + body


def _block(b: ReportBlock) -> bytes:
    return struct.pack("!IIIIII", b.ssrc, (b.fraction_lost << 24) | (b.packets_lost & 0xFFFFFF),
                       b.highest_sequence, b.jitter, b.lsr, b.dlsr)


def sdes_cname(ssrc: int, cname: str) -> bytes:
    text = cname.encode()[:255]
    chunk = struct.pack("!I", ssrc) + bytes([1, len(text)]) + text + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return _header(1, RTCP_SDES, len(chunk)) + chunk


def bye(ssrcs: Iterable[int]) -> bytes:
    items = list(ssrcs)
    body = b"".join(struct.pack("!I", s) for s in items)
    return _header(len(items), RTCP_BYE, len(body)) + body


def pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return _header(1, RTCP_PSFB, 8) + struct.pack("!II", sender_ssrc, media_ssrc)


def fir(sender_ssrc: int, media_ssrc: int, sequence: int) -> bytes:
    body = struct.pack("!IIIB3x", sender_ssrc, 0, media_ssrc, sequence & 0xFF)
    return _header(4, RTCP_PSFB, len(body)) + body


def nack(sender_ssrc: int, media_ssrc: int, lost: Iterable[int]) -> bytes:
    seqs = sorted(set(s & 0xFFFF for s in lost))
    fci = b""
    while seqs:
        pid = seqs.pop(0)
        blp = 0
        for s in list(seqs):
            delta = (s - pid) & 0xFFFF
            if 1 <= delta <= 16:
                blp |= 1 << (delta - 1)
                seqs.remove(s)
        fci += struct.pack("!HH", pid, blp)
    body = struct.pack("!II", sender_ssrc, media_ssrc) + fci
    return _header(1, RTCP_RTPFB, len(body)) + body


def remb(sender_ssrc: int, bitrate: int, ssrcs: Iterable[int]) -> bytes:
    items = list(ssrcs)
    exp = 0
    mantissa = bitrate
    while mantissa >= 1 << 18:
        mantissa >>= 1
        exp += 1
    fci = b"REMB" + bytes([len(items)]) + ((exp << 18) | mantissa).to_bytes(3, "big")
    fci += b"".join(struct.pack("!I", s) for s in items)
    body = struct.pack("!II", sender_ssrc, 0) + fci
    return _header(15, RTCP_PSFB, len(body)) + body
