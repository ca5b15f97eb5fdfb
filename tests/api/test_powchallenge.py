"""Proof-of-work challenges: signed, bound to an address, short-lived, checked with one hash."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from api.powchallenge import Challenges, leading_zero_bits, solve, solves
from core.clock import FakeClock
from core.errors import ChallengeFailed

SECRET = b"s" * 32
INVALID = "the challenge is not valid here: ask for a new one"


@pytest.fixture
def challenges(fake_clock: FakeClock) -> Challenges:
    return Challenges(SECRET, fake_clock, ttl=300)


def test_leading_zero_bits() -> None:
    assert leading_zero_bits(b"\x00\x00\xff") == 16
    assert leading_zero_bits(b"\x00\x01") == 15
    assert leading_zero_bits(b"\x80") == 0
    assert leading_zero_bits(b"\x00\x00") == 16


def test_a_solution_is_what_the_client_computes(challenges: Challenges) -> None:
    challenge = challenges.mint("198.51.100.7", 8)
    counter = solve(challenge.token, 8)
    digest = hashlib.sha256(f"{challenge.token}{counter}".encode()).digest()
    assert digest[0] == 0
    checked = challenges.verify("198.51.100.7", challenge.token, counter)
    assert (checked.nonce, checked.bits) == (challenge.nonce, 8)


def test_the_wire_form(challenges: Challenges, fake_clock: FakeClock) -> None:
    challenge = challenges.mint("a", 15)
    fake_clock.advance(100)
    assert challenge.to_json(fake_clock) == {
        "token": challenge.token, "algorithm": "sha256-leading-zero-bits", "bits": 15,
        "expiresIn": 200}
    assert len(challenge.token) < 200


def test_every_challenge_is_new(challenges: Challenges) -> None:
    assert len({challenges.mint("a", 4).nonce for _ in range(50)}) == 50


def test_a_challenge_is_good_only_from_its_address(challenges: Challenges) -> None:
    challenge = challenges.mint("198.51.100.7", 4)
    counter = solve(challenge.token, 4)
    with pytest.raises(ChallengeFailed, match=INVALID):
        challenges.verify("198.51.100.8", challenge.token, counter)


def test_a_challenge_expires(challenges: Challenges, fake_clock: FakeClock) -> None:
    challenge = challenges.mint("a", 4)
    counter = solve(challenge.token, 4)
    fake_clock.advance(299)
    challenges.verify("a", challenge.token, counter)
    fake_clock.advance(1)
    with pytest.raises(ChallengeFailed, match="the challenge has expired: ask for a new one"):
        challenges.verify("a", challenge.token, counter)


def test_an_unsolved_challenge_fails(challenges: Challenges) -> None:
    challenge = challenges.mint("a", 12)
    wrong = next(str(n) for n in range(10_000) if not solves(challenge.token, str(n), 12))
    with pytest.raises(ChallengeFailed, match="the counter does not solve the challenge"):
        challenges.verify("a", challenge.token, wrong)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_client_cannot_lower_the_difficulty_or_forge_a_key(challenges: Challenges,
                                                               fake_clock: FakeClock) -> None:
    challenge = challenges.mint("a", 20)
    _, _, sig = challenge.token.split(".")
    easy = {"n": challenge.nonce, "b": 1, "exp": challenge.expires_at}
    lowered = f"v1.{_b64(json.dumps(easy, separators=(',', ':')).encode())}.{sig}"
    other = Challenges(b"x" * 32, fake_clock).mint("a", 1).token
    for token in (lowered, other):
        with pytest.raises(ChallengeFailed, match=INVALID):
            challenges.verify("a", token, solve(token, 1))


@pytest.mark.parametrize("token", [
    "", "v1", "v2.e30.AAAA", "v1.e30", "v1.e30.AAAA.AAAA", "v1.!!!.AAAA", "v1.e30=.AAAA",
    "v1." + "A" * 300 + ".AAAA", "v1.e30.AAAB",
])
def test_malformed_tokens_fail_plainly(challenges: Challenges, token: str) -> None:
    with pytest.raises(ChallengeFailed, match=INVALID):
        challenges.verify("a", token, "1")


def test_a_signed_token_with_a_bad_payload_fails_plainly(fake_clock: FakeClock) -> None:
    import hmac

    from api.powchallenge import _key

    for payload in (b"[]", b'{"n": "x"}', b'{"n": "x", "b": "many", "exp": 1}', b"\xff"):
        body = f"v1.{_b64(payload)}"
        sig = hmac.new(_key(SECRET), f"{body}\na".encode(), hashlib.sha256).digest()
        with pytest.raises(ChallengeFailed, match=INVALID):
            Challenges(SECRET, fake_clock).verify("a", f"{body}.{_b64(sig)}", "1")


@pytest.mark.parametrize("counter", ["", "-1", "1.0", "1" * 21, "\u0661", "1\n"])
def test_a_counter_is_decimal_digits(challenges: Challenges, counter: str) -> None:
    with pytest.raises(ChallengeFailed, match="counter must be 1 to 20 digits"):
        challenges.verify("a", challenges.mint("a", 1).token, counter)


def test_bad_settings_are_refused(fake_clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        Challenges(SECRET, fake_clock, ttl=0)
    with pytest.raises(ValueError, match="bits must be between 1 and 32"):
        Challenges(SECRET, fake_clock).mint("a", 33)
