"""The REMB estimate fed once per frame agrees with aiortc's estimator fed per packet."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from aiortc.rate import BandwidthUsage, OveruseEstimator, RateCounter, RemoteBitrateEstimator

from sfu.bwe import AST_MOD, PENDING_GROUPS, FastOveruseEstimator, FrameGroups, WindowRate

Packet = tuple[int, int, int, int]  # RTP timestamp, abs-send-time, arrival ms, payload size


def bottleneck(capacity: float, seconds: float = 20, fps: int = 30, per_frame: int = 4,
               size: int = 1200, start: float = 0.0, spacing: float = 0.0001) -> Iterator[Packet]:
    """A 30 fps video stream through a link of `capacity` bits/s with a FIFO queue: above
    capacity the queueing delay grows. A frame's packets leave `spacing` seconds apart."""
    arrival = 0.0
    for k in range(int(seconds * fps)):
        for j in range(per_frame):
            send = start + k / fps + j * spacing
            arrival = max(send + 0.02, arrival) + size * 8 / capacity
            yield (k * 3000) % (1 << 32), int(send * (1 << 18)) % AST_MOD, int(arrival * 1000), size


def estimates(stream: list[Packet]) -> tuple[int | None, FrameGroups]:
    reference, grouped = RemoteBitrateEstimator(), FrameGroups()
    expected = None
    for timestamp, sent, arrival_ms, size in stream:
        remb = reference.add(arrival_time_ms=arrival_ms, abs_send_time=sent,
                             payload_size=size, ssrc=1)
        if remb is not None:
            expected = remb[0]
        grouped.add(timestamp, sent, arrival_ms, size, 1)
    return expected, grouped


@pytest.mark.parametrize("capacity", [600_000, 900_000, 3_000_000])
def test_grouped_estimate_matches_the_per_packet_one(capacity: int) -> None:
    stream = list(bottleneck(capacity))
    expected, grouped = estimates(stream)
    assert expected is not None and grouped.estimate is not None
    assert abs(grouped.estimate - expected) <= 0.05 * expected
    assert grouped.groups == len(stream) // 4 - 1  # one estimator update per frame
    if capacity < 1_152_000:  # the stream (1.15 Mbit/s) overuses the link: the estimate says so
        assert grouped.estimate < capacity


@pytest.mark.parametrize("capacity", [600_000, 3_000_000])
def test_a_paced_frame_is_still_one_group(capacity: int) -> None:
    # A pacer spreads each frame over 24 ms: the 5 ms bursts of the per-packet estimator split
    # it in several groups; the frame stays one group here, and the estimate agrees.
    stream = list(bottleneck(capacity, spacing=0.008))
    expected, grouped = estimates(stream)
    assert grouped.groups == len(stream) // 4 - 1
    assert expected is not None and grouped.estimate is not None
    assert abs(grouped.estimate - expected) <= 0.15 * expected
    if capacity < 1_152_000:
        assert grouped.estimate < capacity


def test_a_packet_of_an_earlier_frame_joins_the_current_group() -> None:
    groups = FrameGroups()
    groups.add(3000, 10_000, 0, 1000, 1)
    groups.add(6000, 20_000, 40, 1000, 1)  # a new frame: the first is handed over
    assert groups.groups == 1
    groups.add(3000, 10_500, 41, 1000, 1)  # a retransmission of the first frame
    groups.add(6000, 20_100, 42, 1000, 1)
    assert groups.groups == 1


def test_timestamps_wrap_around() -> None:
    groups = FrameGroups()
    start = (1 << 32) - 3 * 3000  # RTP timestamps wrap after three frames
    for k in range(10):
        for _ in range(3):
            groups.add((start + k * 3000) % (1 << 32), (64 - 1) * 262144 % AST_MOD + k * 8738,
                       k * 33, 1000, 1)
    assert groups.groups == 9


def test_the_cheaper_parts_give_aiortcs_numbers() -> None:
    rng = random.Random(7)
    ours, theirs = WindowRate(1000, 8000), RateCounter(1000, 8000)
    now = 0
    for _ in range(5000):
        now += rng.choice([0, 1, 3, 33, 34, 400, 1500])
        if rng.random() < 0.02:
            ours.reset()
            theirs.reset()
        value = rng.randrange(2000)
        ours.add(value, now)
        theirs.add(value, now)
        probe = now + rng.choice([0, 5, 999, 1000, 2500])
        assert ours.rate(probe) == theirs.rate(probe)
        now = max(now, probe)
    fast, stock = FastOveruseEstimator(), OveruseEstimator()
    for _ in range(2000):
        args = (rng.randrange(0, 80), rng.uniform(0, 70), rng.randrange(-5000, 5000),
                rng.choice(list(BandwidthUsage)), 0)
        fast.update(*args)
        stock.update(*args)
        assert (fast.offset(), fast.num_of_deltas()) == (stock.offset(), stock.num_of_deltas())


def test_frame_groups_run_aiortcs_estimator_unchanged() -> None:
    stream = list(bottleneck(700_000, seconds=30, spacing=0.002))
    ours = FrameGroups()
    theirs = FrameGroups()
    theirs._estimator = RemoteBitrateEstimator()  # stock parts
    seen: list[tuple[int | None, int | None]] = []
    for timestamp, sent, arrival_ms, size in stream:
        ours.add(timestamp, sent, arrival_ms, size, 1)
        theirs.add(timestamp, sent, arrival_ms, size, 1)
        seen.append((ours.estimate, theirs.estimate))
    assert all(a == b for a, b in seen)
    assert seen[-1][0] is not None and seen[-1][0] < 700_000


def test_batched_groups_give_the_estimates_of_groups_run_at_once() -> None:
    # The estimator runs on completed groups in batches (when the estimate is read, or when
    # PENDING_GROUPS wait); reading after every packet runs it on each group at once. Both
    # see the same groups in the same order: the same estimate whenever it is read.
    stream = list(bottleneck(800_000, seconds=20, spacing=0.003))
    eager, batched = FrameGroups(), FrameGroups()
    checked = 0
    for n, (timestamp, sent, arrival_ms, size) in enumerate(stream):
        eager.add(timestamp, sent, arrival_ms, size, 1)
        batched.add(timestamp, sent, arrival_ms, size, 1)
        eager_estimate = eager.estimate
        if n % 241 == 0:  # read now and then, at no particular group boundary
            assert batched.estimate == eager_estimate
            checked += 1
        assert len(batched._pending) < PENDING_GROUPS
    assert checked > 5
    assert batched.estimate == eager.estimate is not None
    assert batched.groups == eager.groups == len(stream) // 4 - 1
