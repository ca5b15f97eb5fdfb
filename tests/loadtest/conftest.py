"""A real node for the load-test tests: `napalmsky serve` in its own process, limits raised."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.napalmsky.served import start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]
SERVER_ENV = {
    "NAPALMSKY_RTC_BIND": "127.0.0.1", "NAPALMSKY_BCRYPT_ROUNDS": "4",
    "NAPALMSKY_RATE_TOKEN_PER_MINUTE": "100000", "NAPALMSKY_RATE_SIGNUP_PER_HOUR": "100000",
    "NAPALMSKY_RATE_LOGIN_PER_HOUR": "100000", "NAPALMSKY_CALL_MIN_SECONDS": "10",
    "NAPALMSKY_CALL_DEFAULT_SECONDS": "60", "NAPALMSKY_LOG_LEVEL": "info",
}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One node for a test module: its base URL."""
    proc, url, _ = start_server(tmp_path_factory.mktemp("node"), **SERVER_ENV)
    try:
        yield url
    finally:
        stop_server(proc)


def napalmsky(*args: str, cwd: Path, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    """The `napalmsky` command as a user runs it, in `cwd`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAPALMSKY_")}
    env["NAPALMSKY_ENV_FILE"] = str(cwd / "none.env")
    return subprocess.run([sys.executable, "-m", "napalmsky", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
