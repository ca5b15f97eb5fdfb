"""The durable store on SQLAlchemy Core: one implementation for SQLite and PostgreSQL.

Every statement is built with SQLAlchemy expressions (bound parameters, never formatted SQL).
Each repository method runs in one transaction. Database errors are translated at one place,
`_Db.tx`: unique violations become AlreadyExists, foreign-key violations NotFound (or
FailedPrecondition on delete), check / not-null / data errors InvalidArgument, and connection
failures Unavailable. Messages never contain SQL, parameters or credentials.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import UpdateBase

from adapters.sql import schema as t
from adapters.sql.engine import connection_error_reason, describe_location, is_connection_error
from core.clock import Clock, utcnow
from core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NapalmError,
    NotFound,
    Unavailable,
)
from core.ids import RoomId, UserId, is_uuid, new_id
from core.store import (
    MAX_CALL_MESSAGE_LENGTH,
    MAX_LAST_SESSIONS,
    USER_CHANGE_FIELDS,
    AccountType,
    BanRecord,
    BanStatus,
    Call,
    CallEndReason,
    CallMessage,
    CallSummary,
    ChatHistoryEntry,
    ChatMessage,
    Cooldown,
    Gender,
    IntroVideoJob,
    IntroVideoResult,
    IntroVideoStatus,
    InviteCode,
    InviteType,
    NewUser,
    PaidStatus,
    Recording,
    RecordingStatus,
    ReferralNotification,
    Report,
    ReviewStatus,
    Session,
    User,
    UserChanges,
)

_TOKEN_HASH = re.compile(r"^[0-9a-f]{64}$")
_INVITE_CODE = re.compile(r"^[A-Za-z0-9_-]{1,20}$")
MAX_LIST_LIMIT = 1000

_E = TypeVar("_E", bound=StrEnum)

# SQLSTATEs (PostgreSQL) and extended result codes (SQLite) of integrity violations.
_PG_UNIQUE, _PG_FOREIGN_KEY = "23505", "23503"
_SQLITE_UNIQUE = {1555, 2067}  # SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE
_SQLITE_FOREIGN_KEY = 787  # SQLITE_CONSTRAINT_FOREIGNKEY

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Validation: the same answer on both backends (SQLite does not check lengths or UUIDs).


def _id(value: str, what: str) -> str:
    if not isinstance(value, str) or not is_uuid(value):
        raise InvalidArgument(f"{what} is not a valid id")
    return value


def _opt_id(value: str | None, what: str) -> str | None:
    return None if value is None else _id(value, what)


def _time(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(f"{what} must be a timezone-aware datetime")
    return value


def _opt_time(value: datetime | None, what: str) -> datetime | None:
    return None if value is None else _time(value, what)


def _enum(cls: type[_E], value: Any, what: str) -> _E:
    try:
        return cls(value)
    except ValueError:
        raise InvalidArgument(f"{what} must be one of {', '.join(cls)}") from None


def _count(value: int, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(f"{what} must be an integer >= {minimum}")
    return value


def _check_lengths(table: sa.Table, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, str):
            length = getattr(table.c[key].type, "length", None)
            if isinstance(length, int) and len(value) > length:
                raise InvalidArgument(f"{key} is longer than {length} characters")


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidArgument(f"limit must be between 1 and {MAX_LIST_LIMIT}")
    return limit


# ---------------------------------------------------------------------------------------------
# Rows to records.


def _user(row: RowMapping) -> User:
    return User(
        user_id=UserId(row["user_id"]),
        name=row["name"],
        gender=Gender(row["gender"]),
        account_type=AccountType(row["account_type"]),
        email=row["email"],
        password_hash=row["password_hash"],
        selfie_url=row["selfie_url"],
        video_url=row["video_url"],
        socials={str(k): str(v) for k, v in (row["socials"] or {}).items()},
        timer_total_seconds=row["timer_total_seconds"],
        session_count=row["session_count"],
        last_sessions=tuple(CallSummary.from_json(s) for s in row["last_sessions"] or ()),
        referral_code=row["referral_code"],
        referred_by=_opt_user(row["referred_by"]),
        introduced_to=_opt_user(row["introduced_to"]),
        introduced_by=_opt_user(row["introduced_by"]),
        paid_status=PaidStatus(row["paid_status"]),
        paid_at=row["paid_at"],
        invite_code_used=row["invite_code_used"],
        my_invite_code=row["my_invite_code"],
        invite_code_uses_remaining=row["invite_code_uses_remaining"],
        ban_status=BanStatus(row["ban_status"]),
        banned_at=row["banned_at"],
        banned_reason=row["banned_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        is_admin=bool(row["is_admin"]),
        totp_secret=row["totp_secret"],
    )


def _opt_user(value: str | None) -> UserId | None:
    return None if value is None else UserId(value)


def _session(row: RowMapping) -> Session:
    return Session(
        token_hash=row["token_hash"],
        user_id=UserId(row["user_id"]),
        ip_address=row["ip_address"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        mfa=bool(row["mfa"]),
    )


def _chat(row: RowMapping) -> ChatHistoryEntry:
    return ChatHistoryEntry(
        session_id=row["session_id"],
        user_id=UserId(row["user_id"]),
        partner_id=UserId(row["partner_id"]),
        partner_name=row["partner_name"],
        room_id=RoomId(row["room_id"]),
        started_at=row["started_at"],
        duration_seconds=row["duration"],
        messages=tuple(ChatMessage.from_json(m) for m in row["messages"] or ()),
        created_at=row["created_at"],
    )


def _cooldown(row: RowMapping) -> Cooldown:
    return Cooldown(
        user_id_1=UserId(row["user_id_1"]),
        user_id_2=UserId(row["user_id_2"]),
        expires_at=row["expires_at"],
        created_at=row["created_at"],
    )


def _invite(row: RowMapping) -> InviteCode:
    return InviteCode(
        code=row["code"],
        created_by=_opt_user(row["created_by"]),
        created_by_name=row["created_by_name"],
        created_at=row["created_at"],
        type=InviteType(row["type"]),
        max_uses=row["max_uses"],
        uses_remaining=row["uses_remaining"],
        used_by=tuple(UserId(str(u)) for u in row["used_by"] or ()),
        is_active=bool(row["is_active"]),
    )


def _report(row: RowMapping) -> Report:
    room = row["room_id"]
    return Report(
        report_id=row["report_id"],
        reported_user_id=UserId(row["reported_user_id"]),
        reporter_user_id=UserId(row["reporter_user_id"]),
        reporter_ip=row["reporter_ip"],
        reason=row["reason"],
        room_id=None if room is None else RoomId(room),
        reported_at=row["reported_at"],
    )


def _ban(row: RowMapping) -> BanRecord:
    review = row["review_status"]
    return BanRecord(
        user_id=UserId(row["user_id"]),
        ban_status=BanStatus(row["ban_status"]),
        banned_at=row["banned_at"],
        banned_reason=row["banned_reason"],
        report_count=row["report_count"],
        review_status=None if review is None else ReviewStatus(review),
        reviewed_at=row["reviewed_at"],
        reviewed_by=_opt_user(row["reviewed_by"]),
        ip_addresses=tuple(str(ip) for ip in row["ip_addresses"] or ()),
    )


def _notification(row: RowMapping) -> ReferralNotification:
    return ReferralNotification(
        notification_id=row["id"],
        for_user_id=UserId(row["for_user_id"]),
        referred_user_id=UserId(row["referred_user_id"]),
        referred_name=row["referred_name"],
        introduced_by=UserId(row["introduced_by"]),
        introduced_by_name=row["introduced_by_name"],
        created_at=row["created_at"],
        read=bool(row["read"]),
    )


def _call(row: RowMapping) -> Call:
    reason = row["end_reason"]
    return Call(
        room_id=RoomId(row["room_id"]),
        caller_id=UserId(row["caller_id"]),
        callee_id=UserId(row["callee_id"]),
        node_id=row["node_id"],
        started_at=row["started_at"],
        ends_at=row["ends_at"],
        ended_at=row["ended_at"],
        end_reason=None if reason is None else CallEndReason(reason),
        alive_at=row["alive_at"],
        recorded=bool(row["recorded"]),
    )


def _call_message(row: RowMapping) -> CallMessage:
    return CallMessage(
        message_id=int(row["message_id"]),
        room_id=RoomId(row["room_id"]),
        sender_id=UserId(row["sender_id"]),
        text=row["text"],
        sent_at=row["sent_at"],
    )


# ---------------------------------------------------------------------------------------------
# Transactions and error translation.


def _violation(error: sa_exc.IntegrityError) -> str:
    orig = error.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate == _PG_UNIQUE:
        return "unique"
    if sqlstate == _PG_FOREIGN_KEY:
        return "foreign_key"
    code = getattr(orig, "sqlite_errorcode", None)
    if code in _SQLITE_UNIQUE:
        return "unique"
    if code == _SQLITE_FOREIGN_KEY:
        return "foreign_key"
    return "other"


class _WriteTurn:
    """One transaction's claim on its store's `serial` lock (SQLite), taken at its first write
    statement and given back once the transaction has committed or rolled back."""

    __slots__ = ("_db", "held")

    def __init__(self, db: _Db) -> None:
        self._db, self.held = db, False

    async def take(self) -> None:
        serial = self._db.serial
        if serial is None or self.held:
            return
        self._db.queued += 1
        try:
            await serial.acquire()
        finally:
            self._db.queued -= 1
        self.held = True

    def release(self) -> None:
        if self.held and self._db.serial is not None:
            self.held = False
            self._db.serial.release()


class _SerialWrites:
    """An AsyncConnection whose first INSERT, UPDATE or DELETE waits for the write turn.

    Before it the transaction has only read (pysqlite begins SQLite's transaction at the first
    write), so nothing is held while waiting."""

    __slots__ = ("_conn", "_turn")

    def __init__(self, conn: AsyncConnection, turn: _WriteTurn) -> None:
        self._conn, self._turn = conn, turn

    async def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        if not self._turn.held and isinstance(statement, UpdateBase):
            await self._turn.take()
        return await self._conn.execute(statement, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _Db:
    """What every repository shares: the engine, the clock, and the translation of errors."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self.closed = False
        self.location = describe_location(engine.url.render_as_string(hide_password=True))
        # SQLite takes one writer at a time and answers "database is locked" to a writer that
        # waited its busy timeout. Under load the holder of the lock needs event-loop turns to
        # finish while every other writer waits in its own thread: so this process queues its
        # writing transactions here, one at a time, from their first write statement to their
        # commit, and SQLite's busy timeout only covers other processes (`napalmsky migrate`,
        # `admin create`). Reads run alongside (WAL); PostgreSQL needs no queue at all.
        self.serial: asyncio.Lock | None = (
            asyncio.Lock() if engine.dialect.name == "sqlite" else None)
        self.queued = 0  # transactions waiting for `serial`

    def now(self) -> datetime:
        return utcnow(self.clock)

    def unavailable(self, error: BaseException | None = None) -> Unavailable:
        if error is None:
            return Unavailable(f"store is closed ({self.location})")
        return Unavailable(
            f"database unavailable at {self.location}: {connection_error_reason(error)}"
        )

    @asynccontextmanager
    async def tx(
        self,
        *,
        conflict: str = "the record already exists",
        missing: str = "a referenced record does not exist",
        referenced: str | None = None,
    ) -> AsyncIterator[AsyncConnection]:
        """One transaction. `referenced`, when given, is the FailedPrecondition message for a
        foreign-key violation (a delete of a row others refer to) instead of NotFound."""
        if self.closed:
            raise self.unavailable()
        turn = _WriteTurn(self)
        try:
            try:
                async with self.engine.begin() as conn:
                    yield conn if self.serial is None else cast(
                        AsyncConnection, _SerialWrites(conn, turn))
            finally:
                turn.release()
        except NapalmError:
            raise
        except sa_exc.IntegrityError as error:
            kind = _violation(error)
            if kind == "unique":
                raise AlreadyExists(conflict) from error
            if kind == "foreign_key":
                if referenced is not None:
                    raise FailedPrecondition(referenced) from error
                raise NotFound(missing) from error
            raise InvalidArgument("a value breaks a constraint of the store") from error
        except sa_exc.DataError as error:
            raise InvalidArgument("a value is not valid for the store") from error
        except sa_exc.TimeoutError as error:  # every pooled connection busy for pool_timeout
            log.warning("store busy: no database connection free within the pool timeout")
            raise Unavailable("the store is busy; try again shortly") from error
        except Exception as error:
            if is_connection_error(error):
                raise self.unavailable(error) from error
            if isinstance(error, sa_exc.DBAPIError):
                # No database error reaches a client as `internal`: logged (without SQL or
                # parameters), answered as the store being unable to serve.
                log.error("store error: %s", type(error.orig).__name__)
                raise Unavailable("the store could not process the request") from error
            raise

    def insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        """An INSERT that supports on_conflict_do_update on this engine's dialect."""
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)


