"""The SFU benchmark runs end to end: one call for a few seconds, bots in worker processes.

A behaviour check of the benchmark's plumbing, not a timing assertion: the figures it prints
are for bench/, never for tests.
"""

from __future__ import annotations

from bench.sfu_forwarding import run_benchmark

EXPECTED_KEYS = {
    "calls", "seconds", "forwarded_pps", "cpu_seconds", "cpu_us_per_forwarded_packet",
    "sfu_cpu_seconds_per_call_second", "calls_per_core", "latency_ms_p50", "latency_ms_p99",
    "loss_pct",
}


async def test_one_call_is_forwarded_and_measured() -> None:
    report = await run_benchmark(1, 3.0, workers=2, setup_timeout=15.0)

    assert EXPECTED_KEYS <= report.keys()
    assert report["mode"] == "sfu"
    assert report["calls"] == 1
    assert report["forwarded_packets"] > 0
    assert report["bot_packets_received"] > 0
    assert report["bot_pps_received"]["audio"] > 0 and report["bot_pps_received"]["video"] > 0
    assert report["loss_pct"] < 5.0
    assert report["latency_samples"] > 0
    assert report["cpu_seconds"] >= 0
