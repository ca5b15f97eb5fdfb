"""The `napalmsky loadtest` and `napalmsky bots` commands (registered by napalmsky/cli.py).

Only argparse and the scenario table are imported here: aiohttp, aiortc, rich and matplotlib
load when a command runs, so `napalmsky config` stays fast. Bad parameters and unusable
targets get one line on stderr and a non-zero exit before any bot starts.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from loadtest.scenario import PRESETS, ScenarioError, build

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT_USAGE = 2
EXIT_TARGET = 1
EXIT_INTERRUPTED = 130
RATE_SETTINGS = ("NAPALMSKY_RATE_SIGNUP_PER_HOUR (guest sign-ups per client IP per hour), "
                 "NAPALMSKY_RATE_TOKEN_PER_MINUTE (requests per session per minute)")


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """argparse's errors as one line (no usage block), exit status 2."""
    def error(message: str) -> NoReturn:
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {message}\n")

    parser.error = error  # type: ignore[method-assign]


def _fail(command: str, message: str, code: int) -> int:
    print(f"napalmsky {command}: error: {message}", file=sys.stderr)
    return code


def _check_url(url: str) -> str | None:
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
        return f"URL must be http://host[:port] or https://..., not {url!r}"
    return None


def add_commands(sub: Any) -> None:
    """Add `loadtest` and `bots` to the `napalmsky` command's subparsers."""
    lt = sub.add_parser(
        "loadtest", help="drive bot users against a node and report what they saw",
        description="Sign up bot users as guests and have them do what people do with the web "
        "client (presence, deck, invites, calls with real media over the SFU, chat, history), "
        "then write report.json and report.html (with plots) to --out. Every run stops by "
        "itself after --duration; Ctrl-C stops it early and still writes the report. A target "
        "with default rate limits refuses most sign-ups: raise " + RATE_SETTINGS + ".")
    lt.add_argument("url", nargs="?", default=DEFAULT_URL, metavar="URL",
                    help=f"the node to test (default {DEFAULT_URL})")
    lt.add_argument("--preset", default="smoke", metavar="NAME",
                    help=f"scenario: {', '.join(PRESETS)} (default smoke: "
                    f"{PRESETS['smoke'].users} users, {PRESETS['smoke'].duration_s:g} s)")
    lt.add_argument("--users", type=int, metavar="N", help="number of bot users")
    lt.add_argument("--ramp", type=float, dest="ramp_per_s", metavar="PER_S",
                    help="users started per second")
    lt.add_argument("--call-seconds", type=float, metavar="S", help="how long each call lasts (s)")
    lt.add_argument("--think-seconds", type=float, metavar="S", help="pause between calls (s)")
    lt.add_argument("--decline", type=float, dest="decline_share", metavar="SHARE",
                    help="share of invites declined (0-1)")
    lt.add_argument("--expire", type=float, dest="expire_share", metavar="SHARE",
                    help="share of invites left to expire (0-1)")
    lt.add_argument("--chat", type=int, dest="chat_per_call", metavar="N",
                    help="chat messages each participant sends per call")
    lt.add_argument("--processes", type=int, metavar="N",
                    help="bot processes, one event loop each (default 1; up to one per core)")
    lt.add_argument("--duration", type=float, dest="duration_s", metavar="S",
                    help="the run stops after this many seconds")
    lt.add_argument("--heartbeat", type=float, dest="heartbeat_s", metavar="S",
                    help="presence heartbeat interval (s)")
    lt.add_argument("--browse", type=float, dest="browse_s", metavar="S",
                    help="idle mode: each user reads the deck, its profile and its history "
                         "every S seconds (default 0: never)")
    lt.add_argument("--video-codec", metavar="CODEC",
                    help="vp8 or h264: the codec of the node's rooms (its "
                    "NAPALMSKY_SFU_VIDEO_CODEC; default vp8)")
    lt.add_argument("--out", type=Path, metavar="DIR",
                    help="folder for report.json, report.html and plots/ "
                    "(default ./loadtest-<preset>-<UTC time>)")
    lt.add_argument("--quiet", action="store_true", help="no live progress display")
    lt.set_defaults(func=cmd_loadtest)
    _one_line_errors(lt)

    bots = sub.add_parser(
        "bots", help="keep a few demo bots online to call from a browser",
        description="Sign up COUNT bot users who stay online, accept every invite, send a "
        "moving test pattern with their name and a running clock, echo chat, and come back "
        "online after each call. Runs until Ctrl-C (or --duration).")
    bots.add_argument("url", nargs="?", default=DEFAULT_URL, metavar="URL",
                      help=f"the node (default {DEFAULT_URL})")
    bots.add_argument("--count", type=int, default=2, metavar="N", help="how many bots (default 2)")
    bots.add_argument("--name", default="Bot", help="name prefix (default Bot: Bot 1, Bot 2...)")
    bots.add_argument("--duration", type=float, metavar="S", help="stop after this many seconds")
    bots.set_defaults(func=cmd_bots)
    _one_line_errors(bots)


def cmd_loadtest(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        scenario = build(args.preset, users=args.users, ramp_per_s=args.ramp_per_s,
                         call_seconds=args.call_seconds, think_seconds=args.think_seconds,
                         decline_share=args.decline_share, expire_share=args.expire_share,
                         chat_per_call=args.chat_per_call, processes=args.processes,
                         duration_s=args.duration_s, heartbeat_s=args.heartbeat_s,
                         browse_s=args.browse_s, video_codec=args.video_codec)
    except ScenarioError as exc:
        return _fail("loadtest", str(exc), EXIT_USAGE)
    if (problem := _check_url(args.url)) is not None:
        return _fail("loadtest", problem, EXIT_USAGE)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out or Path(f"loadtest-{scenario.name}-{stamp}")
    if out.exists() and not out.is_dir():
        return _fail("loadtest", f"--out {out} exists and is not a folder", EXIT_USAGE)
    from loadtest.session import run_loadtest

    return run_loadtest(args.url, scenario, out, quiet=args.quiet)


def cmd_bots(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.count < 1 or args.count > 50:
        return _fail("bots", "--count must be between 1 and 50", EXIT_USAGE)
    if args.duration is not None and not args.duration > 0:
        return _fail("bots", "--duration must be positive", EXIT_USAGE)
    if (problem := _check_url(args.url)) is not None:
        return _fail("bots", problem, EXIT_USAGE)
    from loadtest.demo import run_demo_bots

    return run_demo_bots(args.url, args.count, args.name, args.duration)
