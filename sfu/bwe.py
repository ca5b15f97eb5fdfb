"""Receive-side bandwidth estimation for REMB, fed once per video frame, not per packet.

A publisher that did not negotiate transport-cc but sends abs-send-time (aiortc, older stacks)
learns what its uplink holds from the REMB the SFU sends (draft-alvestrand-rmcat-remb). The
estimate is GCC's delay-based estimator (draft-ietf-rmcat-gcc-02 section 5), aiortc's
`RemoteBitrateEstimator`, whose inter-arrival filter compares groups of packets with the
previous group (section 5.2) and whose rate counter sums sizes. Running its whole update for
every packet cost about a tenth of the SFU's forwarding CPU. `FrameGroups` keeps the group here
(a few integers a packet) and hands the estimator one summary packet per group: the group's
newest send time, its last arrival and its total payload size.

A group is a video frame: the packets that share an RTP timestamp (the grouping of the
draft's earlier versions). Section 5.2's 5 ms send-time bursts would split a paced frame
into several groups, so the estimator would still run several times a frame; one frame is at
least as long as a burst, and its last packet's send and arrival times are what the delay
gradient compares. A group is complete when the next one starts (one frame interval later,
33 ms at 30 fps); the estimator runs on completed groups in batches, when the estimate is read
or a second's worth are waiting (the same results, a fraction of the cost).

Two parts of aiortc's estimator cost more than the rest together and are replaced here by
equivalents that give the same numbers (tests/sfu/test_bwe.py compares them): its incoming
bit rate counter keeps a bucket per millisecond and walks every elapsed millisecond on each
call (`WindowRate` keeps one entry per group), and its Kalman filter finds the smallest of the
last 60 frame periods with a Python loop (`FastOveruseEstimator` with the built-in `min`).
They rely on aiortc 1.16's attribute names (`incoming_bitrate`, `estimator`, `ts_delta_hist`),
pinned with the rest in pyproject.toml and checked by tests/sfu/test_internals.py.

Pure: no I/O, no clock (arrival times are passed in, in milliseconds).
"""

from __future__ import annotations

from collections import deque

from aiortc.rate import (
    MIN_FRAME_PERIOD_HISTORY_LENGTH,
    OveruseEstimator,
    RemoteBitrateEstimator,
)

AST_MOD = 1 << 24  # abs-send-time is 24 bits of 6.18 fixed-point seconds
AST_HALF = 1 << 23
TS_HALF = 1 << 31  # RTP timestamps are 32 bits (RFC 3550 section 5.1)


class WindowRate:
    """aiortc's `RateCounter` (amount over a sliding window of `window_ms`, times `scale`) with
    one entry per `add` instead of a bucket per millisecond; the same results."""

    __slots__ = ("_count", "_entries", "_origin_ms", "_scale", "_total", "_window_ms")

    def __init__(self, window_ms: int, scale: int = 8000) -> None:
        self._window_ms = window_ms
        self._scale = scale
        self._entries: deque[tuple[int, int]] = deque()
        self._origin_ms: int | None = None
        self._total = 0
        self._count = 0

    def add(self, value: int, now_ms: int) -> None:
        if self._origin_ms is None:
            self._origin_ms = now_ms
        else:
            self._erase_old(now_ms)
        self._entries.append((now_ms, value))
        self._total += value
        self._count += 1

    def rate(self, now_ms: int) -> int | None:
        if self._origin_ms is not None:
            self._erase_old(now_ms)
            active = now_ms - self._origin_ms + 1
            if self._count > 0 and active > 1:
                return round(self._scale * self._total / active)
        return None

    def reset(self) -> None:
        self._entries.clear()
        self._origin_ms = None
        self._total = self._count = 0

    def _erase_old(self, now_ms: int) -> None:
        assert self._origin_ms is not None
        new_origin = now_ms - self._window_ms + 1
        if self._origin_ms < new_origin:
            entries = self._entries
            while entries and entries[0][0] < new_origin:
                self._total -= entries.popleft()[1]
                self._count -= 1
            self._origin_ms = new_origin


