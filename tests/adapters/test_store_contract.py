"""One contract for the durable store (core.store.Store), run on SQLite and on PostgreSQL.

Each database is migrated once per test session with the real migrations; every test starts
from empty tables. "Now" is a FakeClock, so expiry is tested by moving the clock, not by waiting.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from adapters.sql import SqlStore, create_engine, migrate
from adapters.sql import schema as t
from core.clock import FakeClock, utcnow
from core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from core.ids import RoomId, UserId, new_id
from core.store import (
    MAX_LAST_SESSIONS,
    AccountType,
    BanRecord,
    BanStatus,
    Call,
    CallEndReason,
    CallSummary,
    ChatMessage,
    Gender,
    IntroVideoResult,
    IntroVideoStatus,
    InviteCode,
    InviteType,
    NewUser,
    PaidStatus,
    RecordingStatus,
    ReviewStatus,
    Store,
    User,
    hash_session_token,
)
from tests.adapters.sql_fixtures import assert_aware_utc, count_rows, wipe
from tests.services import PostgresDatabase, free_port

HOUR = timedelta(hours=1)


@dataclass
class Backend:
    name: str
    store: SqlStore
    clock: FakeClock

    def now(self) -> datetime:
        return utcnow(self.clock)


@pytest.fixture(scope="session")
def sqlite_store_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'contract.db'}"
    migrate.upgrade(url)
    yield url


@pytest.fixture(scope="session")
def postgres_store_url(postgres_database: PostgresDatabase) -> Iterator[str]:
    migrate.upgrade(postgres_database.url)
    yield postgres_database.url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    # A sync fixture: migrations run their own event loop, so they must not be set up from
    # inside an async fixture.
    url: str = request.getfixturevalue(f"{request.param}_store_url")
    return url


@pytest.fixture
async def backend(store_url: str, fake_clock: FakeClock) -> AsyncIterator[Backend]:
    store = SqlStore(create_engine(store_url), fake_clock)
    await wipe(store.engine)
    try:
        yield Backend(store.engine.dialect.name, store, fake_clock)
    finally:
        await store.close()


async def make_user(
    store: Store, name: str = "Ada", email: str | None = None, **extra: object
) -> User:
    return await store.users.create(
        NewUser(
            name=name,
            gender=Gender.FEMALE,
            account_type=AccountType.PERMANENT if email else AccountType.GUEST,
            email=email,
            **extra,  # type: ignore[arg-type]
        )
    )


def summary(partner: User, seconds: int, ended_at: datetime, n: int = 0) -> CallSummary:
    return CallSummary(
        partner_id=partner.user_id,
        partner_name=f"{partner.name} {n}",
        room_id=RoomId(new_id()),
        duration_seconds=seconds,
        ended_at=ended_at,
    )


# --- users ---------------------------------------------------------------------------------


async def test_user_round_trip(backend: Backend) -> None:
    users = backend.store.users
    referrer = await make_user(backend.store, "Grace", "grace@example.com")
    paid_at = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    created = await users.create(
        NewUser(
            name="Ada",
            gender=Gender.NONBINARY,
            account_type=AccountType.PERMANENT,
            email="ada@example.com",
            password_hash="$2b$12$hash",
            selfie_url="https://cdn.example/selfie.jpg",
            socials={"instagram": "@ada", "tiktok": "ada\u00e9\u2603"},
            referral_code="ref-1",
            referred_by=referrer.user_id,
            paid_status=PaidStatus.PAID,
            paid_at=paid_at,
            my_invite_code="ADA123",
            invite_code_uses_remaining=4,
        )
    )
    fetched = await users.get(created.user_id)
    assert fetched == created
    assert fetched.socials == {"instagram": "@ada", "tiktok": "ada\u00e9\u2603"}
    assert fetched.referred_by == referrer.user_id
    assert fetched.paid_at == paid_at and fetched.paid_at.utcoffset() == timedelta(0)
    assert (fetched.timer_total_seconds, fetched.session_count, fetched.last_sessions) == (
        0,
        0,
        (),
    )
    assert fetched.ban_status is BanStatus.NONE
    assert fetched.created_at == fetched.updated_at == backend.now()
    assert_aware_utc(fetched)
    assert await users.get_by_email("ada@example.com") == created
    assert await users.get_by_email("nobody@example.com") is None


async def test_unknown_or_malformed_ids_read_as_absent(backend: Backend) -> None:
    s = backend.store
    for bad in (UserId(new_id()), UserId("not-a-uuid"), UserId("")):
        assert await s.users.get(bad) is None
        assert await s.users.delete(bad) is False
        assert await s.chat_history.list_for_user(bad) == []
        assert await s.cooldowns.active_partners(bad) == set()
        assert await s.reports.count_for_user(bad) == 0
        assert await s.bans.get(bad) is None
        assert await s.referral_notifications.list_for_user(bad) == []
        with pytest.raises(NotFound):
            await s.users.update(bad, {"name": "x"})


async def test_duplicate_email_is_already_exists(backend: Backend) -> None:
    await make_user(backend.store, "Ada", "ada@example.com")
    with pytest.raises(AlreadyExists):
        await make_user(backend.store, "Eve", "ada@example.com")
    # guests have no email, and any number of them may exist
    await make_user(backend.store, "Guest 1")
    await make_user(backend.store, "Guest 2")
    assert await count_rows(backend.store.engine, t.users) == 3


async def test_duplicate_user_id_is_already_exists(backend: Backend) -> None:
    ada = await make_user(backend.store)
    with pytest.raises(AlreadyExists):
        await make_user(backend.store, "Twin", user_id=ada.user_id)


async def test_unknown_referrer_is_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        await make_user(backend.store, referred_by=UserId(new_id()))
    assert await count_rows(backend.store.engine, t.users) == 0


async def test_create_refuses_invalid_values_alike_on_every_backend(backend: Backend) -> None:
    users = backend.store.users
    with pytest.raises(InvalidArgument):
        await make_user(backend.store, "x" * 256)  # VARCHAR(255): SQLite would not check it
    with pytest.raises(InvalidArgument):
        await users.create(
            NewUser(name="A", gender="robot", account_type=AccountType.GUEST)  # type: ignore[arg-type]
        )
    with pytest.raises(InvalidArgument):
        await make_user(backend.store, paid_at=datetime(2024, 1, 1))  # naive
    with pytest.raises(InvalidArgument):
        await make_user(backend.store, user_id=UserId("not-a-uuid"))
    with pytest.raises(InvalidArgument):
        await make_user(backend.store, invite_code_uses_remaining=-1)
    assert await count_rows(backend.store.engine, t.users) == 0


async def test_update_sets_fields_and_updated_at(backend: Backend) -> None:
    users = backend.store.users
    ada = await make_user(backend.store, "Ada", "ada@example.com")
    backend.clock.advance(90)
    banned_at = backend.now()
    updated = await users.update(
        ada.user_id,
        {
            "name": "Ada L.",
            "socials": {"x": "@ada"},
            "ban_status": BanStatus.TEMPORARY,
            "banned_at": banned_at,
            "banned_reason": "reports",
            "email": None,
        },
    )
    assert updated.name == "Ada L."
    assert updated.socials == {"x": "@ada"}
    assert updated.ban_status is BanStatus.TEMPORARY
    assert updated.banned_at == banned_at
    assert updated.email is None
    assert updated.created_at == ada.created_at
    assert updated.updated_at == ada.updated_at + timedelta(seconds=90)
    assert await users.get(ada.user_id) == updated
    assert_aware_utc(updated)


async def test_update_refusals(backend: Backend) -> None:
    users = backend.store.users
    ada = await make_user(backend.store, "Ada", "ada@example.com")
    eve = await make_user(backend.store, "Eve", "eve@example.com")
    with pytest.raises(AlreadyExists):
        await users.update(eve.user_id, {"email": "ada@example.com"})
    with pytest.raises(InvalidArgument):
        await users.update(eve.user_id, {"session_count": 99})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(InvalidArgument):
        await users.update(eve.user_id, {"name": None})  # type: ignore[typeddict-item]
    with pytest.raises(NotFound):
        await users.update(eve.user_id, {"introduced_by": UserId(new_id())})
    assert await users.get(eve.user_id) == eve
    assert await users.get(ada.user_id) == ada


async def test_record_call_keeps_the_last_ten(backend: Backend) -> None:
    users = backend.store.users
    ada = await make_user(backend.store, "Ada")
    bob = await make_user(backend.store, "Bob")
    for n in range(12):
        backend.clock.advance(60)
        user = await users.record_call(ada.user_id, summary(bob, 30 + n, backend.now(), n))
    assert user.timer_total_seconds == sum(30 + n for n in range(12))
    assert user.session_count == 12
    assert len(user.last_sessions) == MAX_LAST_SESSIONS
    assert [s.partner_name for s in user.last_sessions] == [f"Bob {n}" for n in range(11, 1, -1)]
    assert user.last_sessions[0].ended_at == backend.now()
    assert user.updated_at == backend.now()
    assert await users.get(ada.user_id) == user
    assert_aware_utc(user)
    with pytest.raises(NotFound):
        await users.record_call(UserId(new_id()), summary(bob, 1, backend.now()))


async def test_concurrent_record_calls_lose_nothing(backend: Backend) -> None:
    users = backend.store.users
    ada = await make_user(backend.store, "Ada")
    bob = await make_user(backend.store, "Bob")
    await asyncio.gather(
        *(users.record_call(ada.user_id, summary(bob, 10, backend.now(), n)) for n in range(6))
    )
    user = await users.get(ada.user_id)
    assert user is not None
    assert (user.session_count, user.timer_total_seconds) == (6, 60)
    assert sorted(s.partner_name for s in user.last_sessions) == [f"Bob {n}" for n in range(6)]


async def test_delete_user_cascades_and_guards_history(backend: Backend) -> None:
    s = backend.store
    ada = await make_user(s, "Ada")
    bob = await make_user(s, "Bob")
    await s.sessions.create(ada.user_id, hash_session_token("t1"), None, backend.now() + HOUR)
    await s.cooldowns.set(ada.user_id, bob.user_id, backend.now() + HOUR)
    await s.bans.put(BanRecord(ada.user_id, BanStatus.PERMANENT, backend.now(), "spam"))

    assert await s.users.delete(ada.user_id) is True
    assert await s.users.get(ada.user_id) is None
    assert await s.sessions.get_by_token_hash(hash_session_token("t1")) is None
    assert await count_rows(s.engine, t.sessions) == 0
    assert await count_rows(s.engine, t.cooldowns) == 0
    assert await count_rows(s.engine, t.ban_records) == 0
    assert await s.users.delete(ada.user_id) is False

    carol = await make_user(s, "Carol")
    await s.chat_history.add(
        session_id="call-1:carol",
        user_id=carol.user_id,
        partner_id=bob.user_id,
        partner_name="Bob",
        room_id=RoomId(new_id()),
        started_at=backend.now(),
        duration_seconds=60,
    )
    with pytest.raises(FailedPrecondition):
        await s.users.delete(carol.user_id)
    assert await s.users.get(carol.user_id) == carol


# --- sessions ------------------------------------------------------------------------------


async def test_session_lifecycle(backend: Backend) -> None:
    s = backend.store
    ada = await make_user(s)
    token_hash = hash_session_token("secret-token")
    session = await s.sessions.create(ada.user_id, token_hash, "2001:db8::1", backend.now() + HOUR)
    assert session.token_hash == token_hash != "secret-token"
    assert session.created_at == backend.now()
    assert await s.sessions.get_by_token_hash(token_hash) == session
    assert_aware_utc(session)
    assert await s.sessions.get_by_token_hash(hash_session_token("other")) is None
    assert await s.sessions.get_by_token_hash("secret-token") is None
    with pytest.raises(AlreadyExists):
        await s.sessions.create(ada.user_id, token_hash, None, backend.now() + HOUR)
    assert await s.sessions.delete(token_hash) is True
    assert await s.sessions.delete(token_hash) is False
    assert await s.sessions.get_by_token_hash(token_hash) is None


async def test_sessions_listed_per_user_with_second_factor_flag(backend: Backend) -> None:
    s = backend.store
    ada, bob = await make_user(s, "Ada"), await make_user(s, "Bob")
    plain = await s.sessions.create(ada.user_id, hash_session_token("a1"), None,
                                    backend.now() + HOUR)
    strong = await s.sessions.create(ada.user_id, hash_session_token("a2"), None,
                                     backend.now() + HOUR, mfa=True)
    await s.sessions.create(bob.user_id, hash_session_token("b1"), None, backend.now() + HOUR)
    assert plain.mfa is False and strong.mfa is True
    listed = await s.sessions.list_for_user(ada.user_id)
    assert {x.token_hash for x in listed} == {plain.token_hash, strong.token_hash}
    assert (await s.sessions.get_by_token_hash(strong.token_hash)) == strong
    assert await s.sessions.list_for_user(UserId("not-a-uuid")) == []


async def test_admin_flag_and_totp_secret_round_trip(backend: Backend) -> None:
    s = backend.store
    ada = await make_user(s, "Ada")
    assert ada.is_admin is False and ada.totp_secret is None
    updated = await s.users.update(ada.user_id, {"is_admin": True, "totp_secret": "JBSWY3DP"})
    assert updated.is_admin is True and updated.totp_secret == "JBSWY3DP"
    assert (await s.users.get(ada.user_id)) == updated
    with pytest.raises(InvalidArgument):
        await s.users.update(ada.user_id, {"is_admin": None})  # type: ignore[typeddict-item]


async def test_session_for_unknown_user_is_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        await backend.store.sessions.create(
            UserId(new_id()), hash_session_token("t"), None, backend.now() + HOUR
        )


async def test_session_refuses_a_raw_token_or_naive_expiry(backend: Backend) -> None:
    ada = await make_user(backend.store)
    with pytest.raises(InvalidArgument):
        await backend.store.sessions.create(ada.user_id, "raw-token", None, backend.now() + HOUR)
    with pytest.raises(InvalidArgument):
        await backend.store.sessions.create(
            ada.user_id, hash_session_token("t"), None, datetime(2030, 1, 1)
        )


async def test_expired_sessions_are_not_returned_and_are_purged(backend: Backend) -> None:
    s = backend.store
    ada = await make_user(s, "Ada")
    bob = await make_user(s, "Bob")
    short, long_ = hash_session_token("short"), hash_session_token("long")
    await s.sessions.create(ada.user_id, short, None, backend.now() + timedelta(seconds=60))
    await s.sessions.create(ada.user_id, long_, None, backend.now() + HOUR)
    await s.sessions.create(bob.user_id, hash_session_token("bob"), None, backend.now() + HOUR)

    backend.clock.advance(59)
    assert await s.sessions.get_by_token_hash(short) is not None
    backend.clock.advance(1)  # expires_at == now: expired
    assert await s.sessions.get_by_token_hash(short) is None
    assert await s.sessions.get_by_token_hash(long_) is not None
    assert await s.sessions.delete_expired() == 1
    assert await s.sessions.delete_expired() == 0
    assert await count_rows(s.engine, t.sessions) == 2
    assert await s.sessions.delete_for_user(ada.user_id) == 1
    assert await s.sessions.get_by_token_hash(hash_session_token("bob")) is not None


# --- chat history --------------------------------------------------------------------------


async def test_chat_history(backend: Backend) -> None:
    s = backend.store
    ada = await make_user(s, "Ada")
    bob = await make_user(s, "Bob")
    room = RoomId(new_id())
    messages = [
        ChatMessage(ada.user_id, "hi \U0001f44b", backend.now()),
        ChatMessage(bob.user_id, "hello", backend.now() + timedelta(seconds=3)),
    ]
    for n in range(3):
        entry = await s.chat_history.add(
            session_id=f"{room}:{n}",
            user_id=ada.user_id,
            partner_id=bob.user_id,
            partner_name="Bob",
            room_id=room,
            started_at=backend.now() + timedelta(minutes=n),
            duration_seconds=120,
            messages=messages,
        )
        assert entry.messages == tuple(messages)
    listed = await s.chat_history.list_for_user(ada.user_id)
    assert [e.session_id for e in listed] == [f"{room}:2", f"{room}:1", f"{room}:0"]
    assert listed[0].messages == tuple(messages)
    assert listed[0].room_id == room and listed[0].duration_seconds == 120
    assert_aware_utc(listed[0])
    assert [e.session_id for e in await s.chat_history.list_for_user(ada.user_id, 2)] == [
        f"{room}:2",
        f"{room}:1",
    ]
    assert await s.chat_history.list_for_user(bob.user_id) == []
    with pytest.raises(InvalidArgument):
        await s.chat_history.list_for_user(ada.user_id, 0)


async def test_chat_history_refusals(backend: Backend) -> None:
    s = backend.store
    ada = await make_user(s, "Ada")
    bob = await make_user(s, "Bob")

    async def add(session_id: str, partner: UserId) -> None:
        await s.chat_history.add(
            session_id=session_id,
            user_id=ada.user_id,
            partner_id=partner,
            partner_name=None,
            room_id=RoomId(new_id()),
            started_at=backend.now(),
            duration_seconds=5,
        )

    await add("one", bob.user_id)
    with pytest.raises(AlreadyExists):
        await add("one", bob.user_id)
    with pytest.raises(NotFound):
        await add("two", UserId(new_id()))
    assert await count_rows(s.engine, t.chat_history) == 1


# --- cooldowns -----------------------------------------------------------------------------


async def test_cooldown_pair_is_normalised_and_upserted(backend: Backend) -> None:
    s = backend.store
    ada = await make_user(s, "Ada")
    bob = await make_user(s, "Bob")
    first = await s.cooldowns.set(bob.user_id, ada.user_id, backend.now() + HOUR)
    assert first.user_id_1 < first.user_id_2
    assert {first.user_id_1, first.user_id_2} == {ada.user_id, bob.user_id}
    assert await s.cooldowns.active_until(ada.user_id, bob.user_id) == backend.now() + HOUR
    assert await s.cooldowns.active_until(bob.user_id, ada.user_id) == backend.now() + HOUR

    later = backend.now() + 24 * HOUR
    second = await s.cooldowns.set(ada.user_id, bob.user_id, later)
    assert second.expires_at == later
    assert_aware_utc(second)
    assert await count_rows(s.engine, t.cooldowns) == 1
    assert await s.cooldowns.active_until(bob.user_id, ada.user_id) == later


async def test_cooldown_expiry_follows_the_clock(backend: Backend) -> None:
    s = backend.store
    ada = await make_user(s, "Ada")
    bob = await make_user(s, "Bob")
    cy = await make_user(s, "Cy")
    dee = await make_user(s, "Dee")
    await s.cooldowns.set(ada.user_id, bob.user_id, backend.now() + HOUR)
    await s.cooldowns.set(cy.user_id, ada.user_id, backend.now() + 2 * HOUR)
    await s.cooldowns.set(bob.user_id, cy.user_id, backend.now() + 2 * HOUR)
    assert await s.cooldowns.active_partners(ada.user_id) == {bob.user_id, cy.user_id}
    assert await s.cooldowns.active_partners(dee.user_id) == set()

    backend.clock.advance(3600)
    assert await s.cooldowns.active_until(ada.user_id, bob.user_id) is None
    assert await s.cooldowns.active_partners(ada.user_id) == {cy.user_id}
    assert await s.cooldowns.active_partners(bob.user_id) == {cy.user_id}
    assert await s.cooldowns.delete_expired() == 1
    assert await count_rows(s.engine, t.cooldowns) == 2


async def test_cooldown_refusals(backend: Backend) -> None:
    s = backend.store
    ada = await make_user(s, "Ada")
    with pytest.raises(InvalidArgument):
        await s.cooldowns.set(ada.user_id, ada.user_id, backend.now() + HOUR)
    with pytest.raises(NotFound):
        await s.cooldowns.set(ada.user_id, UserId(new_id()), backend.now() + HOUR)
    assert await s.cooldowns.active_until(ada.user_id, ada.user_id) is None


# --- invite codes --------------------------------------------------------------------------


async def test_invite_code_lifecycle(backend: Backend) -> None:
    s = backend.store
    admin = await make_user(s, "Admin")
    ada = await make_user(s, "Ada")
    bob = await make_user(s, "Bob")
    code = await s.invite_codes.create(
        code="WELCOME-1",
        type=InviteType.ADMIN,
        max_uses=2,
        created_by=admin.user_id,
        created_by_name="Admin",
    )
    assert (code.uses_remaining, code.used_by, code.is_active) == (2, (), True)
    assert await s.invite_codes.get("WELCOME-1") == code
    assert_aware_utc(code)

    after_ada = await s.invite_codes.redeem("WELCOME-1", ada.user_id)
    assert (after_ada.uses_remaining, after_ada.used_by) == (1, (ada.user_id,))
    with pytest.raises(FailedPrecondition):
        await s.invite_codes.redeem("WELCOME-1", ada.user_id)  # twice by the same user
    assert await s.invite_codes.get("WELCOME-1") == after_ada  # ...consumed nothing
    after_bob = await s.invite_codes.redeem("WELCOME-1", bob.user_id)
    assert (after_bob.uses_remaining, after_bob.used_by) == (0, (ada.user_id, bob.user_id))
    with pytest.raises(FailedPrecondition):
        await s.invite_codes.redeem("WELCOME-1", admin.user_id)  # used up

    await s.invite_codes.create(code="OFF", type=InviteType.USER, max_uses=5)
    off = await s.invite_codes.deactivate("OFF")
    assert off.is_active is False
    with pytest.raises(FailedPrecondition):
        await s.invite_codes.redeem("OFF", ada.user_id)
    with pytest.raises(NotFound):
        await s.invite_codes.redeem("NOPE", ada.user_id)
    with pytest.raises(NotFound):
        await s.invite_codes.deactivate("NOPE")
    assert await s.invite_codes.get("NOPE") is None


async def test_invite_code_refusals(backend: Backend) -> None:
    s = backend.store
    ada = await make_user(s, "Ada")
    await s.invite_codes.create(code="ABC", type=InviteType.USER, max_uses=1)
    with pytest.raises(AlreadyExists):
        await s.invite_codes.create(code="ABC", type=InviteType.USER, max_uses=1)
    with pytest.raises(InvalidArgument):
        await s.invite_codes.create(code="X" * 21, type=InviteType.USER, max_uses=1)
    with pytest.raises(InvalidArgument):
        await s.invite_codes.create(code="ZERO", type=InviteType.USER, max_uses=0)
    with pytest.raises(InvalidArgument):
        await s.invite_codes.create(code="T", type="vip", max_uses=1)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        await s.invite_codes.create(
            code="ORPHAN", type=InviteType.USER, max_uses=1, created_by=UserId(new_id())
        )
    with pytest.raises(NotFound):
        await s.invite_codes.redeem("ABC", UserId(new_id()))  # unknown user
    code = await s.invite_codes.get("ABC")
    assert code is not None and code.uses_remaining == 1  # the failed redeem was rolled back
    assert (await s.invite_codes.redeem("ABC", ada.user_id)).uses_remaining == 0


async def test_concurrent_redeems_of_the_last_use(backend: Backend) -> None:
    s = backend.store
    ada = await make_user(s, "Ada")
    bob = await make_user(s, "Bob")
    await s.invite_codes.create(code="ONE", type=InviteType.USER, max_uses=1)
    results = await asyncio.gather(
        s.invite_codes.redeem("ONE", ada.user_id),
        s.invite_codes.redeem("ONE", bob.user_id),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, InviteCode)]
    losses = [r for r in results if isinstance(r, FailedPrecondition)]
    assert (len(wins), len(losses)) == (1, 1), results
    final = await s.invite_codes.get("ONE")
    assert final is not None
    assert final.uses_remaining == 0
    assert final.used_by == wins[0].used_by
    assert len(final.used_by) == 1


async def test_many_concurrent_redeems_never_overspend(backend: Backend) -> None:
    s = backend.store
    people = [await make_user(s, f"P{n}") for n in range(8)]
    await s.invite_codes.create(code="FIVE", type=InviteType.ADMIN, max_uses=5)
    results = await asyncio.gather(
        *(s.invite_codes.redeem("FIVE", p.user_id) for p in people), return_exceptions=True
    )
    assert sum(isinstance(r, InviteCode) for r in results) == 5
    assert sum(isinstance(r, FailedPrecondition) for r in results) == 3
    final = await s.invite_codes.get("FIVE")
    assert final is not None
    assert final.uses_remaining == 0 and len(set(final.used_by)) == 5


# --- reports -------------------------------------------------------------------------------


async def test_reports(backend: Backend) -> None:
    s = backend.store
    troll = await make_user(s, "Troll")
    ada = await make_user(s, "Ada")
    bob = await make_user(s, "Bob")
    room = RoomId(new_id())
    first = await s.reports.add(
        reported_user_id=troll.user_id,
        reporter_user_id=ada.user_id,
        reporter_ip="203.0.113.9",
        reason="rude",
        room_id=room,
    )
    backend.clock.advance(10)
    await s.reports.add(reported_user_id=troll.user_id, reporter_user_id=ada.user_id)
    backend.clock.advance(10)
    last = await s.reports.add(reported_user_id=troll.user_id, reporter_user_id=bob.user_id)
    assert first.reported_at == backend.now() - timedelta(seconds=20)
    assert first.room_id == room and first.reporter_ip == "203.0.113.9"
    assert_aware_utc(first)
    assert await s.reports.count_for_user(troll.user_id) == 2  # distinct reporters
    listed = await s.reports.list_for_user(troll.user_id)
    assert len(listed) == 3
    assert listed[0] == last and listed[-1] == first
    assert await s.reports.list_for_user(ada.user_id) == []
    with pytest.raises(InvalidArgument):
        await s.reports.add(reported_user_id=ada.user_id, reporter_user_id=ada.user_id)
    with pytest.raises(NotFound):
        await s.reports.add(reported_user_id=UserId(new_id()), reporter_user_id=ada.user_id)


# --- bans ----------------------------------------------------------------------------------


async def test_ban_records(backend: Backend) -> None:
    s = backend.store
    troll = await make_user(s, "Troll")
    mod = await make_user(s, "Mod")
    record = BanRecord(
        user_id=troll.user_id,
        ban_status=BanStatus.TEMPORARY,
        banned_at=backend.now(),
        banned_reason="4 reports",
        report_count=4,
        review_status=ReviewStatus.PENDING,
        ip_addresses=("203.0.113.9", "2001:db8::7"),
    )
    assert await s.bans.put(record) == record
    assert await s.bans.get(troll.user_id) == record

    replaced = BanRecord(troll.user_id, BanStatus.PERMANENT, backend.now(), "again", 7)
    assert await s.bans.put(replaced) == replaced
    assert await count_rows(s.engine, t.ban_records) == 1

    backend.clock.advance(300)
    reviewed = await s.bans.set_review(troll.user_id, ReviewStatus.UPHELD, mod.user_id)
    assert reviewed.review_status is ReviewStatus.UPHELD
    assert reviewed.reviewed_by == mod.user_id
    assert reviewed.reviewed_at == backend.now()
    assert reviewed.ban_status is BanStatus.PERMANENT
    assert_aware_utc(reviewed)
    assert await s.bans.get(troll.user_id) == reviewed

    with pytest.raises(NotFound):
        await s.bans.set_review(mod.user_id, ReviewStatus.UPHELD, None)
    with pytest.raises(NotFound):
        await s.bans.set_review(troll.user_id, ReviewStatus.OVERTURNED, UserId(new_id()))
    with pytest.raises(NotFound):
        await s.bans.put(BanRecord(UserId(new_id()), BanStatus.TEMPORARY, backend.now(), "x"))


# --- referral notifications ----------------------------------------------------------------


async def test_referral_notifications(backend: Backend) -> None:
    s = backend.store
    ada = await make_user(s, "Ada")
    bob = await make_user(s, "Bob")
    cy = await make_user(s, "Cy")
    first = await s.referral_notifications.add(
        for_user_id=ada.user_id,
        referred_user_id=bob.user_id,
        introduced_by=cy.user_id,
        referred_name="Bob",
        introduced_by_name="Cy",
    )
    backend.clock.advance(5)
    second = await s.referral_notifications.add(
        for_user_id=ada.user_id, referred_user_id=cy.user_id, introduced_by=bob.user_id
    )
    other = await s.referral_notifications.add(
        for_user_id=bob.user_id, referred_user_id=ada.user_id, introduced_by=cy.user_id
    )
    assert first.read is False and first.referred_name == "Bob"
    assert_aware_utc(first)
    assert await s.referral_notifications.list_for_user(ada.user_id) == [second, first]

    assert await s.referral_notifications.mark_read(ada.user_id, first.notification_id) == 1
    assert await s.referral_notifications.mark_read(ada.user_id, first.notification_id) == 0
    # a user cannot mark someone else's notification
    assert await s.referral_notifications.mark_read(ada.user_id, other.notification_id) == 0
    unread = await s.referral_notifications.list_for_user(ada.user_id, unread_only=True)
    assert [n.notification_id for n in unread] == [second.notification_id]
    assert await s.referral_notifications.mark_read(ada.user_id) == 1
    assert await s.referral_notifications.list_for_user(ada.user_id, unread_only=True) == []
    assert await s.referral_notifications.list_for_user(bob.user_id, unread_only=True) == [other]
    with pytest.raises(NotFound):
        await s.referral_notifications.add(
            for_user_id=UserId(new_id()), referred_user_id=bob.user_id, introduced_by=cy.user_id
        )


# --- the store itself ----------------------------------------------------------------------


async def test_ping_and_close(backend: Backend) -> None:
    store = backend.store
    await store.ping()
    await make_user(store)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(Unavailable):
        await store.ping()
    with pytest.raises(Unavailable):
        await store.users.get(UserId(new_id()))


async def test_unreachable_postgres_is_unavailable(fake_clock: FakeClock) -> None:
    port = free_port()  # nothing listens there any more
    store = SqlStore(
        create_engine(f"postgresql://napalm:hunter2secret@127.0.0.1:{port}/napalm"), fake_clock
    )
    try:
        with pytest.raises(Unavailable) as caught:
            await store.ping()
        with pytest.raises(Unavailable):
            await store.users.get_by_email("ada@example.com")
    finally:
        await store.close()
    assert f"127.0.0.1:{port}" in caught.value.message
    assert "hunter2secret" not in caught.value.message
    assert "\n" not in caught.value.message


async def test_unopenable_sqlite_is_unavailable(tmp_path: Path, fake_clock: FakeClock) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    store = SqlStore(create_engine(f"sqlite:///{directory}"), fake_clock)
    threads_before = set(threading.enumerate())
    try:
        with pytest.raises(Unavailable) as caught:
            await store.ping()
    finally:
        await store.close()
        # aiosqlite 0.22 stops the worker thread of a connection that failed to open without
        # awaiting it; the thread then reports to this loop, so let it finish while it is open.
        for thread in set(threading.enumerate()) - threads_before:
            for _ in range(500):
                if not thread.is_alive():
                    break
                await asyncio.sleep(0.01)
    assert str(directory) in caught.value.message


# --- calls ---------------------------------------------------------------------------------


async def start_call(
    backend: Backend,
    caller: UserId,
    callee: UserId,
    *,
    seconds: int = 300,
    room_id: RoomId | None = None,
    node_id: str = "node-a",
) -> Call:
    started = backend.now()
    return await backend.store.calls.create(
        room_id=room_id or RoomId(new_id()),
        caller_id=caller,
        callee_id=callee,
        node_id=node_id,
        started_at=started,
        ends_at=started + timedelta(seconds=seconds),
    )


async def test_call_round_trip(backend: Backend) -> None:
    s = backend.store
    ada, bob = await make_user(s, "Ada"), await make_user(s, "Bob")
    room = RoomId(new_id())
    started = datetime(2025, 3, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    call = await s.calls.create(
        room_id=room,
        caller_id=ada.user_id,
        callee_id=bob.user_id,
        node_id="n" * 63,
        started_at=started,
        ends_at=started + timedelta(minutes=3),
    )
    assert call == Call(
        room_id=room,
        caller_id=ada.user_id,
        callee_id=bob.user_id,
        node_id="n" * 63,
        started_at=started,
        ends_at=started + timedelta(minutes=3),
        ended_at=None,
        end_reason=None,
        alive_at=started,  # a new call's room is up as it starts
    )
    assert call.started_at.utcoffset() == timedelta(0)
    assert_aware_utc(call)
    assert await s.calls.get(room) == call
    assert await s.calls.get(RoomId(new_id())) is None
    assert await s.calls.get(RoomId("not-a-uuid")) is None


async def test_call_create_refusals(backend: Backend) -> None:
    s = backend.store
    ada, bob = await make_user(s, "Ada"), await make_user(s, "Bob")
    call = await start_call(backend, ada.user_id, bob.user_id)
    with pytest.raises(AlreadyExists):
        await start_call(backend, bob.user_id, ada.user_id, room_id=call.room_id)
    with pytest.raises(NotFound):
        await start_call(backend, ada.user_id, UserId(new_id()))
    with pytest.raises(NotFound):
        await start_call(backend, UserId(new_id()), bob.user_id)
    with pytest.raises(InvalidArgument):
        await start_call(backend, ada.user_id, ada.user_id)  # a self-call
    for seconds in (0, -60):
        with pytest.raises(InvalidArgument):
            await start_call(backend, ada.user_id, bob.user_id, seconds=seconds)
    for node_id in ("", "n" * 64):
        with pytest.raises(InvalidArgument):
            await start_call(backend, ada.user_id, bob.user_id, node_id=node_id)
    with pytest.raises(InvalidArgument):
        await start_call(backend, ada.user_id, bob.user_id, room_id=RoomId("not-a-uuid"))
    with pytest.raises(InvalidArgument):
        await s.calls.create(
            room_id=RoomId(new_id()),
            caller_id=ada.user_id,
            callee_id=bob.user_id,
            node_id="node-a",
            started_at=datetime(2025, 1, 1),  # naive
            ends_at=backend.now() + HOUR,
        )
    assert await count_rows(s.engine, t.calls) == 1


async def test_active_call_for_either_participant(backend: Backend) -> None:
    s = backend.store
    ada, bob, cy = [await make_user(s, name) for name in ("Ada", "Bob", "Cy")]
    old = await start_call(backend, ada.user_id, cy.user_id)
    backend.clock.advance(10)
    call = await start_call(backend, ada.user_id, bob.user_id)
    assert await s.calls.active_for_user(ada.user_id) == call  # the newest one
    assert await s.calls.active_for_user(bob.user_id) == call
    assert await s.calls.active_for_user(cy.user_id) == old

    assert await s.calls.mark_ended(call.room_id, CallEndReason.LEFT, backend.now()) is True
    assert await s.calls.active_for_user(bob.user_id) is None
    assert await s.calls.active_for_user(ada.user_id) == old
    assert await s.calls.mark_ended(old.room_id, CallEndReason.CANCELLED, backend.now())
    assert await s.calls.active_for_user(ada.user_id) is None
    assert await s.calls.active_for_user(cy.user_id) is None
    assert await s.calls.active_for_user(UserId("not-a-uuid")) is None


async def test_mark_ended_once_under_concurrency(backend: Backend) -> None:
    s = backend.store
    ada, bob = await make_user(s, "Ada"), await make_user(s, "Bob")
    call = await start_call(backend, ada.user_id, bob.user_id)
    backend.clock.advance(42)
    ended_at = backend.now()
    reasons = list(CallEndReason) * 2
    results = await asyncio.gather(
        *(s.calls.mark_ended(call.room_id, reasons[n], ended_at) for n in range(10))
    )
    assert results.count(True) == 1 and results.count(False) == 9, results
    stored = await s.calls.get(call.room_id)
    assert stored is not None
    assert stored.ended_at == ended_at
    assert stored.end_reason is reasons[results.index(True)]
    assert_aware_utc(stored)

    assert await s.calls.mark_ended(call.room_id, CallEndReason.FAILED, backend.now()) is False
    assert await s.calls.get(call.room_id) == stored
    assert await s.calls.mark_ended(RoomId(new_id()), CallEndReason.LEFT, ended_at) is False
    assert await s.calls.mark_ended(RoomId("not-a-uuid"), CallEndReason.LEFT, ended_at) is False
    with pytest.raises(InvalidArgument):
        await s.calls.mark_ended(call.room_id, "bored", ended_at)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        await s.calls.mark_ended(call.room_id, CallEndReason.LEFT, datetime(2025, 1, 1))


async def test_unfinished_calls_for_the_sweeper(backend: Backend) -> None:
    s = backend.store
    people = [await make_user(s, f"P{n}") for n in range(8)]
    long = await start_call(backend, people[0].user_id, people[1].user_id, seconds=600)
    short = await start_call(backend, people[2].user_id, people[3].user_id, seconds=60)
    middle = await start_call(backend, people[4].user_id, people[5].user_id, seconds=300)
    ended = await start_call(backend, people[6].user_id, people[7].user_id, seconds=30)
    assert await s.calls.mark_ended(ended.room_id, CallEndReason.COMPLETED, backend.now())

    now = backend.now()
    assert await s.calls.unfinished(ends_before=now) == []
    assert await s.calls.unfinished(ends_before=short.ends_at) == []  # strictly before
    assert await s.calls.unfinished(ends_before=now + timedelta(seconds=301)) == [short, middle]
    everything = await s.calls.unfinished(ends_before=now + HOUR)
    assert everything == [short, middle, long]
    assert await s.calls.unfinished(ends_before=now + HOUR, limit=2) == [short, middle]
    with pytest.raises(InvalidArgument):
        await s.calls.unfinished(ends_before=now, limit=0)
    with pytest.raises(InvalidArgument):
        await s.calls.unfinished(ends_before=datetime(2030, 1, 1))


async def test_touch_records_when_a_call_was_last_known_up(backend: Backend) -> None:
    s = backend.store
    people = [await make_user(s, f"T{n}") for n in range(6)]
    one = await start_call(backend, people[0].user_id, people[1].user_id)
    two = await start_call(backend, people[2].user_id, people[3].user_id)
    done = await start_call(backend, people[4].user_id, people[5].user_id)
    assert one.alive_at == one.started_at
    later = backend.now() + timedelta(seconds=7)
    assert await s.calls.mark_ended(done.room_id, CallEndReason.LEFT, later)
    touched = await s.calls.touch([one.room_id, done.room_id, RoomId(new_id()),
                                   RoomId("not-a-uuid")], later)
    assert touched == 1  # an ended call, an unknown and a malformed id are left alone
    assert (await s.calls.get(one.room_id)).alive_at == later  # type: ignore[union-attr]
    assert (await s.calls.get(two.room_id)).alive_at == two.started_at  # type: ignore[union-attr]
    assert (await s.calls.get(done.room_id)).alive_at == done.started_at  # type: ignore[union-attr]
    assert await s.calls.touch([], later) == 0
    assert await s.calls.last_ended(people[4].user_id) == await s.calls.get(done.room_id)
    assert await s.calls.last_ended(people[0].user_id) is None  # still in its call
    assert await s.calls.last_ended(UserId("not-a-uuid")) is None
    with pytest.raises(InvalidArgument):
        await s.calls.touch([one.room_id], datetime(2030, 1, 1))


async def test_call_messages_in_order(backend: Backend) -> None:
    s = backend.store
    ada, bob = await make_user(s, "Ada"), await make_user(s, "Bob")
    call = await start_call(backend, ada.user_id, bob.user_id)
    other = await start_call(backend, bob.user_id, ada.user_id)
    texts = ["hi", "hello \u2603", "x" * 1000, "bye"]
    sent = []
    for n, text in enumerate(texts):
        sender = ada if n % 2 == 0 else bob
        sent.append(await s.calls.add_message(call.room_id, sender.user_id, text, backend.now()))
    await s.calls.add_message(other.room_id, bob.user_id, "elsewhere", backend.now())
    assert [m.text for m in sent] == texts
    assert sent[0].sender_id == ada.user_id and sent[1].sender_id == bob.user_id
    assert sent[0].room_id == call.room_id and sent[0].sent_at == backend.now()
    assert [m.message_id for m in sent] == sorted({m.message_id for m in sent})
    assert_aware_utc(sent[0])
    assert await s.calls.messages(call.room_id) == sent
    assert [m.text for m in await s.calls.messages(other.room_id)] == ["elsewhere"]
    assert await s.calls.messages(RoomId(new_id())) == []
    assert await s.calls.messages(RoomId("not-a-uuid")) == []


async def test_call_message_refusals(backend: Backend) -> None:
    s = backend.store
    ada, bob = await make_user(s, "Ada"), await make_user(s, "Bob")
    call = await start_call(backend, ada.user_id, bob.user_id)
    now = backend.now()
    with pytest.raises(NotFound):
        await s.calls.add_message(RoomId(new_id()), ada.user_id, "hello?", now)
    with pytest.raises(NotFound):
        await s.calls.add_message(call.room_id, UserId(new_id()), "who am I", now)
    for text in ("", "   ", "x" * 1001):
        with pytest.raises(InvalidArgument):
            await s.calls.add_message(call.room_id, ada.user_id, text, now)
    with pytest.raises(InvalidArgument):
        await s.calls.add_message(call.room_id, ada.user_id, "naive", datetime(2025, 1, 1))
    with pytest.raises(InvalidArgument):
        await s.calls.add_message(RoomId("not-a-uuid"), ada.user_id, "hi", now)
    assert await count_rows(s.engine, t.call_messages) == 0


async def test_calls_guard_their_users_and_the_schema_checks_them(backend: Backend) -> None:
    s = backend.store
    ada, bob = await make_user(s, "Ada"), await make_user(s, "Bob")
    call = await start_call(backend, ada.user_id, bob.user_id)
    await s.calls.add_message(call.room_id, ada.user_id, "hi", backend.now())
    with pytest.raises(FailedPrecondition):
        await s.users.delete(bob.user_id)  # a call still refers to Bob

    now = backend.now()
    row = {
        "caller_id": ada.user_id,
        "callee_id": bob.user_id,
        "node_id": "node-a",
        "started_at": now,
        "ends_at": now + HOUR,
    }
    bad_rows = [
        {**row, "callee_id": ada.user_id},
        {**row, "ends_at": now},
        {**row, "ended_at": now, "end_reason": "bored"},
        {**row, "ended_at": now},  # ended without a reason
        {**row, "end_reason": "left"},  # a reason without an end
    ]
    for bad in bad_rows:
        with pytest.raises(sa_exc.IntegrityError):
            async with s.engine.begin() as conn:
                await conn.execute(sa.insert(t.calls).values(room_id=new_id(), **bad))
    async with s.engine.begin() as conn:  # deleting a call deletes its messages
        await conn.execute(sa.delete(t.calls).where(t.calls.c.room_id == call.room_id))
    assert await count_rows(s.engine, t.call_messages) == 0


async def test_get_many_users_in_one_call(backend: Backend) -> None:
    s = backend.store
    ada, bob = await make_user(s, "Ada"), await make_user(s, "Bob")
    found = await s.users.get_many([ada.user_id, bob.user_id, UserId(new_id()),
                                    UserId("not-a-uuid"), ada.user_id])
    assert found == {ada.user_id: ada, bob.user_id: bob}
    assert await s.users.get_many([]) == {}


# ---- intro videos ----


def intro_result(key: str = "intro/v.mp4") -> IntroVideoResult:
    return IntroVideoResult(video_key=key, poster_key=key.replace(".mp4", ".jpg"),
                            duration=12.5, width=1280, height=720, size=2_000_000)


async def test_intro_jobs_queue_run_and_finish_pointing_the_user_at_the_video(
        backend: Backend) -> None:
    s = backend.store
    ada = await make_user(s, "Ada")
    job, superseded = await s.intro_videos.create(ada.user_id, "uploads/a.webm")
    assert superseded == [] and job.status is IntroVideoStatus.QUEUED and job.progress == 0
    assert (await s.intro_videos.latest(ada.user_id)) == job
    later = backend.now() + timedelta(seconds=30)
    claimed = await s.intro_videos.claim("node-a", stale_before=backend.now(), max_attempts=3)
    assert claimed is not None and claimed.job_id == job.job_id
    assert claimed.status is IntroVideoStatus.RUNNING and claimed.attempts == 1
    assert claimed.worker == "node-a"
    assert await s.intro_videos.claim("node-b", stale_before=backend.now(),
                                      max_attempts=3) is None
    assert await s.intro_videos.heartbeat(job.job_id, "node-a", 40)
    assert not await s.intro_videos.heartbeat(job.job_id, "node-b", 50)  # not its job
    assert (await s.intro_videos.get(job.job_id)).progress == 40  # type: ignore[union-attr]
    assert await s.intro_videos.finish(job.job_id, "node-a", intro_result())
    done = await s.intro_videos.latest(ada.user_id)
    assert done is not None and done.status is IntroVideoStatus.DONE and done.progress == 100
    assert (done.video_key, done.poster_key, done.width, done.height) == (
        "intro/v.mp4", "intro/v.jpg", 1280, 720)
    assert_aware_utc(done)
    assert (await s.users.get(ada.user_id)).video_url == "intro/v.mp4"  # type: ignore[union-attr]
    assert not await s.intro_videos.fail(job.job_id, "node-a", "late")  # done stays done
    assert later > backend.now()


async def test_a_new_upload_supersedes_the_running_job_whose_worker_then_stops(
        backend: Backend) -> None:
    s = backend.store
    ada = await make_user(s, "Ada")
    first, _ = await s.intro_videos.create(ada.user_id, "uploads/1.webm")
    assert await s.intro_videos.claim("node-a", stale_before=backend.now(), max_attempts=3)
    second, superseded = await s.intro_videos.create(ada.user_id, "uploads/2.webm")
    assert [j.job_id for j in superseded] == [first.job_id]
    assert superseded[0].status is IntroVideoStatus.SUPERSEDED
    assert superseded[0].source_key == "uploads/1.webm"  # so its files can be removed
    assert not await s.intro_videos.heartbeat(first.job_id, "node-a", 80)
    assert not await s.intro_videos.finish(first.job_id, "node-a", intro_result("intro/1.mp4"))
    assert (await s.users.get(ada.user_id)).video_url is None  # type: ignore[union-attr]
    assert (await s.intro_videos.latest(ada.user_id)) == second


async def test_a_dead_workers_job_is_retried_then_failed_after_max_attempts(
        backend: Backend) -> None:
    s = backend.store
    ada = await make_user(s, "Ada")
    job, _ = await s.intro_videos.create(ada.user_id, "uploads/a.webm")
    took = await s.intro_videos.claim("node-a", stale_before=backend.now(), max_attempts=2)
    assert took is not None
    # node-a stops heartbeating; a minute later another worker may take it over
    backend.clock.advance(60)
    assert await s.intro_videos.claim("node-b", stale_before=backend.now() - timedelta(
        seconds=90), max_attempts=2) is None  # not stale yet by that measure
    again = await s.intro_videos.claim("node-b", stale_before=backend.now() - timedelta(
        seconds=30), max_attempts=2)
    assert again is not None and again.worker == "node-b" and again.attempts == 2
    assert not await s.intro_videos.heartbeat(job.job_id, "node-a", 10)  # the old worker stops
    backend.clock.advance(60)
    assert await s.intro_videos.claim("node-c", stale_before=backend.now() - timedelta(
        seconds=30), max_attempts=2) is None
    failed = await s.intro_videos.get(job.job_id)
    assert failed is not None and failed.status is IntroVideoStatus.FAILED
    assert failed.error and "upload again" in failed.error


async def test_two_workers_racing_for_one_job_one_wins(backend: Backend) -> None:
    s = backend.store
    ada = await make_user(s, "Ada")
    await s.intro_videos.create(ada.user_id, "uploads/a.webm")
    results = await asyncio.gather(*(
        s.intro_videos.claim(f"node-{i}", stale_before=backend.now(), max_attempts=3)
        for i in range(4)))
    assert len([r for r in results if r is not None]) == 1


async def test_intro_job_refusals_and_unknown_ids(backend: Backend) -> None:
    s = backend.store
    with pytest.raises(NotFound):
        await s.intro_videos.create(UserId(new_id()), "uploads/x.webm")
    with pytest.raises(InvalidArgument):
        await s.intro_videos.create(UserId("not-an-id"), "uploads/x.webm")
    ada = await make_user(s, "Ada")
    with pytest.raises(InvalidArgument):
        await s.intro_videos.create(ada.user_id, "")
    assert await s.intro_videos.get("nope") is None
    assert await s.intro_videos.latest(UserId("nope")) is None
    assert not await s.intro_videos.heartbeat("nope", "w", 1)
    job, _ = await s.intro_videos.create(ada.user_id, "uploads/a.webm")
    assert await s.intro_videos.claim("w", stale_before=backend.now(), max_attempts=3)
    assert await s.intro_videos.fail(job.job_id, "w", "the video could not be decoded")
    failed = await s.intro_videos.latest(ada.user_id)
    assert failed is not None and failed.status is IntroVideoStatus.FAILED
    # deleting the user deletes the jobs
    assert await s.users.delete(ada.user_id)
    assert await count_rows(s.engine, t.intro_videos) == 0


# ---- recordings ----


async def recorded_call(backend: Backend, caller: User, callee: User,
                        node_id: str = "n1") -> Call:
    return await backend.store.calls.create(
        room_id=RoomId(new_id()), caller_id=caller.user_id, callee_id=callee.user_id,
        node_id=node_id, started_at=backend.now(), ends_at=backend.now() + HOUR, recorded=True)


async def test_call_recorded_round_trips(backend: Backend) -> None:
    s = backend.store
    ada, bob = await make_user(s, "Ada"), await make_user(s, "Bob")
    recorded = await recorded_call(backend, ada, bob)
    assert recorded.recorded is True
    assert await s.calls.get(recorded.room_id) == recorded
    await s.calls.mark_ended(recorded.room_id, CallEndReason.LEFT, backend.now())
    plain = await s.calls.create(
        room_id=RoomId(new_id()), caller_id=ada.user_id, callee_id=bob.user_id, node_id="n1",
        started_at=backend.now(), ends_at=backend.now() + HOUR)
    assert plain.recorded is False
    assert (await s.calls.get(plain.room_id)).recorded is False  # type: ignore[union-attr]
    assert (await s.calls.active_for_user(ada.user_id)) == plain


async def test_recordings_start_then_finish_once(backend: Backend) -> None:
    s = backend.store
    ada, bob = await make_user(s, "Ada"), await make_user(s, "Bob")
    call = await recorded_call(backend, ada, bob)
    started = await s.recordings.start(call.room_id, [ada.user_id, bob.user_id], "n1")
    assert [r.user_id for r in started] == [ada.user_id, bob.user_id]
    assert len({r.recording_id for r in started}) == 2
    for r in started:
        assert (r.room_id, r.node_id, r.status) == (call.room_id, "n1",
                                                   RecordingStatus.RECORDING)
        assert (r.blob_key, r.container, r.video_codec, r.audio_codec) == (None,) * 4
        assert (r.duration, r.size, r.error) == (None, None, None)
        assert r.created_at == r.updated_at == backend.now()
        assert_aware_utc(r)
    assert sorted(await s.recordings.for_room(call.room_id), key=lambda r: r.user_id) == sorted(
        started, key=lambda r: r.user_id)

    backend.clock.advance(90)
    first = started[0]
    assert await s.recordings.finish(
        first.recording_id, blob_key="recordings/a.webm", container="webm",
        video_codec="vp8", audio_codec="opus", duration=89.5, size=12_345_678_901)
    assert not await s.recordings.finish(  # the second time: nothing written
        first.recording_id, blob_key="recordings/other.webm", container="matroska",
        video_codec=None, audio_codec=None, duration=1.0, size=1)
    assert not await s.recordings.fail(first.recording_id, "too late")  # ready stays ready
    ready = {r.recording_id: r for r in await s.recordings.for_room(call.room_id)}[
        first.recording_id]
    assert ready.status is RecordingStatus.READY
    assert (ready.blob_key, ready.container, ready.video_codec, ready.audio_codec) == (
        "recordings/a.webm", "webm", "vp8", "opus")
    assert (ready.duration, ready.size, ready.error) == (89.5, 12_345_678_901, None)
    assert ready.created_at == first.created_at and ready.updated_at == backend.now()
    assert_aware_utc(ready)


async def test_a_failed_recording_cannot_be_finished_or_failed_again(backend: Backend) -> None:
    s = backend.store
    ada, bob = await make_user(s, "Ada"), await make_user(s, "Bob")
    call = await recorded_call(backend, ada, bob)
    (rec,) = await s.recordings.start(call.room_id, [ada.user_id], "n1")
    assert await s.recordings.fail(rec.recording_id, "the muxer stopped")
    assert not await s.recordings.fail(rec.recording_id, "again")
    assert not await s.recordings.finish(
        rec.recording_id, blob_key="recordings/a.mkv", container="matroska",
        video_codec="h264", audio_codec="opus", duration=3.0, size=10)
    (failed,) = await s.recordings.for_room(call.room_id)
    assert failed.status is RecordingStatus.FAILED and failed.error == "the muxer stopped"
    assert failed.blob_key is None
    # an error longer than the column is cut, not refused
    (other,) = await s.recordings.start(call.room_id, [bob.user_id], "n1")
    assert await s.recordings.fail(other.recording_id, "x" * 400)
    got = {r.recording_id: r for r in await s.recordings.for_room(call.room_id)}
    assert got[other.recording_id].error == "x" * 255


async def test_recordings_list_oldest_first_and_delete_room_returns_them(
        backend: Backend) -> None:
    s = backend.store
    ada, bob = await make_user(s, "Ada"), await make_user(s, "Bob")
    call = await recorded_call(backend, ada, bob)
    other = await s.calls.create(
        room_id=RoomId(new_id()), caller_id=bob.user_id, callee_id=ada.user_id, node_id="n2",
        started_at=backend.now(), ends_at=backend.now() + HOUR, recorded=True)
    (a,) = await s.recordings.start(call.room_id, [ada.user_id], "n1")
    backend.clock.advance(5)
    (b,) = await s.recordings.start(call.room_id, [bob.user_id], "n1")
    backend.clock.advance(5)
    (c,) = await s.recordings.start(call.room_id, [ada.user_id], "n1")  # e.g. after a restart
    kept = await s.recordings.start(other.room_id, [ada.user_id, bob.user_id], "n2")
    assert [r.recording_id for r in await s.recordings.for_room(call.room_id)] == [
        a.recording_id, b.recording_id, c.recording_id]
    deleted = await s.recordings.delete_room(call.room_id)
    assert [r.recording_id for r in deleted] == [a.recording_id, b.recording_id,
                                                c.recording_id]
    assert deleted[0] == a
    assert await s.recordings.for_room(call.room_id) == []
    assert await s.recordings.delete_room(call.room_id) == []
    assert sorted(r.recording_id for r in await s.recordings.for_room(other.room_id)) == sorted(
        r.recording_id for r in kept)
    assert await count_rows(s.engine, t.recordings) == 2


async def test_fail_unfinished_fails_only_that_nodes_recording_rows(backend: Backend) -> None:
    s = backend.store
    ada, bob = await make_user(s, "Ada"), await make_user(s, "Bob")
    on_n1 = await recorded_call(backend, ada, bob, "n1")
    on_n2 = await recorded_call(backend, bob, ada, "n2")
    r1a, r1b = await s.recordings.start(on_n1.room_id, [ada.user_id, bob.user_id], "n1")
    ready, _ = await s.recordings.start(on_n1.room_id, [ada.user_id, bob.user_id], "n1")
    assert await s.recordings.finish(ready.recording_id, blob_key="recordings/r.webm",
                                     container="webm", video_codec="vp8", audio_codec="opus",
                                     duration=10.0, size=100)
    r2 = await s.recordings.start(on_n2.room_id, [ada.user_id, bob.user_id], "n2")
    backend.clock.advance(30)
    assert await s.recordings.fail_unfinished("n1") == 3
    assert await s.recordings.fail_unfinished("n1") == 0
    assert await s.recordings.fail_unfinished("n3") == 0
    by_id = {r.recording_id: r for r in await s.recordings.for_room(on_n1.room_id)}
    assert by_id[ready.recording_id].status is RecordingStatus.READY
    for rid in (r1a.recording_id, r1b.recording_id):
        assert by_id[rid].status is RecordingStatus.FAILED
        assert by_id[rid].error and by_id[rid].updated_at == backend.now()
    assert [r.status for r in await s.recordings.for_room(on_n2.room_id)] == [
        RecordingStatus.RECORDING] * 2
    assert {r.recording_id for r in r2} == {
        r.recording_id for r in await s.recordings.for_room(on_n2.room_id)}


async def test_recording_refusals_and_unknown_ids(backend: Backend) -> None:
    s = backend.store
    ada, bob = await make_user(s, "Ada"), await make_user(s, "Bob")
    call = await recorded_call(backend, ada, bob)
    with pytest.raises(NotFound):
        await s.recordings.start(RoomId(new_id()), [ada.user_id], "n1")
    with pytest.raises(NotFound):
        await s.recordings.start(call.room_id, [ada.user_id, UserId(new_id())], "n1")
    assert await count_rows(s.engine, t.recordings) == 0  # nothing of a refused start is kept
    with pytest.raises(InvalidArgument):
        await s.recordings.start(RoomId("not-an-id"), [ada.user_id], "n1")
    with pytest.raises(InvalidArgument):
        await s.recordings.start(call.room_id, [UserId("not-an-id")], "n1")
    with pytest.raises(InvalidArgument):
        await s.recordings.start(call.room_id, [ada.user_id], "")
    with pytest.raises(InvalidArgument):
        await s.recordings.start(call.room_id, [ada.user_id], "n" * 64)
    with pytest.raises(InvalidArgument):
        await s.recordings.start(call.room_id, [], "n1")
    (rec,) = await s.recordings.start(call.room_id, [ada.user_id], "n1")
    for bad in dict(blob_key=""), dict(container="x" * 13), dict(size=-1), dict(duration=-1.0):
        facts: dict[str, object] = dict(blob_key="recordings/a.webm", container="webm",
                                        video_codec="vp8", audio_codec="opus", duration=1.0,
                                        size=1)
        facts.update(bad)
        with pytest.raises(InvalidArgument):
            await s.recordings.finish(rec.recording_id, **facts)  # type: ignore[arg-type]
    for unknown in (new_id(), "not-an-id", ""):
        assert not await s.recordings.finish(
            unknown, blob_key="recordings/a.webm", container="webm", video_codec=None,
            audio_codec=None, duration=1.0, size=1)
        assert not await s.recordings.fail(unknown, "boom")
        assert await s.recordings.for_room(RoomId(unknown)) == []
        assert await s.recordings.delete_room(RoomId(unknown)) == []
    (still,) = await s.recordings.for_room(call.room_id)
    assert still.status is RecordingStatus.RECORDING


async def test_recordings_go_with_their_call_and_their_user(backend: Backend) -> None:
    s = backend.store
    ada, bob, eve = (await make_user(s, "Ada"), await make_user(s, "Bob"),
                     await make_user(s, "Eve"))
    call = await recorded_call(backend, ada, bob)
    await s.recordings.start(call.room_id, [ada.user_id, bob.user_id, eve.user_id], "n1")
    # a user still in calls cannot be deleted; one whose only records are recordings can
    with pytest.raises(FailedPrecondition):
        await s.users.delete(ada.user_id)
    assert await s.users.delete(eve.user_id)
    assert sorted(r.user_id for r in await s.recordings.for_room(call.room_id)) == sorted(
        [ada.user_id, bob.user_id])
    # the store has no way to delete a call: the cascade is checked on the table itself
    async with s.engine.begin() as conn:
        await conn.execute(sa.delete(t.calls).where(t.calls.c.room_id == call.room_id))
    assert await count_rows(s.engine, t.recordings) == 0
