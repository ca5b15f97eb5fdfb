"""RTP and RTCP wire formats as the SFU needs them: pure functions and dataclasses on bytes.

RTP (RFC 3550) headers are read without building objects on the hot path: `rewrite` copies a
packet into a new bytearray and patches the fixed header (and, when a plan asks for it, rebuilds
the header extension block, RFC 8285). RTX (RFC 4588), VP8 (RFC 7741) and H.264 (RFC 6184)
keyframe detection, and the RTCP packets an SFU acts on (SR, RR, generic NACK, PLI, FIR, REMB)
with `parse()` / `__bytes__`. Malformed input raises `ValueError` with a fixed message.

No I/O and no import of aiortc: the glue that talks to aiortc lives elsewhere.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

RTP_HEADER_LENGTH = 12
RTP_SEQ_MOD = 1 << 16
RTP_TS_MOD = 1 << 32

ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
TRANSPORT_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"

ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE = 0x1000

# Seconds between the NTP epoch (1900) and the Unix epoch (1970).
NTP_EPOCH_OFFSET = 2_208_988_800

# Fixed error messages (tests compare them verbatim).
RTP_TOO_SHORT = "RTP packet is too short"
RTP_WRONG_VERSION = "RTP packet has wrong version"
RTP_CSRC_TRUNCATED = "RTP CSRC list is truncated"
RTP_EXTENSION_TRUNCATED = "RTP header extension is truncated"
RTP_PADDING_INVALID = "RTP padding is invalid"
RTP_REWRITE_TOO_LONG = "RTP packet is too long for the buffer once rewritten"
RTX_TOO_SHORT = "RTX packet is too short"
RTCP_TOO_SHORT = "RTCP packet is too short"
RTCP_WRONG_VERSION = "RTCP packet has wrong version"
RTCP_TRUNCATED = "RTCP packet is truncated"
RTCP_PADDING_INVALID = "RTCP padding is invalid"
RTCP_SR_TRUNCATED = "RTCP sender report is truncated"
RTCP_RR_TRUNCATED = "RTCP receiver report is truncated"
RTCP_FEEDBACK_TRUNCATED = "RTCP feedback packet is truncated"
RTCP_NACK_TRUNCATED = "RTCP NACK is truncated"
RTCP_FIR_TRUNCATED = "RTCP FIR is truncated"
RTCP_REMB_TRUNCATED = "RTCP REMB is truncated"

_SEQ_TS_SSRC = struct.Struct("!HII")
_HH = struct.Struct("!HH")
_H = struct.Struct("!H")
_I = struct.Struct("!I")
_RTCP_HEADER = struct.Struct("!BBH")


# --------------------------------------------------------------------------------------------
# RTP header


def _layout(data: bytes | bytearray) -> tuple[int, int, int]:
    """Validate the header; return (extension header offset or 0, header length, payload end).

    The extension header offset is where the 4-byte profile/length word starts (0 when the
    X bit is clear); the header length includes CSRCs and the extension block; the payload ends
    where RTP padding starts.
    """
    n = len(data)
    if n < RTP_HEADER_LENGTH:
        raise ValueError(RTP_TOO_SHORT)
    b0 = data[0]
    if b0 >> 6 != 2:
        raise ValueError(RTP_WRONG_VERSION)
    offset = RTP_HEADER_LENGTH + (b0 & 0x0F) * 4
    if offset > n:
        raise ValueError(RTP_CSRC_TRUNCATED)
    ext_at = 0
    if b0 & 0x10:
        if offset + 4 > n:
            raise ValueError(RTP_EXTENSION_TRUNCATED)
        ext_at = offset
        offset += 4 + _H.unpack_from(data, offset + 2)[0] * 4
        if offset > n:
            raise ValueError(RTP_EXTENSION_TRUNCATED)
    end = n
    if b0 & 0x20:
        pad = data[n - 1]
        if pad == 0 or pad > n - offset:
            raise ValueError(RTP_PADDING_INVALID)
        end = n - pad
    return ext_at, offset, end


@dataclass(frozen=True, slots=True)
class RtpHeader:
    """Every field of an RTP header, for code off the hot path (logging, demultiplexing, tests)."""

    padding: bool
    extension: bool
    marker: bool
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...]
    extension_profile: int | None
    extensions: tuple[tuple[int, bytes], ...]
    header_length: int
    payload_length: int
    padding_length: int

    @property
    def csrc_count(self) -> int:
        return len(self.csrcs)

    @property
    def payload_offset(self) -> int:
        return self.header_length

    @classmethod
    def parse(cls, data: bytes | bytearray) -> RtpHeader:
        ext_at, header_length, end = _layout(data)
        b0, b1 = data[0], data[1]
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
        cc = b0 & 0x0F
        csrcs = struct.unpack_from(f"!{cc}I", data, RTP_HEADER_LENGTH)
        profile = _H.unpack_from(data, ext_at)[0] if ext_at else None
        extensions = (
            tuple(_walk_extensions(data, ext_at + 4, header_length, profile))
            if profile is not None
            else ()
        )
        return cls(
            padding=bool(b0 & 0x20),
            extension=bool(b0 & 0x10),
            marker=bool(b1 & 0x80),
            payload_type=b1 & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            csrcs=csrcs,
            extension_profile=profile,
            extensions=extensions,
            header_length=header_length,
            payload_length=end - header_length,
            padding_length=len(data) - end,
        )


def payload_bounds(packet: bytes | bytearray) -> tuple[int, int]:
    """(start, end) of the payload, padding excluded; validates the framing, not the
    extension elements (as `rewrite` does on its fast path)."""
    _ext_at, start, end = _layout(packet)
    return start, end


def is_rtcp(data: bytes | bytearray) -> bool:
    """True for RTCP multiplexed with RTP (RFC 5761): second byte 192..223."""
    return len(data) >= 2 and 192 <= data[1] <= 223


# --------------------------------------------------------------------------------------------
# Header extensions (RFC 8285)


def _walk_extensions(
    data: bytes | bytearray, start: int, end: int, profile: int
) -> list[tuple[int, bytes]]:
    """(id, value) of each element between start and end; [] for an unknown profile."""
    elements: list[tuple[int, bytes]] = []
    i = start
    if profile == ONE_BYTE_PROFILE:
        while i < end:
            b = data[i]
            if b == 0:  # padding
                i += 1
                continue
            xid = b >> 4
            if xid == 15:  # reserved: stop processing here (RFC 8285 section 4.2)
                break
            value_end = i + 1 + (b & 0x0F) + 1
            if value_end > end:
                raise ValueError(RTP_EXTENSION_TRUNCATED)
            elements.append((xid, bytes(data[i + 1 : value_end])))
            i = value_end
    elif profile & 0xFFF0 == TWO_BYTE_PROFILE:
        while i < end:
            xid = data[i]
            if xid == 0:  # padding
                i += 1
                continue
            if i + 2 > end:
                raise ValueError(RTP_EXTENSION_TRUNCATED)
            value_end = i + 2 + data[i + 1]
            if value_end > end:
                raise ValueError(RTP_EXTENSION_TRUNCATED)
            elements.append((xid, bytes(data[i + 2 : value_end])))
            i = value_end
    return elements


def find_extension(packet: bytes | bytearray, ext_id: int) -> tuple[int, int] | None:
    """(offset, length) of the value of header extension element `ext_id` (RFC 8285), or None.

    Reads the one-byte (profile 0xBEDE, ids 1..14) or two-byte (profile 0x100X, ids 1..255)
    form; stops at the first element with that id. None when the packet has no such element
    or is malformed (not RTP version 2 with the X bit, truncated CSRC list or extension block,
    an element running past the block). Never raises, whatever the bytes, and builds nothing
    but the result: it runs once per received packet.
    """
    n = len(packet)
    if n < 16:  # fixed header + extension header
        return None
    b0 = packet[0]
    if b0 & 0xD0 != 0x90:  # version 2 with the X bit
        return None
    at = 12 + (b0 & 0x0F) * 4
    if at + 4 > n:
        return None
    profile = (packet[at] << 8) | packet[at + 1]
    end = at + 4 + ((packet[at + 2] << 8) | packet[at + 3]) * 4
    if end > n:
        return None
    i = at + 4
    if profile == ONE_BYTE_PROFILE:
        if not 1 <= ext_id <= 14:
            return None
        while i < end:
            b = packet[i]
            xid = b >> 4
            if xid == 0:  # padding byte (libwebrtc skips it whatever its length bits)
                i += 1
                continue
            if xid == 15:  # reserved: stop processing (RFC 8285 section 4.2)
                return None
            length = (b & 0x0F) + 1
            if xid == ext_id:
                return (i + 1, length) if i + 1 + length <= end else None
            i += 1 + length
        return None
    if profile & 0xFFF0 == TWO_BYTE_PROFILE:
        if not 1 <= ext_id <= 255:
            return None
        while i < end:
            xid = packet[i]
            if xid == 0:  # padding byte
                i += 1
                continue
            if i + 2 > end:
                return None
            length = packet[i + 1]
            if xid == ext_id:
                return (i + 2, length) if i + 2 + length <= end else None
            i += 2 + length
    return None


def abs_send_time(packet: bytes | bytearray, ext_id: int) -> int | None:
    """The 24-bit abs-send-time (6.18 fixed-point seconds) in element `ext_id`, or None when
    absent or not 3 bytes long (webrtc.org/experiments/rtp-hdrext/abs-send-time)."""
    found = find_extension(packet, ext_id)
    if found is None or found[1] != 3:
        return None
    i = found[0]
    return (packet[i] << 16) | (packet[i + 1] << 8) | packet[i + 2]


def header_extensions(packet: bytes | bytearray) -> list[tuple[int, bytes]]:
    """The (id, value) header extension elements of an RTP packet, in order."""
    ext_at, header_length, _end = _layout(packet)
    if not ext_at:
        return []
    profile = _H.unpack_from(packet, ext_at)[0]
    return _walk_extensions(packet, ext_at + 4, header_length, profile)


def _pack_extensions(profile: int, elements: list[tuple[int, bytes]]) -> bytes:
    """The extension block (profile word, length word, elements, zero padding)."""
    if profile == ONE_BYTE_PROFILE and any(
        xid > 14 or not 1 <= len(value) <= 16 for xid, value in elements
    ):
        profile = TWO_BYTE_PROFILE  # the subscriber's ids or values need the two-byte form
    body = bytearray()
    if profile == ONE_BYTE_PROFILE:
        for xid, value in elements:
            body.append((xid << 4) | (len(value) - 1))
            body += value
    else:
        for xid, value in elements:
            body.append(xid)
            body.append(len(value))
            body += value
    body += bytes(-len(body) % 4)
    return _HH.pack(profile, len(body) // 4) + body


class ExtensionAction(enum.IntEnum):
    """What `rewrite` does with the value of one publisher extension id."""

    DROP = 0
    COPY = 1
    ABS_SEND_TIME = 2
    MID = 3


def _check_ids(uri_ids: Mapping[str, int], side: str) -> None:
    for uri, xid in uri_ids.items():
        if not 1 <= xid <= 255:
            raise ValueError(f"{side} header extension id is out of range: {uri}")
    if len(set(uri_ids.values())) != len(uri_ids):
        raise ValueError(f"{side} header extension ids are not unique")


@dataclass(frozen=True, slots=True)
class ExtensionPlan:
    """How to turn one publisher's header extensions into one subscriber's, computed once.

    `targets[id]` is the subscriber id for publisher id `id` and `actions[id]` what to do with
    its value. Elements the subscriber did not negotiate, the publisher did not negotiate
    (unknown meaning), or that are listed in `drop` are removed. abs-send-time gets the SFU's
    send time (when `rewrite` is given one) and MID the subscriber's mid (or is removed when
    there is none). With a `verbatim` plan `rewrite` copies the extension block unchanged.
    """

    targets: tuple[int, ...]
    actions: tuple[ExtensionAction, ...]
    mid: bytes
    verbatim: bool
    verbatim_without_abs_send_time: bool
    stamps_send_time: bool  # `rewrite` writes the given send time into abs-send-time

    @classmethod
    def build(
        cls,
        publisher: Mapping[str, int],
        subscriber: Mapping[str, int],
        *,
        drop: Collection[str] = (),
        mid: str | None = None,
    ) -> ExtensionPlan:
        _check_ids(publisher, "publisher")
        _check_ids(subscriber, "subscriber")
        mid_bytes = b"" if mid is None else mid.encode()
        if mid is not None and not 1 <= len(mid_bytes) <= 255:
            raise ValueError("MID must be 1 to 255 bytes")
        targets = [0] * 256
        actions = [ExtensionAction.DROP] * 256
        for uri, pub_id in publisher.items():
            sub_id = subscriber.get(uri)
            if sub_id is None or uri in drop:
                continue
            if uri == MID_URI:
                if mid is None:
                    continue
                action = ExtensionAction.MID
            elif uri == ABS_SEND_TIME_URI:
                action = ExtensionAction.ABS_SEND_TIME
            else:
                action = ExtensionAction.COPY
            targets[pub_id] = sub_id
            actions[pub_id] = action
        same = dict(publisher) == dict(subscriber) and not set(drop) & set(publisher)
        without_abs = same and MID_URI not in subscriber
        verbatim = without_abs and ABS_SEND_TIME_URI not in subscriber
        return cls(
            targets=tuple(targets),
            actions=tuple(actions),
            mid=mid_bytes,
            verbatim=verbatim,
            verbatim_without_abs_send_time=without_abs,
            stamps_send_time=not verbatim and ExtensionAction.ABS_SEND_TIME in actions,
        )


def _remap_extensions(
    packet: bytes | bytearray,
    ext_at: int,
    end: int,
    plan: ExtensionPlan,
    abs_send_time: int | None,
) -> bytes:
    profile = _H.unpack_from(packet, ext_at)[0]
    targets, actions = plan.targets, plan.actions
    out: list[tuple[int, bytes]] = []
    for xid, value in _walk_extensions(packet, ext_at + 4, end, profile):
        action = actions[xid]
        if action is ExtensionAction.DROP:
            continue
        if action is ExtensionAction.ABS_SEND_TIME and abs_send_time is not None:
            value = (abs_send_time & 0xFFFFFF).to_bytes(3, "big")
        elif action is ExtensionAction.MID:
            value = plan.mid
        out.append((targets[xid], value))
    return _pack_extensions(profile, out) if out else b""


def _patch_in_place(
    out: bytearray | memoryview, ext_at: int, end: int, plan: ExtensionPlan,
    abs_send_time: int | None,
) -> bool:
    """Rewrite a one-byte extension block where it lies (RFC 8285 section 4.2), keeping its
    length: an element the subscriber does not get becomes padding (zero bytes, which every
    parser skips), an element under another subscriber id (1..14) gets that id in its header
    byte, abs-send-time gets our send time and MID the subscriber's (when of the same length).
    False when it cannot (another MID length, an id over 14) or when no element is left: then
    `out` may be half-patched and the caller rebuilds from the original packet.
    """
    if out[ext_at] != 0xBE or out[ext_at + 1] != 0xDE:
        return False
    targets, actions, mid = plan.targets, plan.actions, plan.mid
    kept = False
    i = ext_at + 4
    while i < end:
        b = out[i]
        if b == 0:
            i += 1
            continue
        xid = b >> 4
        if xid == 15:
            return kept
        length = (b & 0x0F) + 1
        value_end = i + 1 + length
        if value_end > end:
            raise ValueError(RTP_EXTENSION_TRUNCATED)
        action = actions[xid]
        if action is ExtensionAction.DROP:
            out[i:value_end] = bytes(value_end - i)
            i = value_end
            continue
        target = targets[xid]
        if target != xid:
            if target > 14:
                return False
            out[i] = (target << 4) | (b & 0x0F)
        if action is ExtensionAction.ABS_SEND_TIME and abs_send_time is not None:
            if length != 3:
                return False
            out[i + 1] = (abs_send_time >> 16) & 0xFF
            out[i + 2] = (abs_send_time >> 8) & 0xFF
            out[i + 3] = abs_send_time & 0xFF
        elif action is ExtensionAction.MID:
            if length != len(mid):
                return False
            out[i + 1 : value_end] = mid
        kept = True
        i = value_end
    return kept  # nothing left: the caller removes the block and the X bit


# --------------------------------------------------------------------------------------------
# Forwarding rewrite and RTX


def rewrite_into(
    out: bytearray | memoryview,
    packet: bytes | bytearray,
    *,
    ssrc: int,
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    plan: ExtensionPlan | None,
    abs_send_time: int | None = None,
) -> int:
    """Write the forwarded copy of `packet` (see `rewrite`) at the start of the writable
    buffer `out`, which must hold `len(packet)` bytes plus any growth of the extension block
    (ValueError otherwise); returns its length. The common cases (extension ids kept) cost one
    copy of the packet and a few byte writes."""
    ext_at, header_length, _end = _layout(packet)
    n = len(packet)
    out[:n] = packet
    if not (
        plan is None
        or not ext_at
        or plan.verbatim
        or (abs_send_time is None and plan.verbatim_without_abs_send_time)
        or _patch_in_place(out, ext_at, header_length, plan, abs_send_time)
    ):
        block = _remap_extensions(packet, ext_at, header_length, plan, abs_send_time)
        rebuilt = bytes(packet[:ext_at]) + block + bytes(packet[header_length:])
        n = len(rebuilt)
        if n > len(out):
            raise ValueError(RTP_REWRITE_TOO_LONG)
        out[:n] = rebuilt
        if not block:
            out[0] &= ~0x10 & 0xFF
    out[1] = (out[1] & 0x80) | (payload_type & 0x7F)
    _SEQ_TS_SSRC.pack_into(out, 2, sequence_number, timestamp, ssrc)
    return n


def rewrite(
    packet: bytes | bytearray,
    *,
    ssrc: int,
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    plan: ExtensionPlan | None,
    abs_send_time: int | None = None,
) -> bytearray:
    """The forwarded copy of `packet` with a new SSRC, payload type, sequence and timestamp.

    Marker, CSRCs, payload and RTP padding are kept byte for byte. Header extensions are
    remapped by `plan` (profile kept, unless a subscriber id or value only fits the two-byte
    form; the block and the X bit go away when nothing is left). With `plan=None` or a verbatim
    plan only the 12 fixed bytes change.
    """
    # A remapped block grows by at most one byte per element (two-byte form) and a MID.
    out = bytearray(2 * len(packet) + 512)
    n = rewrite_into(out, packet, ssrc=ssrc, payload_type=payload_type,
                     sequence_number=sequence_number, timestamp=timestamp, plan=plan,
                     abs_send_time=abs_send_time)
    del out[n:]
    return out


def wrap_rtx(
    packet: bytes | bytearray,
    *,
    rtx_ssrc: int,
    rtx_payload_type: int,
    rtx_sequence_number: int,
) -> bytearray:
    """The RTX packet (RFC 4588) carrying `packet`: its sequence number goes before the payload."""
    _ext_at, header_length, _end = _layout(packet)
    out = bytearray(packet[:header_length])
    out += packet[2:4]
    out += packet[header_length:]
    out[1] = (out[1] & 0x80) | (rtx_payload_type & 0x7F)
    _H.pack_into(out, 2, rtx_sequence_number)
    _I.pack_into(out, 8, rtx_ssrc)
    return out


def unwrap_rtx(packet: bytes | bytearray, *, ssrc: int, payload_type: int) -> bytearray:
    """The original packet inside an RTX packet, with the original SSRC and payload type."""
    _ext_at, header_length, end = _layout(packet)
    if end - header_length < 2:
        raise ValueError(RTX_TOO_SHORT)
    out = bytearray(packet[:header_length])
    out += packet[header_length + 2 :]
    out[1] = (out[1] & 0x80) | (payload_type & 0x7F)
    out[2:4] = packet[header_length : header_length + 2]
    _I.pack_into(out, 8, ssrc)
    return out


# --------------------------------------------------------------------------------------------
# Keyframes


def vp8_descriptor_length(payload: bytes | bytearray) -> int | None:
    """Bytes taken by the VP8 payload descriptor (RFC 7741 section 4.2), or None when it is
    truncated or nothing follows it."""
    n = len(payload)
    if n < 1:
        return None
    b0 = payload[0]
    i = 1
    if b0 & 0x80:  # X: extension byte follows
        if n < 2:
            return None
        x = payload[1]
        i = 2
        if x & 0x80:  # I: picture id, 7 or 15 bits
            if n <= i:
                return None
            i += 2 if payload[i] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            i += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX
            i += 1
    return i if i < n else None


def is_vp8_keyframe(payload: bytes | bytearray) -> bool:
    """True for the first packet of a VP8 keyframe (RFC 7741); False for anything truncated."""
    if not payload or not payload[0] & 0x10 or payload[0] & 0x07:  # S=1, PID=0: partition 0
        return False
    i = vp8_descriptor_length(payload)
    # RFC 6386 section 9.1: the frame tag's P bit is 0 on a key frame
    return i is not None and not payload[i] & 0x01


_H264_KEY_NAL_TYPES = frozenset({5, 7})


def is_h264_keyframe(payload: bytes | bytearray) -> bool:
    """True when the packet carries an IDR slice or an SPS (RFC 6184 single NAL, STAP-A, FU-A)."""
    n = len(payload)
    if n < 1:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in _H264_KEY_NAL_TYPES:
        return True
    if nal_type == 24:  # STAP-A: a malformed aggregate is not a keyframe
        i = 1
        found = False
        while i < n:
            if i + 2 > n:
                return False
            size = (payload[i] << 8) | payload[i + 1]
            i += 2
            if size == 0 or i + size > n:
                return False
            if payload[i] & 0x1F in _H264_KEY_NAL_TYPES:
                found = True
            i += size
        return found
    if nal_type == 28:  # FU-A: the start fragment names the NAL type
        return n >= 2 and bool(payload[1] & 0x80) and payload[1] & 0x1F in _H264_KEY_NAL_TYPES
    return False


# --------------------------------------------------------------------------------------------
# Time


def ntp_time(unix_seconds: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) of a Unix time in seconds."""
    seconds = int(unix_seconds // 1)
    fraction = int((unix_seconds - seconds) * (1 << 32))
    return (((seconds + NTP_EPOCH_OFFSET) << 32) | fraction) & 0xFFFF_FFFF_FFFF_FFFF


def abs_send_time_from_ntp(ntp: int) -> int:
    """The 24-bit abs-send-time value (6.18 fixed point seconds) of a 64-bit NTP time."""
    return (ntp >> 14) & 0xFFFFFF


def abs_send_time_of(unix_seconds: float) -> int:
    """`abs_send_time_from_ntp(ntp_time(unix_seconds))` in one step (the per-packet stamp)."""
    return int((unix_seconds + NTP_EPOCH_OFFSET) * 262144) & 0xFFFFFF


def compact_ntp(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP time, as RTCP's LSR field carries it."""
    return (ntp >> 16) & 0xFFFFFFFF


# --------------------------------------------------------------------------------------------
# RTCP (RFC 3550, RFC 4585, RFC 5104, draft-alvestrand-rmcat-remb)

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_RTPFB = 205
RTCP_PSFB = 206
RTCP_RTPFB_NACK = 1
RTCP_PSFB_PLI = 1
RTCP_PSFB_FIR = 4
RTCP_PSFB_AFB = 15

_REPORT_BLOCK = struct.Struct("!IIIIII")
_SENDER_INFO = struct.Struct("!IQIII")
_II = struct.Struct("!II")
_PACKETS_LOST_MIN = -(1 << 23)
_PACKETS_LOST_MAX = (1 << 23) - 1


def _rtcp_header(packet_type: int, count: int, body_length: int) -> bytes:
    if count > 31:
        raise ValueError("RTCP packet has too many items")
    return struct.pack("!BBH", 0x80 | count, packet_type, body_length // 4)


@dataclass(slots=True)
class RtcpReportBlock:
    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_seq: int
    jitter: int
    lsr: int
    dlsr: int

    def __bytes__(self) -> bytes:
        lost = max(_PACKETS_LOST_MIN, min(_PACKETS_LOST_MAX, self.packets_lost)) & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc,
            ((self.fraction_lost & 0xFF) << 24) | lost,
            self.highest_seq,
            self.jitter,
            self.lsr,
            self.dlsr,
        )

    @classmethod
    def parse_from(cls, data: bytes, offset: int) -> RtcpReportBlock:
        ssrc, lost_word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        return cls(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr)


_P = TypeVar("_P")


def _parse_single(cls: type[_P], data: bytes) -> _P:
    packets = parse_rtcp(data)
    if len(packets) != 1 or not isinstance(packets[0], cls):
        raise ValueError(f"RTCP data is not a single {cls.__name__}")
    return packets[0]


@dataclass(slots=True)
class RtcpSenderReport:
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[RtcpReportBlock] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        body = _SENDER_INFO.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count,
            self.octet_count,
        ) + b"".join(bytes(r) for r in self.reports)
        return _rtcp_header(RTCP_SR, len(self.reports), len(body)) + body

    @classmethod
    def parse(cls, data: bytes) -> RtcpSenderReport:
        return _parse_single(cls, data)


@dataclass(slots=True)
class RtcpReceiverReport:
    ssrc: int
    reports: list[RtcpReportBlock] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        body = _I.pack(self.ssrc) + b"".join(bytes(r) for r in self.reports)
        return _rtcp_header(RTCP_RR, len(self.reports), len(body)) + body

    @classmethod
    def parse(cls, data: bytes) -> RtcpReceiverReport:
        return _parse_single(cls, data)


@dataclass(slots=True)
class RtcpNack:
    """Generic NACK (RFC 4585 6.2.1); `lost` is expanded from the PID/BLP pairs, in order."""

    sender_ssrc: int
    media_ssrc: int
    lost: list[int] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        # Greedy packing in list order, as libwebrtc does for a sorted list.
        pairs: list[list[int]] = []
        for seq in self.lost:
            if pairs:
                delta = (seq - pairs[-1][0]) & 0xFFFF
                if 1 <= delta <= 16:
                    pairs[-1][1] |= 1 << (delta - 1)
                    continue
            pairs.append([seq & 0xFFFF, 0])
        body = _II.pack(self.sender_ssrc, self.media_ssrc) + b"".join(
            _HH.pack(pid, blp) for pid, blp in pairs
        )
        return _rtcp_header(RTCP_RTPFB, RTCP_RTPFB_NACK, len(body)) + body

    @classmethod
    def parse(cls, data: bytes) -> RtcpNack:
        return _parse_single(cls, data)


@dataclass(slots=True)
class RtcpPli:
    """Picture Loss Indication (RFC 4585 6.3.1)."""

    sender_ssrc: int
    media_ssrc: int

    def __bytes__(self) -> bytes:
        return _rtcp_header(RTCP_PSFB, RTCP_PSFB_PLI, 8) + _II.pack(
            self.sender_ssrc, self.media_ssrc
        )

    @classmethod
    def parse(cls, data: bytes) -> RtcpPli:
        return _parse_single(cls, data)


@dataclass(slots=True)
class RtcpFir:
    """Full Intra Request (RFC 5104 4.3.1); `entries` are (ssrc, command sequence number)."""

    sender_ssrc: int
    media_ssrc: int = 0
    entries: list[tuple[int, int]] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        body = _II.pack(self.sender_ssrc, self.media_ssrc) + b"".join(
            _II.pack(ssrc, (seqnr & 0xFF) << 24) for ssrc, seqnr in self.entries
        )
        return _rtcp_header(RTCP_PSFB, RTCP_PSFB_FIR, len(body)) + body

    @classmethod
    def parse(cls, data: bytes) -> RtcpFir:
        return _parse_single(cls, data)


@dataclass(slots=True)
class RtcpRemb:
    """Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb), bits per second.

    The wire form is an 18-bit mantissa and a 6-bit exponent: `bytes()` truncates the bitrate
    to what it can carry, with the smallest exponent (as libwebrtc does).
    """

    sender_ssrc: int
    bitrate: int
    ssrcs: list[int] = field(default_factory=list)
    media_ssrc: int = 0

    def __bytes__(self) -> bytes:
        if self.bitrate < 0:
            raise ValueError("REMB bitrate is negative")
        mantissa, exponent = self.bitrate, 0
        while mantissa >= 1 << 18:
            mantissa >>= 1
            exponent += 1
        if exponent > 63 or len(self.ssrcs) > 255:
            raise ValueError("REMB does not fit")
        body = (
            _II.pack(self.sender_ssrc, self.media_ssrc)
            + b"REMB"
            + _I.pack((len(self.ssrcs) << 24) | (exponent << 18) | mantissa)
            + b"".join(_I.pack(s) for s in self.ssrcs)
        )
        return _rtcp_header(RTCP_PSFB, RTCP_PSFB_AFB, len(body)) + body

    @classmethod
    def parse(cls, data: bytes) -> RtcpRemb:
        return _parse_single(cls, data)


@dataclass(slots=True)
class RtcpOther:
    """Any other RTCP packet (SDES, BYE, APP, transport-cc...), kept as its raw bytes."""

    packet_type: int
    data: bytes

    @property
    def count(self) -> int:
        """The 5-bit count / feedback message type field."""
        return self.data[0] & 0x1F

    def __bytes__(self) -> bytes:
        return self.data

    @classmethod
    def parse(cls, data: bytes) -> RtcpOther:
        return _parse_single(cls, data)


RtcpPacket: TypeAlias = (
    RtcpSenderReport | RtcpReceiverReport | RtcpNack | RtcpPli | RtcpFir | RtcpRemb | RtcpOther
)


def _parse_reports(body: bytes, offset: int, count: int) -> list[RtcpReportBlock]:
    return [RtcpReportBlock.parse_from(body, offset + 24 * k) for k in range(count)]


def _parse_packet(raw: bytes, body: bytes, count: int, packet_type: int) -> RtcpPacket:
    n = len(body)
    if packet_type == RTCP_SR:
        if n < 24 + 24 * count:
            raise ValueError(RTCP_SR_TRUNCATED)
        ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body, 0)
        return RtcpSenderReport(ssrc, ntp, rtp_ts, packets, octets, _parse_reports(body, 24, count))
    if packet_type == RTCP_RR:
        if n < 4 + 24 * count:
            raise ValueError(RTCP_RR_TRUNCATED)
        return RtcpReceiverReport(_I.unpack_from(body, 0)[0], _parse_reports(body, 4, count))
    if packet_type not in (RTCP_RTPFB, RTCP_PSFB):
        return RtcpOther(packet_type, raw)
    if n < 8:
        raise ValueError(RTCP_FEEDBACK_TRUNCATED)
    sender, media = _II.unpack_from(body, 0)
    if packet_type == RTCP_RTPFB:
        if count != RTCP_RTPFB_NACK:
            return RtcpOther(packet_type, raw)
        if n % 4:
            raise ValueError(RTCP_NACK_TRUNCATED)
        lost: list[int] = []
        for i in range(8, n, 4):
            pid, blp = _HH.unpack_from(body, i)
            lost.append(pid)
            for bit in range(16):
                if blp & (1 << bit):
                    lost.append((pid + bit + 1) & 0xFFFF)
        return RtcpNack(sender, media, lost)
    if count == RTCP_PSFB_PLI:
        return RtcpPli(sender, media)
    if count == RTCP_PSFB_FIR:
        if (n - 8) % 8:
            raise ValueError(RTCP_FIR_TRUNCATED)
        entries = [
            (_I.unpack_from(body, i)[0], body[i + 4]) for i in range(8, n, 8)
        ]
        return RtcpFir(sender, media, entries)
    if count == RTCP_PSFB_AFB and body[8:12] == b"REMB":
        if n < 16:
            raise ValueError(RTCP_REMB_TRUNCATED)
        word = _I.unpack_from(body, 12)[0]
        num = word >> 24
        if n < 16 + 4 * num:
            raise ValueError(RTCP_REMB_TRUNCATED)
        bitrate = (word & 0x3FFFF) << ((word >> 18) & 0x3F)
        ssrcs = list(struct.unpack_from(f"!{num}I", body, 16))
        return RtcpRemb(sender, bitrate, ssrcs, media)
    return RtcpOther(packet_type, raw)


