"""Alembic environment: runs migrations on an AsyncEngine (SQLite or PostgreSQL).

Configured programmatically by adapters.sql.migrate, which puts the database URL in
`config.attributes["url"]` (never in the ini options, where '%' in a password would break
interpolation and where it could be logged). Batch mode is on so ALTERs work on SQLite.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from adapters.sql.engine import async_url, create_engine
from adapters.sql.schema import metadata

config = context.config
target_metadata = metadata


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: call adapters.sql.migrate, or set sqlalchemy.url")
    return async_url(str(url))


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it (`alembic upgrade --sql`)."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode copies and drops tables; foreign keys must not fire while it does.
        # The PRAGMA is a no-op inside a transaction, so commit the autobegun one around it.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    if sqlite:
        violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()
        if violations:
            raise RuntimeError(f"migration left {len(violations)} foreign-key violations")
    connection.commit()


async def run_async_migrations() -> None:
    engine = create_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
