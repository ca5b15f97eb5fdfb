"""The SFU benchmark runs end to end: a real `napalmsky serve`, one call made through its API and
signaling, the two bots in worker processes, a few seconds measured from outside the server.

A behaviour check of the benchmark's plumbing, not a timing assertion: the figures it prints
are for bench/, never for tests.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from bench.serve import BenchError
from bench.sfu_forwarding import (
    Snapshot,
    WorkerStatus,
    bot_loss,
    bucket_percentile,
    context,
    format_report,
    run_benchmark,
    saturate,
)

EXPECTED_KEYS = {
    "calls", "seconds", "forwarded_pps", "cpu_seconds", "cpu_pct_of_one_core",
    "cpu_us_per_forwarded_packet", "cpu_seconds_per_call_second", "calls_per_core",
    "latency_ms_p50", "latency_ms_p99", "loss_pct", "bot_worker_cpu_pct",
}


async def test_one_call_through_napalmsky_serve_is_forwarded_and_measured() -> None:
    async with asyncio.timeout(60):  # the run bounds itself; this bounds the test
        report = await run_benchmark(1, 3.0, workers=2, settle=0.5, setup_timeout=20.0)

    assert EXPECTED_KEYS <= report.keys()
    assert report["calls"] == 1
    assert report["forwarded_packets"] > 0
    assert report["bot_packets_received"] > 0
    assert report["bot_pps_received"]["audio"] > 0 and report["bot_pps_received"]["video"] > 0
    assert report["cpu_seconds"] > 0
    assert report["server_event_loop"] == "uvloop"  # as `napalmsky serve` runs, from /metrics
    assert report["sfu_packets_not_forwarded"] >= 0
    assert report["cpu_us_per_forwarded_packet"] > 0
    assert report["latency_samples"] > 0
    assert 0 < report["latency_ms_p50"] <= report["latency_ms_p99"]
    assert report["loss_pct"] < 5.0
    assert len(report["bot_worker_cpu_pct"]) == 2
    # the server is stopped (and reaped) when the run ends
    assert not Path(f"/proc/{report['server_pid']}").exists()

    ctx = context(2, {})
    ctx["runs"] = [report]
    printed = format_report(ctx)
    for row in ("napalmsky serve", "load average", "CPU per packet", "calls per core",
                "bucket resolution", "loss"):
        assert row in printed


def test_percentiles_are_interpolated_within_the_histogram_bucket() -> None:
    buckets = [(0.001, 50.0), (0.002, 90.0), (0.005, 100.0), (math.inf, 100.0)]
    assert bucket_percentile(buckets, 0.5) == (0.001, False)
    assert bucket_percentile(buckets, 0.7)[0] == 0.0015
    assert bucket_percentile(buckets, 0.25)[0] == 0.0005
    assert bucket_percentile([(0.001, 0.0), (math.inf, 0.0)], 0.5) == (None, False)
    assert bucket_percentile([(0.001, 1.0), (math.inf, 10.0)], 0.99) == (0.001, True)


async def test_saturation_stops_at_the_first_step_over_the_loss_limit() -> None:
    losses = {10: 0.0, 20: 0.4, 30: 2.5, 40: 9.0}
    tried: list[int] = []

    async def run(calls: int) -> dict[str, Any]:
        tried.append(calls)
        return {"calls": calls, "loss_pct": losses[calls]}

    found = await saturate(step=10, first=10, most=40, time_limit=60, run=run)

    assert tried == [10, 20, 30]
    assert (found["last_under"], found["first_over"], found["stopped_by"]) == (20, 30, "loss")


async def test_saturation_stops_when_a_step_cannot_be_set_up_or_at_the_most_calls() -> None:
    async def run(calls: int) -> dict[str, Any]:
        if calls > 2:
            raise BenchError("only 3 of 6 bots receiving")
        return {"calls": calls, "loss_pct": 0.0}

    found = await saturate(step=1, first=1, most=5, time_limit=60, run=run)
    assert (found["last_under"], found["first_over"], found["stopped_by"]) == (
        2, 3, "setup_failed")
    assert "failed" in found["runs"][-1]

    found = await saturate(step=1, first=1, most=2, time_limit=60, run=run)
    assert (found["last_under"], found["first_over"], found["stopped_by"]) == (
        2, None, "max_calls")


def test_bot_counts_are_read_at_a_common_instant_from_the_samples() -> None:
    status = WorkerStatus(counts={}, states={}, ready=0, late=0, errors=[],
                          samples=[(10.0, 100, 90), (10.1, 110, 100), (10.4, 140, 130)])
    assert status.at(10.05) == pytest.approx((105.0, 95.0, 0.05))
    assert status.at(10.3) == pytest.approx((130.0, 120.0, 0.1))
    assert status.at(11.0) == pytest.approx((140.0, 130.0, 0.6))  # none later: the last
    assert status.at(9.0) == pytest.approx((100.0, 90.0, 1.0))


def _snapshot(at: float, samples: list[tuple[float, int, int]]) -> Snapshot:
    status = WorkerStatus(counts={}, states={}, ready=0, late=0, errors=[], samples=samples)
    return Snapshot(at=at, server_cpu=(0.0, 0.0), worker_cpu=[0.0], own_cpu=0.0, busy=0.0,
                    udp_drops=0, metrics={}, metrics_at=at, workers=[status])


def test_loss_is_the_growth_of_the_floor_of_sent_minus_received() -> None:
    steady = [(t / 10, 100 * t, 98 * t) for t in range(101)]  # 1000 pkt/s, 2% lost
    loss = bot_loss(_snapshot(0.0, steady), _snapshot(10.0, steady))
    assert loss.loss_pct == pytest.approx(2.0, abs=0.05)
    assert loss.trend_pct == pytest.approx(2.0)
    assert loss.endpoints_pct == pytest.approx(2.0)

    # nothing lost, but the receiving process stalled for 0.5 s just before the window's end:
    # the two instants and the trend see loss, the floor does not
    stalled = [(t / 10, 100 * t, 100 * t - (100 * (t - 94) if 94 <= t < 100 else 0)
                - (300 if t == 100 else 0)) for t in range(101)]
    loss = bot_loss(_snapshot(0.0, stalled), _snapshot(10.0, stalled))
    assert loss.endpoints_pct == pytest.approx(3.0)
    assert loss.trend_pct > 0.3
    assert loss.loss_pct == 0.0
