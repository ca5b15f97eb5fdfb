"""Join tokens (sfu/token.py): only the exact token minted with the key verifies, until it
expires; anything else is refused with the project's errors, never another exception."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from core.clock import FakeClock
from core.errors import InvalidArgument, PermissionDenied, Unauthenticated
from sfu.token import MAX_ID_LENGTH, mint_join_token, verify_join_token

fuzz = settings.get_profile("napalmsky-fuzz")

SECRET = b"k" * 32
START = 1_700_000_000.0

ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=MAX_ID_LENGTH).filter(
    str.isprintable
)
secrets_ = st.binary(min_size=1, max_size=64)
# What a token may be altered with: its own alphabet, the base64 specials, and anything else.
token_chars = st.sampled_from(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \n!\x00é\ud800"
) | st.characters()


def clock() -> FakeClock:
    return FakeClock(START)


def token_for(room: str = "room-1", user: str = "user-1", ttl: int = 60) -> str:
    return mint_join_token(SECRET, room, user, clock(), ttl)


def refused(token: str, secret: bytes = SECRET, room_id: str | None = None) -> None:
    with pytest.raises(Unauthenticated):
        verify_join_token(secret, token, clock(), room_id=room_id)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: bytes, secret: bytes = SECRET) -> str:
    """A token with a valid signature over an arbitrary payload (what only a holder of the
    secret could make)."""
    key = hmac.new(secret, b"napalmsky sfu join token", hashlib.sha256).digest()
    body = f"v1.{_b64(payload)}"
    return f"{body}.{_b64(hmac.new(key, body.encode(), hashlib.sha256).digest())}"


@fuzz
@given(room=ids, user=ids, ttl=st.integers(1, 10**9), secret=secrets_)
# Ids of 128 printable non-ASCII characters (12 JSON characters each): mint used to return a
# token longer than verify accepts.
@example(room="\U0001d54a" * MAX_ID_LENGTH, user="u" * MAX_ID_LENGTH, ttl=60, secret=SECRET)
def test_a_minted_token_verifies_with_its_key_only(
    room: str, user: str, ttl: int, secret: bytes
) -> None:
    try:
        token = mint_join_token(secret, room, user, clock(), ttl)
    except InvalidArgument as exc:
        assert "too long" in exc.message and not (room + user).isascii()
        return
    grant = verify_join_token(secret, token, clock(), room_id=room)
    assert (grant.room_id, grant.user_id, grant.expires_at) == (room, user, int(START) + ttl)
    refused(token, secret=secret + b"x")
    refused(token, secret=bytes(b ^ 1 for b in secret))


@fuzz
@given(room=ids, other=ids)
def test_a_token_for_another_room_is_permission_denied(room: str, other: str) -> None:
    assume(room != other)
    with pytest.raises(PermissionDenied):
        verify_join_token(SECRET, token_for(room), clock(), room_id=other)


@fuzz
@given(ttl=st.integers(1, 10**6), late=st.floats(0, 10**6))
def test_a_token_expires_at_its_ttl(ttl: int, late: float) -> None:
    token = token_for(ttl=ttl)
    at = FakeClock(START + ttl + late)
    with pytest.raises(Unauthenticated, match="expired"):
        verify_join_token(SECRET, token, at)
    verify_join_token(SECRET, token, FakeClock(START + ttl - 1))


@fuzz
@given(data=st.data())
# The last signature character carries 4 bits of the HMAC and 2 unused ones: a lenient base64
# decoder maps "...E" and "...F" to the same bytes.
@example(data=None)
def test_any_changed_character_is_refused(data: st.DataObject | None) -> None:
    token = token_for()
    if data is None:
        at, char = len(token) - 1, chr(ord(token[-1]) ^ 1)
    else:
        at = data.draw(st.integers(0, len(token) - 1))
        char = data.draw(token_chars.filter(lambda c: c != token[at]))
    refused(token[:at] + char + token[at + 1 :])


@fuzz
@given(cut=st.integers(0, 200), data=st.data())
def test_a_truncated_token_is_refused(cut: int, data: st.DataObject) -> None:
    token = token_for()
    cut %= len(token)
    from_start = data.draw(st.booleans())
    refused(token[cut:] if from_start and cut else token[:cut])


@fuzz
@given(suffix=st.text(token_chars, min_size=1, max_size=8), prefix=st.booleans())
# Padding after the signature ("=") and characters a lenient decoder skips ("!!").
@example(suffix="=", prefix=False)
@example(suffix="!!", prefix=False)
@example(suffix="==", prefix=False)
def test_an_extended_token_is_refused(suffix: str, prefix: bool) -> None:
    token = token_for()
    refused(suffix + token if prefix else token + suffix)


@fuzz
@given(text=st.text(token_chars, max_size=1100), room=st.none() | ids)
@example(text="v1.\ud800.AAAA", room=None)  # a lone surrogate, as JSON "\ud800" decodes to
@example(text="v1..", room=None)
def test_arbitrary_text_is_refused_with_the_project_error(text: str, room: str | None) -> None:
    with pytest.raises((Unauthenticated, PermissionDenied)):
        verify_join_token(SECRET, text, clock(), room_id=room)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8,
)


@fuzz
@given(
    payload=st.fixed_dictionaries(
        {}, optional={"room": json_values, "user": json_values, "exp": json_values}
    ).map(lambda d: repr(d).encode())
    | st.binary(max_size=200)
    | json_values.map(lambda v: repr(v).encode()),
)
@example(payload=b'{"room": "r", "user": "u", "exp": 1e999}')  # int(inf): OverflowError
@example(payload=b'{"room": "r", "user": "u", "exp": NaN}')
@example(payload=b"[" * 500 + b"]" * 500)
def test_a_validly_signed_but_malformed_payload_is_refused(payload: bytes) -> None:
    # repr() is not JSON for most values: what does not decode is refused like what does.
    token = signed(payload.replace(b"'", b'"').replace(b"None", b"null"))
    if len(token) > 1024:
        return
    try:
        grant = verify_join_token(SECRET, token, clock())
    except (Unauthenticated, PermissionDenied):
        return
    assert grant.expires_at > START
