"""The time-to-first-frame benchmark runs end to end: a real `napalmsky serve`, headless Debian
Chromium, two calls through the web client.

A behaviour check of the benchmark's plumbing, not a timing assertion: the figures it prints
are for bench/, never for tests. Without chromium it is skipped locally and fails in CI.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.ttff import SIDES, STEPS, run
from tests.services import missing


@pytest.fixture
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing("chromium is not installed (.ci/run installs it with apt-get)")
    return path


async def test_two_calls_are_measured_on_both_sides(
        chromium: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    json_path = tmp_path / "ttff.json"
    report = await run(2, time_limit=50.0, chromium=chromium, json_path=str(json_path))

    assert report["failures"] == []
    assert report["calls_measured"] == 2
    for side in SIDES:
        samples = [s for s in report["samples"] if s["side"] == side]
        assert len(samples) == 2, samples
        for s in samples:
            assert s["ttff_ms"] is not None and s["ttff_ms"] > 0
            wall = s["marks_wall_ms"]
            assert wall["firstFrame"] > s["accept_wall_ms"]
            assert set(STEPS) <= wall.keys()  # every set-up step was marked
        assert report["summary"]["ttff_ms"][side]["n"] == 2
    assert report["summary"]["ttff_ms"]["both"]["n"] == 4
    assert report["versions"]["chromium"]
    assert json_path.exists()

    printed = capsys.readouterr().out
    assert "accept -> first frame (ms)" in printed
    for row in ("caller", "callee", "both", "connected -> firstFrame", "load average",
                "Chromium"):
        assert row in printed
