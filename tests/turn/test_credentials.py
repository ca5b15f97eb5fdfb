"""TURN REST credentials (turn.credentials): coturn's use-auth-secret scheme, with rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from turn.credentials import TurnCredentialError, mint, verify

NEW, OLD = "new-secret-0123456789", "old-secret-9876543210"


def test_the_username_carries_the_expiry_and_the_credential_is_its_hmac_sha1() -> None:
    cred = mint((NEW, OLD), "user-1", now=1_000_000.7, lifetime=3600)
    assert cred.username == "1003600:user-1"
    assert cred.expires_at == 1_003_600
    # draft-uberti-behave-turn-rest-00 2.2: base64(HMAC-SHA1(secret, username))
    expected = base64.b64encode(hmac.new(NEW.encode(), b"1003600:user-1",
                                         hashlib.sha1).digest()).decode()
    assert cred.credential == expected


def test_the_first_secret_signs_and_every_listed_secret_verifies() -> None:
    signed_by_old = mint((OLD,), "u", now=0, lifetime=60)
    assert verify((NEW, OLD), signed_by_old.username, signed_by_old.credential, now=30)
    # after the old secret is dropped, its credentials stop working
    assert not verify((NEW,), signed_by_old.username, signed_by_old.credential, now=30)
    signed_by_new = mint((NEW, OLD), "u", now=0, lifetime=60)
    assert verify((NEW,), signed_by_new.username, signed_by_new.credential, now=30)


def test_expired_forged_and_malformed_credentials_do_not_verify() -> None:
    cred = mint((NEW,), "u", now=0, lifetime=60)
    assert not verify((NEW,), cred.username, cred.credential, now=60)  # expired at 60
    assert not verify((NEW,), cred.username, mint(("x" * 20,), "u", 0, 60).credential, now=1)
    assert not verify((NEW,), "60:other", cred.credential, now=1)  # another user's name
    assert not verify((NEW,), "never:u", cred.credential, now=1)
    assert not verify((NEW,), "u", cred.credential, now=1)


@pytest.mark.parametrize("user_id", ["", "a:b", "tab\there"])
def test_a_user_id_that_would_break_the_username_is_refused(user_id: str) -> None:
    with pytest.raises(TurnCredentialError):
        mint((NEW,), user_id, now=0, lifetime=60)


def test_no_secret_or_no_lifetime_is_refused() -> None:
    with pytest.raises(TurnCredentialError, match="no TURN secret"):
        mint((), "u", now=0, lifetime=60)
    with pytest.raises(TurnCredentialError):
        mint((NEW,), "u", now=0, lifetime=0)
