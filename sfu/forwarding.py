"""Per-consumer forwarding state: sequence/timestamp continuity, NACK answers, keyframe requests,
and the counters behind honest RTCP reports.

Pure and synchronous: no I/O, no asyncio, no clock. Every method that needs the time takes
`now` (float seconds from one monotonic clock chosen by the caller); NTP wall time, where RTCP
needs it, is passed in separately.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .rtp import RTP_SEQ_MOD, RTP_TS_MOD, RtcpReportBlock, RtcpSenderReport, compact_ntp

_SEQ_MASK = RTP_SEQ_MOD - 1
_TS_MASK = RTP_TS_MOD - 1
_HALF_SEQ = RTP_SEQ_MOD // 2
_HALF_TS = RTP_TS_MOD // 2


class SequenceRewriter:
    """Maps the (sequence number, timestamp) of whichever producer feeds a consumer onto one
    continuous outgoing stream.

    The first source maps to itself. After `switch_source`, the new source's first packet gets
    the last outgoing sequence number + 1 and the last outgoing timestamp advanced by the wall
    time since then (at least one tick). Within a source, sequence numbers are extended to
    count 16-bit wraps, so the same input always maps to the same output; packets more than
    `window` behind the newest, or older than the source's first packet, are dropped (`None`).

    A timestamp that jumps while the sequence number advances normally (an encoder restarted
    under the same SSRC) is rebased like a source switch: the outgoing timestamp then advances
    by the wall time since the last packet, when the jump differs from that wall time by more
    than `max_timestamp_jump` seconds.
    """

    __slots__ = (
        "_base",
        "_clock_rate",
        "_has_output",
        "_has_source",
        "_highest",
        "_last_at",
        "_last_out_seq",
        "_last_out_ts",
        "_seq_offset",
        "_switched_at",
        "_ts_offset",
        "max_timestamp_jump",
        "rebases",
        "window",
    )

    def __init__(self, *, window: int = 1000, max_timestamp_jump: float = 3.0) -> None:
        if not 0 < window < _HALF_SEQ:
            raise ValueError("window must be between 1 and 32767")
        self.window = window
        self._clock_rate = 0
        self._has_source = False
        self._has_output = False
        self._switched_at = 0.0
        self._base = 0
        self._highest = 0
        self._seq_offset = 0
        self._ts_offset = 0
        self._last_out_seq = 0
        self._last_out_ts = 0
        self._last_at = 0.0
        self.max_timestamp_jump = max_timestamp_jump
        self.rebases = 0

    @property
    def timestamp_offset(self) -> int | None:
        """What is added (mod 2^32) to the current source's timestamps, once it has one."""
        return self._ts_offset if self._has_source else None

    @property
    def last_sequence_number(self) -> int | None:
        """The outgoing sequence number of the newest packet mapped so far."""
        return self._last_out_seq if self._has_output else None

    @property
    def last_timestamp(self) -> int | None:
        """The outgoing timestamp of the newest packet mapped so far."""
        return self._last_out_ts if self._has_output else None

    def switch_source(self, clock_rate: int, now: float) -> None:
        """The next packet comes from a new producer (clock rate `clock_rate` Hz)."""
        self._clock_rate = clock_rate
        self._has_source = False
        self._switched_at = now

    def map(self, sequence_number: int, timestamp: int, now: float) -> tuple[int, int] | None:
        """The outgoing (sequence number, timestamp) of a packet received at `now`, or None."""
        if not self._has_source:
            self._has_source = True
            ext = self._base = self._highest = sequence_number
            if self._has_output:
                self._seq_offset = self._last_out_seq + 1 - sequence_number
                gap = max(now, self._switched_at) - self._last_at
                ticks = max(1, round(gap * self._clock_rate))
                self._ts_offset = (self._last_out_ts + ticks - timestamp) & _TS_MASK
            else:
                self._seq_offset = 0
                self._ts_offset = 0
        else:
            highest = self._highest
            delta = (sequence_number - highest) & _SEQ_MASK
            if delta < _HALF_SEQ:
                ext = highest + delta
            else:
                ext = highest + delta - RTP_SEQ_MOD
                if highest - ext > self.window or ext < self._base:
                    return None
        out_seq = (ext + self._seq_offset) & _SEQ_MASK
        out_ts = (timestamp + self._ts_offset) & _TS_MASK
        if ext > self._highest and self._has_output and self._clock_rate:
            step = (out_ts - self._last_out_ts) & _TS_MASK
            if step >= _HALF_TS:
                step -= RTP_TS_MOD
            expected = (now - self._last_at) * self._clock_rate
            if abs(step - expected) > self.max_timestamp_jump * self._clock_rate:
                ticks = max(1, round(max(0.0, now - self._last_at) * self._clock_rate))
                self._ts_offset = (self._last_out_ts + ticks - timestamp) & _TS_MASK
                out_ts = (timestamp + self._ts_offset) & _TS_MASK
                self.rebases += 1
        if ext >= self._highest:
            self._highest = ext
            self._last_out_seq = out_seq
            self._last_out_ts = out_ts
            self._last_at = now
            self._has_output = True
        return out_seq, out_ts


