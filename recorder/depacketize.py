"""RTP packets of one track in, whole encoded frames out: the first step of recording a call
without transcoding.

The SFU hands `FrameAssembler.push` the plain (decrypted) RTP packets it already forwards; the
frames that come out are what a muxer (PyAV, WebM/Matroska) writes as they are:

- VP8 (RFC 7741): the payload descriptor (section 4.2) is removed from every packet and the
  rest concatenated: the raw VP8 frame of RFC 6386. A frame starts at a packet with S=1 and
  partition index 0 and ends at the marker bit; it is a key frame when the P bit of the frame
  tag in its first byte is 0 (RFC 7741 section 4.3, RFC 6386 section 9.1).
- H.264 (RFC 6184, packetization mode 1): single NAL unit packets (section 5.6), STAP-A split
  (section 5.7.1) and FU-A reassembled (section 5.8), written as an Annex B byte stream
  (00 00 00 01 before each NAL unit). An access unit is every packet of one timestamp up to
  the marker bit; it is a key frame when it holds an IDR slice (NAL unit type 5).
- Opus (RFC 7587): every packet is a frame, its payload kept as it is.

A small jitter buffer keyed by the extended sequence number (RFC 3550 appendix A.1) puts
packets back in order. Frames come out in sequence order, each once whole, with a timestamp
that only ever increases. What a decoder cannot use is never emitted: a video frame missing a
packet, every frame after a loss until the next key frame, and everything before the track's
first key frame.

Giving up on a gap (a packet that has not come): the buffer waits for it until the newest
packet is `reorder_window` packets past it, or its RTP timestamp is more than `max_delay`
seconds past the last packet handled before the gap, or `flush` is called. Then the missing
packets count as lost, the frame they cut is dropped and video waits for a key frame. A
packet arriving after its place was given up (or handled) is late and dropped.

A publisher that reconnects comes back with a new SSRC (or, rarely, the same SSRC with new
sequence numbers: a jump past RFC 3550's MAX_DROPOUT confirmed by a next packet in sequence).
The assembler then emits what the old source left complete, starts over with new sequence and
timestamp bases, and waits for a key frame. Timestamps stay monotonic across the change: the
new source's first frame is placed one frame interval (the last interval seen between two
emitted frames) after the last emitted frame, and its later frames keep their own spacing.
The real wall-clock gap of a reconnect is for the muxer to restore from RTCP sender reports.

Pure and synchronous: no I/O, no asyncio, no aiortc. `push` never raises on packet bytes:
malformed packets are counted and dropped.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

from sfu.rtp import RTP_SEQ_MOD, RTP_TS_MOD, payload_bounds, vp8_descriptor_length

CODECS = ("vp8", "h264", "opus")
ANNEX_B_START_CODE = b"\x00\x00\x00\x01"

DEFAULT_REORDER_WINDOW = 64
DEFAULT_MAX_DELAY = 1.0  # seconds of RTP time
# RFC 3550 appendix A.1: a larger jump in sequence numbers is a restart, if confirmed.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
# How many handled sequence numbers are remembered to tell a duplicate from a late packet.
HISTORY = 1024
# SSRCs of earlier sources whose stray packets are dropped instead of restarting again.
RETIRED_SSRCS = 8

_H264_STAP_A = 24
_H264_FU_A = 28
_H264_IDR = 5
_H264_SPS = 7
_H264_PPS = 8

_SEQ_TS_SSRC = struct.Struct("!HII")


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One whole encoded frame, ready for a muxer."""

    codec: str  # "vp8", "h264" or "opus"
    # The RTP timestamp unwrapped to 64 bits in the codec's clock, rebased across a source
    # change so that it always increases.
    timestamp: int
    data: bytes  # VP8: the raw frame; H.264: Annex B access unit; Opus: the payload
    keyframe: bool  # VP8 key frame; H.264 access unit with an IDR slice; Opus: always True
    ssrc: int
    sequence_first: int  # extended sequence number of the frame's first packet


