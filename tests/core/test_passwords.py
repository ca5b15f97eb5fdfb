from __future__ import annotations

import pytest

from adapters.passwords import BcryptHasher
from core.errors import InvalidArgument
from core.passwords import check_password


@pytest.mark.parametrize("password", ["correct horse battery staple", "Tr0ub4dor&3xyz"])
def test_good_passwords_pass(password: str) -> None:
    check_password(password)


@pytest.mark.parametrize(
    ("password", "message"),
    [("short", "at least 10"), ("qwertyuiop", "too common"), ("Password123!", "too common"),
     ("iloveyou123", "too common"), ("x" * 73, "at most 72 bytes")],
)
def test_bad_passwords_are_refused(password: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_password(password)


async def test_bcrypt_round_trip_and_cost() -> None:
    hasher = BcryptHasher(rounds=4)
    hashed = await hasher.hash("correct horse battery staple")
    assert hashed.startswith("$2b$04$") and "correct" not in hashed
    assert await hasher.verify("correct horse battery staple", hashed)
    assert not await hasher.verify("wrong horse battery staple", hashed)
    assert not await hasher.verify("anything", "not a bcrypt hash")
    assert BcryptHasher().rounds == 12