class PacketCache:
    """A ring of recently sent packets keyed by outgoing sequence number (`size` entries)."""

    __slots__ = ("_packets", "_seqs", "size")

    def __init__(self, size: int = 512) -> None:
        if not 0 < size <= _HALF_SEQ:
            raise ValueError("size must be between 1 and 32768")
        self.size = size
        self._seqs = [-1] * size
        self._packets: list[bytes | None] = [None] * size

    def put(self, sequence_number: int, packet: bytes | bytearray) -> None:
        """Store an immutable copy of `packet` (bytes are stored as they are, not copied)."""
        i = sequence_number % self.size
        self._seqs[i] = sequence_number
        self._packets[i] = bytes(packet)

    def get(self, sequence_number: int) -> bytes | None:
        i = sequence_number % self.size
        return self._packets[i] if self._seqs[i] == sequence_number else None

    def clear(self) -> None:
        self._seqs = [-1] * self.size
        self._packets = [None] * self.size


class NackResponder:
    """Answers a subscriber's NACKs (RFC 4585 6.2.1) from a `PacketCache`, within a budget.

    A packet is resent at most `max_resends` times, and not again within one round-trip time
    of its last resend (`min_interval` when the RTT is not known yet): a NACK sent before our
    retransmission could arrive asks for nothing new. Resent bytes are drawn from a token bucket
    refilled at `share` of the subscriber's send bitrate (at least `floor` bits/s), holding at
    most `burst` seconds of it, so a storm of NACKs cannot multiply a consumer's traffic.
    """

    __slots__ = ("_cache", "_counts", "_last_refill", "_seqs", "_times", "_tokens", "burst",
                 "floor", "max_resends", "min_interval", "missed", "over_budget", "resent",
                 "share", "suppressed")

    def __init__(self, cache: PacketCache, *, max_resends: int = 3, min_interval: float = 0.1,
                 share: float = 0.3, floor: float = 200_000.0, burst: float = 0.5) -> None:
        self._cache = cache
        self.max_resends = max_resends
        self.min_interval = min_interval
        self.share = share
        self.floor = floor
        self.burst = burst
        self._seqs = [-1] * cache.size
        self._times = [0.0] * cache.size
        self._counts = [0] * cache.size
        self._tokens = floor / 8 * burst
        self._last_refill: float | None = None
        self.resent = 0
        self.suppressed = 0
        self.missed = 0
        self.over_budget = 0

    def _refill(self, now: float, bitrate: float) -> None:
        rate = max(self.floor, self.share * bitrate) / 8  # bytes per second
        if self._last_refill is not None:
            self._tokens = min(rate * self.burst,
                               self._tokens + rate * max(0.0, now - self._last_refill))
        self._last_refill = now

    def respond(self, lost: Iterable[int], now: float, *, rtt: float | None = None,
                bitrate: float = 0.0) -> list[bytes]:
        """The cached packets to resend for `lost`, in the order asked.

        `rtt` in seconds (None when unknown), `bitrate` the subscriber's send rate in bits/s.
        """
        self._refill(now, bitrate)
        interval = min(max(rtt, 0.01), 1.0) if rtt is not None else self.min_interval
        cache, seqs, times, counts = self._cache, self._seqs, self._times, self._counts
        size = cache.size
        out: list[bytes] = []
        for seq in lost:
            packet = cache.get(seq)
            if packet is None:
                self.missed += 1
                continue
            i = seq % size
            if seqs[i] == seq:
                if counts[i] >= self.max_resends or now - times[i] < interval:
                    self.suppressed += 1
                    continue
            else:
                seqs[i] = seq
                counts[i] = 0
            if self._tokens < len(packet):
                self.over_budget += 1
                continue
            self._tokens -= len(packet)
            times[i] = now
            counts[i] += 1
            out.append(packet)
        self.resent += len(out)
        return out


