"""Async engines for SQLite (aiosqlite) and PostgreSQL (asyncpg), and URL helpers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from core.errors import InvalidArgument, Unavailable
from core.settings import mask_url

_POSTGRES_DRIVERS = {"postgres", "postgresql", "postgresql+asyncpg"}
_SQLITE_DRIVERS = {"sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"}

POSTGRES_CONNECT_TIMEOUT = 10.0
"""Seconds asyncpg waits for a connection before the database counts as unavailable."""

SQLITE_POOL_SIZE = 10  # connections kept open to a SQLite file
SQLITE_POOL_OVERFLOW = 40  # more opened under load, closed when returned
SQLITE_BUSY_TIMEOUT = 15.0
"""Seconds a SQLite connection waits for another connection's write lock."""


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise InvalidArgument(f"not a database URL: {mask_url(url)}") from None


def async_url(url: str) -> str:
    """`url` with the async driver: postgres(ql):// -> postgresql+asyncpg://,
    sqlite:// -> sqlite+aiosqlite://. A libpq `sslmode` becomes asyncpg's `ssl`."""
    parsed = _parse(url)
    driver = parsed.drivername
    if driver in _POSTGRES_DRIVERS:
        parsed = parsed.set(drivername="postgresql+asyncpg")
        query = dict(parsed.query)
        if "sslmode" in query and "ssl" not in query:
            query["ssl"] = query.pop("sslmode")
            parsed = parsed.set(query=query)
    elif driver in _SQLITE_DRIVERS:
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    else:
        raise InvalidArgument(
            f"unsupported database URL scheme {driver!r}: use sqlite:/// or postgresql://"
        )
    return parsed.render_as_string(hide_password=False)




def is_sqlite(url: str) -> bool:
    return _parse(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for an in-memory database or another backend."""
    parsed = _parse(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def describe_location(url: str) -> str:
    """Where a URL points, safe to show: host:port for a server, the path for SQLite."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        return str(path) if path is not None else "in-memory SQLite"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


# PostgreSQL SQLSTATE classes that mean "cannot use this database right now": connection
# exceptions, authorization, unknown database, insufficient resources, operator intervention.
_UNAVAILABLE_SQLSTATES = ("08", "28", "3D", "53", "57P")


def is_connection_error(error: BaseException) -> bool:
    """True when `error` means the database could not be reached or used, as opposed to a
    problem with a statement or its data."""
    if isinstance(error, OSError | TimeoutError):
        return True
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        sqlstate = getattr(error.orig, "sqlstate", None)
        return isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
    return False


def connection_error_reason(error: BaseException, url: str | None = None) -> str:
    """A one-line, credential-free reason for a connection error (no SQL, no parameters)."""
    root: BaseException = error
    if isinstance(root, sa_exc.DBAPIError) and isinstance(root.orig, BaseException):
        root = root.orig
    while root.__cause__ is not None and not isinstance(root, OSError):
        root = root.__cause__
    if isinstance(root, OSError):
        reason = root.strerror or type(root).__name__
    elif isinstance(root, TimeoutError):
        reason = "timed out"
    else:
        reason = str(root).splitlines()[0] if str(root) else type(root).__name__
        if reason.startswith("(") and ") " in reason:
            reason = reason.split(") ", 1)[1]
    if url is not None:
        password = _parse(url).password
        if password:
            reason = reason.replace(password, "***")
    return " ".join(reason.split())


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit survives a
        # crash of this process (the WAL is in the OS's hands), and only an OS crash or power
        # loss may roll back the last commits. FULL's fsync per commit, with one writer at a
        # time, capped sign-ups near 100 a second on this machine's disk.
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _owner_only(path: Path) -> Callable[[Any, Any], None]:
    """A connect hook that keeps the database file and its WAL/shared-memory files 0600: they
    hold password hashes, emails and chat."""

    def restrict(_dbapi_connection: Any, _record: Any) -> None:
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            try:
                if file.stat().st_mode & 0o077:
                    file.chmod(0o600)
            except OSError:
                pass  # not created yet, or not ours: nothing to tighten

    return restrict


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An AsyncEngine for `url` (normalised by async_url).

    SQLite: the file's directory is created, every connection enforces foreign keys and the
    database runs in WAL mode. PostgreSQL: connections are checked before use and connecting
    gives up after POSTGRES_CONNECT_TIMEOUT seconds. Extra keyword arguments go to
    sqlalchemy's create_async_engine.
    """
    normalised = async_url(url)
    if is_sqlite(normalised):
        path = sqlite_path(normalised)
        if path is not None:
            try:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise Unavailable(
                    f"cannot create the directory of SQLite database {path}: {exc.strerror}"
                ) from exc
        kwargs.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT})
        # Writers wait for their turn holding a pooled connection (see the store's write
        # queue), so readers need room beside them: a connection is a thread and a file handle.
        if path is not None:  # an in-memory database is one shared connection (StaticPool)
            kwargs.setdefault("pool_size", SQLITE_POOL_SIZE)
            kwargs.setdefault("max_overflow", SQLITE_POOL_OVERFLOW)
        engine = create_async_engine(normalised, **kwargs)
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        if path is not None:
            event.listen(engine.sync_engine, "connect", _owner_only(path))
        return engine
    kwargs.setdefault("connect_args", {"timeout": POSTGRES_CONNECT_TIMEOUT})
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(normalised, **kwargs)


__all__ = [
    "async_url",
    "connection_error_reason",
    "create_engine",
    "describe_location",
    "is_connection_error",
    "is_sqlite",
    "mask_url",
    "sqlite_path",
]
