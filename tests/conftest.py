from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.clock import FakeClock
from tests.services import (
    PostgresDatabase,
    PrivateRedis,
    create_postgres_database,
    drop_postgres_database,
    private_redis,
    require_redis,
)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresDatabase]:
    """A fresh PostgreSQL database for this test session (fails in CI when unreachable)."""
    db = create_postgres_database()
    try:
        yield db
    finally:
        drop_postgres_database(db)


@pytest.fixture
def redis_url() -> str:
    """The shared Redis (fails in CI when unreachable). Isolate by key prefix, never FLUSHALL."""
    return require_redis()


@pytest.fixture
def own_redis() -> Iterator[PrivateRedis]:
    """A private redis-server on a free port that the test may stop and start."""
    yield from private_redis()