# ---------------------------------------------------------------------------------------------
# Repositories.


class SqlUserRepository:
    def __init__(self, db: _Db) -> None:
        self._db = db

    async def create(self, user: NewUser) -> User:
        now = self._db.now()
        values: dict[str, Any] = {
            "user_id": _id(user.user_id, "user_id"),
            "name": user.name,
            "gender": _enum(Gender, user.gender, "gender").value,
            "account_type": _enum(AccountType, user.account_type, "account_type").value,
            "email": user.email,
            "password_hash": user.password_hash,
            "selfie_url": user.selfie_url,
            "video_url": user.video_url,
            "socials": dict(user.socials),
            "timer_total_seconds": 0,
            "session_count": 0,
            "last_sessions": [],
            "referral_code": user.referral_code,
            "referred_by": _opt_id(user.referred_by, "referred_by"),
            "introduced_to": _opt_id(user.introduced_to, "introduced_to"),
            "introduced_by": _opt_id(user.introduced_by, "introduced_by"),
            "paid_status": _enum(PaidStatus, user.paid_status, "paid_status").value,
            "paid_at": _opt_time(user.paid_at, "paid_at"),
            "invite_code_used": user.invite_code_used,
            "my_invite_code": user.my_invite_code,
            "invite_code_uses_remaining": _count(
                user.invite_code_uses_remaining, "invite_code_uses_remaining"
            ),
            "ban_status": BanStatus.NONE.value,
            "banned_at": None,
            "banned_reason": None,
            "created_at": now,
            "updated_at": now,
            "is_admin": bool(user.is_admin),
            "totp_secret": user.totp_secret,
        }
        _check_lengths(t.users, values)
        async with self._db.tx(
            conflict="a user with this email or id already exists",
            missing="a referenced user does not exist",
        ) as conn:
            row = (await conn.execute(sa.insert(t.users).values(values).returning(t.users))).one()
        return _user(row._mapping)

    async def get(self, user_id: UserId) -> User | None:
        if not is_uuid(user_id):
            return None
        async with self._db.tx() as conn:
            row = (
                await conn.execute(sa.select(t.users).where(t.users.c.user_id == user_id))
            ).first()
        return None if row is None else _user(row._mapping)

    async def get_many(self, user_ids: Sequence[UserId]) -> dict[UserId, User]:
        wanted = sorted({u for u in user_ids if is_uuid(u)})
        if not wanted:
            return {}
        if len(wanted) > MAX_LIST_LIMIT:
            raise InvalidArgument(f"at most {MAX_LIST_LIMIT} users at a time")
        async with self._db.tx() as conn:
            rows = (
                await conn.execute(sa.select(t.users).where(t.users.c.user_id.in_(wanted)))
            ).all()
        users = (_user(row._mapping) for row in rows)
        return {user.user_id: user for user in users}

    async def get_by_email(self, email: str) -> User | None:
        async with self._db.tx() as conn:
            row = (await conn.execute(sa.select(t.users).where(t.users.c.email == email))).first()
        return None if row is None else _user(row._mapping)

    async def update(self, user_id: UserId, changes: UserChanges) -> User:
        unknown = set(changes) - USER_CHANGE_FIELDS
        if unknown:
            raise InvalidArgument(f"cannot change {', '.join(sorted(unknown))}")
        if not is_uuid(user_id):
            raise NotFound("user not found")
        values: dict[str, Any] = dict(changes)
        for key, cls in (
            ("gender", Gender),
            ("account_type", AccountType),
            ("paid_status", PaidStatus),
            ("ban_status", BanStatus),
        ):
            if key in values:
                values[key] = _enum(cls, values[key], key).value
        for key in ("referred_by", "introduced_to", "introduced_by"):
            if key in values:
                values[key] = _opt_id(values[key], key)
        for key in ("paid_at", "banned_at"):
            if key in values:
                values[key] = _opt_time(values[key], key)
        if "socials" in values:
            values["socials"] = dict(values["socials"])
        if "invite_code_uses_remaining" in values:
            _count(values["invite_code_uses_remaining"], "invite_code_uses_remaining")
        if "is_admin" in values and not isinstance(values["is_admin"], bool):
            raise InvalidArgument("is_admin must be a boolean")
        for key in ("name", "gender", "account_type", "socials", "paid_status", "ban_status",
                    "is_admin"):
            if key in values and values[key] is None:
                raise InvalidArgument(f"{key} cannot be empty")
        _check_lengths(t.users, values)
        values["updated_at"] = self._db.now()
        async with self._db.tx(
            conflict="a user with this email already exists",
            missing="a referenced user does not exist",
        ) as conn:
            row = (
                await conn.execute(
                    sa.update(t.users)
                    .where(t.users.c.user_id == user_id)
                    .values(values)
                    .returning(t.users)
                )
            ).first()
        if row is None:
            raise NotFound("user not found")
        return _user(row._mapping)

    async def record_call(self, user_id: UserId, summary: CallSummary) -> User:
        seconds = _count(summary.duration_seconds, "duration_seconds")
        _time(summary.ended_at, "ended_at")
        _id(summary.partner_id, "partner_id")
        if not is_uuid(user_id):
            raise NotFound("user not found")
        now = self._db.now()
        users = t.users
        async with self._db.tx() as conn:
            # The counters' UPDATE comes first: it takes the row lock (PostgreSQL) or the write
            # lock (SQLite), so the read-modify-write of last_sessions below cannot race.
            locked = (
                await conn.execute(
                    sa.update(users)
                    .where(users.c.user_id == user_id)
                    .values(
                        timer_total_seconds=users.c.timer_total_seconds + seconds,
                        session_count=users.c.session_count + 1,
                        updated_at=now,
                    )
                    .returning(users.c.last_sessions)
                )
            ).first()
            if locked is None:
                raise NotFound("user not found")
            previous = list(locked._mapping["last_sessions"] or [])
            recent = [summary.to_json(), *previous][:MAX_LAST_SESSIONS]
            row = (
                await conn.execute(
                    sa.update(users)
                    .where(users.c.user_id == user_id)
                    .values(last_sessions=recent)
                    .returning(users)
                )
            ).one()
        return _user(row._mapping)

    async def delete(self, user_id: UserId) -> bool:
        if not is_uuid(user_id):
            return False
        async with self._db.tx(referenced="the user still has records that refer to them") as conn:
            result = await conn.execute(sa.delete(t.users).where(t.users.c.user_id == user_id))
        return result.rowcount > 0


