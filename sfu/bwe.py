"""Receive-side bandwidth estimation for REMB, fed once per send-time group, not per packet.

A publisher that did not negotiate transport-cc but sends abs-send-time (aiortc, older stacks)
learns what its uplink holds from the REMB the SFU sends (draft-alvestrand-rmcat-remb). The
estimate is GCC's delay-based estimator (draft-ietf-rmcat-gcc-02 section 5), aiortc's
`RemoteBitrateEstimator`. That estimator only works on groups: its inter-arrival filter
compares packets sent within 5 ms of each other (section 5.2: a video frame, or a paced burst)
with the previous such group, and its rate counter sums sizes. Running its whole update for
every packet cost about a fifth of the SFU's forwarding CPU; `SendTimeGroups` keeps the group
here (three integers a packet) and hands the estimator one summary packet per group: the
group's newest send time, its last arrival and its total payload size. The estimator then sees
the same group deltas, one group later (about one frame interval, 33 ms at 30 fps).

Pure: no I/O, no clock (arrival times are passed in, in milliseconds).
"""

from __future__ import annotations

from aiortc.rate import RemoteBitrateEstimator

AST_MOD = 1 << 24  # abs-send-time is 24 bits of 6.18 fixed-point seconds
AST_HALF = 1 << 23
GROUP_TICKS = round(0.005 * (1 << 18))  # 5 ms in abs-send-time units (section 5.2)


class SendTimeGroups:
    """Groups packets by abs-send-time and runs the estimator once per completed group.

    `estimate` is the latest REMB value in bits/s (None until the estimator has one). A packet
    sent earlier than its group's first (reordered) counts towards the group's size only.
    """

    __slots__ = ("_arrival", "_estimator", "_first", "_last", "_size", "estimate", "groups")

    def __init__(self) -> None:
        self._estimator = RemoteBitrateEstimator()
        self._first: int | None = None  # abs-send-time of the current group's first packet
        self._last = 0  # newest abs-send-time in the current group
        self._arrival = 0  # ms, arrival of the group's latest packet
        self._size = 0  # payload octets of the current group
        self.estimate: int | None = None
        self.groups = 0  # groups handed to the estimator

    def add(self, abs_send_time: int, arrival_ms: int, payload_size: int, ssrc: int) -> None:
        """One received packet: its 24-bit abs-send-time, arrival (ms, any monotonic origin),
        payload octets and SSRC (the estimator names the SSRCs its REMB is about)."""
        first = self._first
        if first is not None:
            delta = (abs_send_time - first) % AST_MOD
            if delta < AST_HALF and delta > GROUP_TICKS:
                self._flush(ssrc)  # a newer group starts with this packet
            else:
                if delta < AST_HALF and (abs_send_time - self._last) % AST_MOD < AST_HALF:
                    self._last = abs_send_time
                self._size += payload_size
                self._arrival = arrival_ms
                return
        self._first = self._last = abs_send_time
        self._arrival = arrival_ms
        self._size = payload_size

    def _flush(self, ssrc: int) -> None:
        self.groups += 1
        remb = self._estimator.add(arrival_time_ms=self._arrival, abs_send_time=self._last,
                                   payload_size=self._size, ssrc=ssrc)
        if remb is not None:
            self.estimate = remb[0]
