"""Time to first frame: from the callee's click on "Accept" to the first remote video frame.

    python -m bench.ttff --calls 20 [--time-limit 300] [--json PATH]

Measured as users experience it: a real `napalmsky serve` process (all roles, embedded defaults
in a temporary data directory, everything on 127.0.0.1) and headless Debian Chromium (fake
camera and microphone) driving the real web client. Each call is a fresh pair of guests (the
service keeps a 24 h cooldown per pair), signed up through the REST API; each page is then
loaded with its token, the caller invites the callee from the deck, the callee accepts, and the
benchmark waits until both pages have shown the partner's first video frame, then ends the call
with "End call" and waits until both are back on the deck.

The web client (web/static/call.js) records `window.napalmsky.marks`: performance.now() of each
step of a call's set-up: join (call:start handled), socket (SFU socket open), media (camera
ready), offer (offer sent), joined, answer, connected (RTCPeerConnection connected) and
firstFrame (requestVideoFrameCallback on the remote video). The click is stamped in the callee's
page in the same task that clicks; marks of both pages become wall time through
`performance.timeOrigin + mark` (one machine, one clock).

It prints figures; it is not a test, and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import aiohttp

from bench.serve import (
    BenchError,
    Server,
    load_average,
    machine,
    package_version,
    running_server,
)

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage, Page
    from playwright.async_api import Error as PlaywrightError

# The same browser flags as the e2e tests (tests/e2e/conftest.py): headless, fake camera and
# microphone without a permission prompt, and WebRTC allowed over loopback.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
]
# The server's settings for a single-machine run, as the e2e tests set them: the SFU's UDP on
# loopback only, cheap password hashes, rate limits out of the way of many sign-ups.
SERVER_ENV = {
    "NAPALMSKY_HOST": "127.0.0.1", "NAPALMSKY_RTC_BIND": "127.0.0.1",
    "NAPALMSKY_BCRYPT_ROUNDS": "4", "NAPALMSKY_RATE_TOKEN_PER_MINUTE": "100000",
    "NAPALMSKY_RATE_SIGNUP_PER_HOUR": "100000", "NAPALMSKY_RATE_LOGIN_PER_HOUR": "100000",
    "NAPALMSKY_CALL_MIN_SECONDS": "15", "NAPALMSKY_CALL_DEFAULT_SECONDS": "60",
    "NAPALMSKY_CALL_MAX_SECONDS": "600", "NAPALMSKY_LOG_FORMAT": "json",
}
TOKEN_KEY = "napalmsky.token"  # web/static/api.js keeps the session token here
VIEWPORT_WIDTH, VIEWPORT_HEIGHT = 390, 844  # a phone, as in the e2e tests
STEPS = ("join", "socket", "media", "offer", "joined", "answer", "connected", "firstFrame")
SIDES = ("caller", "callee")
SERVER_START_TIMEOUT = 60.0
STEP_TIMEOUT = 20.0  # the longest any one page condition may take
FIRST_FRAME_TIMEOUT = 30.0
MAX_FAILURES_IN_A_ROW = 3

# Click "Accept" and stamp the moment in one task of the callee's page: nothing runs between.
ACCEPT_JS = """() => {
  const button = document.getElementById('accept-invite');
  if (!button || button.disabled) return null;
  const perf = performance.now();
  const wall = Date.now();
  button.click();
  return {wall, perf, origin: performance.timeOrigin};
}"""
MARKS_JS = """() => {
  const n = window.napalmsky || {};
  const pc = n.pc;
  return {origin: performance.timeOrigin, now: performance.now(), date: Date.now(),
          marks: Object.assign({}, n.marks || {}),
          connectionState: pc ? pc.connectionState : null};
}"""
STATS_JS = """async () => {
  const n = window.napalmsky || {};
  const out = {roomId: n.app && n.app.call ? n.app.call.roomId : null, in: null, out: null};
  if (!n.pc) return out;
  (await n.pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      out.in = {pliSent: s.pliCount, firSent: s.firCount, nackSent: s.nackCount,
                keyFramesDecoded: s.keyFramesDecoded, framesDecoded: s.framesDecoded,
                packetsLost: s.packetsLost};
    } else if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out.out = {pliReceived: s.pliCount, firReceived: s.firCount,
                 keyFramesEncoded: s.keyFramesEncoded, framesEncoded: s.framesEncoded};
    }
  });
  return out;
}"""
FIRST_FRAME_JS = "() => !!(window.napalmsky && window.napalmsky.marks && " \
                 "window.napalmsky.marks.firstFrame !== undefined)"


class TimeLimitReached(BenchError):
    pass


# ---------------------------------------------------------------- samples and figures


@dataclass
class Sample:
    """One side of one call: its marks as wall time (ms since the epoch) and since the click."""

    call: int
    side: str
    user_id: str
    accept_wall_ms: float  # Date.now() in the callee's page just before the click
    accept_hr_ms: float  # the same instant as performance.timeOrigin + performance.now()
    marks_wall_ms: dict[str, float]
    since_accept_ms: dict[str, float]
    connection_state: str | None
    clock_offset_ms: float  # Date.now() - (timeOrigin + now()) in this page when read
    # Read once both pages showed a frame (not part of the timing): this page's getStats of
    # its video (keyframe requests it sent and received) and the SFU's view of this user.
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def ttff_ms(self) -> float | None:
        return self.since_accept_ms.get("firstFrame")


@dataclass
class Failure:
    call: int
    stage: str
    error: str
    marks: dict[str, dict[str, float]] = field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def stats(values: Sequence[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(percentile(values, 0.5), 1),
            "p95": round(percentile(values, 0.95), 1), "min": round(min(values), 1),
            "max": round(max(values), 1), "mean": round(statistics.fmean(values), 1)}


def step_deltas(sample: Sample) -> dict[str, float]:
    """Each step from the one before it in STEPS order (accept before join). The socket opens
    while the camera starts, so a delta may be negative when those finish the other way round."""
    out: dict[str, float] = {}
    previous = "accept"
    since = {"accept": 0.0, **sample.since_accept_ms}
    for step in STEPS:
        if step in since and previous in since:
            out[f"{previous}->{step}"] = since[step] - since[previous]
        previous = step
    return out


def summarize(samples: Sequence[Sample]) -> dict[str, Any]:
    good = [s for s in samples if s.ttff_ms is not None]
    summary: dict[str, Any] = {"ttff_ms": {}, "median_step_ms": {}, "median_since_accept_ms": {},
                               "median_both_connected_to_first_frame_ms": {},
                               "first_call_ttff_ms": {}}
    connected: dict[int, float] = {}  # per call: when the later of the two sides connected
    for s in good:
        if "connected" in s.since_accept_ms:
            at = s.since_accept_ms["connected"]
            connected[s.call] = max(connected.get(s.call, -math.inf), at)
    first_call = min((s.call for s in good), default=None)
    for side in (*SIDES, "both"):
        chosen = good if side == "both" else [s for s in good if s.side == side]
        summary["ttff_ms"][side] = stats([s.ttff_ms for s in chosen if s.ttff_ms is not None])
        if side == "both":
            continue
        deltas: dict[str, list[float]] = {}
        for s in chosen:
            for name, value in step_deltas(s).items():
                deltas.setdefault(name, []).append(value)
        summary["median_step_ms"][side] = {k: round(statistics.median(v), 1)
                                           for k, v in deltas.items()}
        summary["median_since_accept_ms"][side] = {
            step: round(statistics.median(values), 1)
            for step in STEPS
            if (values := [s.since_accept_ms[step] for s in chosen if step in s.since_accept_ms])
        }
        # The partner's media can only flow once both peer connections are up.
        after = [s.since_accept_ms["firstFrame"] - connected[s.call] for s in chosen
                 if s.call in connected]
        if after:
            summary["median_both_connected_to_first_frame_ms"][side] = round(
                statistics.median(after), 1)
        summary["first_call_ttff_ms"][side] = next(
            (s.ttff_ms for s in chosen if s.call == first_call), None)
    return summary


# ---------------------------------------------------------------- browser


def find_chromium(explicit: str | None = None) -> str:
    path = explicit or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise BenchError("chromium is not installed (apt-get install chromium); "
                         "Playwright's own browser download is never used")
    return path


# ---------------------------------------------------------------- one call


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def ms(self, cap: float) -> float:
        """A Playwright timeout (ms): the step's cap, or what is left of the run if less."""
        left = self.remaining()
        if left <= 0:
            raise TimeLimitReached("the time limit was reached")
        return max(1.0, min(cap, left) * 1000)


