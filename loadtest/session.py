"""One `napalmsky loadtest` run from the command line: preflight, run, reports, summary."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from loadtest.report import build, write_html, write_json
from loadtest.runner import PreflightError, RunResult, Target, install_interrupt, preflight, run
from loadtest.scenario import Scenario

EXIT_TARGET = 1
EXIT_INTERRUPTED = 130
RATE_HINT = ("the node rate-limited the bots (rate_limited): on a load-test target raise "
             "NAPALMSKY_RATE_SIGNUP_PER_HOUR and NAPALMSKY_RATE_TOKEN_PER_MINUTE "
             "(docs/loadtest.md)")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _main(url: str, scenario: Scenario, out: Path, quiet: bool
                ) -> tuple[Target, RunResult] | str:
    stop = asyncio.Event()
    install_interrupt(stop)
    try:
        target = await preflight(url, scenario)
    except PreflightError as exc:
        return str(exc)
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    if not quiet:
        from loadtest.progress import ProgressView

        with ProgressView(scenario, target.url) as view:
            result = await run(target, scenario, out, on_progress=view.update, interrupt=stop)
    else:
        result = await run(target, scenario, out, interrupt=stop)
    return target, result


def run_loadtest(url: str, scenario: Scenario, out: Path, *, quiet: bool = False) -> int:
    outcome = asyncio.run(_main(url, scenario, out, quiet))
    if isinstance(outcome, str):
        _say(f"napalmsky loadtest: error: {outcome}")
        return EXIT_TARGET
    target, result = outcome
    report = build(result.measurements, scenario=scenario,
                   target={"url": target.url, "version": target.version,
                           "config": target.config},
                   stopped_by=result.stopped_by, ended_at=result.ended_at,
                   server=result.server, server_metrics=result.server_metrics,
                   workers_lost=result.workers_lost)
    json_path = write_json(report, out)
    html_path = write_html(report, out)
    for line in summary_lines(report):
        print(line)
    print(f"report: {json_path} and {html_path}")
    if "rate_limited" in report["errors"]["by_code"]:
        _say(f"napalmsky loadtest: note: {RATE_HINT}")
    if "video_codec_mismatch" in report["errors"]["by_code"]:
        _say(f"napalmsky loadtest: note: the node's rooms do not take "
             f"{scenario.video_codec}: run with --video-codec "
             f"{'h264' if scenario.video_codec == 'vp8' else 'vp8'}")
    return EXIT_INTERRUPTED if result.stopped_by == "interrupt" else 0


def summary_lines(report: dict[str, Any]) -> list[str]:
    users, calls = report["users"], report["calls"]
    latency = report["latency_ms"]
    errors = report["errors"]["by_code"]

    def p(block: dict[str, Any], q: str = "p95_ms") -> str:
        value = block.get(q)
        return "-" if value is None else f"{value:.0f} ms"

    return [
        f"{report['scenario']['name']}: {report['duration_s']:.0f} s, stopped by "
        f"{report['stopped_by']}",
        f"users: {users['signed_up']}/{users['requested']} signed up, "
        f"{users['ws_connected']} sockets connected",
        f"calls: {calls['calls_started']} started, {calls['participants_ice_connected']}/"
        f"{calls['participants_joined']} participants connected, "
        f"{calls['calls_media_both_ways']} with media both ways",
        f"p95: sign-up {p(latency['signup'])}, invite to call:start "
        f"{p(latency['invite_to_call_start'])}, call:start to ICE "
        f"{p(latency['call_start_to_ice_connected'])}, to first keyframe "
        f"{p(latency['call_start_to_first_keyframe'])}",
        "errors: " + (", ".join(f"{k} {v}" for k, v in errors.items()) if errors else "none"),
    ]