class FastOveruseEstimator(OveruseEstimator):
    """aiortc's Kalman filter of the delay gradient, its minimum frame period found by `min`."""

    def update_min_frame_period(self, ts_delta: float) -> float:
        history: list[float] = self.ts_delta_hist
        if len(history) >= MIN_FRAME_PERIOD_HISTORY_LENGTH:
            del history[0]
        smallest = min(history, default=ts_delta)
        history.append(ts_delta)
        return ts_delta if ts_delta < smallest else smallest


def fast_estimator() -> RemoteBitrateEstimator:
    """aiortc's RemoteBitrateEstimator with the two replacements above."""
    estimator = RemoteBitrateEstimator()
    estimator.incoming_bitrate = WindowRate(1000, 8000)  # type: ignore[assignment]
    estimator.estimator = FastOveruseEstimator()
    return estimator


PENDING_GROUPS = 32  # completed groups kept before the estimator runs on them (~1 s at 30 fps)


class FrameGroups:
    """Groups packets by RTP timestamp and runs the estimator once per completed frame.

    `estimate` is the latest REMB value in bits/s (None until the estimator has one). A packet
    of an earlier frame (reordered, or a retransmission) counts towards the current group's
    size only.

    Completed groups wait in a short list and the estimator runs on them in one go: when
    `estimate` is read (the REMB timer, the stats) or when PENDING_GROUPS are waiting. The
    estimator is pure (every time is passed in), so it sees the same groups in the same order
    and gives the same numbers as if it ran on each group at once; one tight loop over a
    second's frames costs a fraction of thirty runs cold, between packets of other calls.
    """

    __slots__ = ("_arrival", "_estimate", "_estimator", "_last", "_pending", "_size",
                 "_timestamp", "groups")

    def __init__(self) -> None:
        self._estimator = fast_estimator()
        self._timestamp: int | None = None  # RTP timestamp of the current group
        self._last = 0  # newest abs-send-time in the current group
        self._arrival = 0  # ms, arrival of the group's latest packet
        self._size = 0  # payload octets of the current group
        # completed groups not yet seen by the estimator: (arrival ms, abs-send-time, octets,
        # SSRC)
        self._pending: list[tuple[int, int, int, int]] = []
        self._estimate: int | None = None
        self.groups = 0  # groups completed (handed, or about to be handed, to the estimator)

    @property
    def estimate(self) -> int | None:
        """The latest REMB value in bits/s, or None (runs the estimator on waiting groups)."""
        if self._pending:
            self._run()
        return self._estimate

    def add(self, rtp_timestamp: int, abs_send_time: int, arrival_ms: int, payload_size: int,
            ssrc: int) -> None:
        """One received packet: its RTP timestamp, 24-bit abs-send-time, arrival (ms, any
        monotonic origin), payload octets and SSRC (the estimator names the SSRCs its REMB is
        about)."""
        current = self._timestamp
        if current is not None:
            if rtp_timestamp == current or (rtp_timestamp - current) % (1 << 32) >= TS_HALF:
                if (abs_send_time - self._last) % AST_MOD < AST_HALF:
                    self._last = abs_send_time
                self._size += payload_size
                self._arrival = arrival_ms
                return
            self._flush(ssrc)  # a newer frame starts with this packet
        self._timestamp = rtp_timestamp
        self._last = abs_send_time
        self._arrival = arrival_ms
        self._size = payload_size

    def _flush(self, ssrc: int) -> None:
        self.groups += 1
        pending = self._pending
        pending.append((self._arrival, self._last, self._size, ssrc))
        if len(pending) >= PENDING_GROUPS:
            self._run()

    def _run(self) -> None:
        add = self._estimator.add
        estimate = self._estimate
        for arrival, sent, size, ssrc in self._pending:
            remb = add(arrival_time_ms=arrival, abs_send_time=sent, payload_size=size, ssrc=ssrc)
            if remb is not None:
                estimate = remb[0]
        self._pending.clear()
        self._estimate = estimate