@dataclass(slots=True)
class AssemblerCounters:
    """What happened to the packets and frames of one track, for metrics and tests."""

    packets: int = 0  # packets of our payload type with a valid header, duplicates included
    frames: int = 0  # frames emitted
    frames_dropped_incomplete: int = 0  # missing packets, no start, broken FU-A
    frames_dropped_waiting_keyframe: int = 0  # whole, but after a loss or before a key frame
    packets_lost: int = 0  # sequence numbers given up on
    duplicates: int = 0
    late: int = 0  # after their place was given up or handled, or going back in time
    malformed: int = 0  # bad RTP header or payload descriptor
    ignored: int = 0  # other payload types (RTX, FEC...)
    padding: int = 0  # padding-only packets (bandwidth probes): hold a sequence number only
    restarts: int = 0  # a new source (SSRC change, or a sequence jump on the same SSRC)


@dataclass(slots=True)
class _Packet:
    seq: int  # extended
    ts: int  # extended
    marker: bool
    media: bytes  # VP8: after the descriptor; H.264 and Opus: the RTP payload; b"" for padding
    start: bool  # VP8: S=1 and PID 0; H.264: single NAL unit, STAP-A or FU-A start


@dataclass(slots=True)
class _Source:
    """Per-SSRC state: sequence and timestamp bases, the buffer, what is awaited."""

    ssrc: int
    next_seq: int  # every extended sequence number below it was handled or given up
    highest_seq: int
    last_ts: int  # extended timestamp of the latest packet received (unwrap reference)
    highest_ts: int
    buffer: dict[int, _Packet] = field(default_factory=dict)
    handled: set[int] = field(default_factory=set)
    handled_order: deque[int] = field(default_factory=deque)
    anchored: bool = False  # something was handled: earlier packets are late from now on
    last_handled_ts: int | None = None
    waiting_keyframe: bool = True
    offset: int | None = None  # added to extended timestamps; fixed at the first emitted frame
    h264_parameter_sets: bool = False  # an SPS and a PPS were emitted for this source
    cut_ts: int | None = None  # timestamp of the frame last cut by a loss