class Bench:
    def __init__(self, server: Server, http: aiohttp.ClientSession, pages: dict[str, Page],
                 deadline: Deadline) -> None:
        self.server = server
        self.http = http
        self.pages = pages  # side -> its page
        self.deadline = deadline
        self.names = itertools.count(1)
        self.last_marks: dict[str, dict[str, float]] = {}  # of the last call, also a failed one

    async def guest(self, name: str, gender: str) -> tuple[str, str]:
        """Sign up a guest through the REST API: (user id, token)."""
        async with self.http.post(f"{self.server.url}/api/v1/auth/guest",
                                  json={"name": name, "gender": gender},
                                  timeout=aiohttp.ClientTimeout(total=STEP_TIMEOUT)) as resp:
            body = await resp.json()
            if resp.status != 201:
                raise BenchError(f"guest sign-up failed: {resp.status} {body}")
        return str(body["user"]["id"]), str(body["token"])

    async def room_stats(self, room_id: Any) -> dict[str, Any]:
        """The SFU's per-participant stats of the room (operator endpoint), by user id."""
        if not isinstance(room_id, str):
            return {}
        url = f"{self.server.url}/sfu/rooms/{room_id}/stats"
        headers = {"Authorization": f"Bearer {self.server.operator_token}"}
        try:
            async with self.http.get(url, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status != 200:
                    return {}
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return {}
        return {str(p.get("userId")): p for p in body.get("participants", [])}

    async def load(self, side: str, user_id: str, token: str) -> None:
        """Load the web client as this user (token in localStorage, as the client keeps it) and
        wait until its signaling socket is online."""
        page = self.pages[side]
        await page.evaluate("([k, t]) => localStorage.setItem(k, t)", [TOKEN_KEY, token])
        await page.goto(self.server.url, timeout=self.deadline.ms(STEP_TIMEOUT))
        await page.locator(f"#me[data-user-id='{user_id}']").wait_for(
            state="attached", timeout=self.deadline.ms(STEP_TIMEOUT))
        await page.locator("#conn-status[data-state='online']").wait_for(
            state="attached", timeout=self.deadline.ms(STEP_TIMEOUT))

    async def call(self, index: int) -> list[Sample]:
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        caller_page, callee_page = self.pages["caller"], self.pages["callee"]
        n = next(self.names)
        caller_id, caller_token = await self.guest(f"Caller {n}", "female")
        callee_id, callee_token = await self.guest(f"Callee {n}", "male")
        # The callee first: once it is online, the caller's first deck listing shows it.
        await self.load("callee", callee_id, callee_token)
        await self.load("caller", caller_id, caller_token)

        invite = caller_page.locator(f"#deck li[data-user-id='{callee_id}'] .invite-button")
        try:
            await invite.wait_for(state="visible", timeout=self.deadline.ms(5))
        except PlaywrightTimeout:  # a presence update lost to a deck load in flight
            await caller_page.click("#deck-refresh", timeout=self.deadline.ms(STEP_TIMEOUT))
            await invite.wait_for(state="visible", timeout=self.deadline.ms(STEP_TIMEOUT))
        await invite.click(timeout=self.deadline.ms(STEP_TIMEOUT))

        await callee_page.locator("#incoming-invite").wait_for(
            state="visible", timeout=self.deadline.ms(STEP_TIMEOUT))
        await callee_page.wait_for_function(
            "() => !document.getElementById('accept-invite').disabled",
            timeout=self.deadline.ms(STEP_TIMEOUT))
        accept = await callee_page.evaluate(ACCEPT_JS)
        if accept is None:
            raise BenchError("the accept button was not there to click")
        accept_hr = float(accept["origin"]) + float(accept["perf"])

        waits = [asyncio.ensure_future(page.wait_for_function(
            FIRST_FRAME_JS, polling="raf", timeout=self.deadline.ms(FIRST_FRAME_TIMEOUT)))
            for page in (caller_page, callee_page)]
        try:
            await asyncio.gather(*waits)
        except BaseException as exc:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
            if isinstance(exc, Exception):  # the partial marks say where it stopped
                with contextlib.suppress(Exception):
                    self.last_marks = {side: dict((await self.pages[side].evaluate(MARKS_JS))
                                                  ["marks"]) for side in SIDES}
            raise
        read = {side: await self.pages[side].evaluate(MARKS_JS) for side in SIDES}
        self.last_marks = {side: dict(r["marks"]) for side, r in read.items()}

        browser = {side: await self.pages[side].evaluate(STATS_JS) for side in SIDES}
        sfu = await self.room_stats(browser["callee"].get("roomId"))
        samples = []
        for side, user_id in (("caller", caller_id), ("callee", callee_id)):
            r = read[side]
            origin = float(r["origin"])
            wall = {k: origin + float(v) for k, v in r["marks"].items()}
            samples.append(Sample(
                call=index, side=side, user_id=user_id, accept_wall_ms=float(accept["wall"]),
                accept_hr_ms=accept_hr, marks_wall_ms=wall,
                since_accept_ms={k: round(v - accept_hr, 2) for k, v in wall.items()},
                connection_state=r["connectionState"],
                clock_offset_ms=round(float(r["date"]) - origin - float(r["now"]), 2),
                diagnostics={"browser": browser[side], "sfu": sfu.get(user_id)}))

        await caller_page.click("#end-call", timeout=self.deadline.ms(STEP_TIMEOUT))
        for page in (caller_page, callee_page):
            await page.locator("#call").wait_for(state="hidden",
                                                 timeout=self.deadline.ms(STEP_TIMEOUT))
            await page.locator("#deck-screen").wait_for(state="visible",
                                                         timeout=self.deadline.ms(STEP_TIMEOUT))
        return samples


def keep_console(page: Page, side: str, console: list[str]) -> None:
    def on_console(msg: ConsoleMessage) -> None:
        console.append(f"{side} [{msg.type}] {msg.text}")

    def on_error(exc: PlaywrightError) -> None:
        console.append(f"{side} [pageerror] {exc}")

    page.on("console", on_console)
    page.on("pageerror", on_error)


@contextlib.asynccontextmanager
async def browser_pages(chromium: str,
                        console: list[str]) -> AsyncIterator[tuple[str, dict[str, Page]]]:
    """Chromium with the e2e flags, one context (own storage) and page per side."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS,
                                                   timeout=STEP_TIMEOUT * 1000)
        try:
            pages: dict[str, Page] = {}
            for side in SIDES:
                context = await browser.new_context(
                    viewport={"width": VIEWPORT_WIDTH, "height": VIEWPORT_HEIGHT})
                page = await context.new_page()
                keep_console(page, side, console)
                pages[side] = page
            yield browser.version, pages
        finally:
            with contextlib.suppress(Exception):  # already gone after a Ctrl-C
                await browser.close()


# ---------------------------------------------------------------- the run


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Stop:
    """Ctrl-C or SIGTERM: the first ends the call in flight and the run (the summary of the
    calls so far is printed), a second one cancels everything. Both stop the server and the
    browser on the way out."""

    def __init__(self) -> None:
        self.requested = False
        self.current: asyncio.Task[Any] | None = None  # the call being measured
        self.main: asyncio.Task[Any] | None = None

    def is_requested(self) -> bool:
        return self.requested

    def request(self) -> None:
        if not self.requested and self.current is not None and not self.current.done():
            self.requested = True
            self.current.cancel()
        elif self.main is not None:
            self.requested = True
            self.main.cancel()


async def measure(bench: Bench, calls: int, stop: Stop, report: dict[str, Any],
                  samples: list[Sample], failures: list[Failure]) -> None:
    from playwright.async_api import Error as BrowserError

    in_a_row = 0
    for index in range(calls):
        if bench.deadline.remaining() <= 0:
            report["stopped_by_time_limit"] = True
            return
        if stop.is_requested():
            break
        bench.last_marks = {}
        task = asyncio.ensure_future(bench.call(index))
        stop.current = task
        try:
            # Every wait in a call is bounded; this bounds what is not (a page that hangs).
            async with asyncio.timeout(max(1.0, bench.deadline.remaining()) + STEP_TIMEOUT):
                got = await task
        except TimeLimitReached:
            report["stopped_by_time_limit"] = True
            return
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if stop.is_requested() and (me is None or not me.cancelling()):
                break
            raise
        except (BrowserError, BenchError) as exc:
            if stop.is_requested():  # the driver went away with the Ctrl-C
                break
            if bench.deadline.remaining() <= 0:
                report["stopped_by_time_limit"] = True
                return
            failures.append(Failure(index, "call",
                                    f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                                    bench.last_marks))
            say(f"call {index + 1}/{calls}: FAILED: {failures[-1].error}; "
                f"marks {bench.last_marks}")
            in_a_row += 1
            if in_a_row >= MAX_FAILURES_IN_A_ROW:
                raise BenchError(f"{in_a_row} calls in a row failed") from exc
            continue
        except TimeoutError:
            report["stopped_by_time_limit"] = True
            return
        finally:
            stop.current = None
        in_a_row = 0
        samples.extend(got)
        say(f"call {index + 1}/{calls}: " + ", ".join(
            f"{s.side} {s.ttff_ms:.0f} ms" for s in got if s.ttff_ms is not None))
    if stop.is_requested():
        report["interrupted"] = True
        say("interrupted: stopping the browser and the server")


async def run(calls: int, time_limit: float = 300.0, *, chromium: str | None = None,
              json_path: str | None = None, out: TextIO | None = None,
              stop: Stop | None = None) -> dict[str, Any]:
    """Start the server and the browser, measure `calls` calls (or as many as fit in
    `time_limit` seconds), print the summary and return the report."""
    stop = stop or Stop()
    out = out or sys.stdout
    started = time.monotonic()
    deadline = Deadline(time_limit)
    browser_path = find_chromium(chromium)
    report: dict[str, Any] = {
        "benchmark": "ttff", "calls_requested": calls, "time_limit_s": time_limit,
        "machine": machine(),
        "versions": {"chromium": "", "python": platform.python_version(),
                     "playwright": package_version("playwright"),
                     "napalmsky": package_version("napalmsky")},
        "samples": [], "failures": [], "stopped_by_time_limit": False, "interrupted": False,
    }
    samples: list[Sample] = []
    failures: list[Failure] = []
    console: list[str] = []
    with tempfile.TemporaryDirectory(prefix="napalmsky-ttff-") as tmp, \
            running_server(Path(tmp), SERVER_ENV) as server:
        report["server"] = {"url": server.url, "roles": "all",
                            "mode": "single-node: sqlite, in-process bus, local blobs"}
        try:
            async with aiohttp.ClientSession() as http:
                await server.wait_ready(http, min(SERVER_START_TIMEOUT,
                                                  max(1.0, deadline.remaining())))
                async with browser_pages(browser_path, console) as (version, pages):
                    report["versions"]["chromium"] = version
                    for side in SIDES:
                        await pages[side].goto(server.url, timeout=deadline.ms(STEP_TIMEOUT))
                    bench = Bench(server, http, pages, deadline)
                    await measure(bench, calls, stop, report, samples, failures)
        except BaseException:
            tail = server.log_tail()
            if console:
                say("browser console (last lines):\n" + "\n".join(console[-20:]))
            say(f"server log (tail):\n{tail}")
            raise
    report["machine"]["load_end"] = load_average()
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    report["calls_measured"] = len({s.call for s in samples})
    report["samples"] = [asdict(s) | {"ttff_ms": s.ttff_ms} for s in samples]
    report["failures"] = [asdict(f) for f in failures]
    report["summary"] = summarize(samples)
    print(format_report(report), file=out, flush=True)
    if json_path:
        text = json.dumps(report, indent=2) + "\n"
        await asyncio.to_thread(Path(json_path).write_text, text)
        say(f"raw samples written to {json_path}")
    return report


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_report(report: dict[str, Any]) -> str:
    m, v, summary = report["machine"], report["versions"], report["summary"]
    lines = [
        "Time to first frame (TTFF): callee clicks Accept -> first remote video frame shown",
        f"machine   {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable); load average "
        f"{' '.join(map(str, m['load_start']))} at start, "
        f"{' '.join(map(str, m.get('load_end', [])))} at end",
        f"versions  Chromium {v['chromium']}, Python {v['python']}, "
        f"Playwright {v['playwright']}",
        f"server    napalmsky serve {report['server']['url']} (all roles, "
        f"{report['server']['mode']})",
        f"calls     {report['calls_measured']} measured of {report['calls_requested']} asked, "
        f"{len(report['failures'])} failed, {report['elapsed_s']} s"
        + (" (stopped by the time limit)" if report["stopped_by_time_limit"] else "")
        + (" (interrupted)" if report["interrupted"] else ""),
        "",
        "accept -> first frame (ms)",
        f"{'side':<8}{'n':>4}{'p50':>8}{'p95':>8}{'min':>8}{'max':>8}",
    ]
    for side in (*SIDES, "both"):
        s = summary["ttff_ms"][side]
        lines.append(f"{side:<8}{s['n']:>4}{_num(s.get('p50')):>8}{_num(s.get('p95')):>8}"
                     f"{_num(s.get('min')):>8}{_num(s.get('max')):>8}")
    lines += [
        "",
        "median per step (ms): d = from the step above, @ = since accept",
        f"{'step':<30}{'caller d':>10}{'callee d':>10}{'caller @':>10}{'callee @':>10}",
    ]
    previous = "accept"
    for step in STEPS:
        key = f"{previous}->{step}"
        cells = [summary["median_step_ms"].get(side, {}).get(key) for side in SIDES]
        cells += [summary["median_since_accept_ms"].get(side, {}).get(step) for side in SIDES]
        lines.append(f"{previous + ' -> ' + step:<30}" + "".join(f"{_num(c):>10}" for c in cells))
        previous = step
    after = summary["median_both_connected_to_first_frame_ms"]
    lines.append(f"{'both connected -> firstFrame':<30}"
                 + "".join(f"{_num(after.get(side)):>10}" for side in SIDES))
    lines.append("(d: each step from the one listed above it. The SFU socket opens while the "
                 "camera starts,\n so socket, media and joined overlap and a d can be negative; "
                 "medians of steps do not add up\n to the median total. 'both connected': from "
                 "the later of the two peer connections.)")
    first = summary["first_call_ttff_ms"]
    if report["calls_measured"] > 1:
        lines.append(f"first call (cold browser: camera and media stack start): caller "
                     f"{_num(first.get('caller'))} ms, callee {_num(first.get('callee'))} ms "
                     f"(included above)")
    slowest = describe_slowest(report["samples"])
    if slowest:
        lines.append(slowest)
    for f in report["failures"]:
        lines.append(f"failed call {f['call'] + 1}: {f['error']}")
    return "\n".join(lines)


def describe_slowest(samples: list[dict[str, Any]]) -> str:
    """The slowest side of any call, with what its keyframe counters say."""
    timed = [s for s in samples if s.get("ttff_ms") is not None]
    if not timed:
        return ""
    worst = max(timed, key=lambda s: float(s["ttff_ms"]))
    partner = next((s for s in timed if s["call"] == worst["call"] and s is not worst), None)
    at = worst["since_accept_ms"]
    text = (f"slowest: call {worst['call'] + 1}, {worst['side']} {worst['ttff_ms']:.0f} ms "
            f"(connected @{_num(at.get('connected'))}")
    if partner is not None and "connected" in partner["since_accept_ms"]:
        text += f", partner connected @{_num(partner['since_accept_ms']['connected'])}"
    text += ")"
    inbound = (worst.get("diagnostics", {}).get("browser") or {}).get("in") or {}
    if inbound:
        text += (f"; its video receiver sent {inbound.get('pliSent')} PLI, decoded "
                 f"{inbound.get('keyFramesDecoded')} keyframes")
    if partner is not None:
        sfu_in = ((partner.get("diagnostics", {}).get("sfu") or {}).get("in") or {}).get("video")
        if sfu_in:
            text += f"; the SFU asked the partner for {sfu_in.get('keyframeRequests')} keyframes"
    return text


async def _main(args: argparse.Namespace, stop: Stop) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stop.main = asyncio.current_task()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.request)

    def quiet_after_stop(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # After a Ctrl-C the Playwright driver (same process group) is gone: its pending
        # futures fail with "Connection closed"; that is not news.
        if not stop.is_requested():
            loop.default_exception_handler(context)

    loop.set_exception_handler(quiet_after_stop)
    return await run(args.calls, args.time_limit, chromium=args.chromium, json_path=args.json,
                     stop=stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ttff",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=10, help="calls to measure (fresh pairs)")
    parser.add_argument("--time-limit", type=float, default=300.0,
                        help="seconds after which the run stops by itself (default 300)")
    parser.add_argument("--json", metavar="PATH", help="write the report and raw samples here")
    parser.add_argument("--chromium", metavar="PATH", help="browser binary (default: chromium)")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.time_limit <= 0:
        parser.error("--calls and --time-limit must be positive")
    stop = Stop()
    try:
        report = asyncio.run(_main(args, stop))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted: server and browser stopped")
        return 130
    except BenchError as exc:
        say(f"benchmark failed: {exc}")
        return 1
    if report["interrupted"]:
        return 130
    return 0 if report["calls_measured"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Sample", "Stop", "format_report", "main", "percentile", "run", "summarize"]
