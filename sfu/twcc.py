"""Transport-wide congestion control feedback (transport-cc), the way Chrome/libwebrtc speak it.

draft-holmer-rmcat-transport-wide-cc-extensions-01: every RTP packet a browser sends on a
transport carries a 16-bit transport-wide sequence number in a header extension (section 2);
the receiver answers with RTCP transport feedback (RTPFB, PT 205, FMT 15, section 3.1) saying,
for each sequence number, whether the packet arrived and when. Chrome's send-side bandwidth
estimation (GoogCC) runs on that feedback, so the SFU sends it to every browser publisher that
negotiated the extension.

- `transport_sequence_number` reads the sequence number out of an RTP packet (hot path).
- `TransportCcFeedback` is one feedback packet: `bytes(fb)` and `TransportCcFeedback.parse`.
- `TransportCcRecorder` records arrival times and builds the feedback, following what
  libwebrtc's RemoteEstimatorProxy does in its periodic mode.

Wire facts used here (section numbers are the draft's):

- Packet status symbols (3.1.1): 0 not received, 1 received with a small delta (1 byte,
  0..255 ticks), 2 received with a large or negative delta (2 bytes, signed), 3 reserved.
- Packet chunks (3.1.2-3.1.4), 16 bits each: a run-length chunk (T=0, 2-bit symbol, 13-bit
  run of up to 8191), a 1-bit status vector (T=1, S=0, 14 symbols, 0 or 1 only; the draft's
  prose swaps the bit meaning but its example and libwebrtc use 1 = received) or a 2-bit status
  vector (T=1, S=1, 7 symbols). Chunks are chosen greedily the way libwebrtc chooses them, so
  what we write re-encodes byte for byte like Chrome's own feedback.
- Receive deltas (3.1.5) count 250 us ticks; the first one is relative to the reference time
  (24 bits, 64 ms units), each later one to the previous received packet. A delta outside int16
  needs a new feedback packet.
- Padding: as libwebrtc writes it, the P bit is set and the last padding byte holds the count
  (RFC 3550 section 6.4.1); `parse` also accepts the draft's plain zero padding.

Pure: no I/O, no asyncio, no aiortc; times are passed in by the caller (integer microseconds
from one monotonic clock).
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass

from sfu.rtp import TRANSPORT_CC_URI as TRANSPORT_CC_URI
from sfu.rtp import find_extension

RTCP_RTPFB = 205
TRANSPORT_CC_FMT = 15

DELTA_TICK_US = 250
"""One receive delta tick (section 3.1.5)."""
REFERENCE_TICK_US = 64_000
"""One reference time unit (section 3.1)."""
MAX_STATUS_COUNT = 0xFFFF
"""Most packets one feedback can report (16-bit packet status count)."""

# Fixed error messages (tests compare them verbatim).
TWCC_TOO_SHORT = "RTCP packet is too short"
TWCC_WRONG_VERSION = "RTCP packet has wrong version"
TWCC_NOT_TRANSPORT_CC = "RTCP packet is not transport-cc feedback"
TWCC_TRUNCATED = "RTCP packet is truncated"
TWCC_NOT_SINGLE = "RTCP data is not a single packet"
TWCC_PADDING_INVALID = "RTCP padding is invalid"
TWCC_FEEDBACK_TRUNCATED = "transport-cc feedback is truncated"
TWCC_NO_PACKETS = "transport-cc feedback reports no packets"
TWCC_RESERVED_SYMBOL = "transport-cc feedback uses the reserved status symbol"
TWCC_TRAILING_BYTES = "transport-cc feedback has trailing bytes"
TWCC_SSRC_RANGE = "transport-cc SSRC is out of range"
TWCC_BASE_RANGE = "transport-cc base sequence number is out of range"
TWCC_REFERENCE_RANGE = "transport-cc reference time is out of range"
TWCC_COUNT_RANGE = "transport-cc feedback packet count is out of range"
TWCC_STATUS_COUNT_RANGE = "transport-cc feedback must report 1 to 65535 packets"
TWCC_DELTA_RANGE = "transport-cc receive delta is out of range"

_HEADER = struct.Struct("!BBHIIHHI")  # RTCP header, SSRCs, base, count, reference|fb count
_HEADER_SIZE = _HEADER.size  # 20

_RUN_MAX = 0x1FFF  # longest run of one run-length chunk
_ONE_BIT_MAX = 14  # symbols in a 1-bit status vector
_TWO_BIT_MAX = 7  # symbols in a 2-bit status vector
_REFERENCE_MOD = 1 << 24
_REFERENCE_HALF = 1 << 23
_SEQ_MOD = 1 << 16
_STALE_RESTART = 64  # consecutive packets older than the window that mean "sender restarted"


# --------------------------------------------------------------------------------------------
# RTP header extension (section 2.2; RFC 8285 framing)


def transport_sequence_number(packet: bytes | bytearray, ext_id: int) -> int | None:
    """The transport-wide sequence number (0..65535) an RTP packet carries in extension `ext_id`.

    Reads the RFC 8285 header extension block, one-byte (profile 0xBEDE, ids 1..14) or two-byte
    (profile 0x100X, ids 1..255) form, and returns the first two value bytes of element `ext_id`
    as a big-endian integer (draft section 2.2). Values of 2 bytes (draft-01) and 4 bytes
    (transport-wide-cc-02, sequence number first) are accepted.

    Returns None when the packet has no such element, when the element has another length, or
    when the packet is malformed (not RTP version 2, truncated CSRC list or extension block).
    Never raises, whatever the bytes; runs once per received packet, so it builds no objects.
    """
    found = find_extension(packet, ext_id)
    if found is None:
        return None
    at, length = found
    if length != 2 and length != 4:
        return None
    return (packet[at] << 8) | packet[at + 1]


# --------------------------------------------------------------------------------------------
# Packet status chunks (sections 3.1.2 - 3.1.4)


class _ChunkWriter:
    """Packs status symbols into chunks, greedily, as libwebrtc does.

    Symbols collect in an open group that can always be written as one chunk: any 7 symbols
    (2-bit vector), up to 14 symbols without a 2 (1-bit vector), or up to 8191 equal symbols
    (run length). When the next symbol would break that, the group is closed: a run of equal
    symbols becomes a run-length chunk, 14 symbols a 1-bit vector, and otherwise the first 7
    go out as a 2-bit vector and the rest stay open.
    """

    __slots__ = ("_count", "_group", "_large", "_same", "chunks")

    def __init__(self) -> None:
        self.chunks: list[int] = []
        self._group: list[int] = []  # the open group's first min(count, 14) symbols
        self._count = 0  # symbols in the open group
        self._same = True  # the open group's symbols are all equal
        self._large = False  # the open group holds a 2

    def add(self, symbol: int, times: int = 1) -> None:
        """Append `symbol` (0, 1 or 2) `times` times."""
        while times > 0:
            group = self._group
            count = self._count
            if count == 0 or (self._same and group[0] == symbol):
                # Growing a run: the group stays one chunk up to the run-length limit.
                take = min(times, _RUN_MAX - count)
                if take == 0:
                    self._close()
                    continue
                room = _ONE_BIT_MAX - len(group)
                if room > 0:
                    group.extend([symbol] * min(room, take))
                self._count = count + take
                self._large = self._large or symbol == 2
                times -= take
                continue
            n = count + 1
            if n <= _TWO_BIT_MAX or (n <= _ONE_BIT_MAX and not self._large and symbol != 2):
                group.append(symbol)
                self._count = n
                self._same = False
                self._large = self._large or symbol == 2
                times -= 1
            else:
                self._close()

    def _close(self) -> None:
        group = self._group
        if self._same:
            self.chunks.append((group[0] << 13) | self._count)
            rest: list[int] = []
        elif self._count == _ONE_BIT_MAX:
            self.chunks.append(_one_bit_chunk(group))
            rest = []
        else:
            self.chunks.append(_two_bit_chunk(group[:_TWO_BIT_MAX]))
            rest = group[_TWO_BIT_MAX : self._count]
        self._group = rest
        self._count = len(rest)
        self._same = all(s == rest[0] for s in rest)
        self._large = 2 in rest

    def chunk_count(self) -> int:
        """Chunks written so far, the open group counting as one."""
        return len(self.chunks) + (1 if self._count else 0)

    def finish(self) -> list[int]:
        """All chunks, the open group encoded as the last one (the writer is left as is)."""
        if not self._count:
            return list(self.chunks)
        group = self._group
        if self._same:
            last = (group[0] << 13) | self._count
        elif self._count <= _TWO_BIT_MAX:
            last = _two_bit_chunk(group)
        else:
            last = _one_bit_chunk(group)
        return [*self.chunks, last]

    def state(self) -> tuple[int, list[int], int, bool, bool]:
        return len(self.chunks), list(self._group), self._count, self._same, self._large

    def restore(self, state: tuple[int, list[int], int, bool, bool]) -> None:
        emitted, self._group, self._count, self._same, self._large = state
        del self.chunks[emitted:]


def _one_bit_chunk(symbols: list[int]) -> int:
    chunk = 0x8000
    for k, s in enumerate(symbols):
        chunk |= s << (13 - k)
    return chunk


def _two_bit_chunk(symbols: list[int]) -> int:
    chunk = 0xC000
    for k, s in enumerate(symbols):
        chunk |= s << (12 - 2 * k)
    return chunk


def _decode_chunk(chunk: int, room: int) -> list[int]:
    """The symbols of one chunk, at most `room` of them (the rest is padding)."""
    if not chunk & 0x8000:
        return [(chunk >> 13) & 3] * min(chunk & _RUN_MAX, room)
    if not chunk & 0x4000:
        return [(chunk >> (13 - k)) & 1 for k in range(min(_ONE_BIT_MAX, room))]
    return [(chunk >> (12 - 2 * k)) & 3 for k in range(min(_TWO_BIT_MAX, room))]


def _padded(size: int) -> int:
    return (size + 3) & ~3


# --------------------------------------------------------------------------------------------
# The feedback message (section 3.1)


@dataclass(slots=True)
class TransportCcFeedback:
    """One transport-wide feedback message: RTCP RTPFB (PT 205), FMT 15 (draft section 3.1).

    - `sender_ssrc`, `media_ssrc`: 32-bit SSRCs (media SSRC is informational; Chrome ignores it).
    - `base_sequence_number`: 16-bit transport-wide sequence number of `deltas[0]`.
    - `reference_time`: signed 24-bit (-2**23 .. 2**23-1), units of 64 ms; wraps.
    - `feedback_packet_count`: 8-bit counter of feedback packets sent; wraps.
    - `deltas`: one entry per sequence number from the base on (1..65535 entries):
      the receive delta in 250 us ticks (-32768..32767; the first is relative to
      reference_time * 64 ms, each later one to the previous received packet), or None
      for "not received".

    `bytes(fb)` raises ValueError (fixed messages above) when a field is out of range.
    """

    sender_ssrc: int
    media_ssrc: int
    base_sequence_number: int
    reference_time: int
    feedback_packet_count: int
    deltas: list[int | None]

    def __bytes__(self) -> bytes:
        if not (0 <= self.sender_ssrc <= 0xFFFFFFFF and 0 <= self.media_ssrc <= 0xFFFFFFFF):
            raise ValueError(TWCC_SSRC_RANGE)
        if not 0 <= self.base_sequence_number <= 0xFFFF:
            raise ValueError(TWCC_BASE_RANGE)
        if not -_REFERENCE_HALF <= self.reference_time < _REFERENCE_HALF:
            raise ValueError(TWCC_REFERENCE_RANGE)
        if not 0 <= self.feedback_packet_count <= 0xFF:
            raise ValueError(TWCC_COUNT_RANGE)
        if not 1 <= len(self.deltas) <= MAX_STATUS_COUNT:
            raise ValueError(TWCC_STATUS_COUNT_RANGE)
        writer = _ChunkWriter()
        body = bytearray()
        lost = 0
        for delta in self.deltas:
            if delta is None:
                lost += 1
                continue
            if lost:
                writer.add(0, lost)
                lost = 0
            if 0 <= delta <= 0xFF:
                writer.add(1)
                body.append(delta)
            elif -0x8000 <= delta <= 0x7FFF:
                writer.add(2)
                body += (delta & 0xFFFF).to_bytes(2, "big")
            else:
                raise ValueError(TWCC_DELTA_RANGE)
        if lost:
            writer.add(0, lost)
        chunks = writer.finish()
        size = _HEADER_SIZE + 2 * len(chunks) + len(body)
        pad = _padded(size) - size
        header = _HEADER.pack(
            (0xA0 if pad else 0x80) | TRANSPORT_CC_FMT,  # V=2, P when padded
            RTCP_RTPFB,
            (size + pad) // 4 - 1,
            self.sender_ssrc,
            self.media_ssrc,
            self.base_sequence_number,
            len(self.deltas),
            ((self.reference_time % _REFERENCE_MOD) << 8) | self.feedback_packet_count,
        )
        tail = bytes(pad - 1) + bytes((pad,)) if pad else b""
        return header + struct.pack(f"!{len(chunks)}H", *chunks) + bytes(body) + tail

    @classmethod
    def parse(cls, data: bytes | bytearray) -> TransportCcFeedback:
        """Parse exactly one transport-cc RTCP packet (not a compound packet).

        Padding may be RTCP padding (P bit, RFC 3550 section 6.4.1) or up to 3 zero bytes after
        the deltas (draft section 3.1). Symbols past the packet status count (the tail of the
        last vector chunk) are ignored, as libwebrtc does.

        Raises ValueError with one of the fixed TWCC_* messages: too short, wrong version, not
        PT 205 / FMT 15, truncated or not a single packet, bad padding, no packets reported,
        chunks or deltas cut short, the reserved symbol 3, trailing bytes.
        """
        data = bytes(data)
        n = len(data)
        if n < 4:
            raise ValueError(TWCC_TOO_SHORT)
        b0, packet_type, words = struct.unpack_from("!BBH", data)
        if b0 >> 6 != 2:
            raise ValueError(TWCC_WRONG_VERSION)
        if packet_type != RTCP_RTPFB or b0 & 0x1F != TRANSPORT_CC_FMT:
            raise ValueError(TWCC_NOT_TRANSPORT_CC)
        end = 4 + 4 * words
        if end > n:
            raise ValueError(TWCC_TRUNCATED)
        if end < n:
            raise ValueError(TWCC_NOT_SINGLE)
        if b0 & 0x20:
            pad = data[end - 1]
            if pad == 0 or pad > end - 4:
                raise ValueError(TWCC_PADDING_INVALID)
            end -= pad
        if end < _HEADER_SIZE + 2:  # fixed fields and one chunk
            raise ValueError(TWCC_FEEDBACK_TRUNCATED)
        _b0, _pt, _w, sender, media, base, count, word = _HEADER.unpack_from(data)
        if count == 0:
            raise ValueError(TWCC_NO_PACKETS)
        reference = word >> 8
        if reference >= _REFERENCE_HALF:
            reference -= _REFERENCE_MOD
        symbols: list[int] = []
        i = _HEADER_SIZE
        while len(symbols) < count:
            if i + 2 > end:
                raise ValueError(TWCC_FEEDBACK_TRUNCATED)
            symbols += _decode_chunk((data[i] << 8) | data[i + 1], count - len(symbols))
            i += 2
        deltas: list[int | None] = []
        for symbol in symbols:
            if symbol == 0:
                deltas.append(None)
            elif symbol == 1:
                if i + 1 > end:
                    raise ValueError(TWCC_FEEDBACK_TRUNCATED)
                deltas.append(data[i])
                i += 1
            elif symbol == 2:
                if i + 2 > end:
                    raise ValueError(TWCC_FEEDBACK_TRUNCATED)
                value = (data[i] << 8) | data[i + 1]
                deltas.append(value - 0x10000 if value & 0x8000 else value)
                i += 2
            else:
                raise ValueError(TWCC_RESERVED_SYMBOL)
        if end - i > 3:
            raise ValueError(TWCC_TRAILING_BYTES)
        return cls(sender, media, base, reference, word & 0xFF, deltas)

    def arrival_times(self) -> list[tuple[int, int]]:
        """(sequence number, arrival time in us) of each packet reported received, in order.

        Times are on the feedback sender's clock, counted from its reference time epoch:
        reference_time * 64 ms plus the running sum of the deltas. The reference time wraps
        every 2**24 * 64 ms (about 12.4 days); compare feedbacks modulo that.
        """
        t = self.reference_time * REFERENCE_TICK_US
        base = self.base_sequence_number
        out: list[tuple[int, int]] = []
        for k, delta in enumerate(self.deltas):
            if delta is not None:
                t += delta * DELTA_TICK_US
                out.append(((base + k) & 0xFFFF, t))
        return out


# --------------------------------------------------------------------------------------------
# The receiver side (what libwebrtc's RemoteEstimatorProxy does in periodic mode)


def _ticks(us: int) -> int:
    """`us` in 250 us ticks, rounded to nearest, halves away from zero (as libwebrtc rounds)."""
    if us >= 0:
        return (us + DELTA_TICK_US // 2) // DELTA_TICK_US
    return -((DELTA_TICK_US // 2 - us) // DELTA_TICK_US)


class TransportCcRecorder:
    """Arrival times of received packets by transport-wide sequence number; builds feedback.

    One recorder per publisher transport (the sequence number is transport-wide: audio, video,
    RTX and padding-only probe packets all count). Feed it every RTP packet that carries the
    extension with `on_packet`; call `feedback` periodically and send what it returns.

    Behaviour (after libwebrtc's RemoteEstimatorProxy):

    - 16-bit sequence numbers are unwrapped against the highest one seen; a duplicate keeps its
      first arrival time.
    - Each feedback starts at the lowest sequence number not yet reported and runs to the
      highest received. A late packet below what was already reported moves that start back
      to itself: the next feedback covers it and re-reports the packets after it as they
      stand, received ones as received with the same times (so no packet reported received is
      ever reported lost). The draft (3.1.1) would instead mark those "not received"; either
      way Chrome ignores them, as it drops a packet from its send history once it is reported
      received.
    - The reference time is that of the first received packet in the feedback, rounded down to
      64 ms; the first delta is relative to it and each later delta to the previous received
      packet, rounding errors not accumulating. A delta outside int16 (about +-8.19 s), a
      feedback reaching `max_statuses` packets or `max_packet_size` bytes starts a new
      feedback packet; every feedback reports at least one received packet.
    - Memory is two fixed arrays of `window` entries. A packet more than `window` ahead of the
      highest one seen, or `_STALE_RESTART` packets in a row that are too old to record, mean
      the sender restarted its numbering (or is hostile): the recorder starts afresh there,
      dropping what it had not reported, and counts it in `restarts`. Nothing loops over or
      allocates for the gap.
    - Packets up to `window` below the first one are still recorded (reordering at the start).
      `feedback(now_us)` forgets reported packets that arrived more than `history_us` before
      `now_us` (libwebrtc's 500 ms back window), a loss going with the received packet after
      it; a packet arriving later than that is counted in `stale_packets` and not reported.
    """

    __slots__ = (
        "_arrivals",
        "_begin",
        "_end",
        "_feedback_count",
        "_history_us",
        "_max_packet_size",
        "_max_statuses",
        "_stale_run",
        "_start",
        "_tags",
        "_window",
        "duplicate_packets",
        "media_ssrc",
        "restarts",
        "sender_ssrc",
        "stale_packets",
    )

    def __init__(
        self,
        sender_ssrc: int,
        media_ssrc: int = 0,
        *,
        window: int = 4096,
        history_us: int = 500_000,
        max_packet_size: int = 1200,
        max_statuses: int = MAX_STATUS_COUNT,
    ) -> None:
        """`sender_ssrc`: our RTCP SSRC on the transport; `media_ssrc`: any SSRC the publisher
        sends (informational). `window` (16..32768): sequence numbers remembered.
        `history_us` (>= 0): how long reported arrivals stay re-reportable for late packets.
        `max_packet_size` (64..262144): bytes per RTCP packet, padding included.
        `max_statuses` (1..65535): packets per feedback. ValueError when out of range."""
        if not (0 <= sender_ssrc <= 0xFFFFFFFF and 0 <= media_ssrc <= 0xFFFFFFFF):
            raise ValueError(TWCC_SSRC_RANGE)
        if not 16 <= window <= 1 << 15:
            raise ValueError("transport-cc window must be 16 to 32768")
        if history_us < 0:
            raise ValueError("transport-cc history must not be negative")
        if not 64 <= max_packet_size <= 1 << 18:
            raise ValueError("transport-cc max packet size must be 64 to 262144 bytes")
        if not 1 <= max_statuses <= MAX_STATUS_COUNT:
            raise ValueError(TWCC_STATUS_COUNT_RANGE)
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        self._window = window
        self._history_us = history_us
        self._max_packet_size = max_packet_size
        self._max_statuses = max_statuses
        # Ring buffers indexed by unwrapped sequence number % window. A slot holds a packet
        # only while its tag equals that sequence number and begin <= it < end; unwrapped
        # numbers only grow (a restart continues above the old end), so stale tags never match.
        self._tags = array("q", [-1]) * window
        self._arrivals = array("q", [0]) * window
        self._begin = 0  # lowest sequence number still remembered
        self._end = 0  # highest received + 1; 0 until the first packet
        self._start = 0  # lowest sequence number not yet reported
        self._stale_run = 0
        self._feedback_count = 0
        self.restarts = 0
        self.stale_packets = 0
        self.duplicate_packets = 0

    @property
    def window(self) -> int:
        return self._window

    @property
    def feedback_packet_count(self) -> int:
        """The 8-bit count the next feedback packet will carry."""
        return self._feedback_count

    def on_packet(self, sequence_number: int, arrival_us: int) -> None:
        """Record that the packet with this 16-bit transport-wide sequence number arrived at
        `arrival_us` (integer microseconds, monotonic clock, taken as early as possible).
        Constant time; duplicates and packets too old to report are counted and ignored."""
        seq16 = sequence_number & 0xFFFF
        end = self._end
        if not end:
            self._restart(seq16 + _SEQ_MOD, arrival_us)
            return
        diff = (seq16 - end + 1) & 0xFFFF  # against the highest received, end - 1
        if diff >= 0x8000:
            diff -= _SEQ_MOD
        seq = end - 1 + diff
        window = self._window
        if diff > 0:
            if diff > window:
                self.restarts += 1
                self._restart(end + ((seq16 - end) & 0xFFFF), arrival_us)
                return
            self._end = seq + 1
            low = seq + 1 - window
            if self._begin < low:
                self._begin = low
                if self._start < low:
                    self._start = low
            self._stale_run = 0
            i = seq % window
            self._tags[i] = seq
            self._arrivals[i] = arrival_us
            return
        if seq < self._begin:
            if self._stale_run + 1 >= _STALE_RESTART:
                self.restarts += 1
                self._restart(end + ((seq16 - end) & 0xFFFF), arrival_us)
                return
            self._stale_run += 1
            self.stale_packets += 1
            return
        self._stale_run = 0
        i = seq % window
        if self._tags[i] == seq:
            self.duplicate_packets += 1
            return
        self._tags[i] = seq
        self._arrivals[i] = arrival_us
        if seq < self._start:
            self._start = seq

    def _restart(self, seq: int, arrival_us: int) -> None:
        # Packets up to a window below the first one may still come (reordering at the start);
        # nothing recorded before lies in that range, since a restart lands above it.
        self._begin = seq - self._window + 1
        self._start = seq
        self._end = seq + 1
        self._stale_run = 0
        i = seq % self._window
        self._tags[i] = seq
        self._arrivals[i] = arrival_us

    def build(self, now_us: int) -> list[TransportCcFeedback]:
        """The feedback messages covering everything received since the last call (late
        packets included, see the class docstring); [] when nothing is new. `now_us` is the
        current time on the arrival clock, used to forget old history."""
        out: list[TransportCcFeedback] = []
        if not self._end:
            return out
        while self._start < self._end:
            fb, self._start = self._build_one(self._start)
            if fb is not None:
                out.append(fb)
        self._forget(now_us - self._history_us)
        return out

    def feedback(self, now_us: int) -> list[bytes]:
        """`build(now_us)` serialized: one RTCP packet (bytes, at most `max_packet_size`) per
        feedback message, in order. Send each on the publisher's transport (SRTCP)."""
        return [bytes(fb) for fb in self.build(now_us)]

    def _build_one(self, start: int) -> tuple[TransportCcFeedback | None, int]:
        """One feedback from `start` on, and the sequence number the next one starts at."""
        tags = self._tags
        arrivals = self._arrivals
        window = self._window
        max_statuses = self._max_statuses
        max_size = self._max_packet_size
        writer = _ChunkWriter()
        deltas: list[int | None] = []
        base = start
        size = _HEADER_SIZE  # header and deltas; chunks are counted by the writer
        reference = 0
        last_us = 0
        lost = 0  # not-received packets since the last one added
        next_start = self._end
        first = True
        for seq in range(start, self._end):
            i = seq % window
            if tags[i] != seq:
                lost += 1
                continue
            arrival = arrivals[i]
            if first:
                if lost >= max_statuses:  # drop the oldest losses rather than stall
                    lost = max_statuses - 1
                    base = seq - lost
                reference = arrival // REFERENCE_TICK_US
                last_us = reference * REFERENCE_TICK_US
            delta = _ticks(arrival - last_us)  # 0..256 for the first packet
            if not -0x8000 <= delta <= 0x7FFF or len(deltas) + lost >= max_statuses:
                next_start = seq - lost
                break
            symbol = 1 if 0 <= delta <= 0xFF else 2
            if first:
                if lost:
                    writer.add(0, lost)
                writer.add(symbol)
            else:
                saved = writer.state()
                if lost:
                    writer.add(0, lost)
                writer.add(symbol)
                if _padded(size + symbol + 2 * writer.chunk_count()) > max_size:
                    writer.restore(saved)
                    next_start = seq - lost
                    break
            if lost:
                deltas.extend([None] * lost)
                lost = 0
            deltas.append(delta)
            size += symbol  # a small delta takes 1 byte, a large one 2
            last_us += delta * DELTA_TICK_US
            first = False
        if first:  # nothing received from start on (cannot happen: end - 1 is received)
            return None, self._end
        fb = TransportCcFeedback(
            self.sender_ssrc,
            self.media_ssrc,
            base & 0xFFFF,
            (reference + _REFERENCE_HALF) % _REFERENCE_MOD - _REFERENCE_HALF,
            self._feedback_count,
            deltas,
        )
        self._feedback_count = (self._feedback_count + 1) & 0xFF
        return fb, next_start

    def _forget(self, limit_us: int) -> None:
        """Stop remembering reported packets that arrived at or before `limit_us`, oldest
        first; a loss goes with the received packet after it (the one that revealed it)."""
        tags = self._tags
        arrivals = self._arrivals
        window = self._window
        b = self._begin
        stop = self._start  # everything below has been reported; end - 1 is received
        while b < stop:
            r = b
            while r < stop and tags[r % window] != r:
                r += 1
            if r == stop or arrivals[r % window] > limit_us:
                break
            b = r + 1
        self._begin = b
