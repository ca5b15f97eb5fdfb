"""Hypothesis strategies for the wire formats: well-formed RTP/RTCP packets built field by
field (so a test knows what they hold), and damaged variants of them (flipped, cut, extended),
which reach far deeper into a parser than uniformly random bytes."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hypothesis import strategies as st

from sfu.rtp import (
    ABS_SEND_TIME_URI,
    AUDIO_LEVEL_URI,
    MID_URI,
    ONE_BYTE_PROFILE,
    TRANSPORT_CC_URI,
    TWO_BYTE_PROFILE,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
URIS = (MID_URI, ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, TRANSPORT_CC_URI, "urn:x:a", "urn:x:b")


@dataclass(frozen=True)
class Rtp:
    """A well-formed RTP packet and what it holds."""

    data: bytes
    padding: bool
    marker: bool
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...]
    profile: int | None  # None: no extension block
    block: bytes  # the extension elements and their padding (without the 4-byte header)
    extensions: tuple[tuple[int, bytes], ...]  # what a receiver reads from the block
    payload: bytes
    padding_bytes: bytes  # RTP padding, count byte included

    @property
    def header_length(self) -> int:
        return 12 + 4 * len(self.csrcs) + (4 + len(self.block) if self.profile is not None else 0)


@st.composite
def extension_blocks(
    draw: st.DrawFn, ids: list[int] | None = None
) -> tuple[int, bytes, tuple[tuple[int, bytes], ...]]:
    """(profile, block, elements) in the one-byte, two-byte or an unknown form (RFC 8285).

    Element ids are drawn from `ids` when given (ids a form cannot carry are left out)."""
    form = draw(st.sampled_from(["one", "one", "two", "unknown"]))
    body = bytearray()
    elements: list[tuple[int, bytes]] = []
    if form == "unknown":
        profile = draw(u16.filter(lambda p: p != ONE_BYTE_PROFILE and p & 0xFFF0 != 0x1000))
        body += draw(st.binary(max_size=24))
    else:
        one = form == "one"
        profile = ONE_BYTE_PROFILE if one else TWO_BYTE_PROFILE | draw(st.integers(0, 15))
        limit = 14 if one else 255
        choices = [i for i in (ids or []) if 1 <= i <= limit]
        xid_strategy = st.integers(1, limit)
        if choices:  # mostly the given ids, sometimes any other
            xid_strategy = st.one_of(*[st.sampled_from(choices)] * 3, xid_strategy)
        for _ in range(draw(st.integers(0, 5))):
            body += bytes(draw(st.integers(0, 2)))  # padding bytes between elements
            xid = draw(xid_strategy)
            value = draw(st.binary(min_size=1 if one else 0, max_size=16 if one else 20))
            body += bytes([(xid << 4) | (len(value) - 1)]) if one else bytes([xid, len(value)])
            body += value
            elements.append((xid, value))
        if one and draw(st.integers(0, 9)) == 0:
            body += b"\xf0" + draw(st.binary(max_size=6))  # id 15: the rest is not read
    body += bytes(-len(body) % 4)
    return profile, bytes(body), tuple(elements)


@st.composite
def rtp_packets(
    draw: st.DrawFn, ids: list[int] | None = None, extension: bool | None = None
) -> Rtp:
    csrcs = tuple(draw(st.lists(u32, max_size=3)))
    profile: int | None = None
    block = b""
    elements: tuple[tuple[int, bytes], ...] = ()
    if extension if extension is not None else draw(st.booleans()):
        profile, block, elements = draw(extension_blocks(ids))
    payload = draw(st.binary(max_size=40))
    padding_bytes = b""
    if draw(st.integers(0, 3)) == 0:
        count = draw(st.integers(1, 20))
        padding_bytes = draw(st.binary(min_size=count - 1, max_size=count - 1)) + bytes([count])
    marker = draw(st.booleans())
    pt = draw(st.integers(0, 127))
    seq, ts, ssrc = draw(u16), draw(u32), draw(u32)
    b0 = 0x80 | (0x20 if padding_bytes else 0) | (0x10 if profile is not None else 0)
    data = struct.pack("!BBHII", b0 | len(csrcs), (0x80 if marker else 0) | pt, seq, ts, ssrc)
    data += b"".join(struct.pack("!I", c) for c in csrcs)
    if profile is not None:
        data += struct.pack("!HH", profile, len(block) // 4) + block
    data += payload + padding_bytes
    return Rtp(
        data=data, padding=bool(padding_bytes), marker=marker, payload_type=pt,
        sequence_number=seq, timestamp=ts, ssrc=ssrc, csrcs=csrcs, profile=profile, block=block,
        extensions=elements, payload=payload, padding_bytes=padding_bytes,
    )


@st.composite
def damaged(draw: st.DrawFn, packets: st.SearchStrategy[bytes]) -> bytes:
    """A packet from `packets` with a few bytes flipped, cut off or added."""
    data = bytearray(draw(packets))
    for _ in range(draw(st.integers(1, 3))):
        operation = draw(st.sampled_from(["flip", "set", "cut", "extend", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if operation == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "set" and data:
            data[at] = draw(st.sampled_from([0, 1, 0x0F, 0x10, 0x20, 0x7F, 0x80, 0xF0, 0xFF]))
        elif operation == "cut":
            del data[at:]
        elif operation == "extend":
            data += draw(st.binary(min_size=1, max_size=8))
        elif operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif operation == "delete" and data:
            del data[at : at + draw(st.integers(1, 4))]
    return bytes(data)


def version2(data: bytes) -> bytes:
    """`data` with the version bits of its first byte set to 2."""
    return bytes([0x80 | (data[0] & 0x3F)]) + data[1:] if data else data


# Raw bytes that look like RTP or RTCP often enough to get past the version check.
raw_packets = st.binary(max_size=80).map(version2) | st.binary(max_size=80)