class SqlSessionRepository:
    def __init__(self, db: _Db) -> None:
        self._db = db

    async def create(
        self,
        user_id: UserId,
        token_hash: str,
        ip_address: str | None,
        expires_at: datetime,
        mfa: bool = False,
    ) -> Session:
        if not isinstance(token_hash, str) or not _TOKEN_HASH.match(token_hash):
            raise InvalidArgument("token_hash must be a hex SHA-256 digest")
        values: dict[str, Any] = {
            "token_hash": token_hash,
            "user_id": _id(user_id, "user_id"),
            "ip_address": ip_address,
            "created_at": self._db.now(),
            "expires_at": _time(expires_at, "expires_at"),
            "mfa": bool(mfa),
        }
        _check_lengths(t.sessions, values)
        async with self._db.tx(
            conflict="a session with this token already exists", missing="user not found"
        ) as conn:
            row = (
                await conn.execute(sa.insert(t.sessions).values(values).returning(t.sessions))
            ).one()
        return _session(row._mapping)

    async def get_by_token_hash(self, token_hash: str) -> Session | None:
        if not isinstance(token_hash, str) or not _TOKEN_HASH.match(token_hash):
            return None
        s = t.sessions
        async with self._db.tx() as conn:
            row = (
                await conn.execute(
                    sa.select(s).where(
                        s.c.token_hash == token_hash, s.c.expires_at > self._db.now()
                    )
                )
            ).first()
        return None if row is None else _session(row._mapping)

    async def list_for_user(self, user_id: UserId) -> list[Session]:
        if not is_uuid(user_id):
            return []
        s = t.sessions
        async with self._db.tx() as conn:
            rows = (
                await conn.execute(
                    sa.select(s)
                    .where(s.c.user_id == user_id, s.c.expires_at > self._db.now())
                    .order_by(s.c.created_at)
                )
            ).all()
        return [_session(row._mapping) for row in rows]

    async def delete(self, token_hash: str) -> bool:
        async with self._db.tx() as conn:
            result = await conn.execute(
                sa.delete(t.sessions).where(t.sessions.c.token_hash == token_hash)
            )
        return result.rowcount > 0

    async def delete_for_user(self, user_id: UserId) -> int:
        if not is_uuid(user_id):
            return 0
        async with self._db.tx() as conn:
            result = await conn.execute(
                sa.delete(t.sessions).where(t.sessions.c.user_id == user_id)
            )
        return int(result.rowcount)

    async def delete_expired(self) -> int:
        async with self._db.tx() as conn:
            result = await conn.execute(
                sa.delete(t.sessions).where(t.sessions.c.expires_at <= self._db.now())
            )
        return int(result.rowcount)


