"""The load-test report: one JSON document and one self-contained HTML page with plots.

Every number carries its unit in its name (`_ms`, `_s`, `_kbps`, `_fps`, `_pct`, `_mb`) and the
`units` table says what each suffix means. Latency blocks are `{count, mean_ms, p50_ms, p95_ms,
p99_ms, max_ms}`. The HTML page embeds its plots as inline SVG (matplotlib, Agg backend) and
the same plots are written beside it under `plots/`.
"""

from __future__ import annotations

import datetime
import html
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from loadtest.measure import Measurements
from loadtest.scenario import Scenario

UNITS = {
    "_ms": "milliseconds", "_s": "seconds", "_kbps": "kilobits per second",
    "_fps": "frames per second", "_pct": "percent", "_mb": "mebibytes (2^20 bytes)",
    "_count": "a number of events", "count": "a number of samples or events",
    "t_s": "seconds since the run started",
}
PLOTS = ("latency_over_time", "calls_connected", "media_distribution", "server")
CALL_LATENCIES = ("signup", "invite_to_call_start", "call_start_to_ice_connected",
                  "call_start_to_first_keyframe")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between closest ranks; `values` sorted."""
    if not values:
        return math.nan
    position = (len(values) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def _r(value: float, digits: int = 3) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def summary(values: Iterable[float], unit: str = "ms") -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, f"mean_{unit}": None, f"p50_{unit}": None, f"p95_{unit}": None,
                f"p99_{unit}": None, f"max_{unit}": None}
    return {"count": len(ordered), f"mean_{unit}": _r(sum(ordered) / len(ordered)),
            f"p50_{unit}": _r(percentile(ordered, 0.5)),
            f"p95_{unit}": _r(percentile(ordered, 0.95)),
            f"p99_{unit}": _r(percentile(ordered, 0.99)), f"max_{unit}": _r(ordered[-1])}


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 2) if whole else None


def _calls_section(m: Measurements) -> dict[str, Any]:
    c = m.counters
    rooms: dict[str, list[dict[str, Any]]] = {}
    for record in m.calls:
        rooms.setdefault(str(record["room_id"]), []).append(record)
    def both_ways(records: list[dict[str, Any]]) -> bool:
        return len(records) == 2 and all(
            r.get("media_received") and all(r["media_received"].values()) for r in records)

    whole = [rs for rs in rooms.values() if not any(r.get("cut_by_run_end") for r in rs)]
    ended: Counter[str] = Counter(str(r.get("ended_reason")) for r in m.calls
                                  if r["role"] == "caller")
    joins = len(m.calls)
    connected = sum(1 for r in m.calls if r.get("ice_connected"))
    return {
        "invites_sent": c["invites_sent"], "invites_accepted": c["invites_accepted"],
        "invites_declined": c["invites_declined"], "invites_expired": c["invites_expired"],
        "invites_left_to_expire": c["invites_left_to_expire"],
        "calls_started": len(rooms), "participants_joined": joins,
        "participants_ice_connected": connected,
        "participants_keyframe_received": sum(
            1 for r in m.calls if r.get("call_start_to_first_keyframe_ms") is not None),
        "calls_media_both_ways": sum(1 for rs in rooms.values() if both_ways(rs)),
        "calls_cut_by_run_end": len(rooms) - len(whole),
        "connection_success_pct": _pct(connected, joins),
        # of the calls the run's end did not cut short
        "calls_media_both_ways_pct": _pct(sum(1 for rs in whole if both_ways(rs)), len(whole)),
        "ended_by_reason": dict(ended),
        "chat_sent": sum(int(r.get("chat_sent", 0)) for r in m.calls),
        "chat_received": sum(int(r.get("chat_received", 0)) for r in m.calls),
        "deck_empty": c["deck_empty"],
    }


def _media_section(m: Measurements) -> dict[str, Any]:
    section: dict[str, Any] = {}
    for kind in ("audio", "video"):
        tracks = [r["tracks"][kind] for r in m.calls
                  if r.get("tracks") and r["tracks"][kind]["packets"] > 0]
        section[kind] = {
            "tracks": len(tracks),
            "received_fps": _dist((t["fps"] for t in tracks), "fps"),
            "received_kbps": _dist((t["kbps"] for t in tracks), "kbps"),
            "loss_pct": _dist((t["loss_pct"] for t in tracks), "pct"),
            "jitter_ms": _dist((t["jitter_ms"] for t in tracks), "ms"),
        }
    section["rtt_ms"] = summary(r["rtt_ms"] for r in m.calls if r.get("rtt_ms") is not None)
    section["late_media_restarts"] = sum(int(r.get("late_media", 0)) for r in m.calls)
    return section


def _dist(values: Iterable[float], unit: str) -> dict[str, Any]:
    """Distribution over tracks: min, p5, p50, p95, max, mean."""
    ordered = sorted(values)
    if not ordered:
        return {f"{k}_{unit}": None for k in ("min", "p5", "p50", "p95", "max", "mean")}
    return {f"min_{unit}": _r(ordered[0]), f"p5_{unit}": _r(percentile(ordered, 0.05)),
            f"p50_{unit}": _r(percentile(ordered, 0.5)),
            f"p95_{unit}": _r(percentile(ordered, 0.95)), f"max_{unit}": _r(ordered[-1]),
            f"mean_{unit}": _r(sum(ordered) / len(ordered))}


def _server_section(samples: list[dict[str, float]], available: bool) -> dict[str, Any]:
    def column(name: str) -> list[float]:
        return [s[name] for s in samples if name in s]

    cpu, rss, fds = column("cpu_pct"), column("rss_mb"), column("open_fds")
    return {
        "metrics_available": available,
        "cpu_pct": {"mean_pct": _r(sum(cpu) / len(cpu)) if cpu else None,
                    "max_pct": _r(max(cpu)) if cpu else None},
        "rss_mb": {"first_mb": _r(rss[0]) if rss else None,
                   "max_mb": _r(max(rss)) if rss else None},
        "open_fds": {"first_count": fds[0] if fds else None,
                     "max_count": max(fds) if fds else None},
        "samples": samples,
    }


def connected_over_time(m: Measurements) -> list[tuple[float, int]]:
    level = 0
    points = [(0.0, 0)]
    for t, delta in sorted(m.call_edges):
        level += delta
        points.append((t, level))
    return points


def latency_over_time(samples: list[tuple[float, float]], duration: float,
                      bins: int = 20) -> list[dict[str, Any]]:
    if not samples:
        return []
    width = max(1.0, duration / bins)
    grouped: dict[int, list[float]] = {}
    for t, ms in samples:
        grouped.setdefault(int(t // width), []).append(ms)
    rows = []
    for key in sorted(grouped):
        ordered = sorted(grouped[key])
        rows.append({"t_s": round((key + 0.5) * width, 3), "count": len(ordered),
                     "p50_ms": _r(percentile(ordered, 0.5)),
                     "p95_ms": _r(percentile(ordered, 0.95)),
                     "p99_ms": _r(percentile(ordered, 0.99))})
    return rows


STEADY_SETTLE_S = 10.0  # seconds after the last user started before the steady window


def build(m: Measurements, *, scenario: Scenario, target: dict[str, Any], stopped_by: str,
          ended_at: float, server: list[dict[str, float]], server_metrics: bool,
          workers_lost: int = 0) -> dict[str, Any]:
    c = m.counters
    duration = max(0.0, ended_at - m.started_at)
    http = {name[5:]: summary(v for _, v in s) for name, s in sorted(m.latencies.items())
            if name.startswith("http ")}
    ws = {name[3:]: summary(v for _, v in s) for name, s in sorted(m.latencies.items())
          if name.startswith("ws ")}
    # Once every user has started and had a few seconds to settle: the node holding its load,
    # not absorbing the ramp of sign-ups (the figure a "with N users connected" target means).
    steady_after = scenario.users / scenario.ramp_per_s + STEADY_SETTLE_S
    steady = {name[5:]: summary(v for t, v in s if t >= steady_after)
              for name, s in sorted(m.latencies.items()) if name.startswith("http ")}
    every_http = [x for name, s in m.latencies.items() if name.startswith("http ") for x in s]
    every_ws = [x for name, s in m.latencies.items() if name.startswith("ws ") for x in s]
    signups = c["signup_ok"] + c["signup_failed"]
    sockets = c["ws_connect_ok"] + c["ws_connect_failed"]

    def stamp(t: float) -> str:
        return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat().replace(
            "+00:00", "Z")

    return {
        "report_version": 1,
        "units": UNITS,
        "target": target,
        "scenario": scenario.to_json(),
        "started_at": stamp(m.started_at), "ended_at": stamp(ended_at),
        "duration_s": round(duration, 3), "stopped_by": stopped_by,
        "users": {
            "requested": scenario.users, "signed_up": c["signup_ok"],
            "signup_failed": c["signup_failed"], "signup_success_pct": _pct(c["signup_ok"],
                                                                           signups),
            "signup_challenges_solved": c["signup_challenges"],
            "ws_connected": c["ws_connect_ok"], "ws_connect_failed": c["ws_connect_failed"],
            "ws_connect_success_pct": _pct(c["ws_connect_ok"], sockets),
        },
        "calls": _calls_section(m),
        "latency_ms": {name: summary(v for _, v in m.latencies.get(name, []))
                       for name in CALL_LATENCIES},
        "http_latency_ms": http,
        "steady_after_s": round(steady_after, 3),
        "http_latency_steady_ms": steady,
        "ws_ack_latency_ms": ws,
        "media": _media_section(m),
        "errors": {"total_count": sum(m.errors.values()), "by_code": dict(m.errors.most_common()),
                   "samples": m.error_samples},
        "server": _server_section(server, server_metrics),
        "bots": {"processes": scenario.processes, "processes_lost": workers_lost,
                 "loop_lag_ms": summary(v for _, v in m.latencies.get("bot_loop_lag", []))},
        "timeseries": {
            "calls_connected": [{"t_s": t, "count": n} for t, n in connected_over_time(m)],
            "http_latency": latency_over_time(every_http, duration),
            "ws_ack_latency": latency_over_time(every_ws, duration),
        },
        "per_call": m.calls,
    }


# ---- output ----


def write_json(report: dict[str, Any], out: Path) -> Path:
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return path


def _plots(report: dict[str, Any]) -> dict[str, str]:
    """Each plot as an SVG document."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.figure import Figure

    plt.rcParams["svg.fonttype"] = "none"
    series = report["timeseries"]
    figures: dict[str, Figure] = {}

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, key, title in ((axes[0], "http_latency", "HTTP request latency (all routes)"),
                           (axes[1], "ws_ack_latency", "/ws request-to-ack latency")):
        rows = series[key]
        for q in ("p50", "p95", "p99"):
            ax.plot([r["t_s"] for r in rows], [r[f"{q}_ms"] for r in rows], marker="o",
                    markersize=3, label=q)
        ax.set_title(title)
        ax.set_xlabel("time since start (s)")
        ax.set_ylabel("latency (ms)")
        ax.grid(alpha=0.3)
        ax.legend()
    figures["latency_over_time"] = fig

    fig, ax = plt.subplots(figsize=(11, 3.2))
    points = series["calls_connected"]
    ax.step([p["t_s"] for p in points], [p["count"] for p in points], where="post")
    ax.set_title("Participants with media connected (ICE) over time")
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("participants")
    ax.set_xlim(0, max(1.0, report["duration_s"]))
    ax.grid(alpha=0.3)
    figures["calls_connected"] = fig

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    tracks = {kind: [r["tracks"][kind] for r in report["per_call"]
                     if r.get("tracks") and r["tracks"][kind]["packets"] > 0]
              for kind in ("audio", "video")}
    for ax, values, title, unit in (
        (axes[0], [t["fps"] for t in tracks["video"]], "received video", "fps"),
        (axes[1], [t["kbps"] for t in tracks["video"]], "received video", "kbit/s"),
        (axes[2], [t["kbps"] for t in tracks["audio"]], "received audio", "kbit/s"),
    ):
        ax.hist(values or [0], bins=min(20, max(5, len(values))))
        ax.set_title(f"{title} ({unit}), per track")
        ax.set_xlabel(unit)
        ax.set_ylabel("tracks")
    figures["media_distribution"] = fig

    fig, ax = plt.subplots(figsize=(11, 3.2))
    samples = report["server"]["samples"]
    cpu = [(s["t_s"], s["cpu_pct"]) for s in samples if "cpu_pct" in s]
    rss = [(s["t_s"], s["rss_mb"]) for s in samples if "rss_mb" in s]
    ax.plot([t for t, _ in cpu], [v for _, v in cpu], color="tab:red", label="CPU (%)")
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("server CPU (% of one core)")
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    twin.plot([t for t, _ in rss], [v for _, v in rss], color="tab:blue", label="RSS (MiB)")
    twin.set_ylabel("resident memory (MiB)")
    lines = ax.get_lines() + twin.get_lines()
    if samples:
        ax.legend(lines, [str(line.get_label()) for line in lines], loc="upper left")
    ax.set_title("Server process (from /metrics)" if samples
                 else "Server process: the target exposes no /metrics")
    figures["server"] = fig

    svgs: dict[str, str] = {}
    for name, figure in figures.items():
        figure.tight_layout()
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg")
        plt.close(figure)
        svg = buffer.getvalue()
        svgs[name] = svg[svg.index("<svg"):]
    return svgs


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                    for k, v in rows)
    return f"<table>{cells}</table>"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _latency_table(block: dict[str, dict[str, Any]]) -> str:
    head = "<tr><th></th><th>count</th><th>p50 (ms)</th><th>p95 (ms)</th><th>p99 (ms)</th>" \
           "<th>max (ms)</th></tr>"
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{s['count']}</td><td>{_fmt(s['p50_ms'])}</td>"
        f"<td>{_fmt(s['p95_ms'])}</td><td>{_fmt(s['p99_ms'])}</td><td>{_fmt(s['max_ms'])}</td>"
        f"</tr>" for name, s in block.items())
    return f"<table>{head}{rows}</table>"


