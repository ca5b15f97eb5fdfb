"""Schema migrations (Alembic), configured in code so they work from an installed package.

These are synchronous functions: call them before the event loop starts (or from a thread,
e.g. asyncio.to_thread), because the migration environment runs its own loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from adapters.sql.engine import (
    async_url,
    connection_error_reason,
    create_engine,
    describe_location,
    is_connection_error,
    sqlite_path,
)
from core.errors import Unavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config for our migrations; `url` travels in config.attributes["url"]."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.attributes["url"] = async_url(url)
    return config


def _outside_event_loop(name: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{name}() runs its own event loop: call it via asyncio.to_thread")


@contextmanager
def _reachable(url: str) -> Iterator[None]:
    try:
        yield
    except Unavailable:
        raise
    except Exception as error:
        if is_connection_error(error):
            location = describe_location(url)
            reason = connection_error_reason(error, url)
            raise Unavailable(f"cannot reach the database at {location}: {reason}") from None
        raise


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision`."""
    _outside_event_loop("upgrade")
    with _reachable(url):
        command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` ("base" removes every table)."""
    _outside_event_loop("downgrade")
    with _reachable(url):
        command.downgrade(alembic_config(url), revision)


def _read_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def _current(url: str) -> str | None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_read_revision)
    finally:
        await engine.dispose()


def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at; None when it was never migrated."""
    _outside_event_loop("current_revision")
    path = sqlite_path(async_url(url))
    if path is not None and not path.exists():
        return None
    with _reachable(url):
        return asyncio.run(_current(url))


def head_revision() -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head