class SqlChatHistoryRepository:
    def __init__(self, db: _Db) -> None:
        self._db = db

    async def add(
        self,
        *,
        session_id: str,
        user_id: UserId,
        partner_id: UserId,
        partner_name: str | None,
        room_id: RoomId,
        started_at: datetime,
        duration_seconds: int,
        messages: Sequence[ChatMessage] = (),
    ) -> ChatHistoryEntry:
        if not session_id:
            raise InvalidArgument("session_id cannot be empty")
        for message in messages:
            _time(message.sent_at, "sent_at")
        values: dict[str, Any] = {
            "session_id": session_id,
            "user_id": _id(user_id, "user_id"),
            "partner_id": _id(partner_id, "partner_id"),
            "partner_name": partner_name,
            "room_id": _id(room_id, "room_id"),
            "started_at": _time(started_at, "started_at"),
            "duration": _count(duration_seconds, "duration_seconds"),
            "messages": [m.to_json() for m in messages],
            "created_at": self._db.now(),
        }
        _check_lengths(t.chat_history, values)
        async with self._db.tx(
            conflict="a chat history entry with this session_id already exists",
            missing="user not found",
        ) as conn:
            row = (
                await conn.execute(
                    sa.insert(t.chat_history).values(values).returning(t.chat_history)
                )
            ).one()
        return _chat(row._mapping)

    async def list_for_user(self, user_id: UserId, limit: int = 50) -> list[ChatHistoryEntry]:
        _limit(limit)
        if not is_uuid(user_id):
            return []
        c = t.chat_history.c
        async with self._db.tx() as conn:
            rows = (
                await conn.execute(
                    sa.select(t.chat_history)
                    .where(c.user_id == user_id)
                    .order_by(c.started_at.desc(), c.session_id.desc())
                    .limit(limit)
                )
            ).all()
        return [_chat(row._mapping) for row in rows]


class SqlCallRepository:
    def __init__(self, db: _Db) -> None:
        self._db = db

    async def create(
        self,
        *,
        room_id: RoomId,
        caller_id: UserId,
        callee_id: UserId,
        node_id: str,
        started_at: datetime,
        ends_at: datetime,
        recorded: bool = False,
    ) -> Call:
        values: dict[str, Any] = {
            "room_id": _id(room_id, "room_id"),
            "caller_id": _id(caller_id, "caller_id"),
            "callee_id": _id(callee_id, "callee_id"),
            "node_id": node_id,
            "started_at": _time(started_at, "started_at"),
            "ends_at": _time(ends_at, "ends_at"),
            "ended_at": None,
            "end_reason": None,
            "alive_at": _time(started_at, "started_at"),
            "recorded": bool(recorded),
        }
        if caller_id == callee_id:
            raise InvalidArgument("a call needs two different users")
        if ends_at <= started_at:
            raise InvalidArgument("ends_at must be after started_at")
        if not isinstance(node_id, str) or not node_id:
            raise InvalidArgument("node_id cannot be empty")
        _check_lengths(t.calls, values)
        async with self._db.tx(
            conflict="a call with this room id already exists", missing="user not found"
        ) as conn:
            row = (await conn.execute(sa.insert(t.calls).values(values).returning(t.calls))).one()
        return _call(row._mapping)

    async def get(self, room_id: RoomId) -> Call | None:
        if not is_uuid(room_id):
            return None
        async with self._db.tx() as conn:
            row = (
                await conn.execute(sa.select(t.calls).where(t.calls.c.room_id == room_id))
            ).first()
        return None if row is None else _call(row._mapping)

    async def active_for_user(self, user_id: UserId) -> Call | None:
        return await self._latest_for_user(user_id, ended=False)

    async def mark_ended(self, room_id: RoomId, reason: CallEndReason, ended_at: datetime) -> bool:
        value = _enum(CallEndReason, reason, "reason").value
        _time(ended_at, "ended_at")
        if not is_uuid(room_id):
            return False
        c = t.calls.c
        async with self._db.tx() as conn:
            # One conditional UPDATE: of racing callers exactly one finds ended_at still NULL.
            result = await conn.execute(
                sa.update(t.calls)
                .where(c.room_id == room_id, c.ended_at.is_(None))
                .values(ended_at=ended_at, end_reason=value)
            )
        return result.rowcount == 1

    async def last_ended(self, user_id: UserId) -> Call | None:
        return await self._latest_for_user(user_id, ended=True)

    async def _latest_for_user(self, user_id: UserId, *, ended: bool) -> Call | None:
        """The user's newest unfinished call (by start), or newest finished one (by end)."""
        if not is_uuid(user_id):
            return None
        c = t.calls.c
        state, newest = ((c.ended_at.is_not(None), c.ended_at) if ended
                         else (c.ended_at.is_(None), c.started_at))
        async with self._db.tx() as conn:
            row = (
                await conn.execute(
                    sa.select(t.calls)
                    .where(state, sa.or_(c.caller_id == user_id, c.callee_id == user_id))
                    .order_by(newest.desc(), c.room_id.desc())
                    .limit(1)
                )
            ).first()
        return None if row is None else _call(row._mapping)

    async def touch(self, room_ids: Sequence[RoomId], at: datetime) -> int:
        _time(at, "at")
        ids = [room_id for room_id in room_ids if is_uuid(room_id)]
        if not ids:
            return 0
        c = t.calls.c
        async with self._db.tx() as conn:
            result = await conn.execute(
                sa.update(t.calls)
                .where(c.room_id.in_(ids), c.ended_at.is_(None))
                .values(alive_at=at)
            )
        return int(result.rowcount)

    async def unfinished(self, *, ends_before: datetime, limit: int = 100) -> list[Call]:
        _time(ends_before, "ends_before")
        _limit(limit)
        c = t.calls.c
        async with self._db.tx() as conn:
            rows = (
                await conn.execute(
                    sa.select(t.calls)
                    .where(c.ended_at.is_(None), c.ends_at < ends_before)
                    .order_by(c.ends_at, c.started_at, c.room_id)
                    .limit(limit)
                )
            ).all()
        return [_call(row._mapping) for row in rows]

    async def add_message(
        self, room_id: RoomId, sender_id: UserId, text: str, sent_at: datetime
    ) -> CallMessage:
        if not isinstance(text, str) or not text.strip():
            raise InvalidArgument("text cannot be empty")
        if len(text) > MAX_CALL_MESSAGE_LENGTH:
            raise InvalidArgument(f"text is longer than {MAX_CALL_MESSAGE_LENGTH} characters")
        values: dict[str, Any] = {
            "room_id": _id(room_id, "room_id"),
            "sender_id": _id(sender_id, "sender_id"),
            "text": text,
            "sent_at": _time(sent_at, "sent_at"),
        }
        async with self._db.tx(missing="call or sender not found") as conn:
            row = (
                await conn.execute(
                    sa.insert(t.call_messages).values(values).returning(t.call_messages)
                )
            ).one()
        return _call_message(row._mapping)

    async def messages(self, room_id: RoomId) -> list[CallMessage]:
        if not is_uuid(room_id):
            return []
        c = t.call_messages.c
        async with self._db.tx() as conn:
            rows = (
                await conn.execute(
                    sa.select(t.call_messages)
                    .where(c.room_id == room_id)
                    .order_by(c.message_id)
                )
            ).all()
        return [_call_message(row._mapping) for row in rows]


