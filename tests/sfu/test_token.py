from __future__ import annotations

import base64
import json

import pytest

from core.clock import FakeClock
from core.errors import InvalidArgument, PermissionDenied, Unauthenticated
from sfu.token import mint_join_token, verify_join_token

SECRET = b"n" * 40


def test_round_trip(fake_clock: FakeClock) -> None:
    token = mint_join_token(SECRET, "room-1", "user-1", fake_clock, ttl=60)
    grant = verify_join_token(SECRET, token, fake_clock, room_id="room-1")
    assert (grant.room_id, grant.user_id) == ("room-1", "user-1")
    assert grant.expires_at == int(fake_clock.time()) + 60


def test_expired(fake_clock: FakeClock) -> None:
    token = mint_join_token(SECRET, "r", "u", fake_clock, ttl=60)
    fake_clock.advance(59)
    verify_join_token(SECRET, token, fake_clock)
    fake_clock.advance(1)
    with pytest.raises(Unauthenticated, match="join token expired"):
        verify_join_token(SECRET, token, fake_clock)


def test_another_room(fake_clock: FakeClock) -> None:
    token = mint_join_token(SECRET, "r1", "u", fake_clock)
    with pytest.raises(PermissionDenied, match="another room"):
        verify_join_token(SECRET, token, fake_clock, room_id="r2")


def _forge_payload(token: str, **changes: object) -> str:
    version, payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    raw = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{version}.{raw}.{sig}"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: _forge_payload(t, room="other"),
        lambda t: _forge_payload(t, exp=9_999_999_999),
        lambda t: "v2" + t[2:],
        lambda t: t.replace(".", "", 1),
        lambda t: "",
        lambda t: "a.b.c",
        lambda t: "v1.!!!.???",
        lambda t: t + "x" * 2000,
    ],
)
def test_forged_or_garbage_tokens_are_refused(fake_clock: FakeClock, mangle) -> None:  # type: ignore[no-untyped-def]
    token = mint_join_token(SECRET, "r", "u", fake_clock)
    with pytest.raises(Unauthenticated, match="invalid join token"):
        verify_join_token(SECRET, mangle(token), fake_clock)


def test_other_secret_is_refused(fake_clock: FakeClock) -> None:
    token = mint_join_token(SECRET, "r", "u", fake_clock)
    with pytest.raises(Unauthenticated):
        verify_join_token(b"m" * 40, token, fake_clock)


@pytest.mark.parametrize(("room", "user"), [("", "u"), ("r", ""), ("r" * 200, "u"), ("r\n", "u")])
def test_bad_ids_are_refused_at_minting(fake_clock: FakeClock, room: str, user: str) -> None:
    with pytest.raises(InvalidArgument):
        mint_join_token(SECRET, room, user, fake_clock)
