"""The REMB estimate fed once per send-time group agrees with aiortc's estimator fed per packet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiortc.rate import RemoteBitrateEstimator

from sfu.bwe import AST_MOD, GROUP_TICKS, SendTimeGroups


def bottleneck(capacity: float, seconds: float = 20, fps: int = 30, per_frame: int = 4,
               size: int = 1200, start: float = 0.0) -> Iterator[tuple[int, int, int]]:
    """(abs-send-time, arrival ms, payload size) of a 30 fps video stream through a link of
    `capacity` bits/s with a FIFO queue: above capacity the queueing delay grows."""
    arrival = 0.0
    for k in range(int(seconds * fps)):
        for j in range(per_frame):
            send = start + k / fps + j * 0.0001
            arrival = max(send + 0.02, arrival) + size * 8 / capacity
            yield int(send * (1 << 18)) % AST_MOD, int(arrival * 1000), size


@pytest.mark.parametrize("capacity", [600_000, 900_000, 3_000_000])
def test_grouped_estimate_matches_the_per_packet_one(capacity: int) -> None:
    reference, grouped = RemoteBitrateEstimator(), SendTimeGroups()
    expected = None
    packets = 0
    for sent, arrival_ms, size in bottleneck(capacity):
        remb = reference.add(arrival_time_ms=arrival_ms, abs_send_time=sent,
                             payload_size=size, ssrc=1)
        if remb is not None:
            expected = remb[0]
        grouped.add(sent, arrival_ms, size, 1)
        packets += 1
    assert expected is not None and grouped.estimate is not None
    assert abs(grouped.estimate - expected) <= 0.05 * expected
    assert grouped.groups == packets // 4 - 1  # one estimator update per frame, not per packet
    if capacity < 1_152_000:  # the stream (1.15 Mbit/s) overuses the link: the estimate says so
        assert grouped.estimate < capacity


def test_a_reordered_packet_joins_the_current_group() -> None:
    groups = SendTimeGroups()
    groups.add(10_000, 0, 1000, 1)
    groups.add(10_000 + 3 * GROUP_TICKS, 40, 1000, 1)  # a new group: the first is handed over
    assert groups.groups == 1
    groups.add(10_000 + GROUP_TICKS, 41, 1000, 1)  # sent earlier, arrives late
    assert groups.groups == 1
    groups.add(10_000 + 3 * GROUP_TICKS + 10, 42, 1000, 1)
    assert groups.groups == 1


def test_send_times_wrap_around_24_bits() -> None:
    groups = SendTimeGroups()
    updates = 0
    for sent, arrival_ms, size in bottleneck(3_000_000, seconds=2, start=64 - 1):  # wraps at 64 s
        groups.add(sent, arrival_ms, size, 1)
        updates = groups.groups
    assert updates == 2 * 30 - 1