def _pair(a: UserId, b: UserId) -> tuple[str, str]:
    """The pair in storage order. Ids are canonical lowercase UUIDs, so string order is the
    order of PostgreSQL's uuid type and of SQLite's hex text alike."""
    first, second = sorted((a, b))
    return first, second


class SqlCooldownRepository:
    def __init__(self, db: _Db) -> None:
        self._db = db

    async def set(self, a: UserId, b: UserId, expires_at: datetime) -> Cooldown:
        _id(a, "user id")
        _id(b, "user id")
        if a == b:
            raise InvalidArgument("a cooldown needs two different users")
        first, second = _pair(a, b)
        values: dict[str, Any] = {
            "user_id_1": first,
            "user_id_2": second,
            "expires_at": _time(expires_at, "expires_at"),
            "created_at": self._db.now(),
        }
        stmt = self._db.insert(t.cooldowns).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.cooldowns.c.user_id_1, t.cooldowns.c.user_id_2],
            set_={"expires_at": stmt.excluded.expires_at, "created_at": stmt.excluded.created_at},
        )
        async with self._db.tx(missing="user not found") as conn:
            row = (await conn.execute(stmt.returning(t.cooldowns))).one()
        return _cooldown(row._mapping)

    async def active_until(self, a: UserId, b: UserId) -> datetime | None:
        if not is_uuid(a) or not is_uuid(b) or a == b:
            return None
        first, second = _pair(a, b)
        c = t.cooldowns.c
        async with self._db.tx() as conn:
            value = (
                await conn.execute(
                    sa.select(c.expires_at).where(
                        c.user_id_1 == first,
                        c.user_id_2 == second,
                        c.expires_at > self._db.now(),
                    )
                )
            ).scalar_one_or_none()
        return value

    async def active_partners(self, user_id: UserId) -> builtins.set[UserId]:
        if not is_uuid(user_id):
            return set()
        c = t.cooldowns.c
        now = self._db.now()
        query = sa.union(
            sa.select(c.user_id_2.label("partner")).where(
                c.user_id_1 == user_id, c.expires_at > now
            ),
            sa.select(c.user_id_1.label("partner")).where(
                c.user_id_2 == user_id, c.expires_at > now
            ),
        )
        async with self._db.tx() as conn:
            partners = (await conn.execute(query)).scalars().all()
        return {UserId(str(p)) for p in partners}

    async def delete_expired(self) -> int:
        async with self._db.tx() as conn:
            result = await conn.execute(
                sa.delete(t.cooldowns).where(t.cooldowns.c.expires_at <= self._db.now())
            )
        return int(result.rowcount)


class SqlInviteCodeRepository:
    def __init__(self, db: _Db) -> None:
        self._db = db

    async def create(
        self,
        *,
        code: str,
        type: InviteType,
        max_uses: int,
        created_by: UserId | None = None,
        created_by_name: str | None = None,
    ) -> InviteCode:
        if not isinstance(code, str) or not _INVITE_CODE.match(code):
            raise InvalidArgument("an invite code is 1-20 letters, digits, '-' or '_'")
        uses = _count(max_uses, "max_uses", minimum=1)
        values: dict[str, Any] = {
            "code": code,
            "created_by": _opt_id(created_by, "created_by"),
            "created_by_name": created_by_name,
            "created_at": self._db.now(),
            "type": _enum(InviteType, type, "type").value,
            "max_uses": uses,
            "uses_remaining": uses,
            "used_by": [],
            "is_active": True,
        }
        _check_lengths(t.invite_codes, values)
        async with self._db.tx(
            conflict="this invite code already exists", missing="user not found"
        ) as conn:
            row = (
                await conn.execute(
                    sa.insert(t.invite_codes).values(values).returning(t.invite_codes)
                )
            ).one()
        return _invite(row._mapping)

    async def get(self, code: str) -> InviteCode | None:
        async with self._db.tx() as conn:
            row = (
                await conn.execute(sa.select(t.invite_codes).where(t.invite_codes.c.code == code))
            ).first()
        return None if row is None else _invite(row._mapping)

    async def redeem(self, code: str, user_id: UserId) -> InviteCode:
        _id(user_id, "user_id")
        c = t.invite_codes.c
        async with self._db.tx() as conn:
            # One conditional UPDATE decides who gets a use; it also locks the row (or, on
            # SQLite, the database) for the rest of this transaction.
            taken = (
                await conn.execute(
                    sa.update(t.invite_codes)
                    .where(c.code == code, c.uses_remaining > 0, c.is_active.is_(True))
                    .values(uses_remaining=c.uses_remaining - 1)
                    .returning(c.used_by)
                )
            ).first()
            if taken is None:
                current = (await conn.execute(sa.select(c.is_active).where(c.code == code))).first()
                if current is None:
                    raise NotFound("invite code not found")
                if not current._mapping["is_active"]:
                    raise FailedPrecondition("this invite code is no longer active")
                raise FailedPrecondition("this invite code has no uses left")
            used_by = [str(u) for u in taken._mapping["used_by"] or ()]
            if user_id in used_by:
                raise FailedPrecondition("this invite code was already redeemed by this user")
            exists = (
                await conn.execute(sa.select(t.users.c.user_id).where(t.users.c.user_id == user_id))
            ).first()
            if exists is None:
                raise NotFound("user not found")
            row = (
                await conn.execute(
                    sa.update(t.invite_codes)
                    .where(c.code == code)
                    .values(used_by=[*used_by, user_id])
                    .returning(t.invite_codes)
                )
            ).one()
        return _invite(row._mapping)

    async def deactivate(self, code: str) -> InviteCode:
        async with self._db.tx() as conn:
            row = (
                await conn.execute(
                    sa.update(t.invite_codes)
                    .where(t.invite_codes.c.code == code)
                    .values(is_active=False)
                    .returning(t.invite_codes)
                )
            ).first()
        if row is None:
            raise NotFound("invite code not found")
        return _invite(row._mapping)


