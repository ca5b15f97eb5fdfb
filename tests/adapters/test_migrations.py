"""The Alembic migrations, on SQLite and on PostgreSQL.

Every test gets a database of its own (a temp file, or a fresh PostgreSQL database dropped at
the end), because these tests drop every table. Migrations are synchronous and run their own
event loop, so the tests are synchronous too and use asyncio.run for async checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from adapters.sql import create_engine, migrate
from adapters.sql.engine import async_url, mask_url
from adapters.sql.schema import metadata
from core.errors import InvalidArgument, Unavailable
from core.ids import new_id
from tests.services import create_postgres_database, drop_postgres_database, free_port

TABLES = {table.name for table in metadata.sorted_tables}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nested' / 'migrations.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    db = create_postgres_database()
    try:
        # the plain libpq form on purpose: migrate must pick the async driver itself
        yield db.url.replace("postgresql+asyncpg://", "postgresql://")
    finally:
        drop_postgres_database(db)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    value: str = request.getfixturevalue(f"{request.param}_url")
    return value


def run_sync(url: str, fn: Any) -> Any:
    """Run `fn(connection)` on a sync-facing connection of a fresh engine, then commit."""

    async def go() -> Any:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                return await conn.run_sync(fn)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def table_names(url: str) -> set[str]:
    return set(run_sync(url, lambda conn: sa.inspect(conn).get_table_names()))


def schema_differences(url: str) -> list[Any]:
    def compare(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))

    result: list[Any] = run_sync(url, compare)
    return result


def test_revisions_before_and_after_upgrade(url: str) -> None:
    head = migrate.head_revision()
    assert head
    assert migrate.current_revision(url) is None
    migrate.upgrade(url)
    assert migrate.current_revision(url) == head


def test_upgrade_downgrade_upgrade(url: str) -> None:
    migrate.upgrade(url)
    assert table_names(url) == TABLES | {"alembic_version"}

    def add_rows(conn: Connection) -> None:  # downgrade must cope with rows and references
        user = new_id()
        conn.execute(
            sa.text(
                "INSERT INTO users (user_id, name, gender, account_type, socials, last_sessions,"
                " created_at, updated_at) VALUES (:id, 'Ada', 'female', 'guest', '{}', '[]',"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ).bindparams(sa.bindparam("id", user, type_=sa.Uuid(as_uuid=False)))
        )
        conn.execute(
            sa.text(
                "INSERT INTO sessions (token_hash, user_id, created_at, expires_at)"
                " VALUES (:h, :id, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ).bindparams(
                sa.bindparam("h", "a" * 64),
                sa.bindparam("id", user, type_=sa.Uuid(as_uuid=False)),
            )
        )

    run_sync(url, add_rows)
    migrate.downgrade(url, "base")
    assert migrate.current_revision(url) is None
    assert table_names(url) <= {"alembic_version"}

    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision()
    assert table_names(url) == TABLES | {"alembic_version"}
    assert schema_differences(url) == []


def test_live_schema_matches_the_metadata(url: str) -> None:
    # Before any migration the comparison sees every table missing: it is looking.
    missing = schema_differences(url)
    assert {diff[1].name for diff in missing if diff[0] == "add_table"} == TABLES
    migrate.upgrade(url)
    # Types, nullability, server defaults, indexes, unique and foreign keys: no difference,
    # so the hand-written migration and adapters/sql/schema.py describe the same schema.
    assert schema_differences(url) == []


def test_check_constraints_are_enforced(url: str) -> None:
    migrate.upgrade(url)
    low, high = sorted([new_id(), new_id()])
    uuid = sa.Uuid(as_uuid=False)

    def insert_user(conn: Connection, user_id: str, gender: str, account_type: str) -> None:
        conn.execute(
            sa.text(
                "INSERT INTO users (user_id, name, gender, account_type, socials, last_sessions,"
                " created_at, updated_at) VALUES (:id, 'A', :g, :a, '{}', '[]',"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ).bindparams(sa.bindparam("id", user_id, type_=uuid), g=gender, a=account_type)
        )

    run_sync(url, lambda conn: insert_user(conn, low, "female", "guest"))
    run_sync(url, lambda conn: insert_user(conn, high, "male", "permanent"))

    def cooldown(first: str, second: str) -> Any:
        return lambda conn: conn.execute(
            sa.text(
                "INSERT INTO cooldowns (user_id_1, user_id_2, expires_at, created_at)"
                " VALUES (:a, :b, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ).bindparams(
                sa.bindparam("a", first, type_=uuid), sa.bindparam("b", second, type_=uuid)
            )
        )

    def invite(kind: str) -> Any:
        return lambda conn: conn.execute(
            sa.text(
                "INSERT INTO invite_codes (code, created_at, type, max_uses, uses_remaining,"
                " used_by) VALUES (:c, CURRENT_TIMESTAMP, :t, 1, 1, '[]')"
            ),
            {"c": f"C-{kind}", "t": kind},
        )

    bad = [
        lambda conn: insert_user(conn, new_id(), "robot", "guest"),
        lambda conn: insert_user(conn, new_id(), "female", "vip"),
        cooldown(high, low),
        invite("vip"),
    ]
    for statement in bad:
        with pytest.raises(sa_exc.IntegrityError):
            run_sync(url, statement)
    run_sync(url, cooldown(low, high))
    run_sync(url, invite("admin"))


def test_sqlite_enforces_foreign_keys(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    pragmas = run_sync(
        sqlite_url,
        lambda conn: (
            conn.exec_driver_sql("PRAGMA foreign_keys").scalar(),
            conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
        ),
    )
    assert pragmas == (1, "wal")

    def orphan_session(conn: Connection) -> None:
        conn.execute(
            sa.text(
                "INSERT INTO sessions (token_hash, user_id, created_at, expires_at)"
                " VALUES (:h, :id, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ).bindparams(
                sa.bindparam("h", "b" * 64),
                sa.bindparam("id", new_id(), type_=sa.Uuid(as_uuid=False)),
            )
        )

    with pytest.raises(sa_exc.IntegrityError, match="FOREIGN KEY"):
        run_sync(sqlite_url, orphan_session)


def test_unreachable_postgres_is_unavailable_without_the_password() -> None:
    port = free_port()  # bound, then closed: nothing listens
    url = f"postgresql://napalm:hunter2secret@127.0.0.1:{port}/napalm"
    attempts: list[Callable[[], object]] = [
        lambda: migrate.upgrade(url),
        lambda: migrate.downgrade(url, "base"),
        lambda: migrate.current_revision(url),
    ]
    for attempt in attempts:
        with pytest.raises(Unavailable) as caught:
            attempt()
        message = caught.value.message
        assert f"127.0.0.1:{port}" in message
        assert "hunter2secret" not in message
        assert "\n" not in message


def test_unknown_postgres_database_is_unavailable(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    url = parts._replace(path="/napalmsky_no_such_database").geturl()
    with pytest.raises(Unavailable, match="does not exist"):
        migrate.upgrade(url)


async def test_migrations_refuse_a_running_event_loop(sqlite_url: str) -> None:
    with pytest.raises(RuntimeError, match="to_thread"):
        migrate.upgrade(sqlite_url)
    await asyncio.to_thread(migrate.upgrade, sqlite_url)
    assert await asyncio.to_thread(migrate.current_revision, sqlite_url) == (
        migrate.head_revision()
    )


def test_urls_are_normalised_to_async_drivers() -> None:
    assert async_url("postgres://u:p@db:5433/app") == "postgresql+asyncpg://u:p@db:5433/app"
    assert async_url("postgresql://u@db/app?sslmode=require") == (
        "postgresql+asyncpg://u@db/app?ssl=require"
    )
    assert async_url("sqlite:///data/napalm.db") == "sqlite+aiosqlite:///data/napalm.db"
    assert async_url("sqlite+aiosqlite:////abs/x.db") == "sqlite+aiosqlite:////abs/x.db"
    with pytest.raises(InvalidArgument):
        async_url("mysql://u:p@db/app")


def test_mask_url_hides_the_password() -> None:
    assert mask_url("postgresql://u:s%40cret@db:5432/app") == "postgresql://u:****@db:5432/app"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"
    assert "s3cret" not in mask_url("not a url://u:s3cret@host")
