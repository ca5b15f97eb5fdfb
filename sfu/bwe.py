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
gradient compares. The estimator sees each group when the next one starts (one frame
interval later, 33 ms at 30 fps).

Pure: no I/O, no clock (arrival times are passed in, in milliseconds).
"""

from __future__ import annotations

from aiortc.rate import RemoteBitrateEstimator

AST_MOD = 1 << 24  # abs-send-time is 24 bits of 6.18 fixed-point seconds
AST_HALF = 1 << 23
TS_HALF = 1 << 31  # RTP timestamps are 32 bits (RFC 3550 section 5.1)


class FrameGroups:
    """Groups packets by RTP timestamp and runs the estimator once per completed frame.

    `estimate` is the latest REMB value in bits/s (None until the estimator has one). A packet
    of an earlier frame (reordered, or a retransmission) counts towards the current group's
    size only.
    """

    __slots__ = ("_arrival", "_estimator", "_last", "_size", "_timestamp", "estimate", "groups")

    def __init__(self) -> None:
        self._estimator = RemoteBitrateEstimator()
        self._timestamp: int | None = None  # RTP timestamp of the current group
        self._last = 0  # newest abs-send-time in the current group
        self._arrival = 0  # ms, arrival of the group's latest packet
        self._size = 0  # payload octets of the current group
        self.estimate: int | None = None
        self.groups = 0  # groups handed to the estimator

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
        remb = self._estimator.add(arrival_time_ms=self._arrival, abs_send_time=self._last,
                                   payload_size=self._size, ssrc=ssrc)
        if remb is not None:
            self.estimate = remb[0]