class SqlReportRepository:
    def __init__(self, db: _Db) -> None:
        self._db = db

    async def add(
        self,
        *,
        reported_user_id: UserId,
        reporter_user_id: UserId,
        reporter_ip: str | None = None,
        reason: str | None = None,
        room_id: RoomId | None = None,
    ) -> Report:
        if reported_user_id == reporter_user_id:
            raise InvalidArgument("a user cannot report themselves")
        values: dict[str, Any] = {
            "report_id": new_id(),
            "reported_user_id": _id(reported_user_id, "reported_user_id"),
            "reporter_user_id": _id(reporter_user_id, "reporter_user_id"),
            "reporter_ip": reporter_ip,
            "reason": reason,
            "room_id": _opt_id(room_id, "room_id"),
            "reported_at": self._db.now(),
        }
        _check_lengths(t.reports, values)
        async with self._db.tx(missing="user not found") as conn:
            row = (
                await conn.execute(sa.insert(t.reports).values(values).returning(t.reports))
            ).one()
        return _report(row._mapping)

    async def count_for_user(self, user_id: UserId) -> int:
        if not is_uuid(user_id):
            return 0
        c = t.reports.c
        async with self._db.tx() as conn:
            count = (
                await conn.execute(
                    sa.select(sa.func.count(sa.distinct(c.reporter_user_id))).where(
                        c.reported_user_id == user_id
                    )
                )
            ).scalar_one()
        return int(count)

    async def list_for_user(self, user_id: UserId) -> list[Report]:
        if not is_uuid(user_id):
            return []
        c = t.reports.c
        async with self._db.tx() as conn:
            rows = (
                await conn.execute(
                    sa.select(t.reports)
                    .where(c.reported_user_id == user_id)
                    .order_by(c.reported_at.desc(), c.report_id)
                )
            ).all()
        return [_report(row._mapping) for row in rows]


class SqlBanRepository:
    def __init__(self, db: _Db) -> None:
        self._db = db

    async def put(self, record: BanRecord) -> BanRecord:
        review = record.review_status
        values: dict[str, Any] = {
            "user_id": _id(record.user_id, "user_id"),
            "ban_status": _enum(BanStatus, record.ban_status, "ban_status").value,
            "banned_at": _time(record.banned_at, "banned_at"),
            "banned_reason": record.banned_reason,
            "report_count": _count(record.report_count, "report_count"),
            "review_status": None
            if review is None
            else _enum(ReviewStatus, review, "review_status").value,
            "reviewed_at": _opt_time(record.reviewed_at, "reviewed_at"),
            "reviewed_by": _opt_id(record.reviewed_by, "reviewed_by"),
            "ip_addresses": [str(ip) for ip in record.ip_addresses],
        }
        _check_lengths(t.ban_records, values)
        stmt = self._db.insert(t.ban_records).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.ban_records.c.user_id],
            set_={key: stmt.excluded[key] for key in values if key != "user_id"},
        )
        async with self._db.tx(missing="user not found") as conn:
            row = (await conn.execute(stmt.returning(t.ban_records))).one()
        return _ban(row._mapping)

    async def get(self, user_id: UserId) -> BanRecord | None:
        if not is_uuid(user_id):
            return None
        async with self._db.tx() as conn:
            row = (
                await conn.execute(
                    sa.select(t.ban_records).where(t.ban_records.c.user_id == user_id)
                )
            ).first()
        return None if row is None else _ban(row._mapping)

    async def set_review(
        self, user_id: UserId, review_status: ReviewStatus, reviewed_by: UserId | None
    ) -> BanRecord:
        status = _enum(ReviewStatus, review_status, "review_status").value
        reviewer = _opt_id(reviewed_by, "reviewed_by")
        if not is_uuid(user_id):
            raise NotFound("no ban record for this user")
        async with self._db.tx(missing="reviewer not found") as conn:
            row = (
                await conn.execute(
                    sa.update(t.ban_records)
                    .where(t.ban_records.c.user_id == user_id)
                    .values(review_status=status, reviewed_at=self._db.now(), reviewed_by=reviewer)
                    .returning(t.ban_records)
                )
            ).first()
        if row is None:
            raise NotFound("no ban record for this user")
        return _ban(row._mapping)


class SqlReferralNotificationRepository:
    def __init__(self, db: _Db) -> None:
        self._db = db

    async def add(
        self,
        *,
        for_user_id: UserId,
        referred_user_id: UserId,
        introduced_by: UserId,
        referred_name: str | None = None,
        introduced_by_name: str | None = None,
    ) -> ReferralNotification:
        values: dict[str, Any] = {
            "id": new_id(),
            "for_user_id": _id(for_user_id, "for_user_id"),
            "referred_user_id": _id(referred_user_id, "referred_user_id"),
            "referred_name": referred_name,
            "introduced_by": _id(introduced_by, "introduced_by"),
            "introduced_by_name": introduced_by_name,
            "created_at": self._db.now(),
            "read": False,
        }
        _check_lengths(t.referral_notifications, values)
        async with self._db.tx(missing="user not found") as conn:
            row = (
                await conn.execute(
                    sa.insert(t.referral_notifications)
                    .values(values)
                    .returning(t.referral_notifications)
                )
            ).one()
        return _notification(row._mapping)

    async def list_for_user(
        self, user_id: UserId, *, unread_only: bool = False
    ) -> list[ReferralNotification]:
        if not is_uuid(user_id):
            return []
        c = t.referral_notifications.c
        query = sa.select(t.referral_notifications).where(c.for_user_id == user_id)
        if unread_only:
            query = query.where(c.read.is_(False))
        async with self._db.tx() as conn:
            rows = (await conn.execute(query.order_by(c.created_at.desc(), c.id))).all()
        return [_notification(row._mapping) for row in rows]

    async def mark_read(self, user_id: UserId, notification_id: str | None = None) -> int:
        if not is_uuid(user_id) or (notification_id is not None and not is_uuid(notification_id)):
            return 0
        c = t.referral_notifications.c
        stmt = (
            sa.update(t.referral_notifications)
            .where(c.for_user_id == user_id, c.read.is_(False))
            .values(read=True)
        )
        if notification_id is not None:
            stmt = stmt.where(c.id == notification_id)
        async with self._db.tx() as conn:
            result = await conn.execute(stmt)
        return int(result.rowcount)


