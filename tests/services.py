"""The real services tests use: the machine's PostgreSQL and Redis, and private redis-servers.

Locally a missing service skips the tests that need it; in CI (CI=true) it fails them, because a
green run that tested nothing proves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "NAPALMSKY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("NAPALMSKY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _reachable(url: str, default_port: int) -> str | None:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return f"{host}:{port}: {exc}"


def missing(what: str) -> NoReturn:
    """A needed service or tool is missing: a failure in CI, a skip on a developer's machine."""
    if in_ci():
        pytest.fail(f"{what} (required in CI)")
    pytest.skip(f"{what} (skipped outside CI)")  # CI=true turns this into a failure


def require(name: str, problem: str | None) -> None:
    if problem is not None:
        missing(f"{name} is not reachable ({problem})")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class PostgresDatabase:
    """A fresh database on the shared server, dropped when the test session ends."""

    name: str

    @property
    def url(self) -> str:
        """SQLAlchemy URL (asyncpg driver)."""
        parts = urlsplit(POSTGRES_ADMIN_URL)
        return f"postgresql+asyncpg://{parts.netloc}/{self.name}"


def create_postgres_database() -> PostgresDatabase:
    require("PostgreSQL", _reachable(POSTGRES_ADMIN_URL, 5432))
    db = PostgresDatabase(f"napalmsky_test_{uuid.uuid4().hex[:12]}")
    asyncio.run(_admin(f'CREATE DATABASE "{db.name}"'))
    return db


def drop_postgres_database(db: PostgresDatabase) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)'))


@contextlib.asynccontextmanager
async def postgres_outage(db: PostgresDatabase) -> AsyncIterator[None]:
    """A real outage of one database for the block: it refuses new connections and the ones
    it had are cut, on the shared server, without touching the other databases."""
    await _admin(f'ALTER DATABASE "{db.name}" WITH ALLOW_CONNECTIONS false')
    await _admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 f"WHERE datname = '{db.name}'")
    try:
        yield
    finally:
        await _admin(f'ALTER DATABASE "{db.name}" WITH ALLOW_CONNECTIONS true')


def require_redis() -> str:
    require("Redis", _reachable(REDIS_URL, 6379))
    return REDIS_URL


class PrivateRedis:
    """A redis-server of the test's own on a free port, to stop and start at will.

    Tests that need Redis to go away use this one, never the shared server.
    """

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.proc is not None:
            return
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while _reachable(self.url, self.port) is not None:
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("private redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()