class FrameAssembler:
    """One incoming RTP stream (one SSRC at a time) -> complete encoded frames in order."""

    def __init__(
        self,
        codec: str,
        *,
        clock_rate: int,
        payload_type: int,
        reorder_window: int = DEFAULT_REORDER_WINDOW,
        max_delay: float = DEFAULT_MAX_DELAY,
    ) -> None:
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}")
        if clock_rate <= 0:
            raise ValueError("clock rate must be positive")
        if not 0 <= payload_type <= 127:
            raise ValueError("payload type must be 0 to 127")
        if reorder_window < 1:
            raise ValueError("reorder window must be at least 1 packet")
        if max_delay <= 0:
            raise ValueError("max delay must be positive")
        self.codec = codec
        self.clock_rate = clock_rate
        self.payload_type = payload_type
        self.reorder_window = reorder_window
        self.max_delay_ticks = max(1, round(max_delay * clock_rate))
        self.counters = AssemblerCounters()
        self._video = codec != "opus"
        self._source: _Source | None = None
        self._retired: deque[int] = deque(maxlen=RETIRED_SSRCS)
        self._pending_jump: tuple[bytes, int] | None = None  # (packet, sequence expected next)
        self._last_emitted: int | None = None
        # Spacing used to place a new source's first frame: 30 fps video, 20 ms audio until
        # two frames have been seen.
        self._interval = clock_rate // 30 if self._video else clock_rate // 50
        self._flushing = False

    # ----------------------------------------------------------------------------------------
    # Public API

    @property
    def waiting_keyframe(self) -> bool:
        """True while video frames are dropped until a keyframe (after a loss or at the start
        of a source): the time to ask the publisher for one (PLI)."""
        return self.codec != "opus" and (self._source is None or self._source.waiting_keyframe)

    def push(self, packet: bytes) -> list[EncodedFrame]:
        """Take one RTP packet; return the frames it completes, in decode order."""
        try:
            start, end = payload_bounds(packet)
        except ValueError:
            self.counters.malformed += 1
            return []
        if packet[1] & 0x7F != self.payload_type:
            self.counters.ignored += 1
            return []
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(packet, 2)
        parsed = self._parse(packet, start, end)
        if parsed is None:  # before anything else: a broken packet never starts a source
            self.counters.malformed += 1
            return []
        out: list[EncodedFrame] = []
        source = self._source
        if source is None or ssrc != source.ssrc:
            if ssrc in self._retired:
                self.counters.late += 1
                return []
            if source is not None:
                out += self._restart()
            source = self._start(ssrc, seq, ts)
        else:
            ext_seq = _unwrap(seq, source.highest_seq, RTP_SEQ_MOD)
            jump = ext_seq - source.highest_seq
            if jump > MAX_DROPOUT or jump < -MAX_MISORDER:
                pending = self._pending_jump
                if pending is None or pending[1] != seq:
                    self._pending_jump = (bytes(packet), (seq + 1) % RTP_SEQ_MOD)
                    self.counters.late += 1
                    return []
                # Two packets in sequence far from the old ones: the same SSRC restarted.
                self.counters.late -= 1  # the first one is taken after all
                self._pending_jump = None
                out += self._restart()
                source = self._start(ssrc, *_SEQ_TS_SSRC.unpack_from(pending[0], 2)[:2])
                first = self._parse(pending[0], *payload_bounds(pending[0]))
                if first is not None:
                    out += self._accept(source, first, *_SEQ_TS_SSRC.unpack_from(pending[0], 2)[:2])
        self._pending_jump = None
        out += self._accept(source, parsed, seq, ts)
        return out

    def flush(self) -> list[EncodedFrame]:
        """Give up every gap and return the frames still whole in the buffer (at the end)."""
        source = self._source
        if source is None:
            return []
        self._flushing = True
        try:
            return self._drain(source)
        finally:
            self._flushing = False

    # ----------------------------------------------------------------------------------------
    # Sources

    def _start(self, ssrc: int, seq: int, ts: int) -> _Source:
        source = _Source(ssrc=ssrc, next_seq=seq, highest_seq=seq, last_ts=ts, highest_ts=ts)
        self._source = source
        return source

    def _restart(self) -> list[EncodedFrame]:
        """Emit what the current source left whole and retire it."""
        out = self.flush()
        if self._source is not None:
            self._retired.append(self._source.ssrc)
            self._source = None
        self.counters.restarts += 1
        return out

    # ----------------------------------------------------------------------------------------
    # Packets

    def _accept(self, source: _Source, parsed: _Packet, seq: int, ts: int) -> list[EncodedFrame]:
        ext_seq = _unwrap(seq, source.highest_seq, RTP_SEQ_MOD)
        ext_ts = _unwrap(ts, source.last_ts, RTP_TS_MOD)
        if ext_seq < 0 or ext_ts < 0:  # before the first packet, across a wrap
            self.counters.late += 1
            return []
        self.counters.packets += 1
        if ext_seq in source.buffer or ext_seq in source.handled:
            self.counters.duplicates += 1
            return []
        if ext_seq < source.next_seq:
            if source.anchored or ext_seq <= source.highest_seq - self.reorder_window:
                self.counters.late += 1
                return []
            source.next_seq = ext_seq  # reordered at the very start: wait for it
        parsed.seq, parsed.ts = ext_seq, ext_ts
        if not parsed.media:
            self.counters.padding += 1
        source.buffer[ext_seq] = parsed
        source.last_ts = ext_ts
        if ext_seq > source.highest_seq:
            source.highest_seq = ext_seq
        if ext_ts > source.highest_ts:
            source.highest_ts = ext_ts
        return self._drain(source)

    def _parse(self, packet: bytes, start: int, end: int) -> _Packet | None:
        """The buffered form of a packet (sequence number and timestamp still to set), or None
        when its payload is malformed."""
        seq = ts = 0
        marker = bool(packet[1] & 0x80)
        payload = packet[start:end]
        if not payload:  # padding only: holds its sequence number, belongs to no frame
            return _Packet(seq, ts, marker, b"", False)
        if self.codec == "vp8":
            at = vp8_descriptor_length(payload)
            if at is None:
                return None
            b0 = payload[0]
            return _Packet(seq, ts, marker, payload[at:], bool(b0 & 0x10) and not b0 & 0x07)
        if self.codec == "h264":
            first = _h264_packet_start(payload)
            if first is None:
                return None
            return _Packet(seq, ts, marker, payload, first)
        return _Packet(seq, ts, marker, payload, True)

    # ----------------------------------------------------------------------------------------
    # The buffer

    def _give_up(self, source: _Source, gap: int) -> bool:
        """Whether to stop waiting for the packet with extended sequence number `gap`."""
        if self._flushing or source.highest_seq - gap >= self.reorder_window:
            return True
        reference = source.last_handled_ts
        if reference is None:
            reference = min(p.ts for p in source.buffer.values()) if source.buffer else 0
        return source.highest_ts - reference > self.max_delay_ticks

    def _handled(self, source: _Source, seq: int, ts: int) -> None:
        packet = source.buffer.pop(seq, None)
        source.handled.add(seq)
        source.handled_order.append(seq)
        if len(source.handled_order) > HISTORY:
            source.handled.discard(source.handled_order.popleft())
        source.anchored = True
        source.last_handled_ts = packet.ts if packet is not None else ts

    def _drain(self, source: _Source) -> list[EncodedFrame]:
        out: list[EncodedFrame] = []
        buffer = source.buffer
        while buffer:
            first = buffer.get(source.next_seq)
            if first is None:
                if not self._give_up(source, source.next_seq):
                    break
                resume = min(buffer)
                self.counters.packets_lost += resume - source.next_seq
                source.next_seq = resume
                source.anchored = True
                source.waiting_keyframe = self._video
                continue
            if not first.media:  # padding
                self._handled(source, first.seq, first.ts)
                source.next_seq += 1
                continue
            if not self._video:
                self._handled(source, first.seq, first.ts)
                source.next_seq += 1
                self._emit(source, out, first.ts, first.media, True, first.seq)
                continue
            run = self._whole_run(source, first)
            if run is None:
                # The frame is cut by a missing packet: wait for it, or drop what is here.
                gap = source.next_seq
                while gap in buffer and buffer[gap].media and buffer[gap].ts == first.ts:
                    gap += 1
                if not self._give_up(source, gap):
                    break
                for seq in range(source.next_seq, gap):
                    self._handled(source, seq, first.ts)
                source.next_seq = gap
                if first.ts != source.cut_ts:  # the rest of a frame already counted
                    self.counters.frames_dropped_incomplete += 1
                source.cut_ts = first.ts
                source.waiting_keyframe = True
                continue
            if not first.start and not source.anchored and not self._give_up(
                source, source.next_seq - 1
            ):
                break  # whole but with no start seen yet: its first packets may still come
            for packet in run:
                self._handled(source, packet.seq, packet.ts)
            source.next_seq = run[-1].seq + 1
            if first.ts == source.cut_ts:
                continue  # the tail of a frame cut by a loss, already counted
            source.cut_ts = None
            self._video_frame(source, out, run)
        return out

    def _whole_run(self, source: _Source, first: _Packet) -> list[_Packet] | None:
        """The packets of the frame at next_seq, up to its marker bit (or the packet before a
        timestamp change or padding), or None while one is missing."""
        run: list[_Packet] = []
        seq = first.seq
        buffer = source.buffer
        while True:
            packet = buffer.get(seq)
            if packet is None:
                return None
            if packet.ts != first.ts or not packet.media:
                return run  # the marker was not set: the next frame has begun
            run.append(packet)
            if packet.marker:
                return run
            seq += 1

    # ----------------------------------------------------------------------------------------
    # Frames

    def _video_frame(self, source: _Source, out: list[EncodedFrame], run: list[_Packet]) -> None:
        if not run[0].start:
            self.counters.frames_dropped_incomplete += 1
            source.waiting_keyframe = True
            return
        if self.codec == "vp8":
            data = b"".join(p.media for p in run)
            keyframe = bool(data) and not data[0] & 0x01  # RFC 6386 9.1: P bit 0
            usable, has_sets = keyframe, False
        else:
            unit = _h264_access_unit([p.media for p in run])
            if unit is None:
                self.counters.frames_dropped_incomplete += 1
                source.waiting_keyframe = True
                return
            data, nal_types = unit
            keyframe = _H264_IDR in nal_types
            has_sets = _H264_SPS in nal_types and _H264_PPS in nal_types
            # A decoder starting here needs the parameter sets too (RFC 6184 section 8.4).
            usable = keyframe and (source.h264_parameter_sets or has_sets)
        if source.waiting_keyframe:
            if not usable:
                self.counters.frames_dropped_waiting_keyframe += 1
                return
            source.waiting_keyframe = False
        if self._emit(source, out, run[0].ts, data, keyframe, run[0].seq) and self.codec == "h264":
            source.h264_parameter_sets |= has_sets

    def _emit(
        self, source: _Source, out: list[EncodedFrame], ts: int, data: bytes, keyframe: bool,
        seq: int,
    ) -> bool:
        last = self._last_emitted
        if source.offset is None:
            source.offset = 0 if last is None else last + self._interval - ts
        timestamp = ts + source.offset
        if last is not None and timestamp <= last:
            self.counters.late += 1  # a sender going back in time: never emitted
            if self._video:
                source.waiting_keyframe = True
            return False
        if last is not None and 0 < timestamp - last <= self.clock_rate:
            self._interval = timestamp - last
        self._last_emitted = timestamp
        self.counters.frames += 1
        out.append(EncodedFrame(self.codec, timestamp, data, keyframe, source.ssrc, seq))
        return True