def _intro_job(row: RowMapping) -> IntroVideoJob:
    return IntroVideoJob(
        job_id=str(row["job_id"]), user_id=UserId(row["user_id"]),
        status=IntroVideoStatus(row["status"]), progress=row["progress"],
        source_key=row["source_key"], video_key=row["video_key"],
        poster_key=row["poster_key"], error=row["error"], duration=row["duration"],
        width=row["width"], height=row["height"], size=row["size"], attempts=row["attempts"],
        worker=row["worker"], heartbeat_at=row["heartbeat_at"], created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class SqlIntroVideoRepository:
    """Intro-video jobs (core.store.IntroVideoRepository). Every change of state is one
    conditional UPDATE, so of two workers racing for a job, or a worker and a newer upload,
    exactly one wins on SQLite and PostgreSQL alike."""

    def __init__(self, db: _Db) -> None:
        self._db = db

    async def create(self, user_id: UserId, source_key: str) -> tuple[IntroVideoJob,
                                                                         list[IntroVideoJob]]:
        _id(user_id, "user id")
        if not source_key or len(source_key) > 255:
            raise InvalidArgument("a source key is 1-255 characters")
        c = t.intro_videos.c
        now = self._db.now()
        live = (IntroVideoStatus.QUEUED.value, IntroVideoStatus.RUNNING.value)
        async with self._db.tx(missing="user not found") as conn:
            superseded = (await conn.execute(
                sa.update(t.intro_videos)
                .where(c.user_id == user_id, c.status.in_(live))
                .values(status=IntroVideoStatus.SUPERSEDED.value, updated_at=now)
                .returning(t.intro_videos)
            )).all()
            row = (await conn.execute(
                sa.insert(t.intro_videos).values(
                    job_id=new_id(), user_id=user_id, status=IntroVideoStatus.QUEUED.value,
                    progress=0, source_key=source_key, attempts=0, created_at=now,
                    updated_at=now,
                ).returning(t.intro_videos)
            )).one()
        return _intro_job(row._mapping), [_intro_job(r._mapping) for r in superseded]

    async def latest(self, user_id: UserId) -> IntroVideoJob | None:
        if not is_uuid(user_id):
            return None
        c = t.intro_videos.c
        async with self._db.tx() as conn:
            row = (await conn.execute(
                sa.select(t.intro_videos)
                .where(c.user_id == user_id, c.status != IntroVideoStatus.SUPERSEDED.value)
                .order_by(c.created_at.desc(), c.job_id.desc()).limit(1)
            )).one_or_none()
        return None if row is None else _intro_job(row._mapping)

    async def get(self, job_id: str) -> IntroVideoJob | None:
        if not is_uuid(job_id):
            return None
        async with self._db.tx() as conn:
            row = (await conn.execute(
                sa.select(t.intro_videos).where(t.intro_videos.c.job_id == job_id)
            )).one_or_none()
        return None if row is None else _intro_job(row._mapping)

    async def claim(self, worker: str, *, stale_before: datetime,
                    max_attempts: int) -> IntroVideoJob | None:
        c = t.intro_videos.c
        queued = c.status == IntroVideoStatus.QUEUED.value
        stale = sa.and_(c.status == IntroVideoStatus.RUNNING.value,
                        c.heartbeat_at < _time(stale_before, "stale_before"))
        for _ in range(8):  # another worker may take the candidate first: look again
            now = self._db.now()
            async with self._db.tx() as conn:
                row = (await conn.execute(
                    sa.select(c.job_id, c.status, c.attempts, c.heartbeat_at)
                    .where(sa.or_(queued, stale))
                    .order_by(c.created_at, c.job_id).limit(1)
                )).one_or_none()
                if row is None:
                    return None
                same = sa.and_(c.job_id == row.job_id, c.status == row.status,
                               c.attempts == row.attempts)
                if row.status == IntroVideoStatus.RUNNING.value and row.attempts >= max_attempts:
                    await conn.execute(
                        sa.update(t.intro_videos).where(same).values(
                            status=IntroVideoStatus.FAILED.value, updated_at=now,
                            error="processing stopped repeatedly; please upload again"))
                    continue
                taken = (await conn.execute(
                    sa.update(t.intro_videos).where(same).values(
                        status=IntroVideoStatus.RUNNING.value, worker=worker[:63],
                        attempts=c.attempts + 1, heartbeat_at=now, updated_at=now, progress=0)
                    .returning(t.intro_videos)
                )).one_or_none()
            if taken is not None:
                return _intro_job(taken._mapping)
        return None

    def _mine(self, job_id: str, worker: str) -> sa.ColumnElement[bool]:
        c = t.intro_videos.c
        return sa.and_(c.job_id == job_id, c.worker == worker,
                       c.status == IntroVideoStatus.RUNNING.value)

    async def heartbeat(self, job_id: str, worker: str, progress: int) -> bool:
        if not is_uuid(job_id):
            return False
        now = self._db.now()
        async with self._db.tx() as conn:
            result = await conn.execute(
                sa.update(t.intro_videos).where(self._mine(job_id, worker)).values(
                    progress=max(0, min(100, int(progress))), heartbeat_at=now,
                    updated_at=now))
        return result.rowcount == 1

    async def finish(self, job_id: str, worker: str, result: IntroVideoResult) -> bool:
        if not is_uuid(job_id):
            return False
        now = self._db.now()
        async with self._db.tx() as conn:
            done = (await conn.execute(
                sa.update(t.intro_videos).where(self._mine(job_id, worker)).values(
                    status=IntroVideoStatus.DONE.value, progress=100,
                    video_key=result.video_key, poster_key=result.poster_key,
                    duration=result.duration, width=result.width, height=result.height,
                    size=result.size, heartbeat_at=now, updated_at=now)
                .returning(t.intro_videos.c.user_id)
            )).one_or_none()
            if done is None:
                return False
            await conn.execute(
                sa.update(t.users).where(t.users.c.user_id == done.user_id)
                .values(video_url=result.video_key, updated_at=now))
        return True

    async def fail(self, job_id: str, worker: str, error: str) -> bool:
        if not is_uuid(job_id):
            return False
        now = self._db.now()
        async with self._db.tx() as conn:
            result = await conn.execute(
                sa.update(t.intro_videos).where(self._mine(job_id, worker)).values(
                    status=IntroVideoStatus.FAILED.value, error=error[:255], updated_at=now))
        return result.rowcount == 1


def _recording(row: RowMapping) -> Recording:
    return Recording(
        recording_id=str(row["recording_id"]), room_id=RoomId(row["room_id"]),
        user_id=UserId(row["user_id"]), node_id=row["node_id"],
        status=RecordingStatus(row["status"]), blob_key=row["blob_key"],
        container=row["container"], video_codec=row["video_codec"],
        audio_codec=row["audio_codec"], duration=row["duration"], size=row["size"],
        error=row["error"], created_at=row["created_at"], updated_at=row["updated_at"],
    )


def _oldest_first(recordings: list[Recording]) -> list[Recording]:
    return sorted(recordings, key=lambda r: (r.created_at, r.recording_id))


class SqlRecordingRepository:
    """Call recordings (core.store.RecordingRepository). Every change of state is one
    conditional UPDATE on `status = 'recording'`, so a recording is finished or failed once."""

    NODE_RESTARTED = "the node restarted before the recording was finished"

    def __init__(self, db: _Db) -> None:
        self._db = db

    async def start(self, room_id: RoomId, user_ids: Sequence[UserId],
                    node_id: str) -> list[Recording]:
        _id(room_id, "room_id")
        users = list(dict.fromkeys(_id(user_id, "user_id") for user_id in user_ids))
        if not users:
            raise InvalidArgument("a recording needs at least one participant")
        if not isinstance(node_id, str) or not node_id:
            raise InvalidArgument("node_id cannot be empty")
        _check_lengths(t.recordings, {"node_id": node_id})
        now = self._db.now()
        rows = [
            {"recording_id": new_id(), "room_id": room_id, "user_id": user_id,
             "node_id": node_id, "status": RecordingStatus.RECORDING.value,
             "created_at": now, "updated_at": now}
            for user_id in users
        ]
        async with self._db.tx(missing="call or user not found") as conn:
            # One INSERT per row: RETURNING of a multi-row INSERT is not supported everywhere.
            made = [
                _recording((await conn.execute(
                    sa.insert(t.recordings).values(row).returning(t.recordings)
                )).one()._mapping)
                for row in rows
            ]
        return made

    async def finish(self, recording_id: str, *, blob_key: str, container: str,
                     video_codec: str | None, audio_codec: str | None, duration: float,
                     size: int) -> bool:
        if not isinstance(blob_key, str) or not blob_key:
            raise InvalidArgument("blob_key cannot be empty")
        if not isinstance(container, str) or not container:
            raise InvalidArgument("container cannot be empty")
        if isinstance(duration, bool) or not isinstance(duration, int | float) or duration < 0:
            raise InvalidArgument("duration must be a number >= 0")
        values: dict[str, Any] = {
            "status": RecordingStatus.READY.value, "blob_key": blob_key,
            "container": container, "video_codec": video_codec, "audio_codec": audio_codec,
            "duration": float(duration), "size": _count(size, "size"), "error": None,
        }
        _check_lengths(t.recordings, values)
        if not is_uuid(recording_id):
            return False
        return await self._leave_recording(recording_id, values)

    async def fail(self, recording_id: str, error: str) -> bool:
        if not is_uuid(recording_id):
            return False
        return await self._leave_recording(
            recording_id, {"status": RecordingStatus.FAILED.value, "error": str(error)[:255]})

    async def _leave_recording(self, recording_id: str, values: dict[str, Any]) -> bool:
        c = t.recordings.c
        async with self._db.tx() as conn:
            result = await conn.execute(
                sa.update(t.recordings)
                .where(c.recording_id == recording_id,
                       c.status == RecordingStatus.RECORDING.value)
                .values(**values, updated_at=self._db.now())
            )
        return result.rowcount == 1

    async def for_room(self, room_id: RoomId) -> list[Recording]:
        if not is_uuid(room_id):
            return []
        c = t.recordings.c
        async with self._db.tx() as conn:
            rows = (await conn.execute(
                sa.select(t.recordings).where(c.room_id == room_id)
                .order_by(c.created_at, c.recording_id)
            )).all()
        return [_recording(row._mapping) for row in rows]

    async def delete_room(self, room_id: RoomId) -> list[Recording]:
        if not is_uuid(room_id):
            return []
        async with self._db.tx() as conn:
            rows = (await conn.execute(
                sa.delete(t.recordings).where(t.recordings.c.room_id == room_id)
                .returning(t.recordings)
            )).all()
        return _oldest_first([_recording(row._mapping) for row in rows])

    async def fail_unfinished(self, node_id: str) -> int:
        if not isinstance(node_id, str) or not node_id:
            return 0
        c = t.recordings.c
        async with self._db.tx() as conn:
            result = await conn.execute(
                sa.update(t.recordings)
                .where(c.node_id == node_id, c.status == RecordingStatus.RECORDING.value)
                .values(status=RecordingStatus.FAILED.value, error=self.NODE_RESTARTED,
                        updated_at=self._db.now())
            )
        return int(result.rowcount)


class SqlStore:
    """core.store.Store on an AsyncEngine. The store owns the engine: close() disposes it."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._db = _Db(engine, clock)
        self._users = SqlUserRepository(self._db)
        self._sessions = SqlSessionRepository(self._db)
        self._chat_history = SqlChatHistoryRepository(self._db)
        self._calls = SqlCallRepository(self._db)
        self._cooldowns = SqlCooldownRepository(self._db)
        self._invite_codes = SqlInviteCodeRepository(self._db)
        self._reports = SqlReportRepository(self._db)
        self._bans = SqlBanRepository(self._db)
        self._referral_notifications = SqlReferralNotificationRepository(self._db)
        self._intro_videos = SqlIntroVideoRepository(self._db)
        self._recordings = SqlRecordingRepository(self._db)

    @property
    def engine(self) -> AsyncEngine:
        return self._db.engine

    @property
    def users(self) -> SqlUserRepository:
        return self._users

    @property
    def sessions(self) -> SqlSessionRepository:
        return self._sessions

    @property
    def chat_history(self) -> SqlChatHistoryRepository:
        return self._chat_history

    @property
    def calls(self) -> SqlCallRepository:
        return self._calls

    @property
    def cooldowns(self) -> SqlCooldownRepository:
        return self._cooldowns

    @property
    def invite_codes(self) -> SqlInviteCodeRepository:
        return self._invite_codes

    @property
    def reports(self) -> SqlReportRepository:
        return self._reports

    @property
    def bans(self) -> SqlBanRepository:
        return self._bans

    @property
    def referral_notifications(self) -> SqlReferralNotificationRepository:
        return self._referral_notifications

    @property
    def intro_videos(self) -> SqlIntroVideoRepository:
        return self._intro_videos

    @property
    def recordings(self) -> SqlRecordingRepository:
        return self._recordings

    async def ping(self) -> None:
        async with self._db.tx() as conn:
            await conn.execute(sa.select(sa.literal(1)))

    async def close(self) -> None:
        if self._db.closed:
            return
        self._db.closed = True
        await self._db.engine.dispose()
