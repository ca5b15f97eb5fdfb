"""A real `napalmsky serve` process for tests that need the product as operators run it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from loadtest.wire import Signaling
from tests.services import free_port


async def next_event(sig: Signaling, kind: str, within: float = 15) -> dict[str, Any]:
    """The data of the next `kind` event on this signaling socket (others are skipped)."""
    async with asyncio.timeout(within):
        while True:
            event = await sig.events.get()
            if event.get("type") == kind:
                data: dict[str, Any] = event.get("data", {})
                return data


def start_server(tmp_path: Path, port: int | None = None, **extra_env: str
                 ) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`napalmsky serve` on the embedded defaults in `tmp_path`, ready: (process, base URL,
    log file). `extra_env` adds or overrides NAPALMSKY_* settings; started again on the same
    `tmp_path` (and `port`) it is the same node restarted, its log appended to."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAPALMSKY_")}
    env.update({
        "NAPALMSKY_DATA_DIR": str(tmp_path / "data"), "NAPALMSKY_ENV_FILE": str(tmp_path / "x"),
        "NAPALMSKY_LOG_LEVEL": "debug", "NAPALMSKY_BCRYPT_ROUNDS": "4",
        "NAPALMSKY_RTC_BIND": "127.0.0.1", **extra_env,
    })
    log_path = tmp_path / "server.log"
    with log_path.open("a") as log:
        proc = subprocess.Popen([sys.executable, "-m", "napalmsky", "serve", "--port", str(port)],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as resp:
                if json.loads(resp.read())["status"] == "ready":
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(log_path.read_text()[-3000:])
        time.sleep(0.2)
    return proc, url, log_path


def stop_server(proc: subprocess.Popen[bytes], how: int = signal.SIGTERM) -> None:
    """Stop it as an operator would (SIGTERM), killing it if it does not stop in time."""
    if proc.poll() is not None:
        return
    proc.send_signal(how)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