def parse_rtcp(data: bytes | bytearray) -> list[RtcpPacket]:
    """The packets of a compound RTCP packet, in order. Padding (P bit) is honoured."""
    data = bytes(data)
    n = len(data)
    if n < 4:
        raise ValueError(RTCP_TOO_SHORT)
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < n:
        if n - pos < 4:
            raise ValueError(RTCP_TOO_SHORT)
        b0, packet_type, words = struct.unpack_from("!BBH", data, pos)
        if b0 >> 6 != 2:
            raise ValueError(RTCP_WRONG_VERSION)
        end = pos + 4 + 4 * words
        if end > n:
            raise ValueError(RTCP_TRUNCATED)
        body_end = end
        if b0 & 0x20:
            pad = data[end - 1]
            if pad == 0 or pad > end - pos - 4:
                raise ValueError(RTCP_PADDING_INVALID)
            body_end -= pad
        packets.append(
            _parse_packet(data[pos:end], data[pos + 4 : body_end], b0 & 0x1F, packet_type)
        )
        pos = end
    return packets


def iter_rtcp(data: bytes | bytearray) -> Iterator[RtcpPacket | None]:
    """The packets of a compound RTCP packet, one at a time, never raising.

    A packet whose body is malformed (a REMB announcing more SSRCs than it carries, a truncated
    report block...) is yielded as None and the walk goes on with the next one; when the framing
    itself is broken (wrong version, a length past the end, bad padding) a None ends the walk,
    since nothing after it can be located. Callers count the Nones.
    """
    data = bytes(data)
    n = len(data)
    pos = 0
    while pos < n:
        if n - pos < 4:
            yield None
            return
        b0, packet_type, words = _RTCP_HEADER.unpack_from(data, pos)
        end = pos + 4 + 4 * words
        if b0 >> 6 != 2 or end > n:
            yield None
            return
        body_end = end
        if b0 & 0x20:
            pad = data[end - 1]
            if pad == 0 or pad > end - pos - 4:
                yield None
                return
            body_end -= pad
        try:
            yield _parse_packet(data[pos:end], data[pos + 4 : body_end], b0 & 0x1F, packet_type)
        except (ValueError, struct.error):
            yield None
        pos = end
