"""`napalmsky loadtest` (the smoke preset) against a real node: calls connect, media flows both
ways, and the reports hold every field with plausible values. No timing is asserted."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.loadtest.conftest import napalmsky


def latency_block_ok(block: dict[str, Any], at_least: int = 1) -> None:
    assert block["count"] >= at_least, block
    for key in ("mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"):
        assert isinstance(block[key], float) and math.isfinite(block[key]) and block[key] >= 0
    assert block["p50_ms"] <= block["p95_ms"] <= block["p99_ms"] <= block["max_ms"]


def test_smoke_run_connects_calls_and_writes_both_reports(node: str, tmp_path: Path) -> None:
    result = napalmsky("loadtest", "--preset", "smoke", "--quiet", "--out", "out", node,
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())

    assert report["scenario"]["name"] == "smoke" and report["scenario"]["users"] == 4
    assert report["stopped_by"] in ("deadline", "finished")
    assert set(report["units"]) >= {"_ms", "_s", "_kbps", "_fps", "_pct"}
    assert report["target"]["url"] == node

    users = report["users"]
    assert users["signed_up"] == 4 and users["ws_connected"] >= 4
    assert users["signup_success_pct"] == 100.0

    calls = report["calls"]
    assert calls["calls_started"] >= 2 and calls["participants_joined"] >= 4
    assert calls["calls_media_both_ways"] >= 2
    assert calls["calls_media_both_ways_pct"] == 100.0  # of the calls the run's end left whole
    assert calls["chat_received"] >= 1
    whole = [r for r in report["per_call"] if not r["cut_by_run_end"]]
    assert len(whole) >= 4 and all(r["ice_connected"] for r in whole)
    for name in ("signup", "invite_to_call_start", "call_start_to_ice_connected",
                 "call_start_to_first_keyframe"):
        latency_block_ok(report["latency_ms"][name])
    for route in ("POST /api/v1/auth/guest", "GET /api/v1/deck", "GET /api/v1/config",
                  "GET /api/v1/me/calls"):
        latency_block_ok(report["http_latency_ms"][route])
    for kind in ("call:invite", "call:accept", "room:message", "room:leave"):
        latency_block_ok(report["ws_ack_latency_ms"][kind])
    assert report["steady_after_s"] == 4 / 4 + 10  # users / ramp, plus the settling time
    assert set(report["http_latency_steady_ms"]) == set(report["http_latency_ms"])

    media = report["media"]
    for kind, (fps_low, kbps_low) in {"audio": (10, 5), "video": (5, 50)}.items():
        track = media[kind]
        assert track["tracks"] >= 4
        assert track["received_fps"]["p50_fps"] > fps_low
        assert track["received_kbps"]["p50_kbps"] > kbps_low
        assert 0 <= track["loss_pct"]["p50_pct"] <= 5
        assert track["jitter_ms"]["p50_ms"] >= 0
    latency_block_ok(media["rtt_ms"])

    assert all(r["media_received"] == {"audio": True, "video": True} for r in whole)
    # two callers may pick the same callee from the deck: the second hears "busy"
    assert set(report["errors"]["by_code"]) <= {"failed_precondition"}, report["errors"]
    server = report["server"]
    assert server["metrics_available"] is True
    assert server["rss_mb"]["max_mb"] > 10 and server["open_fds"]["max_count"] > 0
    assert any("cpu_pct" in s for s in server["samples"])
    assert report["timeseries"]["calls_connected"][-1]["count"] == 0  # every call ended
    assert max(p["count"] for p in report["timeseries"]["calls_connected"]) >= 2

    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("<svg") == 4 and "Errors by code" in page
    for name in ("latency_over_time", "calls_connected", "media_distribution", "server"):
        svg = (tmp_path / "out" / "plots" / f"{name}.svg").read_text()
        assert svg.startswith("<svg") and "</svg>" in svg


def config_reads(node: str) -> float:
    """How often the node answered GET /api/v1/config (the runner's check reads it, and each
    bot after signing up)."""
    with urllib.request.urlopen(f"{node}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("napalmsky_http_requests_total{")
               and 'route="/api/v1/config"' in line and 'status="200"' in line)


def test_ctrl_c_stops_the_run_and_still_writes_the_report(node: str, tmp_path: Path) -> None:
    before = config_reads(node)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAPALMSKY_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "napalmsky", "loadtest", "--users", "2", "--duration", "300",
         "--call-seconds", "60", "--quiet", "--out", "out", node],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        # the condition, polled on the node: the runner's check and both bots read the config
        while config_reads(node) < before + 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["stopped_by"] == "interrupt"
    assert report["users"]["signed_up"] == 2, (report["users"], report["errors"], err)
    assert (tmp_path / "out" / "report.html").is_file()
