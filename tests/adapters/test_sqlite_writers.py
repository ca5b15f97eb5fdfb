"""The SQLite store queues this process's transactions instead of letting them contend for
SQLite's single write lock (where a writer that waits longer than the busy timeout gets
"database is locked", answered to clients as `unavailable`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import sqlalchemy as sa

from adapters.sql import SqlStore, create_engine
from adapters.sql.migrate import upgrade
from adapters.sql.schema import users
from core.clock import FakeClock
from core.store import AccountType, Gender, NewUser
from tests.adapters.sql_fixtures import count_rows

WRITERS = 12
SHORT_BUSY_TIMEOUT = 0.05  # seconds: any writer left to SQLite's own waiting would fail


async def _until(condition: object, what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.005)


async def test_writers_wait_their_turn_while_a_transaction_holds_the_lock(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'napalmsky.db'}"
    await asyncio.to_thread(upgrade, url)
    store = SqlStore(create_engine(url, connect_args={"timeout": SHORT_BUSY_TIMEOUT}), FakeClock())
    db = store._db
    holding, release = asyncio.Event(), asyncio.Event()

    async def slow_writer() -> None:
        async with db.tx() as conn:  # writes, then keeps SQLite's write lock while it waits
            await conn.execute(sa.update(users).values(name="held"))
            holding.set()
            await release.wait()

    try:
        await store.users.create(NewUser(name="First", gender=Gender.FEMALE,
                                         account_type=AccountType.GUEST))
        holder = asyncio.create_task(slow_writer())
        await asyncio.wait_for(holding.wait(), 20)
        writers = [asyncio.create_task(store.users.create(NewUser(
            name=f"Writer {i}", gender=Gender.MALE, account_type=AccountType.GUEST)))
            for i in range(WRITERS)]
        # Either they all queue behind the holder, or (left to SQLite) some give up.
        await _until(lambda: db.queued == WRITERS or any(w.done() for w in writers),
                     "writers neither queued nor finished")
        release.set()
        await holder
        created = await asyncio.gather(*writers)  # raises Unavailable had any given up
        assert len({user.user_id for user in created}) == WRITERS
        assert await count_rows(store.engine, users) == WRITERS + 1
        assert db.queued == 0
    finally:
        release.set()
        await store.close()


async def test_readers_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    """WAL lets readers run alongside the one writer: a read is answered while a writing
    transaction holds the write turn (the deck, profiles and history stay fast under writes)."""
    url = f"sqlite:///{tmp_path / 'napalmsky.db'}"
    await asyncio.to_thread(upgrade, url)
    store = SqlStore(create_engine(url), FakeClock())
    db = store._db
    holding, release = asyncio.Event(), asyncio.Event()

    async def slow_writer() -> None:
        async with db.tx() as conn:
            await conn.execute(sa.update(users).values(name="held"))
            holding.set()
            await release.wait()

    try:
        first = await store.users.create(NewUser(name="First", gender=Gender.FEMALE,
                                                 account_type=AccountType.GUEST))
        holder = asyncio.create_task(slow_writer())
        await asyncio.wait_for(holding.wait(), 20)
        found = await asyncio.wait_for(store.users.get(first.user_id), 20)
        assert found is not None and found.name == "First"  # the committed state
        assert db.serial is not None and db.serial.locked()  # the writer still holds its turn
        release.set()
        await holder
    finally:
        release.set()
        await store.close()


async def test_no_free_connection_is_unavailable_not_internal(tmp_path: Path) -> None:
    """Every pooled connection busy past the pool timeout: a clear `unavailable` (503)."""
    from core.errors import Unavailable

    url = f"sqlite:///{tmp_path / 'napalmsky.db'}"
    await asyncio.to_thread(upgrade, url)
    store = SqlStore(create_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.2),
                     FakeClock())
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with store._db.tx():
            holding.set()
            await release.wait()

    try:
        holder = asyncio.create_task(hold())
        await asyncio.wait_for(holding.wait(), 20)
        try:
            await store.users.get_many([])
            await store.users.create(NewUser(name="Late", gender=Gender.FEMALE,
                                             account_type=AccountType.GUEST))
        except Unavailable as exc:
            assert "busy" in exc.message
        else:
            raise AssertionError("a request got a connection that was not there")
        release.set()
        await holder
    finally:
        release.set()
        await store.close()
