"""What the benchmarks share: a real `napalmsky serve` process, and the machine they ran on.

`Server` starts `python -m napalmsky serve` (all roles, embedded defaults: SQLite, in-process
bus, local disk) in its own session, on 127.0.0.1 and a free port, in a temporary data
directory, with the settings a benchmark gives it; `running_server` always stops it (SIGTERM,
then SIGKILL after a timeout). `machine()` says where figures were taken; `process_cpu` and
`read_metrics` read a process's CPU and the node's `/metrics` from outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

STOP_TIMEOUT = 20.0


class BenchError(RuntimeError):
    """The benchmark cannot go on (the server or the browser is not there)."""


# ---------------------------------------------------------------- machine


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    return {"cpu": cpu_model(), "cores": os.cpu_count() or 0, "usable_cores": usable,
            "load_start": load_average(), "platform": platform.platform()}


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a whole process, all its threads (/proc/<pid>/stat, in
    clock ticks: 10 ms resolution); (0, 0) once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; utime is field 14
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS


def machine_busy() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat: all but idle and
    iowait); 0 where there is no /proc."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    ticks = [int(x) for x in first[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICKS


def udp_receive_drops() -> int:
    """Datagrams the machine's kernel dropped for full UDP receive buffers since boot
    (/proc/net/snmp `Udp: RcvbufErrors`, every process); 0 where there is no /proc."""
    try:
        rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
                if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, IndexError, ValueError):
        return 0


# ---------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`napalmsky serve` in its own process, on 127.0.0.1 and a free port, in a temp data dir,
    with `env` as its only NAPALMSKY_* settings (the caller's own are not passed on)."""

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        self.workdir = workdir
        self.settings = dict(env)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        self.operator_token = secrets.token_urlsafe(32)  # for the SFU's room stats
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError("the server is not running")
        return self.proc.pid

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NAPALMSKY_")}
        env.update({"NAPALMSKY_HOST": "127.0.0.1", "NAPALMSKY_RTC_BIND": "127.0.0.1"},
                   NAPALMSKY_DATA_DIR=str(self.workdir / "data"),
                   NAPALMSKY_ENV_FILE=str(self.workdir / "none.env"),
                   NAPALMSKY_OPERATOR_TOKEN=self.operator_token)
        env.update(self.settings)
        with self.log_path.open("wb") as log:
            # Its own session: a Ctrl-C reaches only us, and we stop it in order.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "napalmsky", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)

    async def wait_ready(self, http: aiohttp.ClientSession, within: float) -> None:
        """Polls /ready (the process gives no other sign that it serves)."""
        deadline = time.monotonic() + within
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise BenchError(f"napalmsky serve exited:\n{self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with http.get(f"{self.url}/ready",
                                    timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200 and (await resp.json()).get("status") == "ready":
                        return
            if time.monotonic() > deadline:
                raise BenchError(f"napalmsky serve was not ready in {within:.0f} s:\n"
                                 f"{self.log_tail()}")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"


@contextlib.contextmanager
def running_server(workdir: Path, env: Mapping[str, str]) -> Iterator[Server]:
    server = Server(workdir, env)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- /metrics


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def read_metrics(http: aiohttp.ClientSession, url: str) -> Samples:
    """Every sample of the node's `/metrics`, by (name, sorted labels)."""
    async with http.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as resp:
        if resp.status != 200:
            raise BenchError(f"/metrics answered {resp.status}")
        text = await resp.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


__all__ = ["BenchError", "Server", "free_port", "load_average", "machine", "machine_busy",
           "package_version", "process_cpu", "read_metrics", "running_server", "udp_receive_drops"]