def _media_rows(media: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for kind in ("audio", "video"):
        rows.append((f"{kind} tracks", media[kind]["tracks"]))
        for name in ("received_fps", "received_kbps", "loss_pct", "jitter_ms"):
            unit = name.rsplit("_", 1)[1]
            block = media[kind][name]
            rows.append((f"{kind} {name} p5 / p50 / p95", " / ".join(
                _fmt(block[f"{q}_{unit}"]) for q in ("p5", "p50", "p95"))))
    rows += [("RTT p50 (ms)", media["rtt_ms"]["p50_ms"]),
             ("RTT p95 (ms)", media["rtt_ms"]["p95_ms"])]
    return rows


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1150px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:right}th{text-align:left;background:#f4f4f4}svg{max-width:100%;height:auto}
h2{margin-top:1.6em;border-bottom:1px solid #ddd}"""


def write_html(report: dict[str, Any], out: Path) -> Path:
    plots = _plots(report)
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, svg in plots.items():
        (plot_dir / f"{name}.svg").write_text(svg)
    users, calls, media = report["users"], report["calls"], report["media"]
    errors = report["errors"]["by_code"]
    sections = [
        f"<h1>Napalm Sky load test: {html.escape(report['scenario']['name'])}</h1>",
        f"<p>{html.escape(report['target']['url'])} (version "
        f"{html.escape(str(report['target'].get('version') or '?'))}), from "
        f"{report['started_at']} for {report['duration_s']:.1f} s, stopped by "
        f"{report['stopped_by']}.</p>",
        "<h2>Scenario</h2>", _table(list(report["scenario"].items())),
        "<h2>Users and calls</h2>",
        _table([*users.items(), *[(k, v) for k, v in calls.items() if k != "ended_by_reason"],
                ("calls ended by reason", ", ".join(f"{k}: {v}" for k, v in
                                                    calls["ended_by_reason"].items()))]),
        "<h2>Call set-up latency</h2>", _latency_table(report["latency_ms"]),
        "<h2>HTTP latency per route</h2>", _latency_table(report["http_latency_ms"]),
        f"<h2>HTTP latency per route, steady (after {report['steady_after_s']} s)</h2>",
        _latency_table(report["http_latency_steady_ms"]),
        "<h2>/ws request-to-ack latency per type</h2>",
        _latency_table(report["ws_ack_latency_ms"]),
        plots["latency_over_time"], plots["calls_connected"],
        "<h2>Media received (per track)</h2>",
        _table(_media_rows(media)),
        plots["media_distribution"],
        "<h2>Errors by code</h2>",
        _table(list(errors.items())) if errors else "<p>No errors.</p>",
        "<h2>Server</h2>",
        _table([("CPU mean (%)", report["server"]["cpu_pct"]["mean_pct"]),
                ("CPU max (%)", report["server"]["cpu_pct"]["max_pct"]),
                ("RSS max (MiB)", report["server"]["rss_mb"]["max_mb"]),
                ("open fds max", report["server"]["open_fds"]["max_count"])]),
        plots["server"],
    ]
    page = (f"<!doctype html><html lang=en><meta charset=utf-8><title>Load test "
            f"{html.escape(report['scenario']['name'])}</title><style>{STYLE}</style>"
            f"<body>{''.join(sections)}</body></html>\n")
    path = out / "report.html"
    path.write_text(page)
    return path