# --------------------------------------------------------------------------------------------
# Helpers


def _unwrap(value: int, reference: int, modulus: int) -> int:
    """The extended value nearest to `reference` whose low bits are `value` (RFC 3550 A.1)."""
    delta = (value - reference) % modulus
    if delta >= modulus // 2:
        delta -= modulus
    return reference + delta


def _h264_packet_start(payload: bytes) -> bool | None:
    """Whether an H.264 RTP payload (RFC 6184, packetization mode 1) begins a NAL unit (single
    NAL unit, STAP-A, FU-A start), or None when it is malformed or of another mode."""
    n = len(payload)
    nal_type = payload[0] & 0x1F
    if 1 <= nal_type <= 23:
        return True
    if nal_type == _H264_STAP_A:
        return True if _stap_a_units(payload) is not None else None
    if nal_type == _H264_FU_A:
        if n < 3:
            return None
        header = payload[1]
        if header & 0xC0 == 0xC0 or not header & 0x1F:  # start and end together; type 0
            return None
        return bool(header & 0x80)
    return None  # 0, STAP-B, MTAP16, MTAP24, FU-B (interleaved mode) and reserved


def _stap_a_units(payload: bytes) -> list[bytes] | None:
    """The NAL units of a STAP-A (RFC 6184 section 5.7.1), or None when malformed."""
    units: list[bytes] = []
    n = len(payload)
    i = 1
    while i < n:
        if i + 2 > n:
            return None
        size = (payload[i] << 8) | payload[i + 1]
        i += 2
        if size == 0 or i + size > n:
            return None
        units.append(payload[i : i + size])
        i += size
    return units or None


def _h264_access_unit(payloads: list[bytes]) -> tuple[bytes, set[int]] | None:
    """The Annex B byte stream and NAL unit types of an access unit's payloads, or None when
    an FU-A is broken (a fragment without its start, a start without its end)."""
    out = bytearray()
    types: set[int] = set()
    in_fu = False
    for payload in payloads:
        nal_type = payload[0] & 0x1F
        if nal_type == _H264_FU_A:
            header = payload[1]
            if header & 0x80:
                if in_fu:
                    return None
                in_fu = True
                types.add(header & 0x1F)
                out += ANNEX_B_START_CODE
                out.append((payload[0] & 0xE0) | (header & 0x1F))
            elif not in_fu:
                return None
            out += payload[2:]
            if header & 0x40:
                in_fu = False
            continue
        if in_fu:
            return None
        units = [payload] if nal_type != _H264_STAP_A else _stap_a_units(payload) or []
        for unit in units:
            types.add(unit[0] & 0x1F)
            out += ANNEX_B_START_CODE
            out += unit
    if in_fu:
        return None
    return bytes(out), types
