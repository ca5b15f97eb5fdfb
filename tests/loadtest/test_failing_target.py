"""A target that refuses the bots (its sign-up limit) is reported by error code, never as a
traceback, and the user is told which settings a load-test target should raise. Bots past the
free sign-up budget solve the node's proof-of-work challenge, as the web client does."""

from __future__ import annotations

import json
from pathlib import Path

from tests.loadtest.conftest import SERVER_ENV, napalmsky
from tests.napalmsky.served import start_server, stop_server


def test_rate_limited_sign_ups_are_counted_by_code(tmp_path: Path) -> None:
    (tmp_path / "node").mkdir()
    proc, url, _ = start_server(tmp_path / "node", **{
        **SERVER_ENV, "NAPALMSKY_RATE_SIGNUP_PER_HOUR": "1",
        "NAPALMSKY_RATE_SIGNUP_CEILING_PER_HOUR": "3"})
    try:
        result = napalmsky("loadtest", "--users", "4", "--duration", "6", "--call-seconds", "2",
                           "--quiet", "--out", "out", url, cwd=tmp_path)
    finally:
        stop_server(proc)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert "NAPALMSKY_RATE_SIGNUP_PER_HOUR" in result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # one free, two past the budget after a solved challenge, one over the ceiling
    assert report["users"]["signed_up"] == 3 and report["users"]["signup_failed"] == 1
    assert report["users"]["signup_challenges_solved"] == 2
    assert report["errors"]["by_code"]["rate_limited"] == 1
    assert {s["where"] for s in report["errors"]["samples"]
            if s["code"] == "rate_limited"} == {"POST /api/v1/auth/guest"}
    assert (tmp_path / "out" / "report.html").is_file()
