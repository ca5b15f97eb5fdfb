"""Helpers shared by the SQL store's tests: empty a migrated database, inspect timestamps."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sql.schema import metadata


async def wipe(engine: AsyncEngine) -> None:
    """Delete every row of every table, children first."""
    async with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(sa.delete(table))


async def count_rows(engine: AsyncEngine, table: sa.Table) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


def datetimes_in(record: Any) -> list[datetime]:
    """Every datetime held by a record (nested records included)."""
    found: list[datetime] = []

    def visit(value: Any) -> None:
        if isinstance(value, datetime):
            found.append(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                visit(getattr(value, f.name))
        elif isinstance(value, tuple | list):
            for item in value:
                visit(item)

    visit(record)
    return found


def assert_aware_utc(record: Any) -> None:
    stamps = datetimes_in(record)
    assert stamps, "the record holds no timestamps"
    for stamp in stamps:
        assert stamp.tzinfo is not None, f"naive timestamp {stamp!r}"
        assert stamp.utcoffset() == timedelta(0), f"not UTC: {stamp!r}"
