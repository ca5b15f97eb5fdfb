"""Accounts and sessions: sign-up, sign-in, upgrade, sign-out, token checks, admin second factor.

Tokens are opaque random strings handed to the client once; the store and the cache only ever
see their SHA-256. A token is checked against the live-state cache first (so a request does not
touch the database), then the store. Revocation deletes both. Tokens rotate when a guest upgrades
and when an admin proves the second factor (a privilege change).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import pyotp

from core.clock import Clock, utcnow
from core.errors import (
    AlreadyExists,
    InvalidArgument,
    NapalmError,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)
from core.ids import UserId
from core.live import Bus, LiveState
from core.passwords import PasswordHasher, check_password
from core.store import AccountType, Gender, NewUser, Store, User, hash_session_token

log = logging.getLogger(__name__)

TOKEN_BYTES = 32
CACHE_TTL = 300.0
SESSIONS_CHANNEL = "sessions"  # bus channel: {"tokens": [token hashes], "user": id or null}
TOTP_SESSION_ATTEMPTS = 5  # second-factor attempts per session in TOTP_WINDOW
TOTP_ACCOUNT_ATTEMPTS = 10  # and per account, whatever the sessions
TOTP_WINDOW = 900.0  # seconds
TOTP_REUSE_TTL = 120.0  # seconds a used code stays used (covers the +-30 s window accepted)
MAX_NAME = 50
_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    guest_ttl: timedelta = timedelta(days=7)
    permanent_ttl: timedelta = timedelta(days=30)
    cache_ttl: float = CACHE_TTL
    totp_issuer: str = "Napalm Sky"


@dataclass(frozen=True, slots=True)
class AuthContext:
    """Who a request is: the user and the session it came with."""

    user_id: UserId
    token_hash: str
    expires_at: float  # unix seconds
    mfa: bool


@dataclass(frozen=True, slots=True)
class SignedIn:
    token: str
    user: User


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        raise InvalidArgument("email is not a valid address")
    return email


def check_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise InvalidArgument("name must not be empty")
    if len(name) > MAX_NAME:
        raise InvalidArgument(f"name must be at most {MAX_NAME} characters")
    if not name.isprintable():
        raise InvalidArgument("name contains control characters")
    return name


def _cache_key(token_hash: str) -> str:
    return f"session:{token_hash}"


class AccountService:
    def __init__(self, store: Store, live: LiveState, hasher: PasswordHasher, clock: Clock,
                 policy: SessionPolicy | None = None, bus: Bus | None = None) -> None:
        self.store = store
        self.live = live
        self.bus = bus  # where ended sessions are announced (every node closes their sockets)
        self.hasher = hasher
        self.clock = clock
        self.policy = policy or SessionPolicy()
        # A real hash at the configured cost to verify against when the email is unknown (or
        # the account has no password), so a failed login costs one full verification either
        # way: the time does not tell whether an email is registered.
        self._dummy_hash: str | None = None

    # ---- sign-up and sign-in ----

    async def sign_up_guest(self, name: str, gender: Gender, ip: str | None) -> SignedIn:
        user = await self.store.users.create(
            NewUser(name=check_name(name), gender=gender, account_type=AccountType.GUEST)
        )
        return SignedIn(await self._open_session(user, ip), user)

    async def register(self, email: str, password: str, name: str, gender: Gender,
                       ip: str | None) -> SignedIn:
        email = normalise_email(email)
        check_password(password)
        if await self.store.users.get_by_email(email) is not None:
            raise AlreadyExists("an account with this email already exists")
        user = await self.store.users.create(NewUser(
            name=check_name(name), gender=gender, account_type=AccountType.PERMANENT,
            email=email, password_hash=await self.hasher.hash(password),
        ))
        return SignedIn(await self._open_session(user, ip), user)

    async def login(self, email: str, password: str, ip: str | None) -> SignedIn:
        try:
            email = normalise_email(email)
        except InvalidArgument:
            email = ""
        user = await self.store.users.get_by_email(email) if email else None
        if user is not None and user.password_hash:
            valid = await self.hasher.verify(password, user.password_hash)
        else:
            valid = False
            if self._dummy_hash is None:
                # The first time: hashing costs what a verification does (same cost factor).
                # A fixed string: the attempted password may be one bcrypt cannot hash.
                self._dummy_hash = await self.hasher.hash("not-a-password-of-anyone")
            else:
                await self.hasher.verify(password, self._dummy_hash)
        if user is None or not valid:
            raise Unauthenticated("invalid email or password")
        return SignedIn(await self._open_session(user, ip), user)

    async def upgrade(self, ctx: AuthContext, email: str, password: str,
                      ip: str | None) -> SignedIn:
        """Make a guest permanent, keeping its id and history; the token rotates."""
        user = await self._user(ctx)
        if user.account_type is AccountType.PERMANENT:
            raise InvalidArgument("account is already permanent")
        email = normalise_email(email)
        check_password(password)
        if await self.store.users.get_by_email(email) is not None:
            raise AlreadyExists("an account with this email already exists")
        user = await self.store.users.update(user.user_id, {
            "account_type": AccountType.PERMANENT, "email": email,
            "password_hash": await self.hasher.hash(password),
        })
        await self.revoke(ctx.token_hash)
        return SignedIn(await self._open_session(user, ip), user)

    async def logout(self, ctx: AuthContext) -> None:
        await self.revoke(ctx.token_hash)

    async def logout_all(self, ctx: AuthContext) -> int:
        sessions = await self.store.sessions.list_for_user(ctx.user_id)
        for session in sessions:
            await self.live.delete(_cache_key(session.token_hash))
        count = await self.store.sessions.delete_for_user(ctx.user_id)
        await self.announce_ended(user_id=ctx.user_id)
        return count

    async def revoke(self, token_hash: str) -> None:
        """End one session: its cache entry (shared by every node), its row, its sockets."""
        await self.live.delete(_cache_key(token_hash))
        await self.store.sessions.delete(token_hash)
        await self.announce_ended(token_hashes=[token_hash])

    async def announce_ended(self, *, token_hashes: Sequence[str] = (),
                             user_id: UserId | None = None) -> None:
        """Tell every node that these sessions (or all of `user_id`'s) ended, so that the
        sockets they opened close at once (SESSIONS_CHANNEL)."""
        if self.bus is None:
            return
        message = json.dumps({"tokens": list(token_hashes), "user": user_id})
        try:
            await self.bus.publish(SESSIONS_CHANNEL, message)
        except NapalmError as exc:  # the bus is down: heartbeats re-check the session anyway
            log.warning("could not announce ended sessions: %s", exc.message)

    # ---- token checks ----

    async def authenticate(self, token: str) -> AuthContext:
        if not token or len(token) > 256:
            raise Unauthenticated("invalid or expired token")
        return await self._by_hash(hash_session_token(token))

    async def authenticate_context(self, ctx: AuthContext) -> AuthContext:
        """Check again that an earlier-authenticated session is still valid (long sockets)."""
        return await self._by_hash(ctx.token_hash)

    async def _by_hash(self, token_hash: str) -> AuthContext:
        now = self.clock.time()
        cached = await self.live.get(_cache_key(token_hash))
        if cached is not None:
            data = json.loads(cached)
            if data["e"] > now:
                return AuthContext(UserId(data["u"]), token_hash, data["e"], data["m"])
        session = await self.store.sessions.get_by_token_hash(token_hash)
        if session is None or session.expires_at.timestamp() <= now:
            raise Unauthenticated("invalid or expired token")
        ctx = AuthContext(session.user_id, token_hash, session.expires_at.timestamp(),
                          session.mfa)
        await self._cache(ctx)
        return ctx

    async def _cache(self, ctx: AuthContext) -> None:
        ttl = min(self.policy.cache_ttl, ctx.expires_at - self.clock.time())
        if ttl > 0:
            value = json.dumps({"u": ctx.user_id, "e": ctx.expires_at, "m": ctx.mfa})
            await self.live.set(_cache_key(ctx.token_hash), value, ttl=ttl)

    async def _open_session(self, user: User, ip: str | None, *, mfa: bool = False) -> str:
        ttl = (self.policy.guest_ttl if user.account_type is AccountType.GUEST
               else self.policy.permanent_ttl)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        session = await self.store.sessions.create(
            user.user_id, hash_session_token(token), ip, utcnow(self.clock) + ttl, mfa=mfa
        )
        await self._cache(AuthContext(user.user_id, session.token_hash,
                                      session.expires_at.timestamp(), mfa))
        return token

    async def _user(self, ctx: AuthContext) -> User:
        user = await self.store.users.get(ctx.user_id)
        if user is None:  # deleted while the token was cached
            await self.revoke(ctx.token_hash)
            raise Unauthenticated("invalid or expired token")
        return user

    async def user(self, ctx: AuthContext) -> User:
        return await self._user(ctx)

    # ---- admins ----

    async def create_admin(self, email: str, name: str, password: str) -> tuple[User, str]:
        """A permanent admin account and its TOTP provisioning URI (shown once)."""
        email = normalise_email(email)
        check_password(password)
        secret = pyotp.random_base32()
        if await self.store.users.get_by_email(email) is not None:
            raise AlreadyExists("an account with this email already exists")
        user = await self.store.users.create(NewUser(
            name=check_name(name), gender=Gender.UNSPECIFIED,
            account_type=AccountType.PERMANENT, email=email,
            password_hash=await self.hasher.hash(password), is_admin=True, totp_secret=secret,
        ))
        uri = pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=self.policy.totp_issuer)
        return user, uri

    async def verify_second_factor(self, ctx: AuthContext, code: str,
                                   ip: str | None) -> SignedIn:
        """An admin proves the TOTP code: the token rotates to one that may use admin routes."""
        user = await self._user(ctx)
        if not user.is_admin or not user.totp_secret:
            raise PermissionDenied("not an admin")
        # Guessing a 6-digit code is bounded: a few attempts per session and per account in
        # a window, counted before the check (RFC 6238 section 5.2).
        for key, limit, window in (
            (f"totp-attempts:session:{ctx.token_hash}", TOTP_SESSION_ATTEMPTS, TOTP_WINDOW),
            (f"totp-attempts:user:{user.user_id}", TOTP_ACCOUNT_ATTEMPTS, TOTP_WINDOW),
        ):
            count, retry_after = await self.live.incr(key, window)
            if count > limit:
                raise RateLimited("too many second-factor attempts; try again later",
                                  retry_after=retry_after)
        if not re.fullmatch(r"\d{6}", code) or not pyotp.TOTP(user.totp_secret).verify(
            code, for_time=int(self.clock.time()), valid_window=1
        ):
            raise Unauthenticated("invalid second-factor code")
        # Each code proves presence once, on one session (RFC 6238 section 5.2): a code seen
        # by someone else is no use to them.
        if not await self.live.claim(f"totp-used:{user.user_id}:{code}", ctx.token_hash,
                                     ttl=TOTP_REUSE_TTL):
            raise Unauthenticated("this second-factor code was already used")
        await self.revoke(ctx.token_hash)
        return SignedIn(await self._open_session(user, ip, mfa=True), user)

    async def require_admin(self, ctx: AuthContext) -> User:
        user = await self._user(ctx)
        if not user.is_admin:
            raise PermissionDenied("admins only")
        if not ctx.mfa:
            raise PermissionDenied("second factor required: POST /api/v1/auth/totp")
        return user