class KeyframeRequestThrottle:
    """At most one upstream PLI/FIR per `interval` seconds for one producer; the first request
    after `reset()` (call it on a source switch) always goes through."""

    __slots__ = ("_last", "interval")

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._last: float | None = None

    def should_forward(self, now: float) -> bool:
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True

    def mark(self, now: float) -> None:
        """A request was forwarded at `now` (by whoever scheduled it)."""
        self._last = now

    def remaining(self, now: float) -> float:
        """Seconds until a request would be forwarded (0 when it would be now)."""
        if self._last is None:
            return 0.0
        return max(0.0, self.interval - (now - self._last))

    def reset(self) -> None:
        self._last = None


class StreamStats:
    """Reception statistics of one incoming RTP stream (RFC 3550 A.1, A.3, A.8).

    Sequence numbers follow A.1 (MAX_DROPOUT, MAX_MISORDER, resynchronisation after two
    sequential packets past a jump) without the probation period: SRTP already authenticates
    the source. Jitter is updated by packets that advance the highest sequence number only
    (as libwebrtc does), so retransmissions and reordering do not inflate it.
    """

    MAX_DROPOUT = 3000
    MAX_MISORDER = 100

    __slots__ = (
        "_bad_seq",
        "_base_seq",
        "_cycles",
        "_expected_prior",
        "_jitter",
        "_last_arrival",
        "_last_ts",
        "_max_seq",
        "_received_prior",
        "_sr_at",
        "_sr_ntp",
        "_started",
        "clock_rate",
        "received",
        "restarts",
        "ssrc",
    )

    def __init__(self, ssrc: int, clock_rate: int) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self._started = False
        self._sr_ntp: int | None = None
        self._sr_at = 0.0
        self._init_seq(0)
        self._jitter = 0.0
        self._last_arrival: float | None = None
        self._last_ts = 0
        self.restarts = 0  # sequence number jumps confirmed by the next packet

    def _init_seq(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = RTP_SEQ_MOD + 1
        self._cycles = 0
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0

    @property
    def extended_highest_seq(self) -> int:
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        return self.extended_highest_seq - self._base_seq + 1 if self._started else 0

    @property
    def cumulative_lost(self) -> int:
        """Expected minus received: negative when duplicates arrived."""
        return self.expected - self.received

    @property
    def jitter(self) -> float:
        """Interarrival jitter in timestamp units."""
        return self._jitter

    def update(self, sequence_number: int, timestamp: int, arrival: float) -> bool:
        """Account for a packet received at `arrival`; False if it was not counted (a jump
        that the next packet has not confirmed yet)."""
        seq = sequence_number
        if not self._started:
            self._started = True
            self._init_seq(seq)
            advanced = True
        else:
            udelta = (seq - self._max_seq) & _SEQ_MASK
            advanced = False
            if udelta < self.MAX_DROPOUT:
                if seq < self._max_seq:
                    self._cycles += RTP_SEQ_MOD
                self._max_seq = seq
                advanced = udelta > 0
            elif udelta <= RTP_SEQ_MOD - self.MAX_MISORDER:
                if seq != self._bad_seq:
                    self._bad_seq = (seq + 1) & _SEQ_MASK
                    return False
                self._init_seq(seq)  # two sequential packets after a jump: the source restarted
                self._last_arrival = None
                self.restarts += 1
                advanced = True
        self.received += 1
        if advanced:
            self._update_jitter(timestamp, arrival)
        return True

    def _update_jitter(self, timestamp: int, arrival: float) -> None:
        if self._last_arrival is not None:
            ts_delta = (timestamp - self._last_ts) & _TS_MASK
            if ts_delta >= _HALF_TS:
                ts_delta -= RTP_TS_MOD
            d = (arrival - self._last_arrival) * self.clock_rate - ts_delta
            self._jitter += (abs(d) - self._jitter) / 16
        self._last_arrival = arrival
        self._last_ts = timestamp

    def on_sender_report(self, ntp_timestamp: int, now: float) -> None:
        """Remember the sender's last SR, for the LSR/DLSR fields."""
        self._sr_ntp = ntp_timestamp
        self._sr_at = now

    def report_block(self, now: float) -> RtcpReportBlock:
        """The report block for this stream; starts a new interval for `fraction_lost`."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        lost_interval = expected_interval - (self.received - self._received_prior)
        self._expected_prior = expected
        self._received_prior = self.received
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        lsr = dlsr = 0
        if self._sr_ntp is not None:
            lsr = compact_ntp(self._sr_ntp)
            dlsr = max(0, int((now - self._sr_at) * 65536)) & 0xFFFFFFFF
        return RtcpReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            packets_lost=self.cumulative_lost,
            highest_seq=self.extended_highest_seq & 0xFFFFFFFF,
            jitter=int(self._jitter) & 0xFFFFFFFF,
            lsr=lsr,
            dlsr=dlsr,
        )


@dataclass(slots=True)
class SendCounters:
    """What one outgoing stream has sent, for honest sender reports (RFC 3550 6.4.1)."""

    clock_rate: int
    packet_count: int = 0
    octet_count: int = 0
    last_rtp_timestamp: int | None = None
    last_sent_at: float = 0.0

    def on_packet(self, payload_length: int, rtp_timestamp: int, now: float) -> None:
        """Count a packet sent at `now` (payload octets only: no header, no padding)."""
        self.packet_count += 1
        self.octet_count += payload_length
        last = self.last_rtp_timestamp
        if last is None or (rtp_timestamp - last) & _TS_MASK < _HALF_TS:
            self.last_rtp_timestamp = rtp_timestamp
            self.last_sent_at = now

    def sender_report(
        self,
        ssrc: int,
        *,
        now: float,
        ntp_timestamp: int,
        reports: Sequence[RtcpReportBlock] = (),
    ) -> RtcpSenderReport | None:
        """The SR at `now` (whose wall time is `ntp_timestamp`); None before the first packet.

        The RTP timestamp is the last one sent, advanced by the time since at the clock rate.
        """
        if self.last_rtp_timestamp is None:
            return None
        elapsed = round((now - self.last_sent_at) * self.clock_rate)
        return RtcpSenderReport(
            ssrc=ssrc,
            ntp_timestamp=ntp_timestamp,
            rtp_timestamp=(self.last_rtp_timestamp + elapsed) & _TS_MASK,
            packet_count=self.packet_count & 0xFFFFFFFF,
            octet_count=self.octet_count & 0xFFFFFFFF,
            reports=list(reports),
        )


@dataclass(slots=True)
class _Missing:
    first_seen: float
    last_sent: float
    retries: int


class NackGenerator:
    """Which sequence numbers of an incoming stream to NACK, and when to ask again.

    `on_packet` reports the gaps a packet reveals (to NACK at once); `due` the ones to ask for
    again, at most `max_retries` times, no sooner than `retry_interval` after the last ask and
    never for packets older than `max_age` (by then a keyframe request is the better remedy).
    A jump larger than `max_gap` is a restart of the source, not loss.
    """

    __slots__ = ("_highest", "_missing", "max_age", "max_gap", "max_retries", "recovered",
                 "requested", "retry_interval")

    def __init__(self, *, max_gap: int = 100, max_retries: int = 3, retry_interval: float = 0.1,
                 max_age: float = 1.0) -> None:
        self.max_gap = max_gap
        self.max_retries = max_retries
        self.retry_interval = retry_interval
        self.max_age = max_age
        self._highest: int | None = None
        self._missing: dict[int, _Missing] = {}
        self.requested = 0
        self.recovered = 0

    @property
    def missing(self) -> list[int]:
        return sorted(self._missing)

    def on_packet(self, sequence_number: int, now: float) -> list[int]:
        seq = sequence_number & _SEQ_MASK
        if self._highest is None:
            self._highest = seq
            return []
        delta = (seq - self._highest) & _SEQ_MASK
        if delta == 0:
            return []
        if delta >= _HALF_SEQ:  # older than the highest: a late or retransmitted packet
            if self._missing.pop(seq, None) is not None:
                self.recovered += 1
            return []
        self._highest = seq
        if delta > self.max_gap:
            self._missing.clear()
            return []
        lost = [(seq - i) & _SEQ_MASK for i in range(delta - 1, 0, -1)]
        for missing in lost:
            self._missing[missing] = _Missing(now, now, 1)
        self.requested += len(lost)
        return lost

    def due(self, now: float) -> list[int]:
        again: list[int] = []
        for seq, entry in list(self._missing.items()):
            if now - entry.first_seen > self.max_age or entry.retries >= self.max_retries:
                if now - entry.last_sent >= self.retry_interval:
                    del self._missing[seq]
                continue
            if now - entry.last_sent >= self.retry_interval:
                entry.last_sent = now
                entry.retries += 1
                again.append(seq)
        self.requested += len(again)
        return again


class BitrateMeter:
    """Bits per second between the last two samples of a byte counter."""

    __slots__ = ("_last", "bitrate")

    def __init__(self) -> None:
        self.bitrate = 0.0
        self._last: tuple[float, int] | None = None

    def sample(self, octets: int, now: float) -> None:
        if self._last is not None:
            then, before = self._last
            if now > then:
                self.bitrate = 8 * (octets - before) / (now - then)
        self._last = (now, octets)


class DownlinkCap:
    """A cap on what one subscriber's downlink takes, from its receiver reports.

    GoogCC's loss-based controller (draft-ietf-rmcat-gcc-02 section 6), applied by the SFU to
    the stream it sends a subscriber: with more than 10 % loss in a report interval the cap
    drops to (1 - loss / 2) of what we were sending; under 2 % it grows by 8 % a report; in
    between it holds. With no loss seen there is no cap (None): the publisher's own estimate
    of its uplink (transport-cc) is then all that limits it. A subscriber's REMB lowers an
    active cap further; alone it sets none (a receive-side estimate starts from what arrives,
    which is what the publisher's content needs, not what the path holds). Bits per second.
    """

    __slots__ = ("_lossy", "cap", "floor")

    HIGH_LOSS = 0.10
    LOW_LOSS = 0.02
    GROWTH = 1.08

    def __init__(self, floor: int = 50_000) -> None:
        self.floor = floor
        self.cap: int | None = None
        self._lossy = 0  # reports in a row above HIGH_LOSS

    def on_report(self, fraction_lost: int, send_bitrate: float, remb: int | None = None) -> None:
        """A receiver report's fraction lost (0..255, RFC 3550 6.4.1) and our send rate then.

        A first cap needs two lossy reports in a row (one may be a burst, or a report that
        raced the media it describes); an existing cap goes down at once."""
        loss = fraction_lost / 256
        self._lossy = self._lossy + 1 if loss > self.HIGH_LOSS else 0
        if loss > self.HIGH_LOSS and send_bitrate > 0 and (self.cap is not None
                                                            or self._lossy >= 2):
            target = send_bitrate * (1 - loss / 2)
            self.cap = max(self.floor, round(min(target, self.cap or target)))
        elif loss < self.LOW_LOSS and self.cap is not None:
            self.cap = round(self.cap * self.GROWTH)
            if self.cap > 2 * max(send_bitrate, self.floor):
                self.cap = None  # far above what flows: no longer a constraint
        if self.cap is not None and remb is not None and remb < self.cap:
            self.cap = max(self.floor, remb)
