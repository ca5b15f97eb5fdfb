"""The durable store on SQL: SQLAlchemy Core repositories and Alembic migrations.

SQLite (aiosqlite) is the embedded default and PostgreSQL (asyncpg) the production database;
both run the same code and the same migrations.
"""

from adapters.sql.engine import async_url, create_engine, mask_url
from adapters.sql.repositories import SqlStore

__all__ = ["SqlStore", "async_url", "create_engine", "mask_url"]
